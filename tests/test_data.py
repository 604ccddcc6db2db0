"""Tests of the data layer (semsynth.data) on the shared real files and tiny generated fixtures."""

from __future__ import annotations

import functools
import inspect
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from semsynth.config import DataConfig
from semsynth.data import build_dataset, dataset_info
from semsynth.data.base import PairedDataset, color_map, describe_ids, read_image, read_label
from semsynth.data.transforms import PairedTransform
from semsynth.registry import get_dataset
from semsynth.types import ConfigError, DataError

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared" / "datasets"
CAMVID = SHARED / "camvid"
STANFORD = SHARED / "stanford_background"
SAMPLES = SHARED / "format_samples"



def needs_shared(fn):
    """Mark a test on the shared real data: it fails (never skips) when the data is missing."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        for d in (CAMVID, STANFORD, SAMPLES):
            assert d.is_dir(), f"shared dataset folder missing: {d}"
        return fn(*args, **kwargs)

    return wrapper


def cfg_for(name: str, root, **kw) -> DataConfig:
    return DataConfig(dataset=name, root=str(root), **kw)


def check_item(ds, i: int, h: int, w: int) -> torch.Tensor:
    x, y = ds[i]
    assert x.shape == (3, h, w) and x.dtype == torch.float32
    assert -1.0 <= float(x.min()) and float(x.max()) <= 1.0
    assert y.shape == (h, w) and y.dtype == torch.int64
    assert 0 <= int(y.min()) and int(y.max()) < ds.info.semantic_nc
    return y


def raw(path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im).astype(np.int64)


# ----------------------------------------------------------------------------- real data


@needs_shared
def test_camvid_counts_items_and_void():
    cfg = cfg_for("camvid", CAMVID, height=48, width=64)
    info = dataset_info(cfg)
    assert info.semantic_nc == 12 and info.ignore_index == 11 and info.class_names[11] == "Void"
    assert info.class_names[:3] == ("Sky", "Building", "Pole") and info.palette[4] == (60, 40, 222)
    tr, va = build_dataset(cfg, "train", train=True), build_dataset(cfg, "val", train=False)
    assert len(tr) == 367 and len(va) == 101
    assert [p[0].name for p in tr.pairs] == sorted(p[0].name for p in tr.pairs)
    assert all(a.name == b.name for a, b in va.pairs) and va.names[0] == va.pairs[0][0].stem
    for i in (0, 100):
        check_item(tr, i, 48, 64)
    lab = va.load_label(0)
    assert lab.shape == (360, 480) and lab.dtype == np.int64
    assert np.array_equal(lab, raw(va.pairs[0][1]))  # ids are the file values; 11 = void stays 11
    assert (lab == 11).any() and lab.max() == 11
    img = va.load_image(0)
    assert img.shape == (360, 480, 3) and img.dtype == np.uint8


def interim_item(ds, i: int, h: int, w: int, flip: bool):
    """The interim loader's pipeline (commit 7561891), which a running experiment relies on."""
    img = Image.fromarray(read_image(ds.pairs[i][0])).resize((w, h), Image.BICUBIC)
    lab = Image.fromarray(raw(ds.pairs[i][1]).astype(np.uint8)).resize((w, h), Image.NEAREST)
    img, lab = np.asarray(img), np.asarray(lab).astype(np.int64)
    if ds.train and flip and np.random.default_rng([ds.seed, ds.epoch, i]).random() < 0.5:
        img, lab = img[:, ::-1], lab[:, ::-1]
    x = torch.from_numpy(np.array(img)).permute(2, 0, 1).float() / 127.5 - 1
    return x, torch.from_numpy(np.ascontiguousarray(lab))


