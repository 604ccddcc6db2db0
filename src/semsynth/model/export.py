"""Export a trained generator as safetensors: what a user needs to sample, nothing more.

An export folder holds ``config.yaml`` (the run config), ``export.json`` (format, step,
dataset label space, shard list) and ``generator-NNNNN.safetensors`` shards of the EMA
generator's state dict (BatchNorm statistics refreshed when the checkpoint was written),
each at most ``max_shard_mb``. :func:`semsynth.model.checkpoint.load_trained` loads an export
folder exactly as it loads a checkpoint. Files are written atomically; the folder is
complete only once ``export.json`` exists (written last).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from semsynth.config import config_to_yaml
from semsynth.fileio import atomic_write_bytes
from semsynth.types import ConfigError

EXPORT_FORMAT = "semsynth-export-v1"


def export_generator(checkpoint: str | os.PathLike, out_dir: str | os.PathLike, max_shard_mb: float = 15.0,
                     use_ema: bool = True, half: bool = False) -> Path:
    """Write the (EMA) generator of ``checkpoint`` to ``out_dir``.

    Args:
        checkpoint: a training checkpoint (``.pt``).
        out_dir: export folder (created).
        max_shard_mb: largest shard size in MiB (a single tensor larger than this gets a
            shard of its own).
        use_ema: export the EMA generator (default) or the raw one.
        half: store floating-point tensors as float16 (half the size; loaded back into
            float32 modules, the images differ from the float32 export by ~1e-3).

    Returns:
        The path of ``export.json``.

    Raises:
        ConfigError: unreadable checkpoint, or NaN/inf generator weights (nothing written;
            :func:`semsynth.model.checkpoint.load_trained`).
    """
    from semsynth.model.checkpoint import load_trained

    model = load_trained(checkpoint, use_ema=use_ema)
    return write_export(out_dir, model.cfg, model.generator.state_dict(), model.info.to_dict(), model.step,
                        model.images_seen, max_shard_mb, ema=model.ema, half=half)


def write_export(out_dir: str | os.PathLike, cfg, state: dict[str, torch.Tensor], dataset_info: dict,
                 step: int, images_seen: int, max_shard_mb: float = 15.0, ema: bool = True,
                 half: bool = False, extra: dict | None = None,
                 extra_tensors: dict[str, dict[str, torch.Tensor]] | None = None) -> Path:
    """Write a generator state dict as an export folder (the format :func:`load_export` reads).

    Args:
        out_dir: export folder (created).
        cfg: the run :class:`~semsynth.config.Config` the generator is built from.
        state: the generator's state dict (semsynth key names).
        dataset_info: the label space as a plain dict (``name``, ``class_names``,
            ``palette``, ``ignore_index``).
        step, images_seen: training progress recorded in ``export.json``.
        max_shard_mb: largest shard in MiB (a larger single tensor gets its own shard).
        ema: whether ``state`` is an EMA generator (recorded).
        half: store floating-point tensors as float16.
        extra: more keys for ``export.json`` (e.g. where an imported model came from).
        extra_tensors: other networks to keep beside the generator, ``{name: state dict}``,
            each written as ``<name>.safetensors`` and listed under ``"extra_files"``
            (samplers ignore them).

    Returns:
        The path of ``export.json`` (written last: the folder is complete once it exists).
    """
    from safetensors.torch import save

    out = Path(out_dir)
    if half:
        state = {k: (v.half() if v.is_floating_point() else v) for k, v in state.items()}
    limit = max_shard_mb * 2**20
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for k, v in state.items():
        nbytes = v.numel() * v.element_size()
        if shards[-1] and size + nbytes > limit:
            shards.append({})
            size = 0
        shards[-1][k] = v.detach().contiguous().cpu()
        size += nbytes
    names = []
    for i, shard in enumerate(shards):
        name = f"generator-{i:05d}.safetensors"
        atomic_write_bytes(out / name, save(shard))
        names.append(name)
    extra_files = []
    for name, tensors in (extra_tensors or {}).items():
        atomic_write_bytes(out / f"{name}.safetensors",
                           save({k: v.detach().contiguous().cpu() for k, v in tensors.items()}))
        extra_files.append(f"{name}.safetensors")
    atomic_write_bytes(out / "config.yaml", config_to_yaml(cfg).encode())
    meta = {"format": EXPORT_FORMAT, "step": int(step), "images_seen": int(images_seen),
            "ema": ema, "half": half, "dataset_info": dataset_info, "shards": names}
    if extra_files:
        meta["extra_files"] = extra_files
    meta.update(extra or {})
    atomic_write_bytes(out / "export.json", (json.dumps(meta, indent=1) + "\n").encode())
    return out / "export.json"


def load_export(path: str | os.PathLike) -> tuple[dict, dict[str, torch.Tensor]]:
    """Read an export folder.

    Returns:
        ``(meta, state_dict)``; ``meta["config"]`` holds the run config as a plain dict.

    Raises:
        ConfigError: no ``export.json``, another format, or a missing shard (names the file).
    """
    from omegaconf import OmegaConf
    from safetensors.torch import load_file

    path = Path(path)
    meta_path = path / "export.json"
    if not meta_path.is_file():
        raise ConfigError(f"{path}: not a semsynth export (no export.json)")
    meta = json.loads(meta_path.read_text())
    if meta.get("format") != EXPORT_FORMAT:
        raise ConfigError(f"{meta_path}: unknown export format {meta.get('format')!r}")
    state: dict[str, torch.Tensor] = {}
    for name in meta["shards"]:
        shard = path / name
        if not shard.is_file():
            raise ConfigError(f"{shard}: shard listed in export.json is missing")
        state.update(load_file(str(shard)))
    meta["config"] = OmegaConf.to_container(OmegaConf.load(path / "config.yaml"))
    return meta, state
