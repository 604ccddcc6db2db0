"""CC-FPSE (Liu et al., NeurIPS 2019) as a :class:`semsynth.methods.base.Method`.

Composed from: the conditional-convolution generator
(:mod:`semsynth.methods.cc_fpse.generator`, whose shortcut uses the shared
:class:`semsynth.nn.spade.SPADE`), the feature-pyramid semantics-embedding discriminator
(:mod:`semsynth.methods.cc_fpse.discriminator`), the shared hinge loss and feature-matching L1
(:mod:`semsynth.losses.gan`) and the shared VGG loss (:mod:`semsynth.losses.vgg`, **VGG-16**
weights here, the official code uses VGG-19 — none offline).

Per step, as the official ``models/pix2pix_model.py`` and ``trainers/pix2pix_trainer.py``:

* G: ``hinge_G + λ_feat · mean_l |F_l(fake) − F_l(real)| + λ_VGG · VGG``; the hinge term is
  the mean over the three scales of ``−mean(D_s(fake))``; ``F_l`` are the discriminator's
  four bottom-up features (official: ``Σ_l L1 · λ_feat / 4``). Fake and real pass through
  D in one batch (instance norm only: the same as two passes).
* D: the fake made again without gradients, ``mean_s mean(relu(1 − D_s(real))) +
  mean_s mean(relu(1 + D_s(fake)))``.
* Optimiser (the run's TrainConfig): Adam β = (0, 0.9), TTUR lr G 1e-4, D 4e-4 (official
  ``lr 2e-4`` halved / doubled), decayed linearly to 0 over epochs 101-200 in the presets.
* Weights: λ_feat 20 and λ_VGG 10 in the official training script (``train.sh``; the
  option default for λ_feat is 10). Initialisation xavier-normal 0.02, BatchNorm γ ~ N(1, 0.02)
  (:mod:`semsynth.nn.init`).

* With ``generator.use_vae`` (the published recipe, ``train.sh``): the shared VAE image
  encoder gives ``z = μ + ε·σ`` of the real photo and G adds ``λ_KLD · KL`` (0.05); the
  D phase encodes the same photo again (:func:`semsynth.losses.kl.encode_latent`).

Not implemented: SyncBatchNorm (one device here).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from semsynth.config import Config
from semsynth.labels import label_input
from semsynth.losses.gan import hinge_d_loss, hinge_g_loss, layer_l1_sum
from semsynth.losses.kl import encode_latent
from semsynth.losses.vgg import vgg_loss
from semsynth.methods.base import Method
from semsynth.methods.cc_fpse.discriminator import FPSEDiscriminator, FPSEDiscriminatorConfig
from semsynth.methods.cc_fpse.generator import CCFPSEGenerator, CCFPSEGeneratorConfig
from semsynth.nn.encoder import vae_ignored_keys
from semsynth.nn.perceptual import require_vgg16
from semsynth.registry import register_method
from semsynth.types import DatasetInfo

__all__ = ["CCFPSEConfig", "CCFPSE"]


@dataclass(frozen=True)
class CCFPSEConfig:
    """The ``model:`` section of a CC-FPSE run.

    Attributes:
        generator: :class:`semsynth.methods.cc_fpse.generator.CCFPSEGeneratorConfig`.
        discriminator: :class:`semsynth.methods.cc_fpse.discriminator.FPSEDiscriminatorConfig`.
        lambda_feat: feature-matching weight (official ``train.sh``: 20; 0 = off).
        lambda_vgg: VGG loss weight (10; 0 = off).
        lambda_kld: KL weight of the encoder (0.05; only with ``generator.use_vae``).
        init: ``"official"`` (xavier 0.02) or ``"pytorch"``.
    """

    generator: CCFPSEGeneratorConfig = field(default_factory=CCFPSEGeneratorConfig)
    discriminator: FPSEDiscriminatorConfig = field(default_factory=FPSEDiscriminatorConfig)
    lambda_feat: float = 20.0
    lambda_vgg: float = 10.0
    lambda_kld: float = 0.05
    init: str = "official"


def _scales(scores: list[torch.Tensor]) -> list[list[torch.Tensor]]:
    return [[s] for s in scores]  # the multi-scale output layout of semsynth.losses.gan


@register_method("cc_fpse")
class CCFPSE(Method):
    """Conditional-convolution generator and FPSE discriminator.

    Args:
        model_cfg: :class:`CCFPSEConfig`.
        info: label space (``info.input_nc`` input channels: the one-hot map, + the instance
            edge with ``data.instance_edges``).
        height, width: training resolution.

    Raises:
        ConfigError: an unknown upsampling mode, norm or init scheme.
        VGGUnavailable: ``lambda_vgg > 0`` without the VGG-16 weights installed.
    """

    config_class = CCFPSEConfig
    phases = ("G", "D")
    takes_instance_edges = True
    # CC-FPSE's create_network moves each network to the GPU, then runs init_weights: the
    # xavier call misses every spectral-norm weight (PyTorch's default init stays)
    official_init_spectral_norm_weights = False

    @classmethod
    def ignored_keys(cls, cfg: Config) -> dict[str, str]:
        """Base rules, and the encoder's keys without ``model.generator.use_vae``."""
        return vae_ignored_keys(super().ignored_keys(cfg), cfg.model.generator.use_vae)

    @classmethod
    def build_generator(cls, model_cfg: CCFPSEConfig, info: DatasetInfo, height: int, width: int) -> CCFPSEGenerator:
        return CCFPSEGenerator(model_cfg.generator, info.input_nc, height, width)

    def __init__(self, model_cfg: CCFPSEConfig, info: DatasetInfo, height: int, width: int) -> None:
        super().__init__(model_cfg, info, height, width)
        if model_cfg.lambda_vgg > 0:
            require_vgg16("model.lambda_vgg > 0 (the VGG loss)")
        self.set_networks(self.build_generator(model_cfg, info, height, width),
                          FPSEDiscriminator(model_cfg.discriminator, info.input_nc), model_cfg.init)

    def parameter_counts(self) -> dict[str, int]:
        """``G`` (without the encoder), ``E`` (with ``use_vae``), ``D``, and
        ``G_official_build``: G plus the three affine BatchNorms per block that the official
        ``CondConvGenerator`` holds and its forward pass never uses (``2·fin + 4·min(fin,
        fout)`` each, left out here): the count the official code prints."""
        counts = super().parameter_counts()
        unused = sum(2 * b.norm_1.num_features + 4 * b.norm_2.num_features
                     for b in self.generator.blocks.values())
        counts["G_official_build"] = counts["G"] + unused
        return counts

    def _discriminate(self, fake: torch.Tensor, real: torch.Tensor, onehot: torch.Tensor):
        b = fake.shape[0]
        feats, scores = self.discriminator(torch.cat([fake, real]), torch.cat([onehot, onehot]))
        split = lambda ts: ([t[:b] for t in ts], [t[b:] for t in ts])  # noqa: E731
        return split(feats), split(scores)

    def phase_losses(self, phase, image, label, rng, shard=None, edges=None):
        onehot = label_input(label, self.info, edges)  # + the instance-edge channel with data.instance_edges
        cfg = self.model_cfg
        vae = self.generator.has_encoder
        if phase == "G":
            out: dict[str, torch.Tensor] = {}
            z = None
            if vae:
                z, kl = encode_latent(self.generator, image, rng, shard)
                out["G_kld"] = cfg.lambda_kld * kl
            fake = self.generator(onehot, z)
            (f_fake, f_real), (s_fake, _) = self._discriminate(fake, image, onehot)
            out["G_adv"] = hinge_g_loss(_scales(s_fake))
            if cfg.lambda_feat > 0:
                out["G_feat"] = cfg.lambda_feat * layer_l1_sum(f_fake, f_real) / len(f_fake)
            if cfg.lambda_vgg > 0:
                out["G_vgg"] = cfg.lambda_vgg * vgg_loss(fake, image)
            out["total"] = sum(out.values())
            return out
        with torch.no_grad():
            fake = self.generator(onehot, encode_latent(self.generator, image, rng, shard)[0] if vae else None)
        _, (s_fake, s_real) = self._discriminate(fake, image, onehot)
        loss_real, loss_fake = hinge_d_loss(_scales(s_real), _scales(s_fake))
        return {"D_real": loss_real, "D_fake": loss_fake, "total": loss_real + loss_fake}
