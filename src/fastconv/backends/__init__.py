"""Interchangeable implementations of the kernels behind ``fastconv.functional``.

A backend is a module with the functions of ``numpy_backend`` (same names, same
already-validated arguments). The process-wide default is set with ``set_backend``;
``use_backend`` overrides it for the current thread / asyncio context only.
"""
from __future__ import annotations

import contextlib
import contextvars
import importlib
from types import ModuleType
from typing import Dict, Iterator, List, Optional

_MODULES = {"native": "native_backend", "numpy": "numpy_backend", "torch": "torch_backend"}
_loaded: Dict[str, ModuleType] = {}
_default = "native"
_override: contextvars.ContextVar[Optional[str]] = contextvars.ContextVar("fastconv_backend", default=None)


def _load(name: str) -> ModuleType:
    if name not in _MODULES:
        raise ValueError(f"unknown backend {name!r}; choose one of {sorted(_MODULES)}")
    if name not in _loaded:
        try:
            _loaded[name] = importlib.import_module(f"{__name__}.{_MODULES[name]}")
        except ImportError as exc:
            hint = (" (install PyTorch's CPU build with: pip install 'fastconv[torch]', which pins torch 2.13.0)"
                    if name == "torch" else "")
            raise ValueError(f"backend {name!r} is not available here: {exc}{hint}") from exc
    return _loaded[name]


def available_backends() -> List[str]:
    """Names of the backends that import on this machine (``"torch"`` needs PyTorch)."""
    names = []
    for name in _MODULES:
        try:
            _load(name)
        except ValueError:
            continue
        names.append(name)
    return names


def get_backend() -> str:
    """Name of the backend the current context uses."""
    return _override.get() or _default


def set_backend(name: str) -> None:
    """Make ``name`` the process-wide default backend."""
    global _default
    _load(name)
    _default = name


@contextlib.contextmanager
def use_backend(name: str) -> Iterator[None]:
    """Use backend ``name`` inside a ``with`` block (this thread/context only)."""
    _load(name)
    token = _override.set(name)
    try:
        yield
    finally:
        _override.reset(token)


def current_backend() -> ModuleType:
    return _load(get_backend())
