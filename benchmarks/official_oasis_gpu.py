"""GPU speed of the official OASIS code (boschresearch/OASIS) vs semsynth's OASIS at the ADE20K
preset, and what semsynth's GPU switches give — not a test.

One script, sections run in the order ``--sections`` gives, each skipped when ``--budget-s``
would not leave it time (a GPU lease is short); every result is one JSON line on stdout and in
``--out``.

* ``speed``: training images/s and peak memory at each ``--batches`` size. Official: its
  ``train.py`` iteration on one GPU (``put_on_multi_gpus`` → ``DataParallelWithCallback``
  over ``gpu_ids 0``; ``preprocess_input``; G then D update through ``model(...,
  "losses_G"/"losses_D")``; the EMA over the state dict, decay 0.9999), its own defaults
  (fp32; no TF32 for matmuls, cuDNN's default TF32 for convolutions; no cudnn.benchmark —
  restored before each official build, as semsynth's runs switch them on).
  semsynth: ``train.loop.train_step`` + ``update_ema`` as the training loop runs them
  (``configure_backends``: TF32, cudnn.benchmark; channels-last; fused Adam) in
  ``train.precision`` fp32 and bf16. Architecture (both): ADE20K 256×256, 151 label channels
  (150 classes + don't-care), G channels_G 64 (1024 … 64, 6 SPADE blocks), z_dim 64; D 128 …
  512 U-Net with N+1 output; LabelMix on, no VGG. Peak memory: ``max_memory_allocated``
  over one step, that implementation alone on the GPU (weights, Adam and EMA included).
* ``flops``: FLOPs of one semsynth step (``FlopCounterMode``: convolutions and matmuls,
  forward and backward), the achieved TFLOP/s and its share of the dense bf16 peak for every
  semsynth and official result at that batch so far (again at the end of the run).
* ``ablate``: one switch at a time against semsynth's fp32 / bf16 step at the first batch:
  cudnn.benchmark off (fp32: is the +0.8 GiB over the official at batch 32 its workspace?),
  channels-last off (fp32, bf16), and z_dim 65 (bf16), which makes the SPADE convs' input
  151 + 65 = 216 channels, a multiple of 8 (15.6 % of the step's FLOPs have 215 input
  channels: ``benchmarks/train_step.py --by-shape``) — does cuDNN's alignment cost time?
* ``profile``: ``torch.profiler`` over 2 bf16 steps: GPU kernel time per step by kind
  (convolution/GEMM, layout transposes, BatchNorm, Triton-fused, other elementwise,
  reductions, optimizer, copies), the top kernels, and the convolutions' own TFLOP/s.
  ``--profile-compiled``: ``compile`` profiles each compiled variant the same way.
* ``data``: ``semsynth train`` on generated ADE20K-layout files (JPEG photos, PNG label
  maps in ``ADEChallengeData2016/``; decoding, resize 286, crop 256, flip in DataLoader
  workers) vs the same step on tensors already on the GPU: is the GPU waiting on data?
  ``--data-variant`` picks the step (``fp32``, ``bf16``, ``bf16:default`` = bf16 + compile).
* ``maxbatch``: the largest per-GPU batch (doubling from the preset's) of the
  ``--maxbatch-presets`` (ADE20K, Cityscapes) that trains a step, per precision.
* ``compile``: ``train.compile`` (Inductor) for each ``--compile-variants`` entry
  ``precision:mode`` (``train.compile_mode``; ``reduce-overhead`` = CUDA graphs): compile
  seconds, then images/s against the same precision eager.

Usage (on a CUDA machine; the official repository is a local copy, never committed):
  python benchmarks/official_oasis_gpu.py --official-root PATH [--batches 32,8] [--steps 8]
      [--rounds 3] [--warmup 3] [--sections speed,flops,data,maxbatch,compile]
      [--speed-impls official_fp32,semsynth_fp32,semsynth_bf16]
      [--compile-variants bf16:default,fp32:default] [--compile-estimate-s 240] [--profile-compiled]
      [--maxbatch-presets ade20k,cityscapes] [--data-variant fp32] [--budget-s 480] [--out FILE]
  (docs/results.md, "Where the FLOPs are, and what the next lease measures": the two calls planned)
  python benchmarks/official_oasis_gpu.py --official-root PATH --smoke --budget-s 900   # CPU, tiny
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
        torch.backends.cudnn.benchmark = False  # the official defaults (semsynth's builds switch these on)
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = True
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
    def __init__(self, batch: int, precision: str, compile_: bool = False, config: str = ADE,
                 compile_mode: str = "default", sets: tuple = (), cudnn_benchmark: bool = True) -> None:
        from semsynth.config import load_config
        from semsynth.data import dataset_info
        from semsynth.model.build import build_method, compile_networks, configure_backends, uses_cudagraphs
        from semsynth.train.ema import make_ema, update_ema
        from semsynth.train.loop import make_optimizers, train_step

        extra = [f"train.compile_mode={compile_mode}"] if compile_ else []
        self.cfg = cfg = load_config(config, ["train.device=cuda", f"train.precision={precision}",
                                              f"train.compile={str(compile_).lower()}"] + extra + SMOKE + list(sets))
        configure_backends(torch.device(dev()), 0)
        torch.backends.cudnn.benchmark = cudnn_benchmark
        info = dataset_info(cfg.data)
        torch.manual_seed(0)
        self.method = build_method(cfg, info).to(dev())
        if cfg.train.channels_last:
            self.method.to(memory_format=torch.channels_last)
        self.ema = make_ema(self.method.generator).eval()
        if compile_:
            compile_networks(self.method, mode=compile_mode)
        self.cudagraphs = uses_cudagraphs(compile_, compile_mode, torch.device(dev()))
        self.opts = make_optimizers(self.method, cfg.train)
        self.fused = all(bool(o.defaults.get("fused")) for o in self.opts.values())
        self.rng = torch.Generator().manual_seed(0)
        self.label, image = data(batch, info.semantic_nc, cfg.data.height, cfg.data.width)
        fmt = torch.channels_last if cfg.train.channels_last else torch.contiguous_format
        self.image = image.contiguous(memory_format=fmt)
        self._step, self._ema = train_step, update_ema
        self.precision = precision

    def step(self) -> None:
        self._step(self.method, self.opts, self.image, self.label, self.rng, precision=self.precision,
                   cudagraphs=self.cudagraphs)
        self._ema(self.ema, self.method.generator, 0.9999)


def measure(make, name: str, batch: int, steps: int, rounds: int, warmup: int, after=None) -> dict:
    """Build, warm up, one step for the peak memory, then ``rounds`` timed blocks;
    ``after(impl)``, if given, runs on the warm implementation before it is freed."""
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
    if after is not None:
        try:
            after(impl)
        except Exception as exc:  # noqa: BLE001  (keeps the timing measured above)
            emit({"section": "after", "impl": name, "error": f"{type(exc).__name__}: {exc}"[:800]})
    del impl
    free()
    return rec


def count_flops(batch: int) -> int:
    """FLOPs of one semsynth fp32 step at ``batch`` (convolutions and matmuls, both passes)."""
    from torch.utils.flop_counter import FlopCounterMode

    impl = Semsynth(batch, "fp32")
    impl.step()
    with FlopCounterMode(display=False) as counter:
        impl.step()
    flops = counter.get_total_flops()
    del impl
    free()
    return flops


def section_flops(batch: int, ctx: dict) -> None:
    """Emit the achieved TFLOP/s and bf16-peak share of every result at ``batch`` so far."""
    if ("flops", batch) not in ctx:
        ctx[("flops", batch)] = count_flops(batch)
    flops = ctx[("flops", batch)]
    name = "cpu" if SMOKE else torch.cuda.get_device_name()
    peak = next((v for k, v in BF16_DENSE_PEAK.items() if k in name), None)
    rec = {"section": "flops", "batch": batch, "tflop_per_step": round(flops / 1e12, 3), "device": name,
           "bf16_dense_peak_tflops": peak}
    for (impl_name, b), r in ctx["speed"].items():
        if b == batch and "median_images_per_s" in r:
            achieved = flops * r["median_images_per_s"] / batch / 1e12
            rec[f"{impl_name}_tflops"] = round(achieved, 1)
            if peak:
                rec[f"{impl_name}_share_of_bf16_peak"] = round(achieved / peak, 4)
    ctx["flops_emitted_at"] = len(ctx["speed"])
    emit(rec)


def run_variant(name: str, make, batch: int, args, ctx: dict, section: str, after=None) -> dict:
    """``measure`` one variant, record it in ``ctx["speed"]`` and emit it (errors are results)."""
    try:
        rec = measure(make, name, batch, args.steps, args.rounds, args.warmup, after=after)
        rec["section"] = section
    except Exception as exc:  # noqa: BLE001  (a failing variant is a result too)
        rec = {"section": section, "impl": name, "batch": batch, "error": f"{type(exc).__name__}: {exc}"[:800]}
        free()
    ctx["speed"][(name, batch)] = rec
    return rec


def ratio(ctx: dict, name: str, base: str, batch: int) -> float | None:
    a, b = (ctx["speed"].get((n, batch), {}).get("median_images_per_s") for n in (name, base))
    return round(a / b, 3) if a and b else None


def section_speed(args, batches: list[int], ctx: dict, left) -> None:
    for b in batches:
        variants = ([] if SMOKE else [("official_fp32", lambda: Official(args.official_root, b))]) + [
            ("semsynth_fp32", lambda: Semsynth(b, "fp32")), ("semsynth_bf16", lambda: Semsynth(b, "bf16"))]
        for name, make in [v for v in variants if v[0] in args.speed_impls.split(",")]:
            if left() < 20:
                emit({"section": "speed", "skipped": f"{name} batch {b}: budget"})
                continue
            emit(run_variant(name, make, b, args, ctx, "speed"))
        if ("official_fp32", b) in ctx["speed"]:
            emit({"section": "speed_ratio", "batch": b,
                  "semsynth_fp32_over_official": ratio(ctx, "semsynth_fp32", "official_fp32", b),
                  "semsynth_bf16_over_official": ratio(ctx, "semsynth_bf16", "official_fp32", b)})


def section_ablate(args, batch: int, ctx: dict, left) -> None:
    variants = [
        ("semsynth_fp32_no_cudnn_benchmark", "semsynth_fp32",
         lambda: Semsynth(batch, "fp32", cudnn_benchmark=False)),
        ("semsynth_fp32_contiguous", "semsynth_fp32", lambda: Semsynth(batch, "fp32", sets=("train.channels_last=false",))),
        ("semsynth_bf16_contiguous", "semsynth_bf16", lambda: Semsynth(batch, "bf16", sets=("train.channels_last=false",))),
        ("semsynth_bf16_z65_cond216", "semsynth_bf16", lambda: Semsynth(batch, "bf16", sets=("model.generator.z_dim=65",))),
    ]
    for name, base, make in variants:
        need = 60 if (base, batch) in ctx["speed"] else 120  # with cuDNN tuning, ~1 min a measurement at batch 32
        if left() < need:
            emit({"section": "ablate", "skipped": f"{name}: budget"})
            continue
        if (base, batch) not in ctx["speed"]:  # its reference, in the same run
            emit(run_variant(base, lambda: Semsynth(batch, base.split("_")[1]), batch, args, ctx, "ablate"))
        rec = run_variant(name, make, batch, args, ctx, "ablate")
        rec["against"] = base
        rec["speed_over_it"] = ratio(ctx, name, base, batch)
        base_peak = ctx["speed"].get((base, batch), {}).get("peak_memory_gib")
        if base_peak is not None and "peak_memory_gib" in rec:
            rec["peak_memory_minus_it_gib"] = round(rec["peak_memory_gib"] - base_peak, 2)
        emit(rec)


def kernel_kind(name: str) -> str:
    """A GPU kernel's (or, on the CPU, an op's) kind, from its name."""
    n = name.lower()
    if any(k in n for k in ("batch_norm", "batchnorm", "bn_fw", "bn_bw", "welford")):  # before cuDNN's convs
        return "batchnorm"
    if n.startswith("triton_"):  # Inductor's fused kernels, whatever ops their names list
        return "triton_fused"
    if any(k in n for k in ("nchwtonhwc", "nhwctonchw", "transpose", "permute")):
        return "layout"
    if any(k in n for k in ("conv", "cudnn", "xmma", "implicit", "gemm", "cutlass", "wgrad", "dgrad", "fprop")):
        return "conv_gemm"
    if "adam" in n or "multi_tensor" in n:
        return "optimizer"
    if "memcpy" in n or "memset" in n or "copy" in n:
        return "copy"
    if "reduce" in n or "sum" in n:
        return "reduction"
    if "elementwise" in n or "vectorized" in n or "unrolled" in n:
        return "elementwise"
    return "other"


def profile_impl(impl, name: str, batch: int, ctx: dict, steps: int = 2) -> None:
    """GPU kernel time per step of ``impl`` by :func:`kernel_kind`, the top kernels, and
    the convolutions' achieved TFLOP/s (FLOPs from ``section_flops``' count, if made)."""
    from torch.profiler import ProfilerActivity, profile

    activity = ProfilerActivity.CPU if SMOKE else ProfilerActivity.CUDA
    sync()
    with profile(activities=[activity]) as prof:
        for _ in range(steps):
            impl.step()
        sync()
    kinds: dict = {}
    kernels = []
    for evt in prof.key_averages():
        if SMOKE:
            if not evt.key.startswith("aten::"):
                continue
            us = evt.self_cpu_time_total
        else:
            if str(evt.device_type).split(".")[-1] != "CUDA" or getattr(evt, "is_user_annotation", False):
                continue  # kernels only (GPU ranges such as "Optimizer.step#Adam.step" would count twice)
            us = getattr(evt, "self_device_time_total", None) or getattr(evt, "self_cuda_time_total", 0)
        if us <= 0:
            continue
        kind = kernel_kind(evt.key)
        kinds[kind] = kinds.get(kind, 0.0) + us / 1e3 / steps
        kernels.append((us / 1e3 / steps, evt.key[:120], kind, evt.count // steps))
    total = sum(kinds.values())
    rec = {"section": "profile", "impl": name, "batch": batch, "steps": steps,
           "kernel_ms_per_step": round(total, 1),
           "ms_per_step_by_kind": {k: round(v, 1) for k, v in sorted(kinds.items(), key=lambda kv: -kv[1])},
           "share_by_kind": {k: round(v / total, 3) for k, v in sorted(kinds.items(), key=lambda kv: -kv[1])}
           if total else {},
           "top_kernels": [{"ms": round(ms, 2), "name": n, "kind": k, "calls": c}
                           for ms, n, k, c in sorted(kernels, reverse=True)[:15]]}
    flops = ctx.get(("flops", batch))
    if flops and kinds.get("conv_gemm"):
        rec["conv_gemm_tflops"] = round(flops / (kinds["conv_gemm"] / 1e3) / 1e12, 1)
    emit(rec)


def section_profile(args, batch: int, ctx: dict, left) -> None:
    if left() < 60:
        emit({"section": "profile", "skipped": "budget"})
        return
    try:
        impl = Semsynth(batch, "bf16")
        for _ in range(args.warmup):
            impl.step()
        profile_impl(impl, "semsynth_bf16", batch, ctx)
    except Exception as exc:  # noqa: BLE001
        emit({"section": "profile", "impl": "semsynth_bf16", "error": f"{type(exc).__name__}: {exc}"[:800]})
    impl = None
    free()


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


def section_data(args, batch: int, ctx: dict, left) -> None:
    precision, _, mode = args.data_variant.partition(":")  # fp32 | bf16 | bf16:default (compiled) ...
    synthetic = f"semsynth_{precision}" + (f"_compile_{mode}" if mode else "")
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
           "--set", f"train.precision={precision}", "--set", f"train.compile={str(bool(mode)).lower()}"]
    if mode:
        cmd += ["--set", f"train.compile_mode={mode}"]
    for x in SMOKE:
        cmd += ["--set", x]
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""))
    t = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=max(30, left() - 10))
    except subprocess.TimeoutExpired:
        emit({"section": "data", "variant": args.data_variant, "error": "timed out: over the budget"})
        return
    wall = time.perf_counter() - t
    rec = {"section": "data", "variant": args.data_variant, "batch": batch, "steps": steps,
           "files_made_s": round(made_s, 1), "wall_s": round(wall, 1), "rc": proc.returncode}
    stats = out / "stats.jsonl"
    if stats.exists():
        lines = [json.loads(x) for x in stats.read_text().splitlines() if x.strip()]
        rec["sec_per_step_windows"] = [x.get("sec_per_step") for x in lines]
        later = [x["sec_per_step"] for x in lines[1:] if "sec_per_step" in x]  # after the first window (warm-up)
        if later:
            rec["real_data_sec_per_step"] = round(statistics.median(later), 4)
            syn = ctx["speed"].get((synthetic, batch), {}).get("sec_per_step")
            if syn:
                rec["synthetic_tensor_sec_per_step"] = syn
                rec["real_over_synthetic_time"] = round(rec["real_data_sec_per_step"] / syn, 3)
    if proc.returncode != 0:
        rec["stderr_tail"] = proc.stderr[-1500:]
    else:
        rec["notes"] = [ln for ln in proc.stderr.splitlines() if ln.startswith("note:")][:6]
    emit(rec)


def section_maxbatch(args, left) -> None:
    presets = {"ade20k": ADE, "cityscapes": CITYSCAPES}
    for name in args.maxbatch_presets.split(","):
        config = presets[name]
        for precision in ("fp32", "bf16"):
            from semsynth.config import load_config

            b = 1 if SMOKE else load_config(config).train.batch_size  # the smoke run: 1, 2, 4 ...
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
                except RuntimeError as exc:  # cuDNN/cuBLAS failing to allocate or to run at this size
                    fails = f"{b}: {type(exc).__name__}: {str(exc)[:200]}"
                    break
                finally:
                    impl = None
                    free()
            emit({"section": "maxbatch", "preset": name, "precision": precision,
                  "largest_fitting_batch": fits[0] if fits else None,
                  "its_peak_memory_gib": fits[1] if fits else None, "first_oom_batch": fails,
                  "searched_up_to": args.max_batch,
                  "gpu_memory_gib": None if SMOKE else round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)})


def section_compile(args, batch: int, ctx: dict, left) -> None:
    profile_too = args.profile_compiled
    for variant in args.compile_variants.split(","):
        precision, _, mode = variant.partition(":")
        mode = mode or "default"
        name = f"semsynth_{precision}_compile_{mode}"
        if left() < args.compile_estimate_s:  # the first compile at the ADE20K preset took 187 s on an H200
            emit({"section": "compile", "skipped": f"{variant}: budget ({left():.0f} s left, a compile needs "
                                                   f"~{args.compile_estimate_s:.0f} s)"})
            continue
        after = (lambda impl, n=name: profile_impl(impl, n, batch, ctx)) if profile_too else None
        rec = run_variant(name, lambda: Semsynth(batch, precision, compile_=True, compile_mode=mode),
                          batch, args, ctx, "compile", after=after)
        rec["speedup_over_eager"] = ratio(ctx, name, f"semsynth_{precision}", batch)
        rec["over_official_fp32"] = ratio(ctx, name, "official_fp32", batch)
        emit(rec)
        torch._dynamo.reset()  # drop this variant's graphs (and CUDA-graph pools) before the next
        free()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--official-root", required=True, help="a local copy of boschresearch/OASIS (holds models/)")
    ap.add_argument("--batches", default="32,8")
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--speed-impls", default="official_fp32,semsynth_fp32,semsynth_bf16",
                    help="which of these `speed` measures (a second call may need only its references)")
    ap.add_argument("--compile-estimate-s", type=float, default=240.0,
                    help="time a compiled variant needs (compile + measurement); skipped below it")
    ap.add_argument("--profile-compiled", action="store_true", help="`compile` profiles each compiled variant")
    ap.add_argument("--data-steps", type=int, default=40)
    ap.add_argument("--data-variant", default="fp32", help="the step of `data`: precision[:compile mode]")
    ap.add_argument("--max-batch", type=int, default=256)
    ap.add_argument("--maxbatch-presets", default="ade20k,cityscapes")
    ap.add_argument("--compile-variants", default="bf16:default,fp32:default",
                    help="precision:train.compile_mode entries of `compile`")
    ap.add_argument("--sections", default="speed,flops,data,maxbatch,compile", help="run in this order")
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
    known = {"speed", "flops", "ablate", "profile", "data", "maxbatch", "compile"}
    if set(sections) - known:
        raise SystemExit(f"official_oasis_gpu.py: unknown sections {sorted(set(sections) - known)}; known {sorted(known)}")
    emit({"section": "setup", "torch": torch.__version__, "device": "cpu" if SMOKE else torch.cuda.get_device_name(),
          "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(), "batches": batches,
          "sections": sections, "budget_s": args.budget_s})
    ctx: dict = {"speed": {}}
    b0 = batches[0]
    for section in sections:
        if section == "speed":
            section_speed(args, batches, ctx, left)
        elif section == "flops" and left() > 30:
            section_flops(b0, ctx)
        elif section == "ablate":
            section_ablate(args, b0, ctx, left)
        elif section == "profile":
            section_profile(args, b0, ctx, left)
        elif section == "data" and left() > 60:
            section_data(args, b0, ctx, left)
        elif section == "maxbatch" and left() > 60:
            section_maxbatch(args, left)
        elif section == "compile":
            section_compile(args, b0, ctx, left)
        else:
            emit({"section": section, "skipped": "budget"})
    if ("flops", b0) in ctx and len(ctx["speed"]) > ctx["flops_emitted_at"]:  # shares of what came after the count
        section_flops(b0, ctx)
    emit({"section": "done", "elapsed_s": round(time.time() - T0, 1)})


if __name__ == "__main__":
    main()
