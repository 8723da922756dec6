// CPU kernels of the 2x2 squeeze / unsqueeze (A-INN channel order) and the channel
// group mean with its backward.

#include <torch/library.h>

#include <tuple>

#include "cpu_utils.h"
#include "ops/layout.h"

namespace ainn_fast {
namespace cpu {
namespace {

// Row (de)interleaving, the inner loops. The 4-byte (float32) case is compiled per
// instruction set so that the stride-2 accesses become vector shuffles.
template <typename U>
AINN_INLINE void deinterleave_body(const U* __restrict r, U* __restrict even, U* __restrict odd, int64_t n) {
  for (int64_t x = 0; x < n; ++x) {
    even[x] = r[2 * x];
    odd[x] = r[2 * x + 1];
  }
}
template <typename U>
AINN_INLINE void interleave_body(const U* __restrict even, const U* __restrict odd, U* __restrict r, int64_t n) {
  for (int64_t x = 0; x < n; ++x) {
    r[2 * x] = even[x];
    r[2 * x + 1] = odd[x];
  }
}
AINN_CLONES void deinterleave32(const uint32_t* __restrict r, uint32_t* __restrict e, uint32_t* __restrict o, int64_t n) {
  deinterleave_body(r, e, o, n);
}
AINN_CLONES void interleave32(const uint32_t* __restrict e, const uint32_t* __restrict o, uint32_t* __restrict r, int64_t n) {
  interleave_body(e, o, r, n);
}
template <typename U>
void deinterleave(const U* r, U* e, U* o, int64_t n) { deinterleave_body(r, e, o, n); }
template <typename U>
void interleave(const U* e, const U* o, U* r, int64_t n) { interleave_body(e, o, r, n); }
template <>
void deinterleave<uint32_t>(const uint32_t* r, uint32_t* e, uint32_t* o, int64_t n) { deinterleave32(r, e, o, n); }
template <>
void interleave<uint32_t>(const uint32_t* e, const uint32_t* o, uint32_t* r, int64_t n) { interleave32(e, o, r, n); }

// The squeeze is a pure copy, so it runs on raw element bits of the right width: one
// instantiation serves every dtype of that size.
template <typename U>
void squeeze_rows(const U* src, U* dst, int64_t B, int64_t C, int64_t OH, int64_t OW, bool unsqueeze) {
  const int64_t W = 2 * OW;
  // Task = one (b, c, oy): two input rows <-> four output rows of the squeezed side.
  at::parallel_for(0, B * C * OH, std::max<int64_t>(1, kGrain / (4 * OW)), [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const int64_t oy = t % OH, bc = t / OH, c = bc % C, b = bc / C;
      const int64_t full_off = (bc * 2 * OH + 2 * oy) * W;  // row 2 oy of the unsqueezed side
      U* sq[4];
      for (int q = 0; q < 4; ++q) sq[q] = (unsqueeze ? const_cast<U*>(src) : dst) + ((b * 4 + q) * C + c) * OH * OW + oy * OW;
      if (!unsqueeze) {
        deinterleave(src + full_off, sq[0], sq[1], OW);
        deinterleave(src + full_off + W, sq[2], sq[3], OW);
      } else {
        interleave(sq[0], sq[1], dst + full_off, OW);
        interleave(sq[2], sq[3], dst + full_off + W, OW);
      }
    }
  });
}

// n runs of `run` elements, `from_step` apart in `from`, to `to_step` apart in `to`. A
// function taking everything by value, not the body of parallel_for's lambda: there,
// every captured value sits behind a reference that memcpy's byte stores may alias, so
// GCC reloaded the pointers and sizes for each 24-byte run (3x slower on an AMD Zen 5).
// Always inlined, so that a run length the caller knows at compile time stays a constant.
template <typename U>
C10_ALWAYS_INLINE void copy_runs(const U* __restrict from, int64_t from_step, U* __restrict to, int64_t to_step,
                                 int64_t n, int64_t run) {
  const int64_t bytes = run * static_cast<int64_t>(sizeof(U));
  for (int64_t k = 0; k < n; ++k) std::memcpy(to + k * to_step, from + k * from_step, bytes);
}

// Channels-last (NHWC): squeezed pixel (oy, ox) holds 4C channels, q = i * 2 + j major,
// which are the C-vectors of pixels (2oy, 2ox), (2oy, 2ox + 1), (2oy + 1, 2ox),
// (2oy + 1, 2ox + 1): two runs of 2C contiguous elements, one from each of the two rows.
// RUN > 0 fixes the run length at compile time (RGB: 6 elements), so that the many short
// copies become inline moves instead of memcpy calls (1.6x faster for the image level).
template <typename U, int64_t RUN>
void squeeze_rows_nhwc(const U* src, U* dst, int64_t B, int64_t C, int64_t OH, int64_t OW, bool unsqueeze) {
  const int64_t run = RUN > 0 ? RUN : 2 * C, row = 2 * OW * C;  // row: one full-resolution row (W * C)
  // Task = one (b, oy): two full-resolution rows <-> one squeezed row.
  at::parallel_for(0, B * OH, std::max<int64_t>(1, kGrain / (4 * OW * C)), [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const int64_t full = 2 * t * row;  // (b * 2 OH + 2 oy) * row, as t = b * OH + oy
      const int64_t sq = t * OW * 4 * C;
      for (int64_t i = 0; i < 2; ++i) {  // row 2 oy + i holds the i-th run of each squeezed pixel
        if (unsqueeze) {
          copy_runs(src + sq + i * run, 2 * run, dst + full + i * row, run, OW, run);
        } else {
          copy_runs(src + full + i * row, run, dst + sq + i * run, 2 * run, OW, run);
        }
      }
    }
  });
}

// Both kernels run on raw bits; the NHWC one only needs the element size.
template <typename U>
void squeeze_any(const at::Tensor& src, at::Tensor& dst, int64_t B, int64_t C, int64_t OH, int64_t OW, bool unsqueeze,
                 bool nhwc) {
  const U* s = static_cast<const U*>(src.const_data_ptr());
  U* d = static_cast<U*>(dst.data_ptr());
  if (nhwc && C == 3) {
    squeeze_rows_nhwc<U, 6>(s, d, B, C, OH, OW, unsqueeze);
  } else if (nhwc) {
    squeeze_rows_nhwc<U, 0>(s, d, B, C, OH, OW, unsqueeze);
  } else {
    squeeze_rows(s, d, B, C, OH, OW, unsqueeze);
  }
}

// Layouts as layout.h's squeeze_operands says.
at::Tensor squeeze_or_unsqueeze(const at::Tensor& x, at::IntArrayRef out_shape, int64_t C, int64_t OH, int64_t OW,
                                bool unsqueeze) {
  auto [in, out, nhwc] = squeeze_operands(x, out_shape);
  if (out.numel() == 0) return out;
  const int64_t B = in.size(0);
  switch (in.element_size()) {
    case 1: squeeze_any<uint8_t>(in, out, B, C, OH, OW, unsqueeze, nhwc); break;
    case 2: squeeze_any<uint16_t>(in, out, B, C, OH, OW, unsqueeze, nhwc); break;
    case 4: squeeze_any<uint32_t>(in, out, B, C, OH, OW, unsqueeze, nhwc); break;
    case 8: squeeze_any<uint64_t>(in, out, B, C, OH, OW, unsqueeze, nhwc); break;
    default: TORCH_CHECK(false, "squeeze2x2: unsupported element size ", in.element_size());
  }
  return out;
}

at::Tensor squeeze2x2(const at::Tensor& x) {
  check_4d(x, "native_squeeze2x2", "x");
  const int64_t B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  TORCH_CHECK(H % 2 == 0 && W % 2 == 0, "squeeze2x2 needs even height and width, got ", H, "x", W);
  return squeeze_or_unsqueeze(x, {B, 4 * C, H / 2, W / 2}, C, H / 2, W / 2, false);
}

at::Tensor unsqueeze2x2(const at::Tensor& y) {
  check_4d(y, "native_unsqueeze2x2", "y");
  const int64_t B = y.size(0), C4 = y.size(1), H = y.size(2), W = y.size(3);
  TORCH_CHECK(C4 % 4 == 0, "unsqueeze2x2 needs a multiple of 4 channels, got ", C4);
  return squeeze_or_unsqueeze(y, {B, C4 / 4, 2 * H, 2 * W}, C4 / 4, H, W, true);
}

AINN_CLONES void add_f32(float* __restrict acc, const float* __restrict v, int64_t n) {
  for (int64_t i = 0; i < n; ++i) acc[i] += v[i];
}
void add_to(float* acc, const float* v, int64_t n) { add_f32(acc, v, n); }
void add_to(double* acc, const double* v, int64_t n) {
  for (int64_t i = 0; i < n; ++i) acc[i] += v[i];
}
template <typename T, typename A>
void add_to(A* acc, const T* v, int64_t n) {
  for (int64_t i = 0; i < n; ++i) acc[i] += static_cast<A>(v[i]);
}

at::Tensor group_mean(const at::Tensor& x1_, const at::Tensor& x2_, int64_t M) {
  const char* op = "native_group_mean";
  check_4d(x1_, op, "x1");
  check_4d(x2_, op, "x2");
  check_float(x1_, op);
  TORCH_CHECK(x1_.scalar_type() == x2_.scalar_type(), op, ": x1 and x2 must have one dtype");
  TORCH_CHECK(x1_.size(0) == x2_.size(0) && x1_.size(2) == x2_.size(2) && x1_.size(3) == x2_.size(3), op,
              ": streams of shapes ", x1_.sizes(), " and ", x2_.sizes(), " do not concatenate");
  const int64_t B = x1_.size(0), C1 = x1_.size(1), C2 = x2_.size(1), HW = x1_.size(2) * x1_.size(3);
  TORCH_CHECK(M > 0 && (C1 + C2) % M == 0, "group_mean: ", C1 + C2, " channels do not split into groups of ", M);
  const int64_t G = (C1 + C2) / M;
  const at::Tensor x1 = x1_.contiguous(), x2 = x2_.contiguous();
  at::Tensor out = at::empty({B, M, x1.size(2), x1.size(3)}, x1.options());
  if (out.numel() == 0) return out;
  const int64_t chunks = (HW + kBlock - 1) / kBlock;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x1.scalar_type(), "ainn_fast_native", [&] {
    using acc_t = typename Acc<scalar_t>::type;
    const scalar_t *p1 = x1.const_data_ptr<scalar_t>(), *p2 = x2.const_data_ptr<scalar_t>();
    scalar_t* po = out.data_ptr<scalar_t>();
    // Task = (b, c, block of kBlock pixels): sum the G channels into a float accumulator.
    at::parallel_for(0, B * M * chunks, std::max<int64_t>(1, 16 / std::max<int64_t>(1, G)), [&](int64_t begin, int64_t end) {
      acc_t acc[kBlock];
      for (int64_t t = begin; t < end; ++t) {
        const int64_t chunk = t % chunks, bc = t / chunks, c = bc % M, b = bc / M;
        const int64_t p0 = chunk * kBlock, n = std::min(kBlock, HW - p0);
        for (int64_t i = 0; i < n; ++i) acc[i] = acc_t(0);
        for (int64_t g = 0; g < G; ++g) {
          const int64_t k = g * M + c;
          const scalar_t* src = k < C1 ? p1 + (b * C1 + k) * HW + p0 : p2 + (b * C2 + (k - C1)) * HW + p0;
          add_to(acc, src, n);
        }
        scalar_t* dst = po + (b * M + c) * HW + p0;
        const acc_t div = static_cast<acc_t>(G);
        for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<scalar_t>(acc[i] / div);
      }
    });
  });
  return out;
}

