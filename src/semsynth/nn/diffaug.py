"""Differentiable augmentation (DiffAugment) for the discriminator's inputs, label-aware.

Zhao et al., "Differentiable Augmentation for Data-Efficient GAN Training", NeurIPS 2020
(mit-han-lab/data-efficient-gans, ``DiffAugment_pytorch.py``; Projected GAN trains with its
``color,translation,cutout`` policy, ``pg_modules/diffaug.py``). The ops, on images in
[-1, 1], with one draw per image:

* ``color``: brightness ``x + (u − 0.5)``; saturation ``(x − mean_c) · 2u + mean_c`` (mean over
  channels); contrast ``(x − mean) · (u + 0.5) + mean`` (mean over C, H, W); ``u ~ U[0, 1)``.
* ``translation``: an integer shift of up to ``round(ratio·H)``, ``round(ratio·W)`` pixels
  (ratio 1/8), the uncovered border filled with 0.
* ``cutout``: a ``round(r·H) × round(r·W)`` rectangle at a random centre (possibly partly
  outside the image) set to 0; DiffAugment's r is 1/2, Projected GAN's (the default here)
  0.2.

What is semsynth's: the OASIS discriminator is a segmenter, so the geometric ops move the
**label map** with the image (same draw) and mark every pixel whose content is not the
photo's — the translation's border and the cutout — as not valid (``valid`` False: no
N+1 loss there, :func:`semsynth.losses.n1.n1_cross_entropy`). LabelMix needs the fake,
real and mixed images of one label map transformed alike, so :func:`diff_augment` takes a
list of image batches and applies the *same* draw to image ``i`` of every batch.
kornia (which installs here without torchvision) was considered: its augmentation
containers transform image/mask pairs, but have no don't-care fill or validity output and
no cutout of masks; these three ops are a few tensor lines each.
"""

from __future__ import annotations

from typing import Sequence

import torch

from semsynth.batch_shard import BatchShard

__all__ = ["DIFFAUG_OPS", "parse_policy", "diff_augment"]

DIFFAUG_OPS = ("color", "translation", "cutout")


def parse_policy(policy: str) -> tuple[str, ...]:
    """``"color,translation,cutout"`` → a tuple of ops (``""`` → none).

    Raises:
        ValueError: an unknown op (names it and the known ones).
    """
    ops = tuple(p.strip() for p in policy.split(",") if p.strip())
    bad = [p for p in ops if p not in DIFFAUG_OPS]
    if bad:
        raise ValueError(f"unknown DiffAugment op(s) {bad}; known: {', '.join(DIFFAUG_OPS)}")
    return ops


def diff_augment(images: Sequence[torch.Tensor], label: torch.Tensor, policy: Sequence[str],
                 rng: torch.Generator, translation_ratio: float = 0.125, cutout_ratio: float = 0.2,
                 extra: Sequence[torch.Tensor] = (), shard: BatchShard | None = None
                 ) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    """Augment image batches that share label maps, with one draw per image index.

    Args:
        images: batches ``(B, 3, H, W)`` float in [-1, 1] (e.g. fake, real, LabelMix);
            gradients flow through the ops.
        label: ``(B, H, W)`` int64 label map of every batch.
        policy: ops from :data:`DIFFAUG_OPS`, applied in the order colour, translation,
            cutout (DiffAugment's order).
        rng: CPU generator for the draws (the training run's; advanced).
        translation_ratio, cutout_ratio: 1/8 (DiffAugment, Projected GAN) and 0.2 (Projected GAN).
        extra: other per-pixel maps ``(B, C, H, W)`` moved with the geometry only (e.g. the
            LabelMix mask), border/cutout filled with 0.
        shard: where the batch sits in a data-parallel global batch: the draws are made for
            the global batch and sliced (:class:`semsynth.batch_shard.BatchShard`), so image
            ``i`` gets the same augmentation whatever the number of processes.

    Returns:
        ``(images, label, valid, extra)``: augmented batches, the moved label map (int64;
        invalid pixels keep a copy of a neighbour's id, use ``valid``), ``valid`` ``(B, H, W)``
        bool (False where the pixel is padding or cut out), moved ``extra`` maps.

    Raises:
        ValueError: an op not in :data:`DIFFAUG_OPS`, or batches of different shapes.
    """
    bad = [p for p in policy if p not in DIFFAUG_OPS]
    if bad:
        raise ValueError(f"unknown DiffAugment op(s) {bad}; known: {', '.join(DIFFAUG_OPS)}")
    images = list(images)
    if any(x.shape != images[0].shape for x in images):
        raise ValueError(f"diff_augment: batches of different shapes {[tuple(x.shape) for x in images]}")
    b, _, h, w = images[0].shape
    dev = images[0].device
    shard = shard or BatchShard.whole(b, 1)
    valid = torch.ones(b, h, w, dtype=torch.bool, device=dev)
    extra = list(extra)
    if "color" in policy:
        u = shard.rand(rng, 3, device=dev)[:, :, None, None, None]  # (B, 3, 1, 1, 1)
        bright, sat, con = u[:, 0] - 0.5, u[:, 1] * 2, u[:, 2] + 0.5
        out = []
        for x in images:
            x = x + bright
            m = x.mean(dim=1, keepdim=True)
            x = (x - m) * sat + m
            m = x.mean(dim=(1, 2, 3), keepdim=True)
            out.append((x - m) * con + m)
        images = out
    if "translation" in policy:
        sh, sw = int(h * translation_ratio + 0.5), int(w * translation_ratio + 0.5)
        ty = shard.randint(rng, 2 * sh + 1) - sh
        tx = shard.randint(rng, 2 * sw + 1) - sw
        # output pixel (y, x) reads input (y - ty, x - tx); outside the image -> fill
        ys = (torch.arange(h)[None, :] - ty[:, None])  # (B, H)
        xs = (torch.arange(w)[None, :] - tx[:, None])  # (B, W)
        inside = ((ys >= 0) & (ys < h))[:, :, None] & ((xs >= 0) & (xs < w))[:, None, :]
        yi, xi = ys.clamp(0, h - 1).to(dev), xs.clamp(0, w - 1).to(dev)
        inside = inside.to(dev)
        bidx = torch.arange(b, device=dev)[:, None, None]

        def move(t: torch.Tensor, fill: bool) -> torch.Tensor:
            if t.dim() == 3:
                return t[bidx, yi[:, :, None], xi[:, None, :]]
            g = t.permute(0, 2, 3, 1)[bidx, yi[:, :, None], xi[:, None, :]].permute(0, 3, 1, 2)
            return g * inside[:, None].to(g.dtype) if fill else g

        images = [move(x, True) for x in images]
        extra = [move(e, True) for e in extra]
        label = move(label, False)
        valid = valid & inside
    if "cutout" in policy:
        ch, cw = int(h * cutout_ratio + 0.5), int(w * cutout_ratio + 0.5)
        cy = shard.randint(rng, h + (1 - ch % 2))
        cx = shard.randint(rng, w + (1 - cw % 2))
        y0, x0 = cy - ch // 2, cx - cw // 2
        yy = torch.arange(h)[None, :]
        xx = torch.arange(w)[None, :]
        in_y = (yy >= y0[:, None]) & (yy < (y0 + ch)[:, None])
        in_x = (xx >= x0[:, None]) & (xx < (x0 + cw)[:, None])
        cut = (in_y[:, :, None] & in_x[:, None, :]).to(dev)
        keep = (~cut)[:, None]
        images = [x * keep.to(x.dtype) for x in images]
        extra = [e * keep.to(e.dtype) for e in extra]
        valid = valid & ~cut
    return images, label, valid, extra
