// CPU kernels of FDSM: the multi-scale decomposition (forward and backward, one pass over
// the image each) and the dual-frequency blend (forward and backward).
//
// Decomposition: a_k = box_k(x) / k^2 for k = 3, 5, 7 (zero padding counted in the
// divisor, i.e. avg_pool2d(count_include_pad=True)); the box sums are separable, so each
// task takes a band of rows of one plane, forms the horizontal sums of the band plus a
// 3-row halo once (nested: the 5-sum extends the 3-sum, the 7-sum the 5-sum), then the
// vertical sums. The band's buffers stay in L2. The backward is the adjoint: a zero-padded
// box sum is self-adjoint, so dx = sum_k gh_k + sum_k box_k(gl_k - gh_k) / k^2.

#include <torch/library.h>

#include <tuple>
#include <vector>

#include "cpu_utils.h"

namespace ainn_fast {
namespace cpu {
namespace {

constexpr int kHalo = 3;       // radius of the largest window (7)
constexpr int64_t kBand = 32;  // output rows per task

// Horizontal box sums of one zero-padded row: pad has W + 6 entries, pad[w + 3] = row[w].
template <typename A>
AINN_INLINE void hsums_body(const A* __restrict pad, A* __restrict h3, A* __restrict h5, A* __restrict h7, int64_t W) {
  for (int64_t w = 0; w < W; ++w) {
    const A* p = pad + w;
    const A s3 = p[2] + p[3] + p[4];
    const A s5 = s3 + p[1] + p[5];
    h3[w] = s3;
    h5[w] = s5;
    h7[w] = s5 + p[0] + p[6];
  }
}
AINN_CLONES void hsums_f32(const float* __restrict pad, float* __restrict h3, float* __restrict h5,
                           float* __restrict h7, int64_t W) {
  hsums_body(pad, h3, h5, h7, W);
}
void hsums(const float* pad, float* h3, float* h5, float* h7, int64_t W) { hsums_f32(pad, h3, h5, h7, W); }
void hsums(const double* pad, double* h3, double* h5, double* h7, int64_t W) { hsums_body(pad, h3, h5, h7, W); }

// Vertical sum of the k rows rows[0..k) of a band buffer with row stride W.
template <typename A, int K>
AINN_INLINE void vsum_body(const A* __restrict rows, A* __restrict out, int64_t W) {
  for (int64_t w = 0; w < W; ++w) {
    A s = rows[w];
    for (int r = 1; r < K; ++r) s += rows[r * W + w];
    out[w] = s;
  }
}
AINN_CLONES void vsums_f32(const float* __restrict r3, const float* __restrict r5, const float* __restrict r7,
                           float* __restrict s3, float* __restrict s5, float* __restrict s7, int64_t W) {
  vsum_body<float, 3>(r3, s3, W);
  vsum_body<float, 5>(r5, s5, W);
  vsum_body<float, 7>(r7, s7, W);
}
void vsums(const float* r3, const float* r5, const float* r7, float* s3, float* s5, float* s7, int64_t W) {
  vsums_f32(r3, r5, r7, s3, s5, s7, W);
}
void vsums(const double* r3, const double* r5, const double* r7, double* s3, double* s5, double* s7, int64_t W) {
  vsum_body<double, 3>(r3, s3, W);
  vsum_body<double, 5>(r5, s5, W);
  vsum_body<double, 7>(r7, s7, W);
}

// Band buffers of one task: horizontal sums of rows [y0 - 3, y1 + 3) per window size.
template <typename A>
struct Band {
  int64_t W, rows;
  std::vector<A> pad, h[3], s[3];
  Band(int64_t W_, int64_t band) : W(W_), rows(band + 2 * kHalo), pad(W_ + 2 * kHalo, A(0)) {
    for (int k = 0; k < 3; ++k) {
      h[k].assign(rows * W, A(0));
      s[k].assign(W, A(0));
    }
  }
  // Row r of the band (image row y0 - 3 + r) from a source row, or zeros outside the image.
  template <typename F>
  void fill(int64_t r, bool inside, F&& load_row) {
    if (!inside) {
      for (int k = 0; k < 3; ++k) std::fill_n(h[k].data() + r * W, W, A(0));
      return;
    }
    load_row(pad.data() + kHalo);
    hsums(pad.data(), h[0].data() + r * W, h[1].data() + r * W, h[2].data() + r * W, W);
  }
  // Only the window sum of size 2k + 3 of a row (the backward's inputs differ per size).
  template <typename F>
  void fill_one(int k, int64_t r, bool inside, F&& load_row) {
    A* out = h[k].data() + r * W;
    if (!inside) {
      std::fill_n(out, W, A(0));
      return;
    }
    load_row(pad.data() + kHalo);
    const A* p = pad.data() + kHalo - (k + 1);
    const int n = 2 * k + 3;
    for (int64_t w = 0; w < W; ++w) {
      A acc = p[w];
      for (int j = 1; j < n; ++j) acc += p[w + j];
      out[w] = acc;
    }
  }
  // Vertical sums for band row r (image row y0 + r - 3 ... centred at y0 + r - 3 + 3).
  void vertical(int64_t r) {
    vsums(h[0].data() + (r + 2) * W, h[1].data() + (r + 1) * W, h[2].data() + r * W, s[0].data(), s[1].data(),
          s[2].data(), W);
  }
};

std::tuple<at::Tensor, at::Tensor> multiscale_decompose(const at::Tensor& x_) {
  const char* op = "native_multiscale_decompose";
  check_4d(x_, op, "x");
  check_float(x_, op);
  const int64_t B = x_.size(0), C = x_.size(1), H = x_.size(2), W = x_.size(3);
  const at::Tensor x = x_.contiguous();
  at::Tensor low = at::empty({B, 3 * C, H, W}, x.options()), high = at::empty_like(low);
  if (low.numel() == 0) return {low, high};
  const int64_t bands = (H + kBand - 1) / kBand;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "ainn_fast_native", [&] {
    using A = typename Acc<scalar_t>::type;
    const scalar_t* px = x.const_data_ptr<scalar_t>();
    scalar_t *pl = low.data_ptr<scalar_t>(), *ph = high.data_ptr<scalar_t>();
    at::parallel_for(0, B * C * bands, 1, [&](int64_t begin, int64_t end) {
      Band<A> band(W, kBand);
      for (int64_t t = begin; t < end; ++t) {
        const int64_t bi = t % bands, plane = t / bands, c = plane % C, b = plane / C;
        const int64_t y0 = bi * kBand, y1 = std::min(H, y0 + kBand);
        const scalar_t* xp = px + plane * H * W;
        for (int64_t r = 0; r < (y1 - y0) + 2 * kHalo; ++r) {
          const int64_t y = y0 - kHalo + r;
          band.fill(r, y >= 0 && y < H, [&](A* dst) {
            for (int64_t w = 0; w < W; ++w) dst[w] = static_cast<A>(xp[y * W + w]);
          });
        }
        for (int64_t y = y0; y < y1; ++y) {
          band.vertical(y - y0);
          const scalar_t* xr = xp + y * W;
          for (int k = 0; k < 3; ++k) {
            const A div = static_cast<A>((2 * k + 3) * (2 * k + 3));
            const int64_t off = ((b * 3 + k) * C + c) * H * W + y * W;
            const A* s = band.s[k].data();
            scalar_t *lo = pl + off, *hi = ph + off;
            for (int64_t w = 0; w < W; ++w) {
              const scalar_t a = static_cast<scalar_t>(s[w] / div);
              lo[w] = a;
              // x - a in the output dtype, as the reference computes it from the rounded mean.
              hi[w] = static_cast<scalar_t>(static_cast<A>(xr[w]) - static_cast<A>(a));
            }
          }
        }
      }
    });
  });
  return {low, high};
}

at::Tensor multiscale_decompose_backward(const at::Tensor& gl_, const at::Tensor& gh_) {
  const char* op = "native_multiscale_decompose_backward";
  check_4d(gl_, op, "grad_low");
  check_float(gl_, op);
  TORCH_CHECK(gl_.sizes() == gh_.sizes(), op, ": grad_low and grad_high must have one shape");
  TORCH_CHECK(gl_.size(1) % 3 == 0, op, ": expected 3 * C channels, got ", gl_.size(1));
  const at::Tensor gl = gl_.contiguous(), gh = gh_.to(gl_.scalar_type()).contiguous();
  const int64_t B = gl.size(0), C = gl.size(1) / 3, H = gl.size(2), W = gl.size(3);
  at::Tensor dx = at::empty({B, C, H, W}, gl.options());
  if (dx.numel() == 0) return dx;
  const int64_t bands = (H + kBand - 1) / kBand;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, gl.scalar_type(), "ainn_fast_native", [&] {
    using A = typename Acc<scalar_t>::type;
    const scalar_t *pl = gl.const_data_ptr<scalar_t>(), *ph = gh.const_data_ptr<scalar_t>();
    scalar_t* pd = dx.data_ptr<scalar_t>();
    at::parallel_for(0, B * C * bands, 1, [&](int64_t begin, int64_t end) {
      // Each window size sums its own input gl_k - gh_k: the band's buffer k holds it.
      Band<A> band(W, kBand);
      for (int64_t t = begin; t < end; ++t) {
        const int64_t bi = t % bands, plane = t / bands, c = plane % C, b = plane / C;
        const int64_t y0 = bi * kBand, y1 = std::min(H, y0 + kBand);
        int64_t off[3];
        for (int k = 0; k < 3; ++k) off[k] = ((b * 3 + k) * C + c) * H * W;
        for (int64_t r = 0; r < (y1 - y0) + 2 * kHalo; ++r) {
          const int64_t y = y0 - kHalo + r;
          for (int k = 0; k < 3; ++k) {
            band.fill_one(k, r, y >= 0 && y < H, [&](A* dst) {
              const scalar_t *l = pl + off[k] + y * W, *h = ph + off[k] + y * W;
              for (int64_t w = 0; w < W; ++w) dst[w] = static_cast<A>(l[w]) - static_cast<A>(h[w]);
            });
          }
        }
        for (int64_t y = y0; y < y1; ++y) {
          band.vertical(y - y0);
          const A *s3 = band.s[0].data(), *s5 = band.s[1].data(), *s7 = band.s[2].data();
          const scalar_t *h3 = ph + off[0] + y * W, *h5 = ph + off[1] + y * W, *h7 = ph + off[2] + y * W;
          scalar_t* d = pd + plane * H * W + y * W;
          for (int64_t w = 0; w < W; ++w) {
            const A hsum = static_cast<A>(h3[w]) + static_cast<A>(h5[w]) + static_cast<A>(h7[w]);
            d[w] = static_cast<scalar_t>(hsum + s3[w] / A(9) + s5[w] / A(25) + s7[w] / A(49));
          }
        }
      }
    });
  });
  return dx;
}

// ---------------------------------------------------------------------------------------
// Blend: out = m low + (1 - m) high, m = sigmoid(logits) shared by the C channels.

// The mask of a block of pixels is computed once (sigmoid_block) and reused for every channel.
template <typename T>
AINN_INLINE void sigmoid_body(T* __restrict v, int64_t n) {
  for (int64_t i = 0; i < n; ++i) v[i] = sigmoid(v[i]);
}
AINN_CLONES void sigmoid_f32(float* __restrict v, int64_t n) { sigmoid_body(v, n); }
void sigmoid_block(float* v, int64_t n) { sigmoid_f32(v, n); }
void sigmoid_block(double* v, int64_t n) { sigmoid_body(v, n); }

template <typename T>
AINN_INLINE void blend_body(const T* __restrict mk, const T* __restrict lo, const T* __restrict hi, T* __restrict out,
                            int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const T m = mk[i];
    out[i] = m * lo[i] + (T(1) - m) * hi[i];
  }
}
AINN_CLONES void blend_f32(const float* __restrict mk, const float* __restrict lo, const float* __restrict hi,
                           float* __restrict out, int64_t n) {
  blend_body(mk, lo, hi, out, n);
}

