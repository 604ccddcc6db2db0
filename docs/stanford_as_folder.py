"""Write Stanford Background as a user's own folder dataset: photos, colour label PNGs and a
``classes.yaml`` — the input of ``configs/oasis/folder_example.yaml`` (issue 18's new-dataset check).

Usage: python docs/stanford_as_folder.py OUT_DIR [--root ../shared/datasets/stanford_background]

``OUT_DIR/<split>/images/<id>.jpg`` are links to the shared photos; ``OUT_DIR/<split>/labels/<id>.png``
are RGB PNGs in the class colours of :data:`semsynth.data.stanford_background.INFO` (unknown in
black, the don't-care class). Nothing here is committed data.
"""

import argparse
import os
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

from semsynth.config import DataConfig
from semsynth.data import build_dataset
from semsynth.data.stanford_background import INFO


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--root", default=str(Path(__file__).resolve().parents[1] / ".." / "shared" / "datasets"
                                          / "stanford_background"))
    args = ap.parse_args()
    palette = np.array(INFO.palette, np.uint8)
    for split in ("train", "val"):
        ds = build_dataset(DataConfig(dataset="stanford_background", root=args.root, cache=False), split, train=False)
        (args.out / split / "images").mkdir(parents=True, exist_ok=True)
        (args.out / split / "labels").mkdir(parents=True, exist_ok=True)
        for i, (img, _) in enumerate(ds.pairs):
            link = args.out / split / "images" / img.name
            if not link.exists():
                os.symlink(img.resolve(), link)
            Image.fromarray(palette[ds.load_label(i)]).save(args.out / split / "labels" / f"{img.stem}.png")
    classes = [{"name": n, "color": list(map(int, c))} for n, c in zip(INFO.class_names, INFO.palette)]
    (args.out / "classes.yaml").write_text(yaml.safe_dump({"name": "stanford_folder", "label_format": "color",
                                                           "ignore_index": "unknown", "classes": classes}))
    print(f"{args.out}: {len(ds.pairs)} val pairs, classes.yaml with {len(classes)} classes")


if __name__ == "__main__":
    main()
