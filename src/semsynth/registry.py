"""Name → class registries of datasets and methods.

A new method registers itself with :func:`register_method` (see ``methods/oasis``); a new
dataset with :func:`register_dataset` (see ``data/``). Lookups import the built-in
modules lazily so that ``import semsynth`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Callable, TypeVar

T = TypeVar("T")

_METHODS: dict[str, type] = {}
_DATASETS: dict[str, Callable] = {}

_BUILTIN_METHOD_MODULES = ("semsynth.methods.oasis.method", "semsynth.methods.spade.method",
                           "semsynth.methods.cc_fpse.method", "semsynth.methods.crn.method",
                           "semsynth.methods.painter")
_BUILTIN_DATA_MODULES = ("semsynth.data",)


def register_method(name: str) -> Callable[[T], T]:
    """Class decorator: register a :class:`semsynth.methods.base.Method` under ``name``."""

    def deco(cls: T) -> T:
        _METHODS[name] = cls  # type: ignore[assignment]
        return cls

    return deco


def register_dataset(name: str) -> Callable[[T], T]:
    """Decorator: register a dataset class (or factory) under ``name``."""

    def deco(obj: T) -> T:
        _DATASETS[name] = obj  # type: ignore[assignment]
        return obj

    return deco


def _load_builtins(modules: tuple[str, ...]) -> None:
    for mod in modules:
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as exc:
            if exc.name != mod:  # a real import error inside the module
                raise


def get_method(name: str) -> type:
    """The method class registered under ``name``; KeyError listing the known names."""
    if name not in _METHODS:
        _load_builtins(_BUILTIN_METHOD_MODULES)
    if name not in _METHODS:
        raise KeyError(f"unknown method {name!r}; known: {sorted(_METHODS)}")
    return _METHODS[name]


def registered_methods() -> list[str]:
    """Names of every registered method (the built-in ones loaded first), sorted."""
    _load_builtins(_BUILTIN_METHOD_MODULES)
    return sorted(_METHODS)


def get_dataset(name: str) -> Callable:
    """The dataset class registered under ``name``; KeyError listing the known names."""
    if name not in _DATASETS:
        _load_builtins(_BUILTIN_DATA_MODULES)
    if name not in _DATASETS:
        raise KeyError(f"unknown dataset {name!r}; known: {sorted(_DATASETS)}")
    return _DATASETS[name]
