"""Frozen, typed run configuration, loaded from YAML with OmegaConf.

A run is described by one :class:`Config`: the data (:class:`DataConfig`), the method's own
model settings (a frozen dataclass registered by the method, e.g.
:class:`semsynth.methods.oasis.method.OASISConfig`), the training loop (:class:`TrainConfig`)
and the in-training evaluation (:class:`EvalConfig`). There is no global options object:
the config is an immutable value passed to whoever needs it, saved as ``config.yaml`` in
every run folder and inside every checkpoint.

Loading validates every key and type against the dataclasses (OmegaConf structured
configs), so a misspelt key in a YAML file or in ``--set`` is an error naming the key.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any, Optional, Sequence, Tuple, Union

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from semsynth.fileio import atomic_write_bytes
from semsynth.types import ConfigError

#: Values of ``train.precision``.
PRECISIONS = ("fp32", "bf16", "auto")
#: Values of ``train.compile_mode``: ``torch.compile``'s Inductor modes.
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


@dataclass(frozen=True)
class DataConfig:
    """Which dataset, where, and how training pairs are resized, cropped and flipped.

    Attributes:
        dataset: registry name (``camvid``, ``cityscapes``, ``ade20k``, ``coco_stuff``,
            ``stanford_background``, ``folder``).
        root: dataset folder; ``None`` means ``$SEMSYNTH_DATA/<default folder>`` with
            ``SEMSYNTH_DATA`` defaulting to ``../shared/datasets`` (relative to the
            current directory).
        height, width: size in pixels of the images and label maps the model sees.
        load_height, load_width: if set (both), *training* pairs are first resized to this
            size and then randomly cropped to ``height x width`` (official OASIS ADE20K and
            COCO-Stuff: 286 → 256); if ``None``, training pairs are resized straight to
            ``height x width`` (official Cityscapes). Evaluation pairs are always resized
            straight to ``height x width``, no crop (the official ``for_metrics`` path).
        flip: random horizontal flip of training pairs (p = 0.5).
        train_split, val_split: split names; model selection uses ``val_split`` only.
        cache: keep each pair, resized to the load size, in memory after its first read:
            ``true``, ``false`` or ``auto`` (on when the split's resized pairs, times the
            processes that read them, fit ``cache_limit_gb``; the trainer says which it chose
            and why). See :func:`semsynth.data.cache.resolve_cache`.
        cache_limit_gb: the memory (GB, 1e9 bytes) ``cache: auto`` may use; ``None`` = half of
            the memory available when the run starts. Only with ``cache: auto``.
        num_workers: DataLoader worker processes (0 = load in the main process), or ``auto``:
            0 when the cache is on or training runs on the CPU, else ``min(8, CPUs)``
            (decoding then overlaps the GPU's step).
        check_workers: processes of the data check (:mod:`semsynth.data.check`); 0 = all CPUs.
        options: dataset-specific options (e.g. the folder dataset's layout).
        instance_edges: add the instance-edge map as one more input channel after the
            one-hot label map (SPADE and CC-FPSE, official Cityscapes and COCO-Stuff
            defaults); datasets with instance maps only (Cityscapes ``*_instanceIds.png``,
            COCO-Stuff ``<split>_inst/``). See :func:`semsynth.labels.label_input`.
    """

    dataset: str = "camvid"
    root: Optional[str] = None
    height: int = 96
    width: int = 128
    load_height: Optional[int] = None
    load_width: Optional[int] = None
    flip: bool = True
    train_split: str = "train"
    val_split: str = "val"
    cache: Union[bool, str] = "auto"
    cache_limit_gb: Optional[float] = None
    num_workers: Union[int, str] = "auto"
    check_workers: int = 0
    options: dict = field(default_factory=dict)
    instance_edges: bool = False


@dataclass(frozen=True)
class EMAConfig:
    """Exponential moving average of the generator weights.

    Either a fixed ``decay`` per step (the papers' 0.9999 / 0.999, for long GPU runs), or,
    when ``decay`` is ``None``, a half-life in images with ramp-up as in NVlabs/edm
    (``training_loop.py``): ``beta = 0.5 ** (batch / max(halflife_kimg * 1000, 1e-8))``
    with the half-life capped at ``rampup * images_seen`` so that short CPU runs do not
    leave the EMA generator at its initial weights.

    Attributes:
        decay: fixed per-step decay in (0, 1), or ``None`` for the half-life rule.
        halflife_kimg: half-life in thousands of training images.
        rampup: ramp-up ratio (``None`` = no ramp-up).
        bn_refresh_batches: forward passes of the EMA generator on training batches (train
            mode, no gradients) that refresh its BatchNorm running statistics before every
            sample grid, evaluation and export (official OASIS: 50).
    """

    decay: Optional[float] = None
    halflife_kimg: float = 2.0
    rampup: Optional[float] = 0.05
    bn_refresh_batches: int = 50


@dataclass(frozen=True)
class TrainConfig:
    """The generic training loop's settings (shared by every method).

    Attributes:
        batch_size: images per step.
        max_steps: stop after this many steps.
        max_minutes: also stop after this many minutes of wall time (``None`` = no limit);
            whichever bound comes first ends the run.
        lr_g, lr_d: Adam learning rates of generator and discriminator (OASIS: 1e-4 / 4e-4).
        betas: Adam betas (OASIS: (0.0, 0.999)).
        log_every: steps between lines of ``stats.jsonl`` (losses are averaged over them).
        sample_every: steps between sample grids in ``samples/``.
        checkpoint_every: steps between kept ``checkpoints/step_NNNNNNN.pt`` files.
        latest_every: steps between rewrites of ``checkpoints/latest.pt``.
        grid_labels: label maps in a sample grid (taken from the val split).
        grid_samples: EMA samples per label map in a grid.
        device: ``auto`` (CUDA if available, else CPU), ``cpu`` or ``cuda[:i]``.
        threads: CPU threads for torch (0 = torch's default).
        channels_last: keep the networks' weights and activations in the channels-last
            (NHWC) memory format: 1.2–1.3× faster OASIS training steps on CPU (oneDNN
            convolutions; docs/results.md). Changes float rounding, not the model.
        tensorboard: write TensorBoard event files into the run folder (losses, sec/step,
            images/s, eval metrics, sample grids); ``tensorboard --logdir runs/`` shows them.
        lr_decay_start, lr_decay_end: linear learning-rate decay (both or neither): both
            optimizers' rates are scaled by ``1 - clamp(t - start, 0, end - start) / (end -
            start)``, ``t`` the 0-based epoch (or step) index of the step being taken; 0 from
            ``end`` on. In epochs this is NVlabs/SPADE's ``--niter start --niter_decay
            (end - start)`` (``trainers/pix2pix_trainer.py``, once per epoch). ``None``: constant.
        lr_decay_unit: ``epoch`` (``len(train split) // batch_size`` steps, the last
            incomplete batch dropped) or ``step``. Only with ``lr_decay_start``.
        precision: ``fp32``, ``bf16`` or ``auto``. bf16: the phases' forward passes under
            ``torch.autocast(bfloat16)`` (convolutions and matmuls in bf16, the VGG network's
            too); the loss terms (N+1 cross-entropy, LabelMix, hinge, the L1 of feature
            matching and VGG, KL), spectral norm's power iteration, BatchNorm statistics, the
            weights, Adam and the EMA stay fp32; no loss scaling is needed. For CUDA GPUs with bf16 tensor cores (A100, H100, ...) and CPUs
            that compute bf16 natively (AVX512-BF16, AMX); elsewhere it runs, but slowly.
            ``auto``: bf16 where the training device computes it natively, else fp32
            (:func:`semsynth.model.build.resolve_precision`; a note on stderr says which, and
            checkpoints record it).
        compile: ``torch.compile`` the generator and discriminator in place (Inductor; the
            first steps compile for minutes, then run faster; weights and checkpoints are
            unchanged). Sampling and evaluation use the uncompiled EMA generator. Off under
            torchrun and on GPUs below compute capability 7.0, with a note
            (:func:`semsynth.model.build.compile_unavailable`).
        compile_mode: Inductor's mode for ``train.compile`` (only with it): ``default``;
            ``reduce-overhead`` (CUDA graphs: each compiled graph replayed as one launch; the
            loop marks every step's start, ``torch.compiler.cudagraph_mark_step_begin``);
            ``max-autotune`` (benchmarks Triton/GEMM kernel choices while compiling, plus
            CUDA graphs); ``max-autotune-no-cudagraphs``. CUDA graphs apply on CUDA only.
            Not yet measured on a GPU: the presets keep ``default``
            (``benchmarks/official_oasis_gpu.py``, section ``compile``, measures each).
        init_from: warm start: a training checkpoint (``.pt``) whose generator weights a new
            run starts from (e.g. the lower-resolution CRN run: CQFIO/PhotographicImageSynthesis
            ``demo_512p.py`` restores ``result_256p``). Tensors are matched by name and must
            agree in shape; a checkpoint tensor the model lacks is an error, a model tensor the
            checkpoint lacks (a new module) keeps its fresh initialisation
            (:func:`semsynth.model.warm_start.warm_start`). Read when a fresh run starts, never
            by ``--resume``; a missing file stops the start with its path. ``None``: no warm start.
        init_skip: generator name prefixes (``to_rgb``, ``refine.7``) *not* loaded by
            ``init_from`` (a layer whose shape changed, e.g. CRN's output convolution). Only
            with ``init_from``.
        freeze: generator name prefixes whose parameters are never trained: ``requires_grad``
            off and left out of the optimizer (:meth:`semsynth.methods.base.Method.freeze_generator`;
            CRN 1024p trains only its last two modules). A prefix matches whole dotted
            components (``refine.1`` is not ``refine.10``); one that matches no parameter, or a
            list that freezes every parameter, is an error when the model is built.
        ema: see :class:`EMAConfig`.
    """

    batch_size: int = 4
    max_steps: int = 1000
    max_minutes: Optional[float] = None
    lr_g: float = 1e-4
    lr_d: float = 4e-4
    betas: Tuple[float, float] = (0.0, 0.999)
    log_every: int = 10
    sample_every: int = 500
    checkpoint_every: int = 1000
    latest_every: int = 100
    grid_labels: int = 4
    grid_samples: int = 3
    device: str = "auto"
    threads: int = 0
    channels_last: bool = True
    tensorboard: bool = True
    lr_decay_start: Optional[int] = None
    lr_decay_end: Optional[int] = None
    lr_decay_unit: str = "epoch"
    precision: str = "fp32"
    compile: bool = False
    compile_mode: str = "default"
    init_from: Optional[str] = None
    init_skip: Tuple[str, ...] = ()
    freeze: Tuple[str, ...] = ()
    ema: EMAConfig = field(default_factory=EMAConfig)


#: values of ``eval.vae_latent``
VAE_LATENTS = ("prior", "encode_real")


@dataclass(frozen=True)
class EvalConfig:
    """Evaluation during training, used to select ``checkpoints/best.pt`` on the val split.

    Attributes:
        every: steps between FID evaluations on ``num_images`` val label maps (0 = never).
        num_images: how many val label maps (the first ones sorted by file name).
        seed: base seed of the per-image noise (image i uses seed ``seed + i``).
        vae_latent: the latent of a VAE generator (SPADE/CC-FPSE with ``use_vae``) in the
            evaluation: ``prior`` (z ~ N(0, I) from the image's seed: what a user without a
            reference photo gets) or ``encode_real`` (the official test protocol,
            ``pix2pix_model.py`` ``inference``: z = μ + ε·σ of the encoded *real* photo, ε
            from the image's seed; it sees the ground truth). Diversity always uses ``prior``.
    """

    every: int = 0
    num_images: int = 50
    seed: int = 0
    vae_latent: str = "prior"


@dataclass(frozen=True)
class Config:
    """A whole run. ``model`` holds the method's own frozen config dataclass."""

    method: str = "oasis"
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    model: Any = None
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


def _model_schema(method: str) -> type:
    from semsynth.registry import get_method

    try:
        return get_method(method).config_class
    except KeyError as exc:
        raise ConfigError(str(exc.args[0])) from None


def _resolve(raw: Any, source: str) -> Config:
    """Validate an OmegaConf node/dict against the schemas and build the frozen Config."""
    try:
        node = OmegaConf.create(raw) if not OmegaConf.is_config(raw) else raw
        method = node.get("method", Config.method)
        model_raw = node.get("model", None) or {}
        top = OmegaConf.merge(OmegaConf.structured(Config), {k: v for k, v in node.items() if k != "model"})
        model = OmegaConf.merge(OmegaConf.structured(_model_schema(method)), model_raw)
        top_obj: Config = OmegaConf.to_object(top)  # type: ignore[assignment]
        model_obj = OmegaConf.to_object(model)
    except OmegaConfBaseException as exc:
        msg = str(exc).splitlines()[0]
        key = getattr(exc, "full_key", None)
        raise ConfigError(f"{source}: {msg}" + (f" (key {key!r})" if key else "")) from None
    _check_data_config(top_obj.data, source)
    _check_lr_decay(top_obj.train, source)
    _check_warm_start(top_obj.train, source)
    if top_obj.eval.vae_latent not in VAE_LATENTS:
        raise ConfigError(f"{source}: eval.vae_latent must be one of {', '.join(VAE_LATENTS)}, "
                          f"got {top_obj.eval.vae_latent!r}")
    return replace(top_obj, model=model_obj)


def _check_warm_start(t: TrainConfig, source: str) -> None:
    """``train.init_from`` / ``init_skip`` / ``freeze``: values, and ``init_skip`` only with
    ``init_from``. Whether the prefixes name parameters is checked where the model is built
    (``freeze``) or the checkpoint read (``init_skip``); whether the file exists, when a
    fresh run starts (a stored config must load on machines without it)."""
    if t.init_from is not None and not t.init_from.strip():
        raise ConfigError(f"{source}: train.init_from must be a checkpoint path or null, got {t.init_from!r}")
    if t.init_skip and t.init_from is None:
        raise ConfigError(f"{source}: train.init_skip applies only with train.init_from (it names what the warm "
                          f"start does not load); remove it or set train.init_from")
    for key, prefixes in (("train.init_skip", t.init_skip), ("train.freeze", t.freeze)):
        for p in prefixes:
            if not p or p != p.strip() or p.startswith(".") or p.endswith("."):
                raise ConfigError(f"{source}: {key}: {p!r} is not a module name prefix (e.g. refine.0, to_rgb)")
        if len(set(prefixes)) != len(prefixes):
            dup = next(p for p in prefixes if list(prefixes).count(p) > 1)
            raise ConfigError(f"{source}: {key}: {dup!r} is given twice")


def _check_lr_decay(t: TrainConfig, source: str) -> None:
    if t.precision not in PRECISIONS:
        raise ConfigError(f"{source}: train.precision must be one of {list(PRECISIONS)}, got {t.precision!r}")
    if t.compile_mode not in COMPILE_MODES:
        raise ConfigError(f"{source}: train.compile_mode must be one of {list(COMPILE_MODES)}, "
                          f"got {t.compile_mode!r}")
    if t.lr_decay_unit not in ("epoch", "step"):
        raise ConfigError(f"{source}: train.lr_decay_unit must be epoch or step, got {t.lr_decay_unit!r}")
    if (t.lr_decay_start is None) != (t.lr_decay_end is None):
        raise ConfigError(f"{source}: train.lr_decay_start and train.lr_decay_end go together (got "
                          f"{t.lr_decay_start!r} and {t.lr_decay_end!r})")
    if t.lr_decay_start is None:
        if t.lr_decay_unit != "epoch":
            raise ConfigError(f"{source}: train.lr_decay_unit applies only with train.lr_decay_start/end")
        return
    if not 0 <= t.lr_decay_start < t.lr_decay_end:
        raise ConfigError(f"{source}: train.lr_decay_start must be >= 0 and < train.lr_decay_end (got "
                          f"{t.lr_decay_start} and {t.lr_decay_end})")


def _check_data_config(d: DataConfig, source: str) -> None:
    """Values OmegaConf's types cannot express; keys the chosen options ignore are errors."""
    if not (isinstance(d.cache, bool) or d.cache == "auto"):
        raise ConfigError(f"{source}: data.cache must be true, false or auto, got {d.cache!r}")
    if d.cache_limit_gb is not None:
        if d.cache != "auto":
            raise ConfigError(f"{source}: data.cache_limit_gb applies to data.cache: auto only (data.cache is "
                              f"{d.cache!r}); remove it or set data.cache=auto")
        if not d.cache_limit_gb >= 0:
            raise ConfigError(f"{source}: data.cache_limit_gb must be >= 0, got {d.cache_limit_gb}")
    if not ((isinstance(d.num_workers, int) and not isinstance(d.num_workers, bool) and d.num_workers >= 0)
            or d.num_workers == "auto"):
        raise ConfigError(f"{source}: data.num_workers must be an integer >= 0 or auto, got {d.num_workers!r}")
    if d.check_workers < 0:
        raise ConfigError(f"{source}: data.check_workers must be >= 0 (0 = all CPUs), got {d.check_workers}")


def _given_keys(node: Any, prefix: str = "") -> list[str]:
    """Dotted leaf keys present in a YAML/``--set`` node (``data.options`` counts as a leaf)."""
    out: list[str] = []
    for k, v in node.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v and key != "data.options":
            out.extend(_given_keys(v, key + "."))
        else:
            out.append(key)
    return out


def ignored_key_prefix(key: str, ignored: dict[str, str]) -> str | None:
    """The entry of ``ignored`` (a method's ``ignored_keys``) that covers dotted ``key``."""
    for prefix in ignored:
        if key == prefix or key.startswith(prefix + "."):
            return prefix
    return None


def flat_keys(d: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v and key != "data.options":
            out.update(flat_keys(v, key + "."))
        else:
            out[key] = v
    return out


def _check_ignored_keys(given: Sequence[str], cfg: Config, source: str) -> None:
    """Reject keys that the chosen options ignore (the method's ``ignored_keys``) when they
    are given a value other than their default (a run folder's ``config.yaml`` holds every
    key at its value, ignored ones at their defaults: it loads back)."""
    from semsynth.registry import get_method

    ignored = get_method(cfg.method).ignored_keys(cfg)
    if not ignored:
        return
    values = flat_keys(config_to_dict(cfg))
    defaults = flat_keys(config_to_dict(_resolve({"method": cfg.method}, "<defaults>")))
    hits: dict[str, list[str]] = {}
    for key in given:
        prefix = ignored_key_prefix(key, ignored)
        if prefix is not None and values.get(key) != defaults.get(key):
            hits.setdefault(prefix, []).append(key)
    if hits:
        parts = [f"{', '.join(keys)} {'is' if len(keys) == 1 else 'are'} set but {ignored[p]}"
                 for p, keys in hits.items()]
        raise ConfigError(f"{source}: " + "; ".join(parts) + " (remove the key(s))")


def load_config(path: str | os.PathLike | None = None, overrides: Sequence[str] = ()) -> Config:
    """Load a YAML config file and apply dotted ``key=value`` overrides.

    Args:
        path: YAML file; ``None`` starts from the defaults.
        overrides: e.g. ``["train.max_steps=10", "model.generator.z_dim=32"]``.

    Returns:
        The validated, frozen :class:`Config`.

    Raises:
        ConfigError: unreadable file, unknown key, value of the wrong type, unknown method,
            or a key the chosen options ignore set to a value other than its default (the
            method's ``ignored_keys``, with the reason); the message names the file (or
            ``--set``) and the key.
    """
    source = str(path) if path is not None else "<defaults>"
    try:
        base = OmegaConf.load(path) if path is not None else OmegaConf.create({})
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except Exception as exc:  # yaml syntax errors: one line, with the position
        mark = getattr(exc, "problem_mark", None)
        what = getattr(exc, "problem", None) or (str(exc).splitlines() or [type(exc).__name__])[0]
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise ConfigError(f"{source}: cannot parse YAML: {what}{where}") from None
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected key=value")
    try:
        merged = OmegaConf.merge(base, OmegaConf.from_dotlist(list(overrides)))
    except OmegaConfBaseException as exc:
        raise ConfigError(f"--set {list(overrides)}: {exc}") from None
    source = source if not overrides else f"{source} with --set {' '.join(overrides)}"
    cfg = _resolve(merged, source)
    _check_ignored_keys(_given_keys(OmegaConf.to_container(merged)), cfg, source)
    return cfg


def config_to_dict(cfg: Config) -> dict:
    """Plain nested dict (lists for tuples) of a Config, for YAML, JSON and checkpoints."""

    def conv(obj: Any) -> Any:
        if is_dataclass(obj):
            return {f.name: conv(getattr(obj, f.name)) for f in fields(obj)}
        if isinstance(obj, (list, tuple)):
            return [conv(v) for v in obj]
        if isinstance(obj, dict):
            return {k: conv(v) for k, v in obj.items()}
        return obj

    return conv(cfg)


def config_from_dict(data: dict, source: str = "<checkpoint>") -> Config:
    """Inverse of :func:`config_to_dict`, with :func:`load_config`'s validation of keys and
    types (keys the chosen options ignore are not checked: a stored config holds all keys)."""
    return _resolve(data, source)


def config_to_yaml(cfg: Config) -> str:
    """The YAML text of a Config (what ``config.yaml`` in a run folder holds)."""
    return OmegaConf.to_yaml(OmegaConf.create(config_to_dict(cfg)))


def save_config(cfg: Config, path: str | os.PathLike) -> None:
    """Write ``cfg`` as YAML to ``path`` atomically."""
    atomic_write_bytes(path, config_to_yaml(cfg).encode())


def cache_root() -> Path:
    """semsynth's cache folder: ``$SEMSYNTH_CACHE``, default ``~/.cache/semsynth`` (read at
    call time, so tests may set the variable). FID statistics live in ``fid/``, data-check
    manifests in ``data_check/``."""
    return Path(os.environ.get("SEMSYNTH_CACHE", Path.home() / ".cache" / "semsynth"))


def data_root(cfg: DataConfig, default_folder: str) -> Path:
    """The dataset folder: ``cfg.root`` if set, else ``$SEMSYNTH_DATA/default_folder``.

    ``SEMSYNTH_DATA`` defaults to ``../shared/datasets`` relative to the current folder
    (or, if that does not exist, to the repository's sibling ``shared/`` folder).
    """
    if cfg.root:
        return Path(os.path.expanduser(cfg.root))
    env = os.environ.get("SEMSYNTH_DATA")
    if env:
        return Path(os.path.expanduser(env)) / default_folder
    here = Path("../shared/datasets") / default_folder
    if not here.exists():  # run from elsewhere than the repository root (editable install)
        repo_guess = Path(__file__).resolve().parents[2] / ".." / "shared" / "datasets" / default_folder
        if repo_guess.exists():
            return repo_guess.resolve()
    return here
