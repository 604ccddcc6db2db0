"""The OASIS generator (Schönfeld et al., ICLR 2021, Sec. 3.3; official ``OASIS_Generator``).

The one-hot label map is concatenated with 3D noise (``z_dim`` channels, the same vector at
every pixel for global noise, or a per-pixel map), resized (nearest) to the first block's
size and passed through a 3×3 conv; then SPADE residual blocks with nearest ×2 upsampling
between them, each modulated by the same label⊕noise map; then LeakyReLU(0.2) → 3×3 conv →
tanh. Paper preset (ADE20K, 256×256): channels 1024, 1024, 1024, 512, 256, 128, 64
(6 blocks), z_dim 64, SPADE hidden 128: 72.6M parameters without the noise input channels,
74.3M with.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from semsynth.methods.base import Generator
from semsynth.nn.resize import resize_nearest, upsample2x
from semsynth.nn.sizes import check_label_input
from semsynth.nn.spade import SPADEResBlock
from semsynth.nn.spade_fast import factor_noise, shared_conv
from semsynth.noise import expand_noise, resolve_noise
from semsynth.types import ConfigError


@dataclass(frozen=True)
class OASISGeneratorConfig:
    """OASIS generator widths and depth.

    Attributes:
        channels: input width of the first block, then the output width of each block;
            ``len(channels) - 1`` blocks. Paper: 1024, 1024, 1024, 512, 256, 128, 64
            (``16ch, 16ch, 16ch, 8ch, 4ch, 2ch, ch`` with ch = 64).
        z_dim: noise channels (paper 64; 0 disables noise).
        spade_hidden: hidden channels of SPADE's shared conv (128).
        spade_kernel: SPADE conv kernel size (3).
        spectral_norm: spectral norm on the residual blocks' convs (official: yes).
    """

    channels: Tuple[int, ...] = (1024, 1024, 1024, 512, 256, 128, 64)
    z_dim: int = 64
    spade_hidden: int = 128
    spade_kernel: int = 3
    spectral_norm: bool = True


class OASISGenerator(Generator):
    """G(label map, noise) → image.

    Args:
        cfg: widths and depth.
        semantic_nc: one-hot channels of the label map (don't-care included).
        height, width: output size; both must be divisible by ``2 ** (blocks - 1)``.

    Raises:
        ConfigError: fewer than 2 widths, or a size not divisible by the total upsampling
            factor.
    """

    def __init__(self, cfg: OASISGeneratorConfig, semantic_nc: int, height: int, width: int) -> None:
        super().__init__(cfg, semantic_nc, height, width)
        self.z_dim = cfg.z_dim
        self.noise = "spatial" if cfg.z_dim > 0 else "none"
        nblocks = len(cfg.channels) - 1
        if nblocks < 1:
            raise ConfigError(f"model.generator.channels: needs at least 2 entries, got {list(cfg.channels)}")
        factor = 2 ** (nblocks - 1)
        if height % factor or width % factor:
            raise ConfigError(
                f"model.generator: a generator with {nblocks} blocks needs height and width divisible by {factor}, "
                f"got {height}x{width}"
            )
        self.init_size = (height // factor, width // factor)
        cond_nc = semantic_nc + cfg.z_dim
        self.fc = nn.Conv2d(cond_nc, cfg.channels[0], 3, padding=1)
        self.body = nn.ModuleList(
            SPADEResBlock(cfg.channels[i], cfg.channels[i + 1], cond_nc, cfg.spade_hidden,
                          cfg.spade_kernel, cfg.spectral_norm)
            for i in range(nblocks)
        )
        self.conv_img = nn.Conv2d(cfg.channels[-1], 3, 3, padding=1)

    #: eval mode: factor piecewise-constant noise out of the SPADE convs (set False on an
    #: instance for the dense computation, e.g. ``benchmarks/sample.py --dense``).
    factored_inference = True

    def forward(self, label_onehot: torch.Tensor, z: torch.Tensor | None = None,
                seeds: Sequence[int] | None = None) -> torch.Tensor:
        """Generate images.

        Args:
            label_onehot: ``(N, semantic_nc, H, W)`` float one-hot label map (``H, W`` = the
                configured output size).
            z: ``(N, z_dim)`` global noise, ``(N, z_dim, H, W)`` spatial noise, or ``None``.
            seeds: with ``z=None``: one seed per sample (see :mod:`semsynth.noise`); with
                both ``None`` the noise is drawn from torch's global RNG (training).

        Returns:
            ``(N, 3, H, W)`` float in [-1, 1].

        In eval mode a noise map with at most 4 distinct vectors per image (global noise,
        local re-sampling) is factored out of every SPADE conv (:mod:`semsynth.nn.spade_fast`):
        the same images up to float rounding, faster.

        Raises:
            ValueError: wrong channel count or size, or noise of the wrong shape.
        """
        n, c, h, w = check_label_input(label_onehot, self.semantic_nc, self.height, self.width)
        cond = label_onehot
        if self.z_dim > 0:
            z = resolve_noise(z, seeds, n, self.z_dim, label_onehot.device)
            if z.shape[0] != n or z.shape[1] != self.z_dim:
                raise ValueError(f"noise {tuple(z.shape)} does not match batch {n} and z_dim {self.z_dim}")
            z = z.to(label_onehot.dtype)
            factored = None if self.training or not self.factored_inference else factor_noise(z if z.dim() == 2 else expand_noise(z, h, w),
                                                               label_onehot)
            if factored is not None:  # inference: the noise channels factored out (nn/spade_fast.py)
                cond = factored
                x = shared_conv(self.fc, factored.resized(self.init_size))
                return self._body(x, cond)
            cond = torch.cat([expand_noise(z, h, w), label_onehot], dim=1)
        x = self.fc(resize_nearest(cond, self.init_size))
        return self._body(x, cond)

    def _body(self, x: torch.Tensor, cond) -> torch.Tensor:
        for i, block in enumerate(self.body):
            x = block(x, cond)
            if i < len(self.body) - 1:
                x = upsample2x(x)
        return torch.tanh(self.conv_img(F.leaky_relu(x, 0.2)))
