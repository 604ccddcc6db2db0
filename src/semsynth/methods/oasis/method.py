"""OASIS as a :class:`semsynth.methods.base.Method` (Schönfeld et al., ICLR 2021).

Per step (official ``train.py`` order): a generator update with the class-balanced N+1
adversarial loss, then a discriminator update with the N+1 loss on real and generated
images plus λ_LM · LabelMix. No VGG perceptual loss by default. Optimizer settings (Adam
β = (0, 0.999), lr G 1e-4 / D 4e-4) live in the run's TrainConfig.

Ablation parts (the paper's Sec. 4 discriminator/VGG ablation; ``configs/ablation/``):

* ``model.lambda_vgg`` > 0 adds the VGG perceptual loss to G (official ``--add_vgg_loss``
  with ``--lambda_vgg 10``; :func:`semsynth.losses.vgg.vgg_loss`, VGG-16 here).
* ``model.discriminator_type: multiscale_patchgan`` replaces the U-Net N+1 discriminator by
  SPADE's multi-scale PatchGAN (:mod:`semsynth.nn.patch_gan`, conditioned on the label
  map) trained with the hinge loss, and adds feature matching (``model.lambda_feat``, 10) to
  G (:mod:`semsynth.losses.gan`) — SPADE's adversarial set-up around the OASIS generator.
  LabelMix and class balancing belong to the N+1 loss and are off then.

Pretrained-backbone discriminator (DP-SIMS, Berrada et al., CVPR 2024; issue 18):

* ``model.discriminator_type: pretrained_unet`` uses
  :class:`semsynth.methods.oasis.pretrained_discriminator.PretrainedUNetDiscriminator`
  (frozen ImageNet EfficientNet-Lite0 encoder, conditioned features, trainable U-Net
  decoder, N+1 outputs) with the same class-balanced N+1 loss and LabelMix; settings in
  ``model.pretrained``. Only its decoder is trained (``phase_parameters``).
* ``model.diffaug`` (e.g. ``color,translation,cutout``): DiffAugment before every D call,
  one draw per image shared by its fake, real and LabelMix versions, label map and mask
  moved with the geometry, padded/cut pixels out of the loss (:mod:`semsynth.nn.diffaug`).
* ``model.focal_gamma`` > 0: the focal N+1 cross-entropy (DP-SIMS's pixel-wise focal loss).

Diversity (any discriminator):

* ``model.lambda_diversity`` > 0: in G's phase, every image at an even index of the global
  batch is generated a second time from a fresh noise draw, and
  ``λ_div · diversity_sensitive_loss(G(c, z1), G(c, z2), z1, z2, τ, distance)``
  (``model.diversity_tau``, ``model.diversity_distance``)
  is added to G's loss (:func:`semsynth.losses.diversity.diversity_sensitive_loss`; DSGAN,
  Yang et al., ICLR 2019, eq. 2). The second images join G's forward as extra rows (same
  BatchNorm statistics) and go through G only, not D: about half a G forward/backward more
  per step. Even global indices keep the pairs the same whatever the number of processes.
  Off by default; the CPU main job (``configs/oasis/camvid_cpu_pretrained_d.yaml``) sets
  λ 3, τ 0.15, ``structure``. Measured on CamVid (docs/results.md, "The main job with the
  diversity term" and "A diversity term for G"): with the image distance the noise learned to switch the whole image's brightness and
  FID/mIoU collapsed; the structure distance (λ 3, τ 0.15) changes textures and regions'
  appearance instead, and in bf16 it reaches MS-SSIM between seeds ≤ 0.75 while mIoU still
  rises to about the plain run's level with training (fp32 at 12 CPU-minutes: −12 mIoU points).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from semsynth.batch_shard import BatchShard
from semsynth.config import Config
from semsynth.labels import one_hot
from semsynth.losses.diversity import DISTANCES, diversity_sensitive_loss
from semsynth.losses.gan import multiscale_d_terms, multiscale_g_terms
from semsynth.losses.n1 import LABELMIX_MASKS, labelmix_loss, labelmix_mask, n1_cross_entropy
from semsynth.losses.vgg import vgg_loss
from semsynth.methods.base import Method, count_parameters
from semsynth.methods.oasis.discriminator import OASISDiscriminator, OASISDiscriminatorConfig
from semsynth.methods.oasis.generator import OASISGenerator, OASISGeneratorConfig
from semsynth.methods.oasis.pretrained_discriminator import PretrainedDConfig, PretrainedUNetDiscriminator
from semsynth.nn.diffaug import diff_augment, parse_policy
from semsynth.nn.patch_gan import MultiscaleDiscriminator, PatchGANConfig
from semsynth.nn.perceptual import require_vgg16
from semsynth.registry import register_method
from semsynth.types import ConfigError, DatasetInfo

#: Default bound of the diversity term (structure distance / noise distance): two CamVid val
#: photos five frames apart differ by 0.17 × 2/√π in structure (the mean |z1 − z2| of two
#: N(0, 1) draws is 2/√π ≈ 1.13); the pretrained-D generator's two seeds by 0.094 after 30
#: CPU-minutes (docs/results.md).
DIVERSITY_TAU = 0.15


@dataclass(frozen=True)
class OASISConfig:
    """The ``model:`` section of an OASIS run.

    Attributes:
        generator, discriminator: network widths/depths.
        lambda_labelmix: weight of LabelMix in the D loss (paper: 10; Cityscapes 5).
        labelmix: use LabelMix at all.
        labelmix_mask: ``"image"`` (one bit per class per image; the default: better on
            CamVid val at equal budget, see docs/results.md) or ``"batch"`` (one bit per
            class shared by the whole batch: the official code, used by the paper presets
            ``configs/oasis/{ade20k,cityscapes,coco_stuff}.yaml``).
        init: ``"official"`` (xavier-normal gain 0.02, zero biases; official
            ``init_networks``, :mod:`semsynth.nn.init`) or ``"pytorch"`` (PyTorch's layer
            defaults), for G and D (G only with ``pretrained_unet``, whose decoder keeps
            PyTorch's defaults).
        lambda_vgg: weight of the VGG perceptual loss in G's loss (0 = off, the OASIS
            method; 10 = the official ``--add_vgg_loss`` setting).
        discriminator_type: ``"oasis"`` (U-Net, N+1 loss, LabelMix),
            ``"pretrained_unet"`` (the same losses, D over a frozen ImageNet backbone, set
            in ``pretrained``) or ``"multiscale_patchgan"`` (SPADE's D from ``patchgan``,
            hinge + feature matching).
        patchgan: the PatchGAN's settings (``multiscale_patchgan`` only).
        lambda_feat: feature-matching weight (``multiscale_patchgan`` only; SPADE: 10).
        pretrained: the pretrained-backbone D's settings (``pretrained_unet`` only).
        diffaug: DiffAugment ops before D, comma-separated from ``color``,
            ``translation``, ``cutout`` (``""`` = none; N+1 discriminators only).
        focal_gamma: γ of the focal N+1 loss (0 = the OASIS cross-entropy; N+1 only).
        lambda_diversity: weight of the diversity-sensitive term in G's loss (0 = off, the
            OASIS method).
        diversity_tau: its bound τ on the image/noise distance ratio (> 0).
        diversity_distance: ``"image"`` (L1 of the images, DSGAN's) or ``"structure"``
            (standardised image gradients: blind to global brightness and contrast).

    Keys the chosen options ignore (another discriminator's settings, LabelMix's with
    ``labelmix: false`` or the PatchGAN, ``diversity_*`` with ``lambda_diversity`` 0) are
    rejected by :func:`semsynth.config.load_config` (:meth:`OASIS.ignored_keys`).

    Raises (when the method is built): ConfigError for an unknown discriminator type,
    LabelMix mask or DiffAugment op, ``focal_gamma`` or ``lambda_diversity`` below 0,
    ``lambda_diversity`` > 0 without noise, ``diversity_tau`` ≤ 0 or an unknown
    ``diversity_distance``.
    """

    generator: OASISGeneratorConfig = field(default_factory=OASISGeneratorConfig)
    discriminator: OASISDiscriminatorConfig = field(default_factory=OASISDiscriminatorConfig)
    lambda_labelmix: float = 10.0
    labelmix: bool = True
    labelmix_mask: str = "image"
    init: str = "official"
    lambda_vgg: float = 0.0
    discriminator_type: str = "oasis"
    patchgan: PatchGANConfig = field(default_factory=PatchGANConfig)
    lambda_feat: float = 10.0
    pretrained: PretrainedDConfig = field(default_factory=PretrainedDConfig)
    diffaug: str = ""
    focal_gamma: float = 0.0
    lambda_diversity: float = 0.0
    diversity_tau: float = DIVERSITY_TAU
    diversity_distance: str = "image"


#: Values of ``OASISConfig.discriminator_type``.
DISCRIMINATOR_TYPES = ("oasis", "pretrained_unet", "multiscale_patchgan")
#: DiffAugment's translation ratio (DiffAugment, Projected GAN) and Projected GAN's cutout
#: ratio (``pg_modules/diffaug.py``).
DIFFAUG_TRANSLATION, DIFFAUG_CUTOUT = 0.125, 0.2


@register_method("oasis")
class OASIS(Method):
    """OASIS generator + U-Net N+1 segmentation discriminator.

    Args:
        model_cfg: :class:`OASISConfig`.
        info: dataset label space (``semantic_nc`` one-hot channels; don't-care weight 0).
        height, width: training resolution.
    """

    config_class = OASISConfig
    phases = ("G", "D")

    @classmethod
    def build_generator(cls, model_cfg: OASISConfig, info: DatasetInfo, height: int, width: int) -> OASISGenerator:
        return OASISGenerator(model_cfg.generator, info.semantic_nc, height, width)

    def __init__(self, model_cfg: OASISConfig, info: DatasetInfo, height: int, width: int) -> None:
        super().__init__(model_cfg, info, height, width)
        if model_cfg.lambda_vgg > 0:
            require_vgg16("model.lambda_vgg > 0 (the VGG loss)")
        if model_cfg.discriminator_type not in DISCRIMINATOR_TYPES:
            raise ConfigError(f"model.discriminator_type: {model_cfg.discriminator_type!r} is not one of "
                              f"{list(DISCRIMINATOR_TYPES)}")
        self.uses_patchgan = model_cfg.discriminator_type == "multiscale_patchgan"
        self.uses_pretrained_d = model_cfg.discriminator_type == "pretrained_unet"
        try:
            self.diffaug = parse_policy(model_cfg.diffaug)
        except ValueError as exc:
            raise ConfigError(f"model.diffaug: {exc}") from None
        if model_cfg.lambda_diversity < 0:
            raise ConfigError(f"model.lambda_diversity: {model_cfg.lambda_diversity} must be >= 0")
        if model_cfg.lambda_diversity > 0 and model_cfg.generator.z_dim == 0:
            raise ConfigError("model.lambda_diversity > 0 needs noise: model.generator.z_dim is 0")
        if model_cfg.diversity_distance not in DISTANCES:
            raise ConfigError(f"model.diversity_distance: {model_cfg.diversity_distance!r} is not one of "
                              f"{list(DISTANCES)}")
        if model_cfg.diversity_tau <= 0:
            raise ConfigError(f"model.diversity_tau: {model_cfg.diversity_tau} must be > 0")
        if model_cfg.focal_gamma < 0:
            raise ConfigError(f"model.focal_gamma: {model_cfg.focal_gamma} must be >= 0")
        if model_cfg.labelmix_mask not in LABELMIX_MASKS:
            raise ConfigError(f"model.labelmix_mask: {model_cfg.labelmix_mask!r} is not one of {list(LABELMIX_MASKS)}")
        generator = self.build_generator(model_cfg, info, height, width)
        if self.uses_patchgan:
            discriminator = MultiscaleDiscriminator(model_cfg.patchgan, info.semantic_nc + 3)
        elif self.uses_pretrained_d:
            discriminator = PretrainedUNetDiscriminator(model_cfg.pretrained, info.semantic_nc)
        else:
            discriminator = OASISDiscriminator(model_cfg.discriminator, info.semantic_nc)
        self.set_networks(generator, discriminator, model_cfg.init, init_discriminator=not self.uses_pretrained_d)
        # The pretrained D keeps its ImageNet backbone and PyTorch's default init in its
        # decoder: with xavier 0.02 the decoder learned to segment real CamVid images ~3x
        # slower (CE 2.0 vs 1.3 after 40 Adam steps at lr 4e-4; docs/results.md).

    @classmethod
    def ignored_keys(cls, cfg: Config) -> dict[str, str]:
        """Base rules, and the settings of the discriminators, LabelMix and the diversity
        term that the chosen ``discriminator_type`` and switches leave unused."""
        m = cfg.model
        out = super().ignored_keys(cfg)
        dt = m.discriminator_type
        if dt != "oasis":
            where = "model.pretrained" if dt == "pretrained_unet" else "model.patchgan"
            out["model.discriminator"] = (f"model.discriminator_type is {dt!r}: the OASIS U-Net D it sets is not "
                                          f"built (the settings of this D are in {where})")
        if dt != "pretrained_unet":
            out["model.pretrained"] = f"model.discriminator_type is {dt!r}: it is used by 'pretrained_unet' only"
        if dt != "multiscale_patchgan":
            why = f"model.discriminator_type is {dt!r}: it is used by 'multiscale_patchgan' only"
            out.update({"model.patchgan": why, "model.lambda_feat": why})
        else:
            why = "model.discriminator_type is 'multiscale_patchgan': it applies to the N+1 discriminators only"
            out.update({k: why for k in ("model.diffaug", "model.focal_gamma", "model.labelmix",
                                         "model.lambda_labelmix", "model.labelmix_mask")})
        if not m.labelmix:
            why = "model.labelmix is false"
            out.setdefault("model.lambda_labelmix", why)
            out.setdefault("model.labelmix_mask", why)
        if m.lambda_diversity == 0:
            why = "model.lambda_diversity is 0: it is used only with the diversity term"
            out.update({"model.diversity_tau": why, "model.diversity_distance": why})
        return out

    def parameter_counts(self) -> dict[str, int]:
        """G, G without the noise input channels (the paper's 72.6M for ADE20K), D."""
        counts = super().parameter_counts()
        g = self.generator
        if g.z_dim > 0:  # the noise enters fc and every SPADE's shared conv as extra input channels
            convs = [g.fc] + [m.shared[0] for m in g.modules() if hasattr(m, "shared")]
            counts["G_without_noise_inputs"] = counts["G"] - sum(
                c.weight.shape[0] * g.z_dim * c.weight.shape[2] * c.weight.shape[3] for c in convs)
        else:
            counts["G_without_noise_inputs"] = counts["G"]
        out = {"G": counts["G"], "G_without_noise_inputs": counts["G_without_noise_inputs"], "D": counts["D"]}
        if self.uses_pretrained_d:  # D = what is trained; the frozen backbone apart
            out["D"] = count_parameters(self.discriminator.decoder)
            out["D_frozen_backbone"] = count_parameters(self.discriminator.backbone)
        return out

    def phase_parameters(self, phase: str):
        """G's parameters in ``"G"``; D's trainable ones in ``"D"`` (not a frozen backbone)."""
        if phase == "D" and self.uses_pretrained_d:
            return self.discriminator.trainable_parameters()
        return super().phase_parameters(phase)

    def _augment(self, images, label, rng, shard, extra=()):
        """DiffAugment ``images`` (one draw per image index) if ``model.diffaug`` is set."""
        if not self.diffaug:
            return list(images), label, None, list(extra)
        return diff_augment(images, label, self.diffaug, rng, DIFFAUG_TRANSLATION, DIFFAUG_CUTOUT, extra, shard)

    def _generate_g_phase(self, onehot, z, rng, shard):
        """G's images for its phase, plus the diversity term when ``lambda_diversity`` > 0.

        The second draws of the even-index images join the same G forward as extra rows, so
        both draws see the same BatchNorm batch statistics (a separate forward would give a
        difference G could grow without using the noise).

        Returns:
            ``(fake (B, 3, H, W), G_diversity scalar or None)``.
        """
        if self.model_cfg.lambda_diversity <= 0:
            return self.generator(onehot, z), None
        z2 = shard.randn(rng, self.z_dim, device=onehot.device)
        pick = torch.arange(shard.start, shard.start + shard.size, device=onehot.device) % 2 == 0
        if not bool(pick.any()):  # this process holds one odd-index image: no pair here
            fake = self.generator(onehot, z)
            return fake, fake.sum() * 0.0
        both = self.generator(torch.cat([onehot, onehot[pick]]), torch.cat([z, z2[pick]]))
        b = onehot.shape[0]
        fake = both[:b]
        per_pair = diversity_sensitive_loss(fake[pick], both[b:], z[pick], z2[pick], self.model_cfg.diversity_tau,
                                            self.model_cfg.diversity_distance, reduction="none")
        # the mean over the global batch's pairs once data-parallel training averages the
        # processes' gradients (one process: the plain mean)
        processes, pairs = shard.global_size // shard.size, (shard.global_size + 1) // 2
        return fake, self.model_cfg.lambda_diversity * per_pair.sum() * processes / pairs

    def phase_losses(self, phase, image, label, rng, shard=None):
        shard = shard or BatchShard.whole(label.shape[0], self.info.semantic_nc)
        onehot = one_hot(label, self.info.semantic_nc)
        ignore = self.info.ignore_index
        z = shard.randn(rng, self.z_dim, device=label.device) if self.z_dim else None
        if phase == "G":
            fake, diversity = self._generate_g_phase(onehot, z, rng, shard)
            if self.uses_patchgan:
                out = multiscale_g_terms(self.discriminator, onehot, fake, image, self.model_cfg.lambda_feat)
            else:
                (fake_d,), label_d, valid, _ = self._augment([fake], label, rng, shard)
                out = {"G_adv": n1_cross_entropy(self.discriminator(fake_d), label_d, True, ignore, shard, valid,
                                                 self.model_cfg.focal_gamma)}
            if self.model_cfg.lambda_vgg > 0:
                out["G_vgg"] = self.model_cfg.lambda_vgg * vgg_loss(fake, image)
            if diversity is not None:
                out["G_diversity"] = diversity
            out["total"] = sum(out.values())
            return out
        with torch.no_grad():
            fake = self.generator(onehot, z)
        if self.uses_patchgan:
            out = multiscale_d_terms(self.discriminator, onehot, fake, image)
            out["total"] = out["D_real"] + out["D_fake"]
            return out
        b = image.shape[0]
        batch = [fake, image]
        masks = []
        if self.model_cfg.labelmix:
            mask = labelmix_mask(label, rng, self.model_cfg.labelmix_mask, shard)
            batch.append(mask * image + (1 - mask) * fake)
            masks = [mask]
        batch, label, valid, masks = self._augment(batch, label, rng, shard, masks)
        # One D forward on [fake; real; mix]: D has no batch statistics, so this equals
        # three separate forwards (the official code) up to spectral-norm power steps
        # (the pretrained D's conditioning statistics are updated from the real rows only).
        if self.uses_pretrained_d:
            logits = self.discriminator(torch.cat(batch), real=slice(b, 2 * b))
        else:
            logits = self.discriminator(torch.cat(batch))
        d_fake, d_real = logits[:b], logits[b:2 * b]
        gamma = self.model_cfg.focal_gamma
        loss_fake = n1_cross_entropy(d_fake, label, False, ignore, valid=valid, focal_gamma=gamma)
        loss_real = n1_cross_entropy(d_real, label, True, ignore, shard, valid, gamma)
        out = {"D_fake": loss_fake, "D_real": loss_real}
        total = loss_fake + loss_real
        if self.model_cfg.labelmix:
            lm = labelmix_loss(logits[2 * b:], d_real, d_fake, masks[0])
            out["D_labelmix"] = lm
            total = total + self.model_cfg.lambda_labelmix * lm
        out["total"] = total
        return out
