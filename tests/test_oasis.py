"""OASIS networks, losses, LabelMix and noise: hand-computed values and properties."""

import dataclasses
import math

import pytest
import torch

from semsynth.labels import one_hot
from semsynth.losses.n1 import (
    class_balance_weights,
    labelmix_loss,
    labelmix_mask,
    n1_cross_entropy,
)
from semsynth.methods.oasis.discriminator import OASISDiscriminator, OASISDiscriminatorConfig
from semsynth.methods.oasis.generator import OASISGenerator, OASISGeneratorConfig
from semsynth.noise import class_region, local_noise, noise_from_seeds
from semsynth.types import ConfigError


def _count(m):
    return sum(p.numel() for p in m.parameters())


# --------------------------------------------------------------- parameter counts
def test_paper_preset_parameter_counts_ade20k():
    """Paper/official ADE20K preset: G 74.3M (72.6M without noise inputs), D 22.3M (±0.5 %)."""
    sem = 151  # 150 classes + don't-care "other"
    with torch.device("meta"):
        g = OASISGenerator(OASISGeneratorConfig(), sem, 256, 256)
        g0 = OASISGenerator(dataclasses.replace(OASISGeneratorConfig(), z_dim=0), sem, 256, 256)
        d = OASISDiscriminator(OASISDiscriminatorConfig(), sem)
    assert abs(_count(g) / 74.3e6 - 1) < 0.005
    assert abs(_count(g0) / 72.6e6 - 1) < 0.005
    assert abs(_count(d) / 22.3e6 - 1) < 0.005


def test_shapes_and_ranges():
    g = OASISGenerator(OASISGeneratorConfig(channels=(16, 16, 8), z_dim=4, spade_hidden=8), 5, 16, 24)
    d = OASISDiscriminator(OASISDiscriminatorConfig(channels=(8, 16, 16), last_channels=8), 5)
    label = torch.randint(0, 5, (3, 16, 24))
    img = g(one_hot(label, 5), seeds=[0, 1, 2])
    assert img.shape == (3, 3, 16, 24) and img.dtype == torch.float32
    assert img.min() >= -1 and img.max() <= 1
    assert d(img).shape == (3, 6, 16, 24)
    with pytest.raises(ConfigError, match="divisible by 2"):
        OASISGenerator(OASISGeneratorConfig(channels=(16, 16, 8)), 5, 17, 24)
    with pytest.raises(ValueError, match="one-hot channels"):
        g(one_hot(label, 6))


# ------------------------------------------------------------------------ losses
def test_class_balance_weights_hand_computed():
    # ids: 0 x2, 1 x1, 2 (don't-care) x1 -> K = 2 present classes, B*H*W = 4
    label = torch.tensor([[[0, 0], [1, 2]]])
    w = class_balance_weights(label, 3, ignore_index=2)
    # w_c = BHW / (K n_c): w0 = 4 / (2*2) = 1, w1 = 4 / (2*1) = 2, don't-care 0
    assert torch.equal(w, torch.tensor([[[1.0, 1.0], [2.0, 0.0]]]))
    # over the whole batch, not per image
    batch = torch.tensor([[[0, 0], [0, 0]], [[0, 0], [0, 1]]])
    wb = class_balance_weights(batch, 2, None)
    assert torch.allclose(wb[0, 0, 0], torch.tensor(8 / (2 * 7)))
    assert torch.allclose(wb[1, 1, 1], torch.tensor(8 / (2 * 1)))


