"""Make the figures of docs/results.md and measure local re-sampling — not a test.

Usage: python docs/figures.py CHECKPOINT_OR_EXPORT OUT_PNG [--maps 4] [--seeds 4]
Writes a grid (rows: val label maps evenly spaced over the split; columns: colourised label,
real image, EMA samples with seeds 0..k-1, then — for generators with per-pixel noise (OASIS)
— road (id 3) re-sampled with base seed 0) and prints one JSON line: for local re-sampling of
the road, the mean absolute pixel change (0-255) inside and outside the road region.
Instance-edge checkpoints get the dataset's edge maps.
"""

import argparse
import json

import numpy as np
import torch
from PIL import Image

from semsynth.data import build_dataset
from semsynth.labels import colorize, to_uint8_image
from semsynth.noise import class_region
from semsynth.sample.sampler import Sampler


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("checkpoint")
    ap.add_argument("out")
    ap.add_argument("--maps", type=int, default=4)
    ap.add_argument("--seeds", type=int, default=4)
    ap.add_argument("--resample-class", type=int, default=3)
    args = ap.parse_args()
    sampler = Sampler.from_checkpoint(args.checkpoint)
    cfg = sampler.config
    ds = build_dataset(cfg.data, cfg.data.val_split, train=False, seed=cfg.seed)
    rows, inside, outside = [], [], []
    reroll = sampler.region_resampling_unavailable() is None  # OASIS's 3D noise only
    for i in np.linspace(0, len(ds) - 1, args.maps).round().astype(int):
        image, label, *edges = ds[int(i)]
        seeds = list(range(args.seeds))
        samples = to_uint8_image(sampler.sample_many(label, seeds, edges=edges[0] if edges else None))
        local = []
        if reroll:
            region = class_region(label, args.resample_class)
            local = to_uint8_image(sampler.resample_region(label, region, 0, [100, 101]))
            diff = np.abs(local.astype(float) - samples[0].astype(float)).mean(-1)
            m = region.numpy()
            if m.any() and (~m).any():
                inside.append(diff[:, m].mean())
                outside.append(diff[:, ~m].mean())
        tiles = [colorize(label, sampler.info.palette), to_uint8_image(image)] + list(samples) + list(local)
        rows.append(np.concatenate(tiles, axis=1))
    Image.fromarray(np.concatenate(rows, axis=0)).save(args.out)
    out = {"figure": args.out}
    if inside:
        out.update({"resample_class": args.resample_class, "mean_abs_change_inside": round(float(np.mean(inside)), 2),
                    "mean_abs_change_outside": round(float(np.mean(outside)), 2)})
    print(json.dumps(out))


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    main()
