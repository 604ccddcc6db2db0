"""Noise is an input: seeded per sample, owned by the caller.

The OASIS generator takes 3D noise: a ``z_dim`` vector per pixel (OASIS Sec. 3.3). Global
noise is one vector per image, broadcast over all pixels; spatial noise varies per pixel,
which is what local re-sampling uses: the noise of one base seed everywhere except in a
region (a class, or a user mask), which gets the noise of another seed.

Per-sample seeding: sample ``i`` drawn with seed ``s`` uses its own ``torch.Generator``
seeded with ``s``, on the CPU, so the same seed gives the same noise whatever the batch size
and device. With the generator in eval mode it gives the same image whatever the batch size
(tested on the CPU); across devices the images agree up to floating-point rounding only.
"""

from __future__ import annotations

from typing import Sequence

import torch


def noise_from_seeds(seeds: Sequence[int], z_dim: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """Global noise vectors, one per seed.

    Args:
        seeds: non-negative integer seeds, one per sample.
        z_dim: noise channels.
        device: where the result lives (drawn on the CPU, then moved).

    Returns:
        ``(len(seeds), z_dim)`` float32, standard normal.

    Raises:
        ValueError: a negative seed.
    """
    out = torch.empty(len(seeds), z_dim)
    for i, s in enumerate(seeds):
        if int(s) < 0:
            raise ValueError(f"seed must be >= 0, got {s}")
        gen = torch.Generator().manual_seed(int(s))
        out[i] = torch.randn(z_dim, generator=gen)
    return out.to(device)


def resolve_noise(z: torch.Tensor | None, seeds: Sequence[int] | None, n: int, z_dim: int,
                  device: torch.device | str) -> torch.Tensor:
    """The global noise of a generator call: ``z`` if given, else one vector per seed
    (:func:`noise_from_seeds`), else drawn from torch's global RNG (training).

    Args:
        z: given noise (returned unchanged, shape checked by the caller), or ``None``.
        seeds: one seed per sample, or ``None``.
        n: batch size; z_dim: noise channels; device: where new noise is put.

    Returns:
        ``z``, or ``(n, z_dim)`` float32 standard normal.

    Raises:
        ValueError: ``len(seeds) != n``.
    """
    if z is not None:
        return z
    if seeds is not None:
        if len(seeds) != n:
            raise ValueError(f"{len(seeds)} seeds for a batch of {n}")
        return noise_from_seeds(seeds, z_dim, device)
    return torch.randn(n, z_dim, device=device)


def expand_noise(z: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Broadcast noise to a spatial map.

    Args:
        z: ``(N, z_dim)`` (global) or ``(N, z_dim, H, W)`` (spatial, returned as is if the
            size matches).

    Returns:
        ``(N, z_dim, height, width)``.

    Raises:
        ValueError: another rank, or a spatial size different from ``(height, width)``.
    """
    if z.dim() == 2:
        return z[:, :, None, None].expand(-1, -1, height, width)
    if z.dim() == 4:
        if tuple(z.shape[-2:]) != (height, width):
            raise ValueError(f"spatial noise is {tuple(z.shape[-2:])}, label map is {(height, width)}")
        return z
    raise ValueError(f"noise must be (N, z_dim) or (N, z_dim, H, W), got {tuple(z.shape)}")


def local_noise(base: torch.Tensor, region: torch.Tensor, new: torch.Tensor) -> torch.Tensor:
    """Noise equal to ``base`` everywhere except in ``region``, where it is ``new``.

    This is OASIS local re-sampling (paper Sec. 4, Fig. 6): re-roll one class or area while
    the rest of the image keeps its noise.

    Args:
        base: ``(N, z_dim)`` or ``(N, z_dim, H, W)`` noise outside the region.
        region: ``(N, H, W)`` bool mask (True = re-sample).
        new: ``(N, z_dim)`` or ``(N, z_dim, H, W)`` noise inside the region.

    Returns:
        ``(N, z_dim, H, W)`` float32.

    Raises:
        ValueError: mismatched shapes.
    """
    if region.dim() != 3 or region.dtype != torch.bool:
        raise ValueError(f"region must be a (N,H,W) bool mask, got {tuple(region.shape)} {region.dtype}")
    n, h, w = region.shape
    b = expand_noise(base, h, w)
    c = expand_noise(new, h, w)
    if b.shape[0] != n or c.shape[0] != n:
        raise ValueError(f"batch sizes differ: base {b.shape[0]}, new {c.shape[0]}, region {n}")
    return torch.where(region[:, None], c, b)


def class_region(label: torch.Tensor, class_id: int) -> torch.Tensor:
    """``(N, H, W)`` bool mask of the pixels of ``label`` equal to ``class_id``."""
    return label == int(class_id)
