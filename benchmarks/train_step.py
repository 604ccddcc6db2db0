"""Images/s of one training step (every phase: e.g. G then D) of any method — not a test.

Usage: python benchmarks/train_step.py CONFIG [--batch-size B] [--steps N] [--set k=v ...]
Prints one JSON line. Uses random label maps of the config's size (compute only, no I/O).
"""

import argparse
import json
import time

import torch

from semsynth.config import load_config
from semsynth.data import dataset_info
from semsynth.train.loop import build_method, select_device


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("config")
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--set", action="append", default=[])
    args = ap.parse_args()
    cfg = load_config(args.config, args.set)
    dev = select_device(cfg.train.device)
    info = dataset_info(cfg.data)
    b = args.batch_size or cfg.train.batch_size
    torch.manual_seed(0)
    method = build_method(cfg, info).to(dev)
    if not method.phases:
        print(json.dumps({"benchmark": "train_step", "config": args.config, "method": cfg.method,
                          "note": "fitted in one pass (no training step)", "parameters": method.parameter_counts()}))
        return
    opts = {p: torch.optim.Adam(method.phase_parameters(p), lr=method.phase_lr(p, cfg.train),
                                betas=tuple(float(b) for b in cfg.train.betas)) for p in method.phases}
    rng = torch.Generator().manual_seed(0)
    h, w = cfg.data.height, cfg.data.width
    label = torch.randint(0, info.semantic_nc, (b, h // 8, w // 8))
    label = label.repeat_interleave(8, 1).repeat_interleave(8, 2).to(dev)
    image = torch.rand(b, 3, h, w, device=dev) * 2 - 1

    def step():
        for phase in method.phases:
            for p in method.parameters():
                p.requires_grad_(False)
            for p in method.phase_parameters(phase):
                p.requires_grad_(True)
            opts[phase].zero_grad(set_to_none=True)
            method.phase_losses(phase, image, label, rng)["total"].backward()
            opts[phase].step()

    for _ in range(args.warmup):
        step()
    if dev.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(args.steps):
        step()
    if dev.type == "cuda":
        torch.cuda.synchronize()
    dt = time.perf_counter() - t
    print(json.dumps({"benchmark": "train_step", "config": args.config, "method": cfg.method,
                      "device": str(dev), "batch_size": b,
                      "height": h, "width": w, "threads": torch.get_num_threads(),
                      "sec_per_step": round(dt / args.steps, 4), "images_per_s": round(b * args.steps / dt, 2),
                      "parameters": method.parameter_counts()}))


if __name__ == "__main__":
    main()
