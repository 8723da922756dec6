// Argument checks of native_rans_decode, shared by its CPU and CUDA kernels.
#pragma once

#include <ATen/ATen.h>

#include "ops/rans_decode.h"

namespace ainn_fast {

inline void check_rans_inputs(const at::Tensor& state, const at::Tensor& words, const at::Tensor& row_stream,
                              const at::Tensor& index, const at::Tensor& cdf, const at::Tensor& cdf_length,
                              const at::Tensor& offset, at::ScalarType dtype, at::DeviceType device) {
  static_assert(sizeof(rans::Stream) == 3 * sizeof(int64_t), "a stream's state is three int64 entries");
  const char* op = "native_rans_decode";
  for (const at::Tensor* t : {&state, &words, &row_stream, &index, &cdf, &cdf_length, &offset}) {
    TORCH_CHECK(t->device().type() == device && t->device() == state.device(), op, ": all tensors on one device");
    TORCH_CHECK(t->is_contiguous(), op, ": tensors must be contiguous");
  }
  TORCH_CHECK(state.scalar_type() == at::kLong && state.dim() == 2 && state.size(1) == 3, op,
              ": state must be int64 (streams, 3): x, next word, end");
  TORCH_CHECK(words.scalar_type() == at::kInt && words.dim() == 1, op, ": words must be a 1-d int32 tensor");
  TORCH_CHECK(index.scalar_type() == at::kLong && index.dim() == 2, op, ": index must be int64 (rows, channels)");
  TORCH_CHECK(row_stream.scalar_type() == at::kLong && row_stream.dim() == 1 && row_stream.size(0) == index.size(0),
              op, ": row_stream must be int64 (rows,)");
  TORCH_CHECK(cdf.scalar_type() == at::kInt && cdf.dim() == 2 && cdf.size(0) >= 1 && cdf.size(1) >= 2, op,
              ": cdf must be int32 (tables, entries >= 2)");
  TORCH_CHECK(cdf_length.scalar_type() == at::kInt && offset.scalar_type() == at::kInt &&
                  cdf_length.numel() == cdf.size(0) && offset.numel() == cdf.size(0),
              op, ": cdf_length and offset must be int32 (tables,)");
  TORCH_CHECK(dtype == at::kDouble || dtype == at::kLong, op, ": output dtype must be float64 or int64");
}

}  // namespace ainn_fast
