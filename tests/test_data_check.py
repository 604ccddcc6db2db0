"""The data check done once (manifest), in parallel, the memory choice of ``data.cache: auto``,
and a file that breaks after the check (issue 23)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from semsynth.cli import main
from semsynth.config import load_config
from semsynth.data import build_dataset
from semsynth.data.cache import cached_pair_bytes, resolve_cache, resolve_num_workers
from semsynth.data.check import check_data, manifest_path
from semsynth.model.checkpoint import load_checkpoint
from semsynth.train.loop import Trainer
from semsynth.types import ConfigError, DataError

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "configs" / "oasis" / "folder_example.yaml"
TINY = ROOT / "configs" / "oasis" / "tiny.yaml"
CAMVID = ROOT / ".." / "shared" / "datasets" / "camvid"


def _folder(root: Path, n_train: int = 40, n_val: int = 3) -> Path:
    """A folder dataset with id labels: 3 classes (id 2 = don't-care); pair k has k+1 pixels of
    class 1 in its first row, the rest class 0 (so the class counts are known by hand)."""
    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("val", n_val)):
        (root / split / "images").mkdir(parents=True)
        (root / split / "labels").mkdir(parents=True)
        for k in range(n):
            Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)).save(root / split / "images" / f"{k:03d}.png")
            lab = np.zeros((24, 32), np.uint8)
            lab.flat[: k + 1] = 1
            lab[-1, :2] = 2
            Image.fromarray(lab).save(root / split / "labels" / f"{k:03d}.png")
    (root / "classes.yaml").write_text("classes: [ground, thing, void]\nignore_index: 2\n")
    return root


def _cfg(root: Path, *sets: str):
    return load_config(EXAMPLE, [f"data.root={root}", "data.height=24", "data.width=32", "data.load_height=null",
                                 "data.load_width=null", *sets])


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    d = tmp_path / "cache"
    monkeypatch.setenv("SEMSYNTH_CACHE", str(d))
    return d


def test_manifest_trusts_unchanged_pairs_and_rereads_changed_ones(tmp_path, cache):
    root = _folder(tmp_path / "data")
    cfg = _cfg(root)
    first = check_data(cfg, workers=2)["splits"]["train"]
    assert (first["pairs"], first["checked"], first["trusted"], first["removed"]) == (40, 40, 0, 0)
    # by hand: 40 pairs x 768 px; class 1 has 1+2+...+40 = 820 px, don't-care 2 px per pair
    assert first["class_share"]["thing"] == pytest.approx(820 / (40 * 768))
    assert first["dont_care_share"] == pytest.approx(80 / (40 * 768))
    assert first["sizes"] == {"32x24": 40} and first["problems"] == []
    path = Path(first["manifest"])
    assert path.parent == cache / "data_check" and path.is_file()

    again = check_data(cfg, workers=2)["splits"]["train"]
    assert (again["checked"], again["trusted"]) == (0, 40)
    assert {k: again[k] for k in ("class_share", "dont_care_share", "sizes")} == \
        {k: first[k] for k in ("class_share", "dont_care_share", "sizes")}

    # one label changed (same size on disk is not enough: the mtime moves), one pair removed
    lab_path = root / "train" / "labels" / "005.png"
    lab = np.zeros((24, 32), np.uint8)
    lab[:, :] = 1
    Image.fromarray(lab).save(lab_path)
    st = os.stat(lab_path)
    os.utime(lab_path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    for sub in ("images", "labels"):
        (root / "train" / sub / "039.png").unlink()
    third = check_data(cfg, workers=1)["splits"]["train"]
    assert (third["pairs"], third["checked"], third["trusted"], third["removed"]) == (39, 1, 38, 1)
    assert Path(third["removed_examples"][0]).name == "039.png"
    # by hand: pair 39 (40 px thing, 2 don't-care) gone; pair 5 (6 px thing, 2 don't-care) now all thing
    assert third["class_share"]["thing"] == pytest.approx((820 - 40 - 6 + 768) / (39 * 768))
    assert third["dont_care_share"] == pytest.approx((80 - 2 - 2) / (39 * 768))

    # a broken file is a problem until it changes again, and is named
    bad = root / "train" / "images" / "007.png"
    bad.write_bytes(bad.read_bytes()[:60])
    rep = check_data(cfg, workers=2)["splits"]["train"]
    assert rep["checked"] == 1 and len(rep["problems"]) == 1 and "007.png" in rep["problems"][0]
    assert check_data(cfg)["splits"]["train"]["problems"] == rep["problems"]  # trusted, still reported

    # a new label space (classes.yaml edited) is a new manifest: everything is read again
    (root / "classes.yaml").write_text("classes: [ground, thing, void, extra]\nignore_index: 2\n")
    ds = build_dataset(_cfg(root).data, "train", train=False)
    assert manifest_path(ds, "train") != path
    assert check_data(_cfg(root), workers=1)["splits"]["train"]["trusted"] == 0


def test_parallel_check_equals_serial_on_camvid_val(cache):
    cfg = load_config(TINY)
    serial = check_data(cfg, splits=["val"], workers=1, trust=False)["splits"]["val"]
    parallel = check_data(cfg, splits=["val"], workers=2, trust=False)["splits"]["val"]
    assert serial["checked"] == parallel["checked"] == 101
    for k in ("pairs", "sizes", "class_share", "dont_care_share", "problems"):
        assert serial[k] == parallel[k], k
    assert serial["sizes"] == {"480x360": 101}


def test_data_check_cli_reports_the_manifest(tmp_path, cache, capsys):
    root = _folder(tmp_path / "data", n_train=4, n_val=2)
    args = ["data", "check", str(EXAMPLE), "--set", f"data.root={root}", "--no-progress"]
    assert main(args + ["--json"]) == 0
    rep = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert rep["splits"]["train"]["checked"] == 4
    assert main(args) == 0
    assert "data check [train]: 4 pairs, 0 read, 4 trusted from the manifest" in capsys.readouterr().out
    assert main(args + ["--full", "--json"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["splits"]["val"]["checked"] == 2


def test_cache_auto_chooses_by_size_and_says_why(tmp_path, cache):
    root = _folder(tmp_path / "data", n_train=40)
    ds = build_dataset(_cfg(root).data, "train", train=True)
    per = 24 * 32 * (3 + 1) + 2 * 112  # resized image + uint8 label + two array headers
    assert cached_pair_bytes(ds) == per
    limit_on = per * 40 / 1e9  # exactly fits
    on = build_dataset(_cfg(root, f"data.cache_limit_gb={limit_on}").data, "train", train=True)
    off = build_dataset(_cfg(root, f"data.cache_limit_gb={limit_on * 0.99}").data, "train", train=True)
    assert on.cache and not off.cache
    assert f"40 pairs x {per:,} B resized x 1 process" in on.cache_reason and "data.cache_limit_gb" in on.cache_reason
    two = _cfg(root, f"data.cache_limit_gb={limit_on}", "data.num_workers=2").data
    assert not resolve_cache(ds, two)[0]  # each worker holds a copy: twice the memory
    assert build_dataset(_cfg(root, "data.cache=true").data, "train", train=True).cache
    assert resolve_num_workers(_cfg(root).data, True, "cuda") == 0
    assert resolve_num_workers(_cfg(root).data, False, "cuda") == min(8, len(os.sched_getaffinity(0)))
    assert resolve_num_workers(_cfg(root).data, False, "cpu") == 0  # the step uses every core there
    assert resolve_num_workers(_cfg(root, "data.num_workers=3").data, False, "cpu") == 3
    # the cache keeps resized pairs only, never the full-resolution arrays
    on[0], on[1]
    assert len(on._resized_cache) == 2 and not on._img_cache and not on._lab_cache


@pytest.mark.parametrize("sets,match", [
    (["data.cache=true", "data.cache_limit_gb=4"], "cache_limit_gb applies to data.cache: auto only"),
    (["data.cache=maybe"], "data.cache must be true, false or auto"),
    (["data.num_workers=lots"], "num_workers must be an integer >= 0 or auto"),
    (["data.check_workers=-1"], "check_workers must be >= 0"),
])
def test_data_config_errors(sets, match):
    with pytest.raises(ConfigError, match=match):
        load_config(TINY, sets)


def _tiny_folder_cfg(root: Path, *sets: str):
    return load_config(TINY, ["data.dataset=folder", f"data.root={root}", "data.height=24", "data.width=32",
                              "train.max_steps=4", "train.latest_every=1", "train.sample_every=100",
                              "train.checkpoint_every=100", "train.grid_labels=1", "train.grid_samples=1",
                              *sets])


def test_a_file_that_breaks_after_the_check_stops_the_run_by_name(tmp_path, cache):
    root = _folder(tmp_path / "data", n_train=6, n_val=2)
    cfg = _tiny_folder_cfg(root, "data.cache=false", "data.num_workers=0")
    broken: list[Path] = []

    def break_files(trainer):  # after step 2 every training image is truncated
        if trainer.step == 2:
            for p in sorted((root / "train" / "images").glob("*.png")):
                p.write_bytes(p.read_bytes()[:60])
                broken.append(p)

    out = tmp_path / "run"
    trainer = Trainer(cfg, out, progress=False, step_callback=break_files)
    with pytest.raises(DataError) as exc:
        trainer.run()
    trainer.close()
    msg = str(exc.value)
    assert msg.startswith("training stopped at step 2: cannot read image ")
    assert any(p.name in msg for p in broken) and "--resume" in msg and "holds step 2" in msg
    assert load_checkpoint(out / "checkpoints" / "latest.pt")["step"] == 2
    # resuming re-checks the changed files and refuses before training, naming them
    with pytest.raises(DataError, match="problem\\(s\\) in the data: \\[train\\] cannot read image"):
        Trainer(cfg, out, resume=True, progress=False)


def test_no_data_check_warns_and_trains(tmp_path, cache, capsys):
    root = _folder(tmp_path / "data", n_train=4, n_val=2)
    cfg = _tiny_folder_cfg(root, "train.max_steps=1")
    trainer = Trainer(cfg, tmp_path / "run", progress=False, data_check=False)
    trainer.run()
    trainer.close()
    err = capsys.readouterr().err
    assert "the data check is skipped" in err and "data check [train]" not in err
    assert not (cache / "data_check").exists()
    trainer = Trainer(cfg, tmp_path / "run2", progress=False)
    trainer.close()
    assert "data check [train]: 4 pairs, 4 read, 0 trusted" in capsys.readouterr().err


def test_a_relative_root_from_another_folder_finds_the_same_manifest(tmp_path, cache, monkeypatch):
    root = _folder(tmp_path / "data", n_train=4, n_val=2)
    assert check_data(_cfg(root), workers=1)["splits"]["train"]["checked"] == 4
    monkeypatch.chdir(tmp_path)
    again = check_data(_cfg(Path("data")), workers=1)["splits"]["train"]
    assert (again["checked"], again["trusted"]) == (0, 4)
