// Autograd of the squeezes and the channel group mean. A squeeze is a permutation, so the
// gradient of each is the other applied to the incoming gradient; the group mean's is the
// fused native_group_mean_backward (the gradient spread over each group, divided by its
// size). C++ for the host time per call (see coupling_autograd.cpp).

#include <torch/autograd.h>
#include <torch/library.h>

#include "dispatch.h"

namespace ainn_fast {
namespace autograd {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;
using UnaryFn = at::Tensor(const at::Tensor&);
using GroupMeanFn = at::Tensor(const at::Tensor&, const at::Tensor&, int64_t);
using GroupMeanBackwardFn = std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, int64_t, int64_t);

// Squeeze (Unsqueeze = false) or unsqueeze; the backward runs the other one.
template <bool Unsqueeze>
class Squeeze : public torch::autograd::Function<Squeeze<Unsqueeze>> {
 public:
  static at::Tensor forward(AutogradContext*, const at::Tensor& x) {
    static const auto op = op_handle<UnaryFn>(Unsqueeze ? "native_unsqueeze2x2" : "native_squeeze2x2");
    at::AutoDispatchBelowADInplaceOrView below;
    return op.call(x);
  }

  static variable_list backward(AutogradContext*, variable_list grads) {
    static const auto inverse = op_handle<UnaryFn>(Unsqueeze ? "native_squeeze2x2" : "native_unsqueeze2x2");
    return {inverse.call(grads[0])};
  }
};

class GroupMean : public torch::autograd::Function<GroupMean> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x1, const at::Tensor& x2, int64_t out_channels) {
    static const auto op = op_handle<GroupMeanFn>("native_group_mean");
    at::AutoDispatchBelowADInplaceOrView below;
    ctx->saved_data["c1"] = x1.size(1);
    ctx->saved_data["c2"] = x2.size(1);
    return op.call(x1, x2, out_channels);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    static const auto op = op_handle<GroupMeanBackwardFn>("native_group_mean_backward");
    auto [d1, d2] = op.call(grads[0], ctx->saved_data["c1"].toInt(), ctx->saved_data["c2"].toInt());
    return {d1, d2, at::Tensor()};
  }
};

at::Tensor squeeze2x2(const at::Tensor& x) { return Squeeze<false>::apply(x); }

at::Tensor unsqueeze2x2(const at::Tensor& y) { return Squeeze<true>::apply(y); }

at::Tensor group_mean(const at::Tensor& x1, const at::Tensor& x2, int64_t out_channels) {
  return GroupMean::apply(x1, x2, out_channels);
}

}  // namespace

TORCH_LIBRARY_IMPL(ainn_fast, Autograd, m) {
  m.impl("native_squeeze2x2", &squeeze2x2);
  m.impl("native_unsqueeze2x2", &unsqueeze2x2);
  m.impl("native_group_mean", &group_mean);
}

}  // namespace autograd
}  // namespace ainn_fast
