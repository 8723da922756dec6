// CUDA kernels of the fixed-point entropy parameters of one coding step (docs/format.md,
// ainn_fast/fixed_point.py): the masked context convolution over each position's
// gathered 5x5 window, then the 1x1 entropy-parameter layers, each a matmul whose
// integer-valued float64 sums are exact in any order, requantised by a power of two and
// clamped, LeakyReLU between layers. One kernel per layer instead of the ~35 small
// kernels (gather, matmul, floor, clamp, cat, leaky ...) of the torch path: a GPU decoder
// runs this 141 times for a 768x512 image, one front after another, and each launch
// costs more than its arithmetic.
//
// Exactness: every product and partial sum is an integer below 2^53 (the weights' shift
// bounds each output row's sum of |w| by 2^25 and activations by 2^27), so the fused
// sums equal the torch path's bit for bit whatever the order; floor and clamp are exact.
// tests/test_cuda_emulation.py runs these kernels on the host against that path.
//
// Layout: each thread computes one output channel for kRows positions, reading its
// weight column (coalesced across the block's threads) once per input channel and the
// positions' inputs as broadcasts; four partial sums per position give the float64 FMA
// pipeline independent chains.

#include <torch/library.h>

#include <cmath>
#include <vector>

#include "cuda_utils.cuh"

