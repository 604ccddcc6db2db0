"""Spectral normalisation (Miyato et al., ICLR 2018) whose power iteration stays fp32.

PyTorch's ``torch.nn.utils.parametrizations.spectral_norm`` computes ``W / σ(W)`` with one
power-iteration step per training-mode forward (``u ← normalize(W v)``, ``v ← normalize(Wᵀ
u)``, ``σ = uᵀ W v``). Under ``torch.autocast`` (``train.precision: bf16``) its ``mv`` calls
would run in bf16 (8 significant bits), so σ, and every normalised weight with it, would
carry bf16 rounding, and the persistent ``u``/``v`` estimates would drift. Here the
parametrisation runs with autocast off: ``u``, ``v`` and σ in fp32 as without autocast; the
convolution that uses the normalised weight is still autocast (bf16 matmul).

The parameters and buffers are PyTorch's own (``parametrizations.weight.original``,
``…_u``, ``…_v``): state dicts and checkpoints are unchanged.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from torch.nn.utils.parametrizations import _SpectralNorm
from torch.nn.utils.parametrizations import spectral_norm as _torch_spectral_norm

__all__ = ["spectral_norm", "maybe_spectral_norm"]


class _FP32SpectralNorm(_SpectralNorm):
    """PyTorch's spectral-norm parametrisation, evaluated with autocast disabled."""

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        dev = weight.device.type  # "meta" (parameter counts) has no autocast
        if not (torch.amp.is_autocast_available(dev) and torch.is_autocast_enabled(dev)):
            return super().forward(weight)  # no autocast on: nothing to turn off
        with torch.autocast(dev, enabled=False):
            return super().forward(weight.float()).to(weight.dtype)


def spectral_norm(module: nn.Module) -> nn.Module:
    """Spectral normalisation of ``module.weight`` (one power step per training forward, as
    PyTorch's), kept fp32 under autocast.

    Args:
        module: a module with a ``weight`` parameter (``nn.Conv2d``, ``nn.Linear``, ...).

    Returns:
        ``module`` itself, parametrised.

    Raises:
        ValueError: ``module`` has no ``weight`` (PyTorch's message).
    """
    _torch_spectral_norm(module)
    for p in module.parametrizations.weight:
        if type(p) is _SpectralNorm:
            p.__class__ = _FP32SpectralNorm
    return module


def maybe_spectral_norm(module: nn.Module, enabled: bool) -> nn.Module:
    """:func:`spectral_norm` of ``module`` if ``enabled``, else ``module`` unchanged."""
    return spectral_norm(module) if enabled else module
