"""Data-parallel training on CPU (gloo), launched by torchrun as a user would.

The workers are real processes (``torchrun --nproc_per_node 2`` and two one-process "nodes"
meeting through a c10d rendezvous on 127.0.0.1); ``tests/_dist_worker.py`` records what each
process used at every step.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch

from semsynth.batch_shard import BatchShard
from semsynth.losses.kl import kl_divergence
from semsynth.losses.n1 import class_balance_weights, labelmix_mask
from semsynth.model.checkpoint import load_checkpoint
from semsynth.train.distributed import DistContext
from semsynth.train.loop import StepBatchSampler, Trainer
from semsynth.types import ConfigError

ROOT = Path(__file__).resolve().parents[1]
WORKER = ROOT / "tests" / "_dist_worker.py"
TINY = ROOT / "configs" / "oasis" / "tiny.yaml"
TORCHRUN = [sys.executable, "-m", "torch.distributed.run"]


def _env() -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT / "src"))
    env.pop("WORLD_SIZE", None)
    env.pop("RANK", None)
    return env


def _run(cmd: list, timeout: int = 300) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout, cwd=ROOT,
                          env=_env())
    return proc


def _ok(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _records(prefix: Path, world: int) -> list[dict]:
    return [torch.load(f"{prefix}.rank{r}") for r in range(world)]


def _weights(a: Path, b: Path) -> None:
    ca, cb = load_checkpoint(a), load_checkpoint(b)
    assert ca["step"] == cb["step"]
    for key in ("method", "ema"):
        for k in ca[key]:
            assert torch.equal(ca[key][k], cb[key][k]), f"{key}.{k} differs"


# --- the pieces, in one process ---------------------------------------------------------


def test_step_batches_are_disjoint_slices_of_the_one_process_batch():
    one = StepBatchSampler(40, 8, seed=3)
    halves = [StepBatchSampler(40, 8, seed=3, rank=r, world_size=2) for r in range(2)]
    quarters = [StepBatchSampler(40, 8, seed=3, rank=r, world_size=4) for r in range(4)]
    for step in (0, 4, 5, 13):  # 5 steps per epoch: 13 is in epoch 2
        whole = one.batch(step)
        assert len(set(whole)) == 8
        assert halves[0].batch(step) + halves[1].batch(step) == whole
        assert sum((q.batch(step) for q in quarters), []) == whole
    with pytest.raises(ConfigError, match="not divisible by the 3 processes"):
        StepBatchSampler(40, 8, seed=3, rank=0, world_size=3)


def _two_shards(label: torch.Tensor, nc: int) -> list[BatchShard]:
    """Shards of a 2-process world simulated in one process: reduce_sum adds the full count."""
    b = label.shape[0] // 2
    full = torch.bincount(label.reshape(-1), minlength=nc)
    out = []
    for r in range(2):
        mine = torch.bincount(label[r * b:(r + 1) * b].reshape(-1), minlength=nc)
        out.append(BatchShard(r * b, b, 2 * b, nc, reduce_sum=lambda t, other=full - mine: t.add_(other)))
    return out


def test_shard_draws_and_class_weights_equal_the_whole_batch_ones():
    g = torch.Generator().manual_seed(0)
    label = torch.randint(0, 5, (4, 6, 7), generator=g)
    label[2:] = torch.where(label[2:] == 4, 0, label[2:])  # id 4 only in the first half
    label[:2] = torch.where(label[:2] == 3, 1, label[:2])  # id 3 only in the second half
    shards = _two_shards(label, 6)
    whole_w = class_balance_weights(label, 6, ignore_index=0)
    # by hand for one id: B·H·W / (K · n_c), K = ids present except the don't-care 0
    counts = torch.bincount(label.reshape(-1), minlength=6)
    k = int((counts[1:] > 0).sum())
    assert k == 4
    assert whole_w[label == 3][0].item() == pytest.approx(label.numel() / (k * int(counts[3])))
    assert torch.all(whole_w[label == 0] == 0)
    for r, s in enumerate(shards):
        part = label[2 * r:2 * r + 2]
        assert torch.equal(class_balance_weights(part, 6, 0, s), whole_w[2 * r:2 * r + 2])
        # per-replica weights (the official DataParallel) differ: the half lacks an id
        assert not torch.equal(class_balance_weights(part, 6, 0), whole_w[2 * r:2 * r + 2])
        for per in ("image", "batch"):
            whole_m = labelmix_mask(label, torch.Generator().manual_seed(7), per)
            part_m = labelmix_mask(part, torch.Generator().manual_seed(7), per, s)
            assert torch.equal(part_m, whole_m[2 * r:2 * r + 2])
        whole_z = torch.randn(4, 3, generator=torch.Generator().manual_seed(1))
        assert torch.equal(s.randn(torch.Generator().manual_seed(1), 3), whole_z[2 * r:2 * r + 2])
    with pytest.raises(ValueError, match="outside a global batch of 4"):
        BatchShard(3, 2, 4, 6)


def test_summed_losses_averaged_over_processes_equal_the_whole_batch_sum():
    # SPADE's KL term is a sum over the batch; DDP averages the processes' gradients, so each
    # process scales its slice's sum by W: the average is the one-process value
    g = torch.Generator().manual_seed(2)
    mu, logvar = torch.randn(4, 5, generator=g), torch.randn(4, 5, generator=g)
    whole = kl_divergence(mu, logvar)
    by_hand = -0.5 * sum(float(1 + lv - m * m - lv.exp()) for m, lv in zip(mu.flatten(), logvar.flatten()))
    assert float(whole) == pytest.approx(by_hand, rel=1e-5)
    shards = [BatchShard(2 * r, 2, 4, 3, reduce_sum=lambda t: t) for r in range(2)]
    parts = [kl_divergence(mu[2 * r:2 * r + 2], logvar[2 * r:2 * r + 2], s) for r, s in enumerate(shards)]
    torch.testing.assert_close((parts[0] + parts[1]) / 2, whole)
    assert torch.equal(kl_divergence(mu, logvar, BatchShard.whole(4, 3)), whole)


def test_a_signal_delivered_twice_under_torchrun_is_one_stop_request():
    # SLURM signals every process of the step and the torchrun agent forwards its own copy
    two = types.SimpleNamespace(dist=DistContext(rank=0, world_size=2), _signal=None, _signal_time=0.0)
    Trainer._on_signal(two, signal.SIGTERM, None)
    Trainer._on_signal(two, signal.SIGTERM, None)  # the duplicate: still a graceful stop
    assert two._signal == signal.SIGTERM
    two._signal_time -= 10.0  # a second request seconds later: stop now
    with pytest.raises(KeyboardInterrupt):
        Trainer._on_signal(two, signal.SIGTERM, None)
    one = types.SimpleNamespace(dist=DistContext(), _signal=None, _signal_time=0.0)
    Trainer._on_signal(one, signal.SIGINT, None)
    with pytest.raises(KeyboardInterrupt):  # one process: Ctrl-C twice stops at once, as before
        Trainer._on_signal(one, signal.SIGINT, None)


# --- real processes ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One process and two processes, 4 steps each; the two-process run also split 2 + 2
    (two processes) and 2 + 2 (resumed by one process)."""
    d = tmp_path_factory.mktemp("dist")
    steps = ["--set", "train.max_steps=4"]
    _ok(_run([sys.executable, WORKER, d / "one", d / "rec_one", *steps]))
    _ok(_run([*TORCHRUN, "--standalone", "--nproc_per_node", "2", WORKER, d / "two", d / "rec_two", *steps]))
    return d


