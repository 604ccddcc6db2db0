"""The ``semsynth`` command line: train, sample, info, export, import-official, eval, eval-real, report.

Every command turns bad input into a one-line error naming the file and the value, exits
non-zero, and writes nothing partial (files are written to a temp name and renamed).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from semsynth.types import SemsynthError


def parse_seeds(text: str) -> list[int]:
    """``"0-3"`` → [0, 1, 2, 3]; ``"1,5,9"`` → [1, 5, 9]; ``"7"`` → [7]; ranges and lists mix.

    Raises:
        ValueError: malformed text or a negative seed.
    """
    seeds: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            if "-" in part[1:]:
                lo, hi = part.split("-", 1)
                a, b = int(lo), int(hi)
                if b < a:
                    raise ValueError(f"seed range {part!r} is empty")
                seeds.extend(range(a, b + 1))
            else:
                seeds.append(int(part))
        except ValueError as exc:
            if "is empty" in str(exc):
                raise
            raise ValueError(f"bad seeds {text!r}: {part!r} is not a seed or a range "
                             "(expected e.g. 0-3 or 1,5,9, non-negative)") from None
    if not seeds or min(seeds) < 0:
        raise ValueError(f"bad seeds {text!r}: expected e.g. 0-3 or 1,5,9 (non-negative)")
    return seeds


def cmd_info(args: argparse.Namespace) -> int:
    """``semsynth info CONFIG [--set k=v] [--json]``."""
    from semsynth.config import config_to_dict, config_to_yaml, load_config
    from semsynth.data import build_dataset, dataset_info
    from semsynth.model.build import build_method

    cfg = load_config(args.config, args.set or [])
    info = dataset_info(cfg.data)
    import torch

    with torch.device("meta"):  # shapes only: no memory, no initialisation cost
        method = build_method(cfg, info)
    params = method.parameter_counts()
    if method.frozen:  # train.freeze: G counts them; this many are never trained
        params["G_frozen"] = sum(p.numel() for n, p in method.generator.named_parameters() if n in method.frozen)
    data = {"name": info.name, "semantic_nc": info.semantic_nc, "num_classes": info.num_classes,
            "ignore_index": info.ignore_index, "class_names": list(info.class_names),
            "instance_edges": info.instance_edges, "input_nc": info.input_nc, "splits": {}}
    for split in (cfg.data.train_split, cfg.data.val_split):
        try:
            data["splits"][split] = len(build_dataset(cfg.data, split, train=False, seed=cfg.seed))
        except SemsynthError as exc:
            data["splits"][split] = f"unavailable: {exc}"
    print(config_to_yaml(cfg))
    print("parameters:")
    for k, v in params.items():
        print(f"  {k}: {v:,} ({v / 1e6:.2f}M)")
    print(f"dataset: {info.name}, {info.num_classes} classes (+ don't-care id {info.ignore_index}), "
          f"semantic_nc {info.semantic_nc}" + (" + 1 instance-edge channel" if info.instance_edges else "")
          + f"; pairs: {data['splits']}")
    if args.json:
        print(json.dumps({"config": config_to_dict(cfg), "parameters": params, "dataset": data}))
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    """``semsynth train CONFIG [--out DIR] [--set k=v ...] [--resume]``."""
    from semsynth.config import load_config
    from semsynth.train.loop import Trainer

    cfg = load_config(args.config, args.set or [])
    out = Path(args.out) if args.out else Path("runs") / Path(args.config).stem
    evaluator = None
    if cfg.eval.every > 0:
        from semsynth.eval.selection import fid_evaluator

        evaluator = fid_evaluator(cfg)
    if args.resume_from_last_good and not args.resume:
        raise SemsynthError("--resume-from-last-good needs --resume")
    trainer = Trainer(cfg, out, resume=args.resume, progress=not args.no_progress, evaluator=evaluator,
                      resume_from_last_good=args.resume_from_last_good, data_check=not args.no_data_check)
    try:
        result = trainer.run()
    finally:
        trainer.close()
    if not trainer.main:  # one report per job, from rank 0
        return 0
    print(json.dumps({"out": str(result.out_dir), "step": result.step, "images_seen": result.images_seen,
                      "seconds": round(result.elapsed_seconds, 1), "stop_reason": result.stop_reason}))
    if result.stop_reason in ("SIGTERM", "SIGINT"):
        print(f"semsynth train: stopped by {result.stop_reason} at step {result.step}; checkpoint "
              f"{result.out_dir / 'checkpoints' / 'latest.pt'} written; resume with: semsynth train {args.config} "
              f"--out {result.out_dir} --resume" + "".join(f" --set {s}" for s in (args.set or [])), file=sys.stderr)
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    """``semsynth sample CHECKPOINT --labels PATH [--out DIR] [--seeds 0-3] ...``."""
    import numpy as np

    from semsynth.imageio import save_png
    from semsynth.labels import to_uint8_image
    from semsynth.model.build import select_device
    from semsynth.sample.sampler import Sampler, read_label_png, read_mask_png
    from semsynth.types import DataError

    seeds = parse_seeds(args.seeds)
    labels_path = Path(args.labels)
    if labels_path.is_dir():
        files = sorted(p for p in labels_path.iterdir() if p.suffix.lower() == ".png")
        if not files:
            raise DataError(f"{labels_path}: no .png label maps in this folder")
    elif labels_path.is_file():
        files = [labels_path]
    else:
        raise DataError(f"--labels {labels_path}: no such file or folder")
    sampler = Sampler.from_checkpoint(args.checkpoint, device=select_device(args.device))
    # Validate every input before writing anything.
    labels = [sampler.prepare_label(read_label_png(f, sampler.info), str(f)) for f in files]
    mask = read_mask_png(args.resample_mask) if args.resample_mask else None
    local = args.resample_class is not None or mask is not None
    regions = [sampler.region(lab, args.resample_class, mask, source=f"--resample-class/--resample-mask, {f}")
               for f, lab in zip(files, labels)] if local else [None] * len(files)
    style = None
    if args.style and local:
        raise DataError("--style and local re-sampling (--resample-class/--resample-mask) do not combine")
    if args.style:
        from PIL import Image

        try:
            with Image.open(args.style) as im:
                style_img = np.asarray(im.convert("RGB"))
        except (OSError, ValueError) as exc:
            raise DataError(f"--style {args.style}: cannot read the image ({exc})") from None
        style = sampler.style_latent(style_img, source=f"--style {args.style}")
    if local and sampler.region_resampling_unavailable():
        raise DataError(f"--resample-class/--resample-mask: {sampler.region_resampling_unavailable()}")
    deterministic = sampler.deterministic or style is not None
    if sampler.noise == "none" and sampler.num_outputs > 1:
        k = sampler.num_outputs
        print(f"note: this generator takes no noise; it makes {k} fixed images per label map: "
              f"seed i gives output i mod {k}" + (f" (seeds {seeds} repeat outputs)" if len(set(s % k for s in seeds)) < len(seeds) else ""),
              file=sys.stderr)
    if deterministic and len(seeds) > 1:
        method = getattr(getattr(sampler, "config", None), "method", "this")
        why = "the style image fixes the latent" if style is not None else f"the {method} generator takes no noise"
        print(f"note: {why}: one image per label map, seeds {seeds} are not used", file=sys.stderr)
    out = Path(args.out)
    written = 0
    for f, lab, region in zip(files, labels, regions):
        if deterministic:
            z = style.expand(1, -1) if style is not None else None
            img = sampler.generate(lab, seeds=[0], z=z)
            tag = "_style" if style is not None else ""
            save_png(out / f"{f.stem}{tag}.png", to_uint8_image(img)[0])
            written += 1
            continue
        if local:
            if not region.any():
                print(f"warning: {f.name}: the region to re-sample is empty; images equal the base seed's",
                      file=sys.stderr)
            imgs = sampler.resample_region(lab, region, args.base_seed, seeds)
            tag = f"_base{args.base_seed}" + (f"_class{args.resample_class}" if args.resample_class is not None else "") \
                + ("_mask" if mask is not None else "")
        else:
            imgs = sampler.sample_many(lab, seeds)
            tag = ""
        for s, img in zip(seeds, to_uint8_image(imgs)):
            save_png(out / f"{f.stem}{tag}_seed{s}.png", img)
            written += 1
    print(json.dumps({"out": str(out), "images": written, "label_maps": len(files),
                      "seeds": [] if deterministic else seeds, "deterministic": deterministic,
                      **({"outputs_per_label_map": sampler.num_outputs} if sampler.num_outputs > 1 else {})}))
    return 0


def cmd_data_check(args: argparse.Namespace) -> int:
    """``semsynth data check CONFIG [--set k=v] [--json] [--workers N] [--full]``: exit 1 if
    any problem is found."""
    from semsynth.config import load_config
    from semsynth.data.check import check_data, format_report

    cfg = load_config(args.config, args.set or [])
    rep = check_data(cfg, workers=args.workers, progress=not args.no_progress, trust=not args.full)
    print(format_report(rep))
    if args.json:
        print(json.dumps(rep))
    problems = sum(len(r["problems"]) for r in rep["splits"].values())
    if problems:
        print(f"semsynth data check: {problems} problem(s) found", file=sys.stderr)
        return 1
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    """``semsynth serve CHECKPOINT_OR_EXPORT [--host H] [--port P] [--device D] [--queue-size N]
    [--cache-seconds S]`` (blocks)."""
    from semsynth.model.build import select_device
    from semsynth.web.app import serve

    serve(args.checkpoint, args.host, args.port, str(select_device(args.device)), queue_size=args.queue_size,
          cache_seconds=args.cache_seconds)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """``semsynth export CHECKPOINT --out DIR [--max-shard-mb M] [--raw] [--half]``."""
    from semsynth.model.export import export_generator

    path = export_generator(args.checkpoint, args.out, args.max_shard_mb, use_ema=not args.raw, half=args.half)
    print(json.dumps({"export": str(path.parent)}))
    return 0


def cmd_convert_checkpoint(args: argparse.Namespace) -> int:
    """``semsynth convert-checkpoint OLD NEW``: a format-v1 checkpoint as v2 (weights-only
    readable). OLD is read without running code from it (see ``convert_checkpoint``)."""
    from semsynth.model.checkpoint import convert_checkpoint

    ckpt = convert_checkpoint(args.old, args.new)
    print(json.dumps({"checkpoint": str(args.new), "format": ckpt["format"], "step": int(ckpt.get("step", 0))}))
    return 0


def cmd_import_official(args: argparse.Namespace) -> int:
    """``semsynth import-official PATH --dataset NAME [--method oasis|spade|cc_fpse] [--encoder E]
    [--out DIR] [--which latest] [--z-dim 64]``."""
    if args.method == "oasis":
        from semsynth.model.official.oasis import import_official

        if args.encoder is not None:
            raise SemsynthError("--encoder: OASIS has no image encoder (it applies to --method spade / cc_fpse)")
        out = Path(args.out) if args.out else Path("runs") / f"official_{args.dataset}"
        path = import_official(args.path, args.dataset, out, z_dim=64 if args.z_dim is None else args.z_dim,
                               which=args.which)
    else:
        import importlib

        if args.z_dim is not None:
            raise SemsynthError(f"--z-dim applies to --method oasis; the {args.method} latent size is read "
                                f"from the checkpoint")
        import_official = importlib.import_module(f"semsynth.model.official.{args.method}").import_official
        out = Path(args.out) if args.out else Path("runs") / f"official_{args.method}_{args.dataset}"
        path = import_official(args.path, args.dataset, out, encoder=args.encoder, which=args.which)
    print(json.dumps({"export": str(path.parent), "dataset": args.dataset, "method": args.method}))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser of the ``semsynth`` command."""
    p = argparse.ArgumentParser(prog="semsynth", description="Semantic image synthesis: label map → photo.")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a method from a YAML config")
    t.add_argument("config")
    t.add_argument("--out", help="run folder (default runs/<config name>)")
    t.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a dotted config key")
    t.add_argument("--resume", action="store_true", help="continue from OUT/checkpoints/latest.pt")
    t.add_argument("--resume-from-last-good", action="store_true",
                   help="with --resume: if latest.pt is corrupt, continue from the newest intact step_*.pt")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    t.add_argument("--no-data-check", action="store_true",
                   help="skip the data check (a warning is printed; a bad file stops the run when it is read)")
    t.set_defaults(func=cmd_train)

    s = sub.add_parser("sample", help="turn label maps into images")
    s.add_argument("checkpoint")
    s.add_argument("--labels", required=True, help="a label PNG or a folder of them")
    s.add_argument("--out", default="samples")
    s.add_argument("--seeds", default="0-3")
    s.add_argument("--resample-class", type=int, default=None, help="re-sample only this label id")
    s.add_argument("--resample-mask", default=None, help="re-sample only where this PNG is non-zero")
    s.add_argument("--base-seed", type=int, default=0, help="noise outside the re-sampled region")
    s.add_argument("--style", default=None,
                   help="a reference photo: its encoder latent drives every image (SPADE with use_vae)")
    s.add_argument("--device", default="auto")
    s.set_defaults(func=cmd_sample)

    i = sub.add_parser("info", help="resolved config, parameter counts, dataset summary")
    i.add_argument("config")
    i.add_argument("--set", action="append", metavar="KEY=VALUE")
    i.add_argument("--json", action="store_true", help="print one JSON object on the last line")
    i.set_defaults(func=cmd_info)

    d = sub.add_parser("data", help="dataset tools")
    dsub = d.add_subparsers(dest="data_command", required=True)
    dc = dsub.add_parser("check", help="read every pair of every split; table of sizes, class shares, problems")
    dc.add_argument("config")
    dc.add_argument("--set", action="append", metavar="KEY=VALUE")
    dc.add_argument("--json", action="store_true", help="also print the report as one JSON line")
    dc.add_argument("--workers", type=int, default=None,
                    help="processes that read pairs (default: data.check_workers; 0 = all CPUs)")
    dc.add_argument("--full", action="store_true", help="read every pair again, trusting no manifest entry")
    dc.add_argument("--no-progress", action="store_true", help="no progress bar")
    dc.set_defaults(func=cmd_data_check)

    x = sub.add_parser("export", help="the EMA generator as safetensors shards + config")
    x.add_argument("checkpoint")
    x.add_argument("--out", required=True)
    x.add_argument("--max-shard-mb", type=float, default=15.0)
    x.add_argument("--raw", action="store_true", help="export the raw generator instead of the EMA one")
    x.add_argument("--half", action="store_true", help="store float16 weights (half the size)")
    x.set_defaults(func=cmd_export)

    c = sub.add_parser("convert-checkpoint",
                       help="rewrite an old (v1) checkpoint as v2 (OLD is read without running code from it)")
    c.add_argument("old")
    c.add_argument("new")
    c.set_defaults(func=cmd_convert_checkpoint)

    o = sub.add_parser("import-official", help="an official OASIS, SPADE or CC-FPSE checkpoint as a semsynth export")
    o.add_argument("path", help="oasis: a *_EMA.pth / *_G.pth file or the official checkpoints/<name>/models folder; "
                                "spade, cc_fpse: a *_net_G.pth file or the official checkpoints/<name> folder")
    o.add_argument("--dataset", required=True, choices=["ade20k", "cityscapes", "coco_stuff"])
    o.add_argument("--method", default="oasis", choices=["oasis", "spade", "cc_fpse"],
                   help="the official code: boschresearch/OASIS (default), NVlabs/SPADE or xh-liu/CC-FPSE")
    o.add_argument("--encoder", default=None,
                   help="spade, cc_fpse with --use_vae: the *_net_E.pth (default: the sibling of the G file)")
    o.add_argument("--out", default=None,
                   help="export folder (default runs/official_<dataset>, runs/official_<method>_<dataset>)")
    o.add_argument("--which", default="latest", help="checkpoint prefix in a folder: latest, best or an iteration")
    o.add_argument("--z-dim", type=int, default=None,
                   help="oasis: noise channels of the checkpoint (default 64; 0 for --no_3dnoise)")
    o.set_defaults(func=cmd_import_official)

    w = sub.add_parser("serve", help="a web editor: paint a label map, generate and re-roll images")
    w.add_argument("checkpoint", help="a training checkpoint (.pt) or an export folder")
    w.add_argument("--host", default="127.0.0.1", help="address to bind (0.0.0.0: every interface, no login!)")
    w.add_argument("--port", type=int, default=7860)
    w.add_argument("--device", default="cpu", help="cpu, cuda, or auto")
    w.add_argument("--queue-size", type=int, default=256,
                   help="requests waiting at most; beyond it a request is refused with a retry time")
    w.add_argument("--cache-seconds", type=float, default=3600,
                   help="result files older than this are deleted (Gradio's cache and the editor's)")
    w.set_defaults(func=cmd_serve)

    from semsynth.eval import cli as eval_cli

    eval_cli.add_commands(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point: run a command; bad input → message on stderr and exit code 2."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except SemsynthError as exc:
        print(f"semsynth {args.command}: error: {exc}", file=sys.stderr)
        return 3 if type(exc).__name__ == "TrainingDiverged" else 2
    except (FileNotFoundError, ValueError) as exc:
        print(f"semsynth {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"semsynth {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
