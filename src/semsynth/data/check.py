"""``semsynth data check CONFIG``: read every pair of every split and report.

``semsynth train`` runs the same check (with ``data.cache`` on, the default for datasets that
fit in memory) before it writes anything. For each split (the config's train and val splits): the number of pairs, the image sizes
found, the share of pixels per class, the don't-care share, the colour-label pixels that were
snapped (folder dataset with ``color_tolerance``), and every problem (unreadable file, ids
out of range, unknown colours, image/label size mismatch) with its message. The check goes
on after a problem, so one run lists them all.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from semsynth.types import SemsynthError

__all__ = ["check_data", "format_report"]


def check_data(cfg, splits=None, datasets: dict | None = None) -> dict:
    """Check the splits of ``cfg.data``.

    Args:
        cfg: a run :class:`semsynth.config.Config`.
        splits: split names (default: ``cfg.data.train_split`` and ``cfg.data.val_split``).
        datasets: already built datasets by split name, used instead of new ones (their
            caches keep the pairs read: ``semsynth train`` checks with its training set).

    Returns:
        ``{"dataset", "classes", "ignore_index", "splits": {name: {"pairs", "sizes",
        "class_share", "dont_care_share", "snapped_pixels", "snapped_per_file", "problems"}}}``
        (``snapped_per_file``: file name → pixels, largest first, files with none left out); shares are
        fractions of all label pixels of the split (0-1); ``problems`` is a list of messages.
    """
    from semsynth.data import build_dataset, dataset_info

    info = dataset_info(cfg.data)
    out = {"dataset": info.name, "classes": list(info.class_names), "ignore_index": info.ignore_index, "splits": {}}
    for split in splits or (cfg.data.train_split, cfg.data.val_split):
        rec: dict = {"pairs": 0, "sizes": {}, "class_share": {}, "dont_care_share": 0.0, "snapped_pixels": 0,
                     "problems": []}
        out["splits"][split] = rec
        keep = datasets is not None and split in datasets
        try:
            ds = datasets[split] if keep else build_dataset(cfg.data, split, train=False, seed=cfg.seed)
        except SemsynthError as exc:
            rec["problems"].append(str(exc))
            continue
        rec["pairs"] = len(ds)
        counts = np.zeros(info.semantic_nc, np.int64)
        sizes: Counter = Counter()
        for i in range(len(ds)):
            try:
                img, lab = ds.load_pair(i, _keep=keep)
            except SemsynthError as exc:
                rec["problems"].append(str(exc))
                continue
            sizes[f"{img.shape[1]}x{img.shape[0]}"] += 1
            counts += np.bincount(np.asarray(lab, np.int64).ravel(), minlength=info.semantic_nc)
        total = max(int(counts.sum()), 1)
        rec["sizes"] = dict(sizes.most_common())
        rec["class_share"] = {info.class_names[c]: counts[c] / total for c in range(info.semantic_nc)
                              if c != info.ignore_index}
        rec["dont_care_share"] = 0.0 if info.ignore_index is None else counts[info.ignore_index] / total
        snapped = getattr(ds, "snapped", {})
        rec["snapped_pixels"] = int(sum(snapped.values()))
        rec["snapped_per_file"] = {Path(k).name: int(v) for k, v in
                                   sorted(snapped.items(), key=lambda kv: -kv[1]) if v}
    return out


def format_report(rep: dict) -> str:
    """The report of :func:`check_data` as text: one table per split, then the problems."""
    lines = [f"dataset {rep['dataset']}: {len(rep['classes'])} ids, don't-care id {rep['ignore_index']}"]
    for split, r in rep["splits"].items():
        sizes = ", ".join(f"{k} ({v})" for k, v in list(r["sizes"].items())[:4]) or "-"
        lines.append(f"\n[{split}] pairs {r['pairs']}  sizes {sizes}  don't-care {100 * r['dont_care_share']:.2f}%  "
                     f"snapped pixels {r['snapped_pixels']:,}  problems {len(r['problems'])}")
        lines.append(f"  {'class':<24} {'pixel share':>11}")
        for name, share in r["class_share"].items():
            lines.append(f"  {name:<24} {100 * share:>10.2f}%")
        top = list(r.get("snapped_per_file", {}).items())
        if top:
            lines.append("  snapped pixels per file: " + ", ".join(f"{k} {v:,}" for k, v in top[:8])
                         + (f", ... ({len(top)} files)" if len(top) > 8 else ""))
        for p in r["problems"]:
            lines.append(f"  PROBLEM: {p}")
    return "\n".join(lines)
