"""CPU benchmarks of the native backend against the eager reference, at decode shapes.

Decoding one 768x512 image (H = 512, W = 768) in the paper configuration: the coupling
tails of the four levels (12x256x384, 48x128x192, 192x64x96, 768x32x48), the squeeze of
level 1-3 inputs and the unsqueeze of their outputs, each level's squeeze folded into
its 1x1 convolution and the inverse direction's 1x1 convolution with the unsqueeze, the
final group mean (two 768-channel
streams at 32x48 into M = 192), FDSM's decomposition and blend at 3x512x768. Batch 1,
float32, contiguous. Forward is what decoding runs; forward + backward is reported too
(training on CPU). Each case's group holds `reference` and `native` side by side.

Run (from the repository root, the package installed, nothing else running ideally):

    python -m pytest benchmarks/bench_native_cpu.py --benchmark-json benchmarks/results/native_cpu_$(date +%F).json
    python benchmarks/native_cpu_table.py benchmarks/results/native_cpu_$(date +%F).json > benchmarks/results/native_cpu.md
"""

from __future__ import annotations

import os
from typing import Callable

import pytest
import torch

from ainn_fast import native, ops

torch.set_num_threads(int(os.environ.get("AINN_BENCH_THREADS", os.cpu_count() or 1)))

_reason = native.probe("cpu")
pytestmark = pytest.mark.skipif(_reason is not None, reason=f"native backend unavailable: {_reason}")

H, W = 512, 768


def _r(*shape: int) -> torch.Tensor:
    return torch.randn(*shape)


def _coupling(c: int, h: int, w: int) -> Callable[[], tuple]:
    return lambda: (_r(1, c, h, w), _r(1, c, h, w), _r(1, c, h, w), 1.0)


# name -> (op, argument maker, positions of differentiable arguments)
CASES: dict[str, tuple] = {}
for c, h, w in [(12, H // 2, W // 2), (48, H // 4, W // 4), (192, H // 8, W // 8), (768, H // 16, W // 16)]:
    CASES[f"coupling_{c}x{h}x{w}"] = (ops.affine_coupling, _coupling(c, h, w), (0, 1, 2))
    CASES[f"coupling_inv_{c}x{h}x{w}"] = (ops.affine_coupling_inverse, _coupling(c, h, w), (0, 1, 2))
for c, h, w in [(3, H, W), (12, H // 2, W // 2), (48, H // 4, W // 4)]:
    CASES[f"squeeze_{c}x{h}x{w}"] = (ops.squeeze2x2, lambda c=c, h=h, w=w: (_r(1, c, h, w),), (0,))
    CASES[f"unsqueeze_{4 * c}x{h // 2}x{w // 2}"] = (
        ops.unsqueeze2x2, lambda c=c, h=h, w=w: (_r(1, 4 * c, h // 2, w // 2),), (0,))


def _orthogonal(n: int) -> torch.Tensor:
    return torch.linalg.qr(torch.randn(n, n, dtype=torch.float64))[0].float()


# A level's entry and exit with its 1x1 convolution, as the model calls them (the inverse
# as InvConv1x1 makes it: float64 inverse, cast back to float32).
for c, h, w in [(3, H, W), (12, H // 2, W // 2), (48, H // 4, W // 4), (192, H // 8, W // 8)]:
    CASES[f"squeeze_conv1x1_{c}x{h}x{w}"] = (
        ops.squeeze_conv1x1, lambda c=c, h=h, w=w: (_r(1, c, h, w), _orthogonal(4 * c)), (0,))
    CASES[f"conv1x1_unsqueeze_{4 * c}x{h // 2}x{w // 2}"] = (
        ops.conv1x1_unsqueeze,
        lambda c=c, h=h, w=w: (_r(1, 4 * c, h // 2, w // 2), torch.linalg.inv(_orthogonal(4 * c).double()).float()),
        (0,),
    )
# The same squeezes channels_last, the layout CPU decoding runs in (prepare_for_decoding).
for c, h, w in [(3, H, W), (12, H // 2, W // 2), (48, H // 4, W // 4)]:
    CASES[f"squeeze_nhwc_{c}x{h}x{w}"] = (
        ops.squeeze2x2, lambda c=c, h=h, w=w: (_r(1, c, h, w).contiguous(memory_format=torch.channels_last),), (0,))
    CASES[f"unsqueeze_nhwc_{4 * c}x{h // 2}x{w // 2}"] = (
        ops.unsqueeze2x2,
        lambda c=c, h=h, w=w: (_r(1, 4 * c, h // 2, w // 2).contiguous(memory_format=torch.channels_last),),
        (0,),
    )
CASES["group_mean_2x768x32x48"] = (
    ops.group_mean, lambda: (_r(1, 768, H // 16, W // 16), _r(1, 768, H // 16, W // 16), 192), (0, 1))
CASES[f"decompose_3x{H}x{W}"] = (ops.multiscale_decompose, lambda: (_r(1, 3, H, W),), (0,))
CASES[f"blend_3x{H}x{W}"] = (ops.frequency_blend, lambda: (_r(1, 1, H, W), _r(1, 3, H, W), _r(1, 3, H, W)), (0, 1, 2))


def _outputs(out) -> tuple[torch.Tensor, ...]:
    return out if isinstance(out, tuple) else (out,)


@pytest.mark.parametrize("impl", ["reference", "native"])
@pytest.mark.parametrize("case", list(CASES))
def test_forward(benchmark, case, impl):
    op, make, _ = CASES[case]
    fn = op.impls[impl]
    args = make()
    benchmark.group = f"{case} fwd"
    with torch.no_grad():
        fn(*args)  # warm-up (allocator, first-touch)
        benchmark.pedantic(fn, args=args, rounds=30, iterations=1, warmup_rounds=2)


@pytest.mark.parametrize("impl", ["reference", "native"])
@pytest.mark.parametrize("case", [c for c in CASES if "squeeze" not in c or c.endswith("256x384")])
def test_forward_backward(benchmark, case, impl):
    op, make, diff = CASES[case]
    fn = op.impls[impl]
    args = list(make())
    for i in diff:
        args[i].requires_grad_()
    grads = [torch.randn_like(o) for o in _outputs(fn(*args))]

    def step():
        outs = _outputs(fn(*args))
        torch.autograd.grad(outs, [args[i] for i in diff], grads)

    benchmark.group = f"{case} fwd+bwd"
    step()
    benchmark.pedantic(step, rounds=15, iterations=1, warmup_rounds=1)
