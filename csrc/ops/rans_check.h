// Argument checks of native_rans_decode and native_rans_decode_step, shared by their CPU
// and CUDA kernels.
#pragma once

#include <ATen/ATen.h>

#include "ops/rans_decode.h"

namespace ainn_fast {

// The coder's state, words, the rows' streams and the CDF tables.
inline void check_coder_inputs(const char* op, const at::Tensor& state, const at::Tensor& words,
                               const at::Tensor& row_stream, const at::Tensor& cdf, const at::Tensor& cdf_length,
                               const at::Tensor& offset, at::DeviceType device) {
  static_assert(sizeof(rans::Stream) == 3 * sizeof(int64_t), "a stream's state is three int64 entries");
  for (const at::Tensor* t : {&state, &words, &row_stream, &cdf, &cdf_length, &offset}) {
    TORCH_CHECK(t->device().type() == device && t->device() == state.device(), op, ": all tensors on one device");
    TORCH_CHECK(t->is_contiguous(), op, ": tensors must be contiguous");
  }
  TORCH_CHECK(state.scalar_type() == at::kLong && state.dim() == 2 && state.size(1) == 3, op,
              ": state must be int64 (streams, 3): x, next word, end");
  TORCH_CHECK(words.scalar_type() == at::kInt && words.dim() == 1, op, ": words must be a 1-d int32 tensor");
  TORCH_CHECK(row_stream.scalar_type() == at::kLong && row_stream.dim() == 1, op, ": row_stream must be int64 (rows,)");
  TORCH_CHECK(cdf.scalar_type() == at::kInt && cdf.dim() == 2 && cdf.size(0) >= 1 && cdf.size(1) >= 2, op,
              ": cdf must be int32 (tables, entries >= 2)");
  TORCH_CHECK(cdf_length.scalar_type() == at::kInt && offset.scalar_type() == at::kInt &&
                  cdf_length.numel() == cdf.size(0) && offset.numel() == cdf.size(0),
              op, ": cdf_length and offset must be int32 (tables,)");
}

inline void check_rans_inputs(const at::Tensor& state, const at::Tensor& words, const at::Tensor& row_stream,
                              const at::Tensor& index, const at::Tensor& cdf, const at::Tensor& cdf_length,
                              const at::Tensor& offset, at::ScalarType dtype, at::DeviceType device) {
  const char* op = "native_rans_decode";
  check_coder_inputs(op, state, words, row_stream, cdf, cdf_length, offset, device);
  TORCH_CHECK(index.device() == state.device() && index.is_contiguous() && index.scalar_type() == at::kLong &&
                  index.dim() == 2 && index.size(0) == row_stream.size(0),
              op, ": index must be contiguous int64 (rows, channels), one row per row_stream entry");
  TORCH_CHECK(dtype == at::kDouble || dtype == at::kLong, op, ": output dtype must be float64 or int64");
}

inline void check_rans_step_inputs(const at::Tensor& state, const at::Tensor& words, const at::Tensor& row_stream,
                                   const at::Tensor& gaussian, const at::Tensor& thresholds, const at::Tensor& cdf,
                                   const at::Tensor& cdf_length, const at::Tensor& offset, const at::Tensor& y_rows,
                                   const at::Tensor& write, at::DeviceType device) {
  const char* op = "native_rans_decode_step";
  check_coder_inputs(op, state, words, row_stream, cdf, cdf_length, offset, device);
  for (const at::Tensor* t : {&gaussian, &thresholds, &y_rows}) {
    TORCH_CHECK(t->device() == state.device() && t->is_contiguous() && t->scalar_type() == at::kDouble &&
                    t->dim() == 2,
                op, ": gaussian, thresholds and y_rows must be contiguous 2-d float64 tensors on the state's device");
  }
  const int64_t channels = y_rows.size(1);
  TORCH_CHECK(gaussian.size(0) == row_stream.size(0) && gaussian.size(1) == 2 * channels, op,
              ": gaussian must be (rows, 2 * channels) with channels = y_rows.size(1)");
  TORCH_CHECK(thresholds.size(0) == channels && thresholds.size(1) >= 1, op, ": thresholds must be (channels, n)");
  TORCH_CHECK(write.device() == state.device() && write.is_contiguous() && write.scalar_type() == at::kLong &&
                  write.dim() == 1 && write.numel() == row_stream.size(0),
              op, ": write must be contiguous int64 (rows,)");
}

inline void check_rans_encode_inputs(const at::Tensor& q, const at::Tensor& index, const at::Tensor& position_stream,
                                     const at::Tensor& regions, const at::Tensor& cdf, const at::Tensor& cdf_length,
                                     const at::Tensor& offset, int64_t total_words, at::DeviceType device) {
  const char* op = "native_rans_encode";
  for (const at::Tensor* t : {&q, &index, &position_stream, &regions, &cdf, &cdf_length, &offset}) {
    TORCH_CHECK(t->device().type() == device && t->device() == q.device(), op, ": all tensors on one device");
    TORCH_CHECK(t->is_contiguous(), op, ": tensors must be contiguous");
  }
  TORCH_CHECK(q.scalar_type() == at::kInt && q.dim() == 2, op, ": q must be int32 (positions, channels)");
  TORCH_CHECK(index.scalar_type() == at::kLong && index.sizes() == q.sizes(), op, ": index must be int64 like q");
  TORCH_CHECK(position_stream.scalar_type() == at::kLong && position_stream.dim() == 1 &&
                  position_stream.size(0) == q.size(0),
              op, ": position_stream must be int64 (positions,)");
  TORCH_CHECK(regions.scalar_type() == at::kLong && regions.dim() == 2 && regions.size(1) == 2, op,
              ": regions must be int64 (streams, 2): each stream's [first, end) words");
  TORCH_CHECK(total_words >= 0, op, ": total_words must be >= 0");
  TORCH_CHECK(cdf.scalar_type() == at::kInt && cdf.dim() == 2 && cdf.size(0) >= 1 && cdf.size(1) >= 2, op,
              ": cdf must be int32 (tables, entries >= 2)");
  TORCH_CHECK(cdf_length.scalar_type() == at::kInt && offset.scalar_type() == at::kInt &&
                  cdf_length.numel() == cdf.size(0) && offset.numel() == cdf.size(0),
              op, ": cdf_length and offset must be int32 (tables,)");
}

}  // namespace ainn_fast
