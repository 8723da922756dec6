"""ainn_fast: A-INN learned image compression with fused kernels beside a PyTorch reference."""

from .backend import (
    BACKENDS,
    BackendUnavailableError,
    available_backends,
    get_backend,
    set_backend,
    use_backend,
)

__version__ = "0.1.0"

__all__ = [
    "BACKENDS",
    "BackendUnavailableError",
    "__version__",
    "available_backends",
    "get_backend",
    "set_backend",
    "use_backend",
]


def _register_native_backend() -> None:
    # Registers the "native" backend (ainn_fast/native.py). Cheap: the extension itself is
    # loaded (or JIT-built) on the backend's first probe, not here. Never fails the import:
    # a broken module leaves the backend registered as unavailable, with the reason.
    from .backend import register_backend

    try:
        from . import native  # noqa: F401
    except Exception as err:  # noqa: BLE001
        reason = f"ainn_fast.native failed to import: {type(err).__name__}: {err}"
        register_backend("native", lambda device_type: reason)


_register_native_backend()