// d low = go m, d high = go (1 - m), d logits = sum_c go (low - high) m (1 - m).
template <typename T>
AINN_INLINE void blend_grad_body(const T* __restrict go, const T* __restrict mk, const T* __restrict lo,
                                 const T* __restrict hi, T* __restrict dlo, T* __restrict dhi, T* __restrict dm,
                                 int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const T m = mk[i];
    dlo[i] = go[i] * m;
    dhi[i] = go[i] * (T(1) - m);
    dm[i] += go[i] * (lo[i] - hi[i]);
  }
}
AINN_CLONES void blend_grad_f32(const float* __restrict go, const float* __restrict mk, const float* __restrict lo,
                                const float* __restrict hi, float* __restrict dlo, float* __restrict dhi,
                                float* __restrict dm, int64_t n) {
  blend_grad_body(go, mk, lo, hi, dlo, dhi, dm, n);
}

// One channel of a block, per dtype: float runs the cloned loop in place, double the
// scalar one, half/bfloat16 convert through the float scratch buffers.
void blend_channel(const float* m, const float* lo, const float* hi, float* out, int64_t n, float*, float*, float*) {
  blend_f32(m, lo, hi, out, n);
}
void blend_channel(const double* m, const double* lo, const double* hi, double* out, int64_t n, double*, double*,
                   double*) {
  blend_body(m, lo, hi, out, n);
}
template <typename T>
void blend_channel(const float* m, const T* lo, const T* hi, T* out, int64_t n, float* fl, float* fh, float* fo) {
  for (int64_t i = 0; i < n; ++i) {
    fl[i] = static_cast<float>(lo[i]);
    fh[i] = static_cast<float>(hi[i]);
  }
  blend_f32(m, fl, fh, fo, n);
  for (int64_t i = 0; i < n; ++i) out[i] = static_cast<T>(fo[i]);
}

