"""Bad input on every command: each case gives a clear one-line error (exit 2) naming the file
or the value, never a traceback, and writes nothing. ``docs/reliability.md`` is generated from
this list (``python docs/reliability.py``). Property-based tests (hypothesis) for the label
reader and the seed parser follow the table.
"""

from __future__ import annotations

import io
import shutil
import sys
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
CAMVID = ROOT / ".." / "shared" / "datasets" / "camvid"
TINY = ROOT / "configs" / "oasis" / "tiny.yaml"
SPADE_TINY = ROOT / "configs" / "spade" / "tiny.yaml"
VAL_LABEL = CAMVID / "valannot" / "0016E5_07959.png"
VAL_IMAGE = CAMVID / "val" / "0016E5_07959.png"


def make_env(tmp: Path) -> dict:
    """A tiny OASIS run, a tiny SPADE run, an export, and a small colour-label folder dataset."""
    from semsynth.cli import main

    env = {"tmp": tmp}
    with redirect_stdout(io.StringIO()), redirect_stderr(io.StringIO()):
        assert main(["train", str(TINY), "--out", str(tmp / "oasis"), "--no-progress", "--set", "train.max_steps=2"]) == 0
        assert main(["train", str(SPADE_TINY), "--out", str(tmp / "spade"), "--no-progress", "--set",
                     "train.max_steps=2", "--set", "model.lambda_vgg=0"]) == 0
        assert main(["export", str(tmp / "oasis" / "checkpoints" / "latest.pt"), "--out", str(tmp / "export"),
                     "--max-shard-mb", "0.05"]) == 0
    env["ckpt"] = tmp / "oasis" / "checkpoints" / "latest.pt"
    env["spade"] = tmp / "spade" / "checkpoints" / "latest.pt"
    env["export"] = tmp / "export"
    folder = tmp / "folder"
    for split in ("train", "val"):
        (folder / split / "images").mkdir(parents=True)
        (folder / split / "labels").mkdir(parents=True)
        for i in range(2):
            Image.new("RGB", (32, 24), (i * 40, 90, 30)).save(folder / split / "images" / f"{i}.png")
            lab = np.zeros((24, 32, 3), np.uint8)
            lab[12:] = (128, 64, 128)
            Image.fromarray(lab).save(folder / split / "labels" / f"{i}.png")
    (folder / "classes.yaml").write_text(yaml.safe_dump({"label_format": "color", "classes": [
        {"name": "sky", "color": [0, 0, 0]}, {"name": "road", "color": [128, 64, 128]}]}))
    env["folder"] = folder
    return env


def _copy_folder(env, name):
    dst = env["tmp"] / name
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(env["folder"], dst)
    return dst


def _file(env, name, data: bytes) -> Path:
    p = env["tmp"] / name
    p.write_bytes(data)
    return p


def _save_label(array: np.ndarray, path: Path, palette: bool = False) -> None:
    """Grey (or 16-bit) PNG of the values; ``palette``: a P-mode PNG whose indices are the values."""
    if palette:
        im = Image.new("P", (array.shape[1], array.shape[0]))
        im.putpalette([v for i in range(256) for v in (i, 255 - i, (7 * i) % 256)])
        im.putdata(array.astype(np.uint8).ravel().tolist())
        im.save(path, optimize=False)
    else:
        Image.fromarray(array).save(path)


def _label_png(env, name, array, mode=None) -> Path:
    p = env["tmp"] / name
    _save_label(array, p, palette=mode == "P")
    return p


def _ckpt_variant(env, name, change) -> Path:
    ck = torch.load(env["ckpt"], weights_only=True)
    change(ck)
    p = env["tmp"] / name
    torch.save(ck, p)
    return p


def _nan_weights(ck):
    k = next(k for k, v in ck["ema"].items() if v.is_floating_point())
    ck["ema"][k] = ck["ema"][k] * float("nan")


def _missing_shard(env) -> Path:
    d = env["tmp"] / "export_missing"
    if d.exists():
        shutil.rmtree(d)
    shutil.copytree(env["export"], d)
    sorted(d.glob("*.safetensors"))[-1].unlink()
    return d


def _folder_variant(env, name, change) -> Path:
    d = _copy_folder(env, name)
    change(d)
    return d


def _truncate(p: Path, keep: float = 0.5) -> None:
    data = p.read_bytes()
    p.write_bytes(data[: int(len(data) * keep)])


def _folder_cfg(root):
    return ["--set", f"data.root={root}", "--set", "data.height=24", "--set", "data.width=32",
            "--set", "train.max_steps=1", "--set", "train.batch_size=2"]


