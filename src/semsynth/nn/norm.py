"""Convolutions with SPADE's "non-SPADE" normalisation options (spectral and/or instance).

Facts from NVlabs/SPADE ``models/networks/normalization.py`` (``get_nonspade_norm_layer``):
a norm name ``spectral<sub>`` wraps the conv in spectral normalisation (Miyato et al., ICLR
2018); ``<sub>`` = ``instance`` then appends ``InstanceNorm2d`` without affine parameters and
removes the conv's bias (a constant shift that the normalisation cancels). Used by the
multi-scale PatchGAN discriminator (``norm_D``) and SPADE's image encoder (``norm_E``), both
``spectralinstance`` by default.
"""

from __future__ import annotations

import torch.nn as nn

from semsynth.nn.spectral import spectral_norm
from semsynth.types import ConfigError

__all__ = ["CONV_NORMS", "normed_conv"]

#: Accepted norm names.
CONV_NORMS = ("spectralinstance", "spectral", "instance", "none")


def normed_conv(in_nc: int, out_nc: int, kernel_size: int, stride: int, padding: int, norm: str,
                source: str = "norm") -> nn.Module:
    """``conv`` → optional spectral norm → optional parameter-free instance norm.

    Args:
        in_nc, out_nc, kernel_size, stride, padding: of the ``nn.Conv2d``.
        norm: one of :data:`CONV_NORMS`.
        source: config key named in the error.

    Returns:
        An ``nn.Sequential``: ``(N, in_nc, H, W)`` → ``(N, out_nc, H', W')``; the conv has a
        bias only when no instance norm follows.

    Raises:
        ConfigError: an unknown norm name.
    """
    if norm not in CONV_NORMS:
        raise ConfigError(f"{source}: {norm!r} is not one of {list(CONV_NORMS)}")
    instance = norm.endswith("instance")
    conv: nn.Module = nn.Conv2d(in_nc, out_nc, kernel_size, stride, padding, bias=not instance)
    if norm.startswith("spectral"):
        conv = spectral_norm(conv)
    mods = [conv] + ([nn.InstanceNorm2d(out_nc, affine=False)] if instance else [])
    return nn.Sequential(*mods)
