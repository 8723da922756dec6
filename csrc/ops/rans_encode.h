// The encoding side of CompressAI's rANS coder (ryg_rans' 64-bit variant, 32-bit words,
// 16-bit probabilities, 4-bit bypass code), one stream per call, shared by the CPU and
// CUDA kernels of native_rans_encode. Its output equals CompressAI's
// BufferedRansEncoder byte for byte (tests/test_row_streams.py); it exists so that format
// 4's row streams can be coded in parallel, on the device that holds the symbols,
// instead of one stream at a time on the host from Python lists.
#pragma once

#include <cstdint>

#include "ops/rans_decode.h"

namespace ainn_fast {
namespace rans {

// x = C(symbol range [start, start + freq) of 2^16), renormalising one word out first.
AINN_HD bool put(uint64_t& x, uint32_t* words, int64_t& ptr, int64_t floor, uint32_t start, uint32_t freq) {
  const uint64_t x_max = ((kLow >> kPrecision) << 32) * freq;
  if (x >= x_max) {
    if (ptr <= floor) return false;
    words[--ptr] = static_cast<uint32_t>(x);
    x >>= 32;
  }
  x = ((x / freq) << kPrecision) + (x % freq) + start;
  return true;
}

// n raw bits (CompressAI's bypass extension: a symbol of probability 2^-n).
AINN_HD bool put_bits(uint64_t& x, uint32_t* words, int64_t& ptr, int64_t floor, uint32_t value, int n) {
  const uint64_t x_max = ((kLow >> kPrecision) << 32) << (kPrecision - n);
  if (x >= x_max) {
    if (ptr <= floor) return false;
    words[--ptr] = static_cast<uint32_t>(x);
    x >>= 32;
  }
  x = (x << n) | value;
  return true;
}

// One symbol, as CompressAI codes it: its CDF interval, or the row's escape symbol after
// the bypass-coded value (the coder runs backwards, so the bypass parts go in first).
AINN_HD bool encode_symbol(uint64_t& x, uint32_t* words, int64_t& ptr, int64_t floor, int32_t symbol,
                           const int32_t* cdf, int32_t length, int32_t offset) {
  const int32_t max_value = length - 2;
  int32_t value = symbol - offset;
  if (value < 0 || value >= max_value) {
    const uint32_t raw = value < 0 ? static_cast<uint32_t>(-2 * static_cast<int64_t>(value) - 1)
                                   : static_cast<uint32_t>(2 * static_cast<int64_t>(value - max_value));
    int n = 0;
    while (n < kMaxNibbles && (raw >> (n * kBypassBits)) != 0) ++n;
    for (int j = n - 1; j >= 0; --j) {
      if (!put_bits(x, words, ptr, floor, (raw >> (j * kBypassBits)) & kBypassMax, kBypassBits)) return false;
    }
    int count = n;
    while (count >= static_cast<int>(kBypassMax)) {
      count -= kBypassMax;
      if (!put_bits(x, words, ptr, floor, kBypassMax, kBypassBits)) return false;
    }
    if (!put_bits(x, words, ptr, floor, static_cast<uint32_t>(count), kBypassBits)) return false;
    value = max_value;
  }
  const uint32_t start = static_cast<uint32_t>(cdf[value]);
  return put(x, words, ptr, floor, start, static_cast<uint32_t>(cdf[value + 1]) - start);
}

// The stream `stream` of a batch: its positions (position_stream[p] == stream), coded
// last to first, channels last to first, into words[floor, ptr) growing down from ptr;
// returns the first word of the flushed stream, or -1 when [floor, ptr) was too small.
AINN_HD int64_t encode_stream(int64_t stream, const int64_t* position_stream, int64_t positions, const int32_t* q,
                              const int64_t* index, int64_t channels, const int32_t* cdf, int64_t cdf_stride,
                              const int32_t* cdf_length, const int32_t* offset, int64_t tables, uint32_t* words,
                              int64_t floor, int64_t ptr) {
  uint64_t x = kLow;
  for (int64_t p = positions - 1; p >= 0; --p) {
    if (position_stream[p] != stream) continue;
    for (int64_t c = channels - 1; c >= 0; --c) {
      const TableRow row = table_row(index[p * channels + c], cdf, cdf_stride, cdf_length, offset, tables);
      if (!encode_symbol(x, words, ptr, floor, q[p * channels + c], row.cdf, row.length, row.offset)) return -1;
    }
  }
  if (ptr - 2 < floor) return -1;
  ptr -= 2;
  words[ptr] = static_cast<uint32_t>(x);
  words[ptr + 1] = static_cast<uint32_t>(x >> 32);
  return ptr;
}

}  // namespace rans
}  // namespace ainn_fast
