"""Space-to-depth squeeze in A-INN's channel order, its inverse, and the channel squeeze.

A-INN orders squeezed channels as (i * 2 + j) * C + c for row offset i and column offset
j in each 2x2 cell: NOT pixel_unshuffle's c * 4 + i * 2 + j. The order matters because
the final channel squeeze averages fixed channel groups.
"""

import torch
import torch.nn.functional as F

from ..backend import Op


def _squeeze2x2_reference(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, 4C, H/2, W/2), output channel (i * 2 + j) * C + c."""
    b, c, h, w = x.shape
    if h % 2 or w % 2:
        raise ValueError(f"squeeze2x2 needs even height and width, got {h}x{w}")
    x = x.reshape(b, c, h // 2, 2, w // 2, 2).permute(0, 3, 5, 1, 2, 4)
    return x.reshape(b, 4 * c, h // 2, w // 2)


def _unsqueeze2x2_reference(y: torch.Tensor) -> torch.Tensor:
    """(B, 4C, H, W) -> (B, C, 2H, 2W), the exact inverse of squeeze2x2."""
    b, c4, h, w = y.shape
    if c4 % 4:
        raise ValueError(f"unsqueeze2x2 needs a multiple of 4 channels, got {c4}")
    c = c4 // 4
    y = y.reshape(b, 2, 2, c, h, w).permute(0, 3, 4, 1, 5, 2)
    return y.reshape(b, c, 2 * h, 2 * w)


def _group_mean_reference(x1: torch.Tensor, x2: torch.Tensor, out_channels: int) -> torch.Tensor:
    """Channel squeeze: concatenate both streams and average fixed groups of channels.

    Output channel c is the mean of channels c, c + M, c + 2M, ... of cat([x1, x2]).
    """
    x = torch.cat([x1, x2], dim=1)
    b, c, h, w = x.shape
    if c % out_channels:
        raise ValueError(f"group_mean: {c} channels do not split into groups of {out_channels}")
    return x.reshape(b, c // out_channels, out_channels, h, w).mean(dim=1)


def _squeeze_conv1x1_reference(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """A level's entry: squeeze2x2, then the invertible 1x1 convolution with the (4C, 4C)
    matrix ``weight``: (B, C, H, W) -> (B, 4C, H/2, W/2).

    Equal to a stride-2 2x2 convolution with weight[o, c, i, j] = W[o, (i * 2 + j) * C + c],
    which fused backends use so that no squeezed copy is materialised.
    """
    c4 = weight.shape[0]
    return F.conv2d(_squeeze2x2_reference(x), weight.to(x.dtype).view(c4, c4, 1, 1))


def _conv1x1_unsqueeze_reference(y: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """A level's exit in the inverse direction: the 1x1 convolution with ``weight`` (the
    inverse matrix W^-1), then unsqueeze2x2: (B, 4C, H, W) -> (B, C, 2H, 2W).

    Equal to a stride-2 2x2 transposed convolution with weight[k, c, i, j] = W^-1[(i * 2 + j) * C + c, k].
    """
    c4 = weight.shape[0]
    return _unsqueeze2x2_reference(F.conv2d(y, weight.to(y.dtype).view(c4, c4, 1, 1)))


# The same two ops as one strided convolution each, for the fused backends (Triton, and
# native on CUDA): cuDNN reads the unsqueezed side in place, so no squeezed copy is ever
# written. Plain aten ops: autograd and torch.compile need nothing more.
def squeeze_conv1x1_folded(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``squeeze_conv1x1`` as a stride-2 2x2 convolution."""
    b, c, h, w = x.shape
    if h % 2 or w % 2:
        raise ValueError(f"squeeze2x2 needs even height and width, got {h}x{w}")
    c4 = weight.shape[0]
    # kernel[o, c, i, j] = W[o, (i * 2 + j) * C + c]
    kernel = weight.to(x.dtype).reshape(c4, 2, 2, c4 // 4).permute(0, 3, 1, 2)
    return F.conv2d(x, kernel, stride=2)


def conv1x1_unsqueeze_folded(y: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``conv1x1_unsqueeze`` as a stride-2 2x2 transposed convolution."""
    c4 = weight.shape[0]
    # kernel[k, c, i, j] = W^-1[(i * 2 + j) * C + c, k]
    kernel = weight.to(y.dtype).reshape(2, 2, c4 // 4, c4).permute(3, 2, 0, 1)
    return F.conv_transpose2d(y, kernel, stride=2)


squeeze2x2 = Op("squeeze2x2", _squeeze2x2_reference)
unsqueeze2x2 = Op("unsqueeze2x2", _unsqueeze2x2_reference)
group_mean = Op("group_mean", _group_mean_reference)
squeeze_conv1x1 = Op("squeeze_conv1x1", _squeeze_conv1x1_reference)
conv1x1_unsqueeze = Op("conv1x1_unsqueeze", _conv1x1_unsqueeze_reference)
