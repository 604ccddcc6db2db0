"""GPU speed of the official OASIS code (boschresearch/OASIS) vs semsynth's OASIS at the ADE20K
preset, and what semsynth's GPU switches give — not a test.

One script, sections in priority order, each skipped when ``--budget-s`` would not leave it
time (a GPU lease is short); every result is one JSON line on stdout and in ``--out``.

* ``speed``: training images/s and peak memory at each ``--batches`` size. Official: its
  ``train.py`` iteration on one GPU (``put_on_multi_gpus`` → ``DataParallelWithCallback``
  over ``gpu_ids 0``; ``preprocess_input``; G then D update through ``model(...,
  "losses_G"/"losses_D")``; the EMA over the state dict, decay 0.9999), its own defaults
  (fp32; no TF32 for matmuls, cuDNN's default TF32 for convolutions; no cudnn.benchmark).
  semsynth: ``train.loop.train_step`` + ``update_ema`` as the training loop runs them
  (``configure_backends``: TF32, cudnn.benchmark; channels-last; fused Adam) in
  ``train.precision`` fp32 and bf16. Architecture (both): ADE20K 256×256, 151 label channels
  (150 classes + don't-care), G channels_G 64 (1024 … 64, 6 SPADE blocks), z_dim 64; D 128 …
  512 U-Net with N+1 output; LabelMix on, no VGG. Peak memory: ``max_memory_allocated``
  over one step, that implementation alone on the GPU (weights, Adam and EMA included).
* ``flops``: FLOPs of one semsynth step (``FlopCounterMode``: convolutions and matmuls,
  forward and backward), the achieved TFLOP/s and its share of the dense bf16 peak.
* ``data``: ``semsynth train`` on generated ADE20K-layout files (JPEG photos, PNG label
  maps in ``ADEChallengeData2016/``; decoding, resize 286, crop 256, flip in DataLoader
  workers) vs the same step on tensors already on the GPU: is the GPU waiting on data?
* ``maxbatch``: the largest per-GPU batch (doubling from the preset's) of the ADE20K and
  Cityscapes presets that trains a step, per precision.
* ``compile``: ``train.compile`` (Inductor) with bf16 and fp32: compile seconds, then images/s.

Usage (on a CUDA machine; the official repository is a local copy, never committed):
  python benchmarks/official_oasis_gpu.py --official-root PATH [--batches 32,8] [--steps 8]
      [--rounds 3] [--warmup 3] [--sections speed,flops,data,maxbatch,compile]
      [--budget-s 480] [--out FILE]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import types
import warnings
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from official_oasis_cpu import official_update_EMA_weights  # noqa: E402  (the same EMA arithmetic)

ADE = str(ROOT / "configs" / "oasis" / "ade20k.yaml")
CITYSCAPES = str(ROOT / "configs" / "oasis" / "cityscapes.yaml")
H = W = 256
SEMANTIC_NC = 151
BF16_DENSE_PEAK = {"H100": 989.4, "H200": 989.4, "A100": 312.0}  # TFLOP/s, vendors' data sheets
T0 = time.time()
OUT: list = []
#: ``--smoke``: the semsynth code paths on the CPU at a tiny size (the official side skipped)
SMOKE: list = []
SMOKE_SETS = ["data.height=64", "data.width=64", "model.generator.channels=[64,64,64,32,16,16,16]",
              "model.discriminator.channels=[16,16,16,16,16,16]", "train.device=cpu", "data.num_workers=2"]


def emit(rec: dict) -> None:
    rec = {"t": round(time.time() - T0, 1), **rec}
    print(json.dumps(rec), flush=True)
    for path in OUT:
        with open(path, "a") as fh:
            fh.write(json.dumps(rec) + "\n")


def dev() -> str:
    return "cpu" if SMOKE else "cuda"


def sync() -> None:
    if not SMOKE:
        torch.cuda.synchronize()


def free() -> None:
    gc.collect()
    if not SMOKE:
        torch.cuda.empty_cache()


def reset_peak() -> None:
    if not SMOKE:
        torch.cuda.reset_peak_memory_stats()


def peak_bytes() -> int:
    return 0 if SMOKE else torch.cuda.max_memory_allocated()


def data(batch: int, nc: int = SEMANTIC_NC, h: int | None = None, w: int | None = None, seed: int = 1234):
    """Blocky label maps (16-pixel blocks) and images in [-1, 1], on the GPU."""
    h, w = h or H, w or W
    g = torch.Generator().manual_seed(seed)
    label = torch.randint(0, nc, (batch, h // 16, w // 16), generator=g)
    label = label.repeat_interleave(16, 1).repeat_interleave(16, 2).contiguous()
    image = torch.rand(batch, 3, h, w, generator=g) * 2 - 1
    return label.to(dev()), image.to(dev())


# --------------------------------------------------------------------------- official
def official_opt(batch: int) -> argparse.Namespace:
    """The official config.py defaults for training, ADE20K's dataloader fields set."""
    return argparse.Namespace(
        phase="train", gpu_ids="0", name="bench", checkpoints_dir="/tmp/oasis_bench_ckpt",
        continue_train=False, which_iter="latest", seed=42, batch_size=batch,
        num_res_blocks=6, channels_G=64, param_free_norm="syncbatch", spade_ks=3,
        no_EMA=False, EMA_decay=0.9999, no_3dnoise=False, z_dim=64, no_spectral_norm=False,
        crop_size=W, load_size=286, aspect_ratio=1.0, label_nc=150, semantic_nc=SEMANTIC_NC,
        contain_dontcare_label=True, lr_g=0.0001, lr_d=0.0004, beta1=0.0, beta2=0.999, channels_D=64,
        add_vgg_loss=False, lambda_vgg=10.0, no_balancing_inloss=False, no_labelmix=False, lambda_labelmix=10.0,
    )


