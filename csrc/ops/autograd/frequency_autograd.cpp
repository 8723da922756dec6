// Autograd of FDSM's two ops: the multi-scale decomposition (backward: the fused
// native_multiscale_decompose_backward, which needs only the incoming gradients) and the
// dual-frequency blend (backward: native_frequency_blend_backward from the saved inputs).
// C++ for the host time per call (see coupling_autograd.cpp).

#include <torch/autograd.h>
#include <torch/library.h>

#include "dispatch.h"

namespace ainn_fast {
namespace autograd {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;
using DecomposeFn = std::tuple<at::Tensor, at::Tensor>(const at::Tensor&);
using DecomposeBackwardFn = at::Tensor(const at::Tensor&, const at::Tensor&);
using BlendFn = at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&);
using BlendBackwardFn = std::tuple<at::Tensor, at::Tensor, at::Tensor>(
    const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&);

class Decompose : public torch::autograd::Function<Decompose> {
 public:
  static variable_list forward(AutogradContext*, const at::Tensor& x) {
    static const auto op = op_handle<DecomposeFn>("native_multiscale_decompose");
    at::AutoDispatchBelowADInplaceOrView below;
    auto [low, high] = op.call(x);
    return {low, high};
  }

  // An unused output's gradient arrives as zeros (gradients are materialised by default).
  static variable_list backward(AutogradContext*, variable_list grads) {
    static const auto op = op_handle<DecomposeBackwardFn>("native_multiscale_decompose_backward");
    return {op.call(grads[0], grads[1])};
  }
};

class Blend : public torch::autograd::Function<Blend> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& logits, const at::Tensor& low,
                            const at::Tensor& high) {
    static const auto op = op_handle<BlendFn>("native_frequency_blend");
    at::AutoDispatchBelowADInplaceOrView below;
    ctx->save_for_backward({logits, low, high});
    return op.call(logits, low, high);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    static const auto op = op_handle<BlendBackwardFn>("native_frequency_blend_backward");
    const auto saved = ctx->get_saved_variables();
    auto [dlogits, dlow, dhigh] = op.call(grads[0], saved[0], saved[1], saved[2]);
    return {dlogits, dlow, dhigh};
  }
};

std::tuple<at::Tensor, at::Tensor> multiscale_decompose(const at::Tensor& x) {
  auto out = Decompose::apply(x);
  return {out[0], out[1]};
}

at::Tensor frequency_blend(const at::Tensor& logits, const at::Tensor& low, const at::Tensor& high) {
  return Blend::apply(logits, low, high);
}

}  // namespace

TORCH_LIBRARY_IMPL(ainn_fast, Autograd, m) {
  m.impl("native_multiscale_decompose", &multiscale_decompose);
  m.impl("native_frequency_blend", &frequency_blend);
}

}  // namespace autograd
}  // namespace ainn_fast
