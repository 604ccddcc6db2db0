from pathlib import Path
from semsynth.config import data_root
from semsynth.types import DatasetInfo
from semsynth.data.base import PairedDataset

CAMVID = DatasetInfo("camvid", ("Sky", "Building", "Pole", "Road", "Pavement", "Tree", "SignSymbol", "Fence", "Car", "Pedestrian", "Bicyclist", "Void"),
    ((128,128,128),(128,0,0),(192,192,128),(128,64,128),(60,40,222),(128,128,0),(192,128,128),(64,64,128),(64,0,128),(64,64,0),(0,128,192),(0,0,0)), 11)


def dataset_info(cfg):
    return CAMVID


def build_dataset(cfg, split, train, seed=0):
    root = data_root(cfg, "camvid")
    imgs = sorted((root / split).glob("*.png"))
    pairs = [(p, root / f"{split}annot" / p.name) for p in imgs]
    ds = PairedDataset(pairs, CAMVID, cfg.height, cfg.width, cfg.flip, train, seed, cfg.cache)
    ds.root = root
    return ds
