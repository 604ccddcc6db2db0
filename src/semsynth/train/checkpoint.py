"""Checkpoints: the full training state, written atomically.

A checkpoint is a ``torch.save`` dict with: ``format``, ``config`` (plain dict),
``dataset_info``, ``method`` (G and D state dict), ``ema`` (EMA generator state dict),
``optimizers`` (one Adam state dict per phase), ``step``, ``images_seen``,
``elapsed_seconds``, ``rng`` (torch, numpy, Python and training-RNG states) and ``best``
(checkpoint-selection record). It is written to a temp file in the same folder, then
renamed, so a run killed at any moment leaves the previous complete checkpoint.
"""

from __future__ import annotations

import io
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from semsynth.config import Config, atomic_write_bytes, config_from_dict, config_to_dict
from semsynth.types import ConfigError

FORMAT = "semsynth-checkpoint-v1"

# Config keys that may differ between a checkpoint and the config used to resume it:
# they change how long and how verbosely a run goes, never what it computes.
RESUMABLE_KEYS = (
    "train.max_steps", "train.max_minutes", "train.log_every", "train.sample_every",
    "train.checkpoint_every", "train.latest_every", "train.device", "train.threads", "train.channels_last",
    "train.grid_labels", "train.grid_samples", "train.tensorboard", "data.num_workers", "data.cache", "data.root",
    "eval.every", "eval.num_images",
)


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> None:
    """Serialise ``state`` (adds ``format``) and write it atomically to ``path``."""
    buf = io.BytesIO()
    torch.save({"format": FORMAT, **state}, buf)
    atomic_write_bytes(path, buf.getvalue())


def nonfinite_tensors(state: dict[str, Any]) -> list[str]:
    """Names of the floating-point tensors of a state dict that hold NaN or inf."""
    return [k for k, v in state.items()
            if isinstance(v, torch.Tensor) and v.is_floating_point() and not bool(torch.isfinite(v).all())]


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint.

    Raises:
        FileNotFoundError: no file at ``path``.
        ConfigError: not a semsynth checkpoint, or unreadable/truncated (names the file).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as exc:
        raise ConfigError(f"{path}: cannot read checkpoint ({type(exc).__name__}: {exc})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise ConfigError(f"{path}: not a semsynth checkpoint (format {ckpt.get('format') if isinstance(ckpt, dict) else type(ckpt).__name__})")
    return ckpt


def checkpoint_config(ckpt: dict, path: str | os.PathLike = "<checkpoint>") -> Config:
    """The frozen Config stored in a checkpoint."""
    return config_from_dict(ckpt["config"], str(path))


def _flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v and key != "data.options":
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def config_differences(saved: Config, current: Config, allowed: tuple[str, ...] = RESUMABLE_KEYS) -> list[str]:
    """Dotted keys whose values differ between two configs, ignoring ``allowed`` keys.

    Returns:
        ``["key: saved -> current", ...]``, empty when the configs match.
    """
    a, b = _flatten(config_to_dict(saved)), _flatten(config_to_dict(current))
    diffs = []
    for key in sorted(set(a) | set(b)):
        if key in allowed:
            continue
        if a.get(key) != b.get(key):
            diffs.append(f"{key}: {a.get(key)!r} -> {b.get(key)!r}")
    return diffs


def capture_rng(train_rng: torch.Generator) -> dict[str, Any]:
    """Every RNG state a run depends on (torch CPU/CUDA, numpy, Python, the training RNG)."""
    state = {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
        "train": train_rng.get_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any], train_rng: torch.Generator) -> None:
    """Inverse of :func:`capture_rng`."""
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    train_rng.set_state(state["train"])
    if "cuda" in state and torch.cuda.is_available():  # as many GPUs as both runs have
        for i, s in enumerate(state["cuda"][: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(s, i)
