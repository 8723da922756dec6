"""The backend registry: one home for every fused op's implementations.

Each op (``ainn_fast.ops.*``) is an :class:`Op` holding up to three implementations,
one per backend:

- ``"reference"``: plain PyTorch, the readable definition; always available;
- ``"triton"``: kernels/ (installed as ``ainn_fast.kernels``);
- ``"native"``: the csrc/ extension (C++ on CPU, CUDA on GPU).

The model calls ops, never a backend directly, so switching backend needs no model
change. Selection, innermost first: :func:`use_backend` (a context manager),
:func:`set_backend`, the ``AINN_BACKEND`` environment variable, else ``"auto"``, which
picks the fastest backend that is available for the input tensor's device and
implements the op. A backend asked for by name that cannot run is an error saying why,
never a silent fallback.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
from typing import Callable, Iterator

import torch

from .errors import AinnError, OptionError

BACKENDS: tuple[str, ...] = ("reference", "triton", "native")
AUTO = "auto"

# Fastest first, per device type; "auto" walks this list.
_AUTO_ORDER: dict[str, tuple[str, ...]] = {
    "cuda": ("native", "triton", "reference"),
    "cpu": ("native", "reference"),
}

# Why a backend cannot run on a device type; None means it can. Backends register a
# probe when their module is imported; an unregistered backend is "not built".
_probes: dict[str, Callable[[str], str | None]] = {"reference": lambda device_type: None}

_selected: contextvars.ContextVar[str | None] = contextvars.ContextVar("ainn_backend", default=None)
_global: str | None = None
# What use_backend selected, as a plain global for torch.compile: Dynamo in torch 2.11
# (the GPU host's) cannot trace ContextVar.get (a graph break; under fullgraph, an error)
# and 2.14's recompiles once more than needed, while a global it reads is guarded, so a
# different selection recompiles. Eager code reads the ContextVar; only tracing threads
# that select different backends at once would differ.
_traced_selection: str | None = None


class BackendUnavailableError(AinnError, RuntimeError):
    """A backend was asked for by name but cannot run here; the message says why (a user
    error on the command line, still a RuntimeError to Python callers)."""


def _check_name(name: str) -> str:
    if name != AUTO and name not in BACKENDS:
        raise OptionError(f"unknown backend {name!r}; choose one of {', '.join((AUTO,) + BACKENDS)}")
    return name


def register_backend(name: str, probe: Callable[[str], str | None]) -> None:
    """Declare ``name`` present; ``probe(device_type)`` returns why it cannot run, or None."""
    _probes[_check_name(name)] = probe


_optional_loaded = False


def _load_optional_backends() -> None:
    """Import the ops once, which registers the optional backends (``ainn_fast.ops`` does
    the guarded import of the Triton kernels), so that asking about backends right after
    ``import ainn_fast`` gives the true answer while the import itself stays light."""
    global _optional_loaded
    if not _optional_loaded:
        _optional_loaded = True
        import ainn_fast.ops  # noqa: F401


def unavailable_reason(name: str, device_type: str = "cpu") -> str | None:
    """Why backend ``name`` cannot run on ``device_type`` (None when it can)."""
    _check_name(name)
    _load_optional_backends()
    probe = _probes.get(name)
    if probe is None:
        return f"the {name!r} backend is not part of this build of ainn_fast"
    return probe(device_type)


def require_backend(name: str, device_type: str) -> None:
    """Raise BackendUnavailableError (saying why) unless backend ``name`` can run on
    ``device_type``; "auto" always can."""
    reason = None if name == AUTO else unavailable_reason(name, device_type)
    if reason is not None:
        raise BackendUnavailableError(f"backend {name!r} cannot run on {device_type}: {reason}")


def available_backends(device_type: str = "cpu") -> list[str]:
    return [b for b in BACKENDS if unavailable_reason(b, device_type) is None]


def set_backend(name: str) -> None:
    """Select the backend for this process (overrides ``AINN_BACKEND``)."""
    global _global
    _global = _check_name(name)


def get_backend() -> str:
    """The backend name in force here: context, then process, then environment."""
    selected = _traced_selection if torch.compiler.is_compiling() else _selected.get()
    name = selected or _global or os.environ.get("AINN_BACKEND") or AUTO
    return _check_name(name)


@contextlib.contextmanager
def use_backend(name: str) -> Iterator[None]:
    """Run the enclosed code with backend ``name``."""
    global _traced_selection
    token = _selected.set(_check_name(name))
    outer, _traced_selection = _traced_selection, name
    try:
        yield
    finally:
        _selected.reset(token)
        _traced_selection = outer


class Op:
    """One fused op: its reference definition plus optional faster implementations."""

    def __init__(self, name: str, reference: Callable) -> None:
        self.name = name
        self.impls: dict[str, Callable] = {"reference": reference}
        self.__doc__ = reference.__doc__

    def register(self, backend: str) -> Callable[[Callable], Callable]:
        _check_name(backend)

        def deco(fn: Callable) -> Callable:
            self.impls[backend] = fn
            return fn

        return deco

    def resolve(self, device_type: str) -> str:
        """Name of the backend that runs this op for a tensor on ``device_type``."""
        name = get_backend()
        if name == AUTO:
            for candidate in _AUTO_ORDER.get(device_type, ("reference",)):
                if candidate in self.impls and unavailable_reason(candidate, device_type) is None:
                    return candidate
            return "reference"
        require_backend(name, device_type)
        if name not in self.impls:
            raise BackendUnavailableError(f"backend {name!r} has no implementation of op {self.name!r}")
        return name

    def __call__(self, x: torch.Tensor, *args, **kwargs):
        return self.impls[self.resolve(x.device.type)](x, *args, **kwargs)

    def __repr__(self) -> str:
        return f"Op({self.name!r}, backends={sorted(self.impls)})"
