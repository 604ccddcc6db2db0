"""Images/s of one training step (every phase, e.g. G then D, and the EMA update) — not a test.

Usage:
  python benchmarks/train_step.py CONFIG [--device cpu|cuda] [--batch-size B] [--steps N]
                                  [--warmup N] [--peak-tflops T] [--by-shape] [--set k=v ...]

Runs the training loop's own step (``semsynth.train.loop.train_step`` + ``update_ema``,
channels-last, ``train.precision`` and ``train.compile`` as the config says) on random blocky label maps of the config's
size (compute only, no I/O) and prints one JSON line: seconds per step, images/s, the FLOPs
of one step (forward + backward of every convolution and matmul, counted once with
``torch.utils.flop_counter.FlopCounterMode``) and the achieved TFLOP/s. On a GPU whose peak
is known (or with ``--peak-tflops``) it adds the share of the dense TF32 peak (the loop runs
fp32 with TF32 convolutions and matmuls on CUDA) and of the dense BF16 peak.

``--by-shape`` adds the convolution FLOPs of one step by ``(in, out)`` channels (forward,
input and weight gradients) and the share whose channel counts are not multiples of 8: bf16
and TF32 tensor-core kernels want those (cuDNN pads or picks slower kernels otherwise).
"""

import argparse
import collections
import copy
import json
import time

import torch

from semsynth.config import load_config
from semsynth.data import dataset_info
from semsynth.model.build import (
    build_method,
    compile_networks,
    configure_backends,
    resolve_precision,
    select_device,
    uses_cudagraphs,
)
from semsynth.train.ema import make_ema, update_ema
from semsynth.train.loop import make_optimizers, train_step

#: Dense (no sparsity) peak TFLOP/s from the vendors' data sheets: (TF32, BF16).
PEAK_TFLOPS = {
    "H100 SXM": (494.7, 989.4), "H100 PCIe": (378.0, 756.0), "H100 NVL": (417.0, 835.0),
    "H100": (494.7, 989.4), "H200": (494.7, 989.4), "A100": (156.0, 312.0), "L40S": (183.0, 362.0),
}


def peak_for(device: torch.device) -> tuple[str, tuple[float, float] | None]:
    """The device's name and its ``(TF32, BF16)`` dense peak TFLOP/s, if in the table."""
    if device.type != "cuda":
        return "cpu", None
    name = torch.cuda.get_device_name(device)
    for key in sorted(PEAK_TFLOPS, key=len, reverse=True):  # the most specific entry first
        if all(part in name for part in key.split()):
            return name, PEAK_TFLOPS[key]
    return name, None


