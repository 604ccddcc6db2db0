"""The generic training loop: one loop for every method.

It owns what the official repositories scatter: optimizers (Adam per phase), the EMA
generator and its BatchNorm refresh, deterministic data order, checkpoints with the full
training state, ``stats.jsonl`` logging, sample grids, stopping (``train.max_steps`` /
``train.max_minutes``), NaN detection, devices. The method only returns losses per phase
(:class:`semsynth.methods.base.Method`). Modelled on NVlabs/edm's ``training_loop.py``.

Determinism: the data order of step ``s`` is a function of ``(seed, s)`` alone (one
permutation per epoch from a generator seeded with ``(seed, epoch)``), augmentations of an
item are drawn from ``(seed, epoch, index)``, and all training noise and LabelMix bits come
from one CPU ``torch.Generator`` whose state is checkpointed. On CPU, ``--resume`` after
``k`` steps therefore gives bit-identical weights to an uninterrupted run.

Data parallelism (``torchrun``; :mod:`semsynth.train.distributed`): ``train.batch_size`` is
the global batch; process ``r`` of ``W`` takes images ``r·B/W … (r+1)·B/W − 1`` of the batch
one process would take at the same step, draws the noise of the whole global batch from the
same generator state and keeps its rows (:class:`semsynth.batch_shard.BatchShard`), and each
phase's gradients are averaged over the processes by DistributedDataParallel. What step
``s`` trains on is therefore independent of ``W``, checkpoints hold no per-process state,
and ``--resume`` works with any number of processes. Rank 0 alone writes the run folder.
"""

from __future__ import annotations

import math
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import torch
from torch.utils.data import DataLoader, Dataset
from torch.utils.data import Sampler as TorchSampler

from semsynth.batch_shard import BatchShard
from semsynth.config import Config, config_to_dict, save_config
from semsynth.data import build_dataset, dataset_info
from semsynth.data.cache import resolve_num_workers
from semsynth.data.transforms import transform_from_config
from semsynth.labels import label_input
from semsynth.model.build import (
    build_method,
    compile_networks,
    compile_unavailable,
    configure_backends,
    resolve_precision,
    uses_cudagraphs,
)
from semsynth.model.checkpoint import (
    TrainingState,
    capture_rng,
    config_differences,
    restore_rng,
    save_checkpoint,
)
from semsynth.model.warm_start import warm_start
from semsynth.train.distributed import DistContext, init_from_environment, use_sync_batchnorm, wrap_phases
from semsynth.train.ema import ema_beta, make_ema, refresh_batchnorm, update_ema
from semsynth.train.grid import SampleGrid
from semsynth.train.runfolder import RunLock, remove_stale_temp_files, resume_state
from semsynth.train.runlog import RunLog
from semsynth.types import ConfigError, DataError, SemsynthError

REFRESH_SEED_OFFSET = 1_000_003  # noise seeds of BatchNorm-refresh passes: offset + i


class TrainingDiverged(SemsynthError):
    """A loss became NaN or infinite; the run stops and keeps its last good checkpoint."""


def make_optimizers(method, train_cfg) -> dict[str, torch.optim.Adam]:
    """One Adam optimizer per phase of ``method`` over ``method.trained_parameters(phase)``
    (its phase parameters less the frozen ones, ``train.freeze``), at
    ``method.phase_lr(phase, train_cfg)`` with ``train_cfg.betas`` (the papers' settings);
    PyTorch's fused implementation when the parameters are on a CUDA device (build the
    optimizers after moving the method there).
    The one place optimizers are built: the Trainer, ``benchmarks/`` and the tests.

    Returns:
        ``{phase: Adam}`` (empty for a method without phases).
    """
    betas = tuple(float(b) for b in train_cfg.betas)
    out = {}
    for p in method.phases:
        params = method.trained_parameters(p)
        fused = bool(params) and all(q.is_cuda for q in params)  # one kernel for all tensors (CUDA)
        out[p] = torch.optim.Adam(params, lr=method.phase_lr(p, train_cfg), betas=betas, fused=fused or None)
    return out


