"""The loop's training step: channels-last is the same model, and benchmarks/train_step.py reports FLOPs."""

import copy
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from semsynth.config import load_config
from semsynth.data import dataset_info
from semsynth.model.build import build_method
from semsynth.train.loop import make_optimizers, train_step

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "oasis" / "tiny.yaml"


def _optimizers(method, cfg):
    return make_optimizers(method, cfg.train)


def test_channels_last_step_equals_the_contiguous_step_up_to_rounding():
    cfg = load_config(TINY)
    info = dataset_info(cfg.data)
    torch.manual_seed(0)
    a = build_method(cfg, info)
    b = copy.deepcopy(a).to(memory_format=torch.channels_last)
    assert b.discriminator.state_dict()  # and its 4-D weights really are channels-last now
    assert any(t.dim() == 4 and not t.is_contiguous() and t.is_contiguous(memory_format=torch.channels_last)
               for t in b.state_dict().values())
    g = torch.Generator().manual_seed(3)
    label = torch.randint(0, info.semantic_nc, (2, 6, 8), generator=g).repeat_interleave(8, 1).repeat_interleave(8, 2)
    image = torch.rand(2, 3, 48, 64, generator=g) * 2 - 1
    la = train_step(a, _optimizers(a, cfg), image, label, torch.Generator().manual_seed(5))
    lb = train_step(b, _optimizers(b, cfg), image.contiguous(memory_format=torch.channels_last), label,
                    torch.Generator().manual_seed(5))
    assert la.keys() == lb.keys() == {"G_adv", "D_fake", "D_real", "D_labelmix"}
    for k in la:
        torch.testing.assert_close(la[k], lb[k], rtol=1e-4, atol=1e-5)
    sa, sb = a.state_dict(), b.state_dict()
    for k in sa:  # one Adam step of size ~lr moved both the same way
        torch.testing.assert_close(sa[k], sb[k], rtol=1e-4, atol=1e-5, msg=k)


def test_train_step_benchmark_reports_images_per_second_and_flops():
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "train_step.py"), str(TINY), "--steps", "1",
                           "--warmup", "1", "--peak-tflops", "0.5", "--by-shape", "--set", "train.threads=1"],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rec = json.loads(proc.stdout.strip().splitlines()[-1])
    assert rec["device"] == "cpu" and rec["batch_size"] == 2 and rec["images_per_s"] > 0
    assert rec["gflop_per_step"] > 1.0  # G and D forward and backward at 48x64, batch 2: ~3.7 GFLOP
    assert rec["share_of_dense_tf32_peak"] == pytest.approx(rec["achieved_tflops"] / 0.5, rel=0.02, abs=1e-3)
    # OASIS has no matmuls: the convolutions counted by shape are all of torch's FLOP count
    assert rec["conv_gflop_per_step"] == pytest.approx(rec["gflop_per_step"], rel=1e-3)
    assert sum(rec["conv_share_by_in_out_channels"].values()) == pytest.approx(1.0, abs=1e-3)
    cuda = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "train_step.py"), str(TINY), "--device", "cuda"],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    if not torch.cuda.is_available():
        assert cuda.returncode != 0 and "CUDA is not available" in cuda.stderr


def _bench(name):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "benchmarks" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_conv_flops_by_channels_counts_forward_and_both_gradients():
    conv = torch.nn.Conv2d(3, 5, 3, padding=1)
    x = torch.randn(2, 3, 4, 6, requires_grad=True)
    counts = _bench("train_step").conv_flops_by_channels(lambda: conv(x).sum().backward())
    forward = 2 * 2 * 3 * 5 * 9 * 4 * 6  # 2·N·in·out·k·H·W = 12,960
    assert dict(counts) == {(3, 5): 3 * forward}  # forward, input gradient, weight gradient
    x2 = torch.randn(2, 3, 4, 6)  # no input gradient asked for: forward + weight gradient
    assert dict(_bench("train_step").conv_flops_by_channels(lambda: conv(x2).sum().backward())) == {(3, 5): 2 * forward}
    # grouped and transposed layers, keyed by the layer's channels: each gradient costs what the
    # forward does (2·N·weight elements·spatial size, hand-computed)
    x = torch.randn(2, 8, 5, 7, requires_grad=True)
    layers = {(8, 16): (torch.nn.Conv2d(8, 16, 3, padding=1, groups=4), 2 * 2 * (16 * 2 * 9) * 35),
              (8, 4): (torch.nn.ConvTranspose2d(8, 4, 4, stride=2, padding=1), 2 * 2 * (8 * 4 * 16) * 35),
              (8, 8): (torch.nn.Conv2d(8, 8, 3, padding=1, groups=8), 2 * 2 * (8 * 1 * 9) * 35)}
    for key, (layer, forward) in layers.items():
        counts = _bench("train_step").conv_flops_by_channels(lambda: layer(x).sum().backward())
        assert dict(counts) == {key: 3 * forward}, layer


def test_gpu_benchmark_sorts_kernel_names_by_kind():
    kind = _bench("official_oasis_gpu").kernel_kind
    assert kind("sm90_xmma_fprop_implicit_gemm_bf16bf16_bf16f32_f32_nhwckrsc_nhwc_tilesize128x128x64") == "conv_gemm"
    assert kind("cudnn::engines_precompiled::nchwToNhwcKernel<__nv_bfloat16>") == "layout"
    assert kind("void cudnn::bn_fw_tr_1C11_kernel_NCHW<float, float, int, 512>") == "batchnorm"
    assert kind("triton_per_fused__native_batch_norm_legit_functional_0") == "batchnorm"
    assert kind("triton_poi_fused_add_mul_relu_3") == "triton_fused"
    assert kind("triton_poi_fused_convolution_leaky_relu_3") == "triton_fused"  # Inductor's, not cuDNN's
    assert kind("triton_red_fused_convolution_backward_sum_7") == "triton_fused"
    assert kind("triton_poi_fused_permute_clone_2") == "triton_fused"
    assert kind("void at::native::(anonymous namespace)::multi_tensor_apply_kernel<FusedAdamMathFunctor>") \
        == "optimizer"
    assert kind("Memcpy DtoD (Device -> Device)") == "copy"
    assert kind("void at::native::vectorized_elementwise_kernel<4, at::native::CUDAFunctor_add<float>>") \
        == "elementwise"


def test_peak_table_matches_device_names():
    spec = importlib.util.spec_from_file_location("bench_train_step", ROOT / "benchmarks" / "train_step.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.peak_for(torch.device("cpu")) == ("cpu", None)
    names = {"NVIDIA H100 80GB HBM3": "H100", "NVIDIA H100 PCIe": "H100 PCIe", "NVIDIA H200": "H200",
             "NVIDIA A100-SXM4-80GB": "A100"}
    for name, key in names.items():
        orig = torch.cuda.get_device_name
        torch.cuda.get_device_name = lambda d, n=name: n
        try:
            assert mod.peak_for(torch.device("cuda")) == (name, mod.PEAK_TFLOPS[key])
        finally:
            torch.cuda.get_device_name = orig


def test_python_dash_m_semsynth_is_the_cli():
    proc = subprocess.run([sys.executable, "-m", "semsynth", "--help"], capture_output=True, text=True, timeout=120,
                          cwd=ROOT)
    assert proc.returncode == 0
    assert "train" in proc.stdout and "sample" in proc.stdout
