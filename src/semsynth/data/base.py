"""Base of every dataset: paired (image, label map) files, reading, validation, caching.

A dataset item is ``(image, label)``:

* ``image``: ``(3, H, W)`` float32 tensor in ``[-1, 1]`` (``x / 127.5 - 1`` of uint8 RGB);
* ``label``: ``(H, W)`` int64 tensor of label ids ``0 .. info.semantic_nc - 1`` (the
  don't-care id, if any, is ``info.ignore_index``);

and with ``info.instance_edges`` (``data.instance_edges``, datasets with instance maps:
Cityscapes, COCO-Stuff) a third element, ``edges``: ``(1, H, W)`` float32 in {0, 1}, the
edge map (:func:`semsynth.labels.edge_map`) of the instance map after the same resize
(nearest), crop and flip as the label — as the official SPADE code, which transforms the
instance map with the label's transform and takes its edges at the model's resolution.

Every bad input raises :class:`semsynth.types.DataError` whose message names the file (or
folder) and the offending value: an unreadable or truncated image, label ids outside the
dataset's ids, image and label of different sizes, an image without a label (or a label
without an image), a missing or empty folder.

Randomness (crop offset, flip) is drawn per item from
``np.random.default_rng([seed, epoch, index])``: the same item is produced in the main
process and in any DataLoader worker, whatever the order of the calls
(:meth:`PairedDataset.set_epoch` sets the epoch).
"""

from __future__ import annotations

import contextlib
import gc
import os
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np
import torch
from PIL import Image

from semsynth.types import ConfigError, DataError, DatasetInfo

__all__ = [
    "IMAGE_EXTENSIONS",
    "PairedDataset",
    "check_options",
    "color_map",
    "describe_ids",
    "gc_paused",
    "index_by_stem",
    "list_files",
    "make_lut",
    "pair_by_key",
    "read_image",
    "read_label",
]

#: File name extensions (lower case) accepted as images by the folder scanners.
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")

# Errors PIL raises for broken files: OSError (truncated data, "cannot identify image
# file"), SyntaxError (broken PNG chunks), ValueError/EOFError (odd headers).
_PIL_ERRORS = (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError)


@contextlib.contextmanager
def gc_paused():
    """Pause Python's cyclic garbage collector inside the block (restored after it).

    Scanning a 100k-file folder creates hundreds of thousands of objects without cycles, and
    each automatic collection walks all of them: 40 % of a listing's time, measured.
    """
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def describe_ids(values: Iterable[int]) -> str:
    """Compact text of a set of integers: ``[0, 1, 2, 3, 255]`` → ``"0-3, 255"``."""
    vals = sorted(set(int(v) for v in values))
    if not vals:
        return "none"
    parts, start, prev = [], vals[0], vals[0]
    for v in vals[1:] + [None]:  # type: ignore[list-item]
        if v is not None and v == prev + 1:
            prev = v
            continue
        parts.append(str(start) if start == prev else f"{start}-{prev}")
        if v is not None:
            start = prev = v
    return ", ".join(parts)


def color_map(n: int) -> tuple[tuple[int, int, int], ...]:
    """The PASCAL VOC devkit colour map (bit-interleaved), ``n`` RGB triples.

    Entry ``k`` spreads the bits of ``k`` over the high bits of R, G and B (VOC
    ``labelcolormap``); entry 0 is black. Used where a dataset has no official palette.
    """
    out = []
    for k in range(n):
        r = g = b = 0
        c = k
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        out.append((r, g, b))
    return tuple(out)


def make_lut(mapping: Mapping[int, int], size: int = 256) -> np.ndarray:
    """A raw-value → label-id lookup table for :func:`read_label`.

    Args:
        mapping: raw file value → label id; raw values not in it are invalid.
        size: table length (256 for 8-bit PNGs, 65536 for 16-bit ones).

    Returns:
        ``(size,)`` int64 array, ``-1`` for invalid raw values.
    """
    lut = np.full(size, -1, dtype=np.int64)
    for raw, idx in mapping.items():
        lut[int(raw)] = int(idx)
    return lut