def test_n1_cross_entropy_hand_computed():
    label = torch.tensor([[[0, 0], [1, 2]]])  # 2 = don't-care
    logits = torch.zeros(1, 4, 2, 2)  # channel 0 = fake, 1 + id = class
    # target channel logit ln 3 vs three zeros -> p = 3 / 6 -> CE = ln 2
    for y in range(2):
        for x in range(2):
            logits[0, 1 + label[0, y, x], y, x] = math.log(3)
    logits[0, :, 1, 1] = torch.tensor([9.0, -5.0, 3.0, -7.0])  # don't-care pixel: weight 0
    real = n1_cross_entropy(logits, label, True, ignore_index=2)
    # mean of w * CE = (1 + 1 + 2 + 0) / 4 * ln 2
    assert real.item() == pytest.approx(math.log(2), abs=1e-6)
    fake = n1_cross_entropy(torch.zeros(1, 4, 2, 2), label, False, ignore_index=2)
    assert fake.item() == pytest.approx(math.log(4), abs=1e-6)  # uniform over 4, target 0


def test_labelmix_mask_one_bit_per_class_and_loss():
    torch.manual_seed(0)
    label = torch.randint(0, 6, (3, 8, 8))
    mask = labelmix_mask(label, torch.Generator().manual_seed(1))
    assert mask.shape == (3, 1, 8, 8)
    assert set(mask.unique().tolist()) <= {0.0, 1.0}
    for b in range(3):
        for c in label[b].unique():
            vals = mask[b, 0][label[b] == c]
            assert (vals == vals[0]).all()
    # same generator state -> same mask
    assert torch.equal(mask, labelmix_mask(label, torch.Generator().manual_seed(1)))
    # over many draws both bits occur for a class
    bits = {float(labelmix_mask(label, torch.Generator().manual_seed(s))[0, 0, 0, 0]) for s in range(20)}
    assert bits == {0.0, 1.0}
    # loss: D(mix) equal to the mask-mixed logits -> 0; otherwise the MSE
    d_real, d_fake = torch.randn(3, 4, 8, 8), torch.randn(3, 4, 8, 8)
    mixed = mask * d_real + (1 - mask) * d_fake
    assert labelmix_loss(mixed, d_real, d_fake, mask).item() == pytest.approx(0.0, abs=1e-12)
    assert labelmix_loss(mixed + 2.0, d_real, d_fake, mask).item() == pytest.approx(4.0, abs=1e-5)


# ------------------------------------------------------------------------- noise
def test_same_seed_same_image_whatever_the_batch_size():
    torch.manual_seed(0)
    g = OASISGenerator(OASISGeneratorConfig(channels=(16, 16, 8), z_dim=4, spade_hidden=8), 5, 16, 16).eval()
    label = torch.randint(0, 5, (4, 16, 16))
    with torch.no_grad():
        full = g(one_hot(label, 5), seeds=[10, 11, 12, 13])
        single = torch.cat([g(one_hot(label[i:i + 1], 5), seeds=[10 + i]) for i in range(4)])
        again = g(one_hot(label, 5), seeds=[10, 11, 12, 13])
        other = g(one_hot(label, 5), seeds=[20, 11, 12, 13])
    assert torch.equal(full, again)
    assert torch.allclose(full, single, atol=1e-5)
    assert not torch.allclose(full[0], other[0], atol=1e-3)
    assert torch.equal(full[1:], other[1:]) or torch.allclose(full[1:], other[1:], atol=1e-6)


def test_noise_from_seeds_is_per_sample():
    a = noise_from_seeds([3, 4], 8)
    b = noise_from_seeds([4], 8)
    assert torch.equal(a[1], b[0])
    with pytest.raises(ValueError):
        noise_from_seeds([-1], 8)


def test_local_noise_changes_only_the_region():
    label = torch.zeros(1, 6, 6, dtype=torch.long)
    label[0, 2:4, 1:5] = 3
    region = class_region(label, 3)
    base = noise_from_seeds([0], 4)
    new = noise_from_seeds([1], 4)
    z = local_noise(base, region, new)
    assert z.shape == (1, 4, 6, 6)
    inside = z[0][:, region[0]]
    outside = z[0][:, ~region[0]]
    assert torch.equal(outside, base[0][:, None].expand_as(outside))
    assert torch.equal(inside, new[0][:, None].expand_as(inside))
