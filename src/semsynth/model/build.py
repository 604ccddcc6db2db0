"""Building a method from a config, and the device it runs on.

The one place that turns a :class:`~semsynth.config.Config` into networks: training
(:mod:`semsynth.train.loop`), loading a trained model (:mod:`semsynth.model.checkpoint`),
export, the official importers, the benchmarks and the tests all call :func:`build_method`.
"""

from __future__ import annotations

from pathlib import Path

import torch

from semsynth.config import Config
from semsynth.registry import get_method
from semsynth.types import DatasetInfo

__all__ = ["build_generator", "build_method", "compile_networks", "compile_unavailable", "configure_backends", "native_bf16",
           "resolve_precision", "select_device"]


def select_device(name: str) -> torch.device:
    """``auto`` → CUDA if available else CPU; otherwise ``torch.device(name)``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def configure_backends(device: torch.device, threads: int) -> None:
    """What every training process sets before it builds its networks: ``threads`` CPU
    threads for torch (0 = torch's default), and on CUDA TF32 convolutions/matmuls and tuned
    (cudnn.benchmark) kernels. Process-wide torch settings; used by :class:`semsynth.train.loop.Trainer` and
    ``benchmarks/train_step.py``."""
    if threads > 0:
        torch.set_num_threads(threads)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True


def build_method(cfg: Config, info: DatasetInfo):
    """Instantiate the method of ``cfg`` for the label space ``info``.

    Returns:
        The :class:`semsynth.methods.base.Method` registered as ``cfg.method``, built from
        ``cfg.model`` at ``cfg.data.height × cfg.data.width`` (on the CPU, in train mode),
        with ``cfg.train.freeze``'s generator parameters frozen
        (:meth:`~semsynth.methods.base.Method.freeze_generator`).

    Raises:
        ConfigError: an unknown method, model settings the method rejects, or a
            ``train.freeze`` prefix that names no generator parameter.
    """
    cls = get_method(cfg.method)
    method = cls(cfg.model, info, cfg.data.height, cfg.data.width)
    if cfg.train.freeze:
        method.freeze_generator(cfg.train.freeze)
    return method


def build_generator(cfg: Config, info: DatasetInfo):
    """The generator of ``cfg``'s method alone (:meth:`Method.build_generator`): for loading
    trained weights into, without building the discriminator or loss networks.

    Returns:
        A :class:`semsynth.methods.base.Generator` on the CPU.

    Raises:
        ConfigError: an unknown method, or generator settings the method rejects.
    """
    return get_method(cfg.method).build_generator(cfg.model, info, cfg.data.height, cfg.data.width)


def compile_networks(method, backend: str = "inductor", mode: str = "default") -> list[str]:
    """``torch.compile`` each network of ``method`` in place (``train.compile``): every direct
    sub-module with parameters (generator, discriminator, ...) gets a compiled ``__call__``
    (``nn.Module.compile``); parameters, buffers and state-dict keys are unchanged, so
    checkpoints, the EMA and resumes are as without. Compile after the EMA copy is made (the
    copy, used for sampling, stays eager) and before a DDP wrap.

    Args:
        method: a :class:`semsynth.methods.base.Method`.
        backend: ``torch.compile``'s backend (``inductor``; tests use ``eager``).
        mode: ``train.compile_mode`` (:data:`semsynth.config.COMPILE_MODES`), Inductor's
            only: with another backend it must be ``default``. With CUDA graphs
            (:func:`uses_cudagraphs`) the caller marks each training step's start.

    Raises:
        ValueError: an unknown ``mode``, or a mode other than ``default`` with a backend
            other than ``inductor``.

    Returns:
        The names of the compiled sub-modules.
    """
    from semsynth.config import COMPILE_MODES

    if mode not in COMPILE_MODES:
        raise ValueError(f"compile_networks: mode must be one of {list(COMPILE_MODES)}, got {mode!r}")
    if mode != "default" and backend != "inductor":
        raise ValueError(f"compile_networks: mode {mode!r} is Inductor's; backend {backend!r} takes none")
    kwargs = {"backend": backend} if mode == "default" else {"backend": backend, "mode": mode}
    names = []
    for name, child in method.named_children():
        if any(True for _ in child.parameters()):
            child.compile(**kwargs)
            names.append(name)
    return names


def uses_cudagraphs(compile_: bool, mode: str, device: torch.device) -> bool:
    """Whether compiled networks replay CUDA graphs: ``train.compile`` on, a ``compile_mode``
    with CUDA graphs (``reduce-overhead``, ``max-autotune``) and a CUDA device. The training
    loop then calls ``torch.compiler.cudagraph_mark_step_begin()`` before each step, so that a
    step's graph outputs may be overwritten by the next step's replay (PyTorch's CUDA graph
    trees cannot tell a new training iteration from a second call in the same one)."""
    return compile_ and mode in ("reduce-overhead", "max-autotune") and device.type == "cuda"


def native_bf16(device: torch.device, cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether ``device`` computes bf16 natively: a CUDA GPU with bf16 tensor cores (compute
    capability ≥ 8.0: A100, H100, RTX 30xx …), or a CPU whose flags (Linux ``cpuinfo``)
    include ``avx512_bf16`` or ``amx_bf16``. Elsewhere bf16 is emulated and slow."""
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.get_device_capability(device)[0] >= 8
    if device.type != "cpu":
        return False
    try:
        flags = next((line for line in Path(cpuinfo).read_text().splitlines() if line.startswith("flags")), "")
    except OSError:
        return False
    return bool({"avx512_bf16", "amx_bf16"} & set(flags.split()))


def resolve_precision(precision: str, device: torch.device) -> str:
    """``train.precision`` for ``device``: ``auto`` → ``bf16`` if :func:`native_bf16`, else
    ``fp32``; ``fp32`` and ``bf16`` as given."""
    if precision == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    return precision


def compile_unavailable(device: torch.device, distributed: bool) -> str | None:
    """Why ``train.compile`` is not applied on ``device`` (``None``: it is). Under torchrun it
    is off: DDP around compiled networks with SyncBatchNorm inside is untested here and has
    open PyTorch issues (graph breaks at each SyncBatchNorm, pytorch/pytorch#161302; errors,
    #107372). On a CUDA GPU below compute capability 7.0 Triton, Inductor's code generator,
    does not run."""
    if distributed:
        return "train.compile applies to one-process runs; under torchrun it is off (DDP + SyncBatchNorm)"
    if device.type == "cuda" and torch.cuda.is_available() and torch.cuda.get_device_capability(device)[0] < 7:
        return f"train.compile needs compute capability >= 7.0 (Triton); {device} has less: it is off"
    return None
