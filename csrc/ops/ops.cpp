// Schemas of the native ops and the Python module entry point of the extension.
//
// Namespace: the ops live in `ainn_fast` (the namespace of the project's custom ops, so
// `torch.ops.ainn_fast.*` is the one place to find them), each named `native_<op>`. The
// Triton backend defines `ainn_fast::triton_<op>` in the same namespace from Python; the
// prefixes keep the two sets from colliding while both are loaded, and each backend keeps
// its own schema, fake kernel and autograd formula. TORCH_LIBRARY_FRAGMENT (not
// TORCH_LIBRARY) because the namespace is shared with those Python definitions.
//
// Autograd: autograd/*.cpp (Autograd key). Fake (meta) kernels are registered from Python
// (ainn_fast/native.py). Kernels: cpu/*.cpp (CPU key) and cuda/*.cu (CUDA key, only
// compiled when the build has CUDA).

#include <Python.h>
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(ainn_fast, m) {
  // Coupling tail: y = x * exp(s(g)) + h, x = (y - h) * exp(-s(g)), s(g) = clamp * (2 sigmoid(g) - 1).
  m.def("native_affine_coupling(Tensor x, Tensor g, Tensor h, float clamp) -> Tensor");
  m.def("native_affine_coupling_inverse(Tensor y, Tensor g, Tensor h, float clamp) -> Tensor");
  // Fused backward of each direction, recomputing the scale from g instead of saving it;
  // neither reads h. Forward: from its input x, returns (grad_x, grad_g) (grad_h is the
  // incoming gradient itself). Inverse: from its output x, returns (grad_y, grad_g, grad_h).
  m.def("native_affine_coupling_backward(Tensor grad, Tensor x, Tensor g, float clamp) -> (Tensor, Tensor)");
  m.def(
      "native_affine_coupling_inverse_backward(Tensor grad, Tensor x, Tensor g, float clamp)"
      " -> (Tensor, Tensor, Tensor)");
  // Space-to-depth in A-INN's channel order (i * 2 + j) * C + c, and its inverse.
  m.def("native_squeeze2x2(Tensor x) -> Tensor");
  m.def("native_unsqueeze2x2(Tensor y) -> Tensor");
  // Channel squeeze: out[c] = mean_g cat([x1, x2])[g * M + c]; backward spreads grad / G.
  m.def("native_group_mean(Tensor x1, Tensor x2, int out_channels) -> Tensor");
  m.def("native_group_mean_backward(Tensor grad, int c1, int c2) -> (Tensor, Tensor)");
  // FDSM-D: (cat[a3, a5, a7], cat[x - a3, x - a5, x - a7]) with zero-padded stride-1 means.
  m.def("native_multiscale_decompose(Tensor x) -> (Tensor, Tensor)");
  m.def("native_multiscale_decompose_backward(Tensor grad_low, Tensor grad_high) -> Tensor");
  // FDSM-S: sigmoid(logits) * low + (1 - sigmoid(logits)) * high, logits (B, 1, H, W).
  m.def("native_frequency_blend(Tensor logits, Tensor low, Tensor high) -> Tensor");
  m.def(
      "native_frequency_blend_backward(Tensor grad, Tensor logits, Tensor low, Tensor high)"
      " -> (Tensor, Tensor, Tensor)");
  // The entropy decoder's step (not a model op): decode, for every rANS stream s of
  // `state` (streams, 3: x, next word, end word of `words`), the rows r with
  // row_stream[r] == s in order, each of index.size(1) symbols coded with CDF rows
  // index[r]; returns the symbols (rows, channels) in `dtype`, zero in rows of no stream,
  // and advances `state`. Bit-exact with CompressAI's RansDecoder (ops/rans_decode.h).
  m.def(
      "native_rans_decode(Tensor(a!) state, Tensor words, Tensor row_stream, Tensor index, Tensor cdf,"
      " Tensor cdf_length, Tensor offset, ScalarType dtype) -> Tensor");
  // A whole decoding step: as native_rans_decode, with each symbol's table row the count of
  // its channel's thresholds (channels, n) below its scale, and each position's y_hat
  // integer clamp(q * unit + mean) written to y_rows[write[r]]; gaussian (rows, 2 *
  // channels) holds the scales, then the means (native_entropy_params' output).
  m.def(
      "native_rans_decode_step(Tensor(a!) state, Tensor words, Tensor row_stream, Tensor gaussian,"
      " Tensor thresholds, Tensor cdf, Tensor cdf_length, Tensor offset, Tensor(b!) y_rows, Tensor write,"
      " float unit, float act_max) -> ()");
  // The encoder: stream s of regions.size(0) codes the positions p with position_stream[p] ==
  // s (q (positions, channels) int32 symbols, index their CDF rows) into
  // words[regions[s, 0], regions[s, 1]), ending at regions[s, 1]; returns the words and
  // where each stream begins (-1: its region was too small). CompressAI's bytes exactly.
  m.def(
      "native_rans_encode(Tensor q, Tensor index, Tensor position_stream, Tensor regions, Tensor cdf,"
      " Tensor cdf_length, Tensor offset, int total_words) -> (Tensor, Tensor)");
  // The fixed-point entropy parameters of one coding step (CUDA only; docs/format.md):
  // the context convolution over each position's window rows of y_rows, concatenated
  // after the hyper parameters params[positions], then the 1x1 layers (LeakyReLU with
  // slope / 2^16 between them), every layer requantised by its shift and clamped to
  // act_max. Returns the last layer's output (rows, 2M): scales, then means.
  m.def(
      "native_entropy_params(Tensor y_rows, Tensor params, Tensor window, Tensor positions, Tensor ctx_weight,"
      " Tensor ctx_bias, int ctx_shift, Tensor[] weights, Tensor[] biases, int[] shifts, int slope,"
      " float act_max) -> Tensor");
}

// `import ainn_fast._C` (setup.py build) needs a module init; the JIT build loads the same
// library with torch.ops.load_library and never calls it. The module is empty: the ops
// are reached through torch.ops.ainn_fast.
#define AINN_CONCAT_(a, b) a##b
#define AINN_CONCAT(a, b) AINN_CONCAT_(a, b)
#define AINN_STR_(a) #a
#define AINN_STR(a) AINN_STR_(a)

PyMODINIT_FUNC AINN_CONCAT(PyInit_, TORCH_EXTENSION_NAME)(void) {
  static PyModuleDef def = {PyModuleDef_HEAD_INIT, AINN_STR(TORCH_EXTENSION_NAME), nullptr, -1, nullptr};
  return PyModule_Create(&def);
}
