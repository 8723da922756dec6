"""prepare_for_decoding: g_s and g_a unchanged up to float32 rounding; the inverse cache is correct."""

import copy

import pytest
import torch
import torch.nn as nn

from ainn_fast import zoo
from ainn_fast.inference import prepare_for_decoding
from conftest import perturb_couplings


def _tiny_model() -> nn.Module:
    torch.manual_seed(3)
    model = zoo.ainn(3, config="tiny")
    perturb_couplings(model.inn, std=0.05)  # real affine couplings, not the identity
    for bn in (m for m in model.modules() if isinstance(m, nn.BatchNorm2d)):
        # Non-trivial running statistics and affine parameters, so that folding matters.
        n = bn.num_features
        bn.running_mean.copy_(torch.randn(n) * 0.5)
        bn.running_var.copy_(torch.rand(n) * 2 + 0.1)
        bn.weight.data.copy_(torch.randn(n))
        bn.bias.data.copy_(torch.randn(n) * 0.5)
    return model.eval()


def _close(fast: torch.Tensor, ref: torch.Tensor, tol: float) -> None:
    # Folding reassociates float32 products ((s W) x instead of s (W x)), so results differ
    # by rounding, carried through the PDM U-Nets and inverse levels: measured ~2e-7 of the
    # output's scale here. 1e-4 of that scale leaves margin, yet scaling every BN's running
    # mean by 1.01 before folding already exceeds it.
    scale = ref.abs().max().item()
    assert (fast - ref).abs().max().item() <= tol * max(scale, 1.0), (fast - ref).abs().max()


@pytest.mark.parametrize("shape", [(1, 4, 4), (2, 4, 8)])
def test_prepared_g_s_matches_reference(shape):
    ref = _tiny_model()
    fast = prepare_for_decoding(copy.deepcopy(ref))
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fast.modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in ref.modules())  # the reference is untouched
    b, h, w = shape
    y_hat = torch.randn(b, ref.M, h, w).mul(4).round()  # latents are integers
    with torch.no_grad():
        out_ref, out_fast = ref.g_s(y_hat), fast.g_s(y_hat)
        out_again = fast.g_s(y_hat + 0)  # second call: served from the inverse cache
    assert out_fast.shape == (b, 3, 16 * h, 16 * w)
    _close(out_fast, out_ref, 1e-4)
    assert torch.equal(out_again, out_fast)


@pytest.mark.parametrize("channels_last", [None, False])
def test_channels_last_transforms_on_cpu(channels_last):
    """On the CPU both transforms run NHWC by default (faster convolutions, no copies in
    the native kernels): the synthesis, and the analysis, which shares the invertible
    network and would otherwise feed its NHWC weights NCHW tensors. Each still returns a
    contiguous tensor equal to the reference's."""
    ref = _tiny_model()
    fast = prepare_for_decoding(copy.deepcopy(ref), channels_last=channels_last)
    # (1x1 kernels or single input channels are both layouts at once; they prove nothing)
    for name in ("inn", "fdsm_d", "fdsm_s"):
        module = getattr(fast, name)
        convs = [m for m in module.modules() if isinstance(m, nn.Conv2d) and m.kernel_size[0] > 1 and m.in_channels > 1]
        assert convs, name
        nhwc = channels_last is None
        assert all(c.weight.is_contiguous(memory_format=torch.channels_last) == nhwc for c in convs), name
    y_hat = torch.randn(1, ref.M, 4, 6).mul(4).round()
    x = torch.rand(1, 3, 64, 96)
    seen = []
    hook = fast.inn.register_forward_pre_hook(lambda _, args: seen.append(args[0].is_contiguous()))
    with torch.no_grad():
        out, y = fast.g_s(y_hat), fast.g_a(x)
        assert out.is_contiguous() and y.is_contiguous()
        _close(out, ref.g_s(y_hat), 1e-4)
        _close(y, ref.g_a(x), 1e-4)
    hook.remove()
    assert seen == [not nhwc]  # g_a fed its invertible network in the weights' layout


def test_refuses_training_mode():
    model = _tiny_model().train()
    with pytest.raises(ValueError, match="eval"):
        prepare_for_decoding(model)
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())  # left as it was


def test_preparing_keeps_the_weights_identity():
    from ainn_fast import codec

    model = _tiny_model()
    digest = codec.weights_hash(model)
    prepare_for_decoding(model)
    assert model._ainn_hash == digest  # files made by the unfolded model still decode


def test_inverse_cache_is_exact_and_invalidated_by_in_place_updates():
    conv = _tiny_model().inn.levels[1].conv1x1
    w = conv.weight
    with torch.no_grad():
        first = conv.inverse_weight()
        assert conv.inverse_weight() is first  # cached
        torch.testing.assert_close(first, torch.linalg.inv(w.double()), atol=0, rtol=0)
        w.add_(1e-3)
        second = conv.inverse_weight()
    assert second is not first
    torch.testing.assert_close(second, torch.linalg.inv(w.detach().double()), atol=0, rtol=0)
    assert not torch.equal(second, first)
    assert not any("inverse" in k for k in conv.state_dict())


