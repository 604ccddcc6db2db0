"""The VAE image encoder of SPADE and CC-FPSE, and the latent input it feeds.

Both official codes build the same encoder (NVlabs/SPADE and xh-liu/CC-FPSE
``models/networks/encoder.py``, ``ConvEncoder``) and, with ``--use_vae``, start their
generator from the latent instead of the label map (``models/networks/generator.py``:
``fc = Linear(z_dim, 16·ngf·sh·sw)``, reshaped to ``(N, 16·ngf, sh, sw)``). Training encodes
the *real* photo, samples ``z = μ + ε·σ`` and adds ``λ_KLD · KL`` (0.05) to G's loss
(``models/pix2pix_model.py``, ``generate_fake``/``encode_z``); the encoder is trained with G.

Encoder: the image resized (bilinear) to ``input_size × input_size`` (256), then stride-2
3×3 convs with spectral instance norm and LeakyReLU(0.2), widths ``ndf, 2ndf, 4ndf, 8ndf,
8ndf, 8ndf`` down to 4×4, then two linear layers ``8ndf·4·4 → z_dim`` for μ and log σ².
Our own code.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from semsynth.nn.norm import normed_conv
from semsynth.noise import resolve_noise
from semsynth.types import ConfigError

__all__ = ["EncoderConfig", "ConvEncoder", "latent_input", "vae_ignored_keys"]


@dataclass(frozen=True)
class EncoderConfig:
    """The VAE image encoder (used only with ``model.generator.use_vae``).

    Attributes:
        ndf: width of the first conv (64; the official encoder takes ``ngf`` for it, here it
            is a separate key so that a narrow generator can keep a wider encoder).
        input_size: the image is resized to this square size first (official: 256); a power
            of two ≥ 8; the encoder has ``log2(input_size / 4)`` stride-2 convs.
        norm: ``norm_E`` (``spectralinstance``).
    """

    ndf: int = 64
    input_size: int = 256
    norm: str = "spectralinstance"


class ConvEncoder(nn.Module):
    """Image → (μ, log σ²) of a diagonal Gaussian over the ``z_dim`` latent.

    Args:
        cfg: widths, input size, norm.
        z_dim: latent size.

    Shapes: ``(N, 3, H, W)`` float in [-1, 1] (any size) → two ``(N, z_dim)`` tensors.

    Raises:
        ConfigError: ``input_size`` not a power of two ≥ 8.
    """

    def __init__(self, cfg: EncoderConfig, z_dim: int) -> None:
        super().__init__()
        size = cfg.input_size
        if size < 8 or size & (size - 1):
            raise ConfigError(f"model.generator.encoder.input_size must be a power of two >= 8, got {size}")
        self.input_size = size
        n = int(math.log2(size // 4))
        widths = [min(cfg.ndf * 2 ** i, cfg.ndf * 8) for i in range(n)]
        ins = [3] + widths[:-1]
        self.layers = nn.ModuleList(normed_conv(i, o, 3, 2, 1, cfg.norm, "model.generator.encoder.norm")
                                    for i, o in zip(ins, widths))
        self.fc_mu = nn.Linear(widths[-1] * 16, z_dim)
        self.fc_var = nn.Linear(widths[-1] * 16, z_dim)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mu, logvar)``, each ``(N, z_dim)``."""
        x = image
        if tuple(x.shape[-2:]) != (self.input_size, self.input_size):
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False)
        for i, layer in enumerate(self.layers):
            x = layer(x if i == 0 else F.leaky_relu(x, 0.2))
        x = F.leaky_relu(x, 0.2).flatten(1)
        return self.fc_mu(x), self.fc_var(x)


def latent_input(fc: nn.Linear, z: torch.Tensor | None, seeds: Sequence[int] | None, n: int,
                 size: tuple[int, int], like: torch.Tensor, name: str) -> torch.Tensor:
    """The first feature map of a VAE generator: ``fc(z)`` reshaped to ``(N, C, h0, w0)``.

    Args:
        fc: ``Linear(z_dim, C·h0·w0)``.
        z: ``(N, z_dim)`` latent (e.g. the encoder's sample or μ), or ``None``.
        seeds: with ``z=None``, one seed per sample (z ~ N(0, I) seeded per sample); with
            both ``None``, drawn from torch's global RNG.
        n: batch size; size: ``(h0, w0)``; like: a tensor whose device and dtype ``z`` takes.
        name: the generator's name for errors (``"SPADE"``).

    Returns:
        ``(N, C, h0, w0)``.

    Raises:
        ValueError: ``z`` is not ``(N, z_dim)`` (one vector per image: no spatial noise, no
            local re-sampling), or ``len(seeds) != N``.
    """
    z_dim = fc.in_features
    z = resolve_noise(z, seeds, n, z_dim, like.device)
    if z.dim() != 2 or tuple(z.shape) != (n, z_dim):
        raise ValueError(f"{name}'s latent must be (N, z_dim) = ({n}, {z_dim}), got {tuple(z.shape)}; "
                         "it is one vector per image (no spatial noise, no local re-sampling)")
    return fc(z.to(like.dtype)).view(n, -1, *size)


def vae_ignored_keys(base: dict[str, str], use_vae: bool) -> dict[str, str]:
    """A VAE-capable method's ignored keys (:meth:`semsynth.methods.base.Method.ignored_keys`):
    ``base`` plus the encoder's keys without ``model.generator.use_vae``, and ``base`` less
    ``eval.vae_latent`` with it.

    Returns:
        ``{dotted key: why}`` (a new dict).
    """
    out = dict(base)
    if use_vae:
        out.pop("eval.vae_latent", None)
        return out
    why = "it is used only with the image encoder (model.generator.use_vae: true)"
    out.update({"model.generator.z_dim": why, "model.generator.encoder": why, "model.lambda_kld": why})
    return out
