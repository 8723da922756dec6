// Calling an ainn_fast op through the dispatcher from the autograd kernels.
//
// The autograd kernels (Autograd key) run first on every call; their forward computes the
// result with the op itself, one level down (below autograd), so the CPU, CUDA and fake
// (torch.compile) kernels are reached exactly as a direct call would reach them.

#pragma once

#include <ATen/core/dispatch/Dispatcher.h>

#include <string>

namespace ainn_fast {
namespace autograd {

// The typed handle of op `ainn_fast::<name>`, looked up once per call site.
template <typename Signature>
c10::TypedOperatorHandle<Signature> op_handle(const char* name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow((std::string("ainn_fast::") + name).c_str(), "").typed<Signature>();
}

}  // namespace autograd
}  // namespace ainn_fast