void blend_grad_channel(const float* go, const float* m, const float* lo, const float* hi, float* dlo, float* dhi,
                        float* acc, int64_t n, float*, float*, float*, float*, float*) {
  blend_grad_f32(go, m, lo, hi, dlo, dhi, acc, n);
}
void blend_grad_channel(const double* go, const double* m, const double* lo, const double* hi, double* dlo,
                        double* dhi, double* acc, int64_t n, double*, double*, double*, double*, double*) {
  blend_grad_body(go, m, lo, hi, dlo, dhi, acc, n);
}
template <typename T>
void blend_grad_channel(const T* go, const float* m, const T* lo, const T* hi, T* dlo, T* dhi, float* acc, int64_t n,
                        float* fg, float* fl, float* fh, float* fdl, float* fdh) {
  for (int64_t i = 0; i < n; ++i) {
    fg[i] = static_cast<float>(go[i]);
    fl[i] = static_cast<float>(lo[i]);
    fh[i] = static_cast<float>(hi[i]);
  }
  blend_grad_f32(fg, m, fl, fh, fdl, fdh, acc, n);
  for (int64_t i = 0; i < n; ++i) {
    dlo[i] = static_cast<T>(fdl[i]);
    dhi[i] = static_cast<T>(fdh[i]);
  }
}

