"""The invertible core inverts exactly; couplings start as the identity."""

import pytest
import torch

from ainn_fast.layers import AffineCoupling, InvConv1x1, InvertibleLevel, InvertibleNetwork, Squeeze2x2
from conftest import perturb_couplings

TOL = {torch.float32: 1e-5, torch.float64: 1e-10}


def test_inv_conv_starts_orthogonal_and_inverts():
    conv = InvConv1x1(12)
    w = conv.weight.double()
    torch.testing.assert_close(w @ w.T, torch.eye(12, dtype=torch.float64), atol=1e-6, rtol=0)
    x = torch.randn(2, 12, 3, 5)
    torch.testing.assert_close(conv.inverse(conv(x)), x, atol=1e-5, rtol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_each_part_inverts(dtype):
    x1, x2 = torch.randn(2, 12, 6, 10, dtype=dtype), torch.randn(2, 12, 6, 10, dtype=dtype)
    squeeze = Squeeze2x2()
    assert torch.equal(squeeze.inverse(squeeze(x1)), x1)

    conv = InvConv1x1(12).to(dtype)
    conv.weight.data += 0.3 * torch.randn(12, 12, dtype=dtype)  # no longer orthogonal
    assert (conv.inverse(conv(x1)) - x1).abs().max() < TOL[dtype]

    coupling = AffineCoupling(12, 3).to(dtype)
    perturb_couplings(coupling, std=0.2)
    y1, y2 = coupling(x1, x2)
    assert (y1 - x1).abs().max() > 0.1  # not the identity any more
    r1, r2 = coupling.inverse(y1, y2)
    assert max((r1 - x1).abs().max(), (r2 - x2).abs().max()) < TOL[dtype]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_every_level_and_whole_network_invert_on_non_square_input(dtype):
    net = InvertibleNetwork(hidden=(8, 8, 8, 8)).to(dtype)
    perturb_couplings(net, std=0.05)
    x1, x2 = torch.rand(2, 3, 32, 48, dtype=dtype), torch.rand(2, 3, 32, 48, dtype=dtype)
    a1, a2 = x1, x2
    for level in net.levels:
        b1, b2 = level(a1, a2)
        r1, r2 = level.inverse(b1, b2)
        assert max((r1 - a1).abs().max(), (r2 - a2).abs().max()) < TOL[dtype], level
        a1, a2 = b1, b2
    y1, y2 = net(x1, x2)
    assert y1.shape == y2.shape == (2, 768, 2, 3)
    r1, r2 = net.inverse(y1, y2)
    assert max((r1 - x1).abs().max(), (r2 - x2).abs().max()) < TOL[dtype]


def test_couplings_are_identity_at_initialisation():
    level = InvertibleLevel(3, 5)
    x1, x2 = torch.randn(1, 12, 8, 6), torch.randn(1, 12, 8, 6)
    for coupling in level.couplings:
        y1, y2 = coupling(x1, x2)
        assert torch.equal(y1, x1) and torch.equal(y2, x2)


def test_coupling_gradcheck_float64():
    coupling = AffineCoupling(4, 3, hidden=4).double()
    perturb_couplings(coupling, std=0.3)
    x1 = torch.randn(1, 4, 5, 6, dtype=torch.float64, requires_grad=True)
    x2 = torch.randn(1, 4, 5, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: coupling(a, b), (x1, x2))
    assert torch.autograd.gradcheck(lambda a, b: coupling.inverse(a, b), (x1, x2))
