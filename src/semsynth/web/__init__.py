"""``semsynth serve``: the web editor (:mod:`semsynth.web.app`). Importing ``semsynth`` never
imports this package's web stack (Gradio is imported inside :func:`semsynth.web.app.build_app`)."""
