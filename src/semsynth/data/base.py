"""Minimal interim data layer (CamVid only) — replaced by the full data layer."""
from __future__ import annotations
from pathlib import Path
import numpy as np
import torch
from PIL import Image
from semsynth.types import DataError, DatasetInfo


def read_image(path):
    try:
        with Image.open(path) as im:
            im.load()
            return np.asarray(im.convert("RGB"), dtype=np.uint8)
    except OSError as exc:
        raise DataError(f"{path}: cannot read image ({exc})") from None


def read_label(path):
    try:
        with Image.open(path) as im:
            im.load()
            return np.asarray(im).astype(np.int64)
    except OSError as exc:
        raise DataError(f"{path}: cannot read label ({exc})") from None


class PairedDataset(torch.utils.data.Dataset):
    def __init__(self, pairs, info, height, width, flip, train, seed=0, cache=True):
        self.pairs, self.info, self.h, self.w = pairs, info, height, width
        self.flip, self.train, self.seed, self.epoch = flip, train, seed, 0
        self.names = [Path(a).stem for a, _ in pairs]
        self._cache = {} if cache else None

    def set_epoch(self, e):
        self.epoch = e

    def __len__(self):
        return len(self.pairs)

    def load_image(self, i):
        return read_image(self.pairs[i][0])

    def load_label(self, i):
        return read_label(self.pairs[i][1])

    def _resized(self, i):
        if self._cache is not None and i in self._cache:
            return self._cache[i]
        img = Image.fromarray(self.load_image(i)).resize((self.w, self.h), Image.BICUBIC)
        lab = Image.fromarray(self.load_label(i).astype(np.uint8)).resize((self.w, self.h), Image.NEAREST)
        out = (np.asarray(img), np.asarray(lab).astype(np.int64))
        if self._cache is not None:
            self._cache[i] = out
        return out

    def __getitem__(self, i):
        img, lab = self._resized(i)
        if self.train and self.flip:
            rng = np.random.default_rng([self.seed, self.epoch, i])
            if rng.random() < 0.5:
                img, lab = img[:, ::-1], lab[:, ::-1]
        x = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).float() / 127.5 - 1
        return x, torch.from_numpy(np.ascontiguousarray(lab))
