"""Colour labels as users have them: JPEG noise (color_tolerance), the pix2pix aligned layout,
`semsynth data check`, and training on such a folder with one config change."""

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from semsynth.cli import main
from semsynth.config import load_config
from semsynth.data import build_dataset
from semsynth.data.camvid import INFO as CAMVID
from semsynth.data.folder import colors_to_ids
from semsynth.types import DataError

ROOT = Path(__file__).resolve().parents[1]
CAMVID_DIR = ROOT / ".." / "shared" / "datasets" / "camvid"
EXAMPLE = ROOT / "configs" / "oasis" / "folder_example.yaml"


def test_colors_to_ids_snaps_within_the_tolerance_only():
    palette = [(0, 0, 0), (255, 0, 0), (0, 0, 255)]
    rgb = np.array([[[0, 0, 0], [10, 0, 0], [240, 5, 0], [128, 0, 0]]], np.uint8)
    with pytest.raises(DataError, match=r"\(10, 0, 0\) at 1 px.*set color_tolerance"):
        colors_to_ids(rgb, palette, "x.png")
    with pytest.raises(DataError, match=r"\(128, 0, 0\) at 1 px \(distance 127\)") as e:
        colors_to_ids(rgb, palette, "x.png", tolerance=20)
    assert "(10, 0, 0)" not in str(e.value)  # within the tolerance: not reported
    ids, n = colors_to_ids(rgb, palette, "x.png", tolerance=20, unmatched="ignore", ignore_index=0)
    # (10,0,0) is 10 from black -> 0; (240,5,0) is ~15.8 from red -> 1; (128,0,0) is 127/128 away -> don't-care 0
    assert ids.tolist() == [[0, 0, 1, 0]] and n == 3
    ids, n = colors_to_ids(rgb[:, :3], palette, "x.png", tolerance=20)
    assert ids.tolist() == [[0, 0, 1]] and n == 2


def _aligned_folder(tmp_path: Path, quality: int = 75) -> tuple[Path, dict]:
    """pix2pix-style side-by-side JPEGs (photo | CamVid-coloured label) from real CamVid pairs."""
    root = tmp_path / "pix2pix"
    truth = {}
    pal = np.array(CAMVID.palette, np.uint8)
    for split, src, n in (("train", "train", 6), ("val", "val", 2)):
        (root / split).mkdir(parents=True)
        for f in sorted((CAMVID_DIR / src).glob("*.png"))[:n]:
            photo = Image.open(f).convert("RGB").resize((128, 96), Image.BICUBIC)
            lab = Image.open(CAMVID_DIR / f"{src}annot" / f.name).resize((128, 96), Image.NEAREST)
            ids = np.asarray(lab)
            both = np.concatenate([np.asarray(photo), pal[ids]], axis=1)
            Image.fromarray(both).save(root / split / (f.stem + ".jpg"), quality=quality)
            truth[f.stem] = ids
    classes = [{"name": n, "color": list(c)} for n, c in zip(CAMVID.class_names, CAMVID.palette)]
    (root / "classes.yaml").write_text(yaml.safe_dump({
        "name": "camvid_pix2pix", "label_format": "color", "layout": "aligned", "ignore_index": "Void",
        "classes": classes}))
    return root, truth


def _cfg(root: Path, *overrides):
    return load_config(EXAMPLE, [f"data.root={root}", "data.height=96", "data.width=128", *overrides])


def test_jpeg_noisy_aligned_labels_need_a_tolerance_and_then_match(tmp_path):
    root, truth = _aligned_folder(tmp_path)
    strict = build_dataset(_cfg(root).data, "train", train=False)
    with pytest.raises(DataError, match="unknown label colour.*set color_tolerance"):
        strict.load_pair(0)
    ds = build_dataset(_cfg(root, "data.options.color_tolerance=40", "data.options.unmatched=ignore").data,
                       "train", train=False)
    img, lab = ds.load_pair(0)
    assert img.shape == (96, 128, 3) and lab.shape == (96, 128)
    # the photo half, not the label half
    assert np.abs(img.astype(int) - np.array(CAMVID.palette)[lab].astype(int)).mean() > 30
    stem = Path(ds.pairs[0][0]).stem
    t = truth[stem]
    dont_care = (lab == 11) & (t != 11)  # blended edge pixels beyond the tolerance
    assert dont_care.mean() < 0.1, dont_care.mean()
    agree = (lab == t)[~dont_care].mean()  # every pixel given a class gets the right one
    assert agree > 0.98, agree
    assert sum(ds.snapped.values()) > 0
    assert "color_tolerance 40" in ds.snap_report()


