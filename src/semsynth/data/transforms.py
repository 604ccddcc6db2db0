"""Paired image/label transforms: resize, crop, flip with one random draw for both.

Written with PIL and numpy only, following the official OASIS loaders
(boschresearch/OASIS ``dataloaders/*Dataset.py``): torchvision ``TF.resize`` of PIL images,
bicubic for images and nearest for labels, a random crop, then a horizontal flip with
p = 0.5. For **training**, pairs are resized to the load size (``data.load_height/width``;
official ADE20K and COCO-Stuff: 286×286) and randomly cropped to the output size (256×256);
without a load size (official Cityscapes 256×512, CamVid) they are resized straight to it.
For **evaluation** (``train=False``: val/test pairs, the BatchNorm-refresh batches, metrics)
pairs are resized straight to the output size with no crop — the official ``for_metrics``
path sets ``load_size = crop_size = 256``.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from semsynth.types import ConfigError

__all__ = ["PairedTransform", "resize_image", "resize_label", "to_tensor_image", "transform_from_config"]


def resize_image(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bicubic (PIL, antialiased when shrinking) resize of a ``(H, W, 3)`` uint8 image.

    Returns:
        ``(height, width, 3)`` uint8; the input itself if it already has that size.
    """
    if image.shape[:2] == (height, width):
        return image
    return np.asarray(Image.fromarray(image).resize((width, height), Image.BICUBIC))


def resize_label(label: np.ndarray, height: int, width: int) -> np.ndarray:
    """Nearest-neighbour (PIL) resize of a ``(H, W)`` integer label map.

    Nearest keeps ids exact: every output value is a value of the input.

    Returns:
        ``(height, width)`` array of the input's ids (uint8 if they fit, else int32); the
        input itself if it already has that size.

    Raises:
        ValueError: ids outside ``[0, 2**31)``.
    """
    if label.shape == (height, width):
        return label
    if label.dtype == np.uint8:
        arr = label
    else:
        lo, hi = (int(label.min()), int(label.max())) if label.size else (0, 0)
        if lo < 0 or hi >= 2**31:
            raise ValueError(f"label ids {lo}..{hi} cannot be resized (expected 0 <= id < 2**31)")
        arr = label.astype(np.uint8) if hi < 256 else label.astype(np.int32)
    return np.asarray(Image.fromarray(arr).resize((width, height), Image.NEAREST))


def to_tensor_image(image: np.ndarray) -> torch.Tensor:
    """``(H, W, 3)`` uint8 → ``(3, H, W)`` float32 tensor ``x / 127.5 - 1`` in [-1, 1]."""
    x = np.asarray(image, dtype=np.float32) / np.float32(127.5) - np.float32(1.0)  # a new, writable array
    return torch.from_numpy(x).permute(2, 0, 1).contiguous()