FOLDER_EXAMPLE = str(ROOT / "configs" / "oasis" / "folder_example.yaml")


def _bad_colour(d: Path) -> None:
    Image.new("RGB", (32, 24), (7, 200, 9)).save(d / "train" / "labels" / "0.png")


def _wrong_size(d: Path) -> None:
    Image.new("RGB", (40, 24)).save(d / "train" / "images" / "1.png")


def _truncated_jpeg(d: Path) -> None:
    (d / "train" / "images" / "0.png").unlink()
    Image.new("RGB", (32, 24), (50, 60, 70)).save(d / "train" / "images" / "0.jpg", quality=90)
    _truncate(d / "train" / "images" / "0.jpg", 0.4)


def _unpaired(d: Path) -> None:
    (d / "train" / "labels" / "1.png").unlink()


def _train_folder(env, name, change) -> list[str]:
    return ["train", FOLDER_EXAMPLE, "--out", str(env["tmp"] / f"run_{name}"), "--no-progress",
            *_folder_cfg(_folder_variant(env, name, change))]

# (what, build(env) -> argv, expected text in the error). Every case exits 2 unless noted.
CASES = [
    ("label PNG truncated (sample --labels)", lambda e: ["sample", str(e["ckpt"]), "--labels",
     str(_file(e, "trunc.png", VAL_LABEL.read_bytes()[:300])), "--out", str(e["tmp"] / "o1")], "cannot read label"),
    ("label file that is not an image", lambda e: ["sample", str(e["ckpt"]), "--labels",
     str(_file(e, "text.png", b"hello, not a png")), "--out", str(e["tmp"] / "o2")], "cannot read label"),
    ("colour (RGB) PNG where an id map is expected", lambda e: ["sample", str(e["ckpt"]), "--labels",
     str(VAL_IMAGE), "--out", str(e["tmp"] / "o3")], "is a colour (RGB) image"),
    ("label ids out of the checkpoint's range", lambda e: ["sample", str(e["ckpt"]), "--labels",
     str(_label_png(e, "ids40.png", np.full((24, 32), 40, np.uint8))), "--out", str(e["tmp"] / "o4")],
     "label ids [40]"),
    ("16-bit label with an id out of range", lambda e: ["sample", str(e["ckpt"]), "--labels",
     str(_label_png(e, "ids16.png", np.full((24, 32), 300, np.uint16))), "--out", str(e["tmp"] / "o5")],
     "label ids [300]"),
    ("palette label whose indices are out of range", lambda e: ["sample", str(e["ckpt"]), "--labels",
     str(_label_png(e, "pal.png", np.full((24, 32), 200, np.uint8), "P")), "--out", str(e["tmp"] / "o6")],
     "label ids [200]"),
    ("empty labels folder", lambda e: ["sample", str(e["ckpt"]), "--labels",
     str((e["tmp"] / "empty").mkdir(exist_ok=True) or e["tmp"] / "empty"), "--out", str(e["tmp"] / "o7")],
     "no .png label maps"),
    ("labels path that does not exist", lambda e: ["sample", str(e["ckpt"]), "--labels",
     str(e["tmp"] / "nowhere"), "--out", str(e["tmp"] / "o8")], "no such file or folder"),
    ("negative seed", lambda e: ["sample", str(e["ckpt"]), "--labels", str(VAL_LABEL), "--seeds", "-3",
     "--out", str(e["tmp"] / "o9")], "non-negative"),
    ("empty seed range", lambda e: ["sample", str(e["ckpt"]), "--labels", str(VAL_LABEL), "--seeds", "5-2",
     "--out", str(e["tmp"] / "o10")], "is empty"),
    ("non-numeric seeds", lambda e: ["sample", str(e["ckpt"]), "--labels", str(VAL_LABEL), "--seeds", "a-b",
     "--out", str(e["tmp"] / "o11")], "'a-b' is not a seed or a range"),
    ("re-sample class outside the label space", lambda e: ["sample", str(e["ckpt"]), "--labels", str(VAL_LABEL),
     "--resample-class", "99", "--out", str(e["tmp"] / "o12")], "class 99 is not an id"),
    ("re-sample mask that is not an image", lambda e: ["sample", str(e["ckpt"]), "--labels", str(VAL_LABEL),
     "--resample-mask", str(_file(e, "mask.png", b"nope")), "--out", str(e["tmp"] / "o13")], "mask.png"),
    ("local re-sampling on a generator without noise (SPADE)", lambda e: ["sample", str(e["spade"]), "--labels",
     str(VAL_LABEL), "--resample-class", "3", "--out", str(e["tmp"] / "o14")], "takes no noise"),
    ("--style on a checkpoint without an image encoder", lambda e: ["sample", str(e["ckpt"]), "--labels",
     str(VAL_LABEL), "--style", str(VAL_IMAGE), "--out", str(e["tmp"] / "o15")], "needs an image encoder"),
    ("--style image that cannot be read", lambda e: ["sample", str(e["ckpt"]), "--labels", str(VAL_LABEL),
     "--style", str(_file(e, "style.jpg", b"\xff\xd8\xff garbage")), "--out", str(e["tmp"] / "o16")],
     "cannot read the image"),
    ("checkpoint that does not exist", lambda e: ["sample", str(e["tmp"] / "none.pt"), "--labels", str(VAL_LABEL)],
     "checkpoint not found"),
    ("checkpoint truncated (copied half-way)", lambda e: ["sample", str(_file(e, "half.pt",
     e["ckpt"].read_bytes()[: e["ckpt"].stat().st_size // 2])), "--labels", str(VAL_LABEL)], "cannot read checkpoint"),
    ("a torch file that is not a semsynth checkpoint", lambda e: ["sample", str(
     (torch.save({"weights": torch.zeros(2)}, e["tmp"] / "other.pt"), e["tmp"] / "other.pt")[1]), "--labels",
     str(VAL_LABEL)], "not a semsynth checkpoint"),
    ("checkpoint with NaN weights", lambda e: ["sample", str(_ckpt_variant(e, "nan.pt", _nan_weights)),
     "--labels", str(VAL_LABEL), "--out", str(e["tmp"] / "o19")], "non-finite weights"),
    ("export of a checkpoint with NaN weights", lambda e: ["export", str(_ckpt_variant(e, "nan2.pt", _nan_weights)),
     "--out", str(e["tmp"] / "exp_nan")], "non-finite weights"),
    ("checkpoint of another method (resume with a SPADE config)", lambda e: ["train", str(SPADE_TINY), "--out",
     str(e["tmp"] / "oasis"), "--resume", "--no-progress"], "config differs"),
    ("export folder with a missing shard", lambda e: ["sample", str(_missing_shard(e)), "--labels",
     str(VAL_LABEL), "--out", str(e["tmp"] / "o21")], "safetensors"),
    ("config file that does not exist", lambda e: ["train", str(e["tmp"] / "nope.yaml")], "config file not found"),
    ("config with a YAML syntax error", lambda e: ["train", str(_file(e, "bad.yaml", b"train: [1, 2\n"))],
     "cannot parse YAML"),
    ("unknown config key", lambda e: ["info", str(TINY), "--set", "train.max_stepz=3"], "max_stepz"),
    ("config value of the wrong type", lambda e: ["info", str(TINY), "--set", "train.max_steps=many"],
     "max_steps"),
    ("--set without '='", lambda e: ["info", str(TINY), "--set", "train.max_steps"], "expected key=value"),
    ("unknown method", lambda e: ["info", str(TINY), "--set", "method=gaugan2"], "unknown method"),
    ("unknown dataset", lambda e: ["info", str(TINY), "--set", "data.dataset=imagenet"], "unknown dataset"),
    ("batch larger than the dataset", lambda e: ["train", FOLDER_EXAMPLE, "--out", str(e["tmp"] / "r1"),
     "--no-progress", *_folder_cfg(e["folder"]), "--set", "train.batch_size=8"], "larger than the dataset"),
    ("folder dataset without classes.yaml", lambda e: ["data", "check", FOLDER_EXAMPLE, "--set", "data.root=" + str(
     _folder_variant(e, "noclasses", lambda d: (d / "classes.yaml").unlink()))], "class list not found"),
    ("classes.yaml with two classes of one colour", lambda e: ["data", "check", FOLDER_EXAMPLE, "--set",
     "data.root=" + str(_folder_variant(e, "dupcol", lambda d: (d / "classes.yaml").write_text(yaml.safe_dump(
         {"label_format": "color", "classes": [{"name": "a", "color": [1, 2, 3]}, {"name": "b", "color": [1, 2, 3]}]}))
     ))], "is used by classes"),
    ("colour label with colours not in the class list", lambda e: _train_folder(e, "badcol", _bad_colour),
     "unknown label colour"),
    ("image and label of different sizes", lambda e: _train_folder(e, "sizes", _wrong_size), "sizes differ"),
    ("truncated JPEG training image", lambda e: _train_folder(e, "truncjpg", _truncated_jpeg), "cannot read image"),
    ("an image without its label", lambda e: _train_folder(e, "unpaired", _unpaired), "1.png"),
    ("dataset root that does not exist", lambda e: ["train", FOLDER_EXAMPLE, "--out", str(e["tmp"] / "r6"),
     "--no-progress", *_folder_cfg(e["tmp"] / "no_such_root")], "not found"),
    ("--resume without a checkpoint", lambda e: ["train", str(TINY), "--out", str(e["tmp"] / "fresh"), "--resume",
     "--no-progress"], "no checkpoint at"),
    ("a fresh run into a folder that holds one", lambda e: ["train", str(TINY), "--out", str(e["tmp"] / "oasis"),
     "--no-progress"], "pass --resume"),
    ("eval with an unknown metric", lambda e: ["eval", str(e["ckpt"]), "--metrics", "fid,iq"], "iq"),
    ("import-official with a path that does not exist", lambda e: ["import-official", str(e["tmp"] / "x_EMA.pth"),
     "--dataset", "ade20k", "--out", str(e["tmp"] / "imp")], "x_EMA.pth"),
]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    return make_env(tmp_path_factory.mktemp("bad"))


def run_case(env: dict, build) -> tuple[int, str]:
    """Run one case through the CLI: (exit code, stderr)."""
    from semsynth.cli import main

    argv = build(env)
    err = io.StringIO()
    with redirect_stdout(io.StringIO()), redirect_stderr(err):
        try:
            rc = main(argv)
        except SystemExit as exc:  # argparse errors
            rc = int(exc.code or 0)
    return rc, err.getvalue().strip()


@pytest.mark.parametrize("what,build,expect", CASES, ids=[c[0] for c in CASES])
def test_bad_input_gives_a_clear_error(env, what, build, expect):
    argv = build(env)
    out = Path(argv[argv.index("--out") + 1]) if "--out" in argv else None
    existed = out is not None and out.exists()
    rc, err = run_case(env, lambda e: argv)
    assert rc == 2, (rc, err)
    assert expect in err, err
    assert "Traceback" not in err and len(err.splitlines()) <= 3, err
    if out is not None and not existed:
        assert not out.exists(), f"{out} was written"  # nothing partial


def test_there_are_at_least_30_cases():
    assert len(CASES) >= 30


# ---------------------------------------------------------------- property-based tests
hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from semsynth.cli import parse_seeds  # noqa: E402
from semsynth.data.base import read_label  # noqa: E402
from semsynth.types import DataError  # noqa: E402


@settings(max_examples=60, deadline=None)
@given(st.lists(st.one_of(st.integers(0, 10_000), st.tuples(st.integers(0, 500), st.integers(0, 50))),
                min_size=1, max_size=6))
def test_parse_seeds_round_trips_any_list_of_seeds_and_ranges(parts):
    text, expected = [], []
    for p in parts:
        if isinstance(p, tuple):
            a, n = p
            text.append(f"{a}-{a + n}")
            expected.extend(range(a, a + n + 1))
        else:
            text.append(str(p))
            expected.append(p)
    assert parse_seeds(",".join(text)) == expected


@settings(max_examples=60, deadline=None)
@given(st.text(max_size=12))
def test_parse_seeds_never_fails_other_than_with_valueerror(text):
    try:
        seeds = parse_seeds(text)
    except ValueError:
        return
    assert seeds and all(isinstance(s, int) and s >= 0 for s in seeds)


@settings(max_examples=40, deadline=None)
@given(h=st.integers(1, 12), w=st.integers(1, 12), num_ids=st.integers(2, 300),
       mode=st.sampled_from(["L", "I;16", "P"]), seed=st.integers(0, 2**31 - 1))
def test_read_label_returns_the_ids_or_names_the_bad_ones(tmp_path_factory, h, w, num_ids, mode, seed):
    rng = np.random.default_rng(seed)
    top = 255 if mode in ("L", "P") else 600
    ids = rng.integers(0, top + 1, size=(h, w))
    path = tmp_path_factory.mktemp("lab") / "l.png"
    if mode == "I;16":
        Image.fromarray(ids.astype(np.uint16)).save(path)
    else:
        _save_label(ids.astype(np.uint8), path, palette=mode == "P")
    if ids.max() < num_ids:
        out = read_label(path, None, num_ids=num_ids)
        assert out.dtype == np.int64 and np.array_equal(out, ids)
    else:
        with pytest.raises(DataError) as exc:
            read_label(path, None, num_ids=num_ids)
        assert str(path) in str(exc.value) and str(int(ids[ids >= num_ids].min())) in str(exc.value)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