@needs_shared
def test_camvid_matches_interim_pipeline():
    # bit-identical items: bicubic/nearest resize, then flip p=0.5 from default_rng([seed, epoch, i])
    flips = set()
    for cache in (False, True):
        cfg = cfg_for("camvid", CAMVID, height=96, width=128, cache=cache)
        ds = build_dataset(cfg, "train", train=True, seed=7)
        ds.set_epoch(3)
        for i in range(6):
            for _ in range(2):  # second call served from the cache when cache=True
                x, y = ds[i]
                xr, yr = interim_item(ds, i, 96, 128, True)
                assert torch.equal(x, xr) and torch.equal(y, yr), (cache, i)
            flips.add(bool(np.random.default_rng([7, 3, i]).random() < 0.5))
    assert flips == {True, False}
    # native size: no resize, the image is exactly uint8 / 127.5 - 1
    ds = build_dataset(cfg_for("camvid", CAMVID, height=360, width=480, flip=False), "val", train=True)
    x, y = ds[0]
    ref = torch.from_numpy(ds.load_image(0)).permute(2, 0, 1).float() / 127.5 - 1
    assert torch.equal(x, ref) and torch.equal(y, torch.from_numpy(ds.load_label(0)))


@needs_shared
def test_stanford_splits_and_unknown_to_8():
    cfg = cfg_for("stanford_background", STANFORD, height=48, width=64)
    tr, va = build_dataset(cfg, "train", train=True), build_dataset(cfg, "val", train=False)
    assert len(tr) == 572 and len(va) == 143
    assert set(va.names) == set((STANFORD / "splits" / "val.txt").read_text().split())
    assert va.names == sorted(va.names) and not set(tr.names) & set(va.names)
    info = va.info
    assert info.semantic_nc == 9 and info.ignore_index == 8 and info.class_names[7] == "foreground object"
    # 0000051 holds file value 15 (unknown): it becomes id 8, every other value is unchanged
    i = tr.names.index("0000051")
    r, lab = raw(tr.pairs[i][1]), tr.load_label(i)
    assert (r == 15).any()
    assert np.array_equal(lab, np.where(r == 15, 8, r)) and lab.max() <= 8
    check_item(tr, i, 48, 64)


@needs_shared
def test_cityscapes_sample():
    cfg = cfg_for("cityscapes", SAMPLES / "cityscapes", height=32, width=64, load_height=40, load_width=80)
    ds = build_dataset(cfg, "train", train=True)
    assert ds.info.semantic_nc == 34 and ds.info.ignore_index == 0
    assert ds.info.class_names[26] == "car" and ds.info.palette[26] == (0, 0, 142)
    assert len(ds) == 4 and ds.names[0] == "aachen_000000_000019"
    assert all(b.name.endswith("_gtFine_labelIds.png") for _, b in ds.pairs)
    lab = ds.load_label(0)
    assert lab.shape == (1024, 2048) and np.array_equal(lab, raw(ds.pairs[0][1])) and lab.max() <= 33
    y = check_item(ds, 0, 32, 64)
    assert set(y.unique().tolist()) <= set(np.unique(lab).tolist())


@needs_shared
def test_cityscapes_train_ids_option():
    # CRN's label space: the same files read as the 19 train ids + void (19)
    from semsynth.data.cityscapes_ids import cityscapes_label_to_train_id
    from semsynth.eval.evaluate import judge_labels

    cfg = cfg_for("cityscapes", SAMPLES / "cityscapes", height=32, width=64, options={"label_ids": "train"})
    info = dataset_info(cfg)
    assert info.semantic_nc == 20 and info.ignore_index == 19
    assert info.class_names[0] == "road" and info.class_names[13] == "car" and info.palette[13] == (0, 0, 142)
    ds = build_dataset(cfg, "train", train=False)
    lab = ds.load_label(0)
    labelids = raw(ds.pairs[0][1]).astype(np.int64)
    want = cityscapes_label_to_train_id(labelids)
    assert np.array_equal(lab, np.where(want == 255, 19, want)) and lab.max() <= 19 and (lab == 19).any()
    judged, ignore = judge_labels(info, lab)
    assert ignore == 255 and np.array_equal(judged, want)
    check_item(ds, 0, 32, 64)
    with pytest.raises(ConfigError, match="label_ids"):
        dataset_info(cfg_for("cityscapes", SAMPLES / "cityscapes", options={"label_ids": "trainid"}))


@needs_shared
def test_ade20k_sample():
    cfg = cfg_for("ade20k", SAMPLES / "ade20k", height=32, width=32)
    info = dataset_info(cfg)
    assert info.semantic_nc == 151 and info.ignore_index == 0 and info.class_names[1] == "wall"
    ds = build_dataset(cfg, "val", train=False)
    assert len(ds) == 3 and ds.names == ["ADE_val_00000001", "ADE_val_00000002", "ADE_val_00000003"]
    lab = ds.load_label(2)
    assert lab.shape == (300, 400) and np.array_equal(lab, raw(ds.pairs[2][1])) and lab.max() <= 150
    check_item(ds, 2, 32, 32)
    with pytest.raises(DataError, match="training"):  # the sample has no training split
        build_dataset(cfg, "train", train=True)


