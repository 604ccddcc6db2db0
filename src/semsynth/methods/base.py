"""The contract between a method (OASIS, SPADE, ...) and the generic training loop.

A method owns its networks and its losses; the loop (``semsynth.train.loop``) owns the
optimizers, the EMA generator, checkpoints, logging, stopping and devices — as in
NVlabs/edm's ``training_loop.py``. Per training step the loop calls, for each phase in
``method.phases``, :meth:`Method.phase_losses` and back-propagates its ``"total"``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterable, Sequence

import torch
import torch.nn as nn

from semsynth.batch_shard import BatchShard
from semsynth.types import ConfigError, DatasetInfo

if TYPE_CHECKING:
    from semsynth.config import Config, TrainConfig

#: Values of :attr:`Generator.noise`.
NOISE_KINDS = ("none", "vector", "spatial")


class Generator(nn.Module):
    """The declared surface of every method's generator: what the Sampler, the CLI, the web
    editor and the evaluator may rely on (as diffusers' declared model surface).

    Attributes:
        z_dim: noise channels it takes (0 = none).
        noise: ``"none"`` (no noise input: deterministic, or ``num_outputs`` fixed images),
            ``"vector"`` (one ``(z_dim,)`` latent per image, e.g. SPADE's encoder latent:
            no region can be re-sampled alone) or ``"spatial"`` (a noise value per pixel,
            OASIS's 3D noise: a region can be re-sampled, OASIS Sec. 4).
        num_outputs: fixed images per label map of a noise-free generator (CRN's ``k``:
            seed ``i`` selects output ``i mod k``); 1 otherwise.
        has_encoder: whether :meth:`encode` maps a photo to a latent (style-guided
            synthesis): true when the generator has an ``encoder`` submodule, the VAE image
            encoder (:class:`semsynth.nn.encoder.ConvEncoder`) of SPADE or CC-FPSE built with
            ``use_vae`` (a submodule, so the EMA and exports carry it).

    Subclasses set these in ``__init__`` (or as class attributes) and implement
    :meth:`forward`.
    """

    z_dim: int = 0
    noise: str = "none"
    num_outputs: int = 1

    def __init__(self, cfg=None, semantic_nc: int = 0, height: int | None = None, width: int | None = None) -> None:
        """Store what every generator keeps: its config section ``cfg``, ``semantic_nc``
        one-hot input channels and output ``height × width`` (``None``: any size)."""
        super().__init__()
        self.cfg = cfg
        self.semantic_nc = semantic_nc
        self.height, self.width = height, width

    @property
    def has_encoder(self) -> bool:
        """True when :meth:`encode` is available (an ``encoder`` submodule is set)."""
        return self._modules.get("encoder") is not None

    def encode(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mu, logvar)``, each ``(N, z_dim)``, of photos ``(N, 3, H, W)`` in [-1, 1].

        Raises:
            ValueError: this generator has no image encoder (``use_vae`` false).
        """
        encoder = self._modules.get("encoder")
        if encoder is None:
            raise ValueError(f"{type(self).__name__} has no image encoder (model.generator.use_vae is false)")
        return encoder(image)

    def forward(self, label_onehot: torch.Tensor, z: torch.Tensor | None = None,
                seeds: Sequence[int] | None = None) -> torch.Tensor:
        """Images of label maps.

        Args:
            label_onehot: ``(N, semantic_nc, H, W)`` float one-hot at the generator's size.
            z: noise: ``(N, z_dim)`` (``"vector"``/``"spatial"``) or ``(N, z_dim, H, W)``
                (``"spatial"``); must be ``None`` for ``noise == "none"`` generators that
                reject it (CRN, CC-FPSE).
            seeds: with ``z=None``, one int per sample: its noise is drawn from that seed
                (:func:`semsynth.noise.noise_from_seeds`), or (CRN) it selects output
                ``seed mod k``; ignored by deterministic generators. With both ``None``,
                training noise from torch's global RNG.

        Returns:
            ``(N, 3, H, W)`` float in [-1, 1].

        Raises:
            ValueError: wrong channels or size, or noise of the wrong shape.
        """
        raise NotImplementedError


def has_prefix(name: str, prefix: str) -> bool:
    """Whether dotted ``name`` lies under ``prefix``, by whole components: ``refine.1.conv1.weight``
    is under ``refine.1`` and ``refine``, not under ``refine.10`` or ``ref``."""
    return name == prefix or name.startswith(prefix + ".")


def module_names(names: Iterable[str]) -> list[str]:
    """The top-level module names of dotted tensor names, ``ModuleList`` items kept apart
    (``refine.0``, ``refine.1``, ``to_rgb``), in order: what an error message offers."""
    out: list[str] = []
    for n in names:
        parts = n.split(".")
        head = ".".join(parts[:2]) if len(parts) > 2 and parts[1].isdigit() else parts[0]
        if head not in out:
            out.append(head)
    return out


def count_parameters(module: nn.Module | None) -> int:
    """Number of scalar parameters of ``module`` (0 for ``None``); spectral-norm vectors are
    buffers and not counted, as in the official repositories' counts."""
    return 0 if module is None else sum(p.numel() for p in module.parameters())


class Method(nn.Module):
    """Base class of the synthesis methods.

    Subclasses set ``config_class`` (their frozen model-config dataclass, the ``model:``
    section of a run config), ``phases`` (update order within a step; empty for methods
    that are fitted in one pass, like the class-mean painter) and ``generator`` (a
    :class:`Generator`).

    Args:
        model_cfg: an instance of ``config_class``.
        info: the dataset's label space.
        height, width: image size the method is built for.
    """

    config_class: type = object
    phases: tuple[str, ...] = ()
    #: ``model.init: official`` re-initialises spectral-norm weights too (OASIS's code does);
    #: False where the official code moves the network to the GPU before its init, which then
    #: misses them (SPADE, CC-FPSE: :mod:`semsynth.nn.init`).
    official_init_spectral_norm_weights: bool = True
    generator: Generator
    #: the networks take the instance-edge channel (``data.instance_edges``; SPADE, CC-FPSE):
    #: ``phase_losses`` then accepts ``edges=``
    takes_instance_edges: bool = False
    #: names of generator parameters never trained (``train.freeze``; :meth:`freeze_generator`)
    frozen: frozenset = frozenset()

    def __init__(self, model_cfg, info: DatasetInfo, height: int, width: int) -> None:
        super().__init__()
        self.model_cfg = model_cfg
        self.info = info
        self.height, self.width = height, width

    @classmethod
    def build_generator(cls, model_cfg, info: DatasetInfo, height: int, width: int) -> Generator:
        """The method's generator alone, as ``__init__`` builds it (before ``model.init``):
        what loading a trained model needs (:func:`semsynth.model.build.build_generator`),
        without the discriminator or loss networks (no VGG or backbone weights read).

        Raises:
            ConfigError: generator settings the method rejects.
        """
        raise NotImplementedError

    def set_networks(self, generator: Generator, discriminator: nn.Module | None = None,
                     init: str | None = None, init_discriminator: bool = True) -> None:
        """The scaffolding every method shares: set ``self.generator`` (and
        ``self.discriminator``), then initialise them with the ``model.init`` scheme
        (:func:`semsynth.nn.init.apply_init`; ``None``: the networks keep their own init).

        Args:
            init_discriminator: False leaves D's init alone (a D with pretrained parts).

        Raises:
            ConfigError: an unknown init scheme.
        """
        from semsynth.nn.init import apply_init

        self.generator = generator
        if discriminator is not None:
            self.discriminator = discriminator
        if init is not None:
            sn = self.official_init_spectral_norm_weights
            apply_init(generator, init, "model.init", spectral_norm_weights=sn)
            if discriminator is not None and init_discriminator:
                apply_init(discriminator, init, "model.init", spectral_norm_weights=sn)

    @property
    def z_dim(self) -> int:
        """Noise channels the generator takes (0 = deterministic method)."""
        return int(self.generator.z_dim)

    @classmethod
    def ignored_keys(cls, cfg: Config) -> dict[str, str]:
        """Config keys (dotted, a key or a whole section) that ``cfg``'s chosen options
        ignore, each with the reason. :func:`semsynth.config.load_config` rejects a YAML file
        or ``--set`` that gives one of them (checkpoints' stored configs are not checked).

        Default: ``train.lr_d`` when there is no ``"D"`` phase; the optimizer's and warm
        start's keys when there are no phases at all; ``train.compile_mode`` without
        ``train.compile``; ``data.instance_edges`` unless
        :attr:`takes_instance_edges`; ``eval.vae_latent`` (VAE methods drop it with their
        encoder). Methods add their own.

        Args:
            cfg: the whole :class:`semsynth.config.Config` (``cfg.model`` is this method's).

        Returns:
            ``{dotted key: why it is ignored}``.
        """
        out = {"eval.vae_latent": "only a generator with the VAE image encoder (SPADE or CC-FPSE with "
                                  "model.generator.use_vae: true) has a latent to encode"}
        if not cls.takes_instance_edges:
            out["data.instance_edges"] = (f"{cls.__name__}'s networks take no instance-edge channel "
                                          "(SPADE and CC-FPSE do)")
        if not cls.phases:
            why = "this method is fitted in one pass, without an optimizer"
            out.update({"train.lr_g": why, "train.lr_d": why, "train.betas": why, "train.precision": why,
                        "train.compile": why, "train.compile_mode": why, "train.init_from": why,
                        "train.init_skip": why, "train.freeze": why})
        elif not cfg.train.compile:
            out["train.compile_mode"] = "train.compile is false (the mode is torch.compile's)"
        if cls.phases and "D" not in cls.phases:
            out["train.lr_d"] = (f"this method has no discriminator (phases {list(cls.phases)}); its "
                                 f"learning rate is train.lr_g")
        return out

    def parameter_counts(self) -> dict[str, int]:
        """Parameter counts by network, as ``semsynth info`` reports them.

        Default: ``"G"`` (the generator; without its VAE image encoder, which is ``"E"``, as
        the official SPADE and CC-FPSE codes count them) and ``"D"`` (``self.discriminator``,
        if any). Methods add their own entries (OASIS: G without the noise input channels).
        """
        e = count_parameters(self.generator.encoder) if self.generator.has_encoder else 0
        counts = {"G": count_parameters(self.generator) - e}
        if self.generator.has_encoder:
            counts["E"] = e
        disc = getattr(self, "discriminator", None)
        if isinstance(disc, nn.Module):
            counts["D"] = count_parameters(disc)
        return counts

    def phase_parameters(self, phase: str) -> Iterable[nn.Parameter]:
        """Parameters updated in ``phase`` (its optimizer's parameters).

        Default for GANs with phases ``("G", "D")``: ``self.generator`` in ``"G"``,
        ``self.discriminator`` in any other phase.
        """
        return (self.generator if phase == "G" else self.discriminator).parameters()

    def freeze_generator(self, prefixes: Sequence[str], key: str = "train.freeze") -> None:
        """Freeze the generator parameters under ``prefixes`` (``train.freeze``): their
        ``requires_grad`` is turned off and :meth:`trained_parameters` leaves them out, so no
        optimizer holds them (CQFIO/PhotographicImageSynthesis ``demo_1024p.py`` gives Adam
        only ``g_512*`` and ``g_1024*``). An empty ``prefixes`` unfreezes nothing and freezes
        nothing.

        Args:
            prefixes: dotted name prefixes of ``self.generator.named_parameters()``, matched
                by whole components (:func:`has_prefix`).
            key: the config key named in errors.

        Raises:
            ConfigError: a prefix that matches no generator parameter (the message lists the
                generator's modules), or prefixes that freeze every generator parameter.
        """
        names = [n for n, _ in self.generator.named_parameters()]
        for pre in prefixes:
            if not any(has_prefix(n, pre) for n in names):
                raise ConfigError(f"{key}: {pre!r} names no generator parameter; the generator's modules are "
                                  f"{', '.join(module_names(names))}")
        frozen = frozenset(n for n in names if any(has_prefix(n, pre) for pre in prefixes))
        if frozen and len(frozen) == len(names):
            raise ConfigError(f"{key}: {list(prefixes)} freezes every generator parameter: nothing left to train")
        self.frozen = frozen
        for n, p in self.generator.named_parameters():
            if n in frozen:
                p.requires_grad_(False)

    def trained_parameters(self, phase: str) -> list[nn.Parameter]:
        """:meth:`phase_parameters` without the frozen generator parameters: what the loop
        gives the phase's optimizer and turns ``requires_grad`` on for."""
        params = list(self.phase_parameters(phase))
        if not self.frozen:
            return params
        skip = {id(p) for n, p in self.generator.named_parameters() if n in self.frozen}
        return [p for p in params if id(p) not in skip]

    def phase_lr(self, phase: str, train_cfg: TrainConfig) -> float:
        """Learning rate of ``phase``'s Adam optimizer: ``train_cfg.lr_g`` for ``"G"``,
        ``train_cfg.lr_d`` otherwise (TTUR)."""
        return float(train_cfg.lr_g if phase == "G" else train_cfg.lr_d)

    def phase_losses(self, phase: str, image: torch.Tensor, label: torch.Tensor,
                     rng: torch.Generator, shard: BatchShard | None = None) -> dict[str, torch.Tensor]:
        """Loss terms of one phase on one batch.

        Methods with :attr:`takes_instance_edges` also accept ``edges``: ``(B, 1, H, W)``
        float {0, 1} instance-edge maps (``None``: the label maps' class boundaries), the
        last input channel (:func:`semsynth.labels.label_input`).

        Args:
            phase: one of ``phases``.
            image: ``(B, 3, H, W)`` float in [-1, 1] (this process's slice of the batch).
            label: ``(B, H, W)`` int64 label ids.
            rng: CPU generator of the training run for noise and random masks (its state
                is checkpointed, which makes resumed runs bit-identical on CPU; it is in the
                same state in every process of a data-parallel run).
            shard: where the batch sits in the step's global batch (data-parallel training,
                :mod:`semsynth.batch_shard`); ``None`` = the whole batch, one process.
                Per-image random draws go through it (drawn for the global batch, sliced)
                and so do statistics over the batch; every loss is a mean over this
                process's images, so that the average over processes that data-parallel
                training takes of the gradients is the global batch's gradient.

        Returns:
            Scalar tensors; key ``"total"`` is back-propagated, the rest are logged.
        """
        raise NotImplementedError

    def fit(self, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> None:
        """One-pass fitting for methods without phases (default: nothing to do)."""
