"""Side-by-side samples of several runs on the same val label maps — not a test.

Usage: python docs/compare_figure.py OUT.jpg RUN [RUN ...] [--maps 3] [--seed 0]
Each RUN is a checkpoint or export folder (all at the same resolution). Writes one row per
val label map (evenly spaced over the split): colourised label | real image | one image per
RUN, in the order given, generated with the same seed (the EMA generator; deterministic
methods ignore the seed). Prints one JSON line with the column order.
"""

import argparse
import json

import numpy as np
import torch
from PIL import Image

from semsynth.data import build_dataset
from semsynth.labels import colorize, to_uint8_image
from semsynth.sample.sampler import Sampler


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--maps", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    samplers = [Sampler.from_checkpoint(r) for r in args.runs]
    sizes = {(s.height, s.width) for s in samplers}
    if len(sizes) != 1:
        raise SystemExit(f"runs have different resolutions {sorted(sizes)}: compare only at equal resolution")
    cfg = samplers[0].config
    ds = build_dataset(cfg.data, cfg.data.val_split, train=False, seed=cfg.seed)
    rows = []
    for i in np.linspace(0, len(ds) - 1, args.maps).round().astype(int):
        image, label = ds[int(i)]
        tiles = [colorize(label, samplers[0].info.palette), to_uint8_image(image)]
        for s in samplers:
            tiles.append(to_uint8_image(s.generate(label[None], seeds=[args.seed]))[0])
        gap = np.full((tiles[0].shape[0], 2, 3), 255, np.uint8)
        rows.append(np.concatenate(sum(([t, gap] for t in tiles), [])[:-1], axis=1))
    Image.fromarray(np.concatenate(rows, axis=0)).save(args.out, quality=85)
    print(json.dumps({"figure": args.out, "columns": ["label", "real"] + args.runs}))


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    main()
