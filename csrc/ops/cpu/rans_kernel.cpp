// CPU kernels of the rANS decoding (ops/rans_decode.h): the streams of a wavefront step
// decode in parallel, each its own rows in order; the step variant also picks each
// symbol's table row from its scale and writes the position's y_hat.

#include <ATen/Parallel.h>
#include <torch/library.h>

#include <tuple>

#include "ops/rans_check.h"
#include "ops/rans_decode.h"
#include "ops/rans_encode.h"

namespace ainn_fast {
namespace cpu {
namespace {

at::Tensor rans_decode(const at::Tensor& state, const at::Tensor& words, const at::Tensor& row_stream,
                       const at::Tensor& index, const at::Tensor& cdf, const at::Tensor& cdf_length,
                       const at::Tensor& offset, at::ScalarType dtype) {
  check_rans_inputs(state, words, row_stream, index, cdf, cdf_length, offset, dtype, at::kCPU);
  const auto rows = index.size(0), channels = index.size(1);
  at::Tensor out = at::zeros({rows, channels}, index.options().dtype(dtype));
  auto* st = reinterpret_cast<rans::Stream*>(state.data_ptr<int64_t>());
  const auto* w = reinterpret_cast<const uint32_t*>(words.const_data_ptr<int32_t>());
  const auto* rs = row_stream.const_data_ptr<int64_t>();
  const auto* idx = index.const_data_ptr<int64_t>();
  const auto* c = cdf.const_data_ptr<int32_t>();
  const auto* len = cdf_length.const_data_ptr<int32_t>();
  const auto* off = offset.const_data_ptr<int32_t>();
  const int64_t stride = cdf.size(1), tables = cdf.size(0);
  AT_DISPATCH_SWITCH(dtype, "native_rans_decode",
      AT_DISPATCH_CASE(at::kDouble, [&] {
        auto* o = out.data_ptr<double>();
        at::parallel_for(0, state.size(0), 4, [&](int64_t begin, int64_t end) {
          for (int64_t s = begin; s < end; ++s) rans::decode_rows(st[s], w, s, rs, rows, idx, channels, c, stride, len, off, tables, o);
        });
      })
      AT_DISPATCH_CASE(at::kLong, [&] {
        auto* o = out.data_ptr<int64_t>();
        at::parallel_for(0, state.size(0), 4, [&](int64_t begin, int64_t end) {
          for (int64_t s = begin; s < end; ++s) rans::decode_rows(st[s], w, s, rs, rows, idx, channels, c, stride, len, off, tables, o);
        });
      }));
  return out;
}

void rans_decode_step(const at::Tensor& state, const at::Tensor& words, const at::Tensor& row_stream,
                      const at::Tensor& gaussian, const at::Tensor& thresholds, const at::Tensor& cdf,
                      const at::Tensor& cdf_length, const at::Tensor& offset, const at::Tensor& y_rows,
                      const at::Tensor& write, double unit, double act_max) {
  check_rans_step_inputs(state, words, row_stream, gaussian, thresholds, cdf, cdf_length, offset, y_rows, write, at::kCPU);
  auto* st = reinterpret_cast<rans::Stream*>(state.data_ptr<int64_t>());
  const auto* w = reinterpret_cast<const uint32_t*>(words.const_data_ptr<int32_t>());
  const int64_t rows = row_stream.size(0), channels = y_rows.size(1);
  at::parallel_for(0, state.size(0), 4, [&](int64_t begin, int64_t end) {
    for (int64_t s = begin; s < end; ++s) {
      rans::decode_step(st[s], w, s, row_stream.const_data_ptr<int64_t>(), rows, gaussian.const_data_ptr<double>(),
                        channels, thresholds.const_data_ptr<double>(), thresholds.size(1), cdf.const_data_ptr<int32_t>(),
                        cdf.size(1), cdf_length.const_data_ptr<int32_t>(), offset.const_data_ptr<int32_t>(),
                        cdf.size(0), write.const_data_ptr<int64_t>(), y_rows.data_ptr<double>(), unit, act_max);
    }
  });
}

std::tuple<at::Tensor, at::Tensor> rans_encode(const at::Tensor& q, const at::Tensor& index,
                                               const at::Tensor& position_stream, const at::Tensor& regions,
                                               const at::Tensor& cdf, const at::Tensor& cdf_length,
                                               const at::Tensor& offset, int64_t total_words) {
  check_rans_encode_inputs(q, index, position_stream, regions, cdf, cdf_length, offset, total_words, at::kCPU);
  at::Tensor words = at::zeros({total_words}, q.options().dtype(at::kInt));
  at::Tensor begin = at::empty({regions.size(0)}, regions.options());
  auto* w = reinterpret_cast<uint32_t*>(words.data_ptr<int32_t>());
  const auto* region = regions.const_data_ptr<int64_t>();
  auto* b = begin.data_ptr<int64_t>();
  at::parallel_for(0, regions.size(0), 1, [&](int64_t lo, int64_t hi) {
    for (int64_t s = lo; s < hi; ++s) {
      b[s] = rans::encode_stream(s, position_stream.const_data_ptr<int64_t>(), q.size(0), q.const_data_ptr<int32_t>(),
                                 index.const_data_ptr<int64_t>(), q.size(1), cdf.const_data_ptr<int32_t>(), cdf.size(1),
                                 cdf_length.const_data_ptr<int32_t>(), offset.const_data_ptr<int32_t>(), cdf.size(0),
                                 w, region[2 * s], region[2 * s + 1]);
    }
  });
  return {words, begin};
}

}  // namespace

TORCH_LIBRARY_IMPL(ainn_fast, CPU, m) {
  m.impl("native_rans_decode", &rans_decode);
  m.impl("native_rans_decode_step", &rans_decode_step);
  m.impl("native_rans_encode", &rans_encode);
}

}  // namespace cpu
}  // namespace ainn_fast
