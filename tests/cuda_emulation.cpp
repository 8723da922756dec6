// The CUDA kernels of csrc/ops/cuda compiled for the host: the .cu files themselves, with
// csrc/ops/cuda/emulation.h standing in for the CUDA runtime, so their launchers and
// kernels run on CPU tensors. Built and checked against the reference ops by
// tests/test_cuda_emulation.py; not part of the extension.

#define AINN_CUDA_EMULATION

#include <torch/library.h>

#include "ops/cuda/coupling_kernel.cu"
#include "ops/cuda/entropy_params_kernel.cu"
#include "ops/cuda/frequency_kernel.cu"
#include "ops/cuda/rans_kernel.cu"
#include "ops/cuda/squeeze_kernel.cu"

namespace {

void set_multiprocessors(int64_t n) {
  TORCH_CHECK(n >= 1, "set_multiprocessors: need at least one");
  ainn_fast::cuda::emulation::multiprocessors = static_cast<int>(n);
}

void set_int32_index_limit(int64_t n) { ainn_fast::cuda::emulation::int32_index_limit = n; }

int64_t get_int32_index_limit() { return ainn_fast::cuda::emulation::int32_index_limit; }

}  // namespace

// The same op names and signatures as the CUDA key of torch.ops.ainn_fast (csrc/ops/ops.cpp).
TORCH_LIBRARY(ainn_fast_cuda_emulation, m) {
  using namespace ainn_fast::cuda;
  m.def("native_affine_coupling", &affine_coupling);
  m.def("native_affine_coupling_inverse", &affine_coupling_inverse);
  m.def("native_affine_coupling_backward", &affine_coupling_backward);
  m.def("native_affine_coupling_inverse_backward", &affine_coupling_inverse_backward);
  m.def("native_squeeze2x2", &squeeze2x2);
  m.def("native_unsqueeze2x2", &unsqueeze2x2);
  m.def("native_group_mean", &group_mean);
  m.def("native_group_mean_backward", &group_mean_backward);
  m.def("native_multiscale_decompose", &multiscale_decompose);
  m.def("native_multiscale_decompose_backward", &multiscale_decompose_backward);
  m.def("native_frequency_blend", &frequency_blend);
  m.def("native_frequency_blend_backward", &frequency_blend_backward);
  m.def("native_rans_decode", &rans_decode);
  m.def("native_rans_decode_step", &rans_decode_step);
  m.def("native_rans_encode", &rans_encode);
  m.def("native_entropy_params", &entropy_params);
  m.def("set_multiprocessors", &set_multiprocessors);
  m.def("set_int32_index_limit", &set_int32_index_limit);
  m.def("get_int32_index_limit", &get_int32_index_limit);
}