class Official:
    def __init__(self, root: str, batch: int) -> None:
        if root not in sys.path:
            sys.path.insert(0, root)
        try:
            import torchvision  # noqa: F401  (models/vggloss.py imports it; the VGG loss is off)
        except ImportError:
            sys.modules["torchvision"] = types.ModuleType("torchvision")
        import models.losses as losses
        import models.models as models

        self.models, self.opt = models, official_opt(batch)
        torch.manual_seed(0)
        model = models.OASIS_model(self.opt)
        self.model = models.put_on_multi_gpus(model, self.opt)  # train.py: DataParallelWithCallback(...).cuda()
        self.losses_computer = losses.losses_computer(self.opt)
        net = self.model.module
        self.optG = torch.optim.Adam(net.netG.parameters(), lr=1e-4, betas=(0.0, 0.999))
        self.optD = torch.optim.Adam(net.netD.parameters(), lr=4e-4, betas=(0.0, 0.999))
        label, image = data(batch)
        self.data = {"label": label[:, None].cpu(), "image": image.cpu()}  # what a dataloader gives

    def step(self) -> None:
        model, net = self.model, self.model.module
        image, label = self.models.preprocess_input(self.opt, dict(self.data))
        net.netG.zero_grad()
        loss_G, _ = model(image, label, "losses_G", self.losses_computer)
        loss_G.mean().backward()
        self.optG.step()
        net.netD.zero_grad()
        loss_D, _ = model(image, label, "losses_D", self.losses_computer)
        loss_D.mean().backward()
        self.optD.step()
        official_update_EMA_weights(net, self.opt)