class PairedTransform:
    """Resize, crop and flip an (image, label) pair identically.

    Steps:

    1. resize to ``(load_height, load_width)`` if given, else to ``(height, width)``:
       image bicubic, label nearest (PIL);
    2. if a load size is given: crop ``height x width``, at a random offset when an ``rng``
       is passed, else at the centre;
    3. if ``flip`` and an ``rng`` is passed: horizontal flip with p = 0.5.

    The crop offset and the flip decision are drawn once and applied to both image and
    label (draw order: top, left, then the flip; an axis with no slack draws nothing).

    Args:
        height, width: output size in pixels.
        load_height, load_width: resize size before cropping (both or neither; each at
            least the output size).
        flip: allow the random horizontal flip.

    Raises:
        ConfigError: only one load size, non-positive sizes, or a load size smaller than
            the output size.
    """

    def __init__(self, height: int, width: int, load_height: int | None = None,
                 load_width: int | None = None, flip: bool = False) -> None:
        if (load_height is None) != (load_width is None):
            raise ConfigError(f"data.load_height and data.load_width must be set together, got "
                              f"{load_height} and {load_width}")
        if height <= 0 or width <= 0:
            raise ConfigError(f"data.height/width must be positive, got {height}x{width}")
        if load_height is not None and (load_height < height or load_width < width):  # type: ignore[operator]
            raise ConfigError(f"load size {load_height}x{load_width} is smaller than the crop size "
                              f"{height}x{width} (data.load_height/load_width)")
        self.height, self.width = int(height), int(width)
        self.load_height = None if load_height is None else int(load_height)
        self.load_width = None if load_width is None else int(load_width)
        self.flip = bool(flip)

    def params(self, rng: np.random.Generator | None) -> tuple[int, int, bool]:
        """The draw for one pair: ``(top, left, flipped)`` (deterministic if ``rng`` is None)."""
        top = left = 0
        if self.load_height is not None:
            dh, dw = self.load_height - self.height, self.load_width - self.width  # type: ignore[operator]
            if rng is None:
                top, left = dh // 2, dw // 2
            else:
                top = int(rng.integers(0, dh + 1)) if dh > 0 else 0
                left = int(rng.integers(0, dw + 1)) if dw > 0 else 0
        flipped = bool(self.flip and rng is not None and rng.random() < 0.5)
        return top, left, flipped

    def __call__(self, image: np.ndarray, label: np.ndarray, rng: np.random.Generator | None = None,
                 instance: np.ndarray | None = None) -> tuple[torch.Tensor, ...]:
        """Transform one pair.

        Args:
            image: ``(H, W, 3)`` uint8 RGB.
            label: ``(H, W)`` integer ids (any integer dtype), same H, W as ``image``.
            rng: the pair's generator, or ``None`` for no randomness (centre crop, no flip).
            instance: optional ``(H, W)`` instance-id map: resized (nearest), cropped and
                flipped with the label, then turned into its edge map.

        Returns:
            image ``(3, height, width)`` float32 in [-1, 1] and label ``(height, width)``
            int64 with the input's ids only; with ``instance``, also its edge map
            ``(1, height, width)`` float32 in {0, 1} (:func:`semsynth.labels.edge_map`).

        Raises:
            ValueError: wrong shapes/dtypes or image and label sizes that differ.
        """
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"image must be (H, W, 3) uint8, got {image.shape} {image.dtype}")
        if label.ndim != 2 or not np.issubdtype(label.dtype, np.integer):
            raise ValueError(f"label must be (H, W) integer, got {label.shape} {label.dtype}")
        if image.shape[:2] != label.shape:
            raise ValueError(f"image {image.shape[:2]} and label {label.shape} sizes differ")
        img, lab = self.resize(image, label)
        if instance is None:
            return self.crop_flip(img, lab, rng)
        if instance.shape != label.shape:
            raise ValueError(f"instance map {instance.shape} and label {label.shape} sizes differ")
        return self.crop_flip(img, lab, rng, resize_label(instance, *lab.shape))

    def resize(self, image: np.ndarray, label: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The deterministic first step: resize to the load size (or the output size).

        Args:
            image: ``(H, W, 3)`` uint8 RGB; label: ``(H, W)`` integer ids.

        Returns:
            image ``(rh, rw, 3)`` uint8 (PIL bicubic) and label ``(rh, rw)`` (PIL nearest,
            uint8 if the ids fit, else int32); the inputs themselves if the size matches.
            Datasets with ``cache=True`` keep this result in memory.
        """
        rh = self.load_height if self.load_height is not None else self.height
        rw = self.load_width if self.load_width is not None else self.width
        return resize_image(image, rh, rw), resize_label(label, rh, rw)

    def crop_flip(self, img: np.ndarray, lab: np.ndarray, rng: np.random.Generator | None = None,
                  instance: np.ndarray | None = None) -> tuple[torch.Tensor, ...]:
        """The random second step on a resized pair: crop and flip with one shared draw.

        Args:
            img: ``(rh, rw, 3)`` uint8, lab: ``(rh, rw)`` integer ids (output of :meth:`resize`).
            rng: the pair's generator, or ``None`` (centre crop, no flip).
            instance: optional ``(rh, rw)`` instance ids, resized like ``lab``.

        Returns:
            image ``(3, height, width)`` float32 in [-1, 1], label ``(height, width)`` int64;
            with ``instance``, also its edge map ``(1, height, width)`` float32 in {0, 1},
            taken after the crop and flip.
        """
        top, left, flipped = self.params(rng)
        maps = [lab] if instance is None else [lab, instance]
        img = img[top: top + self.height, left: left + self.width]
        maps = [m[top: top + self.height, left: left + self.width] for m in maps]
        if flipped:
            img, maps = img[:, ::-1], [m[:, ::-1] for m in maps]
        ids = [torch.from_numpy(np.ascontiguousarray(m).astype(np.int64)) for m in maps]
        if instance is None:
            return to_tensor_image(img), ids[0]
        from semsynth.labels import edge_map

        return to_tensor_image(img), ids[0], edge_map(ids[1][None])[0]

    def __repr__(self) -> str:
        load = "" if self.load_height is None else f", load={self.load_height}x{self.load_width}"
        return f"PairedTransform({self.height}x{self.width}{load}, flip={self.flip})"


def transform_from_config(cfg, train: bool) -> PairedTransform:
    """The :class:`PairedTransform` of a :class:`~semsynth.config.DataConfig`.

    Training (``train=True``): resize to ``cfg.load_height/load_width`` (if set), random
    crop to ``cfg.height/width``, flip if ``cfg.flip``. Evaluation (``train=False``): a
    plain resize to ``cfg.height/width``, no crop, no flip (official OASIS ``for_metrics``).

    Raises:
        ConfigError: inconsistent sizes (see :class:`PairedTransform`), checked for both.
    """
    full = PairedTransform(cfg.height, cfg.width, cfg.load_height, cfg.load_width,
                           flip=bool(cfg.flip and train))
    return full if train else PairedTransform(cfg.height, cfg.width, flip=False)
