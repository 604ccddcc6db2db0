"""``semsynth eval``, ``semsynth eval-real`` and ``semsynth report`` (added to the main CLI)."""

from __future__ import annotations

import argparse
import json


def _print_result(result: dict, as_json: bool) -> None:
    for k, v in result.items():
        if k == "per_class_iou":
            print("per_class_iou: " + ", ".join(f"{n} {x:.1f}" for n, x in v.items()))
        elif isinstance(v, float):
            print(f"{k}: {v:.4f}")
        else:
            print(f"{k}: {v}")
    if as_json:
        print(json.dumps(result))


def cmd_eval(args: argparse.Namespace) -> int:
    """``semsynth eval CHECKPOINT [--split val] [--metrics ...] [--limit N] [--out DIR] [--json]
    [--vae-latent prior|encode_real]``."""
    from semsynth.eval.evaluate import evaluate_checkpoint, parse_metrics
    from semsynth.model.build import select_device

    res = evaluate_checkpoint(args.checkpoint, split=args.split, metrics=parse_metrics(args.metrics),
                              limit=args.limit, out_dir=args.out, device=select_device(args.device),
                              vae_latent=args.vae_latent)
    _print_result(res, args.json)
    return 0


def cmd_eval_real(args: argparse.Namespace) -> int:
    """``semsynth eval-real CONFIG [--split val] [--metrics miou,fid] [--limit N] [--native] [--json]``."""
    from semsynth.config import load_config
    from semsynth.eval.evaluate import evaluate_real, parse_metrics
    from semsynth.model.build import select_device

    cfg = load_config(args.config, args.set or [])
    res = evaluate_real(cfg, split=args.split, metrics=parse_metrics(args.metrics), limit=args.limit,
                        native=args.native, device=select_device(args.device), out_dir=args.out)
    _print_result(res, args.json)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """``semsynth report RUN_DIR [RUN_DIR ...] [--out DIR]``."""
    from semsynth.eval.report import write_report

    path = write_report(args.runs, args.out)
    print(json.dumps({"report": str(path)}))
    return 0


def add_commands(sub) -> None:
    """Register ``eval``, ``eval-real`` and ``report`` on the main CLI's subparsers."""
    e = sub.add_parser("eval", help="FID, mIoU (ESPNet judge) and diversity of a checkpoint")
    e.add_argument("checkpoint")
    e.add_argument("--split", default=None, help="default: the config's val split")
    e.add_argument("--metrics", default="fid,kid,miou,diversity")
    e.add_argument("--limit", type=int, default=None, help="first N label maps sorted by file name")
    e.add_argument("--vae-latent", choices=("prior", "encode_real"), default=None,
                   help="a VAE generator's latent: prior (seeded N(0, I)) or encode_real (the official SPADE/CC-FPSE "
                        "test protocol: the encoded real photo); default: the checkpoint's eval.vae_latent")
    e.add_argument("--out", default=None, help="write metrics.json and a few images here")
    e.add_argument("--json", action="store_true", help="print one JSON object on the last line")
    e.add_argument("--device", default="auto")
    e.set_defaults(func=cmd_eval)

    r = sub.add_parser("eval-real", help="the same metrics on real images (the mIoU ceiling)")
    r.add_argument("config")
    r.add_argument("--split", default=None)
    r.add_argument("--metrics", default="miou,fid,kid")
    r.add_argument("--limit", type=int, default=None)
    r.add_argument("--native", action="store_true", help="feed real images at their own resolution")
    r.add_argument("--set", action="append", metavar="KEY=VALUE")
    r.add_argument("--out", default=None)
    r.add_argument("--json", action="store_true")
    r.add_argument("--device", default="auto")
    r.set_defaults(func=cmd_eval_real)

    p = sub.add_parser("report", help="report.md with plots and a comparison table of runs")
    p.add_argument("runs", nargs="+")
    p.add_argument("--out", default="report")
    p.set_defaults(func=cmd_report)
