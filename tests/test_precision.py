"""train.precision (bf16 autocast), train.compile and the fused optimizer: their code paths on
the CPU (the speed is measured on GPUs: benchmarks/official_oasis_gpu.py, docs/results.md)."""

import copy
from pathlib import Path

import pytest
import torch

from semsynth.config import load_config
from semsynth.data import dataset_info
from semsynth.losses.gan import hinge_d_loss
from semsynth.losses.n1 import labelmix_loss, n1_cross_entropy
from semsynth.model.build import build_method, compile_networks
from semsynth.nn.spectral import spectral_norm
from semsynth.train.ema import make_ema, update_ema
from semsynth.train.loop import make_optimizers, train_step
from semsynth.types import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def _setup(tiny_config, name, *sets):
    cfg = (load_config(ROOT / "configs" / "oasis" / "tiny_pretrained_d.yaml", sets) if name == "oasis_pretrained_d"
           else tiny_config(name, *sets))
    info = dataset_info(cfg.data)
    torch.manual_seed(0)
    method = build_method(cfg, info)
    h, w = cfg.data.height, cfg.data.width
    g = torch.Generator().manual_seed(1)
    label = torch.randint(0, info.semantic_nc, (2, h // 8, w // 8), generator=g)
    label = label.repeat_interleave(8, 1).repeat_interleave(8, 2)[:, :h, :w].contiguous()
    image = torch.rand(2, 3, h, w, generator=g) * 2 - 1
    return cfg, method, image, label


def _steps(cfg, method, image, label, n=3, **kw):
    opts = make_optimizers(method, cfg.train)
    ema = make_ema(method.generator)
    rng = torch.Generator().manual_seed(0)
    logs = []
    for _ in range(n):
        logs.append({k: float(v) for k, v in train_step(method, opts, image, label, rng, **kw).items()})
        update_ema(ema, method.generator, 0.9)
    return logs, ema


def _conv_output_dtypes(module):
    """Record the output dtype of every Conv2d of ``module`` (forward hooks)."""
    seen = set()
    for m in module.modules():
        if isinstance(m, torch.nn.Conv2d):
            m.register_forward_hook(lambda _m, _i, out: seen.add(out.dtype))
    return seen


@pytest.mark.parametrize("name", ["oasis", "oasis_pretrained_d", "spade"])
def test_bf16_steps_are_finite_close_to_fp32_and_keep_fp32_state(tiny_config, name):
    cfg, method, image, label = _setup(tiny_config, name)
    ref_method = copy.deepcopy(method)
    ref_dtypes, dtypes = _conv_output_dtypes(ref_method), _conv_output_dtypes(method)
    ref, _ = _steps(cfg, ref_method, image, label)
    logs, ema = _steps(cfg, method, image, label, precision="bf16")
    assert ref_dtypes == {torch.float32} and dtypes == {torch.bfloat16}  # every conv ran in bf16
    assert logs != ref
    for a, b in zip(ref, logs):
        assert a.keys() == b.keys()
        for k in a:  # bf16 has 8 significant bits: ~1 % per op, a few % after three steps;
            # LabelMix is a mean square of differences of logits: their rounding noise adds to it
            tol = 0.1 if k == "D_labelmix" else 0.02
            assert b[k] == pytest.approx(a[k], rel=0.1, abs=tol), (k, a[k], b[k])
    # weights, spectral norm's u/v, BatchNorm statistics, Adam's moments and the EMA: fp32
    for module in (method, ema):
        for n, t in list(module.named_parameters()) + list(module.named_buffers()):
            assert t.dtype in (torch.float32, torch.int64, torch.bool), (n, t.dtype)
    assert any(n.endswith("._u") for n, _ in method.named_buffers())  # spectral norm is in the test


def test_spectral_norm_power_iteration_stays_fp32_under_autocast(monkeypatch):
    from torch.nn.utils.parametrizations import _SpectralNorm

    autocast_in_power_step = []
    real_power = _SpectralNorm._power_method

    def spy(self, *a, **k):
        autocast_in_power_step.append(torch.is_autocast_enabled("cpu"))
        return real_power(self, *a, **k)

    monkeypatch.setattr(_SpectralNorm, "_power_method", spy)
    torch.manual_seed(0)
    conv = spectral_norm(torch.nn.Conv2d(64, 64, 3))
    plain = torch.nn.utils.parametrizations.spectral_norm(torch.nn.Conv2d(64, 64, 3))
    plain.load_state_dict(conv.state_dict())
    ref = copy.deepcopy(conv)
    with torch.autocast("cpu", torch.bfloat16):  # CUDA's autocast puts mv, the power step, in bf16
        w = conv.weight
        plain.weight
    assert autocast_in_power_step[-2:] == [False, True]  # ours off, PyTorch's own on
    w_ref = ref.weight
    assert w.dtype == torch.float32 and torch.equal(w, w_ref)  # the same σ and u, v as without autocast
    assert torch.equal(conv.parametrizations.weight[0]._u, ref.parametrizations.weight[0]._u)
    assert list(conv.state_dict()) == list(plain.state_dict())  # checkpoints unchanged


def test_losses_compute_in_fp32_from_bf16_inputs():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 8, 8, generator=g).bfloat16()
    label = torch.randint(0, 4, (2, 8, 8), generator=g)
    with torch.autocast("cpu", torch.bfloat16):
        ce = n1_cross_entropy(logits, label, True, None)
        lm = labelmix_loss(logits, logits * 0.5, logits * 0.25, (label[:, None] % 2).float())
        r, f = hinge_d_loss([[logits]], [[-logits]])
    f32 = logits.float()
    assert ce.dtype == lm.dtype == r.dtype == torch.float32
    assert torch.equal(ce, n1_cross_entropy(f32, label, True, None))
    assert torch.equal(lm, labelmix_loss(f32, f32 * 0.5, f32 * 0.25, (label[:, None] % 2).float()))
    assert torch.equal(r, hinge_d_loss([[f32]], [[-f32]])[0])


def test_compiled_networks_give_the_eager_losses_and_the_same_state_dict(tiny_config):
    cfg, method, image, label = _setup(tiny_config, "oasis")
    ref, _ = _steps(cfg, copy.deepcopy(method), image, label, n=2)
    keys = list(method.state_dict())
    assert compile_networks(method, backend="eager") == ["generator", "discriminator"]
    logs, _ = _steps(cfg, method, image, label, n=2)
    assert logs == ref
    assert list(method.state_dict()) == keys


def test_the_trainer_compiles_after_the_ema_copy(tiny_config, tmp_path, monkeypatch):
    import semsynth.train.loop as loop

    seen = {}

    def eager_compile(method, mode):  # the loop's call, with a backend that compiles in seconds
        seen["names"], seen["mode"] = compile_networks(method, backend="eager"), mode
        return seen["names"]

    monkeypatch.setattr(loop, "compile_networks", eager_compile)
    cfg = tiny_config("oasis", "train.compile=true", "train.max_steps=2", "train.tensorboard=false")
    trainer = loop.Trainer(cfg, tmp_path / "run", progress=False)
    assert seen["names"] == ["generator", "discriminator"] and seen["mode"] == "default"
    assert not trainer._cudagraphs
    assert getattr(trainer.method.generator, "_compiled_call_impl", None) is not None
    assert getattr(trainer.ema, "_compiled_call_impl", None) is None  # sampling stays eager
    assert trainer.run().step == 2


def test_precision_is_checked_and_adam_is_fused_only_on_cuda(tiny_config):
    with pytest.raises(ConfigError, match="train.precision must be one of"):
        tiny_config("oasis", "train.precision=fp16")
    cfg, method, _, _ = _setup(tiny_config, "oasis")
    for opt in make_optimizers(method, cfg.train).values():
        assert not opt.defaults["fused"]


def test_auto_precision_is_bf16_only_where_the_device_computes_it_natively(tmp_path):
    from semsynth.model.build import native_bf16, resolve_precision

    cpu = torch.device("cpu")
    with_bf16, without = tmp_path / "zen4", tmp_path / "old"
    with_bf16.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16 avx512_vnni\n")
    without.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f\n")
    assert native_bf16(cpu, str(with_bf16)) and not native_bf16(cpu, str(without))
    assert not native_bf16(cpu, str(tmp_path / "absent"))  # no /proc/cpuinfo (macOS, Windows): fp32
    if not torch.cuda.is_available():
        assert not native_bf16(torch.device("cuda"))
        assert resolve_precision("auto", torch.device("cuda")) == "fp32"
    assert resolve_precision("auto", cpu) == ("bf16" if native_bf16(cpu) else "fp32")
    assert resolve_precision("fp32", cpu) == "fp32" and resolve_precision("bf16", cpu) == "bf16"


def test_the_trainer_resolves_auto_and_train_step_refuses_it(tiny_config, tmp_path, capsys):
    import semsynth.train.loop as loop
    from semsynth.model.build import resolve_precision

    cfg = tiny_config("oasis", "train.precision=auto", "train.max_steps=1", "train.tensorboard=false")
    trainer = loop.Trainer(cfg, tmp_path / "run", progress=False)
    want = resolve_precision("auto", torch.device("cpu"))
    assert trainer.precision == want
    assert trainer.run().step == 1
    assert f"train.precision auto: {want} on cpu" in capsys.readouterr().err
    _, method, image, label = _setup(tiny_config, "oasis")
    with pytest.raises(ValueError, match="resolve auto first"):
        train_step(method, make_optimizers(method, cfg.train), image, label, torch.Generator(), precision="auto")


def test_a_resume_keeps_this_devices_adam_kernel_and_notes_a_precision_change(tiny_config, tmp_path, capsys):
    import semsynth.train.loop as loop
    from semsynth.model.checkpoint import TrainingState, load_checkpoint, save_checkpoint

    cfg = tiny_config("oasis", "train.max_steps=2", "train.tensorboard=false")
    out = tmp_path / "run"
    loop.Trainer(cfg, out, progress=False).run()
    latest = out / "checkpoints" / "latest.pt"
    state = TrainingState.from_dict(load_checkpoint(latest), latest)
    assert state.precision == "fp32"  # what the steps ran in
    for opt in state.optimizers.values():  # as if saved on a CUDA machine (fused) in bf16
        for g in opt["param_groups"]:
            g["fused"] = True
    state.precision = "bf16"
    save_checkpoint(latest, state)
    capsys.readouterr()
    trainer = loop.Trainer(tiny_config("oasis", "train.max_steps=3", "train.tensorboard=false"), out,
                           resume=True, progress=False)
    assert all(not g["fused"] for o in trainer.optimizers.values() for g in o.param_groups)  # CPU: not fused
    assert "the checkpoint's steps ran in bf16; this device continues in fp32" in capsys.readouterr().err
    assert trainer.run().step == 3


def test_precision_and_compile_are_errors_for_a_method_without_training_steps(tiny_config):
    for key in ("train.precision=bf16", "train.compile=true", "train.compile_mode=reduce-overhead"):
        with pytest.raises(ConfigError, match="fitted in one pass"):
            tiny_config("painter", key)


def test_compile_mode_is_checked_and_needs_compile(tiny_config):
    with pytest.raises(ConfigError, match="train.compile_mode must be one of"):
        tiny_config("oasis", "train.compile=true", "train.compile_mode=fast")
    with pytest.raises(ConfigError, match="train.compile_mode is set but train.compile is false"):
        tiny_config("oasis", "train.compile_mode=reduce-overhead")
    assert tiny_config("oasis", "train.compile=true", "train.compile_mode=max-autotune").train.compile_mode \
        == "max-autotune"
    _, method, _, _ = _setup(tiny_config, "oasis")
    with pytest.raises(ValueError, match="Inductor's; backend 'eager' takes none"):
        compile_networks(method, backend="eager", mode="reduce-overhead")
    with pytest.raises(ValueError, match="mode must be one of"):
        compile_networks(method, mode="fast")


def test_compile_and_its_mode_may_change_on_resume(tiny_config):
    from semsynth.model.checkpoint import config_differences

    saved = tiny_config("oasis")
    assert config_differences(saved, tiny_config("oasis", "train.compile=true", "train.compile_mode=reduce-overhead")) == []
    assert config_differences(saved, tiny_config("oasis", "train.lr_g=0.001")) != []


def test_cuda_graphs_only_for_their_modes_on_cuda():
    from semsynth.model.build import uses_cudagraphs

    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert uses_cudagraphs(True, "reduce-overhead", cuda) and uses_cudagraphs(True, "max-autotune", cuda)
    assert not uses_cudagraphs(True, "reduce-overhead", cpu)
    assert not uses_cudagraphs(False, "reduce-overhead", cuda)
    assert not uses_cudagraphs(True, "default", cuda) and not uses_cudagraphs(True, "max-autotune-no-cudagraphs", cuda)


def test_with_cuda_graphs_each_step_is_marked_as_a_new_iteration(tiny_config, tmp_path, monkeypatch):
    """``train_step(cudagraphs=True)`` calls ``torch.compiler.cudagraph_mark_step_begin`` once,
    before the first phase; the loop passes it when the mode replays CUDA graphs (faked here: no GPU)."""
    import semsynth.train.loop as loop

    events = []
    monkeypatch.setattr(torch.compiler, "cudagraph_mark_step_begin", lambda: events.append("mark"))
    cfg, method, image, label = _setup(tiny_config, "oasis")
    real_losses = method.phase_losses
    monkeypatch.setattr(method, "phase_losses", lambda phase, *a, **kw: events.append(phase) or real_losses(phase, *a, **kw))
    opts = make_optimizers(method, cfg.train)
    train_step(method, opts, image, label, torch.Generator().manual_seed(0), cudagraphs=True)
    assert events == ["mark"] + list(method.phases)
    events.clear()
    train_step(method, opts, image, label, torch.Generator().manual_seed(0))
    assert "mark" not in events

    seen = []
    monkeypatch.setattr(loop, "compile_networks", lambda method, mode: seen.append(("compile", mode)))
    monkeypatch.setattr(loop, "uses_cudagraphs", lambda compile_, mode, device: mode == "reduce-overhead")
    real_step = loop.train_step
    monkeypatch.setattr(loop, "train_step", lambda *a, **kw: seen.append(kw["cudagraphs"]) or real_step(*a, **kw))
    cfg = tiny_config("oasis", "train.compile=true", "train.compile_mode=reduce-overhead", "train.max_steps=3",
                      "train.tensorboard=false")
    assert loop.Trainer(cfg, tmp_path / "run", progress=False).run().step == 3
    assert seen == [("compile", "reduce-overhead"), True, True, True]


def test_compile_is_off_under_torchrun():
    from semsynth.model.build import compile_unavailable

    assert "torchrun" in compile_unavailable(torch.device("cpu"), distributed=True)
    assert compile_unavailable(torch.device("cpu"), distributed=False) is None
