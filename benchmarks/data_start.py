"""Time from `semsynth train` to the first step on a big generated folder dataset (issue 23).

Generates (once) a folder dataset of ``--pairs`` small pairs (``--size`` px square PNGs: a
photo-like gradient with noise and an id label map of 3 classes; 100 val pairs), then, for
each ``--workers`` count, in a fresh ``SEMSYNTH_CACHE`` and run folder, runs the tiny OASIS
in a child process and reports the seconds from process start to the end of the first step
and the peak resident memory (the process, and its worker processes):

1. first start (every pair is read by the data check; manifest written);
2. ``--resume`` with nothing changed (every pair trusted from the manifest);
3. ``--resume`` after ``--changed`` label files were rewritten (only those are read again).

Usage::

    python benchmarks/data_start.py --root /tmp/big_folder --pairs 100000 --workers 1 2
    python benchmarks/data_start.py --root ../shared/datasets/camvid --dataset camvid --workers 1 2

Nothing here is committed data: the dataset is written under ``--root``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, resource, sys, time
t0 = time.time()
from semsynth.config import load_config
from semsynth.train.loop import Trainer
root, out, workers, steps, resume, size, dataset = sys.argv[1:8]
sets = [f"data.dataset={dataset}", f"data.root={root}", f"data.height={size}", f"data.width={size}",
        f"train.max_steps={steps}", "train.sample_every=100000", "train.checkpoint_every=100000",
        "train.latest_every=1", "train.tensorboard=false", "train.threads=1"]
if workers != "-":  # "-": a source tree from before issue 23 (no such key)
    sets.append(f"data.check_workers={workers}")
cfg = load_config(sys.argv[8], sets)
marks = {}
def cb(tr):
    marks.setdefault("first_step_s", time.time() - t0)
t_init = time.time()
tr = Trainer(cfg, out, resume=resume == "1", progress=False, step_callback=cb)
marks["init_s"] = time.time() - t_init
marks["import_s"] = t_init - t0
tr.run(); tr.close()
ru, rc = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
print(json.dumps({**{k: round(v, 2) for k, v in marks.items()}, "peak_rss_mb": round(ru.ru_maxrss / 1024),
                  "peak_rss_children_mb": round(rc.ru_maxrss / 1024),
                  "cache": getattr(tr.train_set, "cache_reason", str(tr.train_set.cache))}))
"""


def make_dataset(root: Path, pairs: int, size: int) -> None:
    """Write the folder dataset (skipped when ``root/classes.yaml`` exists)."""
    from PIL import Image

    if (root / "classes.yaml").is_file():
        return
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size]
    t0 = time.time()
    for split, n in (("train", pairs), ("val", 100)):
        (root / split / "images").mkdir(parents=True, exist_ok=True)
        (root / split / "labels").mkdir(parents=True, exist_ok=True)
        for k in range(n):
            base = rng.integers(0, 200, 3)
            img = (base + (yy[..., None] + xx[..., None]) + rng.integers(0, 24, (size, size, 3))).clip(0, 255)
            lab = ((yy > size // 2).astype(np.uint8) + (xx > (k % size)).astype(np.uint8))
            Image.fromarray(img.astype(np.uint8)).save(root / split / "images" / f"{k:06d}.png")
            Image.fromarray(lab).save(root / split / "labels" / f"{k:06d}.png")
    (root / "classes.yaml").write_text("classes: [sky, building, road]\n")
    print(f"# dataset: {pairs} + 100 pairs of {size}x{size} in {time.time() - t0:.0f} s", file=sys.stderr)


def child(root: Path, out: Path, workers, steps: int, resume: bool, size: int, cache: Path,
          src: Path = ROOT, dataset: str = "folder") -> dict:
    env = dict(os.environ, SEMSYNTH_CACHE=str(cache), PYTHONPATH=str(src / "src"))
    proc = subprocess.run([sys.executable, "-c", CHILD, str(root), str(out), str(workers), str(steps),
                           "1" if resume else "0", str(size), dataset, str(src / "configs" / "oasis" / "tiny.yaml")],
                          capture_output=True, text=True, env=env)
    if proc.returncode:
        raise SystemExit(proc.stderr[-3000:])
    rec = json.loads(proc.stdout.strip().splitlines()[-1])
    rec["check"] = next((ln[6:] for ln in proc.stderr.splitlines() if "data check [" in ln), "")
    return rec


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, required=True)
    ap.add_argument("--pairs", type=int, default=100_000)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--changed", type=int, default=100)
    ap.add_argument("--dataset", default="folder",
                    help="another registered dataset already at --root (e.g. camvid, cityscapes): nothing generated")
    ap.add_argument("--old-src", type=Path, default=None,
                    help="also time a checkout from before issue 23 (e.g. a git worktree): first start and resume")
    args = ap.parse_args()
    if args.dataset == "folder":
        make_dataset(args.root, args.pairs, args.size)
    if args.old_src is not None:
        tmp = Path(tempfile.mkdtemp(prefix="data_start_old_"))
        try:
            for what, steps, resume in (("first start", 1, False), ("resume, nothing changed", 2, True)):
                rec = child(args.root, tmp / "run", "-", steps, resume, args.size, tmp / "cache", args.old_src,
                            args.dataset)
                print(json.dumps({"dataset": args.dataset, "code": "before issue 23", "run": what, **rec}))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    for w in args.workers:
        tmp = Path(tempfile.mkdtemp(prefix="data_start_"))
        try:
            cache, out = tmp / "cache", tmp / "run"
            rows = {"first start": child(args.root, out, w, 1, False, args.size, cache, dataset=args.dataset)}
            rows["resume, nothing changed"] = child(args.root, out, w, 2, True, args.size, cache, dataset=args.dataset)
            if args.dataset == "folder":
                labels = sorted((args.root / "train" / "labels").iterdir())[: args.changed]
                for p in labels:  # rewritten: same content, new modification time
                    st = p.stat()
                    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
                rows[f"resume, {args.changed} files changed"] = child(args.root, out, w, 3, True, args.size, cache)
            for what, rec in rows.items():
                print(json.dumps({"dataset": args.dataset, "check_workers": w, "run": what, **rec}))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