@needs_shared
def test_coco_stuff_sample_255_to_182():
    cfg = cfg_for("coco_stuff", SAMPLES / "coco_stuff", height=32, width=32)
    tr, va = build_dataset(cfg, "train", train=True), build_dataset(cfg, "val", train=False)
    assert len(tr) == 13 and len(va) == 8
    assert tr.info.semantic_nc == 183 and tr.info.ignore_index == 182
    assert tr.info.class_names[0] == "person" and tr.info.class_names[181] == "wood"
    r, lab = raw(va.pairs[0][1]), va.load_label(0)
    assert (r == 255).any() and np.array_equal(lab, np.where(r == 255, 182, r))
    check_item(va, 0, 32, 32)


# ----------------------------------------------------------------------------- transforms


def test_resize_keeps_label_ids():
    rng = np.random.default_rng(0)
    ids = np.array([0, 3, 7, 150, 182])
    lab = ids[rng.integers(0, len(ids), size=(37, 53))]
    img = rng.integers(0, 256, size=(37, 53, 3), dtype=np.uint8)
    for h, w in ((16, 24), (40, 100), (37, 53)):
        x, y = PairedTransform(h, w)(img, lab)
        assert y.shape == (h, w) and y.dtype == torch.int64 and x.shape == (3, h, w)
        assert set(y.unique().tolist()) <= set(ids.tolist())
    big = np.full((5, 6), 70000)  # ids beyond uint8 survive too
    assert int(PairedTransform(3, 4)(img[:5, :6], big)[1].max()) == 70000


def test_one_draw_shared_by_image_and_label():
    # the image colour encodes the label: after crop + flip they must still agree everywhere
    pal = np.array(color_map(6), dtype=np.uint8)
    rng0 = np.random.default_rng(1)
    lab = rng0.integers(0, 6, size=(20, 30))
    img = pal[lab]
    t = PairedTransform(12, 16, load_height=20, load_width=30, flip=True)  # load size = input: no resampling
    seen_flip, offsets = set(), set()
    for s in range(24):
        top, left, flipped = t.params(np.random.default_rng(s))
        x, y = t(img, lab, np.random.default_rng(s))
        back = np.rint((x.permute(1, 2, 0).numpy() + 1) * 127.5).astype(np.uint8)
        assert np.array_equal(back, pal[y.numpy()])
        ref = lab[top:top + 12, left:left + 16]
        assert np.array_equal(y.numpy(), ref[:, ::-1] if flipped else ref)
        seen_flip.add(flipped)
        offsets.add((top, left))
    assert seen_flip == {True, False} and len(offsets) > 5
    # no rng: centre crop, no flip
    x, y = t(img, lab, None)
    assert np.array_equal(y.numpy(), lab[4:16, 7:23])


def test_transform_config_errors():
    with pytest.raises(ConfigError):
        PairedTransform(10, 10, load_height=12)
    with pytest.raises(ConfigError, match="smaller"):
        PairedTransform(10, 10, load_height=8, load_width=12)


# ----------------------------------------------------------------------------- fixtures


