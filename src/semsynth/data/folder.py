"""Your own data: a folder of paired images and label maps plus a class list.

Layout::

    <root>/classes.yaml               (or classes.txt, see below)
    <root>/<split>/images/<stem>.png  RGB images (.png, .jpg, .jpeg, .bmp, .webp, .tif)
    <root>/<split>/labels/<stem>.png  label maps, paired with the images by file stem

e.g. ``<root>/train/images/0001.jpg`` + ``<root>/train/labels/0001.png`` and the same under
``<root>/val/``. Every image needs a label of the same size and every label an image.

Label maps come in one of two formats (``label_format``):

* ``id`` (default): single-channel PNGs (grey ``L``, 16-bit grey, or palette ``P``, whose
  palette *indices* are read) whose pixel values are the label ids ``0 .. N-1``;
* ``color``: RGB PNGs (palette PNGs are read through their palette) whose colours are the
  class colours of ``classes.yaml``; a colour not in the list is an error naming the file
  and the colour.

``classes.yaml`` lists the classes in id order (id 0 first)::

    name: my_streets          # optional; the dataset's name (default "folder")
    label_format: color       # optional: id (default) or color
    ignore_index: 3           # optional: the don't-care id (or its class name, e.g. void)
    classes:
      - name: sky
        color: [128, 128, 128]  # RGB 0-255; required for label_format color
      - name: road
        color: [128, 64, 128]
      - name: car
        color: [64, 0, 128]
      - name: void
        color: [0, 0, 0]

Colour labels as users have them (JPEG-compressed, or drawn with anti-aliased brushes) are
rarely exact. Two keys (in ``classes.yaml`` or ``data.options``) handle that:

* ``color_tolerance`` (default 0 = exact): a pixel whose colour is within this Euclidean
  distance in RGB units (0-255 per channel) of a class colour is snapped to the *nearest*
  class colour; the number of snapped pixels per file is kept (:meth:`FolderDataset.snap_report`,
  printed by ``semsynth train`` and ``semsynth data check``).
* ``unmatched`` (default ``error``): a pixel farther than the tolerance from every class
  colour is an error naming the file, the colour and its pixel count; ``ignore`` makes it
  the don't-care id instead (the class list must have one).

The pix2pix "aligned" layout — ``layout: aligned`` — reads ``<root>/<split>/*.jpg|png``, each
file the photo and its colour label map side by side (pix2pix's Cityscapes and facades
releases); ``aligned_order: image_label`` (default: photo left, label right) or
``label_image``. Aligned labels must be colour labels (``label_format: color``).

A plain list of names also works for id labels (``classes: [sky, road, car, void]``;
colours are then taken from the VOC colour map). ``classes.txt`` is the same list, one class
per line in id order, as ``name``, ``name R G B``, optionally followed by the word
``ignore`` to mark the don't-care class; blank lines and lines starting with ``#`` are
skipped::

    sky 128 128 128
    road 128 64 128
    car 64 0 128
    void 0 0 0 ignore

``DataConfig.options`` may override the file: ``label_format: id|color``, ``color_tolerance``,
``unmatched: error|ignore``, ``layout: folders|aligned``, ``aligned_order``. Example config:
``configs/oasis/folder_example.yaml``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from semsynth.config import DataConfig, data_root
from semsynth.data.base import (
    IMAGE_EXTENSIONS,
    PairedDataset,
    _open,
    check_options,
    color_map,
    index_by_stem,
    list_files,
    pair_by_key,
    read_image,
    read_label,
)
from semsynth.data.transforms import transform_from_config
from semsynth.registry import register_dataset
from semsynth.types import DataError, DatasetInfo

__all__ = ["FolderDataset", "folder_info", "read_color_label", "colors_to_ids", "LABEL_FORMATS", "OPTIONS"]

LABEL_FORMATS = ("id", "color")
#: Keys of ``DataConfig.options`` (and of ``classes.yaml``) that set how the files are read.
OPTIONS = ("label_format", "color_tolerance", "unmatched", "layout", "aligned_order")
LAYOUTS = ("folders", "aligned")
ALIGNED_ORDERS = ("image_label", "label_image")
UNMATCHED = ("error", "ignore")


def _parse_color(value, where: str) -> tuple[int, int, int]:
    if (not isinstance(value, (list, tuple)) or len(value) != 3
            or not all(isinstance(c, int) and not isinstance(c, bool) and 0 <= c <= 255 for c in value)):
        raise DataError(f"{where}: colour must be three integers 0-255, got {value!r}")
    return (int(value[0]), int(value[1]), int(value[2]))


def _load_yaml(path: Path) -> dict:
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise DataError(f"cannot read class list {path}: {exc}") from None
    if not isinstance(data, dict) or "classes" not in data:
        raise DataError(f"class list {path}: expected a mapping with a 'classes' list")
    return data


def _load_txt(path: Path) -> dict:
    classes, ignore = [], None
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise DataError(f"cannot read class list {path}: {exc}") from None
    for n, line in enumerate(lines, 1):
        tokens = line.split()
        if not tokens or tokens[0].startswith("#"):
            continue
        if len(tokens) >= 2 and tokens[-1].lower() == "ignore":
            if ignore is not None:
                raise DataError(f"class list {path} line {n}: a second class is marked ignore")
            ignore = len(classes)
            tokens = tokens[:-1]
        entry: dict = {"name": " ".join(tokens)}
        if len(tokens) >= 4 and all(t.lstrip("-").isdigit() for t in tokens[-3:]):
            entry = {"name": " ".join(tokens[:-3]), "color": [int(t) for t in tokens[-3:]]}
        classes.append(entry)
    return {"classes": classes, "ignore_index": ignore}


def _class_file(root: Path) -> Path:
    for name in ("classes.yaml", "classes.yml", "classes.txt"):
        if (root / name).is_file():
            return root / name
    raise DataError(f"class list not found: {root / 'classes.yaml'} (or classes.txt)")


def folder_info(cfg: DataConfig) -> DatasetInfo:
    """The label space of a folder dataset, read from ``<root>/classes.yaml`` (or .txt).

    Only the class list is read (no image or label). ``info.extra`` holds
    ``label_format`` (``id`` or ``color``, after ``cfg.options``) and ``has_colors``.

    Raises:
        DataError: no class list, or a malformed one (names the file and the entry):
            empty list, bad colour, repeated colour (colour format), missing colours
            (colour format), ``ignore_index`` out of range or unknown class name.
        ConfigError: unknown ``cfg.options`` key.
    """
    opts = check_options(cfg.options, OPTIONS, "folder")
    root = data_root(cfg, "folder")
    path = _class_file(root)
    data = _load_txt(path) if path.suffix == ".txt" else _load_yaml(path)
    raw = data.get("classes")
    if not isinstance(raw, list) or not raw:
        raise DataError(f"class list {path}: 'classes' must be a non-empty list")
    names, colors = [], []
    for i, entry in enumerate(raw):
        where = f"class list {path}, class {i}"
        if isinstance(entry, str):
            names.append(entry)
            colors.append(None)
        elif isinstance(entry, dict) and isinstance(entry.get("name"), str):
            unknown = sorted(set(entry) - {"name", "color", "colour"})
            if unknown:
                raise DataError(f"{where}: unknown keys {unknown} (expected name, color)")
            names.append(entry["name"])
            col = entry.get("color", entry.get("colour"))
            colors.append(None if col is None else _parse_color(col, where))
        else:
            raise DataError(f"{where}: expected a name or {{name: ..., color: [r, g, b]}}, got {entry!r}")
    fmt = str(opts.get("label_format", data.get("label_format", "id"))).lower()
    if fmt == "colour":
        fmt = "color"
    if fmt not in LABEL_FORMATS:
        raise DataError(f"class list {path} / data.options: label_format must be id or color, got {fmt!r}")
    has_colors = all(c is not None for c in colors)
    if fmt == "color":
        missing = [names[i] for i, c in enumerate(colors) if c is None]
        if missing:
            raise DataError(f"class list {path}: label_format color needs a colour for every class; "
                            f"missing for {missing[:10]}")
        seen: dict = {}
        for i, c in enumerate(colors):
            if c in seen:
                raise DataError(f"class list {path}: colour {c} is used by classes {seen[c]} and {i} "
                                "(colour labels need distinct colours)")
            seen[c] = i
    fallback = color_map(len(names))
    palette = tuple(c if c is not None else fallback[i] for i, c in enumerate(colors))
    ignore = data.get("ignore_index", data.get("ignore"))
    if isinstance(ignore, str):
        if ignore not in names:
            raise DataError(f"class list {path}: ignore_index {ignore!r} is not a class name")
        ignore = names.index(ignore)
    if ignore is not None and (not isinstance(ignore, int) or isinstance(ignore, bool)
                               or not 0 <= ignore < len(names)):
        raise DataError(f"class list {path}: ignore_index {ignore!r} not in 0-{len(names) - 1}")
    def opt(key, default):
        return opts.get(key, data.get(key, default))

    try:
        tol = float(opt("color_tolerance", 0.0))
    except (TypeError, ValueError):
        raise DataError(f"class list {path} / data.options: color_tolerance must be a number, "
                        f"got {opt('color_tolerance', 0)!r}") from None
    if not 0 <= tol <= 442:
        raise DataError(f"class list {path} / data.options: color_tolerance must be in 0-442 (RGB distance), got {tol}")
    unmatched = str(opt("unmatched", "error")).lower()
    layout = str(opt("layout", "folders")).lower()
    order = str(opt("aligned_order", "image_label")).lower()
    for key, val, choices in (("unmatched", unmatched, UNMATCHED), ("layout", layout, LAYOUTS),
                              ("aligned_order", order, ALIGNED_ORDERS)):
        if val not in choices:
            raise DataError(f"class list {path} / data.options: {key} must be one of {list(choices)}, got {val!r}")
    if unmatched == "ignore" and ignore is None:
        raise DataError(f"class list {path}: unmatched: ignore needs a don't-care class (ignore_index)")
    if layout == "aligned" and fmt != "color":
        raise DataError(f"class list {path} / data.options: layout aligned needs label_format color "
                        "(the label half of a side-by-side image is a colour picture)")
    if tol > 0 and fmt != "color":
        raise DataError(f"class list {path} / data.options: color_tolerance applies to label_format color only")
    name = str(data.get("name", "folder"))
    return DatasetInfo(name, tuple(names), palette, ignore_index=ignore,
                       extra={"title": name, "label_format": fmt, "has_colors": has_colors,
                              "classes_file": str(path), "color_tolerance": tol, "unmatched": unmatched,
                              "layout": layout, "aligned_order": order})


def colors_to_ids(rgb: np.ndarray, palette, source: str, name: str = "dataset", tolerance: float = 0.0,
                  unmatched: str = "error", ignore_index: int | None = None) -> tuple[np.ndarray, int]:
    """Map the colours of an RGB label picture to label ids.

    Exact colours map to their class. With ``tolerance`` > 0, every other colour within that
    Euclidean RGB distance of a class colour is snapped to the nearest one (ties: the lower
    id). Colours farther away are an error (``unmatched="error"``) or ``ignore_index``
    (``unmatched="ignore"``).

    Args:
        rgb: ``(H, W, 3)`` uint8.
        palette: one RGB triple per label id (distinct colours).
        source: file name for the messages.
        name: dataset name for the messages.
        tolerance: RGB distance (0 = exact match only).
        unmatched: ``"error"`` or ``"ignore"``.
        ignore_index: the don't-care id (needed for ``"ignore"``).

    Returns:
        ``(ids, snapped)``: ``(H, W)`` int64 label ids and the number of pixels that were not
        an exact class colour (snapped, or set to don't-care).

    Raises:
        DataError: colours farther than the tolerance with ``unmatched="error"`` (names the
            file, up to 5 colours with their pixel counts and distance to the nearest class).
    """
    if unmatched == "ignore" and ignore_index is None:
        raise ValueError("colors_to_ids: unmatched='ignore' needs an ignore_index")
    code = (rgb[..., 0].astype(np.int32) << 16) | (rgb[..., 1].astype(np.int32) << 8) | rgb[..., 2]
    pal = np.asarray(palette, dtype=np.int32).reshape(-1, 3)
    known = (pal[:, 0] << 16) | (pal[:, 1] << 8) | pal[:, 2]
    order = np.argsort(known, kind="stable")
    sk = known[order]
    pos = np.clip(np.searchsorted(sk, code), 0, len(sk) - 1)
    ok = sk[pos] == code
    ids = order[pos].astype(np.int64)
    if ok.all():
        return ids, 0
    bad, inverse, counts = np.unique(code[~ok], return_inverse=True, return_counts=True)
    cols = np.stack([bad >> 16, (bad >> 8) & 255, bad & 255], 1).astype(np.float64)
    palf = pal.astype(np.float64)
    nearest = np.empty(len(bad), np.int64)
    near_d = np.empty(len(bad), np.float64)
    for s in range(0, len(bad), 4096):  # bounded memory for photos with many distinct colours
        dist = np.sqrt(((cols[s:s + 4096, None, :] - palf[None, :, :]) ** 2).sum(-1))  # (chunk, P)
        nearest[s:s + 4096] = dist.argmin(1)
        near_d[s:s + 4096] = dist[np.arange(dist.shape[0]), nearest[s:s + 4096]]
    close = near_d <= tolerance
    if not close.all() and unmatched != "ignore":
        far = np.flatnonzero(~close)
        far = far[np.argsort(-counts[far], kind="stable")]
        desc = ", ".join(f"({int(cols[k, 0])}, {int(cols[k, 1])}, {int(cols[k, 2])}) at {int(counts[k])} px"
                         f" (distance {near_d[k]:.0f})" for k in far[:5])
        more = f" and {len(far) - 5} more" if len(far) > 5 else ""
        hint = (f"; color_tolerance is {tolerance:g}" if tolerance > 0 else
                "; for compressed (e.g. JPEG) colour labels set color_tolerance (data.options or classes.yaml)")
        raise DataError(f"unknown label colour(s) {desc}{more} not in the {name} class colours (file {source}){hint}")
    repl = np.where(close, nearest, -1 if ignore_index is None else ignore_index)
    ids[~ok] = repl[inverse]
    return ids, int((~ok).sum())


def read_color_label(path: str | Path, palette, name: str = "dataset", tolerance: float = 0.0,
                     unmatched: str = "error", ignore_index: int | None = None) -> np.ndarray:
    """Read a colour label map and map its colours to ids (see :func:`colors_to_ids`).

    Args:
        path: RGB (or RGBA, palette) PNG/JPEG.
        palette: one RGB triple per label id (distinct colours).
        name: dataset name for the error messages.
        tolerance, unmatched, ignore_index: as :func:`colors_to_ids` (default: exact).

    Returns:
        ``(H, W)`` int64 label ids.

    Raises:
        DataError: unreadable file or unmatched colours (names the file, the colour(s) and
            their pixel counts).
    """
    im = _open(path, "label")
    with im:
        rgb = np.asarray(im.convert("RGB"), dtype=np.uint8)
    return colors_to_ids(rgb, palette, str(path), name, tolerance, unmatched, ignore_index)[0]


@register_dataset("folder")
class FolderDataset(PairedDataset):
    """Paired images and label maps in a folder (layout in the module docstring).

    Items: image ``(3, H, W)`` float32 in [-1, 1], label ``(H, W)`` int64 ids in
    ``0 .. info.semantic_nc - 1`` (classes of ``classes.yaml``).

    Args:
        cfg: data config (``root`` required in practice; ``options.label_format``).
        split: sub-folder name (``train``, ``val``, ...).
        train: random crop/flip per item.
        seed: base seed of the per-item randomness.

    Raises:
        DataError: missing class list or split folders, empty folders, unpaired files;
            when read: ids out of range (id format), unknown colours (colour format), sizes
            that differ, unreadable images.
    """

    def __init__(self, cfg: DataConfig, split: str, train: bool, seed: int = 0) -> None:
        info = folder_info(cfg)
        root = data_root(cfg, "folder")
        if not (root / split).is_dir():
            raise DataError(f"folder not found: {root / split}")
        ex = info.extra
        self.label_format = ex["label_format"]
        self.layout, self.aligned_order = ex["layout"], ex["aligned_order"]
        self.color_tolerance, self.unmatched = ex["color_tolerance"], ex["unmatched"]
        #: label file → pixels that were not an exact class colour (snapped or don't-care)
        self.snapped: dict[str, int] = {}
        if self.layout == "aligned":
            files = list_files(root / split)
            pairs = [(f, f) for f in files]
        else:
            img_dir, lab_dir = root / split / "images", root / split / "labels"
            images = index_by_stem(list_files(img_dir))
            labels = index_by_stem(list_files(lab_dir, (".png",) if self.label_format == "id" else IMAGE_EXTENSIONS))
            pairs = pair_by_key(images, labels, img_dir, lab_dir)
        super().__init__(pairs, info, transform_from_config(cfg, train), train=train, seed=seed,
                         cache=cfg.cache, root=root)

    def _half(self, path: Path, which: str) -> np.ndarray:
        """The photo (``which="image"``) or label half of a side-by-side file, RGB uint8."""
        both = read_image(path)
        w = both.shape[1]
        if w % 2:
            raise DataError(f"aligned file {path} is {w} px wide: photo | label halves need an even width")
        left = (which == "image") == (self.aligned_order == "image_label")
        return both[:, : w // 2] if left else both[:, w // 2:]

    def read_image_file(self, path: Path) -> np.ndarray:
        """The photo: the whole file, or its half in the aligned layout."""
        return self._half(path, "image") if self.layout == "aligned" else read_image(path)

    def read_label_file(self, path: Path) -> np.ndarray:
        """Decode a label file by ``label_format`` (ids or colours) into ``(H, W)`` int64 ids.

        Colours are matched with ``color_tolerance`` / ``unmatched``; the count of snapped
        pixels is recorded in :attr:`snapped`.

        Raises:
            DataError: unreadable file, ids out of range, unknown colours.
        """
        if self.label_format == "color":
            if self.layout == "aligned":
                rgb = self._half(path, "label")
            else:
                im = _open(path, "label")
                with im:
                    rgb = np.asarray(im.convert("RGB"), dtype=np.uint8)
            ids, n = colors_to_ids(rgb, self.info.palette, str(path), self.title, self.color_tolerance,
                                   self.unmatched, self.info.ignore_index)
            self.snapped[str(path)] = n
            return ids
        return read_label(path, None, num_ids=self.info.semantic_nc, name=self.title)

    def snap_report(self) -> str | None:
        """One line on the snapped colour-label pixels read so far, or ``None`` if none."""
        if not any(self.snapped.values()):
            return None
        total = sum(self.snapped.values())
        files = sum(1 for v in self.snapped.values() if v)
        worst = max(self.snapped, key=self.snapped.get)
        how = "snapped to the nearest class colour" + (" or set to don't-care" if self.unmatched == "ignore" else "")
        return (f"{self.title}: {total:,} label pixels in {files} of {len(self.snapped)} files were not exact class "
                f"colours and were {how} (color_tolerance {self.color_tolerance:g}); most in {Path(worst).name} "
                f"({self.snapped[worst]:,} px)")

    dataset_info = staticmethod(folder_info)
