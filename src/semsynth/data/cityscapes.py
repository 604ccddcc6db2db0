"""Cityscapes, fine annotations (Cordts et al., "The Cityscapes Dataset for Semantic Urban
Scene Understanding", CVPR 2016; label table of the official ``cityscapesScripts``,
``helpers/labels.py``).

Layout (official)::

    <root>/leftImg8bit/<split>/<city>/<city>_<seq>_<frame>_leftImg8bit.png
    <root>/gtFine/<split>/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png

(``gtFine`` also holds ``*_color.png``, ``*_instanceIds.png``, ``*_polygons.json``; only
``*_gtFine_labelIds.png`` is read, and ``*_gtFine_instanceIds.png`` with
``data.instance_edges``.) Splits: ``train`` (2,975), ``val`` (500), ``test``.

Label ids are the 34 labelIds 0-33 (not the 19 trainIds): 0 = unlabeled is the don't-care
id, ``semantic_nc`` = 34 (35 with ``data.options.label_nc: 35``, the official SPADE/CC-FPSE
``label_nc``, whose channel 34 no labelId fills; ``semsynth import-official`` keeps 34 and
drops that channel from official weights). The other void ids (1-6) and the ids ignored in the official
evaluation (9, 10, 14-16, 18, 29, 30) are ordinary input channels here, as in SPADE/OASIS;
the mIoU judge maps labelIds to trainIds itself. The item name is
``<city>_<seq>_<frame>``.

``data.options.label_ids: train`` reads the same files into the 19 train ids + void (20
channels, void = don't-care id 19): CRN's official label space.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from semsynth.config import DataConfig, data_root
from semsynth.data.base import PairedDataset, check_options, list_files, make_lut, pair_by_key
from semsynth.data.transforms import transform_from_config
from semsynth.registry import register_dataset
from semsynth.types import ConfigError, DataError, DatasetInfo

__all__ = ["INFO", "LABELS", "Cityscapes"]

IMAGE_SUFFIX = "_leftImg8bit.png"
LABEL_SUFFIX = "_gtFine_labelIds.png"
INSTANCE_SUFFIX = "_gtFine_instanceIds.png"

#: (labelId, name, RGB colour) of cityscapesScripts ``labels.py`` (license plate, id -1,
#: is not drawn into labelIds images).
LABELS = (
    (0, "unlabeled", (0, 0, 0)),
    (1, "ego vehicle", (0, 0, 0)),
    (2, "rectification border", (0, 0, 0)),
    (3, "out of roi", (0, 0, 0)),
    (4, "static", (0, 0, 0)),
    (5, "dynamic", (111, 74, 0)),
    (6, "ground", (81, 0, 81)),
    (7, "road", (128, 64, 128)),
    (8, "sidewalk", (244, 35, 232)),
    (9, "parking", (250, 170, 160)),
    (10, "rail track", (230, 150, 140)),
    (11, "building", (70, 70, 70)),
    (12, "wall", (102, 102, 156)),
    (13, "fence", (190, 153, 153)),
    (14, "guard rail", (180, 165, 180)),
    (15, "bridge", (150, 100, 100)),
    (16, "tunnel", (150, 120, 90)),
    (17, "pole", (153, 153, 153)),
    (18, "polegroup", (153, 153, 153)),
    (19, "traffic light", (250, 170, 30)),
    (20, "traffic sign", (220, 220, 0)),
    (21, "vegetation", (107, 142, 35)),
    (22, "terrain", (152, 251, 152)),
    (23, "sky", (70, 130, 180)),
    (24, "person", (220, 20, 60)),
    (25, "rider", (255, 0, 0)),
    (26, "car", (0, 0, 142)),
    (27, "truck", (0, 0, 70)),
    (28, "bus", (0, 60, 100)),
    (29, "caravan", (0, 0, 90)),
    (30, "trailer", (0, 0, 110)),
    (31, "train", (0, 80, 100)),
    (32, "motorcycle", (0, 0, 230)),
    (33, "bicycle", (119, 11, 32)),
)

#: Cityscapes label space: labelIds 0-33, 0 (unlabeled) = don't-care.
INFO = DatasetInfo(
    name="cityscapes",
    class_names=tuple(n for _, n, _ in LABELS),
    palette=tuple(c for _, _, c in LABELS),
    ignore_index=0,
    extra={"title": "Cityscapes"},
)


#: The 19 train ids (cityscapesScripts ``trainId``) in order, then void.
TRAIN_ID_NAMES = ("road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
                  "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle",
                  "bicycle", "void")

#: The train-id label space (``data.options.label_ids: train``): ids 0-18 the 19 evaluated
#: classes, 19 = void (every other labelId; the don't-care id). CRN's official input
#: (CQFIO/PhotographicImageSynthesis: 19 colour channels + void = 20).
TRAIN_ID_INFO = DatasetInfo(
    name="cityscapes",
    class_names=TRAIN_ID_NAMES,
    palette=tuple(next(c for _, n, c in LABELS if n == name) for name in TRAIN_ID_NAMES[:-1]) + ((0, 0, 0),),
    ignore_index=19,
    extra={"title": "Cityscapes (train ids)", "label_ids": "train"},
)

#: The labelId space with the official codes' unused 35th channel (``data.options.label_nc:
#: 35``): NVlabs/SPADE and xh-liu/CC-FPSE ``data/cityscapes_dataset.py`` set ``label_nc 35``
#: (labelIds 0-33 never fill channel 34), so their networks (and checkpoints) have one more
#: input channel than the 34 labelIds.
INFO_35 = DatasetInfo(
    name="cityscapes",
    class_names=INFO.class_names + ("unused (official channel 34)",),
    palette=INFO.palette + ((0, 0, 0),),
    ignore_index=0,
    extra={"title": "Cityscapes", "label_nc": 35},
)

#: Options of this dataset: ``label_ids``: ``"label"`` (default, labelIds 0-33) or
#: ``"train"``; ``polegroup`` (only with ``label_ids: train``): ``"void"`` (default, as the
#: official evaluation) or ``"pole"`` (CRN's input: see :func:`train_id_lut`); ``label_nc``
#: (only with ``label_ids: label``): 34 (default) or 35 (:data:`INFO_35`).
OPTIONS = ("label_ids", "polegroup", "label_nc")


def _label_ids(cfg: DataConfig | None) -> str:
    opts = check_options(cfg.options if cfg is not None else None, OPTIONS, "cityscapes")
    mode = str(opts.get("label_ids", "label"))
    if mode not in ("label", "train"):
        raise ConfigError(f"data.options.label_ids: {mode!r} is not 'label' (labelIds 0-33) or 'train' "
                          "(19 train ids + void)")
    pg = opts.get("polegroup")
    if pg is not None and (mode != "train" or pg not in ("void", "pole")):
        raise ConfigError(f"data.options.polegroup: {pg!r} must be 'void' or 'pole', and only with "
                          f"data.options.label_ids: train (got label_ids {mode!r})")
    nc = opts.get("label_nc")
    if nc is not None and (mode != "label" or nc not in (34, 35)):
        raise ConfigError(f"data.options.label_nc: {nc!r} must be 34 or 35, and only with "
                          f"data.options.label_ids: label (got label_ids {mode!r})")
    return mode


def _info(cfg: DataConfig | None) -> DatasetInfo:
    if _label_ids(cfg) == "train":
        return TRAIN_ID_INFO
    return INFO_35 if ((cfg.options if cfg is not None else None) or {}).get("label_nc") == 35 else INFO


def train_id_lut(polegroup: str = "void") -> np.ndarray:
    """labelId (0-33) → train id (0-18), every other labelId → 19 (void); ``(256,)`` int64
    with -1 for raw values that are not labelIds.

    ``polegroup="pole"`` maps polegroup (labelId 18) to pole (5) instead: CRN's label maps
    are cityscapesScripts colour images, where polegroup has pole's colour (153, 153, 153),
    so CRN's colour-to-class step (CQFIO/PhotographicImageSynthesis ``demo_256p.py``) reads it
    as pole. The ground truth of the evaluation then counts those pixels as pole too.
    """
    from semsynth.data.cityscapes_ids import cityscapes_label_to_train_id

    train = cityscapes_label_to_train_id(np.arange(34))
    lut = {i: (int(t) if t != 255 else 19) for i, t in enumerate(train)}
    if polegroup == "pole":
        lut[18] = lut[17]
    return make_lut(lut)


def _key(path: Path, suffix: str) -> tuple[str, str]:
    return (path.parent.name, path.name[: -len(suffix)])


@register_dataset("cityscapes")
class Cityscapes(PairedDataset):
    """Cityscapes fine annotations (official layout, see the module docstring).

    Items: image ``(3, H, W)`` float32 in [-1, 1], label ``(H, W)`` int64 labelIds in 0-33
    (0 = unlabeled = ``ignore_index``).

    Args:
        cfg: data config (``root`` or ``$SEMSYNTH_DATA/cityscapes``).
        split: ``train``, ``val`` or ``test``.
        train: random crop/flip per item.
        seed: base seed of the per-item randomness.

    Raises:
        DataError: missing/empty folders, unpaired files.
    """

    def __init__(self, cfg: DataConfig, split: str, train: bool, seed: int = 0) -> None:
        train_ids = _label_ids(cfg) == "train"
        root = data_root(cfg, "cityscapes")
        img_dir, lab_dir = root / "leftImg8bit" / split, root / "gtFine" / split
        images, labels = {}, {}
        for files, suffix, out in ((list_files(img_dir, None, IMAGE_SUFFIX, recursive=True), IMAGE_SUFFIX, images),
                                   (list_files(lab_dir, None, LABEL_SUFFIX, recursive=True), LABEL_SUFFIX, labels)):
            for f in files:
                k = _key(f, suffix)
                if k in out:
                    raise DataError(f"two files for {k[1]} in city {k[0]}: {out[k]} and {f}")
                out[k] = f
        super().__init__(pair_by_key(images, labels, img_dir, lab_dir), _info(cfg),
                         transform_from_config(cfg, train), train=train, seed=seed, cache=cfg.cache, root=root,
                         lut=train_id_lut(str((cfg.options or {}).get("polegroup", "void")))
                         if train_ids else None)

    has_instance_maps = True

    def instance_file(self, i: int) -> Path:
        """``<city>_<seq>_<frame>_gtFine_instanceIds.png`` next to the label file (ids below
        1000 are labelIds of regions without instances, ``labelId·1000 + k`` instance k)."""
        lab = self.pairs[i][1]
        return lab.with_name(lab.name[: -len(LABEL_SUFFIX)] + INSTANCE_SUFFIX)

    def load_ground_truth(self, i: int) -> np.ndarray:
        """With ``polegroup: pole`` (CRN's input), the ground truth keeps polegroup void, as
        the official evaluation; otherwise :meth:`load_label`."""
        if self.lut is None or self.lut[18] == 19:
            return self.load_label(i)
        return train_id_lut("void")[self.load_label_raw(i)]

    def load_label_raw(self, i: int) -> np.ndarray:
        """The labelIds (0-33) of pair ``i`` as stored, ``(H, W)`` int64, no mapping."""
        from semsynth.data.base import read_label

        return read_label(self.pairs[self._index(i)][1], make_lut({k: k for k in range(34)}), name=self.title)

    def name_of(self, image_path: Path) -> str:
        """``<city>_<seq>_<frame>`` (the image file name without ``_leftImg8bit.png``)."""
        n = Path(image_path).name
        return n[: -len(IMAGE_SUFFIX)] if n.endswith(IMAGE_SUFFIX) else Path(image_path).stem

    @staticmethod
    def dataset_info(cfg: DataConfig | None = None) -> DatasetInfo:
        """The label space (no file is read): :data:`INFO`, :data:`INFO_35` with
        ``data.options.label_nc: 35``, or :data:`TRAIN_ID_INFO` with
        ``data.options.label_ids: train``.

        Raises:
            ConfigError: an unknown option or value.
        """
        return _info(cfg)