def write_png(path: Path, arr: np.ndarray, mode: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(arr)
    if mode == "P":  # palette PNG whose indices are the ids (colours from the VOC map)
        im.putpalette([c for rgb in color_map(256) for c in rgb])
    im.save(path)
    return path


def camvid_fixture(root: Path, n: int = 3, h: int = 12, w: int = 16, split: str = "train") -> Path:
    rng = np.random.default_rng(0)
    for k in range(n):
        write_png(root / split / f"f{k}.png", rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        write_png(root / f"{split}annot" / f"f{k}.png", rng.integers(0, 12, (h, w)).astype(np.uint8))
    return root


def test_determinism_and_epochs(tmp_path):
    root = camvid_fixture(tmp_path / "cv", n=4, h=24, w=32)
    cfg = cfg_for("camvid", root, height=12, width=16, load_height=18, load_width=24)
    a, b = build_dataset(cfg, "train", train=True, seed=3), build_dataset(cfg, "train", train=True, seed=3)
    for i in (2, 0, 3):  # order of the calls does not matter
        xa, ya = a[i]
        xb, yb = b[i]
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
        assert torch.equal(a[i][1], ya)
    before = [a[i][1] for i in range(4)]
    a.set_epoch(1)
    assert any(not torch.equal(before[i], a[i][1]) for i in range(4))
    a.set_epoch(0)
    assert all(torch.equal(before[i], a[i][1]) for i in range(4))
    ev = build_dataset(cfg, "train", train=False, seed=3)
    y0 = ev[1][1]
    ev.set_epoch(5)
    assert torch.equal(ev[1][1], y0) and ev.rng(1) is None


def test_cache_returns_copies(tmp_path):
    root = camvid_fixture(tmp_path / "cv")
    ds = build_dataset(cfg_for("camvid", root, height=12, width=16, cache=True), "train", train=False)
    lab = ds.load_label(0)
    lab[:] = 99
    assert ds.load_label(0).max() <= 11 and ds.load_label(0).dtype == np.int64
    img = ds.load_image(0)
    img[:] = 0
    assert ds.load_image(0).any()
    x, y = ds[0]
    assert y.dtype == torch.int64 and x.dtype == torch.float32


def write_classes_yaml(root: Path, text: str) -> None:
    root.mkdir(parents=True, exist_ok=True)
    (root / "classes.yaml").write_text(text)


COLOR_YAML = """\
name: toy
label_format: color
ignore_index: void
classes:
  - {name: sky, color: [128, 128, 128]}
  - {name: road, color: [128, 64, 128]}
  - {name: car, color: [64, 0, 128]}
  - {name: void, color: [0, 0, 0]}
"""


def test_folder_id_labels(tmp_path):
    root = tmp_path / "f"
    write_classes_yaml(root, "classes: [a, b, c]\nignore_index: 2\n")
    rng = np.random.default_rng(0)
    labs = {}
    for k, mode in (("x", None), ("y", "P")):
        write_png(root / "train" / "images" / f"{k}.jpg", rng.integers(0, 256, (10, 14, 3), dtype=np.uint8))
        labs[k] = rng.integers(0, 3, (10, 14)).astype(np.uint8)
        write_png(root / "train" / "labels" / f"{k}.png", labs[k], mode)
    cfg = cfg_for("folder", root, height=8, width=8)
    info = dataset_info(cfg)
    assert info.class_names == ("a", "b", "c") and info.ignore_index == 2 and info.semantic_nc == 3
    ds = build_dataset(cfg, "train", train=True)
    assert ds.names == ["x", "y"]
    assert Image.open(ds.pairs[1][1]).mode == "P"
    for i, k in enumerate("xy"):  # palette PNG: indices are ids
        assert np.array_equal(ds.load_label(i), labs[k])
        check_item(ds, i, 8, 8)


def test_folder_color_labels_and_txt(tmp_path):
    root = tmp_path / "f"
    write_classes_yaml(root, COLOR_YAML)
    info = dataset_info(cfg_for("folder", root))
    assert info.name == "toy" and info.ignore_index == 3 and info.palette[1] == (128, 64, 128)
    pal = np.array(info.palette, dtype=np.uint8)
    lab = np.random.default_rng(0).integers(0, 4, (9, 11))
    write_png(root / "val" / "images" / "a.png", np.zeros((9, 11, 3), np.uint8))
    write_png(root / "val" / "labels" / "a.png", pal[lab])
    ds = build_dataset(cfg_for("folder", root, height=9, width=11), "val", train=False)
    assert np.array_equal(ds.load_label(0), lab)
    assert torch.equal(ds[0][1], torch.from_numpy(lab))
    # the same classes as classes.txt
    (root / "classes.yaml").unlink()
    (root / "classes.txt").write_text("# toy\nsky 128 128 128\nroad 128 64 128\n\ncar 64 0 128\nvoid 0 0 0 ignore\n")
    cfg = cfg_for("folder", root, height=9, width=11, options={"label_format": "color"})
    info2 = dataset_info(cfg)
    assert info2.class_names == info.class_names and info2.palette == info.palette and info2.ignore_index == 3
    assert np.array_equal(build_dataset(cfg, "val", train=False).load_label(0), lab)
    with pytest.raises(ConfigError, match="labelformat"):
        dataset_info(cfg_for("folder", root, options={"labelformat": "id"}))


# ----------------------------------------------------------------------------- bad inputs


def test_label_ids_out_of_range(tmp_path):
    root = camvid_fixture(tmp_path / "cv")
    bad = np.zeros((12, 16), np.uint8)
    bad[0, 0], bad[1, 1] = 12, 40
    path = write_png(root / "trainannot" / "f1.png", bad)
    ds = build_dataset(cfg_for("camvid", root, height=12, width=16), "train", train=False)
    with pytest.raises(DataError, match=r"\[12, 40\].*0-11") as exc:
        ds[1]
    assert str(path) in str(exc.value)
    with pytest.raises(DataError, match="f1.png"):
        ds.load_label(1)


def test_coco_raw_value_not_in_ids(tmp_path):
    root = tmp_path / "coco"
    write_png(root / "val_img" / "a.png", np.zeros((4, 4, 3), np.uint8))
    lab = np.full((4, 4), 255, np.uint8)
    lab[0, 0] = 200
    write_png(root / "val_label" / "a.png", lab)
    ds = build_dataset(cfg_for("coco_stuff", root, height=4, width=4), "val", train=False)
    with pytest.raises(DataError, match=r"\[200\].*0-181, 255.*a\.png"):
        ds.load_label(0)


def test_sizes_differ(tmp_path):
    root = camvid_fixture(tmp_path / "cv")
    write_png(root / "trainannot" / "f2.png", np.zeros((10, 16), np.uint8))
    ds = build_dataset(cfg_for("camvid", root, height=12, width=16), "train", train=False)
    with pytest.raises(DataError) as exc:
        ds[2]
    msg = str(exc.value)
    assert "train/f2.png" in msg and "trainannot/f2.png" in msg and "16x12" in msg and "16x10" in msg


def test_unpaired_files(tmp_path):
    root = camvid_fixture(tmp_path / "cv")
    (root / "trainannot" / "f0.png").unlink()
    with pytest.raises(DataError, match=r"image without label.*train/f0\.png"):
        build_dataset(cfg_for("camvid", root), "train", train=False)
    root = camvid_fixture(tmp_path / "cv2")
    write_png(root / "trainannot" / "extra.png", np.zeros((12, 16), np.uint8))
    with pytest.raises(DataError, match=r"label without image.*extra\.png"):
        build_dataset(cfg_for("camvid", root), "train", train=False)


def test_truncated_image(tmp_path):
    root = camvid_fixture(tmp_path / "cv", h=48, w=64)
    path = root / "train" / "f0.png"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    ds = build_dataset(cfg_for("camvid", root, height=12, width=16), "train", train=False)
    with pytest.raises(DataError, match=r"train/f0\.png"):
        ds[0]
    with pytest.raises(DataError, match="f0.png"):
        read_image(path)


def test_missing_and_empty_folders(tmp_path):
    with pytest.raises(DataError, match=r"nowhere/train"):
        build_dataset(cfg_for("camvid", tmp_path / "nowhere"), "train", train=False)
    root = camvid_fixture(tmp_path / "cv")
    (root / "val").mkdir()
    with pytest.raises(DataError, match=r"empty.*cv/val|cv/val.*empty"):
        build_dataset(cfg_for("camvid", root), "val", train=False)
    with pytest.raises(DataError, match="classes.yaml"):
        dataset_info(cfg_for("folder", tmp_path / "nowhere"))
    with pytest.raises(DataError, match=r"splits/train\.txt"):
        build_dataset(cfg_for("stanford_background", root), "train", train=False)


def test_unknown_colour(tmp_path):
    root = tmp_path / "f"
    write_classes_yaml(root, COLOR_YAML)
    write_png(root / "train" / "images" / "a.png", np.zeros((4, 5, 3), np.uint8))
    lab = np.zeros((4, 5, 3), np.uint8)
    lab[1, 2] = (1, 2, 3)
    path = write_png(root / "train" / "labels" / "a.png", lab)
    ds = build_dataset(cfg_for("folder", root, height=4, width=5), "train", train=False)
    with pytest.raises(DataError, match=r"\(1, 2, 3\)") as exc:
        ds[0]
    assert str(path) in str(exc.value)


def test_colour_label_given_as_id_format(tmp_path):
    root = tmp_path / "f"
    write_classes_yaml(root, "classes: [a, b]\n")
    write_png(root / "train" / "images" / "a.png", np.zeros((4, 5, 3), np.uint8))
    write_png(root / "train" / "labels" / "a.png", np.random.default_rng(0).integers(0, 256, (4, 5, 3), dtype=np.uint8))
    ds = build_dataset(cfg_for("folder", root, height=4, width=5), "train", train=False)
    with pytest.raises(DataError, match="colour"):
        ds.load_label(0)


# ----------------------------------------------------------------------------- registry, docs


def test_registry_and_unknown_names(tmp_path):
    for name in ("camvid", "cityscapes", "ade20k", "coco_stuff", "stanford_background", "folder"):
        assert issubclass(get_dataset(name), PairedDataset)
    for name in ("camvid", "cityscapes", "coco_stuff", "stanford_background"):
        assert dataset_info(DataConfig(dataset=name, root=str(tmp_path / "absent"))).name == name
    with pytest.raises(ConfigError, match="nope"):
        dataset_info(DataConfig(dataset="nope"))
    with pytest.raises(ConfigError, match="options"):
        build_dataset(DataConfig(dataset="camvid", root=str(tmp_path), options={"x": 1}), "train", False)
    assert describe_ids([0, 1, 2, 3, 255, 7]) == "0-3, 7, 255"
    lab = read_label(write_png(tmp_path / "l.png", np.full((2, 2), 5, np.uint8)))
    assert lab.dtype == np.int64 and lab.shape == (2, 2)


def test_public_api_has_docstrings():
    import semsynth.data as data
    from semsynth.data import ade20k, base, camvid, cityscapes, coco_stuff, folder, stanford_background, transforms

    missing = []
    for mod in (data, base, transforms, camvid, ade20k, cityscapes, coco_stuff, stanford_background, folder):
        assert mod.__doc__, mod.__name__
        for name, obj in vars(mod).items():
            if name.startswith("_") or getattr(obj, "__module__", None) != mod.__name__:
                continue
            if inspect.isfunction(obj) or inspect.isclass(obj):
                if not inspect.getdoc(obj):
                    missing.append(f"{mod.__name__}.{name}")
                if inspect.isclass(obj):
                    for m, f in vars(obj).items():
                        if not m.startswith("_") and inspect.isfunction(f) and not f.__doc__:
                            missing.append(f"{mod.__name__}.{name}.{m}")
    assert not missing, missing


@needs_shared
def test_ade20k_preset_official_preprocessing():
    """Official ADE20K loader: training resizes to 286x286 and crops 256 at random;
    evaluation resizes the whole image straight to 256x256 (no crop)."""
    from semsynth.config import load_config
    from semsynth.data.transforms import resize_image, resize_label, to_tensor_image

    preset = load_config(Path(__file__).resolve().parents[1] / "configs" / "oasis" / "ade20k.yaml",
                         [f"data.root={SAMPLES / 'ade20k'}"])
    assert (preset.data.load_height, preset.data.load_width, preset.data.height) == (286, 286, 256)
    val = build_dataset(preset.data, "val", train=False)
    x, y = val[0]
    img, lab = val.load_pair(0)
    assert torch.equal(x, to_tensor_image(resize_image(img, 256, 256)))
    assert torch.equal(y, torch.from_numpy(resize_label(lab, 256, 256).astype(np.int64)))
    # the training transform of the same preset: resize to 286, then a 256 crop at a random offset
    from semsynth.data.transforms import transform_from_config

    t = transform_from_config(preset.data, train=True)
    offsets = {t.params(np.random.default_rng(k))[:2] for k in range(20)}
    assert len(offsets) > 5 and all(0 <= a <= 30 and 0 <= b <= 30 for a, b in offsets)
    xt, _ = t(img, lab, np.random.default_rng(0))
    top, left, flipped = t.params(np.random.default_rng(0))
    big = resize_image(img, 286, 286)[top:top + 256, left:left + 256]
    big = big[:, ::-1] if flipped else big
    assert torch.equal(xt, to_tensor_image(np.ascontiguousarray(big)))