def test_inverse_cache_sees_a_replaced_weight():
    conv = _tiny_model().inn.levels[0].conv1x1
    with torch.no_grad():
        first = conv.inverse_weight()
        conv.weight = nn.Parameter(conv.weight * 2)
        torch.testing.assert_close(conv.inverse_weight(), first / 2)


def test_training_still_gets_a_differentiable_inverse():
    model = _tiny_model().train()
    conv = model.inn.levels[2].conv1x1
    with torch.no_grad():
        conv.inverse_weight()  # a cached entry must not leak into training
    inv = conv.inverse_weight()
    assert inv.requires_grad
    inv.square().sum().backward()
    assert conv.weight.grad is not None and conv.weight.grad.abs().sum() > 0


def test_prepare_twice_and_cuda_graphs_fallback_on_cpu():
    ref = _tiny_model()
    fast = prepare_for_decoding(prepare_for_decoding(copy.deepcopy(ref)))
    if not torch.cuda.is_available():
        with pytest.warns(UserWarning, match="CUDA is not available"):
            prepare_for_decoding(fast, cuda_graphs=True)
    y_hat = torch.randn(1, ref.M, 4, 4).round()
    with torch.no_grad():
        _close(fast.g_s(y_hat), ref.g_s(y_hat), 1e-4)


# Compiling the tiny g_s takes ~75 s on a cold inductor cache on a 2-core CPU: GPU only.
@pytest.mark.skipif(not torch.cuda.is_available(), reason="torch.compile of g_s is too slow to test on CPU")
def test_compiled_g_s_matches_eager(exact_cuda):
    ref = _tiny_model().cuda()
    fast = prepare_for_decoding(copy.deepcopy(ref), compile=True)
    y_hat = torch.randn(1, ref.M, 4, 4, device="cuda").round()
    with torch.no_grad():
        _close(fast.g_s(y_hat), ref.g_s(y_hat), 1e-4)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
def test_cuda_graphs_match_eager(exact_cuda):
    ref = _tiny_model().cuda()
    fast = prepare_for_decoding(copy.deepcopy(ref), cuda_graphs=True)
    eager = prepare_for_decoding(copy.deepcopy(ref))
    shape_a, shape_b = (1, ref.M, 4, 4), (2, ref.M, 4, 8)
    with torch.no_grad():
        inputs = [torch.randn(s, device="cuda").round() for s in (shape_a, shape_a, shape_b)]
        outs = [fast.g_s(y) for y in inputs]  # 2 different inputs of one shape, then another shape
        for y, out in zip(inputs, outs):  # earlier outputs are not overwritten by later replays
            torch.testing.assert_close(out, eager.g_s(y), atol=1e-5, rtol=0)
    assert len(fast.g_s.graphs) == 2


@pytest.fixture(scope="module")
def shipped_and_photo():
    import numpy as np
    from skimage import data

    from ainn_fast import codec

    model = codec.prepare_model(codec.default_model(3))
    x = torch.from_numpy(data.astronaut()[:192, :256].copy()).permute(2, 0, 1)[None].float().div(255)
    return model, x, np


# On CPUs where bf16 is slower this warns (tests/test_low_precision_warning.py checks that).
@pytest.mark.filterwarnings("ignore:precision bf16:RuntimeWarning")
@pytest.mark.parametrize("precision, max_psnr_drop", [("bf16", 0.1)])
def test_low_precision_synthesis_within_stated_tolerance(shipped_and_photo, precision, max_psnr_drop):
    # bf16 (faster on GPUs and many CPUs, slower on some): the decoded
    # image may differ from the float32 one by a few levels, never by more than 0.1 dB of PSNR.
    from ainn_fast import codec

    model, x, np = shipped_and_photo
    data = codec.compress(x, model)
    fp32 = copy.deepcopy(model)
    low = prepare_for_decoding(copy.deepcopy(model), precision=precision)

    def psnr(img):
        a = np.asarray(img, dtype=np.float64) / 255
        return 10 * np.log10(1 / np.mean((a - x[0].permute(1, 2, 0).numpy()) ** 2))

    ref_img, y_ref = codec.decode(data, fp32)
    low_img, y_low = codec.decode(data, low)
    assert torch.equal(y_ref, y_low)  # the entropy decoding is untouched: exact
    assert abs(psnr(low_img) - psnr(ref_img)) < max_psnr_drop
    diff = np.abs(np.asarray(low_img, dtype=int) - np.asarray(ref_img, dtype=int))
    assert 0 < diff.max() <= 8  # really ran in bf16, and close


@pytest.mark.filterwarnings("ignore:precision bf16:RuntimeWarning")
def test_low_precision_leaves_the_coder_and_the_analysis_in_float32(shipped_and_photo):
    from ainn_fast import codec

    model, x, _ = shipped_and_photo
    before = codec.compress(x, model)
    prepared = prepare_for_decoding(copy.deepcopy(model), precision="bf16")
    assert codec.compress(x, prepared) == before  # same bytes: g_a and fixed point untouched
    assert all(p.dtype == torch.float32 for p in prepared.parameters())
    with pytest.raises(ValueError, match="unknown precision"):
        prepare_for_decoding(copy.deepcopy(model), precision="int4")
