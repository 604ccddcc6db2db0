"""End to end on the tiny config: train, checkpoints, exact resume, sample, bad input."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from semsynth.cli import main, parse_seeds
from semsynth.config import load_config
from semsynth.model.checkpoint import TrainingState, load_checkpoint, save_checkpoint
from semsynth.train.loop import Trainer, TrainingDiverged
from semsynth.types import ConfigError

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "oasis" / "tiny.yaml"
CAMVID_VAL_LABELS = ROOT / ".." / "shared" / "datasets" / "camvid" / "valannot"


def _tiny(*overrides):
    return load_config(TINY, list(overrides))


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    rc = main(["train", str(TINY), "--out", str(out), "--no-progress"])
    assert rc == 0
    return out


def test_train_writes_the_run_folder(tiny_run):
    out = tiny_run
    assert (out / "config.yaml").is_file()
    assert load_config(out / "config.yaml") == _tiny()
    lines = [json.loads(x) for x in (out / "stats.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [2, 4, 6]
    for r in lines:
        assert {"step", "images_seen", "seconds", "G_adv", "D_fake", "D_real", "D_labelmix"} <= set(r)
        assert r["images_seen"] == 2 * r["step"]
        assert all(np.isfinite(v) for v in r.values())
    assert (out / "samples" / "step_0000004.png").is_file()
    grid = Image.open(out / "samples" / "step_0000004.png")
    # 2 label maps x (label | real | 2 samples), 64x48 tiles with 2-px gaps
    assert grid.size == (4 * 64 + 3 * 2, 2 * 48 + 2)
    ckpt = load_checkpoint(out / "checkpoints" / "latest.pt")
    assert ckpt["step"] == 6 and ckpt["images_seen"] == 12
    assert set(ckpt["optimizers"]) == {"G", "D"}
    assert {"torch", "numpy", "python", "train"} <= set(ckpt["rng"])
    assert ckpt["config"]["train"]["max_steps"] == 6
    assert (out / "checkpoints" / "step_0000004.pt").is_file()
    assert not list((out / "checkpoints").glob("*.tmp"))


def test_resume_is_bit_identical(tmp_path, tiny_run):
    part = tmp_path / "part"
    assert main(["train", str(TINY), "--out", str(part), "--no-progress", "--set", "train.max_steps=3"]) == 0
    assert load_checkpoint(part / "checkpoints" / "latest.pt")["step"] == 3
    assert main(["train", str(TINY), "--out", str(part), "--no-progress", "--resume"]) == 0
    a = load_checkpoint(tiny_run / "checkpoints" / "latest.pt")
    b = load_checkpoint(part / "checkpoints" / "latest.pt")
    assert b["step"] == a["step"] == 6
    for key in ("method", "ema"):
        assert a[key].keys() == b[key].keys()
        for k in a[key]:
            assert torch.equal(a[key][k], b[key][k]), f"{key}.{k} differs after resume"
    for phase in ("G", "D"):
        sa, sb = a["optimizers"][phase]["state"], b["optimizers"][phase]["state"]
        for i in sa:
            for k in sa[i]:
                assert torch.equal(torch.as_tensor(sa[i][k]), torch.as_tensor(sb[i][k]))
    assert torch.equal(a["rng"]["train"], b["rng"]["train"])


def test_resume_with_a_different_config_is_refused(tmp_path, tiny_run, capsys):
    rc = main(["train", str(TINY), "--out", str(tiny_run), "--no-progress", "--resume",
               "--set", "model.lambda_labelmix=5.0"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "model.lambda_labelmix: 10.0 -> 5.0" in err and "latest.pt" in err


def test_fresh_run_into_an_existing_run_is_refused(tiny_run):
    with pytest.raises(ConfigError, match="pass --resume"):
        Trainer(_tiny(), tiny_run, progress=False)


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    trainer = Trainer(_tiny("train.max_steps=4"), tmp_path, progress=False)
    real = trainer.method.phase_losses
    calls = {"n": 0}

    def poisoned(phase, image, label, rng):
        out = real(phase, image, label, rng)
        calls["n"] += 1
        if calls["n"] > 4:  # 5th call = step 3, phase G
            out["total"] = out["total"] * float("nan")
        return out

    monkeypatch.setattr(trainer.method, "phase_losses", poisoned)
    with pytest.raises(TrainingDiverged, match="non-finite G loss at step 3"):
        trainer.run()
    assert load_checkpoint(tmp_path / "checkpoints" / "latest.pt")["step"] == 2


def _state(step):
    return TrainingState(config={}, dataset_info={}, method={}, ema={}, optimizers={}, step=step, images_seen=0,
                         elapsed_seconds=0.0, rng={})


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "c.pt"
    save_checkpoint(path, _state(1))
    import os

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        save_checkpoint(path, _state(2))
    assert load_checkpoint(path)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]


def test_truncated_checkpoint_is_a_clear_error(tmp_path):
    path = tmp_path / "bad.pt"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match="bad.pt"):
        load_checkpoint(path)


# --------------------------------------------------------------------- sampling
def test_sample_seeds_and_local_resampling(tiny_run, tmp_path):
    ckpt = tiny_run / "checkpoints" / "latest.pt"
    labels = sorted(CAMVID_VAL_LABELS.glob("*.png"))[:2]
    lab_dir = tmp_path / "labels"
    lab_dir.mkdir()
    for f in labels:
        (lab_dir / f.name).write_bytes(f.read_bytes())
    out = tmp_path / "out"
    assert main(["sample", str(ckpt), "--labels", str(lab_dir), "--seeds", "0-2", "--out", str(out)]) == 0
    files = sorted(out.glob("*.png"))
    assert len(files) == 6
    a = np.asarray(Image.open(out / f"{labels[0].stem}_seed0.png"))
    b = np.asarray(Image.open(out / f"{labels[0].stem}_seed1.png"))
    assert a.shape == (48, 64, 3)
    assert not np.array_equal(a, b)
    # same seed, again -> same image
    out2 = tmp_path / "out2"
    assert main(["sample", str(ckpt), "--labels", str(labels[0]), "--seeds", "0", "--out", str(out2)]) == 0
    assert np.array_equal(a, np.asarray(Image.open(out2 / f"{labels[0].stem}_seed0.png")))
    # local re-sampling of the road (id 3)
    out3 = tmp_path / "out3"
    assert main(["sample", str(ckpt), "--labels", str(labels[0]), "--seeds", "1-2", "--resample-class", "3",
                 "--base-seed", "0", "--out", str(out3)]) == 0
    road = np.asarray(Image.open(labels[0]).resize((64, 48), Image.NEAREST)) == 3
    assert road.any() and (~road).any()
    for k in (1, 2):
        img = np.asarray(Image.open(out3 / f"{labels[0].stem}_base0_class3_seed{k}.png")).astype(float)
        change = np.abs(img - a).mean(-1)
        assert change[road].mean() > 2 * change[~road].mean()  # the road is re-rolled, the rest stays
    # local re-sampling of a user mask (any size; resized to the generator's)
    mask = np.zeros((360, 480), np.uint8)
    mask[:180, :240] = 255
    Image.fromarray(mask).save(tmp_path / "mask.png")
    out4 = tmp_path / "out4"
    assert main(["sample", str(ckpt), "--labels", str(labels[0]), "--seeds", "0,7", "--resample-mask",
                 str(tmp_path / "mask.png"), "--out", str(out4)]) == 0
    same = np.asarray(Image.open(out4 / f"{labels[0].stem}_base0_mask_seed0.png"))
    other = np.asarray(Image.open(out4 / f"{labels[0].stem}_base0_mask_seed7.png"))
    assert np.array_equal(same, a)  # seed = base seed: the noise is unchanged everywhere
    change = np.abs(other.astype(float) - a).mean(-1)
    inside, far = change[:24, :32].mean(), change[30:, 44:].mean()  # the masked quarter vs the far corner
    assert inside > 3 * far, (inside, far)  # an inverted or ignored mask fails here


def test_sample_rejects_unknown_label_ids_and_writes_nothing(tiny_run, tmp_path, capsys):
    lab_dir = tmp_path / "labels"
    lab_dir.mkdir()
    Image.fromarray(np.full((36, 48), 3, np.uint8)).save(lab_dir / "a.png")
    bad = np.full((36, 48), 3, np.uint8)
    bad[0, 0] = 40
    Image.fromarray(bad).save(lab_dir / "b.png")
    out = tmp_path / "out"
    rc = main(["sample", str(tiny_run / "checkpoints" / "latest.pt"), "--labels", str(lab_dir), "--out", str(out)])
    assert rc == 2
    err = capsys.readouterr().err
    assert "b.png" in err and "[40]" in err
    assert not out.exists()


def test_parse_seeds():
    assert parse_seeds("0-3") == [0, 1, 2, 3]
    assert parse_seeds("1,5,9") == [1, 5, 9]
    assert parse_seeds("7,2-3") == [7, 2, 3]
    with pytest.raises(ValueError):
        parse_seeds("3-1")
    with pytest.raises(ValueError):
        parse_seeds("x")


def test_info_json(capsys):
    assert main(["info", str(ROOT / "configs" / "oasis" / "ade20k.yaml"), "--json",
                 "--set", "data.root=" + str(ROOT / ".." / "shared" / "datasets" / "format_samples" / "ade20k")]) == 0
    rec = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert abs(rec["parameters"]["G"] / 74.3e6 - 1) < 0.005
    assert abs(rec["parameters"]["G_without_noise_inputs"] / 72.6e6 - 1) < 0.005
    assert abs(rec["parameters"]["D"] / 22.3e6 - 1) < 0.005
    assert rec["dataset"]["semantic_nc"] == 151


def test_unknown_config_key_is_an_error():
    with pytest.raises(ConfigError, match="generator.zdim"):
        _tiny("model.generator.zdim=3")


def test_bad_training_data_stops_before_anything_is_written(tmp_path, capsys):
    root = tmp_path / "data"
    for split in ("train", "val"):
        (root / split / "images").mkdir(parents=True)
        (root / split / "labels").mkdir(parents=True)
        for k in range(3):
            Image.fromarray(np.zeros((48, 64, 3), np.uint8)).save(root / split / "images" / f"{k}.png")
            lab = np.zeros((48, 64), np.uint8)
            lab[:, 32:] = 1
            if split == "train" and k == 2:
                lab[0, 0] = 7  # not an id of this 3-class dataset
            Image.fromarray(lab).save(root / split / "labels" / f"{k}.png")
    (root / "classes.yaml").write_text("classes: [sky, road, void]\nignore_index: 2\n")
    out = tmp_path / "run"
    rc = main(["train", str(TINY), "--out", str(out), "--no-progress", "--set", "data.dataset=folder",
               "--set", f"data.root={root}"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "2.png" in err and "[7]" in err
    assert not out.exists()
