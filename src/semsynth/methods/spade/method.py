"""SPADE (GauGAN; Park et al., "Semantic Image Synthesis with Spatially-Adaptive
Normalization", CVPR 2019) as a :class:`semsynth.methods.base.Method`.

Composed from shared parts: the SPADE generator (:mod:`semsynth.methods.spade.generator`,
built on :class:`semsynth.nn.spade.SPADEResBlock`), the multi-scale PatchGAN
(:mod:`semsynth.nn.patch_gan`), hinge + feature matching (:mod:`semsynth.losses.gan`), the
VGG loss (:mod:`semsynth.losses.vgg`, VGG-16 weights here — see there) and the VAE's KL term
(:mod:`semsynth.losses.kl`).

Per step, as NVlabs/SPADE ``models/pix2pix_model.py`` and ``trainers/pix2pix_trainer.py``:

* G: with the encoder, ``z = μ + ε·σ`` of the real image and ``λ_KLD · KL`` (0.05); then
  ``hinge_G + λ_feat · FM + λ_VGG · VGG`` (10, 10). The encoder is trained with G.
* D: the fake made again without gradients (the encoder's z for the same real image),
  ``hinge_D(real) + hinge_D(fake)``.
* Optimiser (the run's TrainConfig): Adam β = (0, 0.9), TTUR lr G 1e-4, D 4e-4. The
  official linear lr decay (``niter_decay``, 0 in every official preset) is not implemented.
* Initialisation: xavier-normal gain 0.02 (official ``--init_type xavier
  --init_variance 0.02``; :mod:`semsynth.nn.init`).

Not implemented: the instance-edge input channel of the official Cityscapes/COCO-Stuff
presets (semsynth's label spaces carry no instance maps): G and D have one input channel
fewer for COCO-Stuff and two for Cityscapes (whose label space is labelIds 0-33, not the
official 35 channels); ``docs/results.md`` gives the counts (−0.03 % / −0.07 %).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from semsynth.config import Config
from semsynth.labels import label_input
from semsynth.losses.gan import multiscale_d_terms, multiscale_g_terms
from semsynth.losses.kl import encode_latent
from semsynth.losses.vgg import vgg_loss
from semsynth.methods.base import Method
from semsynth.methods.spade.generator import SPADEGenerator, SPADEGeneratorConfig
from semsynth.nn.encoder import vae_ignored_keys
from semsynth.nn.patch_gan import MultiscaleDiscriminator, PatchGANConfig
from semsynth.nn.perceptual import require_vgg16
from semsynth.registry import register_method
from semsynth.types import DatasetInfo

__all__ = ["SPADEConfig", "SPADE"]


@dataclass(frozen=True)
class SPADEConfig:
    """The ``model:`` section of a SPADE run (official defaults).

    Attributes:
        generator: :class:`semsynth.methods.spade.generator.SPADEGeneratorConfig` (with the
            encoder settings under ``generator.encoder``).
        discriminator: :class:`semsynth.nn.patch_gan.PatchGANConfig` (ndf 64, num_D 2,
            n_layers_D 4, spectral instance norm).
        lambda_feat: feature-matching weight (10; 0 = off, ``--no_ganFeat_loss``).
        lambda_vgg: VGG loss weight (10; 0 = off, ``--no_vgg_loss``).
        lambda_kld: KL weight of the encoder (0.05; used only with ``generator.use_vae``).
        init: ``"official"`` (xavier 0.02) or ``"pytorch"``.
    """

    generator: SPADEGeneratorConfig = field(default_factory=SPADEGeneratorConfig)
    discriminator: PatchGANConfig = field(default_factory=PatchGANConfig)
    lambda_feat: float = 10.0
    lambda_vgg: float = 10.0
    lambda_kld: float = 0.05
    init: str = "official"


@register_method("spade")
class SPADE(Method):
    """SPADE generator (+ optional VAE encoder) and multi-scale PatchGAN discriminator.

    Args:
        model_cfg: :class:`SPADEConfig`.
        info: label space (``info.input_nc`` input channels: the one-hot map, + the instance
            edge with ``data.instance_edges``; D sees ``input_nc + 3``).
        height, width: training resolution.

    Raises:
        ConfigError: an unknown upsampling mode, norm or init scheme.
        VGGUnavailable: ``lambda_vgg > 0`` without the VGG-16 weights installed.
    """

    config_class = SPADEConfig
    phases = ("G", "D")
    takes_instance_edges = True
    # SPADE's create_network moves each network to the GPU, then runs init_weights: the
    # xavier call misses every spectral-norm weight (PyTorch's default init stays)
    official_init_spectral_norm_weights = False

    @classmethod
    def ignored_keys(cls, cfg: Config) -> dict[str, str]:
        """Base rules, and the encoder's keys without ``model.generator.use_vae``."""
        return vae_ignored_keys(super().ignored_keys(cfg), cfg.model.generator.use_vae)

    @classmethod
    def build_generator(cls, model_cfg: SPADEConfig, info: DatasetInfo, height: int, width: int) -> SPADEGenerator:
        return SPADEGenerator(model_cfg.generator, info.input_nc, height, width)

    def __init__(self, model_cfg: SPADEConfig, info: DatasetInfo, height: int, width: int) -> None:
        super().__init__(model_cfg, info, height, width)
        if model_cfg.lambda_vgg > 0:
            require_vgg16("model.lambda_vgg > 0 (the VGG loss)")
        self.set_networks(self.build_generator(model_cfg, info, height, width),
                          MultiscaleDiscriminator(model_cfg.discriminator, info.input_nc + 3), model_cfg.init)

    def phase_losses(self, phase, image, label, rng, shard=None, edges=None):
        onehot = label_input(label, self.info, edges)  # + the instance-edge channel with data.instance_edges
        cfg = self.model_cfg
        if phase == "G":
            out: dict[str, torch.Tensor] = {}
            z = None
            if self.generator.has_encoder:
                z, kl = encode_latent(self.generator, image, rng, shard)
                out["G_kld"] = cfg.lambda_kld * kl
            fake = self.generator(onehot, z)
            out.update(multiscale_g_terms(self.discriminator, onehot, fake, image, cfg.lambda_feat))
            if cfg.lambda_vgg > 0:
                out["G_vgg"] = cfg.lambda_vgg * vgg_loss(fake, image)
            out["total"] = sum(out.values())
            return out
        with torch.no_grad():
            z = encode_latent(self.generator, image, rng, shard)[0] if self.generator.has_encoder else None
            fake = self.generator(onehot, z)
        out = multiscale_d_terms(self.discriminator, onehot, fake, image)
        out["total"] = out["D_real"] + out["D_fake"]
        return out
