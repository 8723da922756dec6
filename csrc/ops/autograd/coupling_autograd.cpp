// Autograd of the affine coupling tail (forward and inverse direction). The backward is
// the fused op of each direction, which recomputes the scale from g: the forward keeps its
// input x and g, the inverse its output x and g, so h (and the inverse's y) are never kept
// for the backward, and the forward's dh is the incoming gradient itself, with no kernel.
//
// Autograd lives here, in C++, rather than in Python's torch.library.register_autograd:
// that Python kernel ran on every call and cost about 14 us with gradients and 3.5 us
// without on the 2-core development CPU, more than the kernels themselves at the
// decode-time and coarse training shapes, where the GPU waits on the host.

#include <torch/autograd.h>
#include <torch/library.h>

#include "dispatch.h"

namespace ainn_fast {
namespace autograd {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;
using CouplingFn = at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&, double);
using BackwardFn = std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&, const at::Tensor&, double);
using InverseBackwardFn =
    std::tuple<at::Tensor, at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&, const at::Tensor&, double);

class Coupling : public torch::autograd::Function<Coupling> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& g, const at::Tensor& h,
                            double clamp) {
    static const auto op = op_handle<CouplingFn>("native_affine_coupling");
    at::AutoDispatchBelowADInplaceOrView below;
    ctx->saved_data["clamp"] = clamp;
    ctx->save_for_backward({x, g});
    return op.call(x, g, h, clamp);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    static const auto op = op_handle<BackwardFn>("native_affine_coupling_backward");
    const auto saved = ctx->get_saved_variables();
    auto [dx, dg] = op.call(grads[0], saved[0], saved[1], ctx->saved_data["clamp"].toDouble());
    return {dx, dg, grads[0], at::Tensor()};
  }
};

class CouplingInverse : public torch::autograd::Function<CouplingInverse> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& y, const at::Tensor& g, const at::Tensor& h,
                            double clamp) {
    static const auto op = op_handle<CouplingFn>("native_affine_coupling_inverse");
    at::AutoDispatchBelowADInplaceOrView below;
    at::Tensor x = op.call(y, g, h, clamp);
    ctx->saved_data["clamp"] = clamp;
    ctx->save_for_backward({x, g});  // the output: y - h is x e^s, never re-read
    return x;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    static const auto op = op_handle<InverseBackwardFn>("native_affine_coupling_inverse_backward");
    const auto saved = ctx->get_saved_variables();
    auto [dy, dg, dh] = op.call(grads[0], saved[0], saved[1], ctx->saved_data["clamp"].toDouble());
    return {dy, dg, dh, at::Tensor()};
  }
};

at::Tensor affine_coupling(const at::Tensor& x, const at::Tensor& g, const at::Tensor& h, double clamp) {
  return Coupling::apply(x, g, h, clamp);
}

at::Tensor affine_coupling_inverse(const at::Tensor& y, const at::Tensor& g, const at::Tensor& h, double clamp) {
  return CouplingInverse::apply(y, g, h, clamp);
}

}  // namespace

TORCH_LIBRARY_IMPL(ainn_fast, Autograd, m) {
  m.impl("native_affine_coupling", &affine_coupling);
  m.impl("native_affine_coupling_inverse", &affine_coupling_inverse);
}

}  // namespace autograd
}  // namespace ainn_fast
