"""Checkpoints: the full training state, written atomically, and trained models loaded back.

* :class:`TrainingState` — what a checkpoint holds, typed: ``config`` (plain dict),
  ``dataset_info``, ``method`` (G and D state dict), ``ema`` (EMA generator state dict),
  ``optimizers`` (one Adam state dict per phase), ``step``, ``images_seen``,
  ``elapsed_seconds``, ``rng`` (torch, numpy, Python and training-RNG states) and ``best``
  (checkpoint-selection record). On disk it is a ``torch.save`` dict of these keys plus
  ``format``, written to a temp file in the same folder and then renamed, so a run killed
  at any moment leaves the previous complete checkpoint.
* :class:`TrainedModel` / :func:`load_trained` — one generator ready to sample, from a
  checkpoint or an export folder alike, with its config, label space and step; the one
  place that refuses NaN/inf weights. The Sampler, export, the web editor and evaluation
  load through it; only the generator is built (no discriminator, no VGG/backbone weights).

Reading runs no code from the file: a checkpoint holds only tensors, numbers, strings,
``None`` and lists/tuples/dicts of them (the RNG states as tensors, the config and
``DatasetInfo`` as plain dicts), and :func:`load_checkpoint` reads it with
``torch.load(weights_only=True)``, PyTorch's restricted unpickler, which refuses any other
Python global. Format v1 files (written before this) stored NumPy and Python RNG state
objects and are refused with the one-line converter,
:func:`convert_checkpoint` (``semsynth convert-checkpoint OLD NEW``), which reads them with
the same restricted unpickler plus the NumPy array globals of their RNG state.
"""

from __future__ import annotations

import io
import os
import pickle
import random
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from semsynth.config import Config, config_from_dict, config_to_dict, flat_keys, ignored_key_prefix
from semsynth.fileio import atomic_write_bytes
from semsynth.types import ConfigError, DatasetInfo

FORMAT = "semsynth-checkpoint-v2"
OLD_FORMATS = ("semsynth-checkpoint-v1",)

# Config keys that may differ between a checkpoint and the config used to resume it:
# they change how long and how verbosely a run goes, never what it computes.
RESUMABLE_KEYS = (
    "train.max_steps", "train.max_minutes", "train.log_every", "train.sample_every",
    "train.checkpoint_every", "train.latest_every", "train.device", "train.threads", "train.channels_last",
    "train.compile", "train.compile_mode",
    "train.grid_labels", "train.grid_samples", "train.tensorboard", "data.num_workers", "data.cache", "data.cache_limit_gb",
    "data.check_workers", "data.root",
    "eval.every", "eval.num_images",
)


