"""COCO-Stuff 164k (Caesar et al., "COCO-Stuff: Thing and Stuff Classes in Context",
CVPR 2018; labels of the official nightrome/cocostuff ``labels.txt``), in the layout the
SPADE repository (Park et al., CVPR 2019) and OASIS read.

Layout (SPADE ``datasets/coco_stuff``)::

    <root>/train_img/*.jpg     COCO 2017 train images
    <root>/train_label/*.png   grey label maps (``stuffthingmaps``), same stems
    <root>/train_inst/*.png    instance maps (read with ``data.instance_edges``)
    <root>/val_img/*.jpg, <root>/val_label/*.png, <root>/val_inst/*.png

Label file values are COCO-Stuff id − 1: 0 = person … 90 = hair brush (things, COCO ids
1-91), 91 = banner … 181 = wood (stuff, ids 92-182), 255 = unlabeled. The loader maps
255 → 182, the don't-care id; ``semantic_nc`` = 183 (SPADE/OASIS: 182 labels + don't-care).
Eleven thing ids (street sign, hat, shoe, eye glasses, plate, mirror, window, desk, door,
blender, hair brush) are never annotated in COCO but keep their channels.
"""

from __future__ import annotations

from pathlib import Path

from semsynth.config import DataConfig, data_root
from semsynth.data.base import PairedDataset, check_options, color_map, index_by_stem, list_files, make_lut, pair_by_key
from semsynth.data.transforms import transform_from_config
from semsynth.registry import register_dataset
from semsynth.types import DatasetInfo

__all__ = ["CLASS_NAMES", "INFO", "LUT", "COCOStuff"]

#: Names of label ids 0-181 (COCO-Stuff ids 1-182, official labels.txt).
CLASS_NAMES = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "street sign", "stop sign", "parking meter", "bench", "bird",
    "cat", "dog", "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "hat",
    "backpack", "umbrella", "shoe", "eye glasses", "handbag", "tie", "suitcase", "frisbee", "skis",
    "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "plate", "wine glass", "cup", "fork", "knife", "spoon", "bowl",
    "banana", "apple", "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut",
    "cake", "chair", "couch", "potted plant", "bed", "mirror", "dining table", "window", "desk",
    "toilet", "door", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone", "microwave",
    "oven", "toaster", "sink", "refrigerator", "blender", "book", "clock", "vase", "scissors",
    "teddy bear", "hair drier", "toothbrush", "hair brush",
    "banner", "blanket", "branch", "bridge", "building-other", "bush", "cabinet", "cage",
    "cardboard", "carpet", "ceiling-other", "ceiling-tile", "cloth", "clothes", "clouds", "counter",
    "cupboard", "curtain", "desk-stuff", "dirt", "door-stuff", "fence", "floor-marble",
    "floor-other", "floor-stone", "floor-tile", "floor-wood", "flower", "fog", "food-other",
    "fruit", "furniture-other", "grass", "gravel", "ground-other", "hill", "house", "leaves",
    "light", "mat", "metal", "mirror-stuff", "moss", "mountain", "mud", "napkin", "net", "paper",
    "pavement", "pillow", "plant-other", "plastic", "platform", "playingfield", "railing",
    "railroad", "river", "road", "rock", "roof", "rug", "salad", "sand", "sea", "shelf",
    "sky-other", "skyscraper", "snow", "solid-other", "stairs", "stone", "straw",
    "structural-other", "table", "tent", "textile-other", "towel", "tree", "vegetable",
    "wall-brick", "wall-concrete", "wall-other", "wall-panel", "wall-stone", "wall-tile",
    "wall-wood", "water-other", "waterdrops", "window-blind", "window-other", "wood",
)
assert len(CLASS_NAMES) == 182

UNLABELED_RAW = 255
IGNORE_ID = 182

#: Raw file value → label id: 0-181 unchanged, 255 → 182; other values are invalid.
LUT = make_lut({**{i: i for i in range(182)}, UNLABELED_RAW: IGNORE_ID})

#: COCO-Stuff label space; colours: VOC colour map of id + 1 (no official palette), black
#: for unlabeled.
INFO = DatasetInfo(
    name="coco_stuff",
    class_names=CLASS_NAMES + ("unlabeled",),
    palette=color_map(183)[1:] + ((0, 0, 0),),
    ignore_index=IGNORE_ID,
    extra={"title": "COCO-Stuff"},
)


@register_dataset("coco_stuff")
class COCOStuff(PairedDataset):
    """COCO-Stuff in the SPADE layout (see the module docstring).

    Items: image ``(3, H, W)`` float32 in [-1, 1], label ``(H, W)`` int64 in 0-182
    (file value 255 → 182 = unlabeled = ``ignore_index``).

    Args:
        cfg: data config (``root`` or ``$SEMSYNTH_DATA/coco_stuff``).
        split: ``train`` or ``val`` (folders ``<split>_img`` and ``<split>_label``).
        train: random crop/flip per item.
        seed: base seed of the per-item randomness.

    Raises:
        DataError: missing/empty folders, unpaired files; when read, raw values other than
            0-181 and 255.
    """

    def __init__(self, cfg: DataConfig, split: str, train: bool, seed: int = 0) -> None:
        check_options(cfg.options, (), "coco_stuff")
        root = data_root(cfg, "coco_stuff")
        img_dir, lab_dir = root / f"{split}_img", root / f"{split}_label"
        images = index_by_stem(list_files(img_dir))
        labels = index_by_stem(list_files(lab_dir, (".png",)))
        super().__init__(pair_by_key(images, labels, img_dir, lab_dir), INFO, transform_from_config(cfg, train),
                         train=train, seed=seed, cache=cfg.cache, lut=LUT, root=root)

    has_instance_maps = True

    def instance_file(self, i: int) -> Path:
        """``<root>/<split>_inst/<stem>.png`` (SPADE ``datasets/coco_generate_instance_map.py``
        output: grey PNG, one value per instance)."""
        lab = self.pairs[i][1]
        return lab.parent.with_name(lab.parent.name[: -len("_label")] + "_inst") / lab.name

    @staticmethod
    def dataset_info(cfg: DataConfig | None = None) -> DatasetInfo:
        """The label space (no file is read)."""
        return INFO
