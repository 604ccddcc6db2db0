"""``semsynth serve``: a web page to paint a label map and render it with a checkpoint.

Built with Gradio (the ML ecosystem's standard for model demos: a canvas editor with a
fixed-colour brush and eraser, a queue, and an HTTP API that ``gradio_client`` calls — no
hand-written JavaScript). Gradio is imported only here, inside :func:`build_app`; ``import
semsynth`` never loads it. All logic is in :mod:`semsynth.web.editor` (one
:class:`~semsynth.sample.sampler.Sampler`, the one the CLI and the metrics use).

The page: pick a val label map, upload a label PNG, or start from a blank canvas of one class;
paint with a brush whose colour is a class (legend below the canvas); Generate ``k`` images
(the seeds, the time and the ``semsynth sample`` command that reproduces them are shown);
re-roll one class or a brushed region (OASIS local re-sampling; the controls say why they are
off for generators without per-pixel noise); download the label map (id PNG) and the images.
Errors in input are shown on the page and the server keeps serving.

A crowd: Generate requests (page and API) are handled by up to :data:`HANDLER_THREADS`
threads, which check their input and hand it to the editor's
:class:`~semsynth.web.editor.RequestBatcher`; it renders everything waiting in one forward
pass. At most :data:`QUEUE_SIZE` requests wait; beyond that a request is refused at once
with a message that says how many are waiting and when to retry. Result files are deleted
after ``cache_seconds`` (Gradio's cache and the editor's own), so a server that runs for days
keeps its disk bounded. Measured: ``docs/reliability.md`` ("The editor under load").
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from semsynth.types import SemsynthError
from semsynth.web.editor import MAX_IMAGES, LabelEditor, load_val

__all__ = ["build_app", "launch", "serve", "QUEUE_SIZE", "HANDLER_THREADS", "CACHE_SECONDS"]

#: Requests waiting at most (beyond it a request is refused with a retry time).
QUEUE_SIZE = 256
#: Generate requests handled at once (their images go through one batcher).
HANDLER_THREADS = 16
#: Result files older than this are deleted (Gradio's cache and the editor's own), seconds.
CACHE_SECONDS = 3600


class _Spool:
    """The editor's own result files: one folder per request under ``root``; folders older
    than ``max_age`` seconds are removed whenever a new one is made (at most once a
    ``max_age / 4``), so the disk holds at most ``max_age`` seconds of results."""

    def __init__(self, max_age: float) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="semsynth-serve-"))
        self.max_age = float(max_age)
        self._last_sweep = time.time()
        self._lock = threading.Lock()

    def folder(self) -> Path:
        now = time.time()
        with self._lock:
            if now - self._last_sweep >= self.max_age / 4:
                self._last_sweep = now
                for d in self.root.iterdir():
                    try:
                        if now - d.stat().st_mtime > self.max_age:
                            shutil.rmtree(d, ignore_errors=True)
                    except OSError:
                        pass
        return Path(tempfile.mkdtemp(dir=self.root))


def _hex(rgb) -> str:
    return "#{:02x}{:02x}{:02x}".format(*rgb)


def _legend_html(editor: LabelEditor) -> str:
    items = "".join(
        f'<span style="display:inline-block;margin:2px 8px 2px 0"><span style="display:inline-block;width:14px;'
        f'height:14px;background:{_hex(c)};border:1px solid #888;vertical-align:middle"></span> {i} {n}</span>'
        for i, (n, c) in enumerate(zip(editor.info.class_names, editor.palette)))
    return f'<div id="legend">{items}</div>'


def build_app(editor: LabelEditor, queue_size: int = QUEUE_SIZE, cache_seconds: float = CACHE_SECONDS):
    """The Gradio page for ``editor`` (a ``gr.Blocks``, not launched).

    API endpoints (for ``gradio_client``): ``/generate_label`` (label PNG file, first seed, k →
    image files), ``/generate`` and ``/reroll`` (the page's buttons).

    Args:
        editor: the checkpoint's editor.
        queue_size: requests waiting at most (a few more when they arrive together); beyond
            it one is refused with the number waiting
            and a retry time.
        cache_seconds: result files (Gradio's cache and the editor's) are deleted after
            this many seconds.
    """
    import gradio as gr

    info = editor.info
    classes = [f"{i} {n}" for i, n in enumerate(info.class_names)]
    colors = [_hex(c) for c in editor.palette]
    why_no_reroll = editor.sampler.region_resampling_unavailable()
    first = editor.from_val(editor.val_names[0]) if editor.val_names else editor.blank(0)
    spool = _Spool(cache_seconds)
    brush_size = max(2, editor.sampler.width // 16)

    def class_id(choice: str | None) -> int | None:
        return None if choice in (None, "") else int(str(choice).split(" ", 1)[0])

    def editor_value(label: np.ndarray) -> dict:
        pic = editor.picture(label)
        return {"background": pic, "layers": [], "composite": pic}

    def guarded(fn):
        """Every handler: an error becomes a message on the page (``gr.Error``), never a stack
        trace, and the server goes on serving."""
        import functools

        @functools.wraps(fn)
        def wrapper(*args):
            try:
                return fn(*args)
            except gr.Error:
                raise
            except (SemsynthError, ValueError) as exc:
                raise gr.Error(str(exc)) from None
            except Exception as exc:  # noqa: BLE001 — shown on the page, the server keeps serving
                raise gr.Error(f"internal error: {type(exc).__name__}: {exc}") from None

        return wrapper

    def current_label(value, label):
        if value is None or value.get("composite") is None:
            return label
        bg = value.get("background")
        return editor.from_painting(np.asarray(value["composite"]), label, None if bg is None else np.asarray(bg))

    def gallery(gen) -> list:
        return [(img, f"seed {s}") for img, s in zip(gen.images, gen.seeds)]

    def summary(gen, what: str) -> str:
        lines = [f"**{what}**: {len(gen.seeds)} image(s), seeds {', '.join(map(str, gen.seeds))}, "
                 f"{gen.seconds:.2f} s ({gen.seconds / len(gen.seeds):.2f} s per image)"]
        if gen.command:
            lines.append(f"Reproduce (save the label map as LABEL.png): `{gen.command}`")
        if editor.sampler.deterministic:
            lines.append("This generator takes no noise: one image per label map.")
        return "\n\n".join(lines)

    @guarded
    def load_val_map(name):
        lab = editor.from_val(name)
        return editor_value(lab), lab

    @guarded
    def load_upload(file):
        if file is None:
            return gr.update(), gr.update()
        lab = editor.from_upload(file)
        return editor_value(lab), lab

    @guarded
    def load_blank(choice):
        lab = editor.blank(class_id(choice) or 0)
        return editor_value(lab), lab

    def set_brush(choice):
        cid = class_id(choice) or 0
        return gr.ImageEditor(brush=gr.Brush(default_size=brush_size, colors=colors, default_color=colors[cid],
                                             color_mode="fixed"))

    @guarded
    def generate(value, label, first_seed, k):
        lab = current_label(value, label)
        gen = editor.generate(lab, int(first_seed), int(k))
        path = editor.label_png(lab, spool.folder() / "label_map.png")
        return gallery(gen), summary(gen, "Generate"), lab, str(path)

    @guarded
    def reroll(value, label, region_value, choice, base_seed, first_seed, k):
        lab = current_label(value, label)
        mask = None
        if region_value is not None and region_value.get("composite") is not None:
            comp = np.asarray(region_value["composite"])[..., :3]
            bg = region_value.get("background")
            ref = np.asarray(bg)[..., :3] if bg is not None else editor.picture(lab)
            if comp.shape == ref.shape:
                m = (comp != ref).any(-1)
                mask = m if m.any() else None
        cid = class_id(choice)
        if cid is None and mask is None:
            raise ValueError("choose a class to re-roll, or brush a region on the region canvas")
        gen = editor.reroll(lab, int(base_seed), int(first_seed), int(k), cid, mask)
        return gallery(gen), summary(gen, "Re-roll")

    def region_canvas(label):
        return editor_value(label)

    @guarded
    def generate_label(label_png: bytes, first_seed: int = 0, k: int = 1) -> list[str]:
        """API: a label PNG (ids or class colours) → ``k`` image files for seeds ``first_seed…``.
        (Read as bytes: Gradio's ``type="filepath"`` leaves an empty temp file per call.)"""
        if not label_png:
            raise ValueError("generate_label: no label file given")
        lab = editor.from_upload(label_png, "label_png")
        gen = editor.generate(lab, int(first_seed), int(k))
        from semsynth.imageio import save_png

        out = spool.folder()
        return [str(save_png(out / f"seed{s}.png", img)) for s, img in zip(gen.seeds, gen.images)]

    method = getattr(getattr(editor.sampler, "config", None), "method", "?")
    def busy(*_inputs):
        """Validator run before a Generate request is queued: refuse it, with a retry time,
        when ``queue_size`` requests are already waiting. Requests that arrive together may all
        pass before any is queued, so the bound can be exceeded by a few (a check-then-queue
        race inside Gradio; a counter of our own could leak places on disconnects)."""
        waiting = len(demo._queue) if getattr(demo, "_queue", None) is not None else 0
        ok = gr.validate(True, "")
        if waiting < queue_size:
            return [ok] * len(_inputs)
        per = editor.batcher.seconds_per_image or 1.0
        wait = max(1, int(round(waiting * per)))
        msg = (f"The server is busy: {waiting} requests are waiting (about {wait} s of work). "
               f"Please retry in {wait} s.")
        return [gr.validate(False, msg)] + [ok] * (len(_inputs) - 1)  # the message once

    with gr.Blocks(title="semsynth editor", delete_cache=(max(1, int(cache_seconds // 4)), int(cache_seconds))) as demo:
        gr.Markdown(f"## semsynth editor\n`{editor.checkpoint}` — method `{method}`, label space "
                    f"`{info.name}` ({info.semantic_nc} classes), {editor.sampler.height}×{editor.sampler.width}")
        label_state = gr.State(first)
        with gr.Row():
            with gr.Column(scale=3):
                with gr.Row():
                    val_pick = gr.Dropdown(editor.val_names, label="val label map", elem_id="val-pick",
                                           value=editor.val_names[0] if editor.val_names else None)
                    upload = gr.File(label="upload a label PNG (ids or class colours)", file_types=[".png", ".jpg", ".jpeg"],
                                     elem_id="upload")
                with gr.Row():
                    blank_class = gr.Dropdown(classes, value=classes[0], label="blank canvas class", elem_id="blank-class")
                    blank_btn = gr.Button("Blank canvas", elem_id="blank-btn")
                    brush_class = gr.Dropdown(classes, value=classes[0], label="brush class", elem_id="brush-class")
                canvas = gr.ImageEditor(value=editor_value(first), type="numpy", image_mode="RGB", label="label map", format="png",
                                        sources=(), transforms=(), layers=False, fixed_canvas=True,
                                        canvas_size=(editor.sampler.width, editor.sampler.height),
                                        brush=gr.Brush(default_size=brush_size, colors=colors, default_color=colors[0],
                                                       color_mode="fixed"),
                                        eraser=gr.Eraser(default_size=brush_size), elem_id="canvas")
                gr.HTML(_legend_html(editor))
                label_file = gr.File(label="label map (id PNG), written at each Generate", elem_id="label-file")
            with gr.Column(scale=3):
                with gr.Row():
                    k = gr.Slider(1, MAX_IMAGES, value=4, step=1, label="images (k)", elem_id="k")
                    seed0 = gr.Number(0, precision=0, label="first seed", elem_id="seed0")
                gen_btn = gr.Button("Generate", variant="primary", elem_id="generate")
                images = gr.Gallery(label="images", columns=4, elem_id="images", buttons=["download"], format="png")
                status = gr.Markdown(elem_id="status")
                with gr.Accordion("Re-roll one class or a brushed region", open=why_no_reroll is None):
                    if why_no_reroll:
                        gr.Markdown(f"Re-roll is off: {why_no_reroll}.", elem_id="reroll-off")
                    rr_class = gr.Dropdown([""] + classes, value="", label="class to re-roll", elem_id="rr-class",
                                           interactive=why_no_reroll is None)
                    rr_base = gr.Number(0, precision=0, label="base seed (kept outside the region)",
                                        interactive=why_no_reroll is None)
                    region = gr.ImageEditor(value=editor_value(first), type="numpy", image_mode="RGB", format="png",
                                            label="region to re-roll (brush it)", sources=(), transforms=(),
                                            layers=False, fixed_canvas=True,
                                            canvas_size=(editor.sampler.width, editor.sampler.height),
                                            brush=gr.Brush(default_size=brush_size, colors=["#ffffff"], default_color="#ffffff",
                                                           color_mode="fixed"),
                                            interactive=why_no_reroll is None, elem_id="region")
                    rr_btn = gr.Button("Re-roll", elem_id="reroll", interactive=why_no_reroll is None)
        val_pick.change(load_val_map, [val_pick], [canvas, label_state], api_visibility="private")
        upload.upload(load_upload, [upload], [canvas, label_state], api_visibility="private")
        blank_btn.click(load_blank, [blank_class], [canvas, label_state], api_visibility="private")
        brush_class.change(set_brush, [brush_class], [canvas], api_visibility="private")
        label_state.change(region_canvas, [label_state], [region], api_visibility="private")
        gen_btn.click(generate, [canvas, label_state, seed0, k], [images, status, label_state, label_file],
                      api_name="generate", concurrency_limit=HANDLER_THREADS, concurrency_id="generate",
                      validator=busy)
        rr_btn.click(reroll, [canvas, label_state, region, rr_class, rr_base, seed0, k], [images, status],
                     api_name="reroll")
        with gr.Row(visible=False):  # the API-only endpoint: a label file in, image files out
            api_label = gr.File(type="binary")
            api_seed = gr.Number(0, precision=0)
            api_k = gr.Number(1, precision=0)
            api_out = gr.Files()
            api_btn = gr.Button()
        api_btn.click(generate_label, [api_label, api_seed, api_k], [api_out], api_name="generate_label",
                      concurrency_limit=HANDLER_THREADS, concurrency_id="generate", validator=busy)
    demo.queue(max_size=None, default_concurrency_limit=1)  # the bound is busy()'s, with its message
    return demo


def serve(checkpoint: str, host: str = "127.0.0.1", port: int = 7860, device: str = "cpu",
          block: bool = True, queue_size: int = QUEUE_SIZE, cache_seconds: float = CACHE_SECONDS):
    """Load a checkpoint or export and serve the editor on ``host:port`` (``queue_size``,
    ``cache_seconds``: as :func:`build_app`).

    Returns:
        The launched ``gr.Blocks`` (with ``block=False``; the caller closes it).

    Raises:
        FileNotFoundError, ConfigError: an unreadable checkpoint.
    """
    from semsynth.sample.sampler import Sampler

    sampler = Sampler.from_checkpoint(checkpoint, device=device)
    val = load_val(sampler.config) if getattr(sampler, "config", None) is not None else None
    editor = LabelEditor(sampler, checkpoint, val)
    if host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: serving on {host}: the page has no login; anyone who can reach this address can use it",
              file=sys.stderr)
    if queue_size < 1 or cache_seconds <= 0:
        raise ValueError(f"--queue-size must be >= 1 and --cache-seconds > 0, got {queue_size} and {cache_seconds}")
    demo = build_app(editor, queue_size=queue_size, cache_seconds=cache_seconds)
    print(f"semsynth serve: http://{'127.0.0.1' if host == '0.0.0.0' else host}:{port}/", flush=True)
    return launch(demo, host, port, block)


def launch(demo, host: str = "127.0.0.1", port: int = 7860, block: bool = True):
    """Start the Gradio server of a :func:`build_app` page with the editor's limits: uploads
    above 20 MB get HTTP 413; errors are shown on the page. Returns ``demo``."""
    from semsynth.web.editor import MAX_UPLOAD_BYTES

    demo.launch(server_name=host, server_port=port, prevent_thread_lock=not block, show_error=True, quiet=True,
                max_file_size=MAX_UPLOAD_BYTES)
    return demo
