"""Does the training step wait on data? Seconds per step with real files vs synthetic tensors.

Runs the training loop (``semsynth.train.loop.Trainer``) of CONFIG for ``--steps`` steps in
each variant, alternating the variants over ``--rounds`` rounds, and prints one JSON line per
variant with the median seconds per step of the ``stats.jsonl`` windows (the first window,
with start-up, left out) and its ratio to the synthetic variant:

* ``synthetic``: the training set replaced by fixed random tensors of the same shapes (no I/O);
* ``cache on (warm)``: ``data.cache=true``, every pair read once before the timed steps;
* ``no cache, 0 workers``: every item decoded in the training process;
* ``no cache, 1 worker``: one DataLoader worker process with prefetch;
* ``no cache, workers auto``: ``data.num_workers=auto`` (see :mod:`semsynth.data.cache`).

Usage::

    python benchmarks/data_feed.py configs/oasis/tiny.yaml --steps 60 --rounds 2

Not a test; timings on a shared machine are noisy (compare within one run).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

import torch

from semsynth.config import load_config
from semsynth.train.loop import Trainer


class SyntheticPairs(torch.utils.data.Dataset):
    """``n`` fixed (image, label) pairs of one shape; the interface the loop needs."""

    def __init__(self, n: int, nc: int, h: int, w: int) -> None:
        g = torch.Generator().manual_seed(0)
        self.images = torch.rand(n, 3, h, w, generator=g) * 2 - 1
        self.labels = torch.randint(0, nc, (n, h, w), generator=g)

    def __len__(self) -> int:
        return len(self.images)

    def set_epoch(self, epoch: int) -> None:
        pass

    def __getitem__(self, i: int):
        return self.images[i], self.labels[i]


def run(config: str, variant: str, steps: int, sets: list[str]) -> list[float]:
    extra = {"synthetic": ["data.cache=true", "data.num_workers=0"],
             "cache on (warm)": ["data.cache=true", "data.num_workers=0"],
             "no cache, 0 workers": ["data.cache=false", "data.num_workers=0"],
             "no cache, 1 worker": ["data.cache=false", "data.num_workers=1"],
             "no cache, workers auto": ["data.cache=false", "data.num_workers=auto"]}[variant]
    cfg = load_config(config, [f"train.max_steps={steps}", "train.log_every=10", "train.sample_every=100000",
                               "train.checkpoint_every=100000", "train.latest_every=100000",
                               "train.tensorboard=false", *sets, *extra])
    with tempfile.TemporaryDirectory() as tmp:
        tr = Trainer(cfg, Path(tmp) / "run", progress=False)
        if variant == "synthetic":
            tr.train_set = SyntheticPairs(len(tr.train_set), tr.info.semantic_nc, cfg.data.height, cfg.data.width)
        elif variant == "cache on (warm)":
            for i in range(len(tr.train_set)):
                tr.train_set[i]
        tr.run()
        tr.close()
        rows = [json.loads(line) for line in (Path(tmp) / "run" / "stats.jsonl").read_text().splitlines()]
    return [r["sec_per_step"] for r in rows if "sec_per_step" in r][1:]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("config")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = ap.parse_args()
    variants = ["synthetic", "cache on (warm)", "no cache, 0 workers", "no cache, 1 worker", "no cache, workers auto"]
    times: dict[str, list[float]] = {v: [] for v in variants}
    for _ in range(args.rounds):
        for v in variants:
            times[v] += run(args.config, v, args.steps, args.set)
    base = statistics.median(times["synthetic"])
    for v in variants:
        med = statistics.median(times[v])
        print(json.dumps({"variant": v, "sec_per_step_median": round(med, 4), "vs_synthetic": round(med / base, 3),
                          "windows": len(times[v])}))


if __name__ == "__main__":
    main()
