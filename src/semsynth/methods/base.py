"""The contract between a method (OASIS, SPADE, ...) and the generic training loop.

A method owns its networks and its losses; the loop (``semsynth.train.loop``) owns the
optimizers, the EMA generator, checkpoints, logging, stopping and devices — as in
NVlabs/edm's ``training_loop.py``. Per training step the loop calls, for each phase in
``method.phases``, :meth:`Method.phase_losses` and back-propagates its ``"total"``.
"""

from __future__ import annotations

from typing import Iterable

import torch
import torch.nn as nn

from semsynth.batch_shard import BatchShard
from semsynth.types import DatasetInfo


def count_parameters(module: nn.Module | None) -> int:
    """Number of scalar parameters of ``module`` (0 for ``None``); spectral-norm vectors are
    buffers and not counted, as in the official repositories' counts."""
    return 0 if module is None else sum(p.numel() for p in module.parameters())


class Method(nn.Module):
    """Base class of the synthesis methods.

    Subclasses set ``config_class`` (their frozen model-config dataclass, the ``model:``
    section of a run config), ``phases`` (update order within a step; empty for methods
    that are fitted in one pass, like the class-mean painter) and ``generator`` (an
    ``nn.Module`` called as ``generator(label_onehot, z=None, seeds=None)`` returning
    ``(N, 3, H, W)`` images in [-1, 1]).

    Args:
        model_cfg: an instance of ``config_class``.
        info: the dataset's label space.
        height, width: image size the method is built for.
    """

    config_class: type = object
    phases: tuple[str, ...] = ()
    generator: nn.Module

    def __init__(self, model_cfg, info: DatasetInfo, height: int, width: int) -> None:
        super().__init__()
        self.model_cfg = model_cfg
        self.info = info
        self.height, self.width = height, width

    @property
    def z_dim(self) -> int:
        """Noise channels the generator takes (0 = deterministic method)."""
        return int(getattr(self.generator, "z_dim", 0))

    def parameter_counts(self) -> dict[str, int]:
        """Parameter counts by network, as ``semsynth info`` reports them.

        Default: ``"G"`` (the generator) and ``"D"`` (``self.discriminator``, if any).
        Methods add their own entries (OASIS: G without the noise input channels; SPADE:
        the image encoder ``"E"`` apart from G).
        """
        counts = {"G": count_parameters(self.generator)}
        disc = getattr(self, "discriminator", None)
        if isinstance(disc, nn.Module):
            counts["D"] = count_parameters(disc)
        return counts

    def phase_parameters(self, phase: str) -> Iterable[nn.Parameter]:
        """Parameters updated in ``phase`` (its optimizer's parameters).

        Default for GANs with phases ``("G", "D")``: ``self.generator`` in ``"G"``,
        ``self.discriminator`` in any other phase.
        """
        return (self.generator if phase == "G" else self.discriminator).parameters()

    def phase_lr(self, phase: str, train_cfg) -> float:
        """Learning rate of ``phase``'s Adam optimizer: ``train_cfg.lr_g`` for ``"G"``,
        ``train_cfg.lr_d`` otherwise (TTUR)."""
        return float(train_cfg.lr_g if phase == "G" else train_cfg.lr_d)

    def phase_losses(self, phase: str, image: torch.Tensor, label: torch.Tensor,
                     rng: torch.Generator, shard: BatchShard | None = None) -> dict[str, torch.Tensor]:
        """Loss terms of one phase on one batch.

        Args:
            phase: one of ``phases``.
            image: ``(B, 3, H, W)`` float in [-1, 1] (this process's slice of the batch).
            label: ``(B, H, W)`` int64 label ids.
            rng: CPU generator of the training run for noise and random masks (its state
                is checkpointed, which makes resumed runs bit-identical on CPU; it is in the
                same state in every process of a data-parallel run).
            shard: where the batch sits in the step's global batch (data-parallel training,
                :mod:`semsynth.batch_shard`); ``None`` = the whole batch, one process.
                Per-image random draws go through it (drawn for the global batch, sliced)
                and so do statistics over the batch; every loss is a mean over this
                process's images, so that the average over processes that data-parallel
                training takes of the gradients is the global batch's gradient.

        Returns:
            Scalar tensors; key ``"total"`` is back-propagated, the rest are logged.
        """
        raise NotImplementedError

    def fit(self, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> None:
        """One-pass fitting for methods without phases (default: nothing to do)."""
