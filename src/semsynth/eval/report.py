"""``semsynth report``: one Markdown report with plots comparing training runs.

For each run folder it reads ``config.yaml``, ``stats.jsonl`` (losses, and ``eval_fid`` from
checkpoint selection) and the newest evaluation result (``metrics.json`` found in the run
folder or any sub-folder, e.g. written by ``semsynth eval --out RUN/eval``), and writes into
the output folder: ``report.md`` with one table comparing the runs side by side, and PNG plots
— losses over steps, FID over steps, per-class IoU bars — plus each run's latest sample grid.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Sequence

from semsynth.fileio import atomic_write_bytes
from semsynth.types import DataError

COLUMNS = ("fid", "miou", "pixel_acc", "ms_ssim", "lpips")


def read_stats(path: Path) -> list[dict]:
    """The records of a ``stats.jsonl`` (a truncated last line, from a killed run, is skipped).

    Raises:
        DataError: a malformed line other than the last (names the file and line).
    """
    if not path.is_file():
        return []
    lines = path.read_text().splitlines()
    out = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            if i == len(lines) - 1:
                continue
            raise DataError(f"{path}:{i + 1}: not a JSON line") from None
    return out


def latest_metrics(run: Path) -> dict | None:
    """The newest ``metrics.json`` under ``run`` (by modification time), or None."""
    files = sorted(run.rglob("metrics.json"), key=lambda p: p.stat().st_mtime)
    return json.loads(files[-1].read_text()) if files else None


def _plot_series(records: list[dict], keys: Sequence[str], title: str, path: Path, ylabel: str) -> bool:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    drawn = False
    for key in keys:
        pts = [(r["step"], r[key]) for r in records if key in r]
        if pts:
            ax.plot(*zip(*pts), label=key)
            drawn = True
    if drawn:
        ax.set_xlabel("step")
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(path, dpi=100)
    plt.close(fig)
    return drawn


def _plot_iou(per_class: dict, title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    names = list(per_class)
    ax.bar(range(len(names)), [per_class[n] for n in names])
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=60, ha="right", fontsize=8)
    ax.set_ylabel("IoU (%)")
    ax.set_ylim(0, 100)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _fmt(v) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:.2f}"
    return str(v)


def write_report(runs: Sequence[str | os.PathLike], out: str | os.PathLike) -> Path:
    """Write ``out/report.md`` and its plots for the given run folders.

    Raises:
        DataError: a run folder without ``config.yaml`` (names the folder).

    Returns:
        The path of ``report.md``.
    """
    import yaml

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows, sections = [], []
    for k, run in enumerate(map(Path, runs)):
        cfg_path = run / "config.yaml"
        if not cfg_path.is_file():
            raise DataError(f"{run}: not a run folder (no config.yaml)")
        cfg = yaml.safe_load(cfg_path.read_text())
        name = f"{k}_{run.name}"
        stats = read_stats(run / "stats.jsonl")
        train_recs = [r for r in stats if not any(key.startswith("eval_") for key in r)]
        eval_recs = [r for r in stats if "eval_fid" in r]
        metrics = latest_metrics(run) or {}
        last = train_recs[-1] if train_recs else {}
        rows.append([run.name, cfg.get("method"), cfg["data"]["dataset"],
                     f"{cfg['data']['height']}x{cfg['data']['width']}", metrics.get("step", last.get("step")),
                     last.get("images_seen"), round(last["seconds"] / 60, 1) if "seconds" in last else None]
                    + [metrics.get(c) for c in COLUMNS])
        sec = [f"## {run.name}", "", f"`{run}` — method `{cfg.get('method')}`, dataset `{cfg['data']['dataset']}`", ""]
        loss_keys = sorted({key for r in train_recs for key in r} - {"step", "images_seen", "seconds", "sec_per_step"})
        if loss_keys and _plot_series(train_recs, loss_keys, f"{run.name}: losses", out / f"{name}_losses.png", "loss"):
            sec += [f"![losses]({name}_losses.png)", ""]
        if eval_recs and _plot_series(eval_recs, ["eval_fid"], f"{run.name}: val FID", out / f"{name}_fid.png", "FID"):
            sec += [f"![FID]({name}_fid.png)", ""]
        if metrics.get("per_class_iou"):
            _plot_iou(metrics["per_class_iou"], f"{run.name}: per-class IoU ({metrics.get('split')})",
                      out / f"{name}_iou.png")
            sec += [f"![per-class IoU]({name}_iou.png)", ""]
        if metrics.get("absent"):
            sec += ["Absent metrics: " + "; ".join(f"{m}: {r}" for m, r in metrics["absent"].items()), ""]
        grids = sorted((run / "samples").glob("step_*.png"))
        if grids:
            shutil.copyfile(grids[-1], out / f"{name}_samples.png")
            sec += [f"Latest sample grid ({grids[-1].stem}; label | real | EMA samples):", "",
                    f"![samples]({name}_samples.png)", ""]
        sections.append("\n".join(sec))
    header = ["run", "method", "dataset", "resolution", "steps", "images seen", "train min"] + list(COLUMNS)
    table = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    table += ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in rows]
    text = "\n".join(["# semsynth report", "",
                      "FID and mIoU are computed on the split named in each run's metrics.json "
                      "(val is the selection split; final numbers belong to a held-out split).", "",
                      *table, "", *sections])
    path = out / "report.md"
    atomic_write_bytes(path, text.encode())
    return path
