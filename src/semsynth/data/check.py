"""``semsynth data check CONFIG``: read every pair of every split once, and remember it.

``semsynth train`` runs the same check before it writes anything. For each split (the
config's train and val splits): the number of pairs, the image sizes found, the share of
pixels per class, the don't-care share, the colour-label pixels that were snapped (folder
dataset with ``color_tolerance``), and every problem (unreadable file, ids out of range,
unknown colours, image/label size mismatch) with its message. The check goes on after a
problem, so one run lists them all.

**Done once.** Each split's result is kept in a manifest,
``$SEMSYNTH_CACHE/data_check/<dataset>-<split>-<key>.json`` (``SEMSYNTH_CACHE`` defaults to
``~/.cache/semsynth``): per pair the two files' sizes and modification times (ns) and what
their check found (size, per-class pixel counts, snapped pixels, problem). A later check
re-reads only pairs that are new or whose files changed (size or mtime), trusts the rest,
and says how many it trusted and how many pairs of the manifest are gone. ``<key>`` hashes
what decides the outcome of reading a pair: the dataset, its root folder, the split and the
label space (class names, colours, don't-care id, options such as ``color_tolerance``), so
editing ``classes.yaml`` starts a new manifest. The output size (``data.height``/``width``)
is not part of it: the check reads full-resolution files.

**In parallel.** Pairs to read are split into chunks over ``workers`` processes (forked:
the dataset object is inherited, not pickled); each returns plain results.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import sys
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from semsynth.types import SemsynthError

__all__ = ["MANIFEST_VERSION", "check_data", "check_split", "check_workers", "format_report", "manifest_path",
           "snap_note", "summary_line"]

#: Bumped when what a manifest entry means changes: older manifests are then ignored.
MANIFEST_VERSION = 1

_CHUNK = 32  # pairs per task sent to a worker process


def check_workers(requested: int = 0) -> int:
    """Worker processes for the check: ``requested`` if > 0, else the CPUs this process may
    use (``os.sched_getaffinity``, or ``os.cpu_count()``).

    Raises:
        ValueError: ``requested`` < 0.
    """
    if requested < 0:
        raise ValueError(f"data check workers must be >= 0 (0 = all CPUs), got {requested}")
    if requested:
        return int(requested)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


# info.extra entries that do not change how a pair is read (a path: the same folder may be
# named relatively or absolutely)
_NOT_KEYED = ("classes_file", "title")


def _label_space_key(ds, split: str) -> str:
    info = ds.info
    space = {
        "version": MANIFEST_VERSION, "dataset": info.name, "class": type(ds).__qualname__,
        "root": str(Path(ds.root).resolve()) if ds.root is not None else None, "split": split,
        "names": list(info.class_names), "ignore_index": info.ignore_index,
        "palette": [list(c) for c in info.palette] if getattr(info, "palette", None) else None,
        "extra": {k: repr(v) for k, v in sorted((info.extra or {}).items()) if k not in _NOT_KEYED},
        "lut": None if getattr(ds, "lut", None) is None else hashlib.sha256(np.asarray(ds.lut).tobytes()).hexdigest(),
    }
    return hashlib.sha256(json.dumps(space, sort_keys=True, default=repr).encode()).hexdigest()[:16]


def manifest_path(ds, split: str) -> Path:
    """Where the manifest of dataset ``ds``'s ``split`` is kept (see the module docstring)."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in f"{ds.info.name}-{split}")
    from semsynth.config import cache_root

    return cache_root() / "data_check" / f"{safe}-{_label_space_key(ds, split)}.json"


def _pair_key(ds, i: int, prefix: str) -> str:
    """``"image|label"``, both relative to the dataset root (so a relative ``data.root``
    given from another folder finds the same entries)."""
    a, b = (str(p) for p in ds.pairs[i])
    n = len(prefix)
    return f"{a[n:] if prefix and a.startswith(prefix) else a}|{b[n:] if prefix and b.startswith(prefix) else b}"


