"""The data layer: paired (image, label map) datasets and their label spaces.

Built-in datasets (registry name → module):

* ``camvid`` → :mod:`~semsynth.data.camvid` (SegNet split, 11 classes + void)
* ``cityscapes`` → :mod:`~semsynth.data.cityscapes` (labelIds 0-33)
* ``ade20k`` → :mod:`~semsynth.data.ade20k` (150 classes + other)
* ``coco_stuff`` → :mod:`~semsynth.data.coco_stuff` (182 labels + unlabeled)
* ``stanford_background`` → :mod:`~semsynth.data.stanford_background` (8 classes + unknown)
* ``folder`` → :mod:`~semsynth.data.folder` (your own images, labels and ``classes.yaml``)

A dataset item is ``(image, label)``: image ``(3, H, W)`` float32 in [-1, 1], label
``(H, W)`` int64 ids in ``0 .. info.semantic_nc - 1``; with ``data.instance_edges`` also the
instance-edge map ``(1, H, W)``. See :mod:`semsynth.data.base`.
"""

from __future__ import annotations

import dataclasses

from semsynth.config import DataConfig
from semsynth.data import ade20k, camvid, cityscapes, coco_stuff, folder, stanford_background  # noqa: F401 (registers)
from semsynth.data.base import PairedDataset, read_image, read_label
from semsynth.data.transforms import PairedTransform
from semsynth.registry import get_dataset
from semsynth.types import ConfigError, DataError, DatasetInfo

__all__ = ["PairedDataset", "PairedTransform", "build_dataset", "dataset_info", "label_lut", "read_image",
           "read_label"]


def _factory(cfg: DataConfig):
    try:
        return get_dataset(cfg.dataset)
    except KeyError as exc:
        raise ConfigError(f"data.dataset: {exc.args[0]}") from None


def build_dataset(cfg: DataConfig, split: str, train: bool, seed: int = 0) -> PairedDataset:
    """The dataset ``cfg.dataset`` for one split.

    Args:
        cfg: data config (dataset name, root, sizes, flip, cache, options); ``cache: auto``
            is decided here (``ds.cache``, with the reason in ``ds.cache_reason``).
        split: split name (``cfg.train_split`` / ``cfg.val_split``, e.g. ``train``, ``val``).
        train: training items (random crop/flip drawn per item from
            ``default_rng([seed, epoch, index])``); ``False``: deterministic items.
        seed: base seed of the per-item randomness.

    Returns:
        A :class:`~semsynth.data.base.PairedDataset`: items ``(image (3, h, w) float32 in
        [-1, 1], label (h, w) int64)``, plus ``info``, ``pairs``, ``names``,
        ``load_image(i)``, ``load_label(i)``, ``set_epoch(e)``.

    Raises:
        ConfigError: unknown dataset name, unknown ``options`` key, inconsistent sizes.
        DataError: missing or empty folders, unpaired files, malformed class list.
    """
    from semsynth.data.base import gc_paused

    with gc_paused():
        ds = _factory(cfg)(cfg, split, train, seed)
        if cfg.instance_edges:
            _check_instance_maps(ds, cfg)
            ds.info = dataclasses.replace(ds.info, instance_edges=True)
    from semsynth.data.cache import resolve_cache

    ds.cache, ds.cache_reason = resolve_cache(ds, cfg)
    return ds


def _check_instance_maps(ds: PairedDataset, cfg: DataConfig) -> None:
    if not getattr(ds, "has_instance_maps", False):
        raise ConfigError(f"data.instance_edges: dataset {cfg.dataset!r} has no instance maps "
                          "(cityscapes and coco_stuff have)")
    missing = ds.missing_instance_files()
    if missing:
        more = f" (and {len(missing) - 5} more)" if len(missing) > 5 else ""
        raise DataError(f"data.instance_edges: {len(missing)} instance maps missing: "
                        + ", ".join(str(p) for p in missing[:5]) + more)


def dataset_info(cfg: DataConfig) -> DatasetInfo:
    """The label space of ``cfg.dataset`` without scanning the data.

    Fixed for the built-in datasets (ADE20K reads ``objectInfo150.txt`` for the names if
    present); the folder dataset reads its ``classes.yaml``.

    Raises:
        ConfigError: unknown dataset name.
        DataError: folder dataset without a valid class list.
    """
    factory = _factory(cfg)
    fn = getattr(factory, "dataset_info", None)
    info = fn(cfg) if fn is not None else getattr(factory, "INFO", None)  # third-party: a constant
    if not isinstance(info, DatasetInfo):
        raise ConfigError(f"dataset {cfg.dataset!r} does not provide its label space (dataset_info)")
    if cfg.instance_edges:
        if not getattr(factory, "has_instance_maps", False):
            raise ConfigError(f"data.instance_edges: dataset {cfg.dataset!r} has no instance maps "
                              "(cityscapes and coco_stuff have)")
        info = dataclasses.replace(info, instance_edges=True)
    return info


def label_lut(name: str):
    """The raw-value → id table of dataset ``name`` (e.g. COCO-Stuff 255 → 182), or ``None``
    when its label files already hold ids (module-level ``LUT`` of the dataset's module)."""
    import sys

    factory = _factory(DataConfig(dataset=name))
    return getattr(sys.modules.get(getattr(factory, "__module__", "")), "LUT", None)
