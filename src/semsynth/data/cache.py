"""How a split is held while training: in memory (``data.cache``) or read by workers.

A cached dataset keeps each pair *resized to the load size* (the output of
:meth:`~semsynth.data.transforms.PairedTransform.resize`: ``rh x rw x 3`` uint8 image plus an
``rh x rw`` label of 1 byte per pixel when the ids fit, else 4) after its first read; each
process that reads items (the main process, or each DataLoader worker) holds its own copy.
``data.cache: auto`` turns the cache on when

    pairs x bytes per resized pair x reading processes <= limit

with the limit ``data.cache_limit_gb`` (1e9 bytes) or, unset, half of the memory available
when the split is built (``MemAvailable`` of ``/proc/meminfo``; elsewhere the physical
memory). Without the cache, on a GPU, ``data.num_workers: auto`` reads with ``min(8, CPUs)``
worker processes and prefetch, so decoding overlaps the step; on the CPU it reads in the
training process (see :func:`resolve_num_workers`).
"""

from __future__ import annotations

import os

__all__ = ["available_memory", "cached_pair_bytes", "resolve_cache", "resolve_num_workers"]

_ARRAY_OVERHEAD = 2 * 112  # two numpy array headers per cached pair (bytes)


def available_memory() -> int:
    """Bytes of memory available to new allocations now (``MemAvailable``; else physical)."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return 0


def cached_pair_bytes(ds) -> int | None:
    """Bytes one cached pair of ``ds`` takes (see the module docstring), ``None`` when its
    transform is not a :class:`~semsynth.data.transforms.PairedTransform` (the cache then
    holds full-resolution arrays of unknown size)."""
    from semsynth.data.transforms import PairedTransform

    t = ds.transform
    if not isinstance(t, PairedTransform):
        return None
    rh = t.load_height if t.load_height is not None else t.height
    rw = t.load_width if t.load_width is not None else t.width
    label_bytes = 1 if ds.info.semantic_nc <= 256 else 4
    instance_bytes = 4 if ds.info.instance_edges else 0  # the resized instance ids (int32 at worst)
    return rh * rw * (3 + label_bytes + instance_bytes) + _ARRAY_OVERHEAD


def _gb(n: float) -> str:
    return f"{n / 1e9:.3g} GB" if n >= 1e8 else f"{n / 1e6:.3g} MB"


def resolve_cache(ds, cfg) -> tuple[bool, str]:
    """Whether ``data.cache`` is on for the built split ``ds``, and why (one line).

    Args:
        ds: the built :class:`~semsynth.data.base.PairedDataset`.
        cfg: its :class:`~semsynth.config.DataConfig` (``cache``, ``cache_limit_gb``,
            ``num_workers``).

    Returns:
        ``(on, reason)``; ``true``/``false`` are taken as given, ``auto`` by the rule of the
        module docstring.
    """
    if isinstance(cfg.cache, bool):
        return cfg.cache, f"data.cache {'on' if cfg.cache else 'off'} (set in the config)"
    per = cached_pair_bytes(ds)
    if per is None:
        return False, "data.cache auto: off (the dataset's transform is not a PairedTransform: size unknown)"
    procs = max(1, cfg.num_workers) if isinstance(cfg.num_workers, int) else 1
    need = per * len(ds) * procs
    if cfg.cache_limit_gb is not None:
        limit, what = cfg.cache_limit_gb * 1e9, "data.cache_limit_gb"
    else:
        limit, what = available_memory() / 2, "half of the available memory"
    on = need <= limit
    return on, (f"data.cache auto: {'on' if on else 'off'} ({len(ds):,} pairs x {per:,} B resized x {procs} "
                f"process{'es' if procs > 1 else ''} = {_gb(need)} {'<=' if on else '>'} {_gb(limit)}, {what})")


def resolve_num_workers(cfg, cache_on: bool, device_type: str = "cpu") -> int:
    """DataLoader workers for ``data.num_workers``: the integer given, or for ``auto`` 0 when
    the cache is on or the training runs on the CPU (its step already uses every core, so a
    worker only competes with it: docs/results.md, issue 23), else ``min(8, CPUs)``."""
    if isinstance(cfg.num_workers, int):
        return cfg.num_workers
    if cache_on or device_type == "cpu":
        return 0
    from semsynth.data.check import check_workers

    return min(8, check_workers(0))
