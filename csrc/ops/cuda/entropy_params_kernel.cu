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
// Layout: one warp per output channel and kTileRows positions, its 32 lanes splitting the
// sum over the inputs (coalesced loads of the weight row, which is why the weights come
// as (outputs, inputs), and of each position's inputs), then a butterfly across the lanes.
// A coding step has few positions (16 for a 768x512 front) and each output channel sums
// 512 to 1536 products: the first version, one thread per output and four positions
// summing all of them in turn, kept only 16 blocks busy and waited on one load after
// another, about 1.2 ms a step on an H200 (benchmarks/results/h200_2026-12-04b.md), more
// than the torch ops it replaced. Split across lanes, a thread sums 48 products at most.

#include <torch/library.h>

#include <cmath>
#include <vector>

#include "cuda_utils.cuh"

namespace ainn_fast {
namespace cuda {
namespace {

constexpr int kTileRows = 8;  // positions per warp: the butterfly below sums eight
constexpr int kWarps = 8;     // warps per block
constexpr int kBlockThreads = 32 * kWarps;

__device__ __forceinline__ double requantize(double acc, double inv_scale, double act_max) {
  return fmin(fmax(floor(acc * inv_scale), -act_max), act_max);
}

// The lane's position in its tile after warp_row_sums.
__device__ __forceinline__ int summed_row(int lane) {
  return ((lane >> 4) & 1) * 4 + ((lane >> 3) & 1) * 2 + ((lane >> 2) & 1);
}

// Reduce-scatter of each lane's eight partial sums (one per position of the tile) over the
// warp: every lane returns the warp's total for position summed_row(lane), in seven
// shuffles instead of forty. Exact in any order: the sums are integers below 2^53.
__device__ __forceinline__ double warp_row_sums(double (&v)[kTileRows], int lane) {
  const bool b4 = lane & 16, b3 = lane & 8, b2 = lane & 4;
#pragma unroll
  for (int i = 0; i < 4; ++i) {  // lanes with bit 4 keep positions 4..7, the others 0..3
    const double send = b4 ? v[i] : v[i + 4], keep = b4 ? v[i + 4] : v[i];
    v[i] = keep + __shfl_xor_sync(0xffffffffu, send, 16);
  }
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    const double send = b3 ? v[i] : v[i + 2], keep = b3 ? v[i + 2] : v[i];
    v[i] = keep + __shfl_xor_sync(0xffffffffu, send, 8);
  }
  const double send = b2 ? v[0] : v[1], keep = b2 ? v[1] : v[0];
  const double s = keep + __shfl_xor_sync(0xffffffffu, send, 4);
  const double t = s + __shfl_xor_sync(0xffffffffu, s, 2);
  return t + __shfl_xor_sync(0xffffffffu, t, 1);
}

// The warp's output channel and first position; warps past the last tile compute a
// clamped copy and store nothing (every lane must reach the shuffles).
struct WarpTile {
  int64_t o, r0;
  bool active;
};

__device__ __forceinline__ WarpTile warp_tile(int64_t outputs, int64_t rows) {
  const int64_t warp = blockIdx.x * static_cast<int64_t>(kWarps) + (threadIdx.x >> 5);
  const int64_t tiles = (rows + kTileRows - 1) / kTileRows;
  const bool active = warp < outputs * tiles;
  // Consecutive warps take consecutive channels of one tile: they read the same inputs.
  return {active ? warp % outputs : 0, active ? (warp / outputs) * kTileRows : 0, active};
}

// acc[r] += the products src[r][k] * w[k] of this lane's k (lane, lane + 32, ... < n).
__device__ __forceinline__ void lane_products(double (&acc)[kTileRows], const double* const (&src)[kTileRows],
                                              const double* w, int64_t n, int lane) {
#pragma unroll 4  // four iterations' loads in flight before their products wait on them
  for (int64_t k = lane; k < n; k += 32) {
    const double wv = w[k];
#pragma unroll
    for (int r = 0; r < kTileRows; ++r) acc[r] = fma(src[r][k], wv, acc[r]);
  }
}

// The warp's totals: true in the lane that stores one of the tile's positions (its row in
// *row, the total in *sum); every lane must call it (the shuffles).
__device__ __forceinline__ bool tile_total(double (&acc)[kTileRows], const WarpTile& tile, int64_t rows, int lane,
                                           int64_t* row, double* sum) {
  *sum = warp_row_sums(acc, lane);
  *row = tile.r0 + summed_row(lane);
  return tile.active && (lane & 3) == 0 && *row < rows;
}

// out[r, :P2] = params[at[r], :]; out[r, P2 + o] = requantize(bias[o] + sum_{t, c}
// y_rows[window[r, t], c] * w[o, t * M + c]).
__global__ void context_kernel(const double* __restrict__ y_rows, int64_t M, const int64_t* __restrict__ window,
                               int64_t taps, const double* __restrict__ params, int64_t P2,
                               const int64_t* __restrict__ at, int64_t rows, const double* __restrict__ w,
                               const double* __restrict__ bias, int64_t N, double inv_scale, double act_max,
                               double* __restrict__ out) {
  const int64_t width = P2 + N;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < rows * P2;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = i / P2, j = i - r * P2;
    out[r * width + j] = params[at[r] * P2 + j];
  }
  const int lane = threadIdx.x & 31;
  const WarpTile tile = warp_tile(N, rows);
  double acc[kTileRows] = {};
  const double* wo = w + tile.o * taps * M;
  for (int64_t t = 0; t < taps; ++t) {
    const double* src[kTileRows];
#pragma unroll
    for (int r = 0; r < kTileRows; ++r) {  // a short tile repeats its last position, unstored
      const int64_t row = tile.r0 + r < rows ? tile.r0 + r : rows - 1;
      src[r] = y_rows + window[row * taps + t] * M;
    }
    lane_products(acc, src, wo + t * M, M, lane);
  }
  int64_t row;
  double sum;
  if (tile_total(acc, tile, rows, lane, &row, &sum)) {
    out[row * width + P2 + tile.o] = requantize(sum + bias[tile.o], inv_scale, act_max);
  }
}

// out[r, o] = leaky(requantize(bias[o] + sum_k x[r, k] * w[o, k])), leaky only when slope > 0:
// max(a, floor(a * slope / 2^16)).
__global__ void dense_kernel(const double* __restrict__ x, int64_t K, int64_t rows, const double* __restrict__ w,
                             const double* __restrict__ bias, int64_t N, double inv_scale, double act_max,
                             int64_t slope, double* __restrict__ out) {
  const int lane = threadIdx.x & 31;
  const WarpTile tile = warp_tile(N, rows);
  const double* src[kTileRows];
#pragma unroll
  for (int r = 0; r < kTileRows; ++r) src[r] = x + (tile.r0 + r < rows ? tile.r0 + r : rows - 1) * K;
  double acc[kTileRows] = {};
  lane_products(acc, src, w + tile.o * K, K, lane);
  int64_t row;
  double sum;
  if (tile_total(acc, tile, rows, lane, &row, &sum)) {
    double v = requantize(sum + bias[tile.o], inv_scale, act_max);
    if (slope > 0) v = fmax(v, floor(v * (static_cast<double>(slope) / 65536.0)));  // exact: slope < 2^16
    out[row * N + tile.o] = v;
  }
}

unsigned int layer_blocks(int64_t rows, int64_t outputs) {
  const int64_t warps = outputs * ((rows + kTileRows - 1) / kTileRows);
  return static_cast<unsigned int>((warps + kWarps - 1) / kWarps);
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
  const int64_t N0 = ctx_weight.size(0);
  TORCH_CHECK(ctx_weight.size(1) == taps * M && ctx_bias.numel() == N0,
              "native_entropy_params: ctx_weight must be (C, taps * M) with a bias of C");
  int64_t K = P2 + N0;
  for (size_t l = 0; l < weights.size(); ++l) {
    check_f64(weights[l], y_rows, 2, "each weight");
    check_f64(biases[l], y_rows, 1, "each bias");
    TORCH_CHECK(weights[l].size(1) == K && biases[l].numel() == weights[l].size(0),
                "native_entropy_params: layer ", l, " (outputs, inputs) takes ", weights[l].size(1), " inputs, gets ",
                K);
    K = weights[l].size(0);
  }
  DeviceGuard guard(y_rows.device());
  at::Tensor x = at::empty({rows, P2 + N0}, y_rows.options());
  if (rows == 0) return at::empty({0, K}, y_rows.options());
  launch(context_kernel, layer_blocks(rows, N0), kBlockThreads, y_rows.const_data_ptr<double>(), M,
         window.const_data_ptr<int64_t>(), taps, params.const_data_ptr<double>(), P2,
         at_rows.const_data_ptr<int64_t>(), rows, ctx_weight.const_data_ptr<double>(),
         ctx_bias.const_data_ptr<double>(), N0, std::ldexp(1.0, -static_cast<int>(ctx_shift)), act_max,
         x.data_ptr<double>());
  for (size_t l = 0; l < weights.size(); ++l) {
    const int64_t N = weights[l].size(0), in = x.size(1);
    at::Tensor y = at::empty({rows, N}, y_rows.options());
    const bool last = l + 1 == weights.size();
    launch(dense_kernel, layer_blocks(rows, N), kBlockThreads, x.const_data_ptr<double>(), in, rows,
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
