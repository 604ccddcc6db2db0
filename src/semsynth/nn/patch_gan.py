"""The multi-scale PatchGAN discriminator of pix2pixHD and SPADE.

Sources: Wang et al., pix2pixHD (CVPR 2018, Sec. 3.2); Park et al., SPADE (CVPR 2019,
Sec. 4 and appendix A); facts from NVlabs/SPADE ``models/networks/discriminator.py``
(``MultiscaleDiscriminator``, ``NLayerDiscriminator``) and ``normalization.py``
(``get_nonspade_norm_layer``):

* ``num_D`` identical PatchGANs; scale ``s`` sees the input average-pooled ``s`` times
  (3×3 window, stride 2, padding 1, padding not counted).
* One PatchGAN (``n_layers_D`` = 4, ``ndf`` = 64): 4×4 convs with padding 2:
  ``in → ndf`` stride 2, LeakyReLU(0.2); then ``n_layers_D − 1`` normalised layers doubling
  the width (capped at 512), stride 2 except the last (stride 1), each
  norm(conv) → LeakyReLU(0.2); then a 4×4 conv (stride 1, padding 2) to one channel: the
  patch scores. The first and the score conv carry a bias and no norm.
* ``norm`` ``spectralinstance`` (SPADE's ``norm_D``): spectral norm on the conv, then
  ``InstanceNorm2d`` without affine parameters; the conv's bias is removed (it would be
  cancelled by the normalisation) — which is why the official D has no bias in layers 2–4.
* The input is the one-hot label map concatenated with the image (``semantic_nc + 3``
  channels; label map first).
* Every layer's output is returned, for feature matching (``--no_ganFeat_loss`` off).

Parameter count (semantic_nc 36, Cityscapes): 5,601,410, as the official code.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from semsynth.nn.norm import CONV_NORMS, normed_conv
from semsynth.types import ConfigError

__all__ = ["PatchGANConfig", "NLayerDiscriminator", "MultiscaleDiscriminator"]


@dataclass(frozen=True)
class PatchGANConfig:
    """Multi-scale PatchGAN settings (SPADE defaults).

    Attributes:
        ndf: width of the first layer (64).
        num_D: number of scales (2).
        n_layers_D: strided/normalised layers per PatchGAN (4).
        norm: one of :data:`semsynth.nn.norm.CONV_NORMS` (SPADE: ``spectralinstance``).
    """

    ndf: int = 64
    num_D: int = 2
    n_layers_D: int = 4
    norm: str = "spectralinstance"


class NLayerDiscriminator(nn.Module):
    """One PatchGAN.

    Args:
        cfg: widths/depth/norm.
        input_nc: input channels (``semantic_nc + 3``).

    Shapes: ``(N, input_nc, H, W)`` → list of ``n_layers_D + 1`` maps; the last is the
    ``(N, 1, h, w)`` score map (for 256×256 input and 4 layers: 35×35).

    Raises:
        ConfigError: an unknown ``norm`` or a non-positive width/depth.
    """

    def __init__(self, cfg: PatchGANConfig, input_nc: int) -> None:
        super().__init__()
        if cfg.norm not in CONV_NORMS:
            raise ConfigError(f"discriminator norm {cfg.norm!r} is not one of {list(CONV_NORMS)}")
        if cfg.ndf < 1 or cfg.n_layers_D < 1 or cfg.num_D < 1:
            raise ConfigError(f"PatchGAN needs ndf, n_layers_D, num_D >= 1, got {cfg}")
        kw, pad = 4, int(math.ceil((4 - 1.0) / 2))
        nf = cfg.ndf
        layers = [nn.Sequential(nn.Conv2d(input_nc, nf, kw, 2, pad), nn.LeakyReLU(0.2))]
        for n in range(1, cfg.n_layers_D):
            prev, nf = nf, min(nf * 2, 512)
            stride = 1 if n == cfg.n_layers_D - 1 else 2
            layers.append(nn.Sequential(normed_conv(prev, nf, kw, stride, pad, cfg.norm), nn.LeakyReLU(0.2)))
        layers.append(nn.Sequential(nn.Conv2d(nf, 1, kw, 1, pad)))
        self.layers = nn.ModuleList(layers)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Intermediate outputs of every layer; the last is the score map."""
        out = []
        for layer in self.layers:
            x = layer(x)
            out.append(x)
        return out


class MultiscaleDiscriminator(nn.Module):
    """``num_D`` PatchGANs on successively 2× average-pooled inputs.

    Args:
        cfg: :class:`PatchGANConfig`.
        input_nc: input channels (``semantic_nc + 3``: one-hot label map, then RGB).

    Shapes: ``(N, input_nc, H, W)`` → a list (scale 0 = full resolution) of lists of
    feature maps (:class:`NLayerDiscriminator`).
    """

    def __init__(self, cfg: PatchGANConfig, input_nc: int) -> None:
        super().__init__()
        self.input_nc = input_nc
        self.scales = nn.ModuleList(NLayerDiscriminator(cfg, input_nc) for _ in range(cfg.num_D))

    def forward(self, x: torch.Tensor) -> list[list[torch.Tensor]]:
        """Multi-scale outputs of ``x`` (``(N, input_nc, H, W)`` float)."""
        if x.dim() != 4 or x.shape[1] != self.input_nc:
            raise ValueError(f"discriminator expects (N, {self.input_nc}, H, W), got {tuple(x.shape)}")
        outs = []
        for i, d in enumerate(self.scales):
            if i > 0:
                x = F.avg_pool2d(x, 3, 2, 1, count_include_pad=False)
            outs.append(d(x))
        return outs
