"""Faults: SIGKILL at any moment, corrupt checkpoints, disk full, two writers, SIGTERM.

The kill tests run the tiny config in a child process that kills itself with SIGKILL at a
chosen point (inside a training step, between writing and renaming a checkpoint, between
writing and renaming a sample grid), then resume in this process and compare the final
weights bit for bit with an uninterrupted run.
"""

import errno
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from semsynth.cli import main
from semsynth.config import load_config
from semsynth.fileio import DiskFull
from semsynth.model.checkpoint import load_checkpoint
from semsynth.train.loop import Trainer

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "oasis" / "tiny.yaml"  # 6 steps, latest every 2, step_*.pt and grids every 4

# Child process: patch one function so that the process SIGKILLs itself at a chosen point.
CHILD = r"""
import os, signal, sys
from semsynth.cli import main
kind, out = sys.argv[1], sys.argv[2]
if kind == "step":
    from semsynth.methods.oasis.method import OASIS
    real, calls = OASIS.phase_losses, {"n": 0}
    def phase_losses(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 7:  # step 4, G phase
            os.kill(os.getpid(), signal.SIGKILL)
        return real(self, *a, **k)
    OASIS.phase_losses = phase_losses
else:
    suffix = "latest.pt" if kind == "checkpoint" else ".png"
    real, seen = os.replace, {"n": 0}
    def replace(src, dst, *a, **k):
        if str(dst).endswith(suffix):
            seen["n"] += 1
            if seen["n"] == (2 if kind == "checkpoint" else 1):  # the temp file is complete here
                os.kill(os.getpid(), signal.SIGKILL)
        return real(src, dst, *a, **k)
    os.replace = replace
sys.exit(main(["train", sys.argv[3], "--out", out, "--no-progress"]))
"""


def _child(kind: str, out: Path, config: Path = TINY) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", CHILD, kind, str(out), str(config)], capture_output=True,
                          text=True, timeout=300, cwd=ROOT)


def _temp_files(run: Path) -> list[Path]:
    return [p for p in run.rglob("*.tmp")]


def _assert_same_weights(a: Path, b: Path) -> None:
    ca, cb = load_checkpoint(a), load_checkpoint(b)
    assert ca["step"] == cb["step"]
    for part in ("method", "ema"):
        for k, v in ca[part].items():
            assert torch.equal(v, cb[part][k]), (part, k)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("reference")
    assert main(["train", str(TINY), "--out", str(out), "--no-progress"]) == 0
    return out


@pytest.mark.parametrize("kind", ["step", "checkpoint", "grid"])
def test_sigkill_then_resume_is_bit_identical_and_leaves_no_temp_file(kind, reference, tmp_path):
    out = tmp_path / "run"
    proc = _child(kind, out)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert load_checkpoint(out / "checkpoints" / "latest.pt")["step"] == 2
    assert (out / ".lock").exists()  # the killed process could not release it
    if kind in ("checkpoint", "grid"):
        assert _temp_files(out), "the kill should have left a temp file behind"
    assert main(["train", str(TINY), "--out", str(out), "--no-progress", "--resume"]) == 0
    assert _temp_files(out) == []
    assert not (out / ".lock").exists()
    _assert_same_weights(reference / "checkpoints" / "latest.pt", out / "checkpoints" / "latest.pt")
    # the logs read as one run: no step twice in stats.jsonl, TensorBoard agrees with it
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    steps = [json.loads(x)["step"] for x in (out / "stats.jsonl").read_text().splitlines()]
    assert steps == [2, 4, 6]
    acc = EventAccumulator(str(out), size_guidance={"scalars": 0})
    acc.Reload()
    assert [e.step for e in acc.Scalars("loss/G_adv")] == steps


