"""Exact, faster SPADE conditioning for OASIS inference: the noise channels factored out.

OASIS's SPADE layers see ``m = [noise, one-hot label]`` (64 + N channels in the paper) through
a 3×3 conv. At sampling time the noise map is piecewise constant: one vector per image
(global noise), or the base and the new seed's vectors of a local re-sampling. For a noise map
``Σ_k M_k ⊗ z_k`` (``M_k`` indicator maps, ``z_k`` vectors) the conv's noise part is

    conv(W_z, Σ_k M_k ⊗ z_k) = Σ_k conv(W_z · z_k, M_k)

— a conv of ``K`` one-channel maps with per-image kernels ``W_z · z_k`` (``hidden × 3 × 3``)
instead of a conv of ``z_dim`` channels: with ``z_dim = 64`` the shared conv of every SPADE
layer reads 12 + K channels instead of 76 on CamVid. Zero padding at the border is the same
in both forms, so the result is the dense one up to float summation order.

:class:`FactoredCond` holds the factored map; :func:`factor_noise` builds it from a noise
tensor (``None`` if the noise has more than ``max_parts`` distinct vectors in an image: the
caller then uses the dense map); :func:`shared_conv` is the factored convolution. Not in the
official code (semsynth's inference path; docs/results.md has the timings).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from semsynth.nn.resize import resize_nearest

__all__ = ["FactoredCond", "factor_noise", "shared_conv"]


@dataclass(frozen=True)
class FactoredCond:
    """The conditioning map ``cat([Σ_k maps[:, k] ⊗ vecs[:, k], label], 1)`` (noise first, as
    the OASIS generator concatenates it), kept factored.

    Attributes:
        vecs: ``(N, K, z_dim)`` noise vectors.
        maps: ``(N, K, H, W)`` float indicator maps (each pixel in exactly one part).
        label: ``(N, C, H, W)`` float one-hot label map.
    """

    vecs: torch.Tensor
    maps: torch.Tensor
    label: torch.Tensor

    @property
    def shape(self) -> torch.Size:
        n, _, h, w = self.label.shape
        return torch.Size((n, self.vecs.shape[2] + self.label.shape[1], h, w))

    def resized(self, size: tuple[int, int]) -> "FactoredCond":
        """Nearest resize of the maps and the label map (as ``F.interpolate`` of the dense map)."""
        if tuple(self.label.shape[-2:]) == tuple(size):
            return self
        return FactoredCond(self.vecs, resize_nearest(self.maps, size),
                            resize_nearest(self.label, size))

    def dense(self) -> torch.Tensor:
        """The ``(N, z_dim + C, H, W)`` map."""
        noise = torch.einsum("nkz,nkhw->nzhw", self.vecs, self.maps)
        return torch.cat([noise, self.label], 1)


def factor_noise(z: torch.Tensor, label: torch.Tensor, max_parts: int = 4) -> FactoredCond | None:
    """Factor a noise input for the OASIS generator.

    Args:
        z: ``(N, z_dim)`` global noise or ``(N, z_dim, H, W)`` spatial noise.
        label: ``(N, C, H, W)`` one-hot label map.
        max_parts: most distinct noise vectors per image to factor.

    Returns:
        A :class:`FactoredCond`, or ``None`` when an image's noise map has more than
        ``max_parts`` distinct vectors (arbitrary per-pixel noise: use the dense map).
    """
    n, _, h, w = label.shape
    if z.dim() == 2:
        return FactoredCond(z[:, None].to(label.dtype), label.new_ones(n, 1, h, w), label)
    flat = z.permute(0, 2, 3, 1).reshape(n, h * w, -1)
    parts_v, parts_m = [], []
    for i in range(n):
        vecs, inverse = torch.unique(flat[i], dim=0, return_inverse=True)
        if vecs.shape[0] > max_parts:
            return None
        parts_v.append(vecs)
        parts_m.append(F.one_hot(inverse, vecs.shape[0]).T.reshape(-1, h, w))
    k = max(v.shape[0] for v in parts_v)
    vecs = z.new_zeros(n, k, z.shape[1])
    maps = label.new_zeros(n, k, h, w)
    for i, (v, m) in enumerate(zip(parts_v, parts_m)):
        vecs[i, : v.shape[0]] = v
        maps[i, : m.shape[0]] = m.to(label.dtype)
    return FactoredCond(vecs.to(label.dtype), maps, label)


def shared_conv(conv: torch.nn.Conv2d, cond: FactoredCond) -> torch.Tensor:
    """``conv(cond.dense())`` computed from the factored map.

    Args:
        conv: a conv over ``z_dim + C`` input channels (noise channels first), any kernel,
            stride 1.
        cond: the factored map at the output's size.

    Returns:
        ``(N, conv.out_channels, H, W)``.
    """
    z_dim = cond.vecs.shape[2]
    w_z, w_lab = conv.weight[:, :z_dim], conv.weight[:, z_dim:]
    n, k = cond.vecs.shape[:2]
    kernels = torch.einsum("ozab,nkz->nokab", w_z, cond.vecs)          # (N, out, K, kh, kw)
    if k == 1 and conv.kernel_size == (3, 3) and conv.padding == (1, 1) and conv.stride == (1, 1):
        # one noise vector over each image: a constant Σ_t k_t inside, minus the taps that
        # fall into the zero padding on the border rows and columns
        kern = kernels[:, :, 0]                                          # (N, out, 3, 3)
        out = F.conv2d(cond.label, w_lab, conv.bias, 1, 1) + kern.sum((2, 3))[:, :, None, None]
        out[:, :, 0, :] -= kern[:, :, 0, :].sum(2)[:, :, None]
        out[:, :, -1, :] -= kern[:, :, 2, :].sum(2)[:, :, None]
        out[:, :, :, 0] -= kern[:, :, :, 0].sum(2)[:, :, None]
        out[:, :, :, -1] -= kern[:, :, :, 2].sum(2)[:, :, None]
        for (i, a), (j, b) in ((r, c) for r in ((0, 0), (-1, 2)) for c in ((0, 0), (-1, 2))):
            out[:, :, i, j] += kern[:, :, a, b]                          # corners were subtracted twice
        return out
    out = F.conv2d(cond.label, w_lab, conv.bias, conv.stride, conv.padding)
    noise = F.conv2d(cond.maps.reshape(1, n * k, *cond.maps.shape[-2:]),
                     kernels.reshape(n * conv.out_channels, k, *w_z.shape[-2:]), None, conv.stride,
                     conv.padding, groups=n)
    return out + noise.view(n, conv.out_channels, *noise.shape[-2:])