@dataclass
class TrainingState:
    """Everything a run needs to continue bit-exactly: what :func:`save_checkpoint` writes.

    Attributes:
        config: the run :class:`~semsynth.config.Config` as a plain dict.
        dataset_info: the label space, :meth:`DatasetInfo.to_dict`.
        method: the method's state dict (G and D, ``generator.*`` / ``discriminator.*``).
        ema: the EMA generator's state dict (BatchNorm statistics refreshed when written).
        optimizers: one optimizer state dict per phase name.
        step, images_seen: training progress (steps done, images seen over all processes).
        elapsed_seconds: training wall time so far (s).
        rng: :func:`capture_rng`'s RNG states.
        best: the checkpoint-selection record (:mod:`semsynth.eval.selection`), or ``{}``.
        precision: the precision the steps ran in (``train.precision`` with ``auto``
            resolved: ``fp32`` or ``bf16``); ``None`` in files written before it was recorded.

    The data order is a function of (seed, step) alone and the augmentations of (seed,
    epoch, index): there is no iterator state to save.
    """

    config: dict
    dataset_info: dict
    method: dict
    ema: dict
    optimizers: dict
    step: int
    images_seen: int
    elapsed_seconds: float
    rng: dict
    best: dict = field(default_factory=dict)
    precision: Optional[str] = None

    def to_dict(self) -> dict[str, Any]:
        """The plain dict that is saved (without ``format``)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, ckpt: dict, path: str | os.PathLike = "<checkpoint>") -> "TrainingState":
        """From a loaded checkpoint dict (extra keys of older files are ignored).

        Raises:
            ConfigError: a key missing (names the file and the key).
        """
        missing = [f.name for f in fields(cls) if f.name not in ckpt and f.name not in ("best", "precision")]
        if missing:
            raise ConfigError(f"{path}: not a training checkpoint: no {', '.join(missing)}")
        kwargs = {f.name: ckpt[f.name] for f in fields(cls) if f.name in ckpt}
        kwargs["best"] = dict(ckpt.get("best") or {})
        return cls(**kwargs)

    def run_config(self, source: str | os.PathLike = "<checkpoint>") -> Config:
        """The frozen Config (:func:`semsynth.config.config_from_dict`; errors name ``source``)."""
        return config_from_dict(self.config, str(source))


def save_checkpoint(path: str | os.PathLike, state: TrainingState) -> None:
    """Serialise ``state`` (adds ``format``) and write it atomically to ``path``.

    Raises:
        DiskFull: no space left (the previous file at ``path`` is intact).
    """
    buf = io.BytesIO()
    torch.save({"format": FORMAT, **state.to_dict()}, buf)
    atomic_write_bytes(path, buf.getvalue())


def load_training_state(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> TrainingState:
    """:func:`load_checkpoint` as a :class:`TrainingState` (same errors)."""
    return TrainingState.from_dict(load_checkpoint(path, map_location), path)


def nonfinite_tensors(state: dict[str, Any]) -> list[str]:
    """Names of the floating-point tensors of a state dict that hold NaN or inf."""
    return [k for k, v in state.items()
            if isinstance(v, torch.Tensor) and v.is_floating_point() and not bool(torch.isfinite(v).all())]


class UnsafeCheckpoint(ConfigError):
    """A checkpoint file that holds Python objects beyond tensors and plain data (reading it
    could run code): refused, never unpickled. Format v1 checkpoints raise it too."""


def _unsafe_global(exc: Exception) -> str | None:
    """The Python global a weights-only unpickler refused (``"module.name"``), or ``None``."""
    m = re.search(r"Unsupported global: GLOBAL (\S+)", str(exc))
    if m:
        return m.group(1)
    if "weights_only" in str(exc) or "Weights only load failed" in str(exc):
        return "a non-tensor Python object"
    return None


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint without running code from it (``torch.load(weights_only=True)``).

    Raises:
        FileNotFoundError: no file at ``path``.
        ConfigError: not a semsynth checkpoint, or unreadable/truncated (names the file).
        UnsafeCheckpoint: (a ConfigError) an old (v1) checkpoint, or a file holding Python
            objects other than tensors and plain data (a pickle that could run code): the
            message names the file, the refused global and the converter command.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        refused = _unsafe_global(exc)
        if refused is None:
            raise ConfigError(f"{path}: cannot read checkpoint (UnpicklingError: {exc})") from None
        raise UnsafeCheckpoint(
            f"{path}: refused: the file holds Python objects beyond tensors and plain data ({refused}), "
            f"and reading them could run code. If it is a checkpoint written by semsynth before format v2, "
            f"convert it once with (reads it without running code): semsynth convert-checkpoint {path} NEW.pt") from None
    except Exception as exc:
        raise ConfigError(f"{path}: cannot read checkpoint ({type(exc).__name__}: {exc})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        fmt = ckpt.get("format") if isinstance(ckpt, dict) else type(ckpt).__name__
        if fmt in OLD_FORMATS:
            raise UnsafeCheckpoint(f"{path}: an old checkpoint ({fmt}); convert it once with: "
                              f"semsynth convert-checkpoint {path} NEW.pt")
        raise ConfigError(f"{path}: not a semsynth checkpoint (format {fmt})")
    return ckpt


def _v1_numpy_globals() -> list:
    """The globals of a pickled NumPy uint32 array (the v1 checkpoints' NumPy RNG keys)."""
    import importlib

    try:  # NumPy >= 2
        multiarray = importlib.import_module("numpy._core.multiarray")
    except ImportError:  # NumPy 1.x
        multiarray = importlib.import_module("numpy.core.multiarray")
    return [multiarray._reconstruct, np.ndarray, np.dtype, type(np.dtype(np.uint32))]


_V1_NUMPY_GLOBALS = _v1_numpy_globals()


def convert_checkpoint(old: str | os.PathLike, new: str | os.PathLike) -> dict[str, Any]:
    """Rewrite a format-v1 checkpoint as v2, readable with ``weights_only=True``.

    The old file is read with PyTorch's weights-only unpickler plus exactly the NumPy globals
    a v1 checkpoint's RNG state needs (``ndarray``, ``dtype``, the uint32 dtype class and
    ``_reconstruct``), so converting runs no code from the file either: anything else is
    refused. The NumPy/Python RNG state objects become tensors (as :func:`capture_rng`
    writes them); everything else is copied. The result is verified by reading it back
    weights-only before it replaces ``new`` (written atomically; nothing is written on error;
    ``new`` may be ``old``).

    Returns:
        The converted checkpoint dict.

    Raises:
        FileNotFoundError: ``old`` does not exist.
        UnsafeCheckpoint: ``old`` holds other Python objects (names the global).
        ConfigError: ``old`` is not a v1/v2 semsynth checkpoint, or still holds objects
            that are not plain data after conversion (names them).
    """
    old, new = Path(old), Path(new)
    if not old.is_file():
        raise FileNotFoundError(f"checkpoint not found: {old}")
    try:
        with torch.serialization.safe_globals(_V1_NUMPY_GLOBALS):
            ckpt = torch.load(old, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise UnsafeCheckpoint(f"{old}: refused: holds Python objects beyond tensors, plain data and the NumPy "
                               f"arrays of a v1 checkpoint ({_unsafe_global(exc) or exc}); nothing written") from None
    except Exception as exc:
        raise ConfigError(f"{old}: cannot read checkpoint ({type(exc).__name__}: {exc})") from None
    fmt = ckpt.get("format") if isinstance(ckpt, dict) else type(ckpt).__name__
    if fmt not in OLD_FORMATS + (FORMAT,):
        raise ConfigError(f"{old}: not a semsynth checkpoint (format {fmt})")
    ckpt = dict(ckpt)
    ckpt.pop("format")
    if "rng" in ckpt:
        ckpt["rng"] = _rng_as_tensors(ckpt["rng"])
    buf = io.BytesIO()
    torch.save({"format": FORMAT, **ckpt}, buf)
    try:
        torch.load(io.BytesIO(buf.getvalue()), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise ConfigError(f"{old}: still holds objects that are not plain data after conversion "
                          f"({_unsafe_global(exc) or exc}); nothing written") from None
    atomic_write_bytes(new, buf.getvalue())
    return {"format": FORMAT, **ckpt}


def checkpoint_config(ckpt: dict, path: str | os.PathLike = "<checkpoint>") -> Config:
    """The frozen Config stored in a checkpoint."""
    return config_from_dict(ckpt["config"], str(path))


def config_differences(saved: Config, current: Config, allowed: tuple[str, ...] = RESUMABLE_KEYS) -> list[str]:
    """Dotted keys whose values differ between two configs, ignoring ``allowed`` keys and,
    for the same method, keys that ``current``'s options ignore (the method's
    ``ignored_keys``: a value there computes nothing, e.g. CRN's ``train.lr_d``).

    Returns:
        ``["key: saved -> current", ...]``, empty when the configs match.
    """
    from semsynth.registry import get_method

    a, b = flat_keys(config_to_dict(saved)), flat_keys(config_to_dict(current))
    ignored = get_method(current.method).ignored_keys(current) if saved.method == current.method else {}
    diffs = []
    for key in sorted(set(a) | set(b)):
        if key in allowed or ignored_key_prefix(key, ignored) is not None:
            continue
        if a.get(key) != b.get(key):
            diffs.append(f"{key}: {a.get(key)!r} -> {b.get(key)!r}")
    return diffs


def _numpy_state_as_tensors(state: tuple | dict) -> dict[str, Any]:
    """``np.random.get_state()`` (legacy tuple) as plain data: the 624 MT19937 words as int64."""
    if isinstance(state, dict):
        return state
    name, keys, pos, has_gauss, cached = state
    return {"bit_generator": str(name), "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos), "has_gauss": int(has_gauss), "cached_gaussian": float(cached)}


def _python_state_as_tensors(state: tuple | dict) -> dict[str, Any]:
    """``random.getstate()`` as plain data: version, the 625 words as int64, ``gauss_next``."""
    if isinstance(state, dict):
        return state
    version, internal, gauss_next = state
    return {"version": int(version), "internal": torch.tensor(internal, dtype=torch.int64),
            "gauss_next": None if gauss_next is None else float(gauss_next)}


def _rng_as_tensors(rng: dict[str, Any]) -> dict[str, Any]:
    out = dict(rng)
    out["numpy"] = _numpy_state_as_tensors(rng["numpy"])
    out["python"] = _python_state_as_tensors(rng["python"])
    return out


def capture_rng(train_rng: torch.Generator) -> dict[str, Any]:
    """Every RNG state a run depends on (torch CPU/CUDA, numpy, Python, the training RNG), as
    tensors and plain numbers only (so the checkpoint loads with ``weights_only=True``).

    Returns:
        ``{"torch": uint8 tensor, "numpy": {"bit_generator", "keys" int64 (624,), "pos",
        "has_gauss", "cached_gaussian"}, "python": {"version", "internal" int64 (625,),
        "gauss_next"}, "train": uint8 tensor[, "cuda": [uint8 tensor per GPU]]}``.
    """
    state = {
        "torch": torch.get_rng_state(),
        "numpy": _numpy_state_as_tensors(np.random.get_state()),
        "python": _python_state_as_tensors(random.getstate()),
        "train": train_rng.get_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any], train_rng: torch.Generator) -> None:
    """Inverse of :func:`capture_rng` (bit-exact: the next draws of every RNG repeat)."""
    torch.set_rng_state(state["torch"])
    npst = state["numpy"]
    np.random.set_state((npst["bit_generator"], npst["keys"].numpy().astype(np.uint32), npst["pos"],
                         npst["has_gauss"], npst["cached_gaussian"]))
    py = state["python"]
    random.setstate((py["version"], tuple(int(v) for v in py["internal"].tolist()), py["gauss_next"]))
    train_rng.set_state(state["train"])
    if "cuda" in state and torch.cuda.is_available():  # as many GPUs as both runs have
        for i, s in enumerate(state["cuda"][: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(s, i)


@dataclass(frozen=True)
class TrainedModel:
    """A trained generator ready to sample, with what it was trained on.

    Attributes:
        cfg: the run's frozen Config.
        info: the label space it was trained on.
        generator: the generator (a :class:`semsynth.methods.base.Generator`) on the CPU,
            in eval mode, weights finite.
        step, images_seen: training progress when it was saved (0 for imported models).
        ema: whether ``generator`` holds the EMA weights.
        source: the checkpoint file or export folder it came from.
    """

    cfg: Config
    info: DatasetInfo
    generator: torch.nn.Module
    step: int
    images_seen: int
    ema: bool
    source: Path


def load_trained(path: str | os.PathLike, use_ema: bool = True) -> TrainedModel:
    """Load the generator of a training checkpoint (``.pt``) or an export folder.

    ``use_ema=True``: the EMA generator, whose BatchNorm statistics the training loop
    refreshed just before writing the checkpoint. ``use_ema=False``: the raw generator with
    the BatchNorm running statistics of its own training passes. An export folder holds
    one generator (its ``export.json`` says which) and is loaded as is.

    Raises:
        FileNotFoundError: nothing at ``path``.
        ValueError: ``use_ema=False`` with an export folder.
        ConfigError: an unreadable, unsafe or foreign file, a config that no longer
            validates, or NaN/inf generator weights (names the file and a tensor).
    """
    from semsynth.model.build import build_generator
    from semsynth.model.export import load_export

    path = Path(path)
    if path.is_dir():
        if not use_ema:
            raise ValueError(f"{path}: an export holds one generator; use_ema=False applies to checkpoints")
        meta, state = load_export(path)
        raw = {"config": meta["config"], "dataset_info": meta.get("dataset_info"), "step": meta["step"],
               "images_seen": meta["images_seen"]}
        ema = bool(meta.get("ema", True))
    else:
        raw = load_checkpoint(path, map_location="cpu")
        ema = use_ema
        if use_ema:
            state = raw["ema"]
        else:
            state = {k[len("generator."):]: v for k, v in raw["method"].items() if k.startswith("generator.")}
    cfg = checkpoint_config(raw, path)
    info = DatasetInfo.from_dict(raw["dataset_info"]) if raw.get("dataset_info") else _info_of(cfg)
    generator = build_generator(cfg, info)
    generator.load_state_dict(state)
    bad = nonfinite_tensors(generator.state_dict())
    if bad:
        raise ConfigError(f"{path}: the generator has non-finite weights (NaN/inf) in {len(bad)} tensor(s), "
                          f"e.g. {bad[0]}; it cannot be used (a diverged run? use an earlier step_*.pt)")
    return TrainedModel(cfg, info, generator.eval(), int(raw["step"]), int(raw.get("images_seen", 0)), ema, path)


def _info_of(cfg: Config) -> DatasetInfo:
    """The label space of a config (checkpoints older than ``dataset_info``)."""
    from semsynth.data import dataset_info

    return dataset_info(cfg.data)