def _stat(ds, i: int) -> list[int] | None:
    """``[image size, image mtime_ns, label size, label mtime_ns]``, ``None`` if a file is gone."""
    out = []
    for p in ds.pairs[i]:
        try:
            st = os.stat(p)
        except OSError:
            return None
        out += [int(st.st_size), int(st.st_mtime_ns)]
    return out


def _check_pair(ds, i: int, nc: int) -> dict:
    """Read pair ``i`` (nothing kept in the dataset's cache) and describe it."""
    snapped = getattr(ds, "snapped", None)
    try:
        img, lab = ds.load_pair(i, _keep=False)
    except SemsynthError as exc:
        return {"problem": str(exc)}
    counts = np.bincount(np.asarray(lab, np.int64).ravel(), minlength=nc)
    nz = np.flatnonzero(counts)
    n_snapped = int(snapped.pop(str(ds.pairs[i][1]), 0)) if isinstance(snapped, dict) else 0
    return {"size": f"{img.shape[1]}x{img.shape[0]}", "counts": [[int(c), int(counts[c])] for c in nz],
            "snapped": n_snapped, "problem": None}


_WORKER_DS = None


def _init_worker(ds) -> None:
    global _WORKER_DS
    _WORKER_DS = ds  # a forked worker reads with PIL and NumPy only: it never enters torch's thread pool


def _check_chunk(indices: list[int]) -> list[tuple[int, dict]]:
    ds = _WORKER_DS
    return [(i, _check_pair(ds, i, ds.info.semantic_nc)) for i in indices]


