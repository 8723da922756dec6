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

// See csrc/ops/cpu/coupling_kernel.cpp for the formulas: x is the forward direction's
// input or the inverse direction's output; dh is written for the inverse only.
template <typename T, typename A>
__global__ void coupling_backward_kernel(const T* __restrict__ go, const T* __restrict__ x, const T* __restrict__ g,
                                         T* __restrict__ da, T* __restrict__ dg, T* __restrict__ dh, int64_t n,
                                         A clamp, bool inverse) {
  AINN_GRID_STRIDE(int64_t, i, n) {
    const A sg = sigmoid(static_cast<A>(g[i]));
    const A s = clamp * (A(2) * sg - A(1));
    const A ds = A(2) * clamp * sg * (A(1) - sg);
    const A gov = static_cast<A>(go[i]), xv = static_cast<A>(x[i]);
    if (inverse) {
      const A d = gov * exp(-s);
      da[i] = static_cast<T>(d);
      dh[i] = static_cast<T>(-d);
      dg[i] = static_cast<T>(-gov * xv * ds);
    } else {
      const A e = exp(s);
      da[i] = static_cast<T>(gov * e);
      dg[i] = static_cast<T>(gov * xv * e * ds);
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

std::tuple<at::Tensor, at::Tensor, at::Tensor> coupling_backward(
    const at::Tensor& grad_, const at::Tensor& x_, const at::Tensor& g_, double clamp, bool inv, const char* op) {
  check_cuda(x_, op);
  TORCH_CHECK(g_.sizes() == x_.sizes() && grad_.sizes() == x_.sizes(), op, ": grad, x and g must have one shape");
  TORCH_CHECK(g_.scalar_type() == x_.scalar_type(), op, ": x and g must have one dtype");
  const DeviceGuard guard(x_.device());
  const at::Tensor x = dense(x_), g = in_layout_of(g_, x);
  const at::Tensor go = in_layout_of(grad_.to(x_.scalar_type()), x);
  at::Tensor da = at::empty_like(x), dg = at::empty_like(x), dh = inv ? at::empty_like(x) : at::Tensor();
  const int64_t n = x.numel();
  if (n == 0) return {da, dg, dh};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "native_affine_coupling_backward", [&] {
    using A = at::opmath_type<scalar_t>;
    launch(coupling_backward_kernel<scalar_t, A>, blocks_for(n), kThreads,
        go.const_data_ptr<scalar_t>(), x.const_data_ptr<scalar_t>(), g.const_data_ptr<scalar_t>(),
        da.data_ptr<scalar_t>(), dg.data_ptr<scalar_t>(), inv ? dh.data_ptr<scalar_t>() : nullptr, n,
        static_cast<A>(clamp), inv);
  });
  return {da, dg, dh};
}

std::tuple<at::Tensor, at::Tensor> affine_coupling_backward(
    const at::Tensor& grad, const at::Tensor& x, const at::Tensor& g, double clamp) {
  auto grads = coupling_backward(grad, x, g, clamp, false, "native_affine_coupling_backward");
  return {std::get<0>(grads), std::get<1>(grads)};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> affine_coupling_inverse_backward(
    const at::Tensor& grad, const at::Tensor& x, const at::Tensor& g, double clamp) {
  return coupling_backward(grad, x, g, clamp, true, "native_affine_coupling_inverse_backward");
}

}  // namespace

#ifndef AINN_CUDA_EMULATION  // the emulation registers its own ops (tests/cuda_emulation.cpp)
TORCH_LIBRARY_IMPL(ainn_fast, CUDA, m) {
  m.impl("native_affine_coupling", &affine_coupling);
  m.impl("native_affine_coupling_inverse", &affine_coupling_inverse);
  m.impl("native_affine_coupling_backward", &affine_coupling_backward);
  m.impl("native_affine_coupling_inverse_backward", &affine_coupling_inverse_backward);
}
#endif

}  // namespace cuda
}  // namespace ainn_fast
