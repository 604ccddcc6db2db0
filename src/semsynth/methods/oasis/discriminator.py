"""The OASIS discriminator: a U-Net segmentation network with N+1 outputs per pixel.

Schönfeld et al., ICLR 2021, Sec. 3.1 and the official ``OASIS_Discriminator``: an encoder
of residual blocks (3→128→128→256→256→512→512 for 256-px images, average pooling ×½ in each),
a decoder of residual blocks with nearest ×2 upsampling that concatenates the encoder
feature of the same resolution (skip connection), spectral norm on every conv of the blocks,
and a last 1×1 conv to ``semantic_nc + 1`` logits at full resolution: channel 0 is "fake",
channel ``1 + c`` is label id ``c``. ADE20K preset: 22.3M parameters.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from semsynth.nn.resize import upsample2x
from semsynth.nn.spectral import maybe_spectral_norm
from semsynth.types import ConfigError


@dataclass(frozen=True)
class OASISDiscriminatorConfig:
    """Encoder widths of the U-Net; its depth is ``len(channels)`` (one ×½ per block).

    Attributes:
        channels: encoder output widths (paper: 128, 128, 256, 256, 512, 512 for 256 px).
        last_channels: width of the last decoder block before the 1×1 classifier (64).
        spectral_norm: spectral norm on the blocks' convs (official: yes).
    """

    channels: Tuple[int, ...] = (128, 128, 256, 256, 512, 512)
    last_channels: int = 64
    spectral_norm: bool = True


class _ResBlockD(nn.Module):
    """Residual block of the OASIS discriminator (official ``residual_block_D``).

    ``mode`` -1: down (average pool after the convs; the shortcut pools after the 1×1 conv,
    or before it for the first block), +1: up (nearest ×2 before the first conv and on the
    shortcut). The first block has no activation before its first conv.
    """

    def __init__(self, fin: int, fout: int, mode: int, first: bool, sn: bool) -> None:
        super().__init__()
        self.mode, self.first = mode, first
        self.conv1 = maybe_spectral_norm(nn.Conv2d(fin, fout, 3, padding=1), sn)
        self.conv2 = maybe_spectral_norm(nn.Conv2d(fout, fout, 3, padding=1), sn)
        self.conv_s = maybe_spectral_norm(nn.Conv2d(fin, fout, 1), sn) if fin != fout else None

    def _shortcut(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode > 0:
            x = upsample2x(x)
        if self.first and self.mode < 0:
            x = F.avg_pool2d(x, 2)
        if self.conv_s is not None:
            x = self.conv_s(x)
        if not self.first and self.mode < 0:
            x = F.avg_pool2d(x, 2)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dx = x if self.first else F.leaky_relu(x, 0.2)
        if self.mode > 0:
            dx = upsample2x(dx)
        dx = self.conv1(dx)
        dx = self.conv2(F.leaky_relu(dx, 0.2))
        if self.mode < 0:
            dx = F.avg_pool2d(dx, 2)
        return self._shortcut(x) + dx


class OASISDiscriminator(nn.Module):
    """D(image) → per-pixel N+1 logits.

    Args:
        cfg: widths.
        semantic_nc: label ids (don't-care included); the output has ``semantic_nc + 1``
            channels.

    Shapes: ``(N, 3, H, W)`` → ``(N, semantic_nc + 1, H, W)``; ``H, W`` divisible by
    ``2 ** len(cfg.channels)``.

    Raises:
        ConfigError: fewer than 2 encoder blocks.
    """

    def __init__(self, cfg: OASISDiscriminatorConfig, semantic_nc: int) -> None:
        super().__init__()
        ch = list(cfg.channels)
        depth = len(ch)
        if depth < 2:
            raise ConfigError(f"model.discriminator.channels: needs at least 2 encoder blocks, got {ch}")
        sn = cfg.spectral_norm
        self.factor = 2 ** depth
        enc_in = [3] + ch[:-1]
        self.down = nn.ModuleList(_ResBlockD(enc_in[i], ch[i], -1, i == 0, sn) for i in range(depth))
        up = [_ResBlockD(ch[-1], ch[-2], +1, False, sn)]
        for i in range(1, depth - 1):
            up.append(_ResBlockD(2 * ch[-1 - i], ch[-2 - i], +1, False, sn))
        up.append(_ResBlockD(2 * ch[0], cfg.last_channels, +1, False, sn))
        self.up = nn.ModuleList(up)
        self.classifier = nn.Conv2d(cfg.last_channels, semantic_nc + 1, 1)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Per-pixel logits ``(N, semantic_nc + 1, H, W)`` of an image batch ``(N, 3, H, W)``."""
        h, w = image.shape[-2:]
        if h % self.factor or w % self.factor:
            raise ValueError(f"discriminator needs sizes divisible by {self.factor}, got {h}x{w}")
        feats = []
        x = image
        for block in self.down:
            x = block(x)
            feats.append(x)
        x = self.up[0](x)
        for i in range(1, len(self.up)):
            x = self.up[i](torch.cat([feats[-1 - i], x], dim=1))
        return self.classifier(x)
