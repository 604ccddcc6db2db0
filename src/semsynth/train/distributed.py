"""Data-parallel training over processes launched by ``torchrun`` (``torch.distributed``).

``torchrun --nproc_per_node N -m semsynth train CONFIG`` starts N processes with ``RANK``,
``LOCAL_RANK`` and ``WORLD_SIZE`` in their environment; :func:`init_from_environment` joins
them into one process group (NCCL on CUDA, one GPU per process; gloo on CPU). Without those
variables (a plain ``semsynth train``) nothing is initialised and the loop runs as one
process. Multi-node runs use torchrun's own rendezvous (``--nnodes M --rdzv-backend c10d
--rdzv-endpoint HOST:PORT``); under SLURM, ``srun torchrun ...`` (see README).

How the loop uses it (:class:`semsynth.train.loop.Trainer`):

* every process takes a disjoint slice of the global batch of each step
  (:class:`semsynth.train.loop.StepBatchSampler`) and a
  :class:`semsynth.batch_shard.BatchShard` that says where it sits;
* each phase's forward and backward run under ``DistributedDataParallel``
  (:func:`wrap_phases`), which averages that phase's gradients over the processes while
  the backward runs; the optimizers then take identical steps in every process;
* all processes agree on when to stop (:meth:`DistContext.any`), and rank 0 alone writes
  the run folder.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.nn as nn

from semsynth.types import ConfigError

#: Collectives wait this long for a peer (rank 0 may evaluate FID or write a checkpoint
#: while the others wait at the next step) before the job fails.
TIMEOUT = datetime.timedelta(minutes=60)


@dataclass(frozen=True)
class DistContext:
    """This process's place in a data-parallel job.

    Attributes:
        rank: global rank (0 … world_size − 1); rank 0 writes the run folder.
        world_size: number of processes.
        local_rank: rank on this node (selects the GPU).
        device: this process's device.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        """True on rank 0 (the process that writes logs, grids and checkpoints)."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """True when there are several processes."""
        return self.world_size > 1

    def reduce_sum(self, t: torch.Tensor) -> torch.Tensor:
        """Sum ``t`` over all processes, in place; returns ``t`` (collective call)."""
        if self.distributed:
            torch.distributed.all_reduce(t)
        return t

    def any(self, flag: int) -> int:
        """The largest of every process's ``flag`` (collective call; one process: ``flag``)."""
        if not self.distributed:
            return flag
        t = torch.tensor([flag], dtype=torch.int64, device=self._comm_device)
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
        return int(t.item())

    def mean_values(self, values: list[float]) -> list[float]:
        """The mean over processes of each value (collective call; one process: unchanged)."""
        if not self.distributed or not values:
            return list(values)
        t = torch.tensor(values, dtype=torch.float64, device=self._comm_device)
        torch.distributed.all_reduce(t)
        return (t / self.world_size).tolist()

    def broadcast_buffers(self, module: nn.Module) -> None:
        """Give every process rank 0's floating-point buffers of ``module`` (collective call).

        Used on the generator after each step: its BatchNorm running statistics are
        per-process on CPU (plain BatchNorm), and the EMA copies them.
        """
        if not self.distributed:
            return
        bufs = [b for b in module.buffers() if b.is_floating_point()]
        if not bufs:
            return
        flat = torch.cat([b.reshape(-1) for b in bufs])
        torch.distributed.broadcast(flat, src=0)
        i = 0
        for b in bufs:
            b.copy_(flat[i:i + b.numel()].view_as(b))
            i += b.numel()

    @property
    def _comm_device(self) -> torch.device:
        return self.device if self.device.type == "cuda" else torch.device("cpu")


def launched_by_torchrun() -> bool:
    """True when ``WORLD_SIZE``/``RANK`` are in the environment (torchrun, ``srun`` + torchrun)."""
    return "WORLD_SIZE" in os.environ and "RANK" in os.environ


def init_from_environment(device: str) -> DistContext:
    """Join the process group that ``torchrun`` set up, or describe a single process.

    Args:
        device: ``train.device``: ``auto`` (CUDA if available, else CPU), ``cpu`` or
            ``cuda[:i]``. With several processes on CUDA, process ``LOCAL_RANK`` takes GPU
            ``LOCAL_RANK`` (an explicit index is replaced).

    Returns:
        A :class:`DistContext`; for a single process (no torchrun variables, or
        ``WORLD_SIZE=1``) no process group is created.

    Raises:
        ConfigError: CUDA asked for but absent, or fewer GPUs on this node than processes.
    """
    want_cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if want_cuda and not torch.cuda.is_available():
        raise ConfigError(f"train.device={device!r} but CUDA is not available")
    world = int(os.environ.get("WORLD_SIZE", "1")) if launched_by_torchrun() else 1
    if world == 1:
        dev = torch.device(device if device != "auto" else ("cuda" if want_cuda else "cpu"))
        return DistContext(device=dev)
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if want_cuda:
        if local_rank >= torch.cuda.device_count():
            raise ConfigError(f"LOCAL_RANK {local_rank} but this node has {torch.cuda.device_count()} GPU(s): "
                              "use --nproc_per_node ≤ the number of GPUs")
        dev = torch.device("cuda", local_rank)
        torch.cuda.set_device(dev)
    else:
        dev = torch.device("cpu")
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if want_cuda else "gloo", timeout=TIMEOUT)
    return DistContext(rank=rank, world_size=world, local_rank=local_rank, device=dev)


class _PhaseStep(nn.Module):
    """One phase's losses as a module call, so that DistributedDataParallel can run it."""

    def __init__(self, method: nn.Module, phase: str) -> None:
        super().__init__()
        self.method = method
        self.phase = phase

    def forward(self, image, label, rng, shard, **extra):
        return self.method.phase_losses(self.phase, image, label, rng, shard, **extra)


def wrap_phases(method, ctx: DistContext) -> dict[str, nn.Module]:
    """One ``DistributedDataParallel`` per phase of ``method``.

    The phases of a GAN step call both networks but train one (the discriminator scores
    the fakes in the generator's phase while its weights stay fixed). A DDP wrapper per
    phase registers only that phase's parameters (those with ``requires_grad`` while it
    is built), so its backward averages exactly the gradients its optimizer uses, while the
    network that is held fixed is neither reduced nor waited for. The wrappers share the
    method's modules: no copies, one state dict. DDP broadcasts rank 0's parameters and
    buffers when it is built and its buffers before each forward.

    Args:
        method: a :class:`semsynth.methods.base.Method` on ``ctx.device``.
        ctx: a distributed context (``world_size > 1``).

    Returns:
        ``{phase: module}``; call as ``module(image, label, rng, shard[, edges=...])`` → the
        phase's loss dict. Every parameter's ``requires_grad`` is left True.
    """
    from torch.nn.parallel import DistributedDataParallel as DDP

    wrapped = {}
    for phase in method.phases:
        method.requires_grad_(False)
        for p in method.trained_parameters(phase):
            p.requires_grad_(True)
        ids = [ctx.device.index] if ctx.device.type == "cuda" else None
        wrapped[phase] = DDP(_PhaseStep(method, phase), device_ids=ids)
    method.requires_grad_(True)
    return wrapped


def use_sync_batchnorm(module: nn.Module, ctx: DistContext) -> nn.Module:
    """``nn.SyncBatchNorm`` in place of BatchNorm on CUDA with several processes (the
    official OASIS/SPADE ``syncbatch``: statistics over the global batch); unchanged on CPU,
    where SyncBatchNorm does not run and each process normalises its own slice."""
    if ctx.distributed and ctx.device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    return module