# --------------------------------------------------------------------------- semsynth
class Semsynth:
    def __init__(self, batch: int, precision: str, compile_: bool = False, config: str = ADE) -> None:
        from semsynth.config import load_config
        from semsynth.data import dataset_info
        from semsynth.model.build import build_method, compile_networks, configure_backends
        from semsynth.train.ema import make_ema, update_ema
        from semsynth.train.loop import make_optimizers, train_step

        self.cfg = cfg = load_config(config, ["train.device=cuda", f"train.precision={precision}",
                                              f"train.compile={str(compile_).lower()}"] + SMOKE)
        configure_backends(torch.device(dev()), 0)
        info = dataset_info(cfg.data)
        torch.manual_seed(0)
        self.method = build_method(cfg, info).to(dev())
        if cfg.train.channels_last:
            self.method.to(memory_format=torch.channels_last)
        self.ema = make_ema(self.method.generator).eval()
        if compile_:
            compile_networks(self.method)
        self.opts = make_optimizers(self.method, cfg.train)
        self.fused = all(bool(o.defaults.get("fused")) for o in self.opts.values())
        self.rng = torch.Generator().manual_seed(0)
        self.label, image = data(batch, info.semantic_nc, cfg.data.height, cfg.data.width)
        fmt = torch.channels_last if cfg.train.channels_last else torch.contiguous_format
        self.image = image.contiguous(memory_format=fmt)
        self._step, self._ema = train_step, update_ema
        self.precision = precision

    def step(self) -> None:
        self._step(self.method, self.opts, self.image, self.label, self.rng, precision=self.precision)
        self._ema(self.ema, self.method.generator, 0.9999)


def measure(make, name: str, batch: int, steps: int, rounds: int, warmup: int) -> dict:
    """Build, warm up, one step for the peak memory, then ``rounds`` timed blocks."""
    free()
    t = time.perf_counter()
    impl = make()
    sync()
    build_s = time.perf_counter() - t
    t = time.perf_counter()
    for _ in range(warmup):
        impl.step()
    sync()
    warmup_s = time.perf_counter() - t
    reset_peak()
    impl.step()
    sync()
    peak = peak_bytes()
    rates = []
    for _ in range(rounds):
        t = time.perf_counter()
        for _ in range(steps):
            impl.step()
        sync()
        rates.append(batch * steps / (time.perf_counter() - t))
    rec = {"section": "speed", "impl": name, "batch": batch, "images_per_s": [round(r, 2) for r in rates],
           "median_images_per_s": round(statistics.median(rates), 2),
           "sec_per_step": round(batch / statistics.median(rates), 4),
           "peak_memory_gib": round(peak / 2**30, 2), "build_s": round(build_s, 1), "warmup_s": round(warmup_s, 1),
           "steps": steps, "rounds": rounds, "warmup": warmup}
    if isinstance(impl, Semsynth):
        rec["fused_adam"] = impl.fused
    del impl
    free()
    return rec


def section_speed(args, batches: list[int], left) -> dict:
    results = {}
    for b in batches:
        variants = ([] if SMOKE else [("official_fp32", lambda: Official(args.official_root, b))]) + [
            ("semsynth_fp32", lambda: Semsynth(b, "fp32")), ("semsynth_bf16", lambda: Semsynth(b, "bf16"))]
        for name, make in variants:
            if left() < 20:
                emit({"section": "speed", "skipped": f"{name} batch {b}: budget"})
                continue
            try:
                rec = measure(make, name, b, args.steps, args.rounds, args.warmup)
            except Exception as exc:  # noqa: BLE001  (a failing side is a result too)
                rec = {"section": "speed", "impl": name, "batch": b, "error": f"{type(exc).__name__}: {exc}"[:500]}
                free()
            results[(name, b)] = rec
            emit(rec)
        off, f32, b16 = (results.get((n, b), {}).get("median_images_per_s")
                         for n in ("official_fp32", "semsynth_fp32", "semsynth_bf16"))
        if off:
            emit({"section": "speed_ratio", "batch": b,
                  "semsynth_fp32_over_official": round(f32 / off, 3) if f32 else None,
                  "semsynth_bf16_over_official": round(b16 / off, 3) if b16 else None})
    return results


