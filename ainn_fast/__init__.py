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