def test_a_resume_in_the_same_second_purges_the_killed_runs_later_steps(tmp_path):
    """TensorBoard reads event files in name order (second, host, pid): a resume that opens its
    file in the killed run's second, with a pid that sorts first, must still be read last, or
    the killed run's steps after the resumed one come back."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from torch.utils.tensorboard import SummaryWriter

    from semsynth.train.runlog import RunLog

    killed = SummaryWriter(log_dir=str(tmp_path), filename_suffix="")
    for step in (2, 4):
        killed.add_scalar("loss/G_adv", 1.0, step)
    killed.close()
    (old,) = tmp_path.glob("events.out.tfevents.*")
    second = int(time.time())  # the killed run's file: this second, a pid that sorts last
    name = f"events.out.tfevents.{second}.{socket.gethostname()}.99999999"
    old.rename(tmp_path / name)
    log = RunLog(tmp_path)
    log.open(step=2, tensorboard=True)
    log.tb("add_scalar", "loss/G_adv", 2.0, 4)
    log._tb.close()
    names = sorted(f.name for f in tmp_path.glob("events.out.tfevents.*"))
    assert names[0] == name and len(names) == 2
    acc = EventAccumulator(str(tmp_path), size_guidance={"scalars": 0})
    acc.Reload()
    assert [(e.step, e.value) for e in acc.Scalars("loss/G_adv")] == [(2, 1.0), (4, 2.0)]


def test_corrupt_latest_is_named_and_last_good_resume_is_explicit(reference, tmp_path, capsys):
    out = tmp_path / "run"
    shutil.copytree(reference, out)
    latest = out / "checkpoints" / "latest.pt"
    data = latest.read_bytes()
    latest.write_bytes(data[: len(data) // 2])  # copied half-way
    assert main(["train", str(TINY), "--out", str(out), "--no-progress", "--resume"]) == 2
    err = capsys.readouterr().err
    assert "latest.pt is corrupt or truncated" in err and "step_0000004.pt" in err
    assert "--resume-from-last-good" in err
    assert main(["train", str(TINY), "--out", str(out), "--no-progress", "--resume-from-last-good"]) == 2
    assert "needs --resume" in capsys.readouterr().err
    assert main(["train", str(TINY), "--out", str(out), "--no-progress", "--resume",
                 "--resume-from-last-good"]) == 0
    assert "resuming from" in capsys.readouterr().err
    # from step 4 to 6 again: the same weights as the uninterrupted run
    _assert_same_weights(reference / "checkpoints" / "latest.pt", latest)


def test_disk_full_keeps_the_previous_checkpoint_and_names_path_and_size(tmp_path, monkeypatch, capsys):
    import semsynth.fileio as config

    real_fdopen = os.fdopen
    state = {"latest_writes": 0}

    class HalfThenFull:
        def __init__(self, fh):
            self.fh = fh

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.fh.close()

        def write(self, data):
            self.fh.write(data[: len(data) // 2])
            raise OSError(errno.ENOSPC, "No space left on device")

        def __getattr__(self, name):
            return getattr(self.fh, name)

    def fdopen(fd, *a, **k):
        fh = real_fdopen(fd, *a, **k)
        name = os.readlink(f"/proc/self/fd/{fd}") if os.path.exists(f"/proc/self/fd/{fd}") else ""
        if ".latest.pt." in name:
            state["latest_writes"] += 1
            if state["latest_writes"] == 2:  # the step-4 save
                return HalfThenFull(fh)
        return fh

    monkeypatch.setattr(config.os, "fdopen", fdopen)
    out = tmp_path / "run"
    assert main(["train", str(TINY), "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "no space left" in err and str(out / "checkpoints" / "latest.pt") in err and "bytes" in err
    assert load_checkpoint(out / "checkpoints" / "latest.pt")["step"] == 2  # intact
    assert _temp_files(out) == []
    assert not (out / ".lock").exists()


def test_disk_full_is_a_diskfull_error(tmp_path, monkeypatch):
    import semsynth.fileio as config

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    (tmp_path / "f.bin").write_bytes(b"old")
    monkeypatch.setattr(config.os, "replace", full)
    with pytest.raises(DiskFull, match=r"needs 5 bytes"):
        config.atomic_write_bytes(tmp_path / "f.bin", b"hello")
    assert (tmp_path / "f.bin").read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.bin"]


HOLDER = r"""
import fcntl, os, socket, sys, time
fd = os.open(sys.argv[1], os.O_CREAT | os.O_RDWR)
fcntl.flock(fd, fcntl.LOCK_EX)
os.write(fd, f"{os.getpid()} {socket.gethostname()}\n".encode())
print("locked", flush=True)
time.sleep(60)
"""


def test_a_second_process_on_the_same_run_folder_stops_at_once(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(out / ".lock")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        t = time.time()
        assert main(["train", str(TINY), "--out", str(out), "--no-progress"]) == 2
        assert time.time() - t < 10
        err = capsys.readouterr().err
        assert f"pid {holder.pid}" in err and "another semsynth process" in err and ".lock" in err
        assert not (out / "config.yaml").exists()
    finally:
        holder.kill()
        holder.wait()
    # the owner is gone (killed: the kernel dropped its lock); its lock file is taken over
    assert (out / ".lock").exists()
    assert main(["train", str(TINY), "--out", str(out), "--no-progress", "--set", "train.max_steps=2"]) == 0
    assert f"lock file of an ended run ({holder.pid}" in capsys.readouterr().err
    assert not (out / ".lock").exists()


def test_sigterm_writes_a_checkpoint_and_exits_0_with_the_resume_command(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "semsynth.cli", "train", str(TINY), "--out", str(out),
                             "--no-progress", "--set", "train.max_steps=100000", "--set", "train.latest_every=100000",
                             "--set", "train.checkpoint_every=100000", "--set", "train.sample_every=100000"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stats = out / "stats.jsonl"
    deadline = time.time() + 120
    while not (stats.exists() and stats.read_text().count("\n") >= 2) and time.time() < deadline:
        time.sleep(0.2)
    assert proc.poll() is None, proc.communicate()[1][-2000:]
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr[-2000:]
    rec = json.loads(stdout.strip().splitlines()[-1])
    assert rec["stop_reason"] == "SIGTERM" and rec["step"] >= 4
    assert "stopped by SIGTERM" in stderr and "--resume" in stderr
    assert load_checkpoint(out / "checkpoints" / "latest.pt")["step"] == rec["step"]
    assert _temp_files(out) == [] and not (out / ".lock").exists()


def test_progress_counts_the_time_budget_when_there_is_one(tmp_path, capsys):
    cfg = load_config(TINY, ["train.max_steps=3", "train.max_minutes=5"])
    Trainer(cfg, tmp_path / "run", progress=True).run()
    err = capsys.readouterr().err
    assert "/300 [" in err and "step=3/3" in err  # seconds of the 5-minute budget, steps so far
    assert "/3 [" not in err  # not a bar over the steps


def test_tensorboard_shows_the_curves_and_the_grids(reference):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = list(reference.glob("events.out.tfevents.*"))
    assert events, "no TensorBoard event file next to stats.jsonl"
    acc = EventAccumulator(str(reference), size_guidance={"images": 0, "scalars": 0})
    acc.Reload()
    tags = acc.Tags()
    assert {"loss/G_adv", "loss/D_real", "loss/D_fake", "loss/D_labelmix", "speed/sec_per_step",
            "speed/images_per_s"} <= set(tags["scalars"])
    stats = [json.loads(x) for x in (reference / "stats.jsonl").read_text().splitlines()]
    g_adv = acc.Scalars("loss/G_adv")
    assert [e.step for e in g_adv] == [r["step"] for r in stats] == [2, 4, 6]
    assert [e.value for e in g_adv] == pytest.approx([r["G_adv"] for r in stats], rel=1e-6)
    assert [e.step for e in acc.Images("samples")] == [4, 6]
