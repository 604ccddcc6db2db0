"""Images/s of sampling (EMA generator, eval mode, no gradients) — not a test.

Usage: python benchmarks/sample.py CONFIG [--batch-size B] [--batches N] [--set k=v ...]
Prints one JSON line. Random weights and label maps of the config's size (compute only).
"""

import argparse
import json
import time

import torch

from semsynth.config import load_config
from semsynth.data import dataset_info
from semsynth.model.build import build_method, select_device
from semsynth.sample.sampler import Sampler


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("config")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--batches", type=int, default=5)
    ap.add_argument("--set", action="append", default=[])
    ap.add_argument("--dense", action="store_true",
                    help="OASIS: no noise factoring in the SPADE convs (the dense computation)")
    args = ap.parse_args()
    cfg = load_config(args.config, args.set)
    dev = select_device(cfg.train.device)
    info = dataset_info(cfg.data)
    torch.manual_seed(0)
    gen = build_method(cfg, info).generator
    if args.dense:
        gen.factored_inference = False
    sampler = Sampler(gen, info, cfg.data.height, cfg.data.width, dev)
    b, h, w = args.batch_size, cfg.data.height, cfg.data.width
    label = torch.randint(0, info.semantic_nc, (b, h // 8, w // 8)).repeat_interleave(8, 1).repeat_interleave(8, 2)
    sampler.generate(label, seeds=list(range(b)), batch_size=b)  # warm-up
    t = time.perf_counter()
    for k in range(args.batches):
        sampler.generate(label, seeds=list(range(k * b, (k + 1) * b)), batch_size=b)
    dt = time.perf_counter() - t
    print(json.dumps({"benchmark": "sample", "config": args.config, "device": str(dev), "batch_size": b,
                      "height": h, "width": w, "threads": torch.get_num_threads(),
                      "dense": args.dense, "images_per_s": round(b * args.batches / dt, 2),
                      "sec_per_image": round(dt / (b * args.batches), 3)}))


if __name__ == "__main__":
    main()