def _open(path: str | os.PathLike, what: str) -> Image.Image:
    """Open and fully decode ``path``; DataError naming the file if it is unreadable."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{what} file not found: {path}")
    try:
        im = Image.open(path)
        im.load()  # decodes everything: truncated data raises OSError here
    except _PIL_ERRORS as exc:
        raise DataError(f"cannot read {what} {path}: {exc}") from None
    return im


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as RGB.

    Grey, palette, RGBA and CMYK images are converted to RGB (alpha is dropped). The EXIF
    orientation is *not* applied: label maps are stored in the raw pixel order too.

    Args:
        path: image file (PNG, JPEG, ... anything PIL decodes).

    Returns:
        ``(H, W, 3)`` uint8 array, RGB order, values 0-255.

    Raises:
        DataError: missing, unreadable or truncated file (message names the file).
    """
    im = _open(path, "image")
    with im:
        if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
            raise DataError(f"image {path} has mode {im.mode}; expected an 8-bit RGB or grey image")
        arr = np.asarray(im.convert("RGB"), dtype=np.uint8)
    return arr


def _raw_label(path: str | os.PathLike) -> np.ndarray:
    """Raw integer values of a single-channel label file (uint8 / uint16 / int32)."""
    im = _open(path, "label")
    with im:
        mode = im.mode
        if mode in ("L", "P", "I;16", "I;16L", "I;16B", "I"):
            arr = np.asarray(im)
        elif mode == "1":
            arr = np.asarray(im).astype(np.uint8)
        elif mode in ("LA", "PA"):
            arr = np.asarray(im)[..., 0]
        elif mode in ("RGB", "RGBA"):
            rgb = np.asarray(im)[..., :3]
            if not ((rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 0] == rgb[..., 2]).all()):
                raise DataError(
                    f"label {path} is a colour ({mode}) image; expected a single-channel id map "
                    "(grey or palette PNG whose values are label ids)"
                )
            arr = rgb[..., 0]
        else:
            raise DataError(f"label {path} has unsupported mode {mode}; expected a grey or palette PNG")
    if arr.dtype.byteorder == ">":
        arr = arr.astype(arr.dtype.newbyteorder("="))
    return arr


def _present_values(raw: np.ndarray) -> np.ndarray:
    """Sorted distinct values of an integer array (bincount for 8/16-bit data: fast)."""
    if raw.dtype in (np.uint8, np.uint16):
        return np.flatnonzero(np.bincount(raw.ravel(), minlength=1))
    return np.unique(raw)


def read_label(
    path: str | os.PathLike,
    lut: np.ndarray | None = None,
    *,
    num_ids: int | None = None,
    name: str = "dataset",
) -> np.ndarray:
    """Read a label map whose pixel values are label ids (grey or palette PNG).

    Palette ("P") PNGs are read as their palette indices, not their colours; 16-bit PNGs
    are supported. An RGB file is accepted only if its three channels are equal.

    Args:
        path: label file.
        lut: optional raw-value → id table (:func:`make_lut`): entries ``< 0`` mark raw
            values that must not occur (e.g. COCO-Stuff 255 → 182, Stanford 15 → 8).
        num_ids: if given, every id must be in ``0 .. num_ids - 1``.
        name: dataset name for the error messages.

    Returns:
        ``(H, W)`` int64 array of label ids.

    Raises:
        DataError: unreadable/truncated file, a colour image, or values outside the
            dataset's ids; the message names the file and lists the bad values, e.g.
            ``label ids [12, 40] not in CamVid ids 0-11 (file .../x.png)``.
    """
    raw = _raw_label(path)
    present = _present_values(raw)
    if lut is not None:
        lut = np.asarray(lut, dtype=np.int64)
        ok = (present >= 0) & (present < len(lut))
        ok[ok] = lut[present[ok]] >= 0
        if not ok.all():
            allowed = describe_ids(np.flatnonzero(lut >= 0))
            bad = present[~ok].tolist()
            raise DataError(f"label ids {bad[:20]} not in {name} ids {allowed} (file {path})")
        lab = lut[raw]
        present = np.unique(lut[present])
    else:
        lab = raw.astype(np.int64)
    if num_ids is not None:
        bad = present[(present < 0) | (present >= num_ids)].tolist()
        if bad:
            raise DataError(f"label ids {bad[:20]} not in {name} ids 0-{num_ids - 1} (file {path})")
    return lab


