// The layout rule of the flat (elementwise) kernels, CPU and CUDA alike, and the Triton
// ones (kernels/_common.py): they run over storage in the first input's layout when that
// is dense (contiguous, channels_last or any dense permutation), so channels_last stays
// channels_last with no copy; the other inputs are copied into that layout only when
// their strides differ, and outputs take it too. A non-dense first input is made
// contiguous once.
#pragma once

#include <ATen/ATen.h>

namespace ainn_fast {

// Equal strides wherever the size is above 1 (the stride of a size-1 dimension never
// addresses anything, so a batch-1 channel slice of a wider tensor matches).
inline bool same_strides(const at::Tensor& a, const at::Tensor& b) {
  for (int64_t d = 0; d < a.dim(); ++d) {
    if (a.size(d) > 1 && a.stride(d) != b.stride(d)) return false;
  }
  return true;
}

inline at::Tensor dense(const at::Tensor& t) { return t.is_non_overlapping_and_dense() ? t : t.contiguous(); }

// t (the shape of the dense tensor ref) in ref's strides.
inline at::Tensor in_layout_of(const at::Tensor& t, const at::Tensor& ref) {
  if (same_strides(t, ref)) return t;
  at::Tensor out = at::empty_like(ref, t.options());
  out.copy_(t);
  return out;
}

// The (un)squeeze kernels' rule, CPU and CUDA: a channels_last input is read, and the
// output written, channels_last (no copy in or out); anything else is read and written
// contiguous.
struct SqueezeOperands {
  at::Tensor in, out;
  bool nhwc;
};

inline SqueezeOperands squeeze_operands(const at::Tensor& in, at::IntArrayRef out_shape) {
  const bool nhwc = !in.is_contiguous() && in.is_contiguous(at::MemoryFormat::ChannelsLast);
  const auto format = nhwc ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
  return {nhwc ? in : in.contiguous(), at::empty(out_shape, in.options().memory_format(format)), nhwc};
}

}  // namespace ainn_fast
