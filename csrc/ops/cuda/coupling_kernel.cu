// CUDA kernels of the affine coupling tail (forward, inverse, fused backward): one
// grid-stride pass, arithmetic in float (double for double), scale recomputed from g.

#include <torch/library.h>

#include <tuple>

#include "cuda_utils.cuh"
#include "ops/layout.h"

namespace ainn_fast {
namespace cuda {
namespace {

template <typename T, typename A>
__global__ void coupling_forward_kernel(const T* __restrict__ a, const T* __restrict__ g, const T* __restrict__ h,
                                        T* __restrict__ out, int64_t n, A clamp, bool inverse) {
  AINN_GRID_STRIDE(int64_t, i, n) {
    const A s = clamp * (A(2) * sigmoid(static_cast<A>(g[i])) - A(1));
    const A av = static_cast<A>(a[i]), hv = static_cast<A>(h[i]);
    out[i] = static_cast<T>(inverse ? (av - hv) * exp(-s) : av * exp(s) + hv);
  }
}

// See csrc/ops/cpu/coupling_kernel.cpp for the formulas.
template <typename T, typename A>
__global__ void coupling_backward_kernel(const T* __restrict__ go, const T* __restrict__ a, const T* __restrict__ g,
                                         const T* __restrict__ h, T* __restrict__ da, T* __restrict__ dg,
                                         T* __restrict__ dh, int64_t n, A clamp, bool inverse) {
  AINN_GRID_STRIDE(int64_t, i, n) {
    const A sg = sigmoid(static_cast<A>(g[i]));
    const A s = clamp * (A(2) * sg - A(1));
    const A ds = A(2) * clamp * sg * (A(1) - sg);
    const A gov = static_cast<A>(go[i]), av = static_cast<A>(a[i]);
    if (inverse) {
      const A e = exp(-s);
      const A x = (av - static_cast<A>(h[i])) * e;
      da[i] = static_cast<T>(gov * e);
      dh[i] = static_cast<T>(-gov * e);
      dg[i] = static_cast<T>(-gov * x * ds);
    } else {
      const A e = exp(s);
      da[i] = static_cast<T>(gov * e);
      dh[i] = static_cast<T>(gov);
      dg[i] = static_cast<T>(gov * av * e * ds);
    }
  }
}

void check_inputs(const at::Tensor& a, const at::Tensor& g, const at::Tensor& h, const char* op) {
  check_cuda(a, op);
  TORCH_CHECK(g.sizes() == a.sizes() && h.sizes() == a.sizes(), op, ": x, g and h must have one shape");
  TORCH_CHECK(g.scalar_type() == a.scalar_type() && h.scalar_type() == a.scalar_type(), op,
              ": x, g and h must have one dtype");
}

at::Tensor coupling_forward(const at::Tensor& a_, const at::Tensor& g_, const at::Tensor& h_, double clamp, bool inv) {
  check_inputs(a_, g_, h_, "native_affine_coupling");
  const DeviceGuard guard(a_.device());
  const at::Tensor a = dense(a_), g = in_layout_of(g_, a), h = in_layout_of(h_, a);
  at::Tensor out = at::empty_like(a);
  const int64_t n = a.numel();
  if (n == 0) return out;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a.scalar_type(), "native_affine_coupling", [&] {
    using A = at::opmath_type<scalar_t>;
    launch(coupling_forward_kernel<scalar_t, A>, blocks_for(n), kThreads,
        a.const_data_ptr<scalar_t>(), g.const_data_ptr<scalar_t>(), h.const_data_ptr<scalar_t>(),
        out.data_ptr<scalar_t>(), n, static_cast<A>(clamp), inv);
  });
  return out;
}

at::Tensor affine_coupling(const at::Tensor& x, const at::Tensor& g, const at::Tensor& h, double clamp) {
  return coupling_forward(x, g, h, clamp, false);
}

at::Tensor affine_coupling_inverse(const at::Tensor& y, const at::Tensor& g, const at::Tensor& h, double clamp) {
  return coupling_forward(y, g, h, clamp, true);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> affine_coupling_backward(
    const at::Tensor& grad_, const at::Tensor& a_, const at::Tensor& g_, const at::Tensor& h_, double clamp,
    bool inv) {
  check_inputs(a_, g_, h_, "native_affine_coupling_backward");
  TORCH_CHECK(grad_.sizes() == a_.sizes(), "native_affine_coupling_backward: grad shape mismatch");
  const DeviceGuard guard(a_.device());
  const at::Tensor a = dense(a_), g = in_layout_of(g_, a), h = in_layout_of(h_, a);
  const at::Tensor go = in_layout_of(grad_.to(a_.scalar_type()), a);
  at::Tensor da = at::empty_like(a), dg = at::empty_like(a), dh = at::empty_like(a);
  const int64_t n = a.numel();
  if (n == 0) return {da, dg, dh};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a.scalar_type(), "native_affine_coupling_backward", [&] {
    using A = at::opmath_type<scalar_t>;
    launch(coupling_backward_kernel<scalar_t, A>, blocks_for(n), kThreads,
        go.const_data_ptr<scalar_t>(), a.const_data_ptr<scalar_t>(), g.const_data_ptr<scalar_t>(),
        h.const_data_ptr<scalar_t>(), da.data_ptr<scalar_t>(), dg.data_ptr<scalar_t>(), dh.data_ptr<scalar_t>(), n,
        static_cast<A>(clamp), inv);
  });
  return {da, dg, dh};
}

}  // namespace

#ifndef AINN_CUDA_EMULATION  // the emulation registers its own ops (tests/cuda_emulation.cpp)
TORCH_LIBRARY_IMPL(ainn_fast, CUDA, m) {
  m.impl("native_affine_coupling", &affine_coupling);
  m.impl("native_affine_coupling_inverse", &affine_coupling_inverse);
  m.impl("native_affine_coupling_backward", &affine_coupling_backward);
}
#endif

}  // namespace cuda
}  // namespace ainn_fast
