// The decoding step of CompressAI's rANS coder (ryg_rans' 64-bit variant with 32-bit
// words, 16-bit probabilities, CompressAI's 4-bit bypass code for symbols outside a CDF
// row), as one inline function shared by the CPU kernel and the CUDA kernel, so that the
// CPU tests (and the emulated CUDA launch) check the exact code the GPU runs.
//
// Why by hand: CompressAI only decodes on the host, one stream per call, and converts
// its CDF tables from Python lists on every call (0.4 ms for the lite model). Decoding
// on the device lets a GPU decoder run the wavefronts without a round trip to the host
// per front; the encoder stays CompressAI's, so any divergence is a decode error that
// the tests against CompressAI's own decoder catch.
//
// Damaged input cannot make it read or write out of bounds: words past a stream's end
// read as zero, table rows are clamped, the CDF search stays inside the row, and the
// bypass code reads at most 8 nibbles of value. (Files carry a CRC-32 besides.)
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define AINN_HD __host__ __device__ __forceinline__
#else
#define AINN_HD inline
#endif

namespace ainn_fast {
namespace rans {

constexpr int kPrecision = 16;                    // probabilities are cdf / 2^16
constexpr uint64_t kLow = uint64_t(1) << 31;      // the state stays in [2^31, 2^63)
constexpr int kBypassBits = 4;                    // bypass values travel in nibbles
constexpr uint32_t kBypassMax = (1u << kBypassBits) - 1;
constexpr int kMaxNibbles = 8;                    // 32 bits of bypass value at most

// One stream's decoder state: x and the next word, in [pos, end) of the word array.
struct Stream {
  uint64_t x;
  int64_t pos;
  int64_t end;
};

AINN_HD uint32_t next_word(Stream& s, const uint32_t* words) { return s.pos < s.end ? words[s.pos++] : 0u; }

AINN_HD uint32_t get_bits(Stream& s, const uint32_t* words, int n) {
  const uint32_t value = static_cast<uint32_t>(s.x & ((uint64_t(1) << n) - 1));
  s.x >>= n;
  if (s.x < kLow) s.x = (s.x << 32) | next_word(s, words);
  return value;
}

// CDF row t of the tables (tables rows of cdf_stride entries), with t and the row's length
// clamped into range: a damaged index or length cannot reach outside the tables.
struct TableRow {
  const int32_t* cdf;
  int32_t length;
  int32_t offset;
};

AINN_HD TableRow table_row(int64_t t, const int32_t* cdf, int64_t cdf_stride, const int32_t* cdf_length,
                           const int32_t* offset, int64_t tables) {
  t = t < 0 ? 0 : (t >= tables ? tables - 1 : t);
  int32_t length = cdf_length[t];
  length = length < 2 ? 2 : (length > cdf_stride ? static_cast<int32_t>(cdf_stride) : length);
  return {cdf + t * cdf_stride, length, offset[t]};
}

// Where the search for a symbol of `row` starts (the symbol of value 0, k = -offset,
// where a Gaussian row of a well-predicted latent puts most symbols) and the CDF values on
// either side of it. None of this depends on the coder's state, so a GPU block can prepare
// it for a whole position in parallel, leaving the thread that decodes (serially) no
// loads for most symbols.
struct SearchStart {
  int32_t k;
  uint32_t at, next;  // cdf[k], cdf[k + 1]
};

AINN_HD SearchStart search_start(const TableRow& row) {
  const int32_t k = -row.offset < 0 ? 0 : (-row.offset > row.length - 2 ? row.length - 2 : -row.offset);
  return {k, static_cast<uint32_t>(row.cdf[k]), static_cast<uint32_t>(row.cdf[k + 1])};
}

// One symbol coded with CDF row `row` (length entries: cdf[0] = 0, ..., cdf[length - 1] =
// 2^16, strictly increasing), its search starting at `start`; the row's last symbol
// (length - 2) flags a bypass-coded value.
AINN_HD int32_t decode_symbol(Stream& s, const uint32_t* words, const TableRow& row, const SearchStart& start) {
  const uint32_t mask = (1u << kPrecision) - 1;
  const uint32_t cum = static_cast<uint32_t>(s.x & mask);
  const int32_t length = row.length;
  // The last k with cdf[k] <= cum (cdf[0] = 0 <= cum < 2^16 = cdf[length - 1]): at the start
  // when it lies there, else a gallop out from it, then bisection: a few dependent loads
  // instead of log2(length) ~ 12, which is what a GPU thread decoding its stream's symbols
  // one after another waits on.
  const auto at = [&](int32_t k) { return static_cast<uint32_t>(row.cdf[k]); };
  int32_t lo, hi;  // invariant after the gallop: at(lo) <= cum < at(hi)
  uint32_t low, high;  // cdf[lo], cdf[lo + 1] once found
  const int32_t c = start.k;
  if (start.at <= cum && cum < start.next) {
    lo = c, low = start.at, high = start.next;
  } else {
    if (start.at <= cum) {  // then cum >= cdf[c + 1]: search above
      lo = c + 1, hi = c + 2 < length - 1 ? c + 2 : length - 1;
      for (int32_t step = 1; hi < length - 1 && at(hi) <= cum;) {
        lo = hi, step <<= 1;
        hi = lo + step < length - 1 ? lo + step : length - 1;
      }
    } else {  // c >= 1 here, since at(0) = 0 <= cum
      hi = c, lo = c - 1;
      for (int32_t step = 1; lo > 0 && at(lo) > cum;) {
        hi = lo, step <<= 1;
        lo = hi - step > 0 ? hi - step : 0;
      }
    }
    while (hi - lo > 1) {
      const int32_t mid = (lo + hi) >> 1;
      if (at(mid) <= cum) lo = mid; else hi = mid;
    }
    low = at(lo), high = at(lo + 1);
  }
  s.x = (high - low) * (s.x >> kPrecision) + cum - low;
  if (s.x < kLow) s.x = (s.x << 32) | next_word(s, words);
  const int32_t max_value = length - 2;
  if (lo != max_value) return lo + row.offset;
  // Bypass: the count of nibbles (in runs of 15), then the nibbles, least significant first.
  uint32_t nibble = get_bits(s, words, kBypassBits);
  uint32_t count = nibble;
  while (nibble == kBypassMax) {
    nibble = get_bits(s, words, kBypassBits);
    count += nibble;
  }
  uint32_t raw = 0;
  for (uint32_t j = 0; j < count; ++j) {
    nibble = get_bits(s, words, kBypassBits);
    if (j < kMaxNibbles) raw |= nibble << (j * kBypassBits);
  }
  const int32_t half = static_cast<int32_t>(raw >> 1);
  return ((raw & 1u) ? -half - 1 : half + max_value) + row.offset;
}

AINN_HD int32_t decode_symbol(Stream& s, const uint32_t* words, const TableRow& row) {
  return decode_symbol(s, words, row, search_start(row));
}

// The table row of a symbol whose integer scale is `scale`: the count of its channel's
// (ascending) thresholds below it.
template <typename T>
AINN_HD int64_t scale_row(const T* thresholds, int64_t n, T scale) {
  int64_t lo = 0, hi = n;  // the first threshold >= the scale = the count below it
  while (lo < hi) {
    const int64_t mid = (lo + hi) >> 1;
    if (thresholds[mid] < scale) lo = mid + 1; else hi = mid;
  }
  return lo;
}

// Decode the symbols of rows [0, rows) that belong to `stream`, in row order: row r holds
// `channels` symbols, coded with table rows index[r * channels + c]. Other rows are left.
template <typename Out>
AINN_HD void decode_rows(Stream& s, const uint32_t* words, int64_t stream, const int64_t* row_stream, int64_t rows,
                         const int64_t* index, int64_t channels, const int32_t* cdf, int64_t cdf_stride,
                         const int32_t* cdf_length, const int32_t* offset, int64_t tables, Out* out) {
  for (int64_t r = 0; r < rows; ++r) {
    if (row_stream[r] != stream) continue;
    for (int64_t c = 0; c < channels; ++c) {
      const TableRow row = table_row(index[r * channels + c], cdf, cdf_stride, cdf_length, offset, tables);
      out[r * channels + c] = static_cast<Out>(decode_symbol(s, words, row));
    }
  }
}

// y_hat's integer from a symbol's q * unit + mean: clamped to the activation range.
template <typename T>
AINN_HD T clamp_y(T v, T act_max) {
  return v < -act_max ? -act_max : (v > act_max ? act_max : v);
}

// A whole coding step for `stream`: for each of its rows r (in order), each channel c
// takes the table row of its scale (the number of the channel's thresholds below it) and
// decodes its symbol q; the position's y_hat integer clamp(q * unit + mean) goes to row
// write[r] of y_rows. gaussian (rows, 2 * channels) holds each row's scales then means,
// thresholds (channels, n_thresholds) ascending, all integer-valued.
template <typename T>
AINN_HD void decode_step(Stream& s, const uint32_t* words, int64_t stream, const int64_t* row_stream, int64_t rows,
                         const T* gaussian, int64_t channels, const T* thresholds, int64_t n_thresholds,
                         const int32_t* cdf, int64_t cdf_stride, const int32_t* cdf_length, const int32_t* offset,
                         int64_t tables, const int64_t* write, T* y_rows, T unit, T act_max) {
  for (int64_t r = 0; r < rows; ++r) {
    if (row_stream[r] != stream) continue;
    const T* scale = gaussian + r * 2 * channels;
    const T* mean = scale + channels;
    T* dst = y_rows + write[r] * channels;
    for (int64_t c = 0; c < channels; ++c) {
      const int64_t t = scale_row(thresholds + c * n_thresholds, n_thresholds, scale[c]);
      const T q = static_cast<T>(decode_symbol(s, words, table_row(t, cdf, cdf_stride, cdf_length, offset, tables)));
      dst[c] = clamp_y(q * unit + mean[c], act_max);
    }
  }
}

}  // namespace rans
}  // namespace ainn_fast