def train_step(method, optimizers: dict, image: torch.Tensor, label: torch.Tensor, rng: torch.Generator, *,
               shard: BatchShard | None = None, phase_modules: dict | None = None,
               check: Callable | None = None, precision: str = "fp32",
               edges: torch.Tensor | None = None, cudagraphs: bool = False) -> dict[str, torch.Tensor]:
    """One optimisation step of ``method``: its phases in order (e.g. G then D).

    For each phase only that phase's parameters require gradients (the network held fixed
    gets no weight gradients: the backward computes what the phase's optimizer uses),
    gradients are reset, the phase's losses computed, ``total`` backpropagated and the
    phase's optimizer stepped. Used by :class:`Trainer` and ``benchmarks/train_step.py``.

    Args:
        method: a :class:`semsynth.methods.base.Method` with at least one phase.
        optimizers: ``{phase: torch.optim.Optimizer}`` over ``method.trained_parameters(phase)``.
        image: ``(B, 3, H, W)`` float in [-1, 1]; label: ``(B, H, W)`` int64 ids.
        rng: CPU generator of the step's noise and LabelMix draws (advanced).
        shard: where this batch sits in a data-parallel global batch (``None``: it is the
            whole batch; ``phase_losses`` is then called without it).
        phase_modules: ``{phase: module}`` from
            :func:`semsynth.train.distributed.wrap_phases` (DDP), used instead of
            ``method.phase_losses``.
        check: ``check(phase, losses)`` called before each backward (the loop raises
            :class:`TrainingDiverged` there on a non-finite loss).
        edges: ``(B, 1, H, W)`` instance-edge maps of the batch (``data.instance_edges``),
            passed on to ``phase_losses(..., edges=edges)``; ``None``: not passed.
        precision: ``fp32``, or ``bf16``: each phase's losses are computed under
            ``torch.autocast(image.device.type, torch.bfloat16)`` (``train.precision``); the
            backward and the optimizer step run outside it, on the fp32 weights.
        cudagraphs: the networks replay CUDA graphs
            (:func:`semsynth.model.build.uses_cudagraphs`): the step first calls
            ``torch.compiler.cudagraph_mark_step_begin()``, a new iteration.

    Raises:
        ValueError: ``precision`` is neither (``auto`` is resolved by the caller:
            :func:`semsynth.model.build.resolve_precision`).

    Returns:
        ``{loss name: detached 0-d tensor}`` of every phase, ``total`` left out (no host
        synchronisation).
    """
    if precision not in ("fp32", "bf16"):
        raise ValueError(f"train_step: precision must be fp32 or bf16 (resolve auto first), got {precision!r}")
    if cudagraphs:
        torch.compiler.cudagraph_mark_step_begin()
    logs: dict[str, torch.Tensor] = {}
    for phase in method.phases:
        params = method.trained_parameters(phase)  # frozen ones (train.freeze) stay off
        for p in method.parameters():
            p.requires_grad_(False)
        for p in params:
            p.requires_grad_(True)
        opt = optimizers[phase]
        opt.zero_grad(set_to_none=True)
        extra = {} if edges is None else {"edges": edges}
        with torch.autocast(image.device.type, torch.bfloat16, enabled=precision == "bf16"):
            if phase_modules is not None:  # DDP: the backward averages the gradients over processes
                losses = phase_modules[phase](image, label, rng, shard, **extra)
            elif shard is None:
                losses = method.phase_losses(phase, image, label, rng, **extra)
            else:
                losses = method.phase_losses(phase, image, label, rng, shard, **extra)
        if check is not None:
            check(phase, losses)
        losses["total"].backward()
        opt.step()
        logs.update({k: v.detach() for k, v in losses.items() if k != "total"})
    return logs


def lr_scale(step: int, start: int | None, end: int | None, steps_per_epoch: int = 1) -> float:
    """Linear learning-rate decay factor for the step with 0-based index ``step``.

    ``t = step // steps_per_epoch`` (epochs; pass 1 for a schedule in steps); the factor is
    1 before ``start``, ``1 - (t - start) / (end - start)`` from ``start`` on, 0 from ``end``
    on; always 1 when ``start`` is ``None``. With epochs, ``start = niter`` and
    ``end = niter + niter_decay`` give NVlabs/SPADE's schedule (``update_learning_rate`` in
    ``trainers/pix2pix_trainer.py``, called after each 1-based epoch ``e``: one decrement of
    ``lr / niter_decay`` for each finished ``e > niter``).

    Raises:
        ValueError: ``steps_per_epoch`` < 1.
    """
    if start is None or end is None:
        return 1.0
    if steps_per_epoch < 1:
        raise ValueError(f"steps_per_epoch must be >= 1, got {steps_per_epoch}")
    t = step // steps_per_epoch
    return 1.0 - min(max(t - start, 0), end - start) / (end - start)


