"""Linear learning-rate decay (train.lr_decay_*), NVlabs/SPADE's niter / niter_decay schedule."""

import json
from pathlib import Path

import pytest

from semsynth.config import load_config
from semsynth.train.loop import Trainer, lr_scale
from semsynth.types import ConfigError

TINY = Path(__file__).resolve().parents[1] / "configs" / "oasis" / "tiny.yaml"


def test_lr_scale_by_hand():
    # SPADE --niter 2 --niter_decay 2, 10 steps per epoch: epochs 1-3 at lr, epoch 4 at lr/2, then 0
    got = [lr_scale(s, 2, 4, 10) for s in (0, 19, 20, 29, 30, 39, 40, 99)]
    assert got == [1.0, 1.0, 1.0, 1.0, 0.5, 0.5, 0.0, 0.0]
    assert lr_scale(150, 100, 200) == 0.5 and lr_scale(5, None, None, 3) == 1.0
    # SPADE's own arithmetic: after epoch e > niter the rate drops by lr / niter_decay
    lr, niter, nd = 2e-4, 3, 4
    old = lr
    for e in range(1, niter + nd + 1):  # the rate used during epoch e, then the update after it
        assert old == pytest.approx(lr * lr_scale((e - 1) * 7, niter, niter + nd, 7))
        if e > niter:
            old -= lr / nd
    with pytest.raises(ValueError):
        lr_scale(0, 0, 1, 0)


def test_the_loop_sets_both_optimizers_rates_per_step(tmp_path):
    cfg = load_config(TINY, ["train.max_steps=4", "train.lr_decay_start=1", "train.lr_decay_end=3",
                             "train.lr_decay_unit=step", "train.log_every=1", "train.sample_every=100"])
    seen = []

    def record(tr):
        seen.append({p: opt.param_groups[0]["lr"] for p, opt in tr.optimizers.items()})

    tr = Trainer(cfg, tmp_path / "run", progress=False, step_callback=record)
    tr.run()
    tr.close()
    base = tr.base_lr
    assert base == {"G": cfg.train.lr_g, "D": cfg.train.lr_d}
    for s, scale in enumerate([1.0, 1.0, 0.5, 0.0]):
        assert seen[s] == {p: pytest.approx(b * scale) for p, b in base.items()}
    stats = [line for line in (tmp_path / "run" / "stats.jsonl").read_text().splitlines() if "lr_scale" in line]
    assert [json.loads(line)["lr_scale"] for line in stats] == [1.0, 1.0, 0.5, 0.0]


@pytest.mark.parametrize("sets,match", [
    (["train.lr_decay_start=5"], "go together"),
    (["train.lr_decay_start=5", "train.lr_decay_end=5"], "must be >= 0 and <"),
    (["train.lr_decay_unit=step"], "applies only with"),
    (["train.lr_decay_start=1", "train.lr_decay_end=2", "train.lr_decay_unit=iter"], "epoch or step"),
])
def test_lr_decay_config_errors(sets, match):
    with pytest.raises(ConfigError, match=match):
        load_config(TINY, sets)
