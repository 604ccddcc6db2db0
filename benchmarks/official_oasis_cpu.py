"""CPU speed of the official OASIS code (boschresearch/OASIS) vs semsynth's OASIS, same work — not a test.

The official repository is imported from a local copy (``--official-root``; fetch it
yourself, it is AGPL and never committed here). docs/results.md, "CPU speed on identical
work", holds the numbers and the command.

Architecture (both): G channels_G 16 (256,256,256,128,64,32,16; 6 SPADE blocks), z_dim 64,
SPADE hidden 128, spectral norm; D 128,128,256,256,512,512 (U-Net, last 64, N+1 output);
64x64, batch 4, 12 label channels, no don't-care; G 9,699,059 and D 22,249,869 parameters.

Training step, official (train.py, one iteration; utils.update_EMA without the periodic
BatchNorm-statistics pass): preprocess_input (one-hot) → netG.zero_grad → model(...,
"losses_G") → backward → optimizerG.step → netD.zero_grad → model(..., "losses_D")
(LabelMix on) → backward → optimizerD.step → EMA over the state_dict (decay 0.9999).
Training step, semsynth: the training loop's own ``train.loop.train_step`` (per phase G, D:
requires_grad toggling, zero_grad, phase_losses(...)["total"].backward(), opt.step()) and
``train.ema.update_ema(ema, generator, 0.9999)``, networks channels-last as
``train.channels_last`` says (an older checkout without ``train_step``: the same loop inline).

Sampling, official: model.eval(); preprocess_input; model(None, label, "generate", None)
(netEMA under no_grad). semsynth: Sampler(ema generator).generate(label, seeds, batch_size)
(eval mode, no_grad, per-sample seeded noise; factored noise unless --semsynth-dense).

Usage:
  python benchmarks/official_oasis_cpu.py --official-root PATH [--rounds 5] [--steps 5] [--warmup 2]
      [--what train|sample|both] [--semsynth-src PATH [--semsynth-config YAML]] [--check] [--set k=v ...]
Prints per-round lines, then JSON lines (one per benchmark) with medians and the ratio
semsynth/official of images/s (> 1: semsynth faster).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import time
import types
import warnings
from dataclasses import replace
from pathlib import Path

import torch

H = W = 64
BATCH = 4
SEMANTIC_NC = 12
EMA_DECAY = 0.9999  # official default (ADE20K/COCO; Cityscapes 0.999)
EXPECTED = {"G": 9_699_059, "D": 22_249_869}

SEMSYNTH_CONFIG = str(Path(__file__).resolve().parents[1] / "configs" / "oasis" / "camvid_cpu.yaml")
SEMSYNTH_SETS = [
    "data.height=64", "data.width=64",
    "model.generator.channels=[256,256,256,128,64,32,16]",
    "model.generator.z_dim=64", "model.generator.spade_hidden=128", "model.generator.spade_kernel=3",
    "model.generator.spectral_norm=true",
    "model.discriminator.channels=[128,128,256,256,512,512]", "model.discriminator.last_channels=64",
    "model.discriminator.spectral_norm=true",
    "model.labelmix=true", "model.lambda_labelmix=10.0",
    "model.labelmix_mask=batch",  # official generate_labelmix: one bit per class for the whole batch
    "model.lambda_vgg=0.0", "model.init=official", "model.discriminator_type=oasis",
    "train.batch_size=4", "train.lr_g=0.0001", "train.lr_d=0.0004", "train.betas=[0.0,0.999]",
    "train.device=cpu",
]


def nparams(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# --------------------------------------------------------------------------- official
def official_opt() -> argparse.Namespace:
    """Every opt field read by models.py, generator.py, discriminator.py, norms.py, losses.py
    (defaults of config.py for train=True unless the architecture says otherwise)."""
    return argparse.Namespace(
        phase="train", gpu_ids="-1", name="bench", checkpoints_dir="/tmp/oasis_bench_ckpt",
        continue_train=False, which_iter="latest", seed=42, batch_size=BATCH,
        # generator
        num_res_blocks=6, channels_G=16, param_free_norm="syncbatch", spade_ks=3,
        no_EMA=False, EMA_decay=EMA_DECAY, no_3dnoise=False, z_dim=64, no_spectral_norm=False,
        # data (what a dataloader sets): 64x64, 12 channels, no don't-care
        crop_size=W, load_size=W, aspect_ratio=1.0, label_nc=SEMANTIC_NC, semantic_nc=SEMANTIC_NC,
        contain_dontcare_label=False,
        # training
        lr_g=0.0001, lr_d=0.0004, beta1=0.0, beta2=0.999, channels_D=64,
        add_vgg_loss=False, lambda_vgg=10.0, no_balancing_inloss=False,
        no_labelmix=False, lambda_labelmix=10.0,
    )


def official_update_EMA_weights(model, opt) -> None:
    """The weight part of the official ``utils.update_EMA`` (written here, same arithmetic):
    every entry of netEMA's state dict (weights and BatchNorm buffers) becomes
    ``decay · ema + (1 − decay) · G``, entry by entry. Its periodic 50-batch BatchNorm
    statistics pass is left out of the step (see :meth:`Official.refresh`)."""
    decay = opt.EMA_decay
    g_state = model.netG.state_dict()
    with torch.no_grad():
        for name, ema_t in model.netEMA.state_dict().items():
            ema_t.copy_(ema_t * decay + g_state[name] * (1 - decay))


class Official:
    name = "official"

    def __init__(self, root: str, label: torch.Tensor, image: torch.Tensor) -> None:
        sys.path.insert(0, root)
        try:
            import torchvision  # noqa: F401  (models/vggloss.py imports it; VGG loss is off)
            self.torchvision_stub = False
        except ImportError:
            sys.modules["torchvision"] = types.ModuleType("torchvision")
            self.torchvision_stub = True
        import models.losses as losses
        import models.models as models
        from models.sync_batchnorm import SynchronizedBatchNorm2d

        self.models = models
        self.opt = opt = official_opt()
        torch.manual_seed(0)
        print("[official] ", end="", flush=True)
        self.model = models.OASIS_model(opt)  # prints "Created ... with N parameters" (convs only)
        self.model.train()
        self.losses_computer = losses.losses_computer(opt)
        self.optG = torch.optim.Adam(self.model.netG.parameters(), lr=opt.lr_g, betas=(opt.beta1, opt.beta2))
        self.optD = torch.optim.Adam(self.model.netD.parameters(), lr=opt.lr_d, betas=(opt.beta1, opt.beta2))
        self.bn_type = sorted({type(m).__name__ for m in self.model.netG.modules()
                               if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)})
        assert all(isinstance(m, SynchronizedBatchNorm2d) for m in self.model.netG.modules()
                   if isinstance(m, torch.nn.modules.batchnorm._BatchNorm))
        self.counts = {"G": nparams(self.model.netG), "D": nparams(self.model.netD)}
        # the data as a dataloader would give it: label (B, 1, H, W) ids, image (B, 3, H, W)
        self.data = {"label": label[:, None].clone(), "image": image.clone()}

    def train_step(self) -> None:
        model, opt = self.model, self.opt
        image, label = self.models.preprocess_input(opt, dict(self.data))
        # --- generator update ---
        model.netG.zero_grad()
        loss_G, losses_G_list = model(image, label, "losses_G", self.losses_computer)
        loss_G, losses_G_list = loss_G.mean(), [t.mean() if t is not None else None for t in losses_G_list]
        loss_G.backward()
        self.optG.step()
        # --- discriminator update ---
        model.netD.zero_grad()
        loss_D, losses_D_list = model(image, label, "losses_D", self.losses_computer)
        loss_D, losses_D_list = loss_D.mean(), [t.mean() if t is not None else None for t in losses_D_list]
        loss_D.backward()
        self.optD.step()
        # --- stats update ---
        official_update_EMA_weights(model, opt)

    def refresh(self, n: int) -> None:
        """utils.update_EMA's statistics pass (force_run_stats: what precedes every official
        image/FID/checkpoint): netEMA forwards in train mode under no_grad (BatchNorm running
        statistics, and one spectral-norm power step per conv and forward)."""
        with torch.no_grad():
            for _ in range(n):
                _, label = self.models.preprocess_input(self.opt, dict(self.data))
                self.model.netEMA(label)

    def prepare_sample(self) -> None:
        self.model.eval()  # test.py: model.eval()

    def sample_step(self, k: int) -> None:
        _, label = self.models.preprocess_input(self.opt, dict(self.data))
        fake = self.model(None, label, "generate", None)
        assert fake.shape == (BATCH, 3, H, W)

    def finish_sample(self) -> None:
        self.model.train()


# --------------------------------------------------------------------------- semsynth
class Semsynth:
    name = "semsynth"

    def __init__(self, label: torch.Tensor, image: torch.Tensor, extra_sets: list[str], dense: bool,
                 config: str = SEMSYNTH_CONFIG) -> None:
        import semsynth
        from semsynth.config import load_config
        from semsynth.data import dataset_info
        from semsynth.sample.sampler import Sampler
        from semsynth.train.ema import make_ema, update_ema

        try:  # this checkout
            from semsynth.model.build import build_method
            from semsynth.train.loop import make_optimizers
        except ImportError:  # a --semsynth-src checkout from before model/ (issue 19)
            from semsynth.train.loop import build_method

            def make_optimizers(method, tc):
                return {p: torch.optim.Adam(method.phase_parameters(p), lr=method.phase_lr(p, tc),
                                            betas=tuple(float(b) for b in tc.betas)) for p in method.phases}

        self.module_file = semsynth.__file__
        self.sets = SEMSYNTH_SETS + list(extra_sets)
        self.cfg = cfg = load_config(config, self.sets)
        info = dataset_info(cfg.data)
        assert info.semantic_nc == SEMANTIC_NC, info.semantic_nc
        # CamVid's 12 ids include Void (id 11, don't-care); the official run has no don't-care
        # (contain_dontcare_label=False), so semsynth gets the same 12 channels without one.
        self.info = replace(info, ignore_index=None)
        torch.manual_seed(0)
        self.method = build_method(cfg, self.info)
        self.method.train()
        self.opts = make_optimizers(self.method, cfg.train)
        self.ema = make_ema(self.method.generator).eval()
        self.update_ema = update_ema
        self.rng = torch.Generator().manual_seed(0)
        self.label = label.clone()
        self.image = image.clone()
        try:  # the training loop's own step (semsynth with train.channels_last / train_step)
            from semsynth.train.loop import train_step as loop_step
        except ImportError:
            loop_step = None
        self.loop_step = loop_step
        if getattr(cfg.train, "channels_last", False):
            self.method.to(memory_format=torch.channels_last)
            self.image = self.image.contiguous(memory_format=torch.channels_last)
        self.counts = {k: v for k, v in self.method.parameter_counts().items() if k in ("G", "D")}
        self.counts_own = {"G": nparams(self.method.generator), "D": nparams(self.method.discriminator)}
        self.dense = dense
        self.Sampler = Sampler

    def train_step(self) -> None:
        method = self.method
        if self.loop_step is not None:
            self.loop_step(method, self.opts, self.image, self.label, self.rng)
            self.update_ema(self.ema, method.generator, EMA_DECAY)
            return
        for phase in method.phases:
            for p in method.parameters():
                p.requires_grad_(False)
            for p in method.phase_parameters(phase):
                p.requires_grad_(True)
            self.opts[phase].zero_grad(set_to_none=True)
            method.phase_losses(phase, self.image, self.label, self.rng)["total"].backward()
            self.opts[phase].step()
        self.update_ema(self.ema, method.generator, EMA_DECAY)

    def refresh(self, n: int) -> None:
        """semsynth.train.ema.refresh_batchnorm (what the training loop runs before grids,
        evaluation and checkpoints)."""
        from semsynth.labels import one_hot
        from semsynth.train.ema import refresh_batchnorm

        onehot = one_hot(self.label, self.info.semantic_nc)
        refresh_batchnorm(self.ema, [(onehot, list(range(BATCH)))] * n)

    def prepare_sample(self) -> None:
        if self.dense:
            self.ema.factored_inference = False
        self.sampler = self.Sampler(self.ema, self.info, H, W, "cpu")  # puts the EMA G in eval mode

    def sample_step(self, k: int) -> None:
        fake = self.sampler.generate(self.label, seeds=list(range(k * BATCH, (k + 1) * BATCH)), batch_size=BATCH)
        assert fake.shape == (BATCH, 3, H, W)

    def finish_sample(self) -> None:
        pass


# --------------------------------------------------------------------------- equivalence
def check_equivalence(off: "Official", sem: "Semsynth", label: torch.Tensor, image: torch.Tensor) -> dict:
    """Same function on both sides? Official weights loaded into copies of semsynth's G and D
    (semsynth's own converters in model/official/oasis.py, given the 12-channel label space
    in-process), then G (eval and train mode, same z), D and the losses compared."""
    from semsynth.losses.n1 import labelmix_loss, n1_cross_entropy
    from semsynth.model.official import oasis as conv

    conv.OFFICIAL_DATASETS.setdefault("bench12", (SEMANTIC_NC, H, W))
    orig_cmap = conv.channel_map
    conv.channel_map = lambda d: list(range(SEMANTIC_NC)) if d == "bench12" else orig_cmap(d)
    try:
        netG, netD = copy.deepcopy(off.model.netG), copy.deepcopy(off.model.netD)
        G, D = copy.deepcopy(sem.method.generator), copy.deepcopy(sem.method.discriminator)
        with torch.no_grad():  # the official u, v start random: converge them first (train-mode forwards)
            netG.train()
            netD.train()
            onehot0 = off.models.preprocess_input(off.opt, dict(off.data))[1]
            for _ in range(30):
                netG(onehot0)
                netD(image)
        G.load_state_dict(conv.generator_from_official(netG.state_dict(), "bench12", 64))
        D.load_state_dict(conv.discriminator_from_official(netD.state_dict(), "bench12"))
    finally:
        conv.channel_map = orig_cmap
    onehot = off.models.preprocess_input(off.opt, dict(off.data))[1]
    out = {}

    def rel(x: torch.Tensor, y: torch.Tensor) -> float:  # max |x - y| relative to max |x|
        return float((x - y).abs().max() / x.abs().max().clamp(min=1e-12))

    with torch.no_grad():
        for mode in ("eval", "train"):  # train: BatchNorm batch statistics, one power step each
            netG.train(mode == "train")
            G.train(mode == "train")
            torch.manual_seed(7)
            z = torch.randn(BATCH, 64)
            torch.manual_seed(7)  # the official G draws torch.randn(B, z_dim) itself
            a = netG(onehot)
            b = G(onehot.clone(), z)
            out[f"G_{mode}_rel"] = rel(a, b)
        netD.eval()
        D.eval()
        la = netD(image)
        out["D_eval_rel"] = rel(la, D(image))
        lc = off.losses_computer
        for real in (True, False):
            x, y = lc.loss(la, onehot, for_real=real), n1_cross_entropy(la, label, real, None)
            out[f"loss_{'real' if real else 'fake'}_rel"] = rel(x, y)
        mask = (label[:, None] % 2).float()
        la2, la3 = netD(-image), netD(image * 0.5)  # "mixed", "real"; la = "fake"
        out["labelmix_rel"] = rel(lc.loss_labelmix(mask, la2, la, la3), labelmix_loss(la2, la3, la, mask))
        netD.train()
        D.train()
        out["D_train_rel"] = rel(netD(image), D(image))
    # Eval mode and the losses: the same function up to float rounding. Train mode does one
    # spectral-norm power step per conv, in a different order (hook: v then u; PyTorch's
    # parametrisation: u then v), so (u, v) and sigma differ slightly: a looser bound there.
    out["ok"] = all(v < (1e-2 if "train" in k else 1e-4) for k, v in out.items())
    return out


# --------------------------------------------------------------------------- timing
def timed(impl, what: str, steps: int, counter: list[int]) -> float:
    """Seconds for ``steps`` steps of ``what``."""
    t = time.perf_counter()
    for _ in range(steps):
        if what == "train":
            impl.train_step()
        else:
            impl.sample_step(counter[0])
            counter[0] += 1
    return time.perf_counter() - t


def bench(impls, what: str, rounds: int, steps: int, warmup: int, round_warmup: int,
          bn_refresh: int = 0) -> dict:
    counters = {i.name: [0] for i in impls}
    if what == "sample" and bn_refresh:
        for impl in impls:
            impl.refresh(bn_refresh)
    ips = {i.name: [] for i in impls}
    ctx = torch.no_grad() if what == "sample" else torch.enable_grad()
    for impl in impls:
        if what == "sample":
            impl.prepare_sample()
        with ctx:
            timed(impl, what, warmup, counters[impl.name])
        if what == "sample":
            impl.finish_sample()
    for r in range(rounds):
        line = []
        for impl in impls:
            if what == "sample":
                impl.prepare_sample()
            with ctx:
                if round_warmup:
                    timed(impl, what, round_warmup, counters[impl.name])
                dt = timed(impl, what, steps, counters[impl.name])
            if what == "sample":
                impl.finish_sample()
            ips[impl.name].append(BATCH * steps / dt)
            line.append(f"{impl.name} {BATCH * steps / dt:7.2f} img/s ({dt / steps:.3f} s/step)")
        print(f"[{what}] round {r + 1}/{rounds}: " + " | ".join(line), flush=True)
    med = {k: statistics.median(v) for k, v in ips.items()}
    return {
        "benchmark": f"oasis_{what}", "device": "cpu", "threads": torch.get_num_threads(),
        "batch_size": BATCH, "height": H, "width": W, "semantic_nc": SEMANTIC_NC,
        "rounds": rounds, "steps_per_round": steps, "warmup": warmup, "round_warmup": round_warmup,
        **({"bn_refresh": bn_refresh} if what == "sample" else {}),
        "official_images_per_s": [round(v, 3) for v in ips["official"]],
        "semsynth_images_per_s": [round(v, 3) for v in ips["semsynth"]],
        "official_median": round(med["official"], 3), "semsynth_median": round(med["semsynth"], 3),
        "ratio_semsynth_over_official": round(med["semsynth"] / med["official"], 3),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=5, help="timed steps per round and implementation")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps per implementation before round 1")
    ap.add_argument("--round-warmup", type=int, default=0, help="untimed steps before every timed block")
    ap.add_argument("--what", choices=("train", "sample", "both"), default="both")
    ap.add_argument("--semsynth-src", default=None, help="a semsynth checkout's src/ (prepended to sys.path)")
    ap.add_argument("--semsynth-config", default=SEMSYNTH_CONFIG, help="base config of the --set overrides")
    ap.add_argument("--official-root", required=True,
                    help="a local copy of boschresearch/OASIS (the folder holding models/); never committed")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--bn-refresh", type=int, default=50,
                    help="untimed EMA-generator BatchNorm refresh batches before sampling (official: 50)")
    ap.add_argument("--set", action="append", default=[], help="extra semsynth overrides (after the built-in ones)")
    ap.add_argument("--check", action="store_true",
                    help="first check that both compute the same G/D outputs and losses from the same weights")
    ap.add_argument("--semsynth-dense", action="store_true",
                    help="semsynth sampling without the factored noise (if the checkout has it)")
    args = ap.parse_args()

    if args.semsynth_src:
        sys.path.insert(0, args.semsynth_src)
    warnings.filterwarnings("ignore")  # deprecations of the official code (spectral_norm, F.tanh, ...)
    torch.set_num_threads(args.threads)

    # the same data for both: blocky label maps (8x8 blocks, as benchmarks/train_step.py) and images
    g = torch.Generator().manual_seed(1234)
    label = torch.randint(0, SEMANTIC_NC, (BATCH, H // 8, W // 8), generator=g)
    label = label.repeat_interleave(8, 1).repeat_interleave(8, 2).contiguous()
    image = torch.rand(BATCH, 3, H, W, generator=g) * 2 - 1

    off = Official(args.official_root, label, image)
    sem = Semsynth(label, image, args.set, args.semsynth_dense, args.semsynth_config)
    setup = {
        "setup": True, "torch": torch.__version__, "threads": torch.get_num_threads(),
        "semsynth_module": sem.module_file, "semsynth_config": args.semsynth_config, "semsynth_sets": sem.sets,
        "official_root": args.official_root, "official_bn": off.bn_type,
        "official_torchvision_stub": off.torchvision_stub,
        "params_official": off.counts, "params_semsynth": sem.counts, "params_semsynth_sum": sem.counts_own,
        "params_expected": EXPECTED,
    }
    print(json.dumps(setup), flush=True)
    load0 = os.getloadavg()
    for counts, who in ((off.counts, "official"), (sem.counts, "semsynth"), (sem.counts_own, "semsynth")):
        if counts != EXPECTED:
            raise SystemExit(f"{who} parameter counts {counts} != expected {EXPECTED}")

    if args.check:
        print(json.dumps({"equivalence": check_equivalence(off, sem, label, image)}), flush=True)

    whats = ("train", "sample") if args.what == "both" else (args.what,)
    results = [bench([off, sem], w, args.rounds, args.steps, args.warmup, args.round_warmup, args.bn_refresh)
               for w in whats]
    load1 = os.getloadavg()
    for r in results:
        r["loadavg_1min_start_end"] = [round(load0[0], 2), round(load1[0], 2)]  # > ~2.5: other jobs competed
        print(json.dumps(r), flush=True)


if __name__ == "__main__":
    main()
