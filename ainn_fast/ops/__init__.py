"""The ops that fused backends replace, each an :class:`ainn_fast.backend.Op`.

The reference implementation of each op lives beside its ``Op`` object in the file named
after it; the model only ever calls the ``Op``.
"""

from .coupling import affine_coupling, affine_coupling_inverse
from .frequency import frequency_blend, multiscale_decompose
from .squeeze import conv1x1_unsqueeze, group_mean, squeeze2x2, squeeze_conv1x1, unsqueeze2x2

ALL_OPS = (
    affine_coupling,
    affine_coupling_inverse,
    squeeze2x2,
    unsqueeze2x2,
    group_mean,
    multiscale_decompose,
    frequency_blend,
    squeeze_conv1x1,
    conv1x1_unsqueeze,
)

__all__ = [op.name for op in ALL_OPS] + ["ALL_OPS"]


def _load_triton_backend() -> None:
    # The Triton kernels register themselves on import. Without triton (ImportError) the
    # backend stays unregistered ("not part of this build"); a triton that is present but
    # broken registers the backend as unavailable with the error as its reason, so that
    # importing ainn_fast never fails because of it.
    try:
        import ainn_fast.kernels  # noqa: F401
    except ImportError as err:
        if (err.name or "").split(".")[0] == "triton" or err.name == "ainn_fast.kernels":
            return  # not built: no triton, or a package without kernels/
        _register_broken(err)
    except Exception as err:  # noqa: BLE001
        _register_broken(err)


def _register_broken(err: Exception) -> None:
    from ..backend import register_backend

    reason = f"the Triton kernels failed to load: {type(err).__name__}: {err}"
    register_backend("triton", lambda device_type: reason)


_load_triton_backend()
