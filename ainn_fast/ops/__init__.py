"""The ops that fused backends replace, each an :class:`ainn_fast.backend.Op`.

The reference implementation of each op lives beside its ``Op`` object in the file named
after it; the model only ever calls the ``Op``.
"""

from .coupling import affine_coupling, affine_coupling_inverse
from .frequency import frequency_blend, multiscale_decompose
from .squeeze import group_mean, squeeze2x2, unsqueeze2x2

ALL_OPS = (
    affine_coupling,
    affine_coupling_inverse,
    squeeze2x2,
    unsqueeze2x2,
    group_mean,
    multiscale_decompose,
    frequency_blend,
)

__all__ = [op.name for op in ALL_OPS] + ["ALL_OPS"]
