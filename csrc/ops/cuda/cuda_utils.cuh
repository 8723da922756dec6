// Helpers shared by the CUDA kernels (compiled only when the build has CUDA).
#pragma once

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

// Not ATen/cuda/CUDAContext.h: it pulls in cuSPARSE/cuBLAS headers, which a minimal CUDA
// toolkit (nvcc + runtime, as on the CI machine) does not have, and the kernels need none.

namespace ainn_fast {
namespace cuda {

constexpr int kThreads = 256;

// Enough blocks to fill the GPU a few times over; the kernels loop grid-stride beyond that.
inline unsigned int blocks_for(int64_t n) {
  int device = 0, sm_count = 0;
  C10_CUDA_CHECK(cudaGetDevice(&device));
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&sm_count, cudaDevAttrMultiProcessorCount, device));
  const int64_t sms = sm_count;
  const int64_t need = (n + kThreads - 1) / kThreads;
  return static_cast<unsigned int>(std::max<int64_t>(1, std::min<int64_t>(need, sms * 32)));
}

#define AINN_GRID_STRIDE(i, n) \
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < (n); i += (int64_t)blockDim.x * gridDim.x)

template <typename T>
__device__ __forceinline__ T sigmoid(T x) {
  return T(1) / (T(1) + exp(-x));
}

inline void check_cuda(const at::Tensor& t, const char* op) {
  TORCH_CHECK(t.is_cuda(), op, ": expected a CUDA tensor");
}

inline cudaStream_t stream() { return c10::cuda::getCurrentCUDAStream().stream(); }

}  // namespace cuda
}  // namespace ainn_fast