namespace ainn_fast {
namespace cuda {
namespace {

constexpr int kRows = 4;         // positions per thread
constexpr int kOutThreads = 64;  // output channels per block

__device__ __forceinline__ double requantize(double acc, double inv_scale, double act_max) {
  return fmin(fmax(floor(acc * inv_scale), -act_max), act_max);
}

// out[r, :P2] = params[at[r], :]; out[r, P2 + o] = requantize(bias[o] + sum_{t, c}
// y_rows[window[r, t], c] * w[t * M + c, o]).
__global__ void context_kernel(const double* __restrict__ y_rows, int64_t M, const int64_t* __restrict__ window,
                               int64_t taps, const double* __restrict__ params, int64_t P2,
                               const int64_t* __restrict__ at, int64_t rows, const double* __restrict__ w,
                               const double* __restrict__ bias, int64_t N, double inv_scale, double act_max,
                               double* __restrict__ out) {
  const int64_t o = blockIdx.y * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  const int64_t r0 = blockIdx.x * static_cast<int64_t>(kRows);
  const int64_t width = P2 + N;
  for (int64_t j = o; j < P2; j += static_cast<int64_t>(gridDim.y) * blockDim.x) {
    for (int r = 0; r < kRows && r0 + r < rows; ++r) out[(r0 + r) * width + j] = params[at[r0 + r] * P2 + j];
  }
  if (o >= N) return;
  double acc[kRows][4];
  for (int r = 0; r < kRows; ++r) acc[r][0] = acc[r][1] = acc[r][2] = acc[r][3] = 0.0;
  for (int64_t t = 0; t < taps; ++t) {
    const double* src[kRows];
    for (int r = 0; r < kRows; ++r) {
      const int64_t row = r0 + r < rows ? r0 + r : rows - 1;  // a short tile repeats its last row, unstored
      src[r] = y_rows + window[row * taps + t] * M;
    }
    const double* wt = w + t * M * N + o;
    int64_t c = 0;
    for (; c + 4 <= M; c += 4) {
#pragma unroll
      for (int u = 0; u < 4; ++u) {
        const double wv = wt[(c + u) * N];
#pragma unroll
        for (int r = 0; r < kRows; ++r) acc[r][u] = fma(src[r][c + u], wv, acc[r][u]);
      }
    }
    for (; c < M; ++c) {
      const double wv = wt[c * N];
      for (int r = 0; r < kRows; ++r) acc[r][0] = fma(src[r][c], wv, acc[r][0]);
    }
  }
  for (int r = 0; r < kRows && r0 + r < rows; ++r) {
    const double sum = ((acc[r][0] + acc[r][1]) + (acc[r][2] + acc[r][3])) + bias[o];
    out[(r0 + r) * width + P2 + o] = requantize(sum, inv_scale, act_max);
  }
}

// out[r, o] = leaky(requantize(bias[o] + sum_k x[r, k] * w[k, o])), leaky only when slope > 0:
// max(a, floor(a * slope / 2^16)).
__global__ void dense_kernel(const double* __restrict__ x, int64_t K, int64_t rows, const double* __restrict__ w,
                             const double* __restrict__ bias, int64_t N, double inv_scale, double act_max,
                             int64_t slope, double* __restrict__ out) {
  const int64_t o = blockIdx.y * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  const int64_t r0 = blockIdx.x * static_cast<int64_t>(kRows);
  if (o >= N) return;
  const double* src[kRows];
  for (int r = 0; r < kRows; ++r) src[r] = x + (r0 + r < rows ? r0 + r : rows - 1) * K;
  double acc[kRows][4];
  for (int r = 0; r < kRows; ++r) acc[r][0] = acc[r][1] = acc[r][2] = acc[r][3] = 0.0;
  int64_t k = 0;
  for (; k + 4 <= K; k += 4) {
#pragma unroll
    for (int u = 0; u < 4; ++u) {
      const double wv = w[(k + u) * N + o];
#pragma unroll
      for (int r = 0; r < kRows; ++r) acc[r][u] = fma(src[r][k + u], wv, acc[r][u]);
    }
  }
  for (; k < K; ++k) {
    const double wv = w[k * N + o];
    for (int r = 0; r < kRows; ++r) acc[r][0] = fma(src[r][k], wv, acc[r][0]);
  }
  const double leak = static_cast<double>(slope) / 65536.0;  // exact: slope < 2^16
  for (int r = 0; r < kRows && r0 + r < rows; ++r) {
    double v = requantize(((acc[r][0] + acc[r][1]) + (acc[r][2] + acc[r][3])) + bias[o], inv_scale, act_max);
    if (slope > 0) v = fmax(v, floor(v * leak));
    out[(r0 + r) * N + o] = v;
  }
}

dim3 layer_grid(int64_t rows, int64_t outputs) {
  return dim3(static_cast<unsigned int>((rows + kRows - 1) / kRows),
              static_cast<unsigned int>((outputs + kOutThreads - 1) / kOutThreads));
}

void check_f64(const at::Tensor& t, const at::Tensor& like, int64_t dim, const char* what) {
  TORCH_CHECK(t.scalar_type() == at::kDouble && t.is_contiguous() && t.dim() == dim && t.device() == like.device(),
              "native_entropy_params: ", what, " must be a contiguous float64 tensor of ", dim, " dims on ",
              like.device());
}

at::Tensor entropy_params(const at::Tensor& y_rows, const at::Tensor& params, const at::Tensor& window,
                          const at::Tensor& at_rows, const at::Tensor& ctx_weight, const at::Tensor& ctx_bias,
                          int64_t ctx_shift, at::TensorList weights, at::TensorList biases, at::IntArrayRef shifts,
                          int64_t slope, double act_max) {
  check_f64(y_rows, y_rows, 2, "y_rows");
  check_f64(params, y_rows, 2, "params");
  check_f64(ctx_weight, y_rows, 2, "ctx_weight");
  check_f64(ctx_bias, y_rows, 1, "ctx_bias");
  TORCH_CHECK(window.scalar_type() == at::kLong && window.dim() == 2 && window.is_contiguous() &&
                  at_rows.scalar_type() == at::kLong && at_rows.dim() == 1 && at_rows.is_contiguous() &&
                  at_rows.size(0) == window.size(0) && window.device() == y_rows.device() &&
                  at_rows.device() == y_rows.device(),
              "native_entropy_params: window (rows, taps) and at (rows,) must be contiguous int64 on the same device");
  TORCH_CHECK(!weights.empty() && weights.size() == biases.size() && weights.size() == shifts.size(),
              "native_entropy_params: one bias and one shift per weight");
  const int64_t rows = window.size(0), taps = window.size(1), M = y_rows.size(1), P2 = params.size(1);
  const int64_t N0 = ctx_weight.size(1);
  TORCH_CHECK(ctx_weight.size(0) == taps * M && ctx_bias.numel() == N0,
              "native_entropy_params: ctx_weight must be (taps * M, C) with a bias of C");
  int64_t K = P2 + N0;
  for (size_t l = 0; l < weights.size(); ++l) {
    check_f64(weights[l], y_rows, 2, "each weight");
    check_f64(biases[l], y_rows, 1, "each bias");
    TORCH_CHECK(weights[l].size(0) == K && biases[l].numel() == weights[l].size(1),
                "native_entropy_params: layer ", l, " takes ", weights[l].size(0), " inputs, gets ", K);
    K = weights[l].size(1);
  }
  DeviceGuard guard(y_rows.device());
  at::Tensor x = at::empty({rows, P2 + N0}, y_rows.options());
  if (rows == 0) return at::empty({0, K}, y_rows.options());
  launch(context_kernel, layer_grid(rows, std::max(N0, P2)), kOutThreads, y_rows.const_data_ptr<double>(), M,
         window.const_data_ptr<int64_t>(), taps, params.const_data_ptr<double>(), P2,
         at_rows.const_data_ptr<int64_t>(), rows, ctx_weight.const_data_ptr<double>(),
         ctx_bias.const_data_ptr<double>(), N0, std::ldexp(1.0, -static_cast<int>(ctx_shift)), act_max,
         x.data_ptr<double>());
  for (size_t l = 0; l < weights.size(); ++l) {
    const int64_t N = weights[l].size(1), in = x.size(1);
    at::Tensor y = at::empty({rows, N}, y_rows.options());
    const bool last = l + 1 == weights.size();
    launch(dense_kernel, layer_grid(rows, N), kOutThreads, x.const_data_ptr<double>(), in, rows,
           weights[l].const_data_ptr<double>(), biases[l].const_data_ptr<double>(), N,
           std::ldexp(1.0, -static_cast<int>(shifts[l])), act_max, last ? int64_t{0} : slope, y.data_ptr<double>());
    x = y;
  }
  return x;
}

}  // namespace

#ifndef AINN_CUDA_EMULATION
TORCH_LIBRARY_IMPL(ainn_fast, CUDA, m) { m.impl("native_entropy_params", &entropy_params); }
#endif

}  // namespace cuda
}  // namespace ainn_fast
