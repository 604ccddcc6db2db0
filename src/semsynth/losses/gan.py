"""Hinge GAN loss and discriminator feature matching for multi-scale discriminators.

Sources: the hinge loss of Lim & Ye (2017) / Miyato et al. (2018) as used by SPADE (Park et
al., CVPR 2019, Sec. 4 and NVlabs/SPADE ``models/networks/loss.py``, ``GANLoss`` with
``gan_mode hinge``); feature matching of pix2pixHD (Wang et al., CVPR 2018, Eq. 4) as in
NVlabs/SPADE ``models/pix2pix_model.py`` (``compute_generator_loss``).

A multi-scale discriminator's output is a list over scales; each entry is the list of that
scale's intermediate feature maps, the last one being the ``(N, 1, h, w)`` patch score map
(see :class:`semsynth.nn.patch_gan.MultiscaleDiscriminator`).

* D: ``mean_s [ mean(relu(1 − D_s(real))) ] + mean_s [ mean(relu(1 + D_s(fake))) ]``.
* G: ``mean_s [ −mean(D_s(fake)) ]``.
* Feature matching: ``(1 / num_D) Σ_s Σ_{l < last} mean |F_{s,l}(fake) − F_{s,l}(real)|``,
  the real features detached (a sum over layers, a mean over scales, as the official code).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

__all__ = [
    "hinge_d_loss", "hinge_g_loss", "feature_matching_loss", "layer_l1_sum",
    "multiscale_d_terms", "multiscale_g_terms",
]

Outputs = Sequence[Sequence[torch.Tensor]]


def _scores(outputs: Outputs) -> list[torch.Tensor]:
    if len(outputs) == 0:
        raise ValueError("discriminator output has no scale")
    return [scale[-1].float() for scale in outputs]  # fp32 under autocast (train.precision)


def hinge_d_loss(real: Outputs, fake: Outputs) -> tuple[torch.Tensor, torch.Tensor]:
    """Hinge loss of the discriminator, averaged over scales.

    Args:
        real, fake: multi-scale outputs (list over scales of feature lists; the last entry of
            each is the score map, any shape).

    Returns:
        ``(loss_real, loss_fake)``: scalars ``mean_s mean(relu(1 − s_real))`` and
        ``mean_s mean(relu(1 + s_fake))``; each ≥ 0, 0 once real scores ≥ 1 and fake ≤ −1.
    """
    r = torch.stack([F.relu(1 - s).mean() for s in _scores(real)]).mean()
    f = torch.stack([F.relu(1 + s).mean() for s in _scores(fake)]).mean()
    return r, f


def hinge_g_loss(fake: Outputs) -> torch.Tensor:
    """Hinge (non-saturating linear) generator loss ``mean_s −mean(D_s(fake))`` (scalar)."""
    return torch.stack([-s.mean() for s in _scores(fake)]).mean()


def feature_matching_loss(fake: Outputs, real: Outputs) -> torch.Tensor:
    """pix2pixHD feature matching: L1 between D features of fake and (detached) real images.

    Args:
        fake, real: multi-scale outputs of the same discriminator on the fake and the real
            batch (same shapes).

    Returns:
        Scalar ``(1/num_D) Σ_scales Σ_{layers but the last} mean|f − r|`` (the caller
        multiplies by λ_feat, 10 in SPADE).

    Raises:
        ValueError: different numbers of scales or layers.
    """
    if len(fake) != len(real):
        raise ValueError(f"feature matching: {len(fake)} fake scales vs {len(real)} real")
    return torch.stack([layer_l1_sum(fs[:-1], rs[:-1]) for fs, rs in zip(fake, real)]).mean()


def layer_l1_sum(fake: Sequence[torch.Tensor], real: Sequence[torch.Tensor]) -> torch.Tensor:
    """``Σ_l mean|fake_l − real_l|`` over paired feature maps, the real ones detached (the
    per-scale sum of feature matching; CC-FPSE's feature matching is this over its four
    discriminator features, times ``λ_feat / 4``).

    Args:
        fake, real: equally long sequences of equally shaped tensors (at least one).

    Returns:
        Scalar ≥ 0.

    Raises:
        ValueError: different lengths, or no layer.
    """
    if len(fake) != len(real) or not fake:
        raise ValueError(f"feature matching: {len(fake)} fake layers vs {len(real)} real (need equal, ≥ 1)")
    return torch.stack([F.l1_loss(f.float(), r.detach().float()) for f, r in zip(fake, real)]).sum()


def _split(outputs: Outputs, n: int) -> tuple[list[list[torch.Tensor]], list[list[torch.Tensor]]]:
    first = [[t[:n] for t in scale] for scale in outputs]
    second = [[t[n:] for t in scale] for scale in outputs]
    return first, second


def multiscale_g_terms(discriminator, cond: torch.Tensor, fake: torch.Tensor, real: torch.Tensor,
                       lambda_feat: float) -> dict[str, torch.Tensor]:
    """The generator's adversarial terms against a conditional multi-scale discriminator.

    D sees ``cat(cond, image)`` along channels; fake and real go through one forward pass
    (concatenated along the batch, as the official ``discriminate``; the discriminator has no
    batch statistics, so this equals two passes).

    Args:
        discriminator: callable ``(N, C + 3, H, W) -> multi-scale outputs``.
        cond: ``(B, C, H, W)`` one-hot label map (C = ``semantic_nc``).
        fake: ``(B, 3, H, W)`` generated images (gradients flow to G).
        real: ``(B, 3, H, W)`` real images in [-1, 1].
        lambda_feat: feature-matching weight (SPADE: 10; 0 skips the term).

    Returns:
        ``{"G_adv": hinge G loss}`` plus ``{"G_feat": λ_feat · feature matching}`` if
        ``lambda_feat > 0``; unweighted scalars except ``G_feat``.
    """
    b = fake.shape[0]
    if lambda_feat <= 0:  # the real half is only needed for feature matching
        return {"G_adv": hinge_g_loss(discriminator(torch.cat([cond, fake], 1)))}
    out = discriminator(torch.cat([torch.cat([cond, fake], 1), torch.cat([cond, real], 1)]))
    out_fake, out_real = _split(out, b)
    return {"G_adv": hinge_g_loss(out_fake), "G_feat": lambda_feat * feature_matching_loss(out_fake, out_real)}


def multiscale_d_terms(discriminator, cond: torch.Tensor, fake: torch.Tensor,
                       real: torch.Tensor) -> dict[str, torch.Tensor]:
    """The discriminator's hinge terms: ``{"D_real": ..., "D_fake": ...}`` (scalars ≥ 0).

    Args as :func:`multiscale_g_terms`; ``fake`` is detached here.
    """
    b = fake.shape[0]
    out = discriminator(torch.cat([torch.cat([cond, fake.detach()], 1), torch.cat([cond, real], 1)]))
    out_fake, out_real = _split(out, b)
    loss_real, loss_fake = hinge_d_loss(out_real, out_fake)
    return {"D_real": loss_real, "D_fake": loss_fake}
