// Helpers shared by the CPU kernels.
//
// Vectorisation: the extension is built for generic x86-64 (it must load on any machine),
// so the float hot loops are compiled several times with GCC's target_clones (x86-64-v4:
// AVX-512; x86-64-v3: AVX2 with FMA, e.g. AMD Zen 1-3; baseline) and the loader picks the
// best one for the CPU (ifunc). Their bodies are branch-free and call no library function,
// so GCC vectorises them; that is why exp is a polynomial here instead of std::exp (a
// scalar call that blocks vectorisation). The clamps in fast_exp vectorise below AVX-512
// only with -fno-trapping-math (ainn_fast/build_flags.py).
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <cmath>
#include <cstdint>
#include <cstring>

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__) && __GNUC__ >= 12
#define AINN_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#elif defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
// arch= levels in target_clones are GCC 12's; before it, the same without FMA.
#define AINN_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define AINN_CLONES
#endif

#define AINN_INLINE inline __attribute__((always_inline))

namespace ainn_fast {
namespace cpu {

// exp(x) in float to about 1 ulp on the range that matters: Cody-Waite reduction
// x = n ln2 + r, |r| <= ln2 / 2, degree-7 Taylor polynomial (truncation < 1e-8 relative),
// then scaling by 2^n through the exponent bits. Inputs are clamped to the normal range
// (results below 1.2e-38 are returned as that, above 3e38 as that); NaN stays NaN.
AINN_INLINE float fast_exp(float x) {
  x = x > 88.0f ? 88.0f : x;
  x = x < -87.0f ? -87.0f : x;
  const float t = x * 1.44269504088896341f;
  const float n = (t + 12582912.0f) - 12582912.0f;  // round to nearest (1.5 * 2^23 trick)
  float r = x - n * 0.693145751953125f;              // ln2 split in a high part exact in float
  r = r - n * 1.42860682030941723212e-6f;            // and the rest
  float p = 1.0f / 5040.0f;
  p = p * r + 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return p * scale;
}

AINN_INLINE double fast_exp(double x) { return std::exp(x); }  // float64 is for gradcheck, not speed

template <typename T>
AINN_INLINE T sigmoid(T x) {
  return T(1) / (T(1) + fast_exp(-x));
}

// The type arithmetic runs in: float for float, half and bfloat16; double for double.
template <typename T>
struct Acc {
  using type = float;
};
template <>
struct Acc<double> {
  using type = double;
};

// Elements per parallel chunk for elementwise work: big enough to amortise the task.
constexpr int64_t kGrain = 16384;
// Elements converted per step when half/bfloat16 data run through a float kernel.
constexpr int64_t kBlock = 1024;

inline void check_4d(const at::Tensor& t, const char* op, const char* name) {
  TORCH_CHECK(t.dim() == 4, op, ": ", name, " must be 4-D (B, C, H, W), got ", t.dim(), "-D");
}

inline void check_float(const at::Tensor& t, const char* op) {
  auto s = t.scalar_type();
  TORCH_CHECK(
      s == at::kFloat || s == at::kDouble || s == at::kHalf || s == at::kBFloat16, op,
      ": expected a float32, float64, float16 or bfloat16 tensor, got ", s);
}

}  // namespace cpu
}  // namespace ainn_fast
