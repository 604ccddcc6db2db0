"""The CRN generator (Chen & Koltun, "Photographic Image Synthesis with Cascaded Refinement
Networks", ICCV 2017, Sec. 3; official CQFIO/PhotographicImageSynthesis ``demo_256p.py``,
``recursive_generator``, lines 53–67).

A cascade of refinement modules from the coarsest resolution (4×8 for 256×512 Cityscapes)
doubling to the output size. Module ``i`` takes the label map downsampled to its size
(area averaging of the one-hot map, TF's ``resize_area``) after the previous module's
features upsampled bilinearly (``align_corners=True``, as TF's ``resize_bilinear`` there)
— features first, label second — then twice: 3×3 conv (no bias) → layer norm →
LeakyReLU(0.2). The last module ends in a 1×1 conv (with bias) to ``3·k`` channels: ``k``
images at once, each read as an image in [-1, 1] (the official code maps ``(x + 1) / 2 · 255``
and clips only when saving; there is no tanh).

Layer norm here is TF-slim's ``layer_norm`` (defaults ``begin_norm_axis=1``,
``begin_params_axis=-1``): statistics over all of (C, H, W) of each sample, a learned γ and β
per channel — which is exactly ``nn.GroupNorm(1, C)``.

Paper preset (Cityscapes 256×512, 20 label channels, ``k = 9``): channels 1024 for the
modules at 4×8 … 64×128 and 512 at 128×256 and 256×512 (official: ``dim = 512 if sp >= 128
else 1024``): 97,875,483 parameters, as counted from the official graph (``../shared/README.md``).

Higher resolutions add modules at the fine end (``configs/crn/cityscapes_{512p,1024p}.yaml``):
``demo_512p.py`` builds one more module at 512×1024, 128 wide, and ``demo_1024p.py`` another
at 1024×2048, 32 wide (``recursive_generator``: ``dim`` 128 at ``sp == 512``, 32 at
``sp == 1024``), each ending in one image (a 1×1 conv to 3 channels, ``k = 1``):
98,622,851 and 98,674,531 parameters. Each is warm-started from the one below
(``train.init_from``; :mod:`semsynth.model.warm_start`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from semsynth.methods.base import Generator
from semsynth.nn.sizes import check_label_input, size_chain
from semsynth.types import ConfigError

__all__ = ["CRNGeneratorConfig", "CRNGenerator", "RefinementModule"]


@dataclass(frozen=True)
class CRNGeneratorConfig:
    """CRN widths and outputs.

    Attributes:
        channels: width of each refinement module, coarsest first; ``len(channels)``
            modules, each doubling the resolution (paper 256×512: 1024 × 5, 512 × 2;
            512×1024: the same + 128; 1024×2048: the same + 128, 32).
        num_outputs: ``k``, images produced at once per label map (paper: 9; 1 = the
            plain regression model without the diversity loss).
        leaky_slope: LeakyReLU slope (official ``lrelu``: 0.2).
        norm_eps: layer-norm epsilon (TF-slim's ``layer_norm``: 1e-12).
    """

    channels: Tuple[int, ...] = (1024, 1024, 1024, 1024, 1024, 512, 512)
    num_outputs: int = 9
    leaky_slope: float = 0.2
    norm_eps: float = 1e-12


class RefinementModule(nn.Module):
    """(3×3 conv without bias → layer norm → LeakyReLU) × 2.

    Shapes: ``(N, in_nc, h, w)`` → ``(N, out_nc, h, w)``.
    """

    def __init__(self, in_nc: int, out_nc: int, slope: float, eps: float) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_nc, out_nc, 3, padding=1, bias=False)
        self.norm1 = nn.GroupNorm(1, out_nc, eps=eps)
        self.conv2 = nn.Conv2d(out_nc, out_nc, 3, padding=1, bias=False)
        self.norm2 = nn.GroupNorm(1, out_nc, eps=eps)
        self.slope = slope

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.leaky_relu(self.norm1(self.conv1(x)), self.slope)
        return F.leaky_relu(self.norm2(self.conv2(x)), self.slope)


class CRNGenerator(Generator):
    """G(label map) → ``k`` images.

    Args:
        cfg: :class:`CRNGeneratorConfig`.
        semantic_nc: one-hot channels of the label map.
        height, width: output size. The module sizes are :func:`semsynth.nn.sizes.size_chain`
            (exact halving when divisible: 256×512 with 7 modules starts at 4×8).

    Attributes:
        z_dim: 0, noise ``"none"`` — CRN takes no noise. Its diversity comes from its ``k``
            fixed outputs (no region can be re-sampled).
        num_outputs: ``k``. Called with ``seeds``, sample ``i`` is output ``seeds[i] mod k``.

    Raises:
        ConfigError: no modules, a non-positive width, or ``num_outputs < 1``.
    """


    def __init__(self, cfg: CRNGeneratorConfig, semantic_nc: int, height: int, width: int) -> None:
        super().__init__(cfg, semantic_nc, height, width)
        if not cfg.channels or min(cfg.channels) < 1:
            raise ConfigError(f"model.generator.channels: need at least one positive width, got {list(cfg.channels)}")
        if cfg.num_outputs < 1:
            raise ConfigError(f"model.generator.num_outputs: must be >= 1, got {cfg.num_outputs}")
        self.num_outputs = int(cfg.num_outputs)
        d = len(cfg.channels) - 1
        self.sizes = list(zip(size_chain(height, d), size_chain(width, d)))
        mods, prev = [], 0
        for ch in cfg.channels:
            mods.append(RefinementModule(semantic_nc + prev, ch, cfg.leaky_slope, cfg.norm_eps))
            prev = ch
        self.refine = nn.ModuleList(mods)
        self.to_rgb = nn.Conv2d(prev, 3 * self.num_outputs, 1)
        # TF-slim's defaults: Glorot-uniform kernels, zero biases, layer norm γ = 1, β = 0
        for mod in self.modules():
            if isinstance(mod, nn.Conv2d):
                nn.init.xavier_uniform_(mod.weight)
                if mod.bias is not None:
                    nn.init.zeros_(mod.bias)

    def forward_all(self, label_onehot: torch.Tensor) -> torch.Tensor:
        """All ``k`` outputs, unclipped (what the loss sees).

        Args:
            label_onehot: ``(N, semantic_nc, H, W)`` float at the configured size.

        Returns:
            ``(N, k, 3, H, W)`` float; values are images in [-1, 1] scale, not clipped.

        Raises:
            ValueError: wrong channels or size.
        """
        n, c, h, w = check_label_input(label_onehot, self.semantic_nc, self.height, self.width)
        x = None
        for size, module in zip(self.sizes, self.refine):
            lab = label_onehot if size == (h, w) else F.interpolate(label_onehot, size=size, mode="area")
            if x is not None:
                lab = torch.cat([F.interpolate(x, size=size, mode="bilinear", align_corners=True), lab], 1)
            x = module(lab)
        # official channel order: image i, colour c is channel k·c + i
        return self.to_rgb(x).view(n, 3, self.num_outputs, h, w).transpose(1, 2)

    def forward(self, label_onehot: torch.Tensor, z: torch.Tensor | None = None,
                seeds: Sequence[int] | None = None) -> torch.Tensor:
        """One image per label map: output ``seeds[i] mod k`` for sample ``i`` (output 0
        without seeds), clipped to [-1, 1].

        Args:
            label_onehot: ``(N, semantic_nc, H, W)``.
            z: must be ``None`` (CRN takes no noise).
            seeds: ``N`` non-negative ints, or ``None``.

        Returns:
            ``(N, 3, H, W)`` float in [-1, 1].

        Raises:
            ValueError: a ``z`` is given, ``len(seeds) != N`` or a negative seed.
        """
        if z is not None:
            raise ValueError("CRN takes no noise: pass seeds (seed i selects output i mod k) or nothing")
        n = label_onehot.shape[0]
        if seeds is None:
            idx = torch.zeros(n, dtype=torch.long)
        else:
            if len(seeds) != n:
                raise ValueError(f"{len(seeds)} seeds for a batch of {n}")
            if any(int(s) < 0 for s in seeds):
                raise ValueError(f"seeds must be >= 0, got {list(seeds)}")
            idx = torch.tensor([int(s) % self.num_outputs for s in seeds], dtype=torch.long)
        out = self.forward_all(label_onehot)
        return out[torch.arange(n), idx.to(out.device)].clamp(-1, 1)