class _EpochIndexed(Dataset):
    """Maps a virtual index ``epoch·n + i`` to item ``i`` with augmentations of ``epoch``."""

    def __init__(self, dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, v: int):
        n = len(self.dataset)
        self.dataset.set_epoch(v // n)
        return self.dataset[v % n]


class StepBatchSampler(TorchSampler):
    """Batches of virtual indices for steps ``start_step, start_step + 1, ...`` (endless).

    Step ``s`` takes batch ``s mod (n // B)`` of epoch ``s // (n // B)``, whose permutation
    comes from a generator seeded with ``seed · 1_000_003 + epoch``; the last incomplete
    batch of an epoch is dropped. With ``world_size`` W > 1 (data-parallel training),
    process ``rank`` takes items ``rank·B/W … (rank+1)·B/W − 1`` of that global batch.

    Raises:
        ConfigError: ``batch_size`` larger than the dataset, or not divisible by W.
    """

    def __init__(self, n: int, batch_size: int, seed: int, start_step: int = 0,
                 rank: int = 0, world_size: int = 1) -> None:
        if n < batch_size:
            raise ConfigError(f"train.batch_size {batch_size} is larger than the dataset ({n} pairs)")
        if batch_size % world_size:
            raise ConfigError(f"train.batch_size {batch_size} (the global batch) is not divisible by the "
                              f"{world_size} processes")
        self.n, self.b, self.seed, self.start = n, batch_size, seed, start_step
        self.rank, self.world = rank, world_size

    def global_batch(self, step: int) -> list[int]:
        """The virtual indices (``epoch · n + i``) of the whole batch of ``step``."""
        per_epoch = self.n // self.b
        epoch, j = divmod(step, per_epoch)
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        perm = torch.randperm(self.n, generator=gen)[j * self.b:(j + 1) * self.b]
        return [epoch * self.n + int(i) for i in perm]

    def batch(self, step: int) -> list[int]:
        """This process's slice of :meth:`global_batch` (all of it with one process)."""
        local = self.b // self.world
        return self.global_batch(step)[self.rank * local:(self.rank + 1) * local]

    def __iter__(self) -> Iterator[list[int]]:
        step = self.start
        while True:
            yield self.batch(step)
            step += 1

    def __len__(self) -> int:  # endless; DataLoader only needs it for len()
        return 2**62


@dataclass
class TrainResult:
    """What :meth:`Trainer.run` returns: final step, images seen, wall seconds, stop reason."""

    step: int
    images_seen: int
    elapsed_seconds: float
    stop_reason: str
    out_dir: Path


class _LogWindow:
    """Loss sums since the last ``stats.jsonl`` record."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.n = 0
        self.closed_n = 0
        self.seconds = 0.0
        self.t = time.time()

    def add(self, logs: dict[str, float]) -> None:
        for k, v in logs.items():
            self.sums[k] = self.sums.get(k, 0.0) + v
        self.n += 1

    def close(self, dist: DistContext) -> dict[str, float]:
        """The window's loss means over the global batch (all processes); starts a new window."""
        sums = dict(zip(self.sums, dist.mean_values(list(self.sums.values()))))
        means = {k: v / self.n for k, v in sums.items()}
        self.closed_n, self.seconds = self.n, time.time() - self.t
        self.sums, self.n, self.t = {}, 0, time.time()
        return means


class _ProgressBar:
    """tqdm over what will stop the run: the time budget when there is one (elapsed / budget
    in seconds, the step in the postfix), else the steps."""

    def __init__(self, tc, limit_s: float, elapsed_before: float, step: int, enabled: bool) -> None:
        from tqdm import tqdm

        self.tc, self.limit_s = tc, limit_s
        self.timed = tc.max_minutes is not None
        self.bar = tqdm(total=int(limit_s) if self.timed else tc.max_steps,
                        initial=int(elapsed_before) if self.timed else step, disable=not enabled,
                        dynamic_ncols=True, unit="s" if self.timed else "step", desc="train")

    def advance(self, step: int, elapsed: float) -> None:
        if self.timed:
            self.bar.update(min(int(elapsed), int(self.limit_s)) - self.bar.n)
            if step % self.tc.log_every:  # log steps set the postfix with the losses
                self.bar.set_postfix({"step": f"{step}/{self.tc.max_steps}"}, refresh=False)
        else:
            self.bar.update(1)

    def show_losses(self, step: int, means: dict[str, float]) -> None:
        self.bar.set_postfix({"step": f"{step}/{self.tc.max_steps}", **{k: f"{v:.3f}" for k, v in means.items()}})

    def close(self) -> None:
        self.bar.close()


class Trainer:
    """State of one training run (method, EMA, optimizers, data, counters).

    Args:
        cfg: the run config.
        out_dir: run folder (``config.yaml``, ``stats.jsonl``, ``samples/``, ``checkpoints/``).
        resume: continue from ``out_dir/checkpoints/latest.pt``.
        progress: show a tqdm progress bar.
        evaluator: optional ``f(trainer) -> dict`` called every ``cfg.eval.every`` steps on
            the val split; its ``"fid"`` selects ``checkpoints/best.pt``.
        resume_from_last_good: with ``resume``, if ``latest.pt`` is unreadable (truncated,
            corrupt), continue from the newest readable ``step_NNNNNNN.pt`` instead of
            stopping (never done silently: a note names both files).
        dist: this process's place in a data-parallel job; default: joined from torchrun's
            environment variables (:func:`semsynth.train.distributed.init_from_environment`),
            one process without them. Every process must read the same run folder (a
            shared filesystem across nodes); only rank 0 writes it.
        step_callback: ``f(trainer)`` called in every process after every step (after the
            EMA update), for monitoring; the trainer must not be modified.
        data_check: run the data check (:mod:`semsynth.data.check`) on both splits before
            anything is written; ``False`` skips it with a printed warning (a bad file then
            stops the run only when it is read).

    Raises:
        ConfigError: resuming with a config that differs from the checkpoint's in a key
            that changes what is computed (the message lists the keys), or ``resume``
            without a checkpoint, or a fresh run in a folder that already holds one, or an
            unreadable ``latest.pt`` without ``resume_from_last_good`` (the message names it
            and the newest intact ``step_*.pt``).
        RunFolderBusy: another live process trains in ``out_dir``.
    """

    def __init__(self, cfg: Config, out_dir: str | os.PathLike, resume: bool = False,
                 progress: bool = True, evaluator: Callable | None = None,
                 resume_from_last_good: bool = False, dist: DistContext | None = None,
                 step_callback: Callable | None = None, data_check: bool = True) -> None:
        self.cfg = cfg
        self.out = Path(out_dir)
        self.dist = dist if dist is not None else init_from_environment(cfg.train.device)
        self.main = self.dist.is_main
        self.progress = progress and self.main
        self.evaluator = evaluator if self.main else None
        self.step_callback = step_callback
        self.lock = RunLock(self.out)
        if self.main:
            self.lock.check()  # fail at once if another process trains here
        self._signal: int | None = None
        self._signal_time = 0.0
        self.log = RunLog(self.out, enabled=self.main)  # stats.jsonl and TensorBoard
        self.device = self.dist.device
        configure_backends(self.device, cfg.train.threads)
        #: ``train.precision`` on this device (``auto`` resolved)
        self.precision = resolve_precision(cfg.train.precision, self.device)
        ckpt = self._state_to_resume(resume, resume_from_last_good)
        self._build(ckpt)
        self._prepare_data(data_check)
        self.grid = SampleGrid(cfg, self.info)
        self._saved_step = self.step if ckpt is not None else -1

    def _state_to_resume(self, resume: bool, last_good: bool) -> TrainingState | None:
        """The checkpoint ``--resume`` continues from (its config must match), or ``None``."""
        latest = self.out / "checkpoints" / "latest.pt"
        if not resume:
            if latest.exists():
                raise ConfigError(f"{latest} exists: pass --resume to continue that run, or choose another --out")
            return None
        ckpt, source = resume_state(latest, last_good)
        diffs = config_differences(ckpt.run_config(source), self.cfg)
        if diffs:
            raise ConfigError(f"--resume: config differs from {source}: " + "; ".join(diffs))
        return ckpt

    def _build(self, ckpt: TrainingState | None) -> None:
        """Method (``train.freeze`` applied; a fresh run warm-started from ``train.init_from``),
        EMA, optimizers, training RNG and counters (from ``ckpt`` when resuming)."""
        cfg = self.cfg
        torch.manual_seed(cfg.seed)
        self.info = dataset_info(cfg.data)
        self.method = build_method(cfg, self.info)  # train.freeze applied
        if ckpt is None and cfg.train.init_from is not None:  # a fresh run only: --resume has its own weights
            note = warm_start(self.method.generator, cfg.train.init_from, cfg.train.init_skip, cfg.method)
            if self.main:
                print(f"note: {note}", file=sys.stderr)
        self.method = self.method.to(self.device)
        if cfg.train.channels_last:  # faster convolutions (docs/results.md); the EMA copy inherits it
            self.method.to(memory_format=torch.channels_last)
        self.ema = make_ema(self.method.generator).eval()  # plain BatchNorm: rank 0 refreshes it alone
        self.method.generator = use_sync_batchnorm(self.method.generator, self.dist)
        #: each phase's learning rate before the decay (``train.lr_decay_*``) scales it by lr_scale
        self.base_lr = {p: self.method.phase_lr(p, cfg.train) for p in self.method.phases}
        self.lr_scale = 1.0
        self.optimizers = make_optimizers(self.method, cfg.train)
        self.train_rng = torch.Generator().manual_seed(cfg.seed + 1)
        self.step, self.images_seen, self.elapsed_before, self.best = 0, 0, 0.0, {}
        if ckpt is not None:
            self.method.load_state_dict(ckpt.method)
            self.ema.load_state_dict(ckpt.ema)
            for p, opt in self.optimizers.items():
                chosen = [(g.get("fused"), g.get("foreach")) for g in opt.param_groups]
                opt.load_state_dict(ckpt.optimizers[p])
                for g, (fused, foreach) in zip(opt.param_groups, chosen):  # this device's kernel, not the saver's
                    g["fused"], g["foreach"] = fused, foreach
            if ckpt.precision is not None and ckpt.precision != self.precision and self.main:
                print(f"note: the checkpoint's steps ran in {ckpt.precision}; this device continues in "
                      f"{self.precision} (train.precision {cfg.train.precision})", file=sys.stderr)
            self.step, self.images_seen = int(ckpt.step), int(ckpt.images_seen)
            self.elapsed_before, self.best = float(ckpt.elapsed_seconds), dict(ckpt.best)
            restore_rng(ckpt.rng, self.train_rng)
        self._cudagraphs = False
        if cfg.train.compile:  # after the EMA copy and the checkpoint's weights, before DDP
            why_not = compile_unavailable(self.device, self.dist.distributed)
            if why_not is None:
                compile_networks(self.method, mode=cfg.train.compile_mode)
                self._cudagraphs = uses_cudagraphs(True, cfg.train.compile_mode, self.device)
            elif self.main:
                print(f"note: {why_not}", file=sys.stderr)
        self._phase_modules = wrap_phases(self.method, self.dist) if self.dist.distributed else None

    def _prepare_data(self, data_check: bool) -> None:
        """The training set, its batch order from the current step, workers, the data check."""
        cfg, ctx = self.cfg, self.dist
        self.train_set = build_dataset(cfg.data, cfg.data.train_split, train=True, seed=cfg.seed)
        # raises for a batch larger than the split or not divisible by the processes
        self.batches = (StepBatchSampler(len(self.train_set), cfg.train.batch_size, cfg.seed, self.step,
                                         ctx.rank, ctx.world_size) if self.method.phases else None)
        if self.main:
            print(f"note: [{cfg.data.train_split}] {self.train_set.cache_reason}", file=sys.stderr)
        self.num_workers = resolve_num_workers(cfg.data, self.train_set.cache, self.device.type)
        if data_check:
            self._check_data()
        elif self.main:
            print("warning: the data check is skipped (--no-data-check): a bad file stops the run only when it "
                  "is read", file=sys.stderr)
        self._refresh_set = self.train_set.with_transform(transform_from_config(cfg.data, train=False), train=False)

    # ----------------------------------------------------------------- helpers
    def _check_data(self) -> None:
        """`semsynth data check` on both splits before anything is written, through the
        manifests (pairs unchanged since an earlier check are trusted); any bad file
        (unreadable, truncated, sizes differ, unknown ids or colours) stops the run, all
        listed. In a data-parallel job rank 0 checks while the others wait for its verdict."""
        from semsynth.data.check import check_data, snap_note, summary_line

        cfg = self.cfg
        problems: list[str] = []
        if self.main:
            rep = check_data(cfg, datasets={cfg.data.train_split: self.train_set}, progress=self.progress)
            problems = [f"[{s}] {p}" for s, r in rep["splits"].items() for p in r["problems"]]
            lines = [summary_line(split, r) for split, r in rep["splits"].items() if r.get("manifest")]
            if lines:
                print("note: " + "; ".join(lines), file=sys.stderr)
            note = snap_note(rep, self.info.extra)
            if note and not problems:
                print(f"note: {note}", file=sys.stderr)
        if self.dist.any(int(bool(problems))):
            if not problems:
                raise DataError("rank 0's data check found problems in the data (its error lists them)")
            more = f" (and {len(problems) - 5} more; see `semsynth data check`)" if len(problems) > 5 else ""
            raise DataError(f"{len(problems)} problem(s) in the data: " + " | ".join(problems[:5]) + more)

    def _on_signal(self, signum, frame) -> None:
        now = time.monotonic()
        if self._signal is not None:
            # Under torchrun the same signal often arrives twice within milliseconds (SLURM
            # signals every process of the step, and the torchrun agent forwards its own copy):
            # that is one request. A later second signal means: stop now, without a checkpoint.
            if self.dist.distributed and signum == self._signal and now - self._signal_time < 5.0:
                return
            raise KeyboardInterrupt
        self._signal, self._signal_time = signum, now

    def refresh_batches(self) -> Iterator[tuple[torch.Tensor, list[int]]]:
        """Deterministic (one-hot, seeds) batches of training label maps for the BN refresh."""
        n, b = len(self._refresh_set), self.cfg.train.batch_size
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(self.cfg.seed + 7))
        count = self.cfg.train.ema.bn_refresh_batches
        for k in range(count):
            idx = [int(perm[(k * b + j) % n]) for j in range(b)]
            items = [self._refresh_set[i] for i in idx]
            label = torch.stack([it[1] for it in items]).to(self.device)
            edges = torch.stack([it[2] for it in items]).to(self.device) if self.info.instance_edges else None
            seeds = [REFRESH_SEED_OFFSET + k * b + j for j in range(b)]
            yield label_input(label, self.info, edges), seeds

    def refresh_ema_batchnorm(self) -> None:
        """Recompute the EMA generator's BatchNorm statistics (before grids/evals/exports)."""
        refresh_batchnorm(self.ema, self.refresh_batches())

    def write_grid(self) -> Path | None:
        """Write ``samples/step_NNNNNNN.png`` (:class:`semsynth.train.grid.SampleGrid`) of the
        EMA generator; rank 0 only (``None`` elsewhere)."""
        if not self.main:
            return None
        path, grid = self.grid.write(self.ema, self.device, self.out, self.step)
        self.log.tb("add_image", "samples", grid, self.step, dataformats="HWC")
        return path

    def state(self, elapsed: float) -> TrainingState:
        """The full training state for a checkpoint."""
        return TrainingState(
            config=config_to_dict(self.cfg), dataset_info=self.info.to_dict(), method=self.method.state_dict(),
            ema=self.ema.state_dict(), optimizers={p: o.state_dict() for p, o in self.optimizers.items()},
            step=self.step, images_seen=self.images_seen, elapsed_seconds=elapsed,
            rng=capture_rng(self.train_rng), best=self.best, precision=self.precision)

    def save(self, elapsed: float, periodic: bool, refresh: bool = True) -> None:
        """Refresh EMA BatchNorm (unless ``refresh`` is false), then write ``latest.pt`` (and
        ``step_NNNNNNN.pt`` if periodic); rank 0 only (other processes of a data-parallel run
        do nothing)."""
        if self._saved_step == self.step or not self.main:
            return
        remove_stale_temp_files(self.out, quiet=True)  # of writes killed earlier in this folder
        if refresh:
            self.refresh_ema_batchnorm()
        state = self.state(elapsed)
        ck = self.out / "checkpoints"
        save_checkpoint(ck / "latest.pt", state)
        if periodic:
            save_checkpoint(ck / f"step_{self.step:07d}.pt", state)
        self._saved_step = self.step

    # -------------------------------------------------------------------- loop
    def _log_window(self, window: "_LogWindow", elapsed: float) -> dict[str, float]:
        """Write the window's record (loss means over the global batch) and start a new
        window; returns the means."""
        means = window.close(self.dist)
        self.log.window(self.step, self.images_seen, elapsed, means, window.closed_n, window.seconds,
                        self.cfg.train.batch_size, self.lr_scale if self.cfg.train.lr_decay_start is not None else None)
        return means

    def _check_finite(self, phase: str, losses: dict) -> None:
        """Raise :class:`TrainingDiverged` if the phase's total loss is NaN or infinite — in
        every process at once when any process's is (collective call under torchrun: a
        process raising alone would leave the others waiting in the backward's all-reduce)."""
        bad = not bool(torch.isfinite(losses["total"]))
        if not self.dist.any(int(bad)):
            return
        ckpts = self.out / "checkpoints"
        if not bad:
            raise TrainingDiverged(f"non-finite {phase} loss at step {self.step + 1} in another process "
                                   f"(this is process {self.dist.rank}); the last good checkpoint is kept in {ckpts}")
        vals = {k: float(v.detach()) for k, v in losses.items()}
        where = f" in process {self.dist.rank} of {self.dist.world_size}" if self.dist.distributed else ""
        raise TrainingDiverged(f"non-finite {phase} loss at step {self.step + 1}{where}: {vals}; "
                               f"the last good checkpoint is kept in {ckpts}")

    def close(self) -> None:
        """Leave the process group of a data-parallel run (after :meth:`run`; nothing to do
        for one process). Every process calls it."""
        if self.dist.distributed and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()

    def run(self) -> TrainResult:
        """Train until ``max_steps``, ``max_minutes`` or SIGTERM/SIGINT; returns a
        :class:`TrainResult`.

        Holds the run folder's lock (:class:`semsynth.train.runfolder.RunLock`) while it
        runs and removes temp files of earlier interrupted writes. SIGTERM (what schedulers
        send before killing) or Ctrl-C ends the run after the current step with a checkpoint
        (``stop_reason`` ``"SIGTERM"``/``"SIGINT"``); a second signal stops at once.

        Raises:
            TrainingDiverged: a non-finite loss (the last good checkpoint is kept).
            RunFolderBusy: another live process holds the run folder.
            DiskFull: no space for a checkpoint (the previous one stays intact).
        """
        cfg, tc = self.cfg, self.cfg.train
        if self.main:
            self.out.mkdir(parents=True, exist_ok=True)
            self.lock.acquire()
            if self.lock.took_over:
                print(f"note: {self.out}: {self.lock.took_over}", file=sys.stderr)
        handlers = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                handlers[sig] = signal.signal(sig, self._on_signal)
        try:
            if self.main:
                remove_stale_temp_files(self.out)
                save_config(cfg, self.out / "config.yaml")
                self.log.open(self.step, tc.tensorboard)
            if not self.method.phases:
                if self.dist.distributed:
                    raise ConfigError(f"method {cfg.method!r} is fitted in one pass: run it as one process, "
                                      "without torchrun")
                return self._fit_once()
            return self._train(cfg, tc)
        finally:
            try:
                self.log.close()
                for sig, h in handlers.items():
                    signal.signal(sig, h)
            finally:
                if self.main:
                    self.lock.release()

    def _train(self, cfg: Config, tc) -> TrainResult:
        """The loop: per step, agree on stopping, set the learning rate, one optimisation
        step of every phase, EMA, then logs, grids, evaluation and checkpoints when due."""
        if tc.precision == "auto" and self.main:  # once the data check has passed
            print(f"note: train.precision auto: {self.precision} on {self.device} "
                  f"({'native' if self.precision == 'bf16' else 'no native'} bf16)", file=sys.stderr)
        t0 = time.time()
        limit_s = math.inf if tc.max_minutes is None else tc.max_minutes * 60.0
        window = _LogWindow()
        bar = self._progress_bar(limit_s)
        batches = iter(self._loader())
        stop_reason = "max_steps"
        try:
            while self.step < tc.max_steps:
                stop_reason = self._stop_reason(self.elapsed_before + time.time() - t0, limit_s)
                if stop_reason:
                    break
                self._set_learning_rates()
                window.add(self._step(*next(batches)))
                if self.step_callback is not None:
                    self.step_callback(self)
                elapsed = self.elapsed_before + time.time() - t0
                bar.advance(self.step, elapsed)
                if self.step % tc.log_every == 0 or self.step == tc.max_steps:
                    bar.show_losses(self.step, self._log_window(window, elapsed))
                self._periodic(elapsed)
            stop_reason = stop_reason or "max_steps"
        except DataError as exc:  # a file changed or broke after the data check (batch, BN refresh, grid)
            raise self._data_failure(exc, self.elapsed_before + time.time() - t0) from None
        finally:
            bar.close()
        elapsed = self.elapsed_before + time.time() - t0
        if window.n:  # the steps since the last log line (a run stopped by max_minutes)
            self._log_window(window, elapsed)
        self.save(elapsed, periodic=False)
        if self.step % tc.sample_every != 0 and self._signal is None:
            self.write_grid()
        return TrainResult(self.step, self.images_seen, elapsed, stop_reason, self.out)

    def _loader(self) -> DataLoader:
        """Batches of this process from the current step on (:class:`StepBatchSampler`)."""
        return DataLoader(_EpochIndexed(self.train_set), batch_sampler=self.batches, num_workers=self.num_workers,
                          persistent_workers=self.num_workers > 0, pin_memory=self.device.type == "cuda",
                          prefetch_factor=4 if self.num_workers > 0 else None)

    def _progress_bar(self, limit_s: float) -> "_ProgressBar":
        return _ProgressBar(self.cfg.train, limit_s, self.elapsed_before, self.step, self.progress)

    #: stop reasons agreed on by all processes (the largest code wins)
    _STOP_REASONS = ("", "max_minutes", "SIGINT", "SIGTERM")

    def _stop_reason(self, elapsed: float, limit_s: float) -> str:
        """``""`` to go on, else why to stop now — the same in every process (a signal
        wins over the time budget)."""
        code = (self._STOP_REASONS.index(signal.Signals(self._signal).name) if self._signal is not None
                else 1 if elapsed >= limit_s else 0)
        return self._STOP_REASONS[self.dist.any(code)]

    def _set_learning_rates(self) -> None:
        """The decayed learning rate of this step (``train.lr_decay_*``; no-op without)."""
        tc = self.cfg.train
        if tc.lr_decay_start is None:
            return
        spe = max(1, len(self.train_set) // tc.batch_size) if tc.lr_decay_unit == "epoch" else 1
        self.lr_scale = lr_scale(self.step, tc.lr_decay_start, tc.lr_decay_end, spe)
        for p, opt in self.optimizers.items():
            for group in opt.param_groups:
                group["lr"] = self.base_lr[p] * self.lr_scale

    def _step(self, image: torch.Tensor, label: torch.Tensor, edges: torch.Tensor | None = None) -> dict[str, float]:
        """One optimisation step on this process's batch (and its instance-edge maps, with
        ``data.instance_edges``), then the EMA update.

        Returns:
            The step's loss values (this process's).
        """
        tc, ctx = self.cfg.train, self.dist
        image = image.to(self.device, non_blocking=True)
        if tc.channels_last:
            image = image.contiguous(memory_format=torch.channels_last)
        label = label.to(self.device, non_blocking=True)
        local_b = tc.batch_size // ctx.world_size
        shard = (BatchShard(ctx.rank * local_b, local_b, tc.batch_size, self.info.semantic_nc, ctx.reduce_sum)
                 if ctx.distributed else None)
        if edges is not None:
            edges = edges.to(self.device, non_blocking=True)
        losses = train_step(self.method, self.optimizers, image, label, self.train_rng, shard=shard,
                            phase_modules=self._phase_modules, check=self._check_finite,
                            precision=self.precision, edges=edges, cudagraphs=self._cudagraphs)
        logs = {k: float(v) for k, v in losses.items()}
        self.step += 1
        self.images_seen += tc.batch_size
        ctx.broadcast_buffers(self.method.generator)  # per-process BatchNorm statistics → rank 0's
        update_ema(self.ema, self.method.generator, ema_beta(tc.ema, tc.batch_size, self.images_seen))
        return logs

    def _periodic(self, elapsed: float) -> None:
        """Grids, evaluation and checkpoints that are due after this step (after a signal:
        the checkpoint only — a scheduler's grace period is short)."""
        tc = self.cfg.train
        stopping = self._signal is not None
        grid_now = self.step % tc.sample_every == 0 and not stopping
        eval_now = (self.evaluator is not None and self.cfg.eval.every > 0
                    and self.step % self.cfg.eval.every == 0 and not stopping)
        if (grid_now or eval_now) and self.main:
            self.refresh_ema_batchnorm()
        if grid_now:
            self.write_grid()
        if eval_now:
            self._evaluate(elapsed)
        periodic = self.step % tc.checkpoint_every == 0
        if periodic or self.step % tc.latest_every == 0:
            self.save(elapsed, periodic)

    def _data_failure(self, exc: DataError, elapsed: float) -> DataError:
        """The error that stops a run when a training file cannot be read (its name is in
        the reader's message); one process saves ``latest.pt`` at the current step first (a
        batch that failed was not applied, so resuming re-reads it; when the BatchNorm
        refresh is what failed, the EMA keeps its last refreshed statistics)."""
        msg = str(exc).strip().splitlines()
        # a DataLoader worker's error arrives with its traceback: the last line is the message
        reason = msg[-1].split("DataError: ", 1)[-1] if msg else repr(exc)
        kept = ""
        if not self.dist.distributed and self.step > 0:
            try:
                self.save(elapsed, periodic=False)
            except DataError:  # the BatchNorm refresh reads training pairs too: keep the last statistics
                self.save(elapsed, periodic=False, refresh=False)
            kept = f"; {self.out / 'checkpoints' / 'latest.pt'} holds step {self.step}"
        return DataError(f"training stopped at step {self.step}: {reason}{kept}; fix or replace the file, "
                         f"then continue with --resume")

    def _fit_once(self) -> TrainResult:
        """Methods without phases (the class-mean painter): one pass over the train split."""
        t0 = time.time()
        loader = DataLoader(self.train_set, batch_size=self.cfg.train.batch_size, shuffle=False,
                            num_workers=self.num_workers)
        if self.step == 0:
            self.method.fit((x.to(self.device), y.to(self.device)) for x, y in loader)
            self.step, self.images_seen = len(loader), len(self.train_set)
            self.ema.load_state_dict(self.method.generator.state_dict())
        elapsed = self.elapsed_before + time.time() - t0
        self.log.record({"step": self.step, "images_seen": self.images_seen, "seconds": round(elapsed, 3)})
        self.save(elapsed, periodic=False)
        self.write_grid()
        return TrainResult(self.step, self.images_seen, elapsed, "fitted", self.out)

    def _evaluate(self, elapsed: float) -> None:
        metrics = self.evaluator(self)
        rec = {"step": self.step, "images_seen": self.images_seen, "seconds": round(elapsed, 3)}
        rec.update({f"eval_{k}": v for k, v in metrics.items()})
        for k, v in metrics.items():
            if isinstance(v, (int, float)):
                self.log.tb("add_scalar", f"eval/{k}", v, self.step)
        fid = metrics.get("fid")
        if fid is not None and (not self.best or fid < self.best["fid"]):
            self.best = {"fid": float(fid), "step": self.step}
            save_checkpoint(self.out / "checkpoints" / "best.pt", self.state(elapsed))
            rec["best"] = True
        self.log.record(rec)
