"""The web editor's logic, independent of the web framework (tested without a browser).

A :class:`LabelEditor` wraps one :class:`semsynth.sample.sampler.Sampler` — the same object
that serves ``semsynth sample`` and the metrics — and turns what the page holds (a label map,
a painted picture of it, an uploaded file, a brushed region) into label maps and images:

* label maps come from the checkpoint's val split (when its dataset is present), an uploaded
  PNG/JPEG (ids in a grey/palette PNG, or class colours), or a blank canvas of one class;
* painted pictures are read back by comparing them with the picture of the previous label map:
  unchanged pixels keep their label (so an eraser restores it), changed pixels take the class
  of the nearest brush colour;
* Generate: ``k`` images for seeds ``s … s + k − 1``, as ``semsynth sample --seeds s-(s+k-1)``;
* Re-roll: :meth:`Sampler.resample_region` for a class or a brushed region;
* a checkpoint trained with instance edges (``data.instance_edges``: SPADE/CC-FPSE on
  Cityscapes, COCO-Stuff) gets the edge map of the painted label map's class boundaries: a
  painted map has no instances, so each class region counts as one instance (two touching
  cars painted as one region read as one car). The val maps chosen from the dataset also go
  through the painted path, so they get class-boundary edges too.

Every bad input raises :class:`semsynth.types.DataError` with a message for the page.
"""

from __future__ import annotations

import io
import os
import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from semsynth.labels import colorize, to_uint8_image
from semsynth.sample.sampler import Sampler
from semsynth.types import DataError

__all__ = ["LabelEditor", "Generation", "RequestBatcher", "distinct_palette", "MAX_UPLOAD_BYTES", "MAX_UPLOAD_SIDE",
           "MAX_BATCH_IMAGES"]

MAX_UPLOAD_BYTES = 20 * 1024 * 1024
MAX_UPLOAD_SIDE = 4096
MAX_IMAGES = 16
#: Images generated in one forward pass by the :class:`RequestBatcher` (requests are never split).
MAX_BATCH_IMAGES = 32


def distinct_palette(palette) -> list[tuple[int, int, int]]:
    """The palette with repeated colours moved to the nearest unused colour (Cityscapes gives
    five void classes black): a brush colour must name one class.

    Returns:
        One distinct RGB triple per class, equal to the input where it was already distinct.
    """
    out: list[tuple[int, int, int]] = []
    used: set[tuple[int, int, int]] = set()
    for rgb in palette:
        c = tuple(int(v) for v in rgb)
        step = 0
        while c in used:
            step += 1
            c = tuple(int(min(255, max(0, v + (step if i == step % 3 else 0) * 7))) for i, v in enumerate(rgb))
        used.add(c)
        out.append(c)
    return out


@dataclass(frozen=True)
class Generation:
    """Images of one Generate or Re-roll: ``images`` ``(K, H, W, 3)`` uint8, the ``seeds``,
    the wall time in ``seconds`` and the ``command`` that reproduces them (``None`` for a
    brushed region, which the CLI takes as a mask file)."""

    images: np.ndarray
    seeds: list[int]
    seconds: float
    command: str | None


class _Request:
    __slots__ = ("labels", "seeds", "done", "images", "error")

    def __init__(self, labels, seeds) -> None:
        self.labels, self.seeds = labels, seeds
        self.done = threading.Event()
        self.images = None
        self.error: BaseException | None = None


