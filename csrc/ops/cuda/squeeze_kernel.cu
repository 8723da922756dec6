// CUDA kernels of the 2x2 squeeze / unsqueeze (A-INN channel order, contiguous or
// channels_last) and the channel group mean with its backward. One thread per output
// element, walking the output in memory order so stores coalesce.

#include <torch/library.h>

#include <tuple>

#include "cuda_utils.cuh"
#include "ops/layout.h"

namespace ainn_fast {
namespace cuda {
namespace {

// Squeezed side (B, 4C, OH, OW), unsqueezed side (B, C, 2 OH, 2 OW); element bits only.
// NCHW: both sides contiguous. NHWC: both sides channels_last, where squeezed pixel
// (oy, ox) holds the C-vectors of its four source pixels, q = i * 2 + j major.
template <typename U, bool NHWC, typename I>
__global__ void squeeze_kernel(const U* __restrict__ src, U* __restrict__ dst, I n, I C, I OH, I OW, bool unsqueeze) {
  const I H = 2 * OH, W = 2 * OW;
  AINN_GRID_STRIDE(I, i, n) {
    if (!unsqueeze) {  // i indexes the squeezed output (b, q * C + c, oy, ox) in memory order
      I b, qc, oy, ox;
      if (NHWC) {
        qc = i % (4 * C), ox = (i / (4 * C)) % OW, oy = (i / (4 * C * OW)) % OH, b = i / (4 * C * OW * OH);
      } else {
        ox = i % OW, oy = (i / OW) % OH, qc = (i / (OW * OH)) % (4 * C), b = i / (OW * OH * 4 * C);
      }
      const I q = qc / C, c = qc % C, y = 2 * oy + q / 2, x = 2 * ox + q % 2;
      dst[i] = NHWC ? src[((b * H + y) * W + x) * C + c] : src[((b * C + c) * H + y) * W + x];
    } else {  // i indexes the unsqueezed output (b, c, y, x) in memory order
      I b, c, y, x;
      if (NHWC) {
        c = i % C, x = (i / C) % W, y = (i / (C * W)) % H, b = i / (C * W * H);
      } else {
        x = i % W, y = (i / W) % H, c = (i / (W * H)) % C, b = i / (W * H * C);
      }
      const I qc = ((y % 2) * 2 + x % 2) * C + c;
      dst[i] = NHWC ? src[((b * OH + y / 2) * OW + x / 2) * 4 * C + qc] : src[((b * 4 * C + qc) * OH + y / 2) * OW + x / 2];
    }
  }
}

template <typename U>
void launch_squeeze(const at::Tensor& src, at::Tensor& dst, int64_t C, int64_t OH, int64_t OW, bool unsqueeze,
                    bool nhwc) {
  const int64_t n = dst.numel();
  const U* s = static_cast<const U*>(src.const_data_ptr());
  U* d = static_cast<U*>(dst.data_ptr());
  with_index_type(n, [&](auto index) {
    using I = decltype(index);
    if (nhwc) {
      launch(squeeze_kernel<U, true, I>, blocks_for(n), kThreads, s, d, n, C, OH, OW, unsqueeze);
    } else {
      launch(squeeze_kernel<U, false, I>, blocks_for(n), kThreads, s, d, n, C, OH, OW, unsqueeze);
    }
  });
}

// Layouts as layout.h's squeeze_operands says.
at::Tensor squeeze_or_unsqueeze(const at::Tensor& x, at::IntArrayRef out_shape, int64_t C, int64_t OH, int64_t OW,
                                bool unsqueeze) {
  auto [in, out, nhwc] = squeeze_operands(x, out_shape);
  if (out.numel() == 0) return out;
  switch (in.element_size()) {
    case 1: launch_squeeze<uint8_t>(in, out, C, OH, OW, unsqueeze, nhwc); break;
    case 2: launch_squeeze<uint16_t>(in, out, C, OH, OW, unsqueeze, nhwc); break;
    case 4: launch_squeeze<uint32_t>(in, out, C, OH, OW, unsqueeze, nhwc); break;
    case 8: launch_squeeze<uint64_t>(in, out, C, OH, OW, unsqueeze, nhwc); break;
    default: TORCH_CHECK(false, "squeeze2x2: unsupported element size ", in.element_size());
  }
  return out;
}

at::Tensor squeeze2x2(const at::Tensor& x) {
  check_cuda(x, "native_squeeze2x2");
  TORCH_CHECK(x.dim() == 4, "native_squeeze2x2: x must be 4-D");
  const int64_t B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  TORCH_CHECK(H % 2 == 0 && W % 2 == 0, "squeeze2x2 needs even height and width, got ", H, "x", W);
  const DeviceGuard guard(x.device());
  return squeeze_or_unsqueeze(x, {B, 4 * C, H / 2, W / 2}, C, H / 2, W / 2, false);
}

at::Tensor unsqueeze2x2(const at::Tensor& y) {
  check_cuda(y, "native_unsqueeze2x2");
  TORCH_CHECK(y.dim() == 4, "native_unsqueeze2x2: y must be 4-D");
  const int64_t B = y.size(0), C4 = y.size(1), H = y.size(2), W = y.size(3);
  TORCH_CHECK(C4 % 4 == 0, "unsqueeze2x2 needs a multiple of 4 channels, got ", C4);
  const DeviceGuard guard(y.device());
  return squeeze_or_unsqueeze(y, {B, C4 / 4, 2 * H, 2 * W}, C4 / 4, H, W, true);
}

template <typename T, typename A, typename I>
__global__ void group_mean_kernel(const T* __restrict__ x1, const T* __restrict__ x2, T* __restrict__ out, I n, I M,
                                  I HW, I C1, I C2, I G) {
  AINN_GRID_STRIDE(I, i, n) {
    const I p = i % HW, c = (i / HW) % M, b = i / (HW * M);
    A acc = A(0);
    for (I g = 0; g < G; ++g) {
      const I k = g * M + c;
      acc += static_cast<A>(k < C1 ? x1[(b * C1 + k) * HW + p] : x2[(b * C2 + k - C1) * HW + p]);
    }
    out[i] = static_cast<T>(acc / static_cast<A>(G));
  }
}

// Input channel k of cat([x1, x2]) receives grad[k mod M] / G.
template <typename T, typename A, typename I>
__global__ void group_mean_backward_kernel(const T* __restrict__ grad, T* __restrict__ d1, T* __restrict__ d2, I n,
                                           I M, I HW, I C1, I C2, I G) {
  AINN_GRID_STRIDE(I, i, n) {
    const I p = i % HW, k = (i / HW) % (C1 + C2), b = i / (HW * (C1 + C2));
    const T v = static_cast<T>(static_cast<A>(grad[(b * M + k % M) * HW + p]) / static_cast<A>(G));
    if (k < C1) {
      d1[(b * C1 + k) * HW + p] = v;
    } else {
      d2[(b * C2 + k - C1) * HW + p] = v;
    }
  }
}

at::Tensor group_mean(const at::Tensor& x1_, const at::Tensor& x2_, int64_t M) {
  check_cuda(x1_, "native_group_mean");
  TORCH_CHECK(x1_.dim() == 4 && x2_.dim() == 4, "native_group_mean: inputs must be 4-D");
  TORCH_CHECK(x1_.scalar_type() == x2_.scalar_type(), "native_group_mean: x1 and x2 must have one dtype");
  TORCH_CHECK(x1_.size(0) == x2_.size(0) && x1_.size(2) == x2_.size(2) && x1_.size(3) == x2_.size(3),
              "native_group_mean: streams do not concatenate");
  const int64_t B = x1_.size(0), C1 = x1_.size(1), C2 = x2_.size(1), HW = x1_.size(2) * x1_.size(3);
  TORCH_CHECK(M > 0 && (C1 + C2) % M == 0, "group_mean: ", C1 + C2, " channels do not split into groups of ", M);
  const DeviceGuard guard(x1_.device());
  const at::Tensor x1 = x1_.contiguous(), x2 = x2_.contiguous();
  at::Tensor out = at::empty({B, M, x1.size(2), x1.size(3)}, x1.options());
  const int64_t n = out.numel();
  if (n == 0) return out;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x1.scalar_type(), "native_group_mean", [&] {
    using A = at::opmath_type<scalar_t>;
    with_index_type(x1.numel() + x2.numel(), [&](auto index) {  // the inputs hold the largest offsets
      launch(group_mean_kernel<scalar_t, A, decltype(index)>, blocks_for(n), kThreads,
          x1.const_data_ptr<scalar_t>(), x2.const_data_ptr<scalar_t>(), out.data_ptr<scalar_t>(), n, M, HW, C1, C2,
          (C1 + C2) / M);
    });
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> group_mean_backward(const at::Tensor& grad_, int64_t C1, int64_t C2) {
  check_cuda(grad_, "native_group_mean_backward");
  TORCH_CHECK(grad_.dim() == 4, "native_group_mean_backward: grad must be 4-D");
  const int64_t B = grad_.size(0), M = grad_.size(1), H = grad_.size(2), W = grad_.size(3);
  TORCH_CHECK(M > 0 && (C1 + C2) % M == 0, "native_group_mean_backward: channels do not split into groups");
  const DeviceGuard guard(grad_.device());
  const at::Tensor grad = grad_.contiguous();
  at::Tensor d1 = at::empty({B, C1, H, W}, grad.options()), d2 = at::empty({B, C2, H, W}, grad.options());
  const int64_t n = B * (C1 + C2) * H * W;
  if (n == 0) return {d1, d2};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad.scalar_type(), "native_group_mean_backward", [&] {
    using A = at::opmath_type<scalar_t>;
    with_index_type(n, [&](auto index) {
      launch(group_mean_backward_kernel<scalar_t, A, decltype(index)>, blocks_for(n), kThreads,
          grad.const_data_ptr<scalar_t>(), d1.data_ptr<scalar_t>(), d2.data_ptr<scalar_t>(), n, M, H * W, C1, C2,
          (C1 + C2) / M);
    });
  });
  return {d1, d2};
}

}  // namespace

#ifndef AINN_CUDA_EMULATION  // the emulation registers its own ops (tests/cuda_emulation.cpp)
TORCH_LIBRARY_IMPL(ainn_fast, CUDA, m) {
  m.impl("native_squeeze2x2", &squeeze2x2);
  m.impl("native_unsqueeze2x2", &unsqueeze2x2);
  m.impl("native_group_mean", &group_mean);
  m.impl("native_group_mean_backward", &group_mean_backward);
}
#endif

}  // namespace cuda
}  // namespace ainn_fast
