// Autograd of the affine coupling tail (forward and inverse direction). The backward is
// the fused op native_affine_coupling_backward, which recomputes the scale from g.
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
using CouplingBackwardFn = std::tuple<at::Tensor, at::Tensor, at::Tensor>(
    const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&, double, bool);

template <bool Inverse>
class Coupling : public torch::autograd::Function<Coupling<Inverse>> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& a, const at::Tensor& g, const at::Tensor& h,
                            double clamp) {
    static const auto op =
        op_handle<CouplingFn>(Inverse ? "native_affine_coupling_inverse" : "native_affine_coupling");
    at::AutoDispatchBelowADInplaceOrView below;
    ctx->saved_data["clamp"] = clamp;
    ctx->save_for_backward({a, g, h});
    return op.call(a, g, h, clamp);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    static const auto op = op_handle<CouplingBackwardFn>("native_affine_coupling_backward");
    const auto saved = ctx->get_saved_variables();
    auto [da, dg, dh] = op.call(grads[0], saved[0], saved[1], saved[2], ctx->saved_data["clamp"].toDouble(), Inverse);
    return {da, dg, dh, at::Tensor()};
  }
};

at::Tensor affine_coupling(const at::Tensor& x, const at::Tensor& g, const at::Tensor& h, double clamp) {
  return Coupling<false>::apply(x, g, h, clamp);
}

at::Tensor affine_coupling_inverse(const at::Tensor& y, const at::Tensor& g, const at::Tensor& h, double clamp) {
  return Coupling<true>::apply(y, g, h, clamp);
}

}  // namespace

TORCH_LIBRARY_IMPL(ainn_fast, Autograd, m) {
  m.impl("native_affine_coupling", &affine_coupling);
  m.impl("native_affine_coupling_inverse", &affine_coupling_inverse);
}

}  // namespace autograd
}  // namespace ainn_fast
