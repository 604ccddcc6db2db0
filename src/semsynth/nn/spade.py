"""SPADE normalisation and the SPADE residual block (Park et al., CVPR 2019, Sec. 3).

Used by the OASIS generator (Schönfeld et al., ICLR 2021, Sec. 3.2 and the official
code's ``ResnetBlock_with_SPADE``): parameter-free BatchNorm, then a per-pixel affine
modulation ``x̂ · (1 + γ(m)) + β(m)`` whose γ, β are predicted from the conditioning map
``m`` (the one-hot label map, concatenated with 3D noise in OASIS) by a shared 3×3 conv with
``hidden`` channels and ReLU, then two 3×3 convs.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from semsynth.nn.resize import resize_nearest
from semsynth.nn.spectral import maybe_spectral_norm


class SPADE(nn.Module):
    """Spatially-adaptive denormalisation.

    Args:
        norm_nc: channels of the normalised activation ``x``.
        cond_nc: channels of the conditioning map (``semantic_nc`` (+ ``z_dim`` in OASIS)).
        hidden: channels of the shared conv (SPADE/OASIS: 128).
        kernel_size: of the three convs (SPADE/OASIS: 3).

    Shapes:
        ``x``: ``(N, norm_nc, h, w)``; ``cond``: ``(N, cond_nc, H, W)`` at any resolution,
        resized to ``(h, w)`` with nearest interpolation; output ``(N, norm_nc, h, w)``.
    """

    def __init__(self, norm_nc: int, cond_nc: int, hidden: int = 128, kernel_size: int = 3) -> None:
        super().__init__()
        pad = kernel_size // 2
        self.norm = nn.BatchNorm2d(norm_nc, affine=False)
        self.shared = nn.Sequential(nn.Conv2d(cond_nc, hidden, kernel_size, padding=pad), nn.ReLU())
        self.gamma = nn.Conv2d(hidden, norm_nc, kernel_size, padding=pad)
        self.beta = nn.Conv2d(hidden, norm_nc, kernel_size, padding=pad)

    def forward(self, x: torch.Tensor, cond) -> torch.Tensor:
        """``cond``: a tensor, or a :class:`semsynth.nn.spade_fast.FactoredCond` (OASIS
        inference: the noise channels factored out; the same result up to float rounding)."""
        normalized = self.norm(x)
        if isinstance(cond, torch.Tensor):
            if cond.shape[-2:] != x.shape[-2:]:
                cond = resize_nearest(cond, x.shape[-2:])
            act = self.shared(cond)
        else:
            from semsynth.nn.spade_fast import shared_conv

            act = F.relu(shared_conv(self.shared[0], cond.resized(tuple(x.shape[-2:]))))
        return normalized * (1 + self.gamma(act)) + self.beta(act)


class SPADEResBlock(nn.Module):
    """Residual block of two SPADE → LeakyReLU(0.2) → 3×3 conv units.

    The middle width is ``min(fin, fout)``; when ``fin != fout`` the shortcut is a learned
    SPADE → 1×1 conv (no bias). The 3×3 and 1×1 convs carry spectral norm (official OASIS
    ``ResnetBlock_with_SPADE``).

    Shapes: ``x`` ``(N, fin, h, w)``, ``cond`` ``(N, cond_nc, H, W)`` → ``(N, fout, h, w)``.
    """

    def __init__(self, fin: int, fout: int, cond_nc: int, hidden: int = 128,
                 kernel_size: int = 3, use_spectral_norm: bool = True) -> None:
        super().__init__()
        fmid = min(fin, fout)
        self.learned_shortcut = fin != fout
        sn = use_spectral_norm
        self.conv_0 = maybe_spectral_norm(nn.Conv2d(fin, fmid, 3, padding=1), sn)
        self.conv_1 = maybe_spectral_norm(nn.Conv2d(fmid, fout, 3, padding=1), sn)
        self.norm_0 = SPADE(fin, cond_nc, hidden, kernel_size)
        self.norm_1 = SPADE(fmid, cond_nc, hidden, kernel_size)
        if self.learned_shortcut:
            self.conv_s = maybe_spectral_norm(nn.Conv2d(fin, fout, 1, bias=False), sn)
            self.norm_s = SPADE(fin, cond_nc, hidden, kernel_size)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        x_s = self.conv_s(self.norm_s(x, cond)) if self.learned_shortcut else x
        dx = self.conv_0(F.leaky_relu(self.norm_0(x, cond), 0.2))
        dx = self.conv_1(F.leaky_relu(self.norm_1(dx, cond), 0.2))
        return x_s + dx