def test_each_process_takes_half_the_batch_and_the_global_class_weights(runs):
    (one,) = _records(runs / "rec_one", 1)
    r0, r1 = _records(runs / "rec_two", 2)
    assert one["result"] == r0["result"] == r1["result"] == (4, "max_steps")
    for step in range(4):
        whole = one["labels"][step]
        assert whole.shape[0] == 2 and r0["labels"][step].shape[0] == r1["labels"][step].shape[0] == 1
        assert torch.equal(torch.cat([r0["labels"][step], r1["labels"][step]]), whole)
        # G's adversarial term and D's real term: two weight maps per step, the global batch's
        assert len(one["weights"][step]) == len(r0["weights"][step]) == 2
        for w0, w1, w in zip(r0["weights"][step], r1["weights"][step], one["weights"][step]):
            assert torch.equal(torch.cat([w0, w1]), w)


def test_the_two_processes_hold_identical_weights_after_every_step(runs):
    r0, r1 = _records(runs / "rec_two", 2)
    assert len(r0["method"]) == 4
    assert r0["method"] == r1["method"]
    assert r0["ema"] == r1["ema"]
    assert len(set(r0["method"])) == 4  # and they did train


def test_rank_zero_alone_writes_the_run_folder(runs):
    run = runs / "two"
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["latest.pt", "step_0000004.pt"]
    assert load_checkpoint(run / "checkpoints" / "latest.pt")["step"] == 4
    lines = [json.loads(x) for x in (run / "stats.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [2, 4]
    assert [r["images_seen"] for r in lines] == [4, 8]  # the global batch of 2
    assert len(list(run.glob("events.out.tfevents.*"))) == 1
    assert sorted(p.name for p in (run / "samples").iterdir()) == ["step_0000004.png"]


def test_resume_with_two_processes_is_bit_identical_and_one_process_continues(runs, tmp_path):
    part = tmp_path / "part"
    launch = [*TORCHRUN, "--standalone", "--nproc_per_node", "2", "-m", "semsynth", "train", TINY, "--out", part,
              "--no-progress", "--set", "train.threads=1"]
    first = _run([*launch, "--set", "train.max_steps=2"])
    _ok(first)
    assert first.stdout.count('"stop_reason"') == 1  # one report, from rank 0
    _ok(_run([*launch, "--set", "train.max_steps=4", "--resume"]))
    # the CLI under torchrun, stopped and resumed, equals the uninterrupted worker run
    _weights(part / "checkpoints" / "latest.pt", runs / "two" / "checkpoints" / "latest.pt")
    # one process takes over the two-process run folder
    proc = _run([sys.executable, "-m", "semsynth", "train", TINY, "--out", part, "--no-progress", "--resume",
                 "--set", "train.threads=1", "--set", "train.max_steps=6"])
    _ok(proc)
    assert json.loads(proc.stdout.strip().splitlines()[-1])["step"] == 6
    assert load_checkpoint(part / "checkpoints" / "latest.pt")["images_seen"] == 12


def test_a_failing_process_stops_the_job_and_the_last_good_checkpoint_stays(tmp_path):
    proc = _run([*TORCHRUN, "--standalone", "--nproc_per_node", "2", WORKER, tmp_path / "run", tmp_path / "rec",
                 "--fail", "1:3"])
    assert proc.returncode != 0
    assert "injected failure in process 1 after step 3" in proc.stderr
    ckpts = tmp_path / "run" / "checkpoints"
    assert [p.name for p in ckpts.iterdir()] == ["latest.pt"]
    assert load_checkpoint(ckpts / "latest.pt")["step"] == 2  # written after step 2 (latest_every 2)


def test_a_nan_in_one_process_stops_every_process_with_the_reason(tmp_path):
    proc = _run([*TORCHRUN, "--standalone", "--nproc_per_node", "2", WORKER, tmp_path / "run", tmp_path / "rec",
                 "--nan", "1:3"], timeout=120)
    assert proc.returncode != 0
    told = [(tmp_path / f"rec.diverged{r}").read_text() for r in range(2)]
    assert told[1].startswith("non-finite G loss at step 3 in process 1 of 2")
    assert told[0].startswith("non-finite G loss at step 3 in another process (this is process 0)")
    assert load_checkpoint(tmp_path / "run" / "checkpoints" / "latest.pt")["step"] == 2


def test_two_nodes_on_loopback_complete(tmp_path):
    port = _free_port()
    procs = []
    for node in range(2):
        cmd = [*TORCHRUN, "--nnodes", "2", "--nproc_per_node", "1", "--rdzv-backend", "c10d",
               "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", "semsynth-test", WORKER,
               tmp_path / "run", tmp_path / "rec", "--set", "train.max_steps=2"]
        procs.append(subprocess.Popen([str(c) for c in cmd], cwd=ROOT, env=_env(), stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-6000:]
    r0, r1 = _records(tmp_path / "rec", 2)
    assert r0["result"] == r1["result"] == (2, "max_steps")
    assert r0["method"] == r1["method"]
    assert load_checkpoint(tmp_path / "run" / "checkpoints" / "latest.pt")["step"] == 2
