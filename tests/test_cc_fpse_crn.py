"""CC-FPSE (conditional convolutions, FPSE discriminator) and CRN (cascaded refinement,
diversity loss): parameter counts against the official code, the conditional convolution
against an explicit loop, CRN's loss on a hand-computed case, layer norm's axes, and a
2-step train + sample + eval of each on tiny settings."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from semsynth.cli import main
from semsynth.labels import one_hot
from semsynth.losses.best_of_k import class_masked_distance, min_over_outputs
from semsynth.methods.cc_fpse.discriminator import FPSEDiscriminator, FPSEDiscriminatorConfig
from semsynth.methods.cc_fpse.generator import CCFPSEGenerator, CCFPSEGeneratorConfig, conditional_depthwise_conv
from semsynth.methods.crn.generator import CRNGenerator, CRNGeneratorConfig, RefinementModule
from semsynth.sample.sampler import Sampler

ROOT = Path(__file__).resolve().parents[1]
CC_TINY = ROOT / "configs" / "cc_fpse" / "tiny.yaml"
CRN_TINY = ROOT / "configs" / "crn" / "tiny.yaml"
VAL_LABELS = ROOT / ".." / "shared" / "datasets" / "camvid" / "valannot"


def _count(m):
    return sum(p.numel() for p in m.parameters())


# ----------------------------------------------------------------- parameter counts

# xh-liu/CC-FPSE (--netG condconv --netD fpse, no VAE) built with its dataset defaults
# (../shared/README.md): (mode, semantic_nc) -> (G, D). semsynth leaves out the three affine
# BatchNorms per block that the official forward pass never uses: exactly 26,112 parameters
# at ngf 64 (2·fin + 4·min(fin, fout) per block), the same for every dataset.
CC_OFFICIAL = {
    ("more", 36): (119_966_979, 5_175_873),
    ("normal", 151): (125_254_211, 5_190_593),
    ("normal", 184): (126_793_859, 5_194_817),
}
UNUSED_BN = 3 * 6 * 1024 + (2 * 1024 + 4 * 512) + (2 * 512 + 4 * 256) + (2 * 256 + 4 * 128) + (2 * 128 + 4 * 64)


@pytest.mark.parametrize("mode,nc", list(CC_OFFICIAL))
def test_cc_fpse_parameter_counts_equal_the_official_code(mode, nc):
    h, w = (256, 512) if mode == "more" else (256, 256)
    with torch.device("meta"):
        g = CCFPSEGenerator(CCFPSEGeneratorConfig(num_upsampling_layers=mode), nc, h, w)
        d = FPSEDiscriminator(FPSEDiscriminatorConfig(), nc)
    official_g, official_d = CC_OFFICIAL[(mode, nc)]
    assert UNUSED_BN == 26_112
    assert _count(g) == official_g - UNUSED_BN
    assert _count(d) == official_d


def test_crn_parameter_count_equals_the_official_graph():
    # demo_256p.py, Cityscapes 256x512, 20 label channels (19 classes + void), k = 9
    with torch.device("meta"):
        g = CRNGenerator(CRNGeneratorConfig(), 20, 256, 512)
    assert _count(g) == 97_875_483
    assert g.sizes[0] == (4, 8) and g.sizes[-1] == (256, 512)


# The published recipe (--use_vae): fc becomes Linear(256, 1024·h0·w0); the encoder is
# SPADE's ConvEncoder (10,463,424 at ngf 64). Official counts built locally from
# xh-liu/CC-FPSE with the dataset defaults (36 more / 151 / 184 normal input channels).
CC_OFFICIAL_VAE = {"cityscapes": 128_055_555, "ade20k": 140_704_323, "coco_stuff": 141_939_843}


def test_info_json_on_the_paper_presets(capsys):
    # exactly the official default builds: the VAE recipe, Cityscapes label_nc 35 + instance
    # edge, COCO-Stuff 183 + edge; G_official_build adds the unused BatchNorms back
    for name, key in {"cityscapes": ("more", 36), "ade20k": ("normal", 151), "coco_stuff": ("normal", 184)}.items():
        assert main(["info", str(ROOT / "configs" / "cc_fpse" / f"{name}.yaml"), "--json"]) == 0
        params = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["parameters"]
        assert params == {"G": CC_OFFICIAL_VAE[name] - UNUSED_BN, "E": 10_463_424, "D": CC_OFFICIAL[key][1],
                          "G_official_build": CC_OFFICIAL_VAE[name]}, name
    assert main(["info", str(ROOT / "configs" / "crn" / "cityscapes.yaml"), "--json"]) == 0
    params = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["parameters"]
    assert params == {"G": 97_875_483}


# ------------------------------------------------------------ conditional convolution


def test_conditional_depthwise_conv_equals_an_explicit_per_pixel_loop():
    gen = torch.Generator().manual_seed(0)
    n, c, h, w = 2, 3, 5, 4
    x = torch.randn(n, c, h, w, generator=gen, dtype=torch.float64)
    wt = torch.randn(n, 9 * c, h, w, generator=gen, dtype=torch.float64)
    want = torch.zeros(n, c, h, w, dtype=torch.float64)
    for b in range(n):
        for ch in range(c):
            for i in range(h):
                for j in range(w):
                    acc = 0.0
                    for a in range(3):
                        for e in range(3):
                            ii, jj = i + a - 1, j + e - 1
                            if 0 <= ii < h and 0 <= jj < w:
                                acc += float(wt[b, 9 * ch + 3 * a + e, i, j]) * float(x[b, ch, ii, jj])
                    want[b, ch, i, j] = acc
    got = conditional_depthwise_conv(x, wt)
    assert torch.allclose(got, want, atol=1e-12)
    # a kernel that is the same at every pixel is an ordinary depthwise convolution
    k = torch.randn(c, 1, 3, 3, generator=gen, dtype=torch.float64)
    same = k.reshape(1, 9 * c, 1, 1).expand(n, -1, h, w)
    assert torch.allclose(conditional_depthwise_conv(x, same), F.conv2d(x, k, padding=1, groups=c), atol=1e-12)
    with pytest.raises(ValueError, match="weights"):
        conditional_depthwise_conv(x, wt[:, :-1])


def test_fpse_discriminator_scores_are_unconditional_plus_the_label_projection():
    torch.manual_seed(0)
    d = FPSEDiscriminator(FPSEDiscriminatorConfig(ndf=8), 5).eval()
    img = torch.rand(2, 3, 48, 64) * 2 - 1
    lab_a = one_hot(torch.randint(0, 5, (2, 48, 64)), 5)
    lab_b = one_hot(torch.randint(0, 5, (2, 48, 64)), 5)
    feats, scores = d(img, lab_a)
    assert [tuple(f.shape[1:]) for f in feats] == [(16, 12, 16), (32, 6, 8), (64, 3, 4), (64, 2, 2)]
    assert [tuple(s.shape) for s in scores] == [(2, 1, 12, 16), (2, 1, 6, 8), (2, 1, 3, 4)]
    # the label map enters only through the projection term: it changes the scores ...
    assert not torch.allclose(d(img, lab_b)[1][0], scores[0])
    # ... and with the semantic projection zeroed, D is unconditional: t(f) alone
    with torch.no_grad():
        d.seg.weight.zero_()
        d.seg.bias.zero_()
    s_a, s_b = d(img, lab_a)[1], d(img, lab_b)[1]
    for x, y in zip(s_a, s_b):
        assert torch.equal(x, y)
    # and with the embedding constant per class, the projection adds e·s(f) exactly
    with torch.no_grad():
        d.seg.weight.copy_(torch.eye(16)[:, :, None, None])
        d.embedding.weight.zero_()
        d.embedding.bias.fill_(1.0)
    f32 = d.final[0](d.lat[0](feats[0]) + F.interpolate(
        d.lat[1](feats[1]) + F.interpolate(d.lat[2](feats[2]) + F.interpolate(d.lat[3](feats[3]), size=(3, 4),
                                                                               mode="bilinear"),
                                           size=(6, 8), mode="bilinear"), size=(12, 16), mode="bilinear"))
    want = d.tf(f32) + f32.sum(1, keepdim=True)
    assert torch.allclose(d(img, lab_a)[1][0], want, atol=1e-5)


def test_cc_fpse_generator_odd_sizes_and_its_pyramid_follows_the_size_chain():
    g = CCFPSEGenerator(CCFPSEGeneratorConfig(ngf=2, hidden=4), 6, 72, 96)
    assert g.sizes == [(3, 3), (5, 6), (9, 12), (18, 24), (36, 48), (72, 96)]
    lab = one_hot(torch.randint(0, 6, (2, 72, 96)), 6)
    levels = g.pyramid(lab)
    assert [tuple(t.shape[-2:]) for t in levels] == g.sizes
    out = g(lab)
    assert out.shape == (2, 3, 72, 96) and out.abs().max() <= 1
    with pytest.raises(ValueError, match="takes no noise"):
        g(lab, torch.zeros(2, 8))


# ------------------------------------------------------------------------------ CRN


def test_crn_diversity_loss_on_a_hand_computed_case():
    # one image of 1x2 pixels, two classes (left pixel class 0, right pixel class 1), k = 2,
    # one feature channel; real features 0 everywhere.
    real = torch.zeros(1, 1, 1, 2)
    fake = torch.tensor([[[[[1.0, 0.0]]], [[[0.0, 3.0]]]]])     # (B=1, k=2, ch=1, 1, 2)
    masks = torch.tensor([[[[1.0, 0.0]], [[0.0, 1.0]]]])         # (1, C=2, 1, 2)
    per_class = class_masked_distance(fake, real, masks)
    # L_c(u) = mean over the 2 pixels of mask · |diff|: output 0 errs on class 0 (1/2), output 1
    # on class 1 (3/2)
    assert torch.allclose(per_class, torch.tensor([[[0.5, 0.0], [0.0, 1.5]]]))
    # min over outputs per class: 0 + 0; mean over outputs: 0.25 + 0.75 = 1
    assert torch.isclose(min_over_outputs(per_class, 0.001), torch.tensor(0.999 * 0 + 0.001 * 1.0))
    assert min_over_outputs(per_class, 0.0) == 0
    # k = 1: the plain masked regression loss, summed over classes
    assert torch.isclose(min_over_outputs(per_class[:, :1], 0.001), torch.tensor(0.5))


def test_crn_layer_norm_is_over_channels_and_pixels_with_per_channel_affine():
    torch.manual_seed(0)
    mod = RefinementModule(3, 4, 0.2, 1e-12)
    with torch.no_grad():
        mod.norm1.weight.copy_(torch.tensor([1.0, 2.0, 0.5, -1.0]))
        mod.norm1.bias.copy_(torch.tensor([0.0, 1.0, -1.0, 3.0]))
    y = mod.conv1(torch.randn(2, 3, 5, 6)) + torch.arange(4.0).view(1, 4, 1, 1)  # channel means differ
    mu = y.mean(dim=(1, 2, 3), keepdim=True)
    var = y.var(dim=(1, 2, 3), unbiased=False, keepdim=True)
    want = (y - mu) / torch.sqrt(var + 1e-12) * mod.norm1.weight.view(1, 4, 1, 1) + mod.norm1.bias.view(1, 4, 1, 1)
    assert torch.allclose(mod.norm1(y), want, atol=1e-5)
    # not instance norm: per-channel means survive the normalisation
    assert mod.norm1(y).mean(dim=(2, 3)).std() > 0.1


def test_crn_generator_outputs_and_seed_selection():
    torch.manual_seed(0)
    g = CRNGenerator(CRNGeneratorConfig(channels=(8, 8, 4), num_outputs=3), 5, 24, 32).eval()
    assert g.sizes == [(6, 8), (12, 16), (24, 32)]
    lab = one_hot(torch.randint(0, 5, (2, 24, 32)), 5)
    with torch.no_grad():
        all_out = g.forward_all(lab)
        assert all_out.shape == (2, 3, 3, 24, 32)
        picked = g(lab, seeds=[4, 2])                      # outputs 4 mod 3 = 1 and 2
        assert torch.equal(picked[0], all_out[0, 1].clamp(-1, 1))
        assert torch.equal(picked[1], all_out[1, 2].clamp(-1, 1))
        assert torch.equal(g(lab), all_out[:, 0].clamp(-1, 1))
    with pytest.raises(ValueError, match="no noise"):
        g(lab, z=torch.zeros(2, 4))


# ------------------------------------------------------------------ end to end


@pytest.fixture(scope="module")
def crn_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("crn")
    assert main(["train", str(CRN_TINY), "--out", str(out), "--no-progress", "--set", "train.max_steps=2"]) == 0
    return out


@pytest.fixture(scope="module")
def cc_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("ccfpse")
    assert main(["train", str(CC_TINY), "--out", str(out), "--no-progress", "--set", "train.max_steps=2"]) == 0
    return out


def _eval(ckpt, tmp_path, capsys, metrics="fid,miou,diversity"):
    capsys.readouterr()
    assert main(["eval", str(ckpt), "--limit", "4", "--metrics", metrics, "--json", "--out", str(tmp_path / "ev"),
                 "--device", "cpu"]) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_cc_fpse_trains_samples_and_evaluates(cc_run, tmp_path, capsys):
    rec = [json.loads(x) for x in (cc_run / "stats.jsonl").read_text().splitlines()][-1]
    assert {"G_adv", "G_feat", "G_vgg", "D_real", "D_fake"} <= set(rec)
    assert all(np.isfinite(v) for v in rec.values())
    ckpt = cc_run / "checkpoints" / "latest.pt"
    label = VAL_LABELS / "0016E5_07959.png"
    rc = main(["sample", str(ckpt), "--labels", str(label), "--seeds", "0-1", "--out", str(tmp_path / "s"),
               "--device", "cpu"])
    cap = capsys.readouterr()
    assert rc == 0 and "takes no noise" in cap.err
    assert json.loads(cap.out.strip().splitlines()[-1])["deterministic"] is True
    ev = _eval(ckpt, tmp_path, capsys)
    assert np.isfinite(ev["fid"]) and 0 <= ev["miou"] <= 100 and ev["ms_ssim"] == pytest.approx(1.0)


def test_crn_trains_samples_k_outputs_and_evaluates(crn_run, tmp_path, capsys):
    rec = [json.loads(x) for x in (crn_run / "stats.jsonl").read_text().splitlines()][-1]
    assert "G_perceptual" in rec and np.isfinite(rec["G_perceptual"])
    ckpt = crn_run / "checkpoints" / "latest.pt"
    label = VAL_LABELS / "0016E5_07959.png"
    out = tmp_path / "s"
    rc = main(["sample", str(ckpt), "--labels", str(label), "--seeds", "0-2", "--out", str(out), "--device", "cpu"])
    cap = capsys.readouterr()
    assert rc == 0 and "seed i gives output i mod 2" in cap.err and "repeat outputs" in cap.err
    rec = json.loads(cap.out.strip().splitlines()[-1])
    assert rec["images"] == 3 and rec["deterministic"] is False and rec["outputs_per_label_map"] == 2
    imgs = {s: np.asarray(Image.open(out / f"0016E5_07959_seed{s}.png")) for s in range(3)}
    assert np.array_equal(imgs[0], imgs[2]) and not np.array_equal(imgs[0], imgs[1])
    # the Sampler gives output i mod k, the same pixels as the generator's own k outputs
    sampler = Sampler.from_checkpoint(ckpt)
    from semsynth.sample.sampler import read_label_png
    lab = sampler.prepare_label(read_label_png(label, sampler.info))
    with torch.no_grad():
        all_out = sampler.generator.forward_all(one_hot(lab, sampler.info.semantic_nc)).clamp(-1, 1)
    assert torch.equal(sampler.generate(lab, seeds=[1]), all_out[:, 1])
    # batches are sliced with their seeds: 5 maps in batches of 2 give outputs 0 1 0 1 0 (equal
    # up to float rounding: the convolutions' CPU kernels depend on the batch size)
    five = sampler.generate(lab.expand(5, -1, -1), seeds=[10, 11, 12, 13, 14], batch_size=2)
    for i in range(5):
        assert torch.allclose(five[i], all_out[0, i % 2], atol=1e-5)
        assert not torch.allclose(five[i], all_out[0, 1 - i % 2], atol=1e-2)
    assert "CRN" in sampler.region_resampling_unavailable()
    rc = main(["sample", str(ckpt), "--labels", str(label), "--resample-class", "3", "--out", str(tmp_path / "r"),
               "--device", "cpu"])
    assert rc == 2 and "CRN" in capsys.readouterr().err and not (tmp_path / "r").exists()
    ev = _eval(ckpt, tmp_path, capsys)
    assert np.isfinite(ev["fid"]) and 0 <= ev["miou"] <= 100
    assert ev["ms_ssim"] < 1.0 and "output i mod 2" in ev["diversity_note"]


def test_crn_resumes_bit_identically(crn_run, tmp_path):
    part = tmp_path / "part"
    assert main(["train", str(CRN_TINY), "--out", str(part), "--no-progress", "--set", "train.max_steps=1"]) == 0
    assert main(["train", str(CRN_TINY), "--out", str(part), "--no-progress", "--resume",
                 "--set", "train.max_steps=2"]) == 0
    a = torch.load(crn_run / "checkpoints" / "latest.pt", weights_only=True)
    b = torch.load(part / "checkpoints" / "latest.pt", weights_only=True)
    for k, v in a["method"].items():
        assert torch.equal(v, b["method"][k]), k


def test_report_puts_cc_fpse_and_crn_in_one_table(cc_run, crn_run, tmp_path):
    for run in (cc_run, crn_run):
        assert main(["eval", str(run / "checkpoints" / "latest.pt"), "--limit", "2", "--metrics", "fid",
                     "--out", str(run / "eval"), "--device", "cpu"]) == 0
    assert main(["report", str(cc_run), str(crn_run), "--out", str(tmp_path / "rep")]) == 0
    text = (tmp_path / "rep" / "report.md").read_text()
    rows = [r for r in text.splitlines() if r.startswith("| ") and ("cc_fpse" in r or "| crn |" in r)]
    assert len(rows) == 2 and all("camvid" in r and "48x64" in r for r in rows)
