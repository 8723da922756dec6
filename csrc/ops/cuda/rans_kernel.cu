// CUDA kernels of the rANS coder (ops/rans_decode.h, ops/rans_encode.h): a stream's
// symbols decode in order, so one thread per stream decodes (or encodes) them, helped in
// the decoding step by its block preparing each position's table rows in parallel. A
// wavefront step has at most one position per stream when the file has enough streams
// (docs/format.md, version 4), so the step costs one position's symbols, and with no host
// round trip the steps can be queued (or captured in a CUDA graph) back to back.

#include <torch/library.h>

#include <tuple>
#include <type_traits>

#include "cuda_utils.cuh"
#include "ops/rans_check.h"
#include "ops/rans_decode.h"
#include "ops/rans_encode.h"

namespace ainn_fast {
namespace cuda {
namespace {

constexpr int kStreamThreads = 64;

#ifndef AINN_CUDA_EMULATION
constexpr at::DeviceType kTensorDevice = at::kCUDA;
#else
constexpr at::DeviceType kTensorDevice = at::kCPU;  // the emulation runs on CPU tensors
#endif

// Both decoding kernels run one block of 32 threads per stream. For each of the stream's
// rows in the call, the threads find a chunk of channels' table rows and search starts
// together (loads independent of the coder's state: thresholds, table lookups, the CDF
// values around the symbol of value 0), thread 0 decodes the chunk's symbols in order,
// which for most symbols needs no load at all, and the threads write the results
// together. The serial part per symbol drops from about a dozen dependent loads to a few
// instructions. `Rows` says where a symbol's table row comes from and where it goes.
constexpr int kStepThreads = 32;
constexpr int kStepChunk = 128;  // channels prepared at a time (shared memory per block)

template <typename Rows>
__device__ void decode_stream_rows(rans::Stream* state, const uint32_t* words, const int64_t* row_stream,
                                   int64_t rows, int64_t channels, const int32_t* cdf, int64_t stride,
                                   const int32_t* cdf_length, const int32_t* offset, int64_t tables,
                                   const Rows& io) {
  __shared__ rans::TableRow table[kStepChunk];
  __shared__ rans::SearchStart start[kStepChunk];
  __shared__ int32_t q[kStepChunk];
  const int64_t s = blockIdx.x;  // every thread of a block takes the same branches: the barriers match
  const int lane = static_cast<int>(threadIdx.x);
  rans::Stream local{};
  if (lane == 0) local = state[s];
  for (int64_t r = 0; r < rows; ++r) {
    if (row_stream[r] != s) continue;
    for (int64_t c0 = 0; c0 < channels; c0 += kStepChunk) {
      const int64_t n = channels - c0 < kStepChunk ? channels - c0 : kStepChunk;
      for (int64_t i = lane; i < n; i += kStepThreads) {
        table[i] = rans::table_row(io.table(r, c0 + i), cdf, stride, cdf_length, offset, tables);
        start[i] = rans::search_start(table[i]);
      }
      __syncthreads();
      if (lane == 0) {
        for (int64_t i = 0; i < n; ++i) q[i] = rans::decode_symbol(local, words, table[i], start[i]);
      }
      __syncthreads();  // the next chunk's tables and symbols are written after these are read
      for (int64_t i = lane; i < n; i += kStepThreads) io.put(r, c0 + i, q[i]);
    }
  }
  if (lane == 0) state[s] = local;
}

// native_rans_decode: the table rows given, the symbols out.
template <typename Out>
struct GivenRows {
  const int64_t* index;
  Out* out;
  int64_t channels;
  __device__ int64_t table(int64_t r, int64_t c) const { return index[r * channels + c]; }
  __device__ void put(int64_t r, int64_t c, int32_t symbol) const { out[r * channels + c] = static_cast<Out>(symbol); }
};

template <typename Out>
__global__ void rans_decode_kernel(rans::Stream* state, const uint32_t* words, const int64_t* row_stream,
                                   int64_t rows, const int32_t* cdf, int64_t stride, const int32_t* cdf_length,
                                   const int32_t* offset, int64_t tables, GivenRows<Out> io) {
  decode_stream_rows(state, words, row_stream, rows, io.channels, cdf, stride, cdf_length, offset, tables, io);
}

at::Tensor rans_decode(const at::Tensor& state, const at::Tensor& words, const at::Tensor& row_stream,
                       const at::Tensor& index, const at::Tensor& cdf, const at::Tensor& cdf_length,
                       const at::Tensor& offset, at::ScalarType dtype) {
  check_rans_inputs(state, words, row_stream, index, cdf, cdf_length, offset, dtype, kTensorDevice);
  DeviceGuard guard(state.device());
  const int64_t rows = index.size(0), channels = index.size(1), streams = state.size(0);
  at::Tensor out = at::zeros({rows, channels}, index.options().dtype(dtype));
  if (streams == 0 || rows == 0) return out;
  auto* st = reinterpret_cast<rans::Stream*>(state.data_ptr<int64_t>());
  const auto* w = reinterpret_cast<const uint32_t*>(words.const_data_ptr<int32_t>());
  auto run = [&](auto* o) {
    using Out = std::remove_pointer_t<decltype(o)>;
    launch(rans_decode_kernel<Out>, static_cast<unsigned int>(streams), kStepThreads, st, w,
           row_stream.const_data_ptr<int64_t>(), rows, cdf.const_data_ptr<int32_t>(), cdf.size(1),
           cdf_length.const_data_ptr<int32_t>(), offset.const_data_ptr<int32_t>(), cdf.size(0),
           GivenRows<Out>{index.const_data_ptr<int64_t>(), o, channels});
  };
  if (dtype == at::kDouble) {
    run(out.data_ptr<double>());
  } else {
    run(out.data_ptr<int64_t>());
  }
  return out;
}

// The decoding step: each symbol's table row from its scale (the channel's thresholds
// below it), its y_hat integer clamp(q * unit + mean) into row write[r] of y_rows.
struct StepRows {
  const double* gaussian;  // (rows, 2 * channels): scales, then means
  const double* thresholds;
  int64_t n_thresholds;
  const int64_t* write;
  double* y_rows;
  int64_t channels;
  double unit, act_max;
  __device__ int64_t table(int64_t r, int64_t c) const {
    return rans::scale_row(thresholds + c * n_thresholds, n_thresholds, gaussian[r * 2 * channels + c]);
  }
  __device__ void put(int64_t r, int64_t c, int32_t symbol) const {
    const double mean = gaussian[(r * 2 + 1) * channels + c];
    y_rows[write[r] * channels + c] = rans::clamp_y(static_cast<double>(symbol) * unit + mean, act_max);
  }
};

__global__ void rans_step_kernel(rans::Stream* state, const uint32_t* words, const int64_t* row_stream, int64_t rows,
                                 const int32_t* cdf, int64_t stride, const int32_t* cdf_length, const int32_t* offset,
                                 int64_t tables, StepRows io) {
  decode_stream_rows(state, words, row_stream, rows, io.channels, cdf, stride, cdf_length, offset, tables, io);
}

void rans_decode_step(const at::Tensor& state, const at::Tensor& words, const at::Tensor& row_stream,
                      const at::Tensor& gaussian, const at::Tensor& thresholds, const at::Tensor& cdf,
                      const at::Tensor& cdf_length, const at::Tensor& offset, const at::Tensor& y_rows,
                      const at::Tensor& write, double unit, double act_max) {
  check_rans_step_inputs(state, words, row_stream, gaussian, thresholds, cdf, cdf_length, offset, y_rows, write,
                         kTensorDevice);
  DeviceGuard guard(state.device());
  const int64_t streams = state.size(0);
  if (streams == 0 || row_stream.size(0) == 0) return;
  const StepRows io{gaussian.const_data_ptr<double>(), thresholds.const_data_ptr<double>(), thresholds.size(1),
                    write.const_data_ptr<int64_t>(), y_rows.data_ptr<double>(), y_rows.size(1), unit, act_max};
  launch(rans_step_kernel, static_cast<unsigned int>(streams), kStepThreads,
         reinterpret_cast<rans::Stream*>(state.data_ptr<int64_t>()),
         reinterpret_cast<const uint32_t*>(words.const_data_ptr<int32_t>()), row_stream.const_data_ptr<int64_t>(),
         row_stream.size(0), cdf.const_data_ptr<int32_t>(), cdf.size(1), cdf_length.const_data_ptr<int32_t>(),
         offset.const_data_ptr<int32_t>(), cdf.size(0), io);
}

__global__ void rans_encode_kernel(int64_t streams, const int64_t* position_stream, int64_t positions,
                                   const int32_t* q, const int64_t* index, int64_t channels, const int32_t* cdf,
                                   int64_t stride, const int32_t* cdf_length, const int32_t* offset, int64_t tables,
                                   uint32_t* words, const int64_t* regions, int64_t* begin) {
  const int64_t s = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (s >= streams) return;
  begin[s] = rans::encode_stream(s, position_stream, positions, q, index, channels, cdf, stride, cdf_length, offset,
                                 tables, words, regions[2 * s], regions[2 * s + 1]);
}

std::tuple<at::Tensor, at::Tensor> rans_encode(const at::Tensor& q, const at::Tensor& index,
                                               const at::Tensor& position_stream, const at::Tensor& regions,
                                               const at::Tensor& cdf, const at::Tensor& cdf_length,
                                               const at::Tensor& offset, int64_t total_words) {
  check_rans_encode_inputs(q, index, position_stream, regions, cdf, cdf_length, offset, total_words, kTensorDevice);
  DeviceGuard guard(q.device());
  at::Tensor words = at::zeros({total_words}, q.options().dtype(at::kInt));
  at::Tensor begin = at::empty({regions.size(0)}, regions.options());
  const int64_t streams = regions.size(0);
  if (streams == 0) return {words, begin};
  const unsigned int blocks = static_cast<unsigned int>((streams + kStreamThreads - 1) / kStreamThreads);
  launch(rans_encode_kernel, blocks, kStreamThreads, streams, position_stream.const_data_ptr<int64_t>(), q.size(0),
         q.const_data_ptr<int32_t>(), index.const_data_ptr<int64_t>(), q.size(1), cdf.const_data_ptr<int32_t>(),
         cdf.size(1), cdf_length.const_data_ptr<int32_t>(), offset.const_data_ptr<int32_t>(), cdf.size(0),
         reinterpret_cast<uint32_t*>(words.data_ptr<int32_t>()), regions.const_data_ptr<int64_t>(),
         begin.data_ptr<int64_t>());
  return {words, begin};
}

}  // namespace

#ifndef AINN_CUDA_EMULATION
TORCH_LIBRARY_IMPL(ainn_fast, CUDA, m) {
  m.impl("native_rans_decode", &rans_decode);
  m.impl("native_rans_decode_step", &rans_decode_step);
  m.impl("native_rans_encode", &rans_encode);
}
#endif

}  // namespace cuda
}  // namespace ainn_fast
