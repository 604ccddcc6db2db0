"""Seconds per image of the evaluation stages on CamVid val — not a test.

Usage: python benchmarks/eval.py CHECKPOINT_OR_EXPORT [--limit N] [--device cpu]
Prints one JSON line: generation, Inception features and ESPNet judge, seconds per image.
"""

import argparse
import json
import time

import torch

from semsynth.data import build_dataset
from semsynth.eval.evaluate import load_judge, split_images
from semsynth.eval.fid import inception_features, load_inception
from semsynth.sample.sampler import Sampler


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("checkpoint")
    ap.add_argument("--limit", type=int, default=20)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    dev = torch.device(args.device)
    sampler = Sampler.from_checkpoint(args.checkpoint, device=dev)
    cfg = sampler.config
    ds = build_dataset(cfg.data, cfg.data.val_split, train=False, seed=cfg.seed)
    idx, _, labels = split_images(ds, args.limit)
    n = len(idx)
    t = time.perf_counter()
    fake = sampler.generate(labels.to(dev), seeds=idx)
    t_gen = (time.perf_counter() - t) / n
    model = load_inception(dev)
    t = time.perf_counter()
    inception_features(fake, model, device=dev)
    t_inc = (time.perf_counter() - t) / n
    judge = load_judge(sampler.info, dev)
    t = time.perf_counter()
    judge.predict(fake)
    t_seg = (time.perf_counter() - t) / n
    print(json.dumps({"benchmark": "eval", "device": str(dev), "images": n,
                      "resolution": [cfg.data.height, cfg.data.width], "threads": torch.get_num_threads(),
                      "sec_per_image": {"generation": round(t_gen, 4), "inception": round(t_inc, 4),
                                        "espnet": round(t_seg, 4)}}))


if __name__ == "__main__":
    main()
