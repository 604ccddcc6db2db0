"""Training worker for tests/test_distributed.py (run by torchrun, or alone as one process).

``python tests/_dist_worker.py RUN_DIR RECORD_FILE [--resume] [--set k=v ...]`` trains the
tiny OASIS config in ``RUN_DIR`` and saves, per process, what each step used: the label maps
of this process's slice, the class-balancing weights of the discriminator's real term, and a
digest of every parameter and EMA tensor after the step (``RECORD_FILE`` gets ``.rank<r>``).
"""

import argparse
import hashlib
import sys
from pathlib import Path

import torch

import semsynth.losses.n1 as n1
from semsynth.config import load_config
from semsynth.train.loop import Trainer, TrainingDiverged

TINY = Path(__file__).resolve().parents[1] / "configs" / "oasis" / "tiny.yaml"


def digest(module: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("run_dir")
    ap.add_argument("record")
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--set", action="append", default=[])
    ap.add_argument("--fail", default="", help="RANK:STEP — raise in that process after that step")
    ap.add_argument("--nan", default="", help="RANK:STEP — a NaN G loss in that process at that step")
    args = ap.parse_args()
    cfg = load_config(TINY, ["train.threads=1", *args.set])
    record = {"labels": [], "weights": [], "method": [], "ema": []}
    step_labels, step_weights = [], []

    real_weights = n1.class_balance_weights

    def recording_weights(label, *a, **k):
        w = real_weights(label, *a, **k)
        step_weights.append(w.detach().clone())
        return w

    n1.class_balance_weights = recording_weights
    trainer = Trainer(cfg, args.run_dir, resume=args.resume, progress=False)
    real_losses = trainer.method.phase_losses

    def recording_losses(phase, image, label, *a, **k):
        if phase == trainer.method.phases[0]:
            step_labels.append(label.detach().clone())
        out = real_losses(phase, image, label, *a, **k)
        if args.nan and (trainer.dist.rank, trainer.step + 1) == tuple(int(x) for x in args.nan.split(":")):
            out["total"] = out["total"] * float("nan")
        return out

    trainer.method.phase_losses = recording_losses

    def after_step(t):
        record["labels"].append(step_labels.pop())
        record["weights"].append(list(step_weights))
        step_weights.clear()
        record["method"].append(digest(t.method))
        record["ema"].append(digest(t.ema))
        if args.fail and (t.dist.rank, t.step) == tuple(int(x) for x in args.fail.split(":")):
            raise RuntimeError(f"injected failure in process {t.dist.rank} after step {t.step}")

    trainer.step_callback = after_step
    try:
        result = trainer.run()
    except TrainingDiverged as exc:  # what each process was told
        Path(f"{args.record}.diverged{trainer.dist.rank}").write_text(str(exc))
        raise
    finally:
        trainer.close()
    record["result"] = (result.step, result.stop_reason)
    torch.save(record, f"{args.record}.rank{trainer.dist.rank}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
