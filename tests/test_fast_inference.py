"""The OASIS inference path with the noise channels factored out of the SPADE convs
(semsynth.nn.spade_fast): the same images as the dense computation, for global noise, locally
re-sampled noise and batches; arbitrary per-pixel noise falls back to the dense map."""

import pytest
import torch
import torch.nn.functional as F

from semsynth.labels import one_hot
from semsynth.methods.oasis.generator import OASISGenerator, OASISGeneratorConfig
from semsynth.nn.spade_fast import FactoredCond, factor_noise, shared_conv
from semsynth.noise import local_noise, noise_from_seeds


def _label(n=1, h=32, w=48, c=6, seed=0):
    gen = torch.Generator().manual_seed(seed)
    lab = torch.randint(0, c, (n, h // 8, w // 8), generator=gen).repeat_interleave(8, 1).repeat_interleave(8, 2)
    return one_hot(lab, c)


def test_shared_conv_of_a_factored_map_equals_the_dense_conv():
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(5 + 6, 7, 3, padding=1)
    for n in (1, 3):
        lab = _label(n, 16, 24, 6)
        z = torch.randn(n, 5)
        fc = factor_noise(z, lab)
        assert fc.vecs.shape == (n, 1, 5) and torch.equal(fc.maps, torch.ones(n, 1, 16, 24))
        dense = torch.cat([z[:, :, None, None].expand(-1, -1, 16, 24), lab], 1)
        assert torch.equal(fc.dense(), dense)
        assert torch.allclose(shared_conv(conv, fc), conv(dense), atol=1e-5)      # one vector: border rule
        # two noise vectors (a re-sampled region): the grouped-conv rule
        region = torch.zeros(n, 16, 24, dtype=torch.bool)
        region[:, 2:6, 3:11] = True
        zz = local_noise(z, region, torch.randn(n, 5))
        fc2 = factor_noise(zz, lab)
        assert fc2.vecs.shape[1] == 2 and torch.allclose(fc2.dense()[:, :5], zz)
        assert torch.allclose(shared_conv(conv, fc2), conv(torch.cat([zz, lab], 1)), atol=1e-5)
        # resizing the factored map is resizing the dense map
        small = fc2.resized((5, 8)).dense()
        assert torch.equal(small, F.interpolate(fc2.dense(), size=(5, 8), mode="nearest"))
    # arbitrary per-pixel noise is not factored
    assert factor_noise(torch.randn(1, 5, 16, 24), _label(1, 16, 24)) is None
    assert isinstance(fc, FactoredCond)


@pytest.mark.parametrize("n", [1, 2])
def test_oasis_eval_images_equal_the_dense_path(n):
    torch.manual_seed(0)
    g = OASISGenerator(OASISGeneratorConfig(channels=(32, 32, 16, 8), z_dim=8, spade_hidden=16), 6, 32, 48).eval()
    with torch.no_grad():
        for m in g.modules():  # non-trivial BatchNorm statistics and SPADE modulation
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.3)
                m.running_var.uniform_(0.5, 2.0)
        lab = _label(n, 32, 48)
        region = torch.zeros(n, 32, 48, dtype=torch.bool)
        region[:, 8:20, 10:30] = True
        zl = local_noise(noise_from_seeds([1] * n, 8), region, noise_from_seeds(list(range(2, 2 + n)), 8))
        fast_global, fast_local = g(lab, seeds=list(range(n))), g(lab, zl)
        g.factored_inference = False                                                  # the dense map
        dense_global, dense_local = g(lab, seeds=list(range(n))), g(lab, zl)
    assert torch.allclose(fast_global, dense_global, atol=1e-5)
    assert torch.allclose(fast_local, dense_local, atol=1e-5)
    assert (fast_global - fast_local).abs().max() > 1e-3   # the region's noise matters
