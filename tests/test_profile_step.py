"""benchmarks/profile_step.py, the GPU host's tool for splitting a training step's time:
it must name kernels rightly and run end to end (here on the CPU, its dry run)."""

import importlib.util
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "profile_step.py"
spec = importlib.util.spec_from_file_location("profile_step", _PATH)
profile_step = importlib.util.module_from_spec(spec)
spec.loader.exec_module(profile_step)


@pytest.mark.parametrize(
    "name, expected",
    [  # kernel names as the H200 profiles of 2026-12-04 and cuDNN 9 show them
        ("sm90_xmma_fprop_implicit_gemm_tf32f32_tf32f32_f32_nhwckrsc_nhwc_tilesize128x128x32", "convolution and GEMM"),
        ("sm90_xmma_wgrad_implicit_gemm_indexed_tf32f32_tf32f32_f32_nhwckrsc_nhwc", "convolution and GEMM"),
        ("cutlass::Kernel2<cutlass_80_tensorop_s1688gemm_128x128_32x3_nn_align4>", "convolution and GEMM"),
        ("cudnn::bn_fw_tr_1C11_singleread<float, 512, true, 1, 2, 0>", "batch norm"),
        ("void at::native::batch_norm_backward_kernel<float, float, float, int>", "batch norm"),
        ("void nchwToNhwcKernel<float, float, float, true, false, (cudnnKernelDataType_t)2>", "layout and copies"),
        ("void at::native::elementwise_kernel<128, 2, at::native::direct_copy_kernel_cuda>", "layout and copies"),
        ("Memcpy DtoH (Device -> Pinned)", "layout and copies"),
        ("_coupling_backward_kernel", "fused ainn_fast ops"),
        ("coupling_forward_kernel", "fused ainn_fast ops"),
        ("_group_mean_kernel", "fused ainn_fast ops"),
        ("ainn_fast::native_affine_coupling_inverse", "fused ainn_fast ops"),
        ("void at::native::multi_tensor_apply_kernel<at::native::FusedAdamMathFunctor<float, 4>>", "optimizer"),
        ("void getrf_pivot<float>", "linear algebra"),
        ("void at::native::vectorized_elementwise_kernel<4, at::native::CUDAFunctor_add<float>>", "elementwise"),
        ("void at::native::reduce_kernel<512, 1, at::native::ReduceOp<float, at::native::func_wrapper_t>>", "reductions"),
        ("aten::convolution_backward", "convolution and GEMM"),
        ("aten::native_batch_norm", "batch norm"),
        ("aten::copy_", "layout and copies"),
        ("aten::sigmoid", "elementwise"),
        ("something_else", "other"),
    ],
)
def test_kernels_are_named_by_what_they_do(name, expected):
    assert profile_step.category(name) == expected


def test_cpu_dry_run_splits_a_real_step(capsys):
    result = profile_step.main(
        ["--device", "cpu", "--config", "tiny", "--quality", "1", "--batch-size", "1", "--patch-size", "64",
         "--backends", "reference", "--steps", "1", "--top", "50"]
    )["reference"]  # fmt: skip
    split = result["by_category"]
    # Every op's time lands in exactly one category, and the top list holds the same ops.
    assert sum(split.values()) == pytest.approx(sum(ms for _, ms, _ in result["top"]), rel=0.05)
    # A training step of the tiny model is mostly convolutions (and their backward).
    assert max(split, key=split.get) == "convolution and GEMM"
    assert result["count"] > 1000 and result["wall_ms"] > 0
    assert "== reference:" in capsys.readouterr().out


def test_cpu_dry_run_of_the_synthesis():
    result = profile_step.main(
        ["--device", "cpu", "--part", "synthesis", "--config", "tiny", "--quality", "1", "--backends", "native",
         "--steps", "1", "--top", "100"]
    )["native"]  # fmt: skip
    split = result["by_category"]
    assert max(split, key=split.get) == "convolution and GEMM"
    assert split["fused ainn_fast ops"] > 0  # the native backend's inverse couplings and squeezes
    assert sum(split.values()) == pytest.approx(sum(ms for _, ms, _ in result["top"]), rel=0.05)
