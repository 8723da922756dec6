// CUDA kernels of FDSM: multi-scale decomposition (forward, backward) and the blend
// (forward, backward). The decomposition stages a (TY + 6) x (TX + 6) tile with its
// 3-pixel zero halo in shared memory; each thread forms its 3x3, 5x5 and 7x7 sums from
// one sweep over the 7x7 window. The backward is the adjoint (see the CPU file): three
// tiles of gl_k - gh_k, each box-summed with its own size.

#include <torch/library.h>

#include <tuple>

#include "cuda_utils.cuh"

namespace ainn_fast {
namespace cuda {
namespace {

constexpr int TX = 32, TY = 8, R = 3;

template <typename A>
__device__ __forceinline__ void box_sums(const A (*tile)[TX + 2 * R], int ty, int tx, A& s3, A& s5, A& s7) {
  s3 = s5 = s7 = A(0);
#pragma unroll
  for (int dy = -R; dy <= R; ++dy) {
#pragma unroll
    for (int dx = -R; dx <= R; ++dx) {
      const A v = tile[ty + R + dy][tx + R + dx];
      s7 += v;
      if (dy >= -2 && dy <= 2 && dx >= -2 && dx <= 2) s5 += v;
      if (dy >= -1 && dy <= 1 && dx >= -1 && dx <= 1) s3 += v;
    }
  }
}

template <typename T, typename A>
__global__ void decompose_kernel(const T* __restrict__ x, T* __restrict__ low, T* __restrict__ high, int64_t planes,
                                 int64_t C, int H, int W) {
  __shared__ A tile[TY + 2 * R][TX + 2 * R];
  const int x0 = blockIdx.x * TX, y0 = blockIdx.y * TY;
  for (int64_t plane = blockIdx.z; plane < planes; plane += gridDim.z) {
    const T* xp = x + plane * H * W;
    for (int i = threadIdx.y * TX + threadIdx.x; i < (TY + 2 * R) * (TX + 2 * R); i += TX * TY) {
      const int ty = i / (TX + 2 * R), tx = i % (TX + 2 * R);
      const int y = y0 + ty - R, xx = x0 + tx - R;
      tile[ty][tx] = (y >= 0 && y < H && xx >= 0 && xx < W) ? static_cast<A>(xp[y * W + xx]) : A(0);
    }
    __syncthreads();
    const int y = y0 + threadIdx.y, xx = x0 + threadIdx.x;
    if (y < H && xx < W) {
      A s[3];
      box_sums<A>(tile, threadIdx.y, threadIdx.x, s[0], s[1], s[2]);
      const A xv = tile[threadIdx.y + R][threadIdx.x + R];
      const int64_t b = plane / C, c = plane % C;
#pragma unroll
      for (int k = 0; k < 3; ++k) {
        const int64_t off = ((b * 3 + k) * C + c) * H * W + static_cast<int64_t>(y) * W + xx;
        const T a = static_cast<T>(s[k] / static_cast<A>((2 * k + 3) * (2 * k + 3)));
        low[off] = a;
        high[off] = static_cast<T>(xv - static_cast<A>(a));
      }
    }
    __syncthreads();
  }
}

template <typename T, typename A>
__global__ void decompose_backward_kernel(const T* __restrict__ gl, const T* __restrict__ gh, T* __restrict__ dx,
                                          int64_t planes, int64_t C, int H, int W) {
  __shared__ A tile[3][TY + 2 * R][TX + 2 * R];
  const int x0 = blockIdx.x * TX, y0 = blockIdx.y * TY;
  for (int64_t plane = blockIdx.z; plane < planes; plane += gridDim.z) {
    const int64_t b = plane / C, c = plane % C;
    for (int i = threadIdx.y * TX + threadIdx.x; i < (TY + 2 * R) * (TX + 2 * R); i += TX * TY) {
      const int ty = i / (TX + 2 * R), tx = i % (TX + 2 * R);
      const int y = y0 + ty - R, xx = x0 + tx - R;
      const bool inside = y >= 0 && y < H && xx >= 0 && xx < W;
#pragma unroll
      for (int k = 0; k < 3; ++k) {
        const int64_t off = ((b * 3 + k) * C + c) * H * W + static_cast<int64_t>(y) * W + xx;
        tile[k][ty][tx] = inside ? static_cast<A>(gl[off]) - static_cast<A>(gh[off]) : A(0);
      }
    }
    __syncthreads();
    const int y = y0 + threadIdx.y, xx = x0 + threadIdx.x;
    if (y < H && xx < W) {
      A acc = A(0), s3, s5, s7, unused1, unused2;
      box_sums<A>(tile[0], threadIdx.y, threadIdx.x, s3, unused1, unused2);
      acc += s3 / A(9);
      box_sums<A>(tile[1], threadIdx.y, threadIdx.x, unused1, s5, unused2);
      acc += s5 / A(25);
      box_sums<A>(tile[2], threadIdx.y, threadIdx.x, unused1, unused2, s7);
      acc += s7 / A(49);
#pragma unroll
      for (int k = 0; k < 3; ++k) {
        acc += static_cast<A>(gh[((b * 3 + k) * C + c) * H * W + static_cast<int64_t>(y) * W + xx]);
      }
      dx[plane * H * W + static_cast<int64_t>(y) * W + xx] = static_cast<T>(acc);
    }
    __syncthreads();
  }
}

dim3 tile_grid(int64_t planes, int H, int W) {
  return dim3((W + TX - 1) / TX, (H + TY - 1) / TY, static_cast<unsigned int>(std::min<int64_t>(planes, 65535)));
}

std::tuple<at::Tensor, at::Tensor> multiscale_decompose(const at::Tensor& x_) {
  check_cuda(x_, "native_multiscale_decompose");
  TORCH_CHECK(x_.dim() == 4, "native_multiscale_decompose: x must be 4-D");
  const DeviceGuard guard(x_.device());
  const at::Tensor x = x_.contiguous();
  const int64_t B = x.size(0), C = x.size(1);
  const int H = static_cast<int>(x.size(2)), W = static_cast<int>(x.size(3));
  at::Tensor low = at::empty({B, 3 * C, H, W}, x.options()), high = at::empty_like(low);
  if (low.numel() == 0) return {low, high};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "native_multiscale_decompose", [&] {
    using A = at::opmath_type<scalar_t>;
    launch(decompose_kernel<scalar_t, A>, tile_grid(B * C, H, W), dim3(TX, TY),
        x.const_data_ptr<scalar_t>(), low.data_ptr<scalar_t>(), high.data_ptr<scalar_t>(), B * C, C, H, W);
  });
  return {low, high};
}

at::Tensor multiscale_decompose_backward(const at::Tensor& gl_, const at::Tensor& gh_) {
  check_cuda(gl_, "native_multiscale_decompose_backward");
  TORCH_CHECK(gl_.dim() == 4 && gl_.sizes() == gh_.sizes() && gl_.size(1) % 3 == 0,
              "native_multiscale_decompose_backward: expected two (B, 3C, H, W) gradients");
  const DeviceGuard guard(gl_.device());
  const at::Tensor gl = gl_.contiguous(), gh = gh_.to(gl_.scalar_type()).contiguous();
  const int64_t B = gl.size(0), C = gl.size(1) / 3;
  const int H = static_cast<int>(gl.size(2)), W = static_cast<int>(gl.size(3));
  at::Tensor dx = at::empty({B, C, H, W}, gl.options());
  if (dx.numel() == 0) return dx;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, gl.scalar_type(), "native_multiscale_decompose_backward", [&] {
    using A = at::opmath_type<scalar_t>;
    launch(decompose_backward_kernel<scalar_t, A>, tile_grid(B * C, H, W), dim3(TX, TY),
        gl.const_data_ptr<scalar_t>(), gh.const_data_ptr<scalar_t>(), dx.data_ptr<scalar_t>(), B * C, C, H, W);
  });
  return dx;
}

// Blend: one thread per (b, pixel), looping over channels so the mask is computed once.
template <typename T, typename A, typename I>
__global__ void blend_kernel(const T* __restrict__ lg, const T* __restrict__ lo, const T* __restrict__ hi,
                             T* __restrict__ out, I n, I C, I HW) {
  AINN_GRID_STRIDE(I, i, n) {
    const I b = i / HW, p = i % HW;
    const A m = sigmoid(static_cast<A>(lg[i]));
    for (I c = 0; c < C; ++c) {
      const I off = (b * C + c) * HW + p;
      out[off] = static_cast<T>(m * static_cast<A>(lo[off]) + (A(1) - m) * static_cast<A>(hi[off]));
    }
  }
}

template <typename T, typename A, typename I>
__global__ void blend_backward_kernel(const T* __restrict__ go, const T* __restrict__ lg, const T* __restrict__ lo,
                                      const T* __restrict__ hi, T* __restrict__ dlg, T* __restrict__ dlo,
                                      T* __restrict__ dhi, I n, I C, I HW) {
  AINN_GRID_STRIDE(I, i, n) {
    const I b = i / HW, p = i % HW;
    const A m = sigmoid(static_cast<A>(lg[i]));
    A acc = A(0);
    for (I c = 0; c < C; ++c) {
      const I off = (b * C + c) * HW + p;
      const A g = static_cast<A>(go[off]);
      dlo[off] = static_cast<T>(g * m);
      dhi[off] = static_cast<T>(g * (A(1) - m));
      acc += g * (static_cast<A>(lo[off]) - static_cast<A>(hi[off]));
    }
    dlg[i] = static_cast<T>(acc * m * (A(1) - m));
  }
}

void check_blend(const at::Tensor& logits, const at::Tensor& low, const at::Tensor& high) {
  check_cuda(low, "native_frequency_blend");
  TORCH_CHECK(low.dim() == 4 && high.sizes() == low.sizes(), "native_frequency_blend: low and high must be one 4-D shape");
  TORCH_CHECK(logits.dim() == 4 && logits.size(0) == low.size(0) && logits.size(1) == 1 &&
                  logits.size(2) == low.size(2) && logits.size(3) == low.size(3),
              "native_frequency_blend: logits must be (B, 1, H, W)");
  TORCH_CHECK(logits.scalar_type() == low.scalar_type() && high.scalar_type() == low.scalar_type(),
              "native_frequency_blend: logits, low and high must have one dtype");
}

at::Tensor frequency_blend(const at::Tensor& logits_, const at::Tensor& low_, const at::Tensor& high_) {
  check_blend(logits_, low_, high_);
  const DeviceGuard guard(low_.device());
  const at::Tensor lg = logits_.contiguous(), lo = low_.contiguous(), hi = high_.contiguous();
  at::Tensor out = at::empty(lo.sizes(), lo.options());
  const int64_t n = lg.numel(), C = lo.size(1), HW = lo.size(2) * lo.size(3);
  if (out.numel() == 0) return out;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, lo.scalar_type(), "native_frequency_blend", [&] {
    using A = at::opmath_type<scalar_t>;
    with_index_type(lo.numel(), [&](auto index) {  // offsets go up to the channels' numel
      launch(blend_kernel<scalar_t, A, decltype(index)>, blocks_for(n), kThreads,
          lg.const_data_ptr<scalar_t>(), lo.const_data_ptr<scalar_t>(), hi.const_data_ptr<scalar_t>(),
          out.data_ptr<scalar_t>(), n, C, HW);
    });
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> frequency_blend_backward(
    const at::Tensor& grad_, const at::Tensor& logits_, const at::Tensor& low_, const at::Tensor& high_) {
  check_blend(logits_, low_, high_);
  TORCH_CHECK(grad_.sizes() == low_.sizes(), "native_frequency_blend_backward: grad must have the shape of low");
  const DeviceGuard guard(low_.device());
  const at::Tensor go = grad_.to(low_.scalar_type()).contiguous();
  const at::Tensor lg = logits_.contiguous(), lo = low_.contiguous(), hi = high_.contiguous();
  at::Tensor dlg = at::empty(lg.sizes(), lg.options()), dlo = at::empty(lo.sizes(), lo.options()),
             dhi = at::empty(lo.sizes(), lo.options());
  const int64_t n = lg.numel(), C = lo.size(1), HW = lo.size(2) * lo.size(3);
  if (dlo.numel() == 0) return {dlg.zero_(), dlo, dhi};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, lo.scalar_type(), "native_frequency_blend_backward", [&] {
    using A = at::opmath_type<scalar_t>;
    with_index_type(lo.numel(), [&](auto index) {
      launch(blend_backward_kernel<scalar_t, A, decltype(index)>, blocks_for(n), kThreads,
          go.const_data_ptr<scalar_t>(), lg.const_data_ptr<scalar_t>(), lo.const_data_ptr<scalar_t>(),
          hi.const_data_ptr<scalar_t>(), dlg.data_ptr<scalar_t>(), dlo.data_ptr<scalar_t>(), dhi.data_ptr<scalar_t>(),
          n, C, HW);
    });
  });
  return {dlg, dlo, dhi};
}

}  // namespace

#ifndef AINN_CUDA_EMULATION  // the emulation registers its own ops (tests/cuda_emulation.cpp)
TORCH_LIBRARY_IMPL(ainn_fast, CUDA, m) {
  m.impl("native_multiscale_decompose", &multiscale_decompose);
  m.impl("native_multiscale_decompose_backward", &multiscale_decompose_backward);
  m.impl("native_frequency_blend", &frequency_blend);
  m.impl("native_frequency_blend_backward", &frequency_blend_backward);
}
#endif

}  // namespace cuda
}  // namespace ainn_fast
