// Helpers shared by the CUDA kernels (compiled only when the build has CUDA, or on the
// host under AINN_CUDA_EMULATION: see emulation.h).
#pragma once

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>

#include <algorithm>
#include <cstdint>
#include <limits>

#ifdef AINN_CUDA_EMULATION
#include "emulation.h"
#else
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif

// Not ATen/cuda/CUDAContext.h: it pulls in cuSPARSE/cuBLAS headers, which a minimal CUDA
// toolkit (nvcc + runtime, as on the CI machine) does not have, and the kernels need none.

namespace ainn_fast {
namespace cuda {

constexpr int kThreads = 256;

#ifndef AINN_CUDA_EMULATION
using DeviceGuard = c10::cuda::CUDAGuard;

inline int multiprocessor_count() {
  int device = 0, sm_count = 0;
  C10_CUDA_CHECK(cudaGetDevice(&device));
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&sm_count, cudaDevAttrMultiProcessorCount, device));
  return sm_count;
}

inline void check_cuda(const at::Tensor& t, const char* op) {
  TORCH_CHECK(t.is_cuda(), op, ": expected a CUDA tensor");
}

// Every kernel launch goes through here (the emulation has its own), on the current stream.
template <typename... Params, typename... Args>
void launch(void (*kernel)(Params...), dim3 grid, dim3 block, Args... args) {
  kernel<<<grid, block, 0, c10::cuda::getCurrentCUDAStream().stream()>>>(static_cast<Params>(args)...);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}
#else
inline int multiprocessor_count() { return emulation::multiprocessors; }
#endif

// Enough blocks to fill the GPU a few times over; the kernels loop grid-stride beyond that.
inline unsigned int blocks_for(int64_t n) {
  const int64_t sms = multiprocessor_count();
  const int64_t need = (n + kThreads - 1) / kThreads;
  return static_cast<unsigned int>(std::max<int64_t>(1, std::min<int64_t>(need, sms * 32)));
}

// A grid-stride loop over [0, n) with index type I.
#define AINN_GRID_STRIDE(I, i, n) \
  for (I i = blockIdx.x * (I)blockDim.x + threadIdx.x; i < (n); i += (I)blockDim.x * gridDim.x)

// Index arithmetic in 32 bits where it fits: NVIDIA GPUs divide 64-bit integers in
// software (tens of instructions), and the kernels that split a flat index into
// (b, c, y, x) do several divisions per element, enough to make a copy compute-bound.
// Half the int32 range, so that i + the grid stride cannot overflow.
#ifndef AINN_CUDA_EMULATION
inline int64_t int32_index_limit() { return std::numeric_limits<int32_t>::max() / 2; }
#else
inline int64_t int32_index_limit() { return emulation::int32_index_limit; }
#endif

// f(I{}) with I = int32_t when every index below n fits, else int64_t.
template <typename F>
void with_index_type(int64_t n, F&& f) {
  if (n <= int32_index_limit()) {
    f(int32_t{});
  } else {
    f(int64_t{});
  }
}

template <typename T>
__device__ __forceinline__ T sigmoid(T x) {
  return T(1) / (T(1) + exp(-x));
}

}  // namespace cuda
}  // namespace ainn_fast
