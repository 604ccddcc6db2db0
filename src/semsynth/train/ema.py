"""EMA of the generator weights and the BatchNorm refresh of the EMA generator.

The decay follows :class:`semsynth.config.EMAConfig`: a fixed per-step decay (paper
presets: 0.9999, Cityscapes 0.999), or a half-life in images with ramp-up (NVlabs/edm,
``training_loop.py``), which suits short CPU runs.
"""

from __future__ import annotations

import copy
import itertools
from typing import Iterable

import torch
import torch.nn as nn

from semsynth.config import EMAConfig


def ema_beta(cfg: EMAConfig, batch_size: int, images_seen: int) -> float:
    """Decay of one EMA update.

    Args:
        cfg: EMA settings.
        batch_size: images in the step just taken.
        images_seen: training images seen so far, this step included.

    Returns:
        ``cfg.decay`` if set, else ``0.5 ** (batch_size / halflife)`` with
        ``halflife = min(halflife_kimg·1000, rampup·images_seen)`` images (edm).
    """
    if cfg.decay is not None:
        return float(cfg.decay)
    halflife = cfg.halflife_kimg * 1000.0
    if cfg.rampup is not None:
        halflife = min(halflife, images_seen * cfg.rampup)
    return 0.5 ** (batch_size / max(halflife, 1e-8))


def make_ema(generator: nn.Module) -> nn.Module:
    """A frozen copy of ``generator`` (no gradients), to be updated by :func:`update_ema`."""
    ema = copy.deepcopy(generator)
    ema.requires_grad_(False)
    return ema


@torch.no_grad()
def update_ema(ema: nn.Module, generator: nn.Module, beta: float) -> None:
    """``ema ← beta·ema + (1 − beta)·generator`` for parameters; buffers are copied.

    (BatchNorm statistics of the EMA generator are recomputed by :func:`refresh_batchnorm`
    before use, as the official OASIS ``update_EMA`` does.)
    """
    params = list(ema.parameters())
    if params:  # one fused call over every tensor (per-tensor lerp_: ~200 kernel launches)
        torch._foreach_lerp_(params, [p.detach() for p in generator.parameters()], 1.0 - beta)
    buffers = list(ema.buffers())
    if buffers:
        torch._foreach_copy_(buffers, list(generator.buffers()))


@torch.no_grad()
def refresh_batchnorm(generator: nn.Module, batches: Iterable[tuple[torch.Tensor, list[int]]]) -> int:
    """Recompute the BatchNorm running statistics of ``generator`` from scratch.

    The statistics are reset and re-estimated as an exact average over the given batches
    (``momentum=None``), in train mode and without gradients; the module is left in eval
    mode. Official OASIS runs 50 forward passes of its EMA generator on training batches
    before every FID evaluation, image or checkpoint.

    Args:
        generator: called as ``generator(label_onehot, seeds=seeds)``.
        batches: ``(label_onehot (B, C, H, W), seeds [B ints])`` pairs.

    Returns:
        Number of batches used (0, statistics untouched, if the generator has no BatchNorm
        or no batches are given).
    """
    bns = [m for m in generator.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    it = iter(batches)
    first = next(it, None) if bns else None
    if first is None:  # nothing to refresh, or no batches: keep the statistics as they are
        generator.eval()
        return 0
    saved = [(m, m.momentum) for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    generator.train()
    n = 0
    try:
        for onehot, seeds in itertools.chain([first], it):
            generator(onehot, seeds=seeds)
            n += 1
    finally:
        for m, mom in saved:
            m.momentum = mom
        generator.eval()
    return n