// Channel k of cat([x1, x2]) feeds output channel k mod M with weight 1 / G.
std::tuple<at::Tensor, at::Tensor> group_mean_backward(const at::Tensor& grad_, int64_t C1, int64_t C2) {
  const char* op = "native_group_mean_backward";
  check_4d(grad_, op, "grad");
  check_float(grad_, op);
  const int64_t B = grad_.size(0), M = grad_.size(1), H = grad_.size(2), W = grad_.size(3), HW = H * W;
  TORCH_CHECK(M > 0 && (C1 + C2) % M == 0, op, ": ", C1 + C2, " channels do not split into groups of ", M);
  const int64_t G = (C1 + C2) / M;
  const at::Tensor grad = grad_.contiguous();
  at::Tensor d1 = at::empty({B, C1, H, W}, grad.options()), d2 = at::empty({B, C2, H, W}, grad.options());
  if (HW == 0 || B == 0) return {d1, d2};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad.scalar_type(), "ainn_fast_native", [&] {
    using acc_t = typename Acc<scalar_t>::type;
    const scalar_t* pg = grad.const_data_ptr<scalar_t>();
    scalar_t *p1 = d1.data_ptr<scalar_t>(), *p2 = d2.data_ptr<scalar_t>();
    const acc_t div = static_cast<acc_t>(G);
    at::parallel_for(0, B * (C1 + C2), std::max<int64_t>(1, kGrain / HW), [&](int64_t begin, int64_t end) {
      for (int64_t t = begin; t < end; ++t) {
        const int64_t k = t % (C1 + C2), b = t / (C1 + C2);
        const scalar_t* src = pg + (b * M + k % M) * HW;
        scalar_t* dst = k < C1 ? p1 + (b * C1 + k) * HW : p2 + (b * C2 + (k - C1)) * HW;
        for (int64_t i = 0; i < HW; ++i) dst[i] = static_cast<scalar_t>(static_cast<acc_t>(src[i]) / div);
      }
    });
  });
  return {d1, d2};
}

}  // namespace

TORCH_LIBRARY_IMPL(ainn_fast, CPU, m) {
  m.impl("native_squeeze2x2", &squeeze2x2);
  m.impl("native_unsqueeze2x2", &unsqueeze2x2);
  m.impl("native_group_mean", &group_mean);
  m.impl("native_group_mean_backward", &group_mean_backward);
}

}  // namespace cpu
}  // namespace ainn_fast