def section_flops(args, batch: int, speed: dict) -> None:
    from torch.utils.flop_counter import FlopCounterMode

    impl = Semsynth(batch, "fp32")
    impl.step()
    with FlopCounterMode(display=False) as counter:
        impl.step()
    flops = counter.get_total_flops()
    del impl
    free()
    name = "cpu" if SMOKE else torch.cuda.get_device_name()
    peak = next((v for k, v in BF16_DENSE_PEAK.items() if k in name), None)
    rec = {"section": "flops", "batch": batch, "tflop_per_step": round(flops / 1e12, 3), "device": name,
           "bf16_dense_peak_tflops": peak}
    for impl_name in ("official_fp32", "semsynth_fp32", "semsynth_bf16", "semsynth_bf16_compile"):
        r = speed.get((impl_name, batch))
        if r and "median_images_per_s" in r:
            achieved = flops * r["median_images_per_s"] / batch / 1e12
            rec[f"{impl_name}_tflops"] = round(achieved, 1)
            if peak:
                rec[f"{impl_name}_share_of_bf16_peak"] = round(achieved / peak, 4)
    emit(rec)


def make_ade_files(root: Path, n_train: int, n_val: int) -> None:
    """ADEChallengeData2016-layout files: 512×384 JPEG photos (smooth noise) and blocky PNG
    label maps with ids 0–150, as the real release's sizes and formats."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (("training", n_train), ("validation", n_val)):
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "annotations" / split).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            stem = f"ADE_{'train' if split == 'training' else 'val'}_{i + 1:08d}"
            small = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
            Image.fromarray(small).resize((512, 384), Image.BILINEAR).save(root / "images" / split / f"{stem}.jpg",
                                                                            quality=90)
            lab = rng.integers(0, 151, (12, 16), dtype=np.uint8)
            Image.fromarray(lab).resize((512, 384), Image.NEAREST).save(root / "annotations" / split / f"{stem}.png")


def section_data(args, batch: int, speed: dict, left) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="semsynth_gpu_"))
    t = time.perf_counter()
    make_ade_files(tmp / "ADEChallengeData2016", n_train=max(8 * batch, 256), n_val=8)
    made_s = time.perf_counter() - t
    steps = args.data_steps
    out = tmp / "run"
    cmd = [sys.executable, "-m", "semsynth.cli", "train", ADE, "--out", str(out), "--no-progress",
           "--set", f"data.root={tmp / 'ADEChallengeData2016'}", "--set", f"train.batch_size={batch}",
           "--set", f"train.max_steps={steps}", "--set", "train.log_every=5", "--set", "train.sample_every=100000",
           "--set", "train.checkpoint_every=100000", "--set", "train.latest_every=100000",
           "--set", "train.tensorboard=false", "--set", "eval.every=0", "--set", "train.device=cuda",
           "--set", "train.precision=fp32", "--set", "train.compile=false"]  # the fp32 step of `speed`
    for x in SMOKE:
        cmd += ["--set", x]
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""))
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=max(30, left() - 10))
    wall = time.perf_counter() - t
    rec = {"section": "data", "batch": batch, "steps": steps, "files_made_s": round(made_s, 1), "wall_s": round(wall, 1),
           "rc": proc.returncode}
    stats = out / "stats.jsonl"
    if stats.exists():
        lines = [json.loads(x) for x in stats.read_text().splitlines() if x.strip()]
        rec["sec_per_step_windows"] = [x.get("sec_per_step") for x in lines]
        later = [x["sec_per_step"] for x in lines[1:] if "sec_per_step" in x]  # after the first window (warm-up)
        if later:
            rec["real_data_sec_per_step"] = round(statistics.median(later), 4)
            syn = speed.get(("semsynth_fp32", batch), {}).get("sec_per_step")
            if syn:
                rec["synthetic_tensor_sec_per_step"] = syn
                rec["real_over_synthetic_time"] = round(rec["real_data_sec_per_step"] / syn, 3)
    if proc.returncode != 0:
        rec["stderr_tail"] = proc.stderr[-1500:]
    else:
        rec["notes"] = [ln for ln in proc.stderr.splitlines() if ln.startswith("note:")][:6]
    emit(rec)


def section_maxbatch(args, left) -> None:
    for config, name in ((ADE, "ade20k"), (CITYSCAPES, "cityscapes")):
        for precision in ("fp32", "bf16"):
            from semsynth.config import load_config

            b = load_config(config).train.batch_size
            fits, fails = None, None
            while left() > 25 and b <= args.max_batch:
                free()
                try:
                    impl = Semsynth(b, precision, config=config)
                    reset_peak()
                    impl.step()
                    sync()
                    peak = peak_bytes()
                    del impl
                    fits = (b, round(peak / 2**30, 1))
                    b *= 2
                except torch.cuda.OutOfMemoryError:
                    fails = b
                    break
                finally:
                    impl = None
                    free()
            emit({"section": "maxbatch", "preset": name, "precision": precision,
                  "largest_fitting_batch": fits[0] if fits else None,
                  "its_peak_memory_gib": fits[1] if fits else None, "first_oom_batch": fails,
                  "searched_up_to": args.max_batch,
                  "gpu_memory_gib": None if SMOKE else round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)})


def section_compile(args, batch: int, speed: dict, left) -> None:
    for precision in ("bf16", "fp32"):
        if left() < 90:
            emit({"section": "compile", "skipped": f"{precision}: budget"})
            continue
        try:
            rec = measure(lambda: Semsynth(batch, precision, compile_=True), f"semsynth_{precision}_compile",
                          batch, args.steps, args.rounds, args.warmup)
            rec["section"] = "compile"
            plain = speed.get((f"semsynth_{precision}", batch), {}).get("median_images_per_s")
            if plain:
                rec["speedup_over_eager"] = round(rec["median_images_per_s"] / plain, 3)
            off = speed.get(("official_fp32", batch), {}).get("median_images_per_s")
            if off:
                rec["over_official_fp32"] = round(rec["median_images_per_s"] / off, 3)
            speed[(f"semsynth_{precision}_compile", batch)] = rec
        except Exception as exc:  # noqa: BLE001
            rec = {"section": "compile", "impl": precision, "error": f"{type(exc).__name__}: {exc}"[:800]}
            free()
        emit(rec)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--official-root", required=True, help="a local copy of boschresearch/OASIS (holds models/)")
    ap.add_argument("--batches", default="32,8")
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--data-steps", type=int, default=40)
    ap.add_argument("--max-batch", type=int, default=256)
    ap.add_argument("--sections", default="speed,flops,data,maxbatch,compile")
    ap.add_argument("--budget-s", type=float, default=480.0, help="skip sections that would not fit")
    ap.add_argument("--out", default=None, help="also append the JSON lines here")
    ap.add_argument("--smoke", action="store_true", help="the semsynth code paths on the CPU, tiny (no official)")
    args = ap.parse_args()
    if args.out:
        OUT.append(args.out)
    if args.smoke:
        SMOKE.extend(SMOKE_SETS)
    elif not torch.cuda.is_available():
        raise SystemExit("official_oasis_gpu.py: needs a CUDA device")
    warnings.filterwarnings("ignore")

    def left() -> float:
        return args.budget_s - (time.time() - T0)

    batches = [int(x) for x in args.batches.split(",")]
    sections = args.sections.split(",")
    emit({"section": "setup", "torch": torch.__version__, "device": "cpu" if SMOKE else torch.cuda.get_device_name(),
          "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(), "batches": batches,
          "sections": sections, "budget_s": args.budget_s})
    speed: dict = {}
    if "speed" in sections:
        speed.update(section_speed(args, batches[:1], left))
    if "flops" in sections and left() > 30:
        section_flops(args, batches[0], speed)
    if "speed" in sections and len(batches) > 1:
        speed.update(section_speed(args, batches[1:], left))
    if "data" in sections and left() > 60:
        section_data(args, batches[0], speed, left)
    if "maxbatch" in sections and left() > 60:
        section_maxbatch(args, left)
    if "compile" in sections:
        section_compile(args, batches[0], speed, left)
        if "flops" in sections and (("semsynth_bf16_compile", batches[0]) in speed):
            section_flops(args, batches[0], speed)
    emit({"section": "done", "elapsed_s": round(time.time() - T0, 1)})


if __name__ == "__main__":
    main()
