"""A trained model: building, checkpoints, exports and official importers.

The layer between the methods (:mod:`semsynth.methods`) and everything that uses a model
(training, sampling, the web editor, evaluation, the CLI):

* :mod:`.build` — ``build_method(cfg, info)``, ``select_device``, ``configure_backends``;
* :mod:`.checkpoint` — training checkpoints (atomic, weights-only reading), the typed
  :class:`~semsynth.model.checkpoint.TrainedModel` and ``load_trained(path)`` for ``.pt``
  files and export folders alike;
* :mod:`.export` — safetensors export folders;
* :mod:`.official` — importers of official checkpoints (OASIS).

Nothing here imports :mod:`semsynth.train`, :mod:`semsynth.sample`, :mod:`semsynth.web` or
:mod:`semsynth.eval`: loading a model to sample or serve never goes through training code.
"""
