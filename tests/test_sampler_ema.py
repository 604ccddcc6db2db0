"""Local re-sampling honours its region exactly; EMA decay, update and BatchNorm refresh
against hand-computed values; official initialisation; LabelMix mask granularity."""

import math

import numpy as np
import pytest
import torch
import torch.nn as nn

from semsynth.config import EMAConfig
from semsynth.losses.n1 import labelmix_mask
from semsynth.methods.base import Generator
from semsynth.nn.init import apply_init, xavier_init_
from semsynth.noise import noise_from_seeds
from semsynth.sample.sampler import Sampler
from semsynth.train.ema import ema_beta, make_ema, refresh_batchnorm, update_ema
from semsynth.types import ConfigError, DataError, DatasetInfo

INFO = DatasetInfo("toy", ("sky", "road", "car"), ((0, 0, 255), (128, 64, 128), (0, 0, 142)), None)


class PixelLocalGenerator(Generator):
    """A generator whose pixel (y, x) depends only on the noise at (y, x): image = tanh of
    the first three noise channels. Local re-sampling is then exact: inside the region the
    image equals the new seed's, outside the base seed's."""

    z_dim = 4
    noise = "spatial"

    def forward(self, label_onehot, z=None, seeds=None):
        n, _, h, w = label_onehot.shape
        if z is None:
            z = noise_from_seeds(seeds, self.z_dim)
        if z.dim() == 2:
            z = z[:, :, None, None].expand(-1, -1, h, w)
        return torch.tanh(z[:, :3])


def _toy_sampler():
    return Sampler(PixelLocalGenerator(), INFO, 6, 8)


def _toy_label():
    lab = torch.zeros(6, 8, dtype=torch.int64)
    lab[3:, :] = 1
    lab[4:, 5:] = 2
    return lab


def test_resample_mask_changes_exactly_the_masked_pixels():
    s = _toy_sampler()
    lab = _toy_label()
    mask = np.zeros((60, 80), bool)  # any size: resized (nearest) to 6x8
    mask[:30, :40] = True  # the top-left quarter
    region = s.region(lab, mask=mask)
    expected = torch.zeros(6, 8, dtype=torch.bool)
    expected[:3, :4] = True
    assert torch.equal(region, expected)
    out = s.resample_region(lab, region, base_seed=0, seeds=[5, 9])
    base = s.sample_many(lab, [0, 0])
    new = s.sample_many(lab, [5, 9])
    inside = expected[None, None].expand_as(out)
    assert torch.equal(out[inside], new[inside])  # inverted or ignored mask: fails here
    assert torch.equal(out[~inside], base[~inside])  # ... or here
    assert not torch.equal(out[:, :, :3, :4], base[:, :, :3, :4])


def test_resample_class_changes_exactly_that_class():
    s = _toy_sampler()
    lab = _toy_label()
    region = s.region(lab, class_id=2)
    assert torch.equal(region, lab == 2)
    out = s.resample_region(lab, region, base_seed=3, seeds=[11])
    base, new = s.sample_many(lab, [3]), s.sample_many(lab, [11])
    m = (lab == 2)[None, None].expand_as(out)
    assert torch.equal(out[m], new[m]) and torch.equal(out[~m], base[~m])


def test_region_class_and_mask_intersect_and_bad_ids_are_errors():
    s = _toy_sampler()
    lab = _toy_label()
    mask = np.zeros((6, 8), bool)
    mask[:, 6:] = True
    assert torch.equal(s.region(lab, class_id=1, mask=mask), (lab == 1) & torch.from_numpy(mask))
    with pytest.raises(DataError, match="class 3 is not an id of toy"):
        s.region(lab, class_id=3, source="x.png")
    with pytest.raises(DataError, match="class id, a mask"):
        s.region(lab)
    with pytest.raises(DataError, match=r"one \(6, 8\) label map"):
        s.region(torch.zeros(2, 6, 8, dtype=torch.int64), class_id=1)