class RequestBatcher:
    """Serves concurrent generation requests in batches: one worker thread takes every request
    waiting (up to ``max_images`` images, whole requests only) and renders them in one
    :meth:`Sampler.generate` pass, so a crowd costs a few forward passes instead of one each.

    The images are those of one request at a time: each image depends only on its label map
    and seed (the generator is in eval mode; BatchNorm uses running statistics), up to
    float32 rounding — a batched convolution sums in another order, so a uint8 value on a
    rounding boundary may move by 1 (10 values of 3.9 million in ``tests/test_web.py``).
    ``lock`` serialises every other use of the sampler (re-roll) with the batches.

    Args:
        sampler: the editor's sampler.
        max_images: images per forward pass at most (>= ``MAX_IMAGES``, the largest request).
    """

    def __init__(self, sampler: Sampler, max_images: int = MAX_BATCH_IMAGES) -> None:
        if max_images < MAX_IMAGES:
            raise ValueError(f"max_images {max_images} < {MAX_IMAGES}, the largest request")
        self.sampler = sampler
        self.max_images = int(max_images)
        self.lock = threading.Lock()
        self._pending: queue.SimpleQueue[_Request] = queue.SimpleQueue()
        self._worker: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self.batches = 0  # forward passes run (for tests and the load benchmark)
        self.seconds_per_image: float | None = None  # running mean of the recent passes

    def generate(self, labels, seeds: list[int]):
        """Images for ``labels`` ``(K, H, W)`` int64 (prepared by :meth:`Sampler.prepare_label`)
        and one seed each; blocks until rendered. Thread-safe.

        Returns:
            ``(K, 3, H, W)`` float32 in [-1, 1] on the CPU.

        Raises:
            ValueError: more than ``max_images`` images, or seeds and label maps of different counts.
            Whatever the sampler raises for this batch.
        """
        if len(seeds) != labels.shape[0] or not 1 <= len(seeds) <= self.max_images:
            raise ValueError(f"{len(seeds)} seeds for {labels.shape[0]} label maps (1-{self.max_images} images)")
        req = _Request(labels, list(seeds))
        with self._start_lock:
            if self._worker is None or not self._worker.is_alive():
                self._worker = threading.Thread(target=self._run, name="semsynth-batcher", daemon=True)
                self._worker.start()
        self._pending.put(req)
        req.done.wait()
        if req.error is not None:
            raise req.error
        return req.images

    def _run(self) -> None:
        import torch

        carry: _Request | None = None
        while True:
            batch = [carry if carry is not None else self._pending.get()]
            carry = None
            n = len(batch[0].seeds)
            while True:
                try:
                    nxt = self._pending.get_nowait()
                except queue.Empty:
                    break
                if n + len(nxt.seeds) > self.max_images:
                    carry = nxt
                    break
                batch.append(nxt)
                n += len(nxt.seeds)
            try:
                with self.lock:
                    labels = torch.cat([r.labels for r in batch])
                    seeds = [s for r in batch for s in r.seeds]
                    t = time.perf_counter()
                    imgs = self.sampler.generate(labels, seeds=seeds, batch_size=len(seeds)).cpu()
                    per = (time.perf_counter() - t) / len(seeds)
                    self.seconds_per_image = per if self.seconds_per_image is None else 0.8 * self.seconds_per_image + 0.2 * per
                    self.batches += 1
                i = 0
                for r in batch:
                    r.images = imgs[i:i + len(r.seeds)]
                    i += len(r.seeds)
            except BaseException as exc:  # noqa: BLE001 — handed to every waiting request
                for r in batch:
                    r.error = exc
            for r in batch:
                r.done.set()


