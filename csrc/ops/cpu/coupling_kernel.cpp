// CPU kernels of the affine coupling tail: forward, inverse and the fused backward of each.
// One pass over the inputs; the scale exp(+-s(g)) is recomputed, never stored.

#include <torch/library.h>

#include <tuple>

#include "cpu_utils.h"
#include "ops/layout.h"

namespace ainn_fast {
namespace cpu {
namespace {

// Per-element math, shared by the float (vectorised) and double (scalar) instantiations.
template <typename T>
AINN_INLINE T coupling_forward_1(T a, T g, T h, T clamp, bool inverse) {
  const T s = clamp * (T(2) * sigmoid(g) - T(1));
  return inverse ? (a - h) * fast_exp(-s) : a * fast_exp(s) + h;
}

// Gradients for grad-of-output go, from the tensors the autograd formula keeps: the forward
// direction's input x and the inverse direction's output x, with g; neither needs h.
// Forward: y = x e^s + h, so dx = go e^s, dg = go x e^s s'(g) (and dh = go, no kernel).
// Inverse: x = (y - h) e^-s, so dy = go e^-s, dh = -dy, dg = -go x s'(g).
// s'(g) = 2 clamp sigmoid(g) (1 - sigmoid(g)).
template <typename T>
AINN_INLINE void coupling_backward_1(T go, T x, T g, T clamp, bool inverse, T& da, T& dg, T& dh) {
  const T sg = sigmoid(g);
  const T s = clamp * (T(2) * sg - T(1));
  const T ds = T(2) * clamp * sg * (T(1) - sg);
  if (inverse) {
    da = go * fast_exp(-s);
    dh = -da;
    dg = -go * x * ds;
  } else {
    const T e = fast_exp(s);
    da = go * e;
    dg = go * x * e * ds;
  }
}

// The float loops, compiled per instruction set (see cpu_utils.h). The branch on
// `inverse` is hoisted so that each loop body is branch-free.
AINN_CLONES void forward_f32(
    const float* __restrict a, const float* __restrict g, const float* __restrict h, float* __restrict out,
    int64_t n, float clamp, bool inverse) {
  if (inverse) {
    for (int64_t i = 0; i < n; ++i) out[i] = coupling_forward_1(a[i], g[i], h[i], clamp, true);
  } else {
    for (int64_t i = 0; i < n; ++i) out[i] = coupling_forward_1(a[i], g[i], h[i], clamp, false);
  }
}

AINN_CLONES void backward_f32(
    const float* __restrict go, const float* __restrict x, const float* __restrict g, float* __restrict da,
    float* __restrict dg, float* __restrict dh, int64_t n, float clamp, bool inverse) {
  float unused;
  if (inverse) {
    for (int64_t i = 0; i < n; ++i) coupling_backward_1(go[i], x[i], g[i], clamp, true, da[i], dg[i], dh[i]);
  } else {
    for (int64_t i = 0; i < n; ++i) coupling_backward_1(go[i], x[i], g[i], clamp, false, da[i], dg[i], unused);
  }
}

void forward_range(const float* a, const float* g, const float* h, float* out, int64_t n, double clamp, bool inv) {
  forward_f32(a, g, h, out, n, static_cast<float>(clamp), inv);
}
void forward_range(const double* a, const double* g, const double* h, double* out, int64_t n, double clamp, bool inv) {
  for (int64_t i = 0; i < n; ++i) out[i] = coupling_forward_1(a[i], g[i], h[i], clamp, inv);
}
// Half and bfloat16: convert a block to float, run the float loop, convert back.
template <typename T>
void forward_range(const T* a, const T* g, const T* h, T* out, int64_t n, double clamp, bool inv) {
  float fa[kBlock], fg[kBlock], fh[kBlock], fo[kBlock];
  for (int64_t base = 0; base < n; base += kBlock) {
    const int64_t m = std::min(kBlock, n - base);
    for (int64_t i = 0; i < m; ++i) {
      fa[i] = static_cast<float>(a[base + i]);
      fg[i] = static_cast<float>(g[base + i]);
      fh[i] = static_cast<float>(h[base + i]);
    }
    forward_f32(fa, fg, fh, fo, m, static_cast<float>(clamp), inv);
    for (int64_t i = 0; i < m; ++i) out[base + i] = static_cast<T>(fo[i]);
  }
}

// dh is written only for the inverse direction (null for the forward one).
void backward_range(
    const float* go, const float* x, const float* g, float* da, float* dg, float* dh, int64_t n, double clamp,
    bool inv) {
  backward_f32(go, x, g, da, dg, dh, n, static_cast<float>(clamp), inv);
}
void backward_range(
    const double* go, const double* x, const double* g, double* da, double* dg, double* dh, int64_t n, double clamp,
    bool inv) {
  double unused;
  for (int64_t i = 0; i < n; ++i) coupling_backward_1(go[i], x[i], g[i], clamp, inv, da[i], dg[i], inv ? dh[i] : unused);
}
template <typename T>
void backward_range(const T* go, const T* x, const T* g, T* da, T* dg, T* dh, int64_t n, double clamp, bool inv) {
  float fgo[kBlock], fx[kBlock], fg[kBlock], fda[kBlock], fdg[kBlock], fdh[kBlock];
  for (int64_t base = 0; base < n; base += kBlock) {
    const int64_t m = std::min(kBlock, n - base);
    for (int64_t i = 0; i < m; ++i) {
      fgo[i] = static_cast<float>(go[base + i]);
      fx[i] = static_cast<float>(x[base + i]);
      fg[i] = static_cast<float>(g[base + i]);
    }
    backward_f32(fgo, fx, fg, fda, fdg, fdh, m, static_cast<float>(clamp), inv);
    for (int64_t i = 0; i < m; ++i) {
      da[base + i] = static_cast<T>(fda[i]);
      dg[base + i] = static_cast<T>(fdg[i]);
    }
    if (inv) {
      for (int64_t i = 0; i < m; ++i) dh[base + i] = static_cast<T>(fdh[i]);
    }
  }
}

void check_inputs(const at::Tensor& a, const at::Tensor& g, const at::Tensor& h, const char* op) {
  check_float(a, op);
  TORCH_CHECK(g.sizes() == a.sizes() && h.sizes() == a.sizes(), op, ": x, g and h must have one shape, got ",
              a.sizes(), ", ", g.sizes(), ", ", h.sizes());
  TORCH_CHECK(g.scalar_type() == a.scalar_type() && h.scalar_type() == a.scalar_type(), op,
              ": x, g and h must have one dtype");
}

at::Tensor coupling_forward(const at::Tensor& a_, const at::Tensor& g_, const at::Tensor& h_, double clamp, bool inv) {
  const char* op = inv ? "native_affine_coupling_inverse" : "native_affine_coupling";
  check_inputs(a_, g_, h_, op);
  const at::Tensor a = dense(a_), g = in_layout_of(g_, a), h = in_layout_of(h_, a);
  at::Tensor out = at::empty_like(a);
  const int64_t n = a.numel();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a.scalar_type(), "ainn_fast_native", [&] {
    const scalar_t *pa = a.const_data_ptr<scalar_t>(), *pg = g.const_data_ptr<scalar_t>(),
                   *ph = h.const_data_ptr<scalar_t>();
    scalar_t* po = out.data_ptr<scalar_t>();
    at::parallel_for(0, n, kGrain, [&](int64_t begin, int64_t end) {
      forward_range(pa + begin, pg + begin, ph + begin, po + begin, end - begin, clamp, inv);
    });
  });
  return out;
}

at::Tensor affine_coupling(const at::Tensor& x, const at::Tensor& g, const at::Tensor& h, double clamp) {
  return coupling_forward(x, g, h, clamp, false);
}

at::Tensor affine_coupling_inverse(const at::Tensor& y, const at::Tensor& g, const at::Tensor& h, double clamp) {
  return coupling_forward(y, g, h, clamp, true);
}

// The backward of either direction: (da, dg), plus dh for the inverse (undefined for the
// forward, whose dh is the incoming gradient itself).
std::tuple<at::Tensor, at::Tensor, at::Tensor> coupling_backward(
    const at::Tensor& grad_, const at::Tensor& x_, const at::Tensor& g_, double clamp, bool inv, const char* op) {
  check_float(x_, op);
  TORCH_CHECK(g_.sizes() == x_.sizes() && grad_.sizes() == x_.sizes(), op, ": grad, x and g must have one shape, got ",
              grad_.sizes(), ", ", x_.sizes(), ", ", g_.sizes());
  TORCH_CHECK(g_.scalar_type() == x_.scalar_type(), op, ": x and g must have one dtype");
  const at::Tensor x = dense(x_), g = in_layout_of(g_, x);
  const at::Tensor go = in_layout_of(grad_.to(x_.scalar_type()), x);
  at::Tensor da = at::empty_like(x), dg = at::empty_like(x), dh = inv ? at::empty_like(x) : at::Tensor();
  const int64_t n = x.numel();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "ainn_fast_native", [&] {
    const scalar_t *pgo = go.const_data_ptr<scalar_t>(), *px = x.const_data_ptr<scalar_t>(),
                   *pg = g.const_data_ptr<scalar_t>();
    scalar_t *pda = da.data_ptr<scalar_t>(), *pdg = dg.data_ptr<scalar_t>();
    scalar_t* pdh = inv ? dh.data_ptr<scalar_t>() : nullptr;
    at::parallel_for(0, n, kGrain, [&](int64_t b, int64_t e) {
      backward_range(pgo + b, px + b, pg + b, pda + b, pdg + b, pdh ? pdh + b : nullptr, e - b, clamp, inv);
    });
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

TORCH_LIBRARY_IMPL(ainn_fast, CPU, m) {
  m.impl("native_affine_coupling", &affine_coupling);
  m.impl("native_affine_coupling_inverse", &affine_coupling_inverse);
  m.impl("native_affine_coupling_backward", &affine_coupling_backward);
  m.impl("native_affine_coupling_inverse_backward", &affine_coupling_inverse_backward);
}

}  // namespace cpu
}  // namespace ainn_fast