def list_files(
    folder: str | os.PathLike,
    extensions: Sequence[str] | None = IMAGE_EXTENSIONS,
    suffix: str = "",
    recursive: bool = False,
) -> list[Path]:
    """Files of a folder, sorted by file name.

    Args:
        folder: the folder to list.
        extensions: accepted name endings (case-insensitive); ``None`` = any.
        suffix: required ending of the file name (e.g. ``"_gtFine_labelIds.png"``).
        recursive: also list sub-folders (e.g. Cityscapes' ``<city>/`` folders).

    Returns:
        The matching files (hidden files excluded), sorted by name then path.

    Raises:
        DataError: the folder is missing or holds no matching file (names the folder).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"folder not found: {folder}")
    exts = None if extensions is None else tuple(e.lower() for e in extensions)

    def wanted(n: str) -> bool:
        return (not n.startswith(".") and (not suffix or n.endswith(suffix))
                and (exts is None or n.lower().endswith(exts)))

    files = []
    if recursive:
        files = [p for p in folder.rglob("*") if wanted(p.name) and p.is_file()]
    else:  # os.scandir: file types from the directory entries, no stat per file (100k-file folders)
        with os.scandir(folder) as it:
            files = [folder / e.name for e in it if wanted(e.name) and e.is_file()]
    if not files:
        what = f"*{suffix}" if suffix else ("files" if extensions is None else "/".join(extensions))
        raise DataError(f"no {what} files in folder {folder} (empty folder)")
    return sorted(files, key=lambda p: (p.name, str(p)))


def pair_by_key(
    images: Mapping[object, Path], labels: Mapping[object, Path], image_dir: Path, label_dir: Path
) -> list[tuple[Path, Path]]:
    """Pair images and labels that share a key (usually the file stem).

    Args:
        images, labels: key → file.
        image_dir, label_dir: the folders, for the error messages.

    Returns:
        ``(image_path, label_path)`` pairs sorted by the image's file name.

    Raises:
        DataError: an image without a label or a label without an image (names the file
            and the folder where its partner was expected).
    """
    only_img = sorted(set(images) - set(labels), key=str)
    only_lab = sorted(set(labels) - set(images), key=str)
    if only_img or only_lab:
        msgs = []
        if only_img:
            files = ", ".join(str(images[k]) for k in only_img[:5])
            more = f" (and {len(only_img) - 5} more)" if len(only_img) > 5 else ""
            msgs.append(f"image without label in {label_dir}: {files}{more}")
        if only_lab:
            files = ", ".join(str(labels[k]) for k in only_lab[:5])
            more = f" (and {len(only_lab) - 5} more)" if len(only_lab) > 5 else ""
            msgs.append(f"label without image in {image_dir}: {files}{more}")
        raise DataError("unpaired files: " + "; ".join(msgs))
    pairs = [(images[k], labels[k]) for k in images]
    return sorted(pairs, key=lambda p: (p[0].name, str(p[0])))


def check_options(options: Mapping | None, allowed: Iterable[str], dataset: str) -> dict:
    """Validate ``DataConfig.options`` against a dataset's option names.

    Returns:
        The options as a plain dict.

    Raises:
        ConfigError: an unknown option (names it and the known ones).
    """
    opts = dict(options or {})
    unknown = sorted(set(opts) - set(allowed))
    if unknown:
        known = ", ".join(sorted(allowed)) or "none"
        raise ConfigError(f"unknown data.options {unknown} for dataset {dataset!r} (known: {known})")
    return opts


def index_by_stem(files: Iterable[Path], strip: str = "") -> dict[str, Path]:
    """``{stem: file}`` (``strip`` removed from the end of the stem); DataError on duplicates."""
    out: dict[str, Path] = {}
    for f in files:
        key = f.stem[: -len(strip)] if strip and f.stem.endswith(strip) else f.stem
        if key in out:
            raise DataError(f"two files with the same name stem {key!r}: {out[key]} and {f}")
        out[key] = f
    return out


class PairedDataset(torch.utils.data.Dataset):
    """Paired images and label maps on disk, transformed into model inputs.

    Subclasses (one per dataset layout) find the pairs and the label space; this class
    reads, validates, caches and transforms them.

    Attributes:
        pairs: ``(image_path, label_path)`` list, sorted by the image's file name.
        names: one name per pair (the image's stem; dataset suffixes removed), used as
            output file names.
        info: the dataset's :class:`~semsynth.types.DatasetInfo`.
        transform: a :class:`~semsynth.data.transforms.PairedTransform` (or any callable
            ``(image_u8, label, rng) -> (image, label)`` tensors).
        train: if true, items draw a random crop/flip; if false, none (plain resize to the output size, no crop).
        seed, epoch: the per-item random generator is ``default_rng([seed, epoch, i])``.
        root: the dataset folder (used as a cache key by the evaluation).
    """

    def __init__(
        self,
        pairs: Sequence[tuple[str | os.PathLike, str | os.PathLike]],
        info: DatasetInfo,
        transform: Callable | None = None,
        *,
        train: bool = False,
        seed: int = 0,
        cache: bool = False,
        lut: np.ndarray | None = None,
        root: str | os.PathLike | None = None,
    ) -> None:
        """Args:
            pairs: ``(image_path, label_path)`` pairs (re-sorted by image file name).
            info: the label space; label ids must be in ``0 .. info.semantic_nc - 1``.
            transform: resize/crop/flip; ``None`` = no resizing (full-resolution tensors).
            train: draw per-item randomness (crop offset, flip).
            seed: base seed of the per-item randomness (non-negative).
            cache: keep decoded arrays in memory after the first read (per process: each
                DataLoader worker has its own): items keep the resized pair (the output of
                ``transform.resize``), :meth:`load_image`/:meth:`load_label` the
                full-resolution arrays. ``"auto"`` starts off; :func:`semsynth.data.build_dataset`
                decides it (:func:`semsynth.data.cache.resolve_cache`).
            lut: raw-value → id table applied by :meth:`read_label_file` (see :func:`make_lut`).
            root: the dataset folder.
        """
        if seed < 0:
            raise ValueError(f"seed must be non-negative, got {seed}")
        ps = [(a if isinstance(a, Path) else Path(a), b if isinstance(b, Path) else Path(b)) for a, b in pairs]
        self.pairs: list[tuple[Path, Path]] = sorted(ps, key=lambda p: (p[0].name, str(p[0])))
        self.names: list[str] = [self.name_of(a) for a, _ in self.pairs]
        self.info = info
        self.transform = transform
        self.train = bool(train)
        self.seed = int(seed)
        self.epoch = 0
        self.lut = lut
        self.root = Path(root) if root is not None else None
        self.cache = cache is True
        #: why the cache is on or off (set by :func:`semsynth.data.build_dataset`)
        self.cache_reason = f"data.cache {'on' if self.cache else 'off'}"
        self._img_cache: dict[int, np.ndarray] = {}
        self._lab_cache: dict[int, np.ndarray] = {}
        self._resized_cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def with_transform(self, transform: Callable | None, train: bool) -> "PairedDataset":
        """The same pairs (no new folder scan) with another transform and ``train`` flag, its
        own empty caches and epoch 0 (e.g. the evaluation view of the training split)."""
        import copy

        other = copy.copy(self)
        other.transform, other.train, other.epoch = transform, bool(train), 0
        other._img_cache, other._lab_cache, other._resized_cache = {}, {}, {}
        if isinstance(getattr(self, "snapped", None), dict):
            other.snapped = {}
        return other

    # -- naming ---------------------------------------------------------------------
    def name_of(self, image_path: Path) -> str:
        """Output name of a pair: the image's stem (subclasses strip dataset suffixes)."""
        return (image_path if isinstance(image_path, Path) else Path(image_path)).stem

    @property
    def title(self) -> str:
        """Human name of the dataset for messages (``info.extra['title']`` or ``info.name``)."""
        return self.info.extra.get("title", self.info.name) if self.info.extra else self.info.name

    # -- randomness -----------------------------------------------------------------
    def set_epoch(self, epoch: int) -> None:
        """Set the epoch that, with ``seed`` and the index, seeds each item's randomness."""
        if epoch < 0:
            raise ValueError(f"epoch must be non-negative, got {epoch}")
        self.epoch = int(epoch)

    def rng(self, index: int) -> np.random.Generator | None:
        """The item's generator ``default_rng([seed, epoch, index])``; ``None`` if not training."""
        if not self.train:
            return None
        return np.random.default_rng([self.seed, self.epoch, int(index)])

    # -- instance maps ---------------------------------------------------------------
    #: whether :meth:`instance_file` is implemented (datasets with instance maps)
    has_instance_maps = False

    def instance_file(self, i: int) -> Path:
        """The instance-id map of pair ``i`` (datasets with instance maps override this).

        Raises:
            ConfigError: this dataset has no instance maps.
        """
        raise ConfigError(f"dataset {self.info.name!r} has no instance maps (data.instance_edges: true)")

    def load_instance(self, i: int, label_shape: tuple[int, int] | None = None) -> np.ndarray:
        """The full-resolution instance-id map of pair ``i``: ``(H, W)`` integer ids (never
        cached: items keep it resized, with the pair).

        Args:
            label_shape: the label map's ``(H, W)`` if the caller has it (else it is read).

        Raises:
            DataError: unreadable file, or not the size of the label map.
        """
        i = self._index(i)
        path = self.instance_file(i)
        inst = _raw_label(path)
        shape = tuple(label_shape) if label_shape is not None else self._label(i, keep=False).shape
        if inst.shape != shape:
            raise DataError(f"instance map {path} is {inst.shape[1]}x{inst.shape[0]} (WxH), its label "
                            f"{self.pairs[i][1]} is {shape[1]}x{shape[0]}")
        return inst

    def missing_instance_files(self) -> list[Path]:
        """Instance files of the pairs that do not exist (empty when all are there)."""
        return [p for p in (self.instance_file(i) for i in range(len(self))) if not p.is_file()]

    # -- reading --------------------------------------------------------------------
    def __len__(self) -> int:
        """Number of pairs."""
        return len(self.pairs)

    def _index(self, i: int) -> int:
        n = len(self.pairs)
        i = int(i)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"index {i} out of range for {n} pairs")
        return i

    def read_label_file(self, path: Path) -> np.ndarray:
        """Decode one label file into ids ``(H, W)`` int64 (validated against ``info``).

        Subclasses with other encodings (e.g. colour PNGs) override this.

        Raises:
            DataError: unreadable file or ids outside the dataset's ids.
        """
        return read_label(path, self.lut, num_ids=self.info.semantic_nc, name=self.title)

    def read_image_file(self, path: Path) -> np.ndarray:
        """Decode one image file into ``(H, W, 3)`` uint8 RGB (subclasses with other layouts,
        e.g. photo and label side by side, override this).

        Raises:
            DataError: unreadable file.
        """
        return read_image(path)

    def _image(self, i: int, keep: bool = True) -> np.ndarray:
        if i in self._img_cache:
            return self._img_cache[i]
        img = self.read_image_file(self.pairs[i][0])
        if self.cache and keep:
            self._img_cache[i] = img
        return img

    def _label(self, i: int, keep: bool = True) -> np.ndarray:
        if i in self._lab_cache:
            return self._lab_cache[i]
        lab = self.read_label_file(self.pairs[i][1])
        if self.cache and keep:  # compact storage; ids are validated, so the cast is exact
            nc = self.info.semantic_nc
            lab = lab.astype(np.uint8 if nc <= 256 else np.uint16 if nc <= 65536 else np.int64)
            self._lab_cache[i] = lab
        return lab

    def load_image(self, i: int) -> np.ndarray:
        """The full-resolution image of pair ``i``: ``(H, W, 3)`` uint8 RGB (a fresh copy).

        Raises:
            DataError: unreadable or truncated image file.
        """
        i = self._index(i)
        img = self._image(i)
        return img.copy() if self.cache else img

    def load_label(self, i: int) -> np.ndarray:
        """The full-resolution label map of pair ``i``: ``(H, W)`` int64 ids, no transform.

        Used to score against full-resolution ground truth (mIoU).

        Raises:
            DataError: unreadable file or ids outside ``0 .. info.semantic_nc - 1``.
        """
        i = self._index(i)
        return self._label(i).astype(np.int64, copy=True)

    def load_ground_truth(self, i: int) -> np.ndarray:
        """The label map the evaluation scores against (``(H, W)`` int64 ids, full
        resolution): :meth:`load_label`, unless a dataset option changes the model's input
        only (Cityscapes ``polegroup: pole``)."""
        return self.load_label(i)

    def load_pair(self, i: int, _keep: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Full-resolution image ``(H, W, 3)`` uint8 and label ``(H, W)`` integer ids.

        The label's dtype may be compact (uint8) when cached; values are ids. The arrays
        may be the cached ones: do not modify them.

        Raises:
            DataError: unreadable files, bad ids, or image and label sizes that differ
                (names both files and both sizes).
        """
        i = self._index(i)
        img, lab = self._image(i, _keep), self._label(i, _keep)
        if img.shape[:2] != lab.shape:
            a, b = self.pairs[i]
            raise DataError(
                f"image and label sizes differ: image {a} is {img.shape[1]}x{img.shape[0]} (WxH), "
                f"label {b} is {lab.shape[1]}x{lab.shape[0]} (WxH)"
            )
        return img, lab

    def __getitem__(self, i: int) -> tuple[torch.Tensor, ...]:
        """Item ``i``: image ``(3, h, w)`` float32 in [-1, 1], label ``(h, w)`` int64 ids, and
        with ``info.instance_edges`` the edge map ``(1, h, w)`` float32 in {0, 1}.

        Training items draw crop/flip from ``default_rng([seed, epoch, i])``; evaluation
        items (``train=False``) are deterministic (plain resize, no crop, no flip).

        Raises:
            DataError: see :meth:`load_pair` and :meth:`load_instance`.
        """
        i = self._index(i)
        from semsynth.data.transforms import PairedTransform, resize_label, to_tensor_image

        edges = self.info.instance_edges
        if self.cache and isinstance(self.transform, PairedTransform):
            # keep the resized pair (the deterministic step) in memory; crop/flip per call
            hit = self._resized_cache.get(i)
            if hit is None:
                img, lab = self.load_pair(i, _keep=False)  # only the resized pair is kept
                hit = self.transform.resize(img, lab)
                if edges:
                    hit = hit + (resize_label(self.load_instance(i, lab.shape), *hit[1].shape),)
                self._resized_cache[i] = hit
            return self.transform.crop_flip(*hit[:2], self.rng(i), *hit[2:])
        img, lab = self.load_pair(i)
        inst = self.load_instance(i, lab.shape) if edges else None
        if self.transform is None:
            item = (to_tensor_image(img), torch.from_numpy(lab.astype(np.int64)))
            if edges:
                from semsynth.labels import edge_map

                item += (edge_map(torch.from_numpy(inst.astype(np.int64))[None])[0],)
            return item
        return self.transform(img, lab, self.rng(i), inst)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.info.name!r}, {len(self)} pairs, root={str(self.root)!r}, "
                f"train={self.train})")
