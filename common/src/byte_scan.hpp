// The scans that decide how far output can be copied as it is: to the first byte that is not
// ASCII (the UTF-8 decoder) and to the first byte a JSON string must escape (the encoder).
// Command output is mostly such bytes, so these loops carry every byte a server sends: 16
// bytes a step with SSE2 where the target has it (every x86-64), a 64-bit word a step
// elsewhere (WebAssembly).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace cmdcast::common::detail {

/// JSON escapes control characters, '"' and '\\'.
constexpr bool json_special(unsigned char c) { return c < 0x20 || c == '"' || c == '\\'; }

inline std::uint64_t load_word(const unsigned char* p) {
  std::uint64_t w;
  std::memcpy(&w, p, 8);
  return w;
}

/// Non-zero when one of the word's 8 bytes may be JSON-special (the exact byte is found by
/// the caller: the arithmetic can flag a byte above a special one too).
inline std::uint64_t json_special_mask(std::uint64_t w) {
  constexpr std::uint64_t ones = 0x0101010101010101ull;
  constexpr std::uint64_t highs = 0x8080808080808080ull;
  const std::uint64_t q = w ^ (ones * '"');
  const std::uint64_t b = w ^ (ones * '\\');
  return (((w - ones * 0x20) & ~w) | ((q - ones) & ~q) | ((b - ones) & ~b)) & highs;
}

/// Length of the leading run of [p, p + n) that a JSON string takes unescaped.
inline std::size_t json_clean_prefix(const unsigned char* p, std::size_t n) {
  std::size_t i = 0;
#if defined(__SSE2__)
  const __m128i quote = _mm_set1_epi8('"');
  const __m128i backslash = _mm_set1_epi8('\\');
  const __m128i last_control = _mm_set1_epi8(0x1F);
  for (; i + 16 <= n; i += 16) {
    const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + i));
    // min(v, 0x1F) == v exactly when v <= 0x1F, unsigned.
    const __m128i special = _mm_or_si128(_mm_cmpeq_epi8(_mm_min_epu8(v, last_control), v),
                                         _mm_or_si128(_mm_cmpeq_epi8(v, quote), _mm_cmpeq_epi8(v, backslash)));
    const auto mask = static_cast<unsigned>(_mm_movemask_epi8(special));
    if (mask != 0) return i + static_cast<std::size_t>(__builtin_ctz(mask));
  }
#endif
  for (; i + 8 <= n; i += 8) {
    if (json_special_mask(load_word(p + i)) != 0) break;
  }
  while (i < n && !json_special(p[i])) ++i;
  return i;
}

/// Length of the leading run of ASCII bytes (< 0x80) of [p, p + n).
inline std::size_t ascii_prefix(const unsigned char* p, std::size_t n) {
  std::size_t i = 0;
#if defined(__SSE2__)
  for (; i + 16 <= n; i += 16) {
    const auto mask = static_cast<unsigned>(_mm_movemask_epi8(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + i))));
    if (mask != 0) return i + static_cast<std::size_t>(__builtin_ctz(mask));
  }
#endif
  for (; i + 8 <= n; i += 8) {
    if ((load_word(p + i) & 0x8080808080808080ull) != 0) break;
  }
  while (i < n && p[i] < 0x80) ++i;
  return i;
}

}  // namespace cmdcast::common::detail