def test_read_mask_png_uses_alpha_when_present(tmp_path):
    from PIL import Image

    from semsynth.sample.sampler import read_mask_png

    rgba = np.zeros((4, 5, 4), np.uint8)
    rgba[..., :3] = 255  # white everywhere, but transparent ...
    rgba[1:3, 2:4, 3] = 255  # ... except the painted stroke
    Image.fromarray(rgba, "RGBA").save(tmp_path / "layer.png")
    expected = np.zeros((4, 5), bool)
    expected[1:3, 2:4] = True
    assert np.array_equal(read_mask_png(tmp_path / "layer.png"), expected)
    grey = np.zeros((4, 5), np.uint8)
    grey[0, 0] = 9
    Image.fromarray(grey).save(tmp_path / "grey.png")
    assert read_mask_png(tmp_path / "grey.png").sum() == 1
    Image.fromarray(np.zeros((4, 5), np.uint8)).save(tmp_path / "empty.png")
    with pytest.raises(DataError, match="empty.png"):
        read_mask_png(tmp_path / "empty.png")


def test_resample_on_a_trained_generator_changes_mostly_inside(tmp_path):
    """On the real OASIS generator (tiny config, a few steps) the change is concentrated in
    the region: an inverted mask would put it outside, an ignored one everywhere or nowhere."""
    from semsynth.cli import main

    tiny = __import__("pathlib").Path(__file__).resolve().parents[1] / "configs" / "oasis" / "tiny.yaml"
    out = tmp_path / "run"
    assert main(["train", str(tiny), "--out", str(out), "--no-progress", "--set", "train.max_steps=4"]) == 0
    s = Sampler.from_checkpoint(out / "checkpoints" / "latest.pt")
    lab = torch.zeros(s.height, s.width, dtype=torch.int64)
    lab[s.height // 2:] = 3
    region = torch.zeros(s.height, s.width, dtype=torch.bool)
    region[:, : s.width // 3] = True
    base = s.sample_many(lab, [0])
    local = s.resample_region(lab, region, 0, [1, 2, 3])
    diff = (local - base).abs().mean(1)  # (3, H, W)
    inside = diff[:, region].mean()
    far = diff[:, :, -s.width // 4:].mean()  # columns well outside the region
    assert inside > 3 * far, (float(inside), float(far))


# ------------------------------------------------------------------------- EMA
def test_ema_beta_hand_computed():
    assert ema_beta(EMAConfig(decay=0.9999), 32, 10) == 0.9999
    # half-life 2 kimg, long after the ramp-up: 0.5 ** (4 / 2000)
    assert ema_beta(EMAConfig(halflife_kimg=2.0, rampup=0.05), 4, 1_000_000) == pytest.approx(0.5 ** (4 / 2000), abs=0)
    # ramp-up: half-life capped at 0.05 * 1000 = 50 images
    assert ema_beta(EMAConfig(halflife_kimg=2.0, rampup=0.05), 4, 1000) == pytest.approx(0.5 ** (4 / 50), rel=1e-15)
    # no ramp-up
    assert ema_beta(EMAConfig(halflife_kimg=1.0, rampup=None), 10, 10) == pytest.approx(0.5 ** 0.01, rel=1e-15)
    assert math.isclose(ema_beta(EMAConfig(halflife_kimg=2.0, rampup=0.05), 4, 40), 0.5 ** 2)


def test_update_ema_hand_computed():
    g = nn.BatchNorm1d(2)
    with torch.no_grad():
        g.weight.copy_(torch.tensor([3.0, -1.0]))
        g.bias.copy_(torch.tensor([0.0, 4.0]))
    ema = make_ema(g)
    assert not any(p.requires_grad for p in ema.parameters())
    with torch.no_grad():
        ema.weight.copy_(torch.tensor([1.0, 1.0]))
        ema.bias.copy_(torch.tensor([2.0, 0.0]))
        g.running_mean.copy_(torch.tensor([7.0, 8.0]))
    update_ema(ema, g, 0.75)
    assert torch.equal(ema.weight, torch.tensor([1.5, 0.5]))  # 0.75*1 + 0.25*3, 0.75*1 + 0.25*(-1)
    assert torch.equal(ema.bias, torch.tensor([1.5, 1.0]))
    assert torch.equal(ema.running_mean, torch.tensor([7.0, 8.0]))  # buffers copied
    update_ema(ema, g, 0.0)
    assert torch.equal(ema.weight, g.weight)


class _BNGen(nn.Module):
    """generator(onehot, seeds) = BatchNorm(onehot + seed): statistics are computable by hand."""

    def __init__(self):
        super().__init__()
        self.bn = nn.BatchNorm2d(2, affine=False, momentum=0.3)

    def forward(self, onehot, z=None, seeds=None):
        return self.bn(onehot + torch.tensor(seeds, dtype=torch.float32)[:, None, None, None])


def test_refresh_batchnorm_hand_computed():
    gen = _BNGen()
    gen.bn.running_mean.fill_(100.0)
    x1 = torch.tensor([[[[1.0, 0.0]], [[0.0, 1.0]]]])  # (1, 2, 1, 2)
    x2 = torch.tensor([[[[1.0, 1.0]], [[0.0, 0.0]]], [[[0.0, 0.0]], [[1.0, 1.0]]]])  # (2, 2, 1, 2)
    batches = [(x1, [0]), (x2, [10, 20])]
    assert refresh_batchnorm(gen, batches) == 2
    # batch means per channel: b1 (0.5, 0.5); b2: ch0 values 11,11,20,20 -> 15.5, ch1 10,10,21,21 -> 15.5
    # momentum=None: the running mean is the plain average of the batch means
    assert torch.allclose(gen.bn.running_mean, torch.tensor([8.0, 8.0]))
    # unbiased batch variances: b1 ch0 {1,0} -> 0.5; b2 ch0 {11,11,20,20} -> 27; average 13.75
    assert torch.allclose(gen.bn.running_var, torch.tensor([13.75, (0.5 + 30.25 * 4 / 3) / 2]))
    assert gen.bn.momentum == 0.3 and not gen.training
    # no batches: statistics untouched
    before = gen.bn.running_mean.clone()
    assert refresh_batchnorm(gen, []) == 0 and torch.equal(gen.bn.running_mean, before)


# ------------------------------------------------------------- init and LabelMix
def test_official_init_matches_the_official_rule():
    from torch.nn.utils.parametrizations import spectral_norm

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(64, 128, 3), spectral_norm(nn.Conv2d(128, 64, 3)), nn.BatchNorm2d(64),
                        nn.Linear(256, 512))
    assert xavier_init_(net, 0.02) == 4
    conv, sn_conv, bn, lin = net
    std = 0.02 * math.sqrt(2.0 / (64 * 9 + 128 * 9))  # xavier normal: gain * sqrt(2 / (fan_in + fan_out))
    assert conv.weight.std().item() == pytest.approx(std, rel=0.03)
    assert lin.weight.std().item() == pytest.approx(0.02 * math.sqrt(2.0 / (256 + 512)), rel=0.03)
    assert torch.count_nonzero(conv.bias) == 0 and torch.count_nonzero(sn_conv.bias) == 0
    orig = sn_conv.parametrizations.weight.original
    assert orig.std().item() == pytest.approx(std, rel=0.03)
    # spectral norm re-estimated after re-init: the normalised weight has sigma ~= 1
    sn_conv.eval()
    sigma = torch.linalg.matrix_norm(sn_conv.weight.detach().reshape(64, -1), ord=2)
    assert sigma.item() == pytest.approx(1.0, abs=0.05)  # 15 power steps, as PyTorch at registration
    assert bn.weight.mean().item() == pytest.approx(1.0, abs=0.01) and bn.weight.std().item() < 0.05
    with pytest.raises(ConfigError, match="model.init"):
        apply_init(net, "kaiming", "model.init")


def test_oasis_official_init_zeroes_spade_modulation():
    from semsynth.config import load_config
    from semsynth.data import dataset_info
    from semsynth.model.build import build_method

    root = __import__("pathlib").Path(__file__).resolve().parents[1]
    cfg = load_config(root / "configs" / "oasis" / "tiny.yaml")
    torch.manual_seed(0)
    m = build_method(cfg, dataset_info(cfg.data))
    gamma = m.generator.body[0].norm_0.gamma
    assert torch.count_nonzero(gamma.bias) == 0 and gamma.weight.abs().max() < 0.02
    assert torch.count_nonzero(m.discriminator.classifier.bias) == 0
    cfg_pt = load_config(root / "configs" / "oasis" / "tiny.yaml", ["model.init=pytorch"])
    torch.manual_seed(0)
    m_pt = build_method(cfg_pt, dataset_info(cfg_pt.data))
    assert torch.count_nonzero(m_pt.generator.body[0].norm_0.gamma.bias) > 0


def test_labelmix_mask_batch_shares_bits_image_does_not():
    label = torch.arange(8).repeat_interleave(4).reshape(1, 4, 8).expand(64, -1, -1).clone()  # 8 ids in every image
    rng = torch.Generator().manual_seed(0)
    batch = labelmix_mask(label, rng, "batch")
    assert batch.shape == (64, 1, 4, 8)
    assert torch.equal(batch, batch[:1].expand_as(batch))  # every image: the same bit per id
    image = labelmix_mask(label, torch.Generator().manual_seed(0), "image")
    assert not torch.equal(image, image[:1].expand_as(image))
    assert set(batch[0].unique().tolist()) == {0.0, 1.0}  # both real and fake regions, not a constant
    assert set(image[0].unique().tolist()) == {0.0, 1.0}
    for m in (batch, image):  # one bit per (image, id)
        for c in range(8):
            vals = m[:, 0][label == c].reshape(64, -1)
            assert torch.equal(vals, vals[:, :1].expand_as(vals))
    with pytest.raises(ValueError, match="granularity"):
        labelmix_mask(label, rng, "pixel")


@pytest.mark.parametrize("method, sn_init", [("oasis", "xavier"), ("spade", "pytorch"), ("cc_fpse", "pytorch")])
def test_official_init_is_what_each_official_code_does_to_spectral_norm_layers(tiny_config, method, sn_init):
    """OASIS initialises before moving to the GPU: spectral-norm convs get xavier 0.02. SPADE
    and CC-FPSE move first, so their init misses spectral-norm weights: PyTorch's default
    (kaiming-uniform a=√5, std 1/√(3·fan_in)) stays, biases are zeroed; plain convs get
    xavier 0.02 in all three."""
    from torch.nn.utils import parametrize

    from semsynth.data import dataset_info
    from semsynth.model.build import build_method

    cfg = tiny_config(method)
    torch.manual_seed(0)
    m = build_method(cfg, dataset_info(cfg.data))
    seen = {"sn": 0, "plain": 0}
    for net in (m.generator, m.discriminator):
        for layer in net.modules():
            if not isinstance(layer, nn.Conv2d):
                continue
            sn = parametrize.is_parametrized(layer, "weight")
            w = layer.parametrizations.weight.original if sn else layer.weight
            if layer.bias is not None:
                assert torch.count_nonzero(layer.bias) == 0
            if w.numel() < 4000:  # too few values for a tight std
                continue
            fan_in, fan_out = w[0].numel(), w.shape[0] * w[0, 0].numel()
            xavier = 0.02 * math.sqrt(2.0 / (fan_in + fan_out))
            want = 1 / math.sqrt(3 * fan_in) if sn and sn_init == "pytorch" else xavier
            assert w.std().item() == pytest.approx(want, rel=0.1), (layer, sn)
            seen["sn" if sn else "plain"] += 1
    assert seen["sn"] > 0 and seen["plain"] > 0
