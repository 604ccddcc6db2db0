"""Stanford Background (iccv09Data; Gould, Fulton and Koller, "Decomposing a Scene into
Geometric and Semantically Consistent Regions", ICCV 2009).

Layout of the shared copy (the original ``labels/*.regions.txt`` integer matrices stored as
palette PNGs, plus split lists)::

    <root>/images/<id>.jpg      715 RGB images, about 320x240 (sizes vary)
    <root>/labels/<id>.png      palette PNGs: the palette index is the region class
    <root>/splits/train.txt     572 ids, one per line
    <root>/splits/val.txt       143 ids
    <root>/horizons.txt, <root>/README

Label ids: 0 sky, 1 tree, 2 road, 3 grass, 4 water, 5 building, 6 mountain, 7 foreground
object; file value 15 (the original's negative "unknown") is mapped to 8, the don't-care
id; ``semantic_nc`` = 9.
"""

from __future__ import annotations

from semsynth.config import DataConfig, data_root
from semsynth.data.base import PairedDataset, check_options, make_lut
from semsynth.data.transforms import transform_from_config
from semsynth.registry import register_dataset
from semsynth.types import DataError, DatasetInfo

__all__ = ["INFO", "LUT", "StanfordBackground"]

UNKNOWN_RAW = 15
IGNORE_ID = 8

#: File value → label id: 0-7 unchanged, 15 → 8 (unknown).
LUT = make_lut({**{i: i for i in range(8)}, UNKNOWN_RAW: IGNORE_ID})

#: Stanford Background label space; colours are the label PNGs' own palette entries 0-7
#: (measured on the shared files), black for unknown.
INFO = DatasetInfo(
    name="stanford_background",
    class_names=("sky", "tree", "road", "grass", "water", "building", "mountain", "foreground object",
                 "unknown"),
    palette=((128, 128, 128), (129, 127, 38), (120, 69, 125), (53, 125, 34), (0, 11, 123),
             (118, 20, 12), (122, 81, 25), (241, 134, 51), (0, 0, 0)),
    ignore_index=IGNORE_ID,
    extra={"title": "Stanford Background"},
)


@register_dataset("stanford_background")
class StanfordBackground(PairedDataset):
    """Stanford Background with split lists (see the module docstring).

    Items: image ``(3, H, W)`` float32 in [-1, 1], label ``(H, W)`` int64 in 0-8
    (8 = unknown = ``ignore_index``). Pairs are those listed in ``splits/<split>.txt``,
    sorted by file name.

    Args:
        cfg: data config (``root`` or ``$SEMSYNTH_DATA/stanford_background``).
        split: name of a list ``splits/<split>.txt`` (``train``, ``val``).
        train: random crop/flip per item.
        seed: base seed of the per-item randomness.

    Raises:
        DataError: missing split list, an empty list, or a listed id without its image or
            label file (names the missing file).
    """

    def __init__(self, cfg: DataConfig, split: str, train: bool, seed: int = 0) -> None:
        check_options(cfg.options, (), "stanford_background")
        root = data_root(cfg, "stanford_background")
        split_file = root / "splits" / f"{split}.txt"
        if not root.is_dir():
            raise DataError(f"folder not found: {root}")
        if not split_file.is_file():
            raise DataError(f"split list not found: {split_file}")
        ids = [s.strip() for s in split_file.read_text().splitlines() if s.strip() and not s.startswith("#")]
        if not ids:
            raise DataError(f"split list {split_file} is empty")
        if len(set(ids)) != len(ids):
            dup = sorted({s for s in ids if ids.count(s) > 1})
            raise DataError(f"split list {split_file} repeats ids {dup[:10]}")
        pairs = []
        for s in ids:
            img, lab = root / "images" / f"{s}.jpg", root / "labels" / f"{s}.png"
            for f, other, what in ((img, lab, "image"), (lab, img, "label")):
                if not f.is_file():
                    raise DataError(f"unpaired files: {what} {f} not found for {other} "
                                    f"(id {s!r} listed in {split_file})")
            pairs.append((img, lab))
        super().__init__(pairs, INFO, transform_from_config(cfg, train), train=train, seed=seed,
                         cache=cfg.cache, lut=LUT, root=root)

    @staticmethod
    def dataset_info(cfg: DataConfig | None = None) -> DatasetInfo:
        """The label space (no file is read)."""
        return INFO
