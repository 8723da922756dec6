"""Elementwise tail of an affine coupling half-step and its exact inverse.

With the bounded log-scale s(g) = clamp * (2 * sigmoid(g) - 1):
    forward:  y = x * exp(s(g)) + h
    inverse:  x = (y - h) * exp(-s(g))
g and h are the outputs of the coupling's sub-networks G and H.
"""

import torch

from ..backend import Op


def log_scale(g: torch.Tensor, clamp: float) -> torch.Tensor:
    """s(g) = clamp * (2 sigmoid(g) - 1), in (-clamp, clamp)."""
    return clamp * (2.0 * torch.sigmoid(g) - 1.0)


def _affine_coupling_reference(x: torch.Tensor, g: torch.Tensor, h: torch.Tensor, clamp: float = 1.0) -> torch.Tensor:
    """y = x * exp(s(g)) + h."""
    return x * torch.exp(log_scale(g, clamp)) + h


def _affine_coupling_inverse_reference(
    y: torch.Tensor, g: torch.Tensor, h: torch.Tensor, clamp: float = 1.0
) -> torch.Tensor:
    """x = (y - h) * exp(-s(g)), the exact inverse of affine_coupling."""
    return (y - h) * torch.exp(-log_scale(g, clamp))


affine_coupling = Op("affine_coupling", _affine_coupling_reference)
affine_coupling_inverse = Op("affine_coupling_inverse", _affine_coupling_inverse_reference)
