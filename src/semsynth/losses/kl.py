"""KL divergence of a diagonal Gaussian encoder to N(0, I) (the VAE term of SPADE's and CC-FPSE's encoder).

``KL = −½ Σ (1 + log σ² − μ² − σ²)``, summed over the batch and the latent dimensions (not
averaged), as NVlabs/SPADE ``models/networks/loss.py`` (``KLDLoss``); SPADE weights it by
λ_KLD = 0.05 (``--lambda_kld``). Source: Kingma & Welling, ICLR 2014, Appendix B.
"""

from __future__ import annotations

import torch

__all__ = ["kl_divergence", "reparameterize", "encode_latent"]


def kl_divergence(mu: torch.Tensor, logvar: torch.Tensor, shard=None) -> torch.Tensor:
    """``−½ Σ (1 + logvar − mu² − exp(logvar))`` over all elements (scalar ≥ 0).

    Args:
        mu, logvar: ``(N, z_dim)`` float, same shape.
        shard: a :class:`semsynth.batch_shard.BatchShard` when ``mu`` is this process's slice
            of a global batch: the slice's sum is scaled by ``global_size / size``, so that
            the mean over the processes (what data-parallel gradient averaging takes) is the
            global batch's sum, as one process computes it. ``None`` = one process.

    Raises:
        ValueError: shapes differ.
    """
    if mu.shape != logvar.shape:
        raise ValueError(f"kl_divergence: mu {tuple(mu.shape)} vs logvar {tuple(logvar.shape)}")
    mu, logvar = mu.float(), logvar.float()
    kl = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
    if shard is not None and shard.size != shard.global_size:
        kl = kl * (shard.global_size / shard.size)
    return kl


def reparameterize(mu: torch.Tensor, logvar: torch.Tensor, generator: torch.Generator | None = None,
                   shard=None) -> torch.Tensor:
    """``z = mu + ε · exp(½ logvar)``, ε ~ N(0, I) drawn on the CPU from ``generator``.

    Args:
        mu, logvar: ``(N, z_dim)``.
        generator: CPU RNG (the training run's; checkpointed, so resumes are exact).
        shard: a :class:`semsynth.batch_shard.BatchShard` when ``mu`` is this process's
            slice of a global batch: ε is drawn for the global batch and sliced (the same ε
            per image whatever the number of processes); ``None`` = one process.

    Returns:
        ``(N, z_dim)`` on ``mu``'s device and dtype.
    """
    if shard is not None:
        eps = shard.randn(generator, *mu.shape[1:]).to(mu.device, mu.dtype)
    else:
        eps = torch.randn(mu.shape, generator=generator).to(mu.device, mu.dtype)
    return mu + eps * torch.exp(0.5 * logvar)


def encode_latent(generator, image: torch.Tensor, rng: torch.Generator | None = None,
                  shard=None) -> tuple[torch.Tensor, torch.Tensor]:
    """A VAE generator's training latent of the real photos and its KL term (SPADE and
    CC-FPSE ``models/pix2pix_model.py``: ``encode_z`` then ``KLDLoss``, before the weight).

    Args:
        generator: a :class:`semsynth.methods.base.Generator` with an encoder.
        image: ``(N, 3, H, W)`` real photos in [-1, 1].
        rng, shard: as :func:`reparameterize`.

    Returns:
        ``(z, kl)``: ``(N, z_dim)`` sample and the unweighted scalar KL (:func:`kl_divergence`).

    Raises:
        ValueError: the generator has no encoder.
    """
    mu, logvar = generator.encode(image)
    return reparameterize(mu, logvar, rng, shard), kl_divergence(mu, logvar, shard)