def test_aligned_order_and_bad_options_are_checked(tmp_path):
    root, _ = _aligned_folder(tmp_path)
    swapped = build_dataset(_cfg(root, "data.options.aligned_order=label_image",
                                 "data.options.color_tolerance=40").data, "train", train=False)
    with pytest.raises(DataError, match="unknown label colour"):  # the photo is read as a label
        swapped.load_pair(0)
    with pytest.raises(DataError, match="color_tolerance must be in 0-442"):
        build_dataset(_cfg(root, "data.options.color_tolerance=-1").data, "train", train=False)
    with pytest.raises(DataError, match="layout must be one of"):
        build_dataset(_cfg(root, "data.options.layout=sideways").data, "train", train=False)
    with pytest.raises(DataError, match="layout aligned needs label_format color"):
        build_dataset(_cfg(root, "data.options.label_format=id").data, "train", train=False)


def test_data_check_lists_problems_and_the_snapped_pixels(tmp_path, capsys):
    root, _ = _aligned_folder(tmp_path)
    assert main(["data", "check", str(EXAMPLE), "--set", f"data.root={root}"]) == 1
    out = capsys.readouterr()
    assert "PROBLEM: unknown label colour" in out.out and "problem(s) found" in out.err
    assert main(["data", "check", str(EXAMPLE), "--set", f"data.root={root}", "--set",
                 "data.options.color_tolerance=40", "--set", "data.options.unmatched=ignore", "--json"]) == 0
    rep = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert rep["splits"]["train"]["pairs"] == 6 and rep["splits"]["val"]["pairs"] == 2
    assert rep["splits"]["train"]["snapped_pixels"] > 0 and rep["splits"]["train"]["problems"] == []
    per_file = rep["splits"]["train"]["snapped_per_file"]
    assert sum(per_file.values()) == rep["splits"]["train"]["snapped_pixels"] and len(per_file) == 6
    assert rep["splits"]["train"]["sizes"] == {"128x96": 6}
    assert sum(rep["splits"]["train"]["class_share"].values()) + rep["splits"]["train"]["dont_care_share"] \
        == pytest.approx(1.0)


def test_training_on_a_pix2pix_folder_needs_one_config_change(tmp_path, capsys):
    root, _ = _aligned_folder(tmp_path)
    classes = yaml.safe_load((root / "classes.yaml").read_text())
    classes.update({"color_tolerance": 40, "unmatched": "ignore"})  # the user's classes.yaml says how
    (root / "classes.yaml").write_text(yaml.safe_dump(classes))
    out = tmp_path / "run"
    args = ["train", str(EXAMPLE), "--set", f"data.root={root}", "--out", str(out), "--no-progress"]
    small = ["data.height=96", "data.width=128", "train.max_steps=2", "train.max_minutes=null",
             "model.generator.channels=[32,32,16,8]", "model.generator.z_dim=8", "model.generator.spade_hidden=16",
             "model.pretrained.channels=[16,16,16,16]", "model.pretrained.last_channels=16", "train.batch_size=2",
             "train.ema.bn_refresh_batches=2", "train.device=cpu"]
    for s in small:  # test size only: the one change a user makes is data.root
        args += ["--set", s]
    assert main(args) == 0
    assert "were not exact class colours" in capsys.readouterr().err
    assert (out / "checkpoints" / "latest.pt").is_file()


def test_train_runs_the_data_check_on_both_splits_before_writing(tmp_path, capsys):
    root, _ = _aligned_folder(tmp_path)
    classes = yaml.safe_load((root / "classes.yaml").read_text())
    classes.update({"color_tolerance": 40, "unmatched": "ignore"})
    (root / "classes.yaml").write_text(yaml.safe_dump(classes))
    bad = sorted((root / "val").glob("*.jpg"))[0]
    bad.write_bytes(bad.read_bytes()[:200])  # a truncated val file
    out = tmp_path / "run"
    assert main(["train", str(EXAMPLE), "--set", f"data.root={root}", "--set", "data.height=96", "--set",
                 "data.width=128", "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "1 problem(s) in the data: [val]" in err and bad.name in err
    assert not out.exists()
