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


def test_inv_conv_training_inverse_is_exact_and_differentiable():
    """In training the inverse weight is recomputed (inv_ex, no host sync) and carries the
    gradient: the same values and gradients as linalg.inv's in float64 (gradcheck)."""
    conv = InvConv1x1(6)
    with torch.no_grad():
        conv.weight.add_(0.1 * torch.randn(6, 6))  # a general matrix, not only orthogonal
    w_inv = conv.inverse_weight()
    assert w_inv.requires_grad and w_inv.dtype == torch.float64
    torch.testing.assert_close(w_inv, torch.linalg.inv(conv.weight.detach().double()), rtol=0, atol=0)
    y = torch.randn(2, 6, 3, 5)
    x = conv.inverse(y)
    torch.testing.assert_close(conv(x), y, rtol=1e-5, atol=1e-5)
    conv.weight = torch.nn.Parameter(conv.weight.detach().double())
    weights = torch.arange(36.0, dtype=torch.float64).view(6, 6)
    # gradcheck perturbs its input in place: the Parameter itself, which inverse_weight reads.
    assert torch.autograd.gradcheck(lambda w: (conv.inverse_weight() * weights).sum(), (conv.weight,))


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


# ---------------------------------------------------------------------------------------
# G/H pairs merged into one network of twice the width (PairedSubnets).
# Tolerance 1e-5: the merged convolutions sum the same products as the separate ones, in
# the order oneDNN picks for the wider shape, so results differ by float32 rounding only.


def _perturbed_coupling(channels: int = 12, k: int = 5, hidden: int = 16) -> AffineCoupling:
    coupling = AffineCoupling(channels, k, hidden=hidden)
    perturb_couplings(coupling, std=0.3)
    for net in (coupling.G1, coupling.G2, coupling.H1, coupling.H2):  # every layer distinct
        for conv in (net.conv1, net.conv2):
            torch.nn.init.normal_(conv.bias, std=0.3)
    return coupling


@pytest.mark.parametrize("k, batch", [(5, 1), (3, 2)])
def test_paired_subnets_equal_the_separate_pair(k, batch):
    from ainn_fast.layers.invertible import PairedSubnets

    coupling = _perturbed_coupling(k=k)
    x = torch.randn(batch, 12, 9, 7)
    with torch.no_grad():
        g, h = PairedSubnets()(coupling.G1, coupling.H1, x)
        torch.testing.assert_close(g, coupling.G1(x), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(h, coupling.H1(x), rtol=1e-5, atol=1e-5)


def test_paired_subnets_cache_follows_weight_updates():
    from ainn_fast.layers.invertible import PairedSubnets

    coupling = _perturbed_coupling()
    pair = PairedSubnets()
    x = torch.randn(1, 12, 6, 6)
    with torch.no_grad():
        pair(coupling.G2, coupling.H2, x)
        coupling.H2.conv3.weight.add_(0.5)  # an optimizer step changes one parameter in place
        _, h = pair(coupling.G2, coupling.H2, x)
        torch.testing.assert_close(h, coupling.H2(x), rtol=1e-5, atol=1e-5)
        coupling.G2.conv1.bias = torch.nn.Parameter(torch.randn(16))  # replaced parameter
        g, _ = pair(coupling.G2, coupling.H2, x)
        torch.testing.assert_close(g, coupling.G2(x), rtol=1e-5, atol=1e-5)


def test_merged_subnets_policy(monkeypatch):
    import ainn_fast
    from ainn_fast.layers import invertible

    x = torch.zeros(1)
    with torch.no_grad():
        assert not invertible.merge_subnets_now(x)  # CPU: the separate pair is faster
    monkeypatch.setattr(invertible, "MERGE_SUBNETS_ON", ("cpu",))
    assert not invertible.merge_subnets_now(x)  # gradients needed: training keeps the pair
    with torch.no_grad():
        assert invertible.merge_subnets_now(x)
        with ainn_fast.use_backend("reference"):  # the reference stays the readable definition
            assert not invertible.merge_subnets_now(x)


def test_network_with_merged_subnets_matches_and_inverts(monkeypatch):
    from ainn_fast.layers import invertible

    net = InvertibleNetwork(kernel_sizes=(5, 3), hidden=(16, 16), couplings=2)
    perturb_couplings(net, std=0.1)
    x1, x2 = torch.randn(1, 3, 16, 12), torch.randn(1, 3, 16, 12)
    with torch.no_grad():
        y1, y2 = net(x1, x2)
        r1, r2 = net.inverse(y1, y2)
        monkeypatch.setattr(invertible, "MERGE_SUBNETS_ON", ("cpu",))
        calls = []
        real_call = invertible.PairedSubnets.__call__
        monkeypatch.setattr(
            invertible.PairedSubnets, "__call__", lambda self, *a: calls.append(1) or real_call(self, *a)
        )
        m1, m2 = net(x1, x2)
        i1, i2 = net.inverse(m1, m2)
    assert len(calls) == 2 * 2 * 2 * 2  # levels x couplings x (G1/H1, G2/H2) x (forward, inverse)
    for got, want in ((m1, y1), (m2, y2), (i1, r1), (i2, r2)):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(i1, x1, rtol=1e-4, atol=1e-5)
