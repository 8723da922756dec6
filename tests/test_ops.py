"""The reference ops against independent definitions (explicit loops, known values)."""

import pytest
import torch
import torch.nn.functional as F

from ainn_fast import ops


def test_squeeze_channel_order_is_ainn_not_pixel_unshuffle():
    b, c, h, w = 2, 3, 4, 6
    x = torch.randn(b, c, h, w)
    y = ops.squeeze2x2(x)
    assert y.shape == (b, 4 * c, h // 2, w // 2)
    for i in range(2):
        for j in range(2):
            for ch in range(c):
                # A-INN order: output channel (i * 2 + j) * C + c
                assert torch.equal(y[:, (i * 2 + j) * c + ch], x[:, ch, i::2, j::2])
    assert not torch.equal(y, F.pixel_unshuffle(x, 2))


def test_unsqueeze_inverts_squeeze_exactly():
    x = torch.randn(2, 5, 6, 10)
    assert torch.equal(ops.unsqueeze2x2(ops.squeeze2x2(x)), x)
    y = torch.randn(1, 8, 3, 5)
    assert torch.equal(ops.squeeze2x2(ops.unsqueeze2x2(y)), y)


def test_squeeze_rejects_odd_sizes():
    with pytest.raises(ValueError, match="even"):
        ops.squeeze2x2(torch.zeros(1, 1, 3, 4))


@pytest.mark.parametrize("M", [128, 192])
def test_group_mean_averages_fixed_groups(M):
    x1, x2 = torch.randn(1, 768, 2, 3), torch.randn(1, 768, 2, 3)
    y = ops.group_mean(x1, x2, M)
    both = torch.cat([x1, x2], 1)
    groups = 1536 // M
    for c in (0, 1, M - 1):
        expected = sum(both[:, g * M + c] for g in range(groups)) / groups
        torch.testing.assert_close(y[:, c], expected, rtol=1e-6, atol=1e-6)


def test_multiscale_decompose_matches_window_means():
    x = torch.randn(1, 3, 9, 11)
    low, high = ops.multiscale_decompose(x)
    assert low.shape == high.shape == (1, 9, 9, 11)
    padded = F.pad(x, (3, 3, 3, 3))  # zeros outside, counted in the divisor
    for s, k in enumerate((3, 5, 7)):
        for (r, c) in [(0, 0), (4, 5), (8, 10)]:
            r0, c0 = r + 3 - k // 2, c + 3 - k // 2
            window = padded[:, :, r0 : r0 + k, c0 : c0 + k]
            expected = window.sum(dim=(2, 3)) / (k * k)
            torch.testing.assert_close(low[:, 3 * s : 3 * s + 3, r, c], expected)
            torch.testing.assert_close(high[:, 3 * s : 3 * s + 3, r, c], x[:, :, r, c] - expected)


def test_frequency_blend_formula():
    logits = torch.tensor([[[[0.0, 100.0, -100.0]]]])
    low = torch.full((1, 3, 1, 3), 2.0)
    high = torch.full((1, 3, 1, 3), -4.0)
    out = ops.frequency_blend(logits, low, high)
    torch.testing.assert_close(out[0, :, 0], torch.tensor([[-1.0, 2.0, -4.0]] * 3))


def test_affine_coupling_known_values_and_inverse():
    x = torch.tensor([1.0, -2.0, 3.0])
    g = torch.tensor([0.0, 50.0, -50.0])  # s = 0, ~clamp, ~-clamp
    h = torch.tensor([0.5, 0.0, 1.0])
    for clamp in (1.0, 0.5):
        y = ops.affine_coupling(x, g, h, clamp)
        expected = x * torch.exp(torch.tensor([0.0, clamp, -clamp])) + h
        torch.testing.assert_close(y, expected)
        torch.testing.assert_close(ops.affine_coupling_inverse(y, g, h, clamp), x)


def test_coupling_ops_gradcheck():
    x, g, h = (torch.randn(2, 3, 4, 5, dtype=torch.float64, requires_grad=True) for _ in range(3))
    assert torch.autograd.gradcheck(lambda a, b, c: ops.affine_coupling(a, b, c, 1.0), (x, g, h))
    assert torch.autograd.gradcheck(lambda a, b, c: ops.affine_coupling_inverse(a, b, c, 1.0), (x, g, h))


def test_frequency_ops_gradcheck():
    x = torch.randn(1, 2, 6, 7, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a: ops.multiscale_decompose(a), (x,))
    lg, lo, hi = (torch.randn(1, k, 4, 4, dtype=torch.float64, requires_grad=True) for k in (1, 3, 3))
    assert torch.autograd.gradcheck(lambda a, b, c: ops.frequency_blend(a, b, c), (lg, lo, hi))


@pytest.mark.parametrize("channels_last", [False, True], ids=["contiguous", "channels_last"])
def test_folded_squeeze_convolutions_equal_squeeze_then_1x1(channels_last):
    # The strided convolutions the fused backends run (Triton everywhere, native on CUDA)
    # against squeeze + 1x1 convolution, forward and gradients (float64: only the sum
    # order differs, so 1e-12).
    from ainn_fast.ops.squeeze import conv1x1_unsqueeze_folded, squeeze_conv1x1_folded

    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.randn(2, 3, 6, 10, dtype=torch.float64).contiguous(memory_format=fmt).requires_grad_()
    y = torch.randn(2, 12, 3, 5, dtype=torch.float64).contiguous(memory_format=fmt).requires_grad_()
    w = torch.randn(12, 12, dtype=torch.float64, requires_grad=True)
    for folded, op, inp in ((squeeze_conv1x1_folded, ops.squeeze_conv1x1, x),
                            (conv1x1_unsqueeze_folded, ops.conv1x1_unsqueeze, y)):
        got, want = folded(inp, w), op.impls["reference"](inp, w)
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
        go = torch.randn_like(want)
        for a, b in zip(torch.autograd.grad(got, (inp, w), go), torch.autograd.grad(want, (inp, w), go)):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="even height and width"):  # a strided convolution would drop the last row
        squeeze_conv1x1_folded(torch.zeros(1, 3, 5, 4), torch.eye(12))
