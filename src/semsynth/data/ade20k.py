"""ADE20K, the SceneParsing benchmark release ADEChallengeData2016 (Zhou et al., "Scene
Parsing through ADE20K Dataset", CVPR 2017; MIT CSAIL SceneParsing).

Layout (official ``ADEChallengeData2016/``)::

    <root>/images/training/ADE_train_*.jpg        20,210 images
    <root>/annotations/training/ADE_train_*.png   grey label maps, same stems
    <root>/images/validation/ADE_val_*.jpg        2,000
    <root>/annotations/validation/ADE_val_*.png
    <root>/objectInfo150.txt                      Idx, Ratio, Train, Val, Name (tab-separated)

Split names: ``train`` → ``training``, ``val`` → ``validation`` (the folder names are also
accepted). Label ids: 0 = "other" (don't-care), 1-150 the classes of ``objectInfo150.txt``;
``semantic_nc`` = 151 (as in SPADE/OASIS).
"""

from __future__ import annotations

from pathlib import Path

from semsynth.config import DataConfig, data_root
from semsynth.data.base import PairedDataset, check_options, color_map, index_by_stem, list_files, pair_by_key
from semsynth.data.transforms import transform_from_config
from semsynth.registry import register_dataset
from semsynth.types import DataError, DatasetInfo

__all__ = ["ADE20K", "SPLITS", "ade20k_info"]

#: Split name → folder name.
SPLITS = {"train": "training", "val": "validation", "training": "training", "validation": "validation"}

NUM_CLASSES = 150


def _read_names(path: Path) -> tuple[str, ...] | None:
    """The 150 class names of objectInfo150.txt (first synonym of each), or None if absent."""
    if not path.is_file():
        return None
    names: dict[int, str] = {}
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc}") from None
    for line in lines[1:]:
        cols = line.split("\t")
        if len(cols) < 5 or not cols[0].strip().isdigit():
            continue
        names[int(cols[0])] = cols[4].split(",")[0].strip()
    if sorted(names) != list(range(1, NUM_CLASSES + 1)):
        raise DataError(f"{path}: expected class indices 1-150, found {len(names)} rows")
    return tuple(names[i] for i in range(1, NUM_CLASSES + 1))


def ade20k_info(cfg: DataConfig | None = None) -> DatasetInfo:
    """The ADE20K label space: 0 = other (don't-care) + 150 classes.

    Class names come from ``<root>/objectInfo150.txt`` (first synonym of each row) if the
    file is there, else ``class_1 .. class_150``; colours from the VOC colour map. Reads no
    image or label file.

    Raises:
        DataError: an objectInfo150.txt without the 150 rows.
    """
    names = _read_names(data_root(cfg, "ADEChallengeData2016") / "objectInfo150.txt") if cfg else None
    if names is None:
        names = tuple(f"class_{i}" for i in range(1, NUM_CLASSES + 1))
    return DatasetInfo("ade20k", ("other",) + names, color_map(NUM_CLASSES + 1), ignore_index=0,
                       extra={"title": "ADE20K"})


@register_dataset("ade20k")
class ADE20K(PairedDataset):
    """ADE20K (ADEChallengeData2016 layout, see the module docstring).

    Items: image ``(3, H, W)`` float32 in [-1, 1], label ``(H, W)`` int64 in 0-150
    (0 = other = ``ignore_index``).

    Args:
        cfg: data config (``root`` or ``$SEMSYNTH_DATA/ADEChallengeData2016``).
        split: ``train``/``training`` or ``val``/``validation``.
        train: random crop/flip per item.
        seed: base seed of the per-item randomness.

    Raises:
        DataError: missing/empty folders, unpaired files.
    """

    def __init__(self, cfg: DataConfig, split: str, train: bool, seed: int = 0) -> None:
        check_options(cfg.options, (), "ade20k")
        root = data_root(cfg, "ADEChallengeData2016")
        sub = SPLITS.get(split, split)
        img_dir, lab_dir = root / "images" / sub, root / "annotations" / sub
        images = index_by_stem(list_files(img_dir))
        labels = index_by_stem(list_files(lab_dir, (".png",)))
        super().__init__(pair_by_key(images, labels, img_dir, lab_dir), ade20k_info(cfg),
                         transform_from_config(cfg, train), train=train, seed=seed, cache=cfg.cache, root=root)

    dataset_info = staticmethod(ade20k_info)