// Contiguous (B, C, HW) views; tasks = (b, block of pixels), looping over channels so the
// mask of a block is read once and stays in cache.
void check_blend(const at::Tensor& logits, const at::Tensor& low, const at::Tensor& high, const char* op) {
  check_4d(low, op, "low");
  check_float(low, op);
  TORCH_CHECK(high.sizes() == low.sizes(), op, ": low and high must have one shape");
  TORCH_CHECK(logits.dim() == 4 && logits.size(0) == low.size(0) && logits.size(1) == 1 &&
                  logits.size(2) == low.size(2) && logits.size(3) == low.size(3),
              op, ": logits must be (B, 1, H, W) for low/high of ", low.sizes(), ", got ", logits.sizes());
  TORCH_CHECK(logits.scalar_type() == low.scalar_type() && high.scalar_type() == low.scalar_type(), op,
              ": logits, low and high must have one dtype");
}

at::Tensor frequency_blend(const at::Tensor& logits_, const at::Tensor& low_, const at::Tensor& high_) {
  const char* op = "native_frequency_blend";
  check_blend(logits_, low_, high_, op);
  const at::Tensor lg = logits_.contiguous(), lo = low_.contiguous(), hi = high_.contiguous();
  const int64_t B = lo.size(0), C = lo.size(1), HW = lo.size(2) * lo.size(3);
  at::Tensor out = at::empty(lo.sizes(), lo.options());
  if (out.numel() == 0) return out;
  const int64_t chunks = (HW + kBlock - 1) / kBlock;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, lo.scalar_type(), "ainn_fast_native", [&] {
    using A = typename Acc<scalar_t>::type;
    const scalar_t *pm = lg.const_data_ptr<scalar_t>(), *pl = lo.const_data_ptr<scalar_t>(),
                   *ph = hi.const_data_ptr<scalar_t>();
    scalar_t* po = out.data_ptr<scalar_t>();
    at::parallel_for(0, B * chunks, std::max<int64_t>(1, kGrain / (kBlock * std::max<int64_t>(1, C))),
                     [&](int64_t begin, int64_t end) {
      A fm[kBlock], fl[kBlock], fh[kBlock], fo[kBlock];
      for (int64_t t = begin; t < end; ++t) {
        const int64_t chunk = t % chunks, b = t / chunks, p0 = chunk * kBlock, n = std::min(kBlock, HW - p0);
        for (int64_t i = 0; i < n; ++i) fm[i] = static_cast<A>(pm[b * HW + p0 + i]);
        sigmoid_block(fm, n);
        for (int64_t c = 0; c < C; ++c) {
          const int64_t off = (b * C + c) * HW + p0;
          blend_channel(fm, pl + off, ph + off, po + off, n, fl, fh, fo);
        }
      }
    });
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> frequency_blend_backward(
    const at::Tensor& grad_, const at::Tensor& logits_, const at::Tensor& low_, const at::Tensor& high_) {
  const char* op = "native_frequency_blend_backward";
  check_blend(logits_, low_, high_, op);
  TORCH_CHECK(grad_.sizes() == low_.sizes(), op, ": grad must have the shape of low");
  const at::Tensor go = grad_.to(low_.scalar_type()).contiguous();
  const at::Tensor lg = logits_.contiguous(), lo = low_.contiguous(), hi = high_.contiguous();
  const int64_t B = lo.size(0), C = lo.size(1), HW = lo.size(2) * lo.size(3);
  at::Tensor dlg = at::empty(lg.sizes(), lg.options()), dlo = at::empty(lo.sizes(), lo.options()),
             dhi = at::empty(lo.sizes(), lo.options());
  if (dlo.numel() == 0) return {dlg.zero_(), dlo, dhi};
  const int64_t chunks = (HW + kBlock - 1) / kBlock;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, lo.scalar_type(), "ainn_fast_native", [&] {
    using A = typename Acc<scalar_t>::type;
    const scalar_t *pg = go.const_data_ptr<scalar_t>(), *pm = lg.const_data_ptr<scalar_t>(),
                   *pl = lo.const_data_ptr<scalar_t>(), *ph = hi.const_data_ptr<scalar_t>();
    scalar_t *pdm = dlg.data_ptr<scalar_t>(), *pdl = dlo.data_ptr<scalar_t>(), *pdh = dhi.data_ptr<scalar_t>();
    at::parallel_for(0, B * chunks, std::max<int64_t>(1, kGrain / (kBlock * std::max<int64_t>(1, C))),
                     [&](int64_t begin, int64_t end) {
      A fm[kBlock], facc[kBlock], fg[kBlock], fl[kBlock], fh[kBlock], fdl[kBlock], fdh[kBlock];
      for (int64_t t = begin; t < end; ++t) {
        const int64_t chunk = t % chunks, b = t / chunks, p0 = chunk * kBlock, n = std::min(kBlock, HW - p0);
        for (int64_t i = 0; i < n; ++i) {
          fm[i] = static_cast<A>(pm[b * HW + p0 + i]);
          facc[i] = A(0);
        }
        sigmoid_block(fm, n);
        for (int64_t c = 0; c < C; ++c) {
          const int64_t off = (b * C + c) * HW + p0;
          blend_grad_channel(pg + off, fm, pl + off, ph + off, pdl + off, pdh + off, facc, n, fg, fl, fh, fdl, fdh);
        }
        // sigmoid'(logits) = m (1 - m), applied once after the channel sum.
        for (int64_t i = 0; i < n; ++i) {
          const A m = fm[i];
          pdm[b * HW + p0 + i] = static_cast<scalar_t>(facc[i] * m * (A(1) - m));
        }
      }
    });
  });
  return {dlg, dlo, dhi};
}

}  // namespace

TORCH_LIBRARY_IMPL(ainn_fast, CPU, m) {
  m.impl("native_multiscale_decompose", &multiscale_decompose);
  m.impl("native_multiscale_decompose_backward", &multiscale_decompose_backward);
  m.impl("native_frequency_blend", &frequency_blend);
  m.impl("native_frequency_blend_backward", &frequency_blend_backward);
}

}  // namespace cpu
}  // namespace ainn_fast
