"""The VGG perceptual loss of pix2pixHD / SPADE, on the shared VGG-16 network.

``L_VGG(fake, real) = Σ_i w_i · mean|φ_i(fake) − φ_i(real)|`` with ``φ_i`` the activations
relu1_1, relu2_1, relu3_1, relu4_1, relu5_1 and ``w = (1/32, 1/16, 1/8, 1/4, 1)``; the real
features are detached. Sources: Wang et al., pix2pixHD (CVPR 2018), Eq. (4) context and
NVlabs/SPADE ``models/networks/loss.py`` (``VGGLoss``); boschresearch/OASIS ``models/losses.py``
has the same term behind ``--add_vgg_loss``.

One difference from the official code, and one quirk kept:

* **VGG-16 instead of VGG-19** (no VGG-19 weights offline; see :mod:`semsynth.nn.perceptual`).
  The taps sit at the same depth up to relu3_1; relu4_1 and relu5_1 are one and two convs
  shallower in VGG-16 (and all weights come from a different trained network).
* Kept: the input is the image in [-1, 1] with no ImageNet normalisation, as the official
  code feeds it.

The network is looked up with :func:`semsynth.nn.perceptual.load_vgg16` on the images'
device at the first call; it is never a submodule of a method (not trained, not in
checkpoints or the EMA).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from semsynth.nn.perceptual import load_vgg16

__all__ = ["VGG_LAYERS", "VGG_WEIGHTS", "vgg_loss"]

VGG_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
VGG_WEIGHTS = (1.0 / 32, 1.0 / 16, 1.0 / 8, 1.0 / 4, 1.0)


def vgg_loss(fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """VGG perceptual loss (unweighted by λ_VGG; SPADE multiplies by 10).

    Args:
        fake: ``(N, 3, H, W)`` float in [-1, 1]; gradients flow through it.
        real: ``(N, 3, H, W)`` float in [-1, 1] (treated as a constant).

    Returns:
        Scalar ≥ 0; 0 when ``fake == real``.

    Raises:
        ValueError: shapes differ.
        semsynth.nn.perceptual.VGGUnavailable: the VGG-16 weights are not installed.
    """
    if fake.shape != real.shape:
        raise ValueError(f"vgg_loss: fake {tuple(fake.shape)} and real {tuple(real.shape)} differ")
    vgg = load_vgg16(fake.device)
    n = fake.shape[0]
    feats = vgg(torch.cat([fake, real.detach()]).float(), VGG_LAYERS)
    total = fake.new_zeros((), dtype=torch.float32)
    for w, f in zip(VGG_WEIGHTS, feats):
        total = total + w * F.l1_loss(f[:n].float(), f[n:].detach().float())
    return total
