"""Warm start: a new run's generator starts from another run's checkpoint (``train.init_from``).

The case it is for is CRN's resolution ladder (CQFIO/PhotographicImageSynthesis): the 512p
script builds one more refinement module and, with no 512p checkpoint yet, restores every
generator variable from ``result_256p`` except those of the new module (``demo_512p.py``,
``saver`` over ``g_*`` not ``g_512*``); the 1024p script does the same from ``result_512p``
(``demo_1024p.py``). The old output convolution has no place in the new graph there; in
semsynth's names it is ``to_rgb`` in both models, with another shape, so the presets name it
in ``train.init_skip``.

Rules (strict, so that a wrong file or a wrong architecture stops the start instead of
training half-loaded weights):

* the file is a semsynth training checkpoint of the same method; its raw generator weights
  (``generator.*`` of the ``method`` state dict: what that run was training, not the EMA) are
  read without running code from it (:func:`semsynth.model.checkpoint.load_checkpoint`);
* tensors under a ``train.init_skip`` prefix are not loaded, wherever they are;
* every other checkpoint tensor must exist in the new generator with the same shape;
* a new-generator tensor the checkpoint lacks (an added module) keeps its fresh init;
* at least one tensor is loaded.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import torch

from semsynth.methods.base import has_prefix, module_names
from semsynth.model.checkpoint import load_checkpoint
from semsynth.types import ConfigError

__all__ = ["warm_start"]


def warm_start(generator: torch.nn.Module, path: str | os.PathLike, skip: Sequence[str] = (),
               method: str | None = None, key: str = "train.init_from") -> str:
    """Load the matching generator weights of checkpoint ``path`` into ``generator`` in place.

    Args:
        generator: the freshly built (and initialised) generator of the new run.
        path: a semsynth training checkpoint (``checkpoints/*.pt``).
        skip: dotted name prefixes not loaded (``train.init_skip``), matched by whole
            components (:func:`semsynth.methods.base.has_prefix`).
        method: the new run's method name; the checkpoint's must equal it (``None``: not checked).
        key: the config key named in errors.

    Returns:
        A one-line note for the log: what was loaded, what kept its fresh init.

    Raises:
        ConfigError: no file at ``path`` (names it), an unreadable or foreign file, another
            method, a ``skip`` prefix that names no tensor of either side, a checkpoint tensor
            the generator lacks, or a shape mismatch (names the file, the first such tensor and
            both shapes), or nothing to load.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{key}: no checkpoint at {path} (the lower-resolution run's checkpoints/latest.pt; "
                          f"set {key} to its path)")
    ckpt = load_checkpoint(path)
    src_method = (ckpt.get("config") or {}).get("method")
    if method is not None and src_method != method:
        raise ConfigError(f"{key}: {path} is a {src_method!r} checkpoint; this run trains {method!r}")
    source = {k[len("generator."):]: v for k, v in ckpt.get("method", {}).items() if k.startswith("generator.")}
    if not source:
        raise ConfigError(f"{key}: {path} holds no generator weights")
    target = generator.state_dict()
    for pre in skip:
        if not any(has_prefix(n, pre) for n in (*target, *source)):
            raise ConfigError(f"train.init_skip: {pre!r} names no tensor of the generator or of {path}; the "
                              f"generator's modules are {', '.join(module_names(target))}")

    def skipped(name: str) -> bool:
        return any(has_prefix(name, pre) for pre in skip)

    loaded = {}
    for name, value in source.items():
        if skipped(name):
            continue
        if name not in target:
            raise ConfigError(f"{key}: {path}: generator tensor {name!r} {tuple(value.shape)} has no place in this "
                              f"generator (modules {', '.join(module_names(target))}); the architectures differ "
                              f"beyond added modules, or add its module to train.init_skip")
        if tuple(value.shape) != tuple(target[name].shape):
            raise ConfigError(f"{key}: {path}: generator tensor {name!r} has shape {tuple(value.shape)} there and "
                              f"{tuple(target[name].shape)} here (another label space or width? a layer that "
                              f"changes shape on purpose goes into train.init_skip)")
        loaded[name] = value
    if not loaded:
        raise ConfigError(f"{key}: {path}: no generator tensor to load (all skipped by train.init_skip)")
    generator.load_state_dict({**target, **loaded})
    fresh = [n for n in target if n not in loaded]
    note = (f"{key}: {len(loaded)} generator tensors from {path} ({', '.join(module_names(loaded))})")
    if fresh:
        note += f"; fresh init: {', '.join(module_names(fresh))}"
    return note
