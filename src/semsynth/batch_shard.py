"""A process's share of a training step's global batch (data-parallel training).

With ``torchrun --nproc_per_node N`` every process trains on a disjoint slice of the batch
that one process would take for the same step (``train.batch_size`` stays the global batch;
:class:`semsynth.train.loop.StepBatchSampler`). A :class:`BatchShard` tells a method's
``phase_losses`` where its images sit in that global batch, so that

* random draws per image (OASIS's noise, SPADE's reparameterisation ε, LabelMix bits) are
  drawn for the **whole** global batch from the run's generator — whose state is the same
  in every process — and sliced: image ``i`` of step ``s`` gets the same noise whatever
  the number of processes;
* batch statistics that a loss needs (OASIS's class-balancing pixel counts) are those of
  the global batch: the counts are summed over the processes (``reduce_sum``), once per
  step. (The official OASIS code, under ``nn.DataParallel``, computes its class weights per
  replica; here they are the global batch's, as one process would compute them.)

With one process (``reduce_sum`` is ``None``) every draw and count is exactly what the
single-process code computed before data parallelism existed: runs stay bit-identical.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch


@dataclass(frozen=True)
class BatchShard:
    """Where this process's ``size`` images sit in the step's global batch.

    Attributes:
        start: index of this process's first image in the global batch.
        size: images in this process's slice (``B_local``).
        global_size: images in the global batch (``train.batch_size``).
        num_ids: label ids of the label space (``semantic_nc``); the length of
            :meth:`label_counts`.
        reduce_sum: sums a tensor over all processes in place and returns it
            (``torch.distributed.all_reduce``); ``None`` with one process.

    Raises:
        ValueError: a slice outside the global batch.
    """

    start: int
    size: int
    global_size: int
    num_ids: int
    reduce_sum: Callable[[torch.Tensor], torch.Tensor] | None = None
    _cache: dict = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not (0 <= self.start and self.size > 0 and self.start + self.size <= self.global_size):
            raise ValueError(f"batch slice [{self.start}, {self.start + self.size}) is outside a global "
                             f"batch of {self.global_size}")

    @classmethod
    def whole(cls, size: int, num_ids: int) -> "BatchShard":
        """The whole batch in one process (no communication)."""
        return cls(0, size, size, num_ids)

    @property
    def distributed(self) -> bool:
        """True when the global batch is split over several processes."""
        return self.reduce_sum is not None

    def _slice(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.size == self.global_size else x[self.start:self.start + self.size]

    def randn(self, rng: torch.Generator, *shape: int, device=None) -> torch.Tensor:
        """``N(0, 1)`` draws for this slice: ``(global_size, *shape)`` are drawn from ``rng``
        (a CPU generator) and rows ``start … start + size − 1`` returned on ``device``.

        Returns:
            ``(size, *shape)`` float32.
        """
        return self._slice(torch.randn(self.global_size, *shape, generator=rng)).to(device)

    def rand(self, rng: torch.Generator, *shape: int, device=None) -> torch.Tensor:
        """``U[0, 1)`` draws for this slice, drawn like :meth:`randn`.

        Returns:
            ``(size, *shape)`` float32.
        """
        return self._slice(torch.rand(self.global_size, *shape, generator=rng)).to(device)

    def randint(self, rng: torch.Generator, high: int, *shape: int, device=None) -> torch.Tensor:
        """Integers in ``[0, high)`` for this slice, drawn like :meth:`randn`.

        Returns:
            ``(size, *shape)`` int64.
        """
        return self._slice(torch.randint(0, high, (self.global_size, *shape), generator=rng)).to(device)

    def label_counts(self, label: torch.Tensor) -> torch.Tensor:
        """Pixel count of every label id over the **global** batch (don't-care included).

        Computed once per step and shared by the phases (the same ``label`` tensor).

        Args:
            label: ``(size, H, W)`` int64 ids in ``[0, num_ids)``.

        Returns:
            ``(num_ids,)`` float32 on ``label``'s device (exact integers below 2**24 pixels
            per id).
        """
        key = (label.data_ptr(), tuple(label.shape))
        hit = self._cache.get("counts")
        if hit is not None and hit[0] == key:
            return hit[1]
        counts = torch.bincount(label.reshape(-1), minlength=self.num_ids)[: self.num_ids]
        if self.reduce_sum is not None:
            counts = self.reduce_sum(counts)  # int64: exact for any batch
        counts = counts.to(torch.float32)
        self._cache["counts"] = (key, counts)
        return counts

    def global_numel(self, label: torch.Tensor) -> int:
        """Pixels in the global batch's label maps (``global_size · H · W``)."""
        return label.numel() // self.size * self.global_size

    def max_label(self, label: torch.Tensor) -> int:
        """The largest label id present in the global batch (one process: ``label.max()``)."""
        if self.reduce_sum is None:
            return int(label.max())
        counts = self.label_counts(label)
        return int(torch.nonzero(counts).max())
