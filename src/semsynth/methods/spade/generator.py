"""The SPADE generator and its optional VAE image encoder (Park et al., CVPR 2019).

Facts from the paper (Sec. 3, appendix A) and NVlabs/SPADE ``models/networks/generator.py``
(``SPADEGenerator``), ``architecture.py`` (``SPADEResnetBlock``) and ``encoder.py``
(``ConvEncoder``); our own code.

Generator (``ngf`` = 64):

* Input: without the encoder, the one-hot label map resized (nearest) to the lowest
  resolution and a 3×3 conv to ``16·ngf`` channels; with the encoder (``use_vae``), a
  ``z_dim`` (256) vector through a linear layer to ``16·ngf · h0 · w0``, reshaped.
* SPADE residual blocks (the shared :class:`semsynth.nn.spade.SPADEResBlock`: spectral norm
  on the convs, parameter-free BatchNorm, SPADE hidden width 128), widths
  head ``16→16``, middle_0 ``16→16``, middle_1 ``16→16``, up_0 ``16→8``, up_1 ``8→4``,
  up_2 ``4→2``, up_3 ``2→1`` (× ``ngf``), and for ``most`` also up_4 ``1→½``.
* Nearest ×2 upsampling after head, before middle_1 (only ``more``/``most``), before each
  up_i: 5 (``normal``), 6 (``more``) or 7 (``most``) doublings; the lowest resolution is the
  output size divided by 2^that.
* LeakyReLU(0.2) → 3×3 conv to RGB → tanh.

semsynth extension: an output size that is not divisible by 2^doublings (CamVid's 72×96 at
5 doublings) is reached by nearest resizing along the chain of sizes ``s_k = ceil(s_{k+1}/2)``
(72 ← 36 ← 18 ← 9 ← 5 ← 3); when the size is divisible this is exactly the official ×2.

Encoder: the shared :class:`semsynth.nn.encoder.ConvEncoder` (the official ``encoder.py``).

Official parameter counts (no encoder) at the paper presets: Cityscapes (``more``,
semantic_nc 36) 93,048,003; ADE20K (151) 96,492,483; COCO-Stuff (184) 97,480,899. semsynth's
label spaces have no instance-edge channel (Cityscapes 34 = labelIds 0-33, COCO-Stuff 183):
each missing input channel removes 29,952 G parameters (9,216 in the first conv, 1,152 in
each of the 18 SPADE shared convs) and 2,048 D parameters; the counts then equal the official
code's built with the same channels (``docs/results.md``, ``tests/test_spade.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from semsynth.methods.base import Generator
from semsynth.nn.encoder import ConvEncoder, EncoderConfig, latent_input
from semsynth.nn.resize import resize_nearest
from semsynth.nn.sizes import check_label_input, size_chain, upsampling_stages
from semsynth.nn.spade import SPADEResBlock

__all__ = ["EncoderConfig", "SPADEGeneratorConfig", "ConvEncoder", "SPADEGenerator", "UPSAMPLING_LAYERS"]

#: ``num_upsampling_layers`` → number of ×2 doublings.
UPSAMPLING_LAYERS = {"normal": 5, "more": 6, "most": 7}


@dataclass(frozen=True)
class SPADEGeneratorConfig:
    """SPADE generator settings (official defaults).

    Attributes:
        ngf: base width (64); block widths are multiples of it (see module docstring).
        num_upsampling_layers: ``normal`` (5 doublings), ``more`` (6; Cityscapes preset) or
            ``most`` (7, adds up_4).
        use_vae: an image encoder gives the noise (multi-modal, style-guided); otherwise the
            generator is deterministic (``z_dim`` is then unused).
        z_dim: latent size of the encoder (256).
        spade_hidden: hidden width of SPADE's shared conv (128).
        spectral_norm: on the residual blocks' convs (``norm_G`` ``spectral...``: yes).
        encoder: :class:`EncoderConfig`.
    """

    ngf: int = 64
    num_upsampling_layers: str = "normal"
    use_vae: bool = False
    z_dim: int = 256
    spade_hidden: int = 128
    spectral_norm: bool = True
    encoder: EncoderConfig = field(default_factory=EncoderConfig)


class SPADEGenerator(Generator):
    """G(label map[, z]) → image.

    Args:
        cfg: :class:`SPADEGeneratorConfig`.
        semantic_nc: one-hot channels of the label map.
        height, width: output size.

    Attributes:
        z_dim: ``cfg.z_dim`` with the encoder, else 0 (deterministic: one image per label map).
        noise: ``"vector"`` with the encoder (one latent per image, through a linear layer:
            no region can be re-sampled alone), else ``"none"``.
        encoder: the :class:`ConvEncoder` (``use_vae``) or ``None``; part of this module so
            that the EMA and exports carry it (style-guided synthesis).

    Raises:
        ConfigError: an unknown ``num_upsampling_layers``.
    """

    def __init__(self, cfg: SPADEGeneratorConfig, semantic_nc: int, height: int, width: int) -> None:
        super().__init__(cfg, semantic_nc, height, width)
        self.z_dim = cfg.z_dim if cfg.use_vae else 0
        self.noise = "vector" if cfg.use_vae else "none"
        mode = cfg.num_upsampling_layers
        k = upsampling_stages(mode, UPSAMPLING_LAYERS)
        self.sizes = list(zip(size_chain(height, k), size_chain(width, k)))  # k + 1 resolutions
        nf = cfg.ngf
        if cfg.use_vae:
            self.fc = nn.Linear(cfg.z_dim, 16 * nf * self.sizes[0][0] * self.sizes[0][1])
        else:
            self.fc = nn.Conv2d(semantic_nc, 16 * nf, 3, padding=1)

        def block(fin: int, fout: int) -> SPADEResBlock:
            return SPADEResBlock(fin, fout, semantic_nc, cfg.spade_hidden, 3, cfg.spectral_norm)

        # (name, block, upsample before it)
        plan = [("head", 16, 16, False), ("middle_0", 16, 16, True), ("middle_1", 16, 16, mode != "normal"),
                ("up_0", 16, 8, True), ("up_1", 8, 4, True), ("up_2", 4, 2, True), ("up_3", 2, 1, True)]
        widths = {16: 16 * nf, 8: 8 * nf, 4: 4 * nf, 2: 2 * nf, 1: nf}
        if mode == "most":
            plan.append(("up_4", 1, 0, True))
            widths[0] = nf // 2
        self.blocks = nn.ModuleDict({name: block(widths[a], widths[b]) for name, a, b, _ in plan})
        self._upsample_before = {name: up for name, _, _, up in plan}
        self.conv_img = nn.Conv2d(widths[plan[-1][2]], 3, 3, padding=1)
        self.encoder = ConvEncoder(cfg.encoder, cfg.z_dim) if cfg.use_vae else None

    def forward(self, label_onehot: torch.Tensor, z: torch.Tensor | None = None,
                seeds: Sequence[int] | None = None) -> torch.Tensor:
        """Generate images.

        Args:
            label_onehot: ``(N, semantic_nc, H, W)`` float one-hot at the configured size.
            z: ``(N, z_dim)`` latent (``use_vae`` only; e.g. the encoder's sample or μ).
            seeds: with ``z=None`` and ``use_vae``: one seed per sample, z ~ N(0, I) seeded
                per sample (:func:`semsynth.noise.noise_from_seeds`); with both ``None``,
                drawn from torch's global RNG. Ignored without the encoder.

        Returns:
            ``(N, 3, H, W)`` float in [-1, 1].

        Raises:
            ValueError: wrong channels or size; a latent that is not ``(N, z_dim)`` (e.g. a
                spatial noise map: SPADE's latent is one vector per image).
        """
        n, c, h, w = check_label_input(label_onehot, self.semantic_nc, self.height, self.width)
        h0, w0 = self.sizes[0]
        if self.encoder is not None:
            x = latent_input(self.fc, z, seeds, n, (h0, w0), label_onehot, "SPADE")
        else:
            x = self.fc(resize_nearest(label_onehot, (h0, w0)))
        level = 0
        for name, blk in self.blocks.items():
            if self._upsample_before[name]:
                level += 1
                x = resize_nearest(x, self.sizes[level])
            x = blk(x, label_onehot)
        return torch.tanh(self.conv_img(F.leaky_relu(x, 0.2)))