def conv_flops_by_channels(step) -> collections.Counter:
    """FLOPs of the convolutions that ``step()`` runs, keyed by ``(in_channels,
    out_channels)`` of the layer (all groups): ``2·N·(weight elements)·(spatial size)`` per
    forward call — the output's size, or the input's for a transposed convolution — and the
    same per gradient (input, weight) a ``convolution_backward`` computes. This is
    ``torch.utils.flop_counter``'s count, except that it charges a grouped convolution's
    weight gradient as if ungrouped (``groups`` × too much; no shipped config trains a grouped
    convolution: the EfficientNet backbone of the pretrained D is frozen). Run eagerly."""
    import math

    from torch.utils._python_dispatch import TorchDispatchMode

    counts: collections.Counter = collections.Counter()

    class Count(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            name = str(func.overloadpacket)
            if name == "aten.convolution":  # (input, weight, bias, stride, padding, dilation, transposed, _, groups)
                x, y, weight, transposed, groups, mult = args[0], out, args[1], args[6], args[8], 1
            elif name == "aten.convolution_backward":  # (grad_out, input, weight, _, _, _, _, transposed, _, groups, mask)
                x, y, weight, transposed, groups = args[1], args[0], args[2], args[7], args[9]
                mult = sum(bool(m) for m in args[10][:2])
            else:
                return out
            a, b = weight.shape[:2]  # (out, in/groups) or, transposed, (in, out/groups)
            cin, cout = (a, b * groups) if transposed else (b * groups, a)
            spatial = math.prod((x if transposed else y).shape[2:])
            counts[(cin, cout)] += 2 * x.shape[0] * weight.numel() * spatial * mult
            return out

    with Count():
        step()
    return counts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("config")
    ap.add_argument("--device", default=None, help="overrides train.device (cpu, cuda, cuda:1, ...)")
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--peak-tflops", type=float, default=None,
                    help="the device's dense peak TFLOP/s for the share (default: the table for known GPUs)")
    ap.add_argument("--by-shape", action="store_true", help="conv FLOPs by channel counts (one extra eager step)")
    ap.add_argument("--set", action="append", default=[])
    args = ap.parse_args()
    sets = list(args.set) + ([f"train.device={args.device}"] if args.device else [])
    cfg = load_config(args.config, sets)
    dev = select_device(cfg.train.device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"train_step.py: device {dev} asked for, but CUDA is not available on this machine")
    configure_backends(dev, cfg.train.threads)  # as the training loop
    info = dataset_info(cfg.data)
    precision = resolve_precision(cfg.train.precision, dev)
    b = args.batch_size or cfg.train.batch_size
    torch.manual_seed(0)
    method = build_method(cfg, info).to(dev)
    if not method.phases:
        print(json.dumps({"benchmark": "train_step", "config": args.config, "method": cfg.method,
                          "note": "fitted in one pass (no training step)", "parameters": method.parameter_counts()}))
        return
    fmt = torch.channels_last if cfg.train.channels_last else torch.contiguous_format
    method.to(memory_format=fmt)
    ema = make_ema(method.generator)
    h, w = cfg.data.height, cfg.data.width
    label = torch.randint(0, info.semantic_nc, (b, -(-h // 8), -(-w // 8)))
    label = label.repeat_interleave(8, 1).repeat_interleave(8, 2)[:, :h, :w].contiguous().to(dev)
    image = (torch.rand(b, 3, h, w, device=dev) * 2 - 1).contiguous(memory_format=fmt)
    by_shape = None
    if args.by_shape:  # an eager copy, before compiling (the dispatch mode sees eager ops)
        twin = copy.deepcopy(method)
        twin_opts = make_optimizers(twin, cfg.train)
        by_shape = conv_flops_by_channels(
            lambda: train_step(twin, twin_opts, image, label, torch.Generator().manual_seed(0), precision=precision))
        del twin, twin_opts
    if cfg.train.compile:
        compile_networks(method, mode=cfg.train.compile_mode)
    cudagraphs = uses_cudagraphs(cfg.train.compile, cfg.train.compile_mode, dev)
    opts = make_optimizers(method, cfg.train)
    rng = torch.Generator().manual_seed(0)

    def step():
        train_step(method, opts, image, label, rng, precision=precision, cudagraphs=cudagraphs)
        update_ema(ema, method.generator, 0.999)

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    for _ in range(args.warmup):
        step()
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        step()
    flops = counter.get_total_flops()
    sync()
    t = time.perf_counter()
    for _ in range(args.steps):
        step()
    sync()
    dt = time.perf_counter() - t
    tflops = flops * args.steps / dt / 1e12
    name, peaks = peak_for(dev)
    if args.peak_tflops:
        peaks = (args.peak_tflops, args.peak_tflops)
    out = {"benchmark": "train_step", "config": args.config, "method": cfg.method, "device": str(dev),
           "device_name": name, "batch_size": b, "height": h, "width": w, "threads": torch.get_num_threads(),
           "channels_last": cfg.train.channels_last, "precision": precision,
           "compile": cfg.train.compile, "sets": args.set,
           "sec_per_step": round(dt / args.steps, 4), "images_per_s": round(b * args.steps / dt, 2),
           "gflop_per_step": round(flops / 1e9, 2), "achieved_tflops": round(tflops, 3),
           "parameters": method.parameter_counts()}
    if by_shape is not None:
        total = sum(by_shape.values())
        out["conv_gflop_per_step"] = round(total / 1e9, 2)
        out["conv_share_with_channels_not_multiple_of_8"] = round(
            sum(v for (i, o), v in by_shape.items() if i % 8 or o % 8) / total, 4)
        out["conv_share_by_in_out_channels"] = {f"{i}x{o}": round(v / total, 4) for (i, o), v in by_shape.most_common()}
    if peaks:
        out["share_of_dense_tf32_peak"] = round(tflops / peaks[0], 4)
        out["share_of_dense_bf16_peak"] = round(tflops / peaks[1], 4)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
