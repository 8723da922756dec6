"""The frequency ops of FDSM: multi-scale decomposition (encoder) and dual-frequency blend
(decoder)."""

import torch
import torch.nn.functional as F

from ..backend import Op

POOL_SIZES = (3, 5, 7)


def _multiscale_decompose_reference(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Low- and high-frequency views of x at three scales.

    Returns (cat[a3, a5, a7], cat[x - a3, x - a5, x - a7]) where a_k is a stride-1 average
    pool of size k with zero padding k // 2 counted in the divisor (count_include_pad).
    Both have 3 * C channels in scale-major order.
    """
    lows = [F.avg_pool2d(x, k, stride=1, padding=k // 2, count_include_pad=True) for k in POOL_SIZES]
    highs = [x - a for a in lows]
    return torch.cat(lows, dim=1), torch.cat(highs, dim=1)


def _frequency_blend_reference(logits: torch.Tensor, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """x = m * low + (1 - m) * high with the one-channel mask m = sigmoid(logits)."""
    m = torch.sigmoid(logits)
    return m * low + (1.0 - m) * high


multiscale_decompose = Op("multiscale_decompose", _multiscale_decompose_reference)
frequency_blend = Op("frequency_blend", _frequency_blend_reference)