class LabelEditor:
    """Label maps and images for the web editor.

    Args:
        sampler: the checkpoint's sampler.
        checkpoint: its path (shown in reproduce commands).
        val: a dataset with ``names`` and ``load_label(i)`` (the val split), or ``None``.
    """

    def __init__(self, sampler: Sampler, checkpoint: str, val=None) -> None:
        self.sampler = sampler
        self.batcher = RequestBatcher(sampler)
        self.checkpoint = str(checkpoint)
        self.val = val
        self.info = sampler.info
        self.palette = distinct_palette(self.info.palette)
        self._lut = {(r << 16) | (g << 8) | b: i for i, (r, g, b) in enumerate(self.palette)}

    # ---------------------------------------------------------------- label maps
    @property
    def val_names(self) -> list[str]:
        """Names of the val label maps (empty without the dataset)."""
        return list(self.val.names) if self.val is not None else []

    def from_val(self, name: str) -> np.ndarray:
        """The val label map ``name`` at the generator's size, ``(H, W)`` int64.

        Raises:
            DataError: an unknown name.
        """
        if name not in self.val_names:
            raise DataError(f"no val label map named {name!r}")
        lab = self.val.load_label(self.val_names.index(name))
        return self.sampler.prepare_label(lab, name)[0].cpu().numpy()

    def blank(self, class_id: int) -> np.ndarray:
        """A canvas filled with one class.

        Raises:
            DataError: a class id outside the label space.
        """
        if not 0 <= int(class_id) < self.info.semantic_nc:
            raise DataError(f"class id {class_id} is not in 0-{self.info.semantic_nc - 1}")
        return np.full((self.sampler.height, self.sampler.width), int(class_id), dtype=np.int64)

    def from_upload(self, path: str | os.PathLike | bytes, name: str = "upload") -> np.ndarray:
        """An uploaded label picture → ``(H, W)`` int64 at the generator's size.

        Accepted: PNG or JPEG up to 20 MB and 4096×4096; a grey or palette PNG holds ids; an RGB
        picture whose three channels are equal holds ids too; any other RGB picture holds class
        colours (the legend's), which must all be class colours.

        Args:
            path: the file, or its bytes.
            name: the name in messages when ``path`` is bytes.

        Raises:
            DataError: too large, not a PNG/JPEG, unreadable, ids outside the label space, or
                colours that are not class colours (names the file and the values).
        """
        from PIL import Image

        if isinstance(path, (bytes, bytearray)):
            size = len(path)
        else:
            p = Path(path)
            name, size = p.name, p.stat().st_size
        if size > MAX_UPLOAD_BYTES:
            raise DataError(f"{name}: {size / 2**20:.1f} MB is larger than the 20 MB limit")
        data = bytes(path) if isinstance(path, (bytes, bytearray)) else p.read_bytes()
        try:
            with Image.open(io.BytesIO(data)) as im:
                fmt = im.format
                if fmt not in ("PNG", "JPEG"):
                    raise DataError(f"{name}: a {fmt or 'unknown'} file; upload a PNG or JPEG label map")
                if max(im.size) > MAX_UPLOAD_SIDE:
                    raise DataError(f"{name}: {im.size[0]}x{im.size[1]} is larger than {MAX_UPLOAD_SIDE}x{MAX_UPLOAD_SIDE}")
                im.load()
                mode = im.mode
                arr = np.asarray(im if mode in ("L", "P", "I", "I;16") else im.convert("RGB"))
        except DataError:
            raise
        except Image.UnidentifiedImageError:
            raise DataError(f"{name}: not an image; upload a PNG or JPEG label map") from None
        except (OSError, ValueError, Image.DecompressionBombError) as exc:
            raise DataError(f"{name}: not a readable PNG/JPEG image ({exc})") from None
        if arr.ndim == 3 and (np.array_equal(arr[..., 0], arr[..., 1]) and np.array_equal(arr[..., 1], arr[..., 2])):
            arr = arr[..., 0]
        if arr.ndim == 2:
            lab = arr.astype(np.int64)
        else:
            code = (arr[..., 0].astype(np.int64) << 16) | (arr[..., 1].astype(np.int64) << 8) | arr[..., 2]
            uniq, inv = np.unique(code, return_inverse=True)
            ids = np.array([self._lut.get(int(c), -1) for c in uniq])
            if (ids < 0).any():
                bad = [f"({c >> 16},{(c >> 8) & 255},{c & 255})" for c in uniq[ids < 0][:5]]
                raise DataError(f"{name}: colours {', '.join(bad)} are not class colours of {self.info.name} "
                                "(see the legend; or upload an id PNG)")
            lab = ids[inv].reshape(code.shape)
        return self.sampler.prepare_label(lab, name)[0].cpu().numpy()

    # ------------------------------------------------------------- painting
    def picture(self, label: np.ndarray) -> np.ndarray:
        """The label map in brush colours, ``(H, W, 3)`` uint8."""
        return colorize(label, self.palette)

    def from_painting(self, painted: np.ndarray, previous: np.ndarray,
                      background: np.ndarray | None = None) -> np.ndarray:
        """Read a painted picture of ``previous`` back into ids.

        Args:
            painted: ``(H, W, 3|4)`` uint8 (alpha ignored), the editor's composite.
            previous: ``(H, W)`` int64, the label map that was shown.
            background: ``(H, W, 3|4)`` uint8, the canvas background as the browser sent it
                back with ``painted`` (``None``: the picture of ``previous``). Pixels where
                ``painted`` equals it were not painted — also where the browser resampled the
                background (seen in headless Chromium: class edges blended), so such
                resampling is never read as paint.

        Returns:
            ``(H, W)`` int64: ``previous`` where the picture is unchanged, elsewhere the class of
            the class of the brush colour that was painted over it: the canvas anti-aliases
            stroke edges, so a changed pixel is read as a blend ``a·brush + (1 − a)·shown``
            of the colour shown there and some class colour; the class whose blend line
            passes nearest wins, and the pixel takes it when ``a ≥ 0.5`` (the stroke covers
            most of the pixel), else keeps its label. (Snapping a blend to the nearest
            palette colour instead would give edge pixels a third, unrelated class.)

        Raises:
            DataError: a picture of another size.
        """
        rgb = np.asarray(painted)[..., :3].astype(np.float64)
        if rgb.shape[:2] != previous.shape:
            raise DataError(f"the painted picture is {rgb.shape[1]}x{rgb.shape[0]}, the label map "
                            f"{previous.shape[1]}x{previous.shape[0]}")
        shown = self.picture(previous).astype(np.float64)
        if background is not None and np.asarray(background).shape[:2] == previous.shape:
            shown = np.asarray(background)[..., :3].astype(np.float64)
        changed = (rgb != shown).any(-1)
        out = previous.copy()
        if changed.any():
            pal = np.asarray(self.palette, dtype=np.float64)                 # (K, 3)
            px, base = rgb[changed], shown[changed]                          # (P, 3)
            v = pal[None] - base[:, None]                                    # (P, K, 3) shown → class colour
            vv = (v * v).sum(-1)
            a = np.where(vv > 0, ((px - base)[:, None] * v).sum(-1) / np.maximum(vv, 1e-12), 0.0).clip(0, 1)
            d = ((base[:, None] + a[..., None] * v - px[:, None]) ** 2).sum(-1)  # (P, K) to each blend line
            k = d.argmin(1)
            take = a[np.arange(len(k)), k] >= 0.5
            vals = out[changed]
            vals[take] = k[take]
            out[changed] = vals
        return out

    # ------------------------------------------------------------- images
    def _check_seeds(self, first_seed: int, k: int) -> list[int]:
        if not 1 <= int(k) <= MAX_IMAGES:
            raise DataError(f"k must be 1-{MAX_IMAGES}, got {k}")
        if int(first_seed) < 0:
            raise DataError(f"seeds must be >= 0, got {first_seed}")
        return list(range(int(first_seed), int(first_seed) + int(k)))

    def generate(self, label: np.ndarray, first_seed: int, k: int) -> Generation:
        """``k`` images of ``label`` for seeds ``first_seed …`` (one image for a generator
        without noise and a single output).

        Raises:
            DataError: bad ``k``, negative seed, or ids outside the label space.
        """
        seeds = self._check_seeds(first_seed, k)
        if self.sampler.deterministic:
            seeds = seeds[:1]
        lab = self.sampler.prepare_label(label, "<page>")
        t = time.perf_counter()
        imgs = self.batcher.generate(lab.expand(len(seeds), -1, -1), seeds)  # with other requests waiting
        dt = time.perf_counter() - t
        rng = f"{seeds[0]}-{seeds[-1]}" if len(seeds) > 1 else str(seeds[0])
        cmd = f"semsynth sample {self.checkpoint} --labels LABEL.png --seeds {rng}"
        return Generation(to_uint8_image(imgs), seeds, dt, cmd)

    def reroll(self, label: np.ndarray, base_seed: int, first_seed: int, k: int,
               class_id: int | None = None, mask: np.ndarray | None = None) -> Generation:
        """Re-sample the noise of a class or a brushed region (``mask``; both: the
        intersection); elsewhere the noise of ``base_seed``.

        Raises:
            DataError: a generator that cannot re-sample locally (the reason), neither region
                given, an empty region, bad seeds or ids.
        """
        why = self.sampler.region_resampling_unavailable()
        if why:
            raise DataError(why)
        seeds = self._check_seeds(first_seed, k)
        if int(base_seed) < 0:
            raise DataError(f"seeds must be >= 0, got {base_seed}")
        lab = self.sampler.prepare_label(label, "<page>")
        region = self.sampler.region(lab[0], class_id, mask, source="<page>")
        if not bool(region.any()):
            raise DataError("the region to re-roll is empty (that class is not in the label map, or nothing was brushed)")
        t = time.perf_counter()
        with self.batcher.lock:
            imgs = self.sampler.resample_region(lab, region, int(base_seed), seeds, batch_size=1)
        dt = time.perf_counter() - t
        cmd = None
        if class_id is not None and mask is None:
            cmd = (f"semsynth sample {self.checkpoint} --labels LABEL.png --base-seed {int(base_seed)} "
                   f"--resample-class {int(class_id)} --seeds {seeds[0]}-{seeds[-1]}")
        return Generation(to_uint8_image(imgs), seeds, dt, cmd)

    def label_png(self, label: np.ndarray, path: str | os.PathLike) -> Path:
        """Write ``label`` as an id PNG (8-bit grey, or 16-bit above 256 classes)."""
        from semsynth.imageio import save_png

        arr = np.asarray(label)
        arr = arr.astype(np.uint8) if self.info.semantic_nc <= 256 else arr.astype(np.uint16)
        save_png(Path(path), arr)
        return Path(path)


def load_val(config) -> object | None:
    """The val split of a run's dataset for the label-map picker, or ``None`` if absent (only
    its label maps are read: instance maps are not needed)."""
    import dataclasses

    from semsynth.data import build_dataset

    try:
        return build_dataset(dataclasses.replace(config.data, instance_edges=False), config.data.val_split,
                             train=False)
    except Exception:  # noqa: BLE001 — the dataset is optional for the editor
        return None