def _read_manifest(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("version") != MANIFEST_VERSION or not isinstance(data.get("pairs"), dict):
        return {}
    return data["pairs"]


def _run_checks(ds, todo: list[int], workers: int, progress: bool, desc: str) -> dict[int, dict]:
    from tqdm import tqdm

    out: dict[int, dict] = {}
    bar = tqdm(total=len(todo), disable=not progress, desc=desc, unit="pair", dynamic_ncols=True, file=sys.stderr)
    try:
        if workers <= 1 or len(todo) <= _CHUNK:
            for i in todo:
                out[i] = _check_pair(ds, i, ds.info.semantic_nc)
                bar.update(1)
            return out
        methods = multiprocessing.get_all_start_methods()
        ctx = multiprocessing.get_context("fork" if "fork" in methods else None)
        chunks = [todo[k:k + _CHUNK] for k in range(0, len(todo), _CHUNK)]
        with ProcessPoolExecutor(max_workers=min(workers, len(chunks)), mp_context=ctx,
                                 initializer=_init_worker, initargs=(ds,)) as pool:
            for res in pool.map(_check_chunk, chunks):
                for i, rec in res:
                    out[i] = rec
                bar.update(len(res))
        return out
    finally:
        bar.close()


def check_split(ds, split: str, *, workers: int = 0, progress: bool = False, write: bool = True,
                trust: bool = True) -> dict:
    """Check one built dataset split, using and updating its manifest.

    Args:
        ds: a :class:`~semsynth.data.base.PairedDataset`.
        split: its split name (part of the manifest's key and of messages).
        workers: processes that read pairs (0 = all CPUs, 1 = this process).
        progress: show a tqdm bar on stderr while pairs are read.
        write: update the manifest file (``False``: read it only).
        trust: take unchanged pairs from the manifest (``False``: read every pair again).

    Returns:
        ``{"pairs", "sizes", "class_share", "dont_care_share", "snapped_pixels",
        "snapped_per_file", "problems", "checked", "trusted", "removed", "removed_examples",
        "manifest", "seconds"}``: shares are fractions (0-1) of the split's label pixels;
        ``checked``/``trusted``: pairs read now / taken from the manifest; ``removed``: pairs
        of the manifest whose files are no longer in the split.
    """
    t0 = time.time()
    info = ds.info
    path = manifest_path(ds, split)
    old = _read_manifest(path) if trust else {}
    prefix = "" if ds.root is None else str(ds.root).rstrip(os.sep) + os.sep
    keys = [_pair_key(ds, i, prefix) for i in range(len(ds))]
    stats = [_stat(ds, i) for i in range(len(ds))]
    entries: dict[str, dict] = {}
    todo = []
    for i, (k, st) in enumerate(zip(keys, stats)):
        prev = old.get(k)
        if st is not None and isinstance(prev, dict) and prev.get("stat") == st:
            entries[k] = prev
        else:
            todo.append(i)
    fresh = _run_checks(ds, todo, check_workers(workers), progress, f"data check [{split}]")
    for i in todo:
        rec = dict(fresh[i])
        rec["stat"] = stats[i] if stats[i] is not None else _stat(ds, i)
        entries[keys[i]] = rec
    current = set(keys)
    gone = sorted(k for k in old if k not in current)

    counts = np.zeros(info.semantic_nc, np.int64)
    sizes: Counter = Counter()
    problems, snapped_per_file = [], {}
    for i, k in enumerate(keys):
        rec = entries[k]
        if rec.get("problem"):
            problems.append(rec["problem"])
            continue
        sizes[rec["size"]] += 1
        for c, n in rec["counts"]:
            if 0 <= c < info.semantic_nc:
                counts[c] += n
        if rec.get("snapped"):
            snapped_per_file[Path(ds.pairs[i][1]).name] = int(rec["snapped"])
    total = max(int(counts.sum()), 1)
    if write and (todo or gone or not path.is_file()):
        from semsynth.fileio import atomic_write_bytes

        try:
            blob = {"version": MANIFEST_VERSION, "dataset": info.name, "split": split,
                    "root": None if ds.root is None else str(ds.root), "pairs": entries}
            atomic_write_bytes(path, json.dumps(blob, separators=(",", ":")).encode())
        except OSError as exc:  # a read-only cache costs speed, not correctness
            print(f"note: data check manifest not written ({exc})", file=sys.stderr)
    return {
        "pairs": len(ds),
        "sizes": dict(sizes.most_common()),
        "class_share": {info.class_names[c]: counts[c] / total for c in range(info.semantic_nc) if c != info.ignore_index},
        "dont_care_share": 0.0 if info.ignore_index is None else counts[info.ignore_index] / total,
        "snapped_pixels": int(sum(snapped_per_file.values())),
        "snapped_per_file": dict(sorted(snapped_per_file.items(), key=lambda kv: -kv[1])),
        "problems": problems,
        "checked": len(todo), "trusted": len(keys) - len(todo), "removed": len(gone),
        "removed_examples": [k.split("|")[0] for k in gone[:5]],
        "manifest": str(path), "seconds": round(time.time() - t0, 3),
    }


def check_data(cfg, splits=None, datasets: dict | None = None, *, workers: int | None = None,
               progress: bool = False, write: bool = True, trust: bool = True) -> dict:
    """Check the splits of ``cfg.data`` (each through its manifest: see the module docstring).

    Args:
        cfg: a run :class:`semsynth.config.Config`.
        splits: split names (default: ``cfg.data.train_split`` and ``cfg.data.val_split``).
        datasets: already built datasets by split name, used instead of new ones (nothing read
            by the check is kept in their caches).
        workers: processes that read pairs; ``None``: ``cfg.data.check_workers`` (0 = all CPUs).
        progress: tqdm bars on stderr.
        write: update the manifests.
        trust: take unchanged pairs from the manifests (``False``: read every pair again).

    Returns:
        ``{"dataset", "classes", "ignore_index", "splits": {name: ...}}`` with one
        :func:`check_split` record per split; a split that cannot be built (missing folder,
        unpaired files) has ``pairs`` 0 and its error in ``problems``.
    """
    from semsynth.data import build_dataset, dataset_info
    from semsynth.data.base import gc_paused

    info = dataset_info(cfg.data)
    n_workers = cfg.data.check_workers if workers is None else workers
    out = {"dataset": info.name, "classes": list(info.class_names), "ignore_index": info.ignore_index, "splits": {}}
    for split in splits or (cfg.data.train_split, cfg.data.val_split):
        try:
            ds = datasets[split] if datasets and split in datasets else build_dataset(cfg.data, split, train=False,
                                                                                     seed=cfg.seed)
        except SemsynthError as exc:
            out["splits"][split] = {"pairs": 0, "sizes": {}, "class_share": {}, "dont_care_share": 0.0,
                                    "snapped_pixels": 0, "snapped_per_file": {}, "problems": [str(exc)],
                                    "checked": 0, "trusted": 0, "removed": 0, "removed_examples": [],
                                    "manifest": None, "seconds": 0.0}
            continue
        with gc_paused():
            out["splits"][split] = check_split(ds, split, workers=n_workers, progress=progress, write=write,
                                                 trust=trust)
    return out


def summary_line(split: str, rec: dict) -> str:
    """One line on how a split was checked: pairs read, trusted from the manifest, removed."""
    gone = ""
    if rec.get("removed"):
        ex = ", ".join(Path(p).name for p in rec["removed_examples"][:3])
        gone = f"; {rec['removed']} pair(s) of the manifest are gone ({ex}{', ...' if rec['removed'] > 3 else ''})"
    return (f"data check [{split}]: {rec['pairs']} pairs, {rec.get('checked', 0)} read, {rec.get('trusted', 0)} "
            f"trusted from the manifest{gone} ({rec.get('seconds', 0):.1f} s)")


def snap_note(rep: dict, extra: dict | None = None) -> str | None:
    """One line on the snapped colour-label pixels of a :func:`check_data` report, or ``None``.

    ``extra``: the dataset's ``info.extra`` (``color_tolerance``, ``unmatched``) for the wording.
    """
    parts = [(s, r) for s, r in rep["splits"].items() if r.get("snapped_pixels")]
    if not parts:
        return None
    extra = extra or {}
    how = "snapped to the nearest class colour" + (" or set to don't-care" if extra.get("unmatched") == "ignore" else "")
    tol = extra.get("color_tolerance")
    lines = []
    for split, r in parts:
        worst, n = next(iter(r["snapped_per_file"].items()))
        lines.append(f"[{split}] {r['snapped_pixels']:,} label pixels in {len(r['snapped_per_file'])} of {r['pairs']} "
                     f"files were not exact class colours and were {how}"
                     + (f" (color_tolerance {tol:g})" if isinstance(tol, (int, float)) else "")
                     + f"; most in {worst} ({n:,} px)")
    return "; ".join(lines)


def format_report(rep: dict) -> str:
    """The report of :func:`check_data` as text: one table per split, then the problems."""
    lines = [f"dataset {rep['dataset']}: {len(rep['classes'])} ids, don't-care id {rep['ignore_index']}"]
    for split, r in rep["splits"].items():
        sizes = ", ".join(f"{k} ({v})" for k, v in list(r["sizes"].items())[:4]) or "-"
        lines.append(f"\n[{split}] pairs {r['pairs']}  sizes {sizes}  don't-care {100 * r['dont_care_share']:.2f}%  "
                     f"snapped pixels {r['snapped_pixels']:,}  problems {len(r['problems'])}")
        if r.get("manifest"):
            lines.append("  " + summary_line(split, r) + f"; manifest {r['manifest']}")
        lines.append(f"  {'class':<24} {'pixel share':>11}")
        for name, share in r["class_share"].items():
            lines.append(f"  {name:<24} {100 * share:>10.2f}%")
        top = list(r.get("snapped_per_file", {}).items())
        if top:
            lines.append("  snapped pixels per file: " + ", ".join(f"{k} {v:,}" for k, v in top[:8])
                         + (f", ... ({len(top)} files)" if len(top) > 8 else ""))
        for p in r["problems"]:
            lines.append(f"  PROBLEM: {p}")
    return "\n".join(lines)
