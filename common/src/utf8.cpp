#include "cmdcast/common/utf8.hpp"

#include "byte_scan.hpp"

#include <cstring>

namespace cmdcast::common {
namespace {

constexpr std::string_view replacement = "\xEF\xBF\xBD";  // U+FFFD

/// What a lead byte promises: how many continuation bytes follow, and the allowed range of
/// the first one (Unicode Table 3-7, which excludes overlongs, surrogates and > U+10FFFF).
struct lead_info {
  std::uint8_t needed = 0;  // 0: not a valid lead byte
  unsigned char low = 0x80;
  unsigned char high = 0xBF;
};

constexpr lead_info classify_lead(unsigned char c) {
  if (c >= 0xC2 && c <= 0xDF) return {1, 0x80, 0xBF};
  if (c == 0xE0) return {2, 0xA0, 0xBF};
  if (c == 0xED) return {2, 0x80, 0x9F};
  if (c >= 0xE1 && c <= 0xEF) return {2, 0x80, 0xBF};
  if (c == 0xF0) return {3, 0x90, 0xBF};
  if (c >= 0xF1 && c <= 0xF3) return {3, 0x80, 0xBF};
  if (c == 0xF4) return {3, 0x80, 0x8F};
  return {};
}

/// Length of the well-formed multi-byte character at p (lead byte p[0], n bytes available),
/// or the negative length of its maximal ill-formed subpart, or 0 when it is incomplete.
inline int scan_character(const unsigned char* p, std::size_t n) {
  const lead_info lead = classify_lead(p[0]);
  if (lead.needed == 0) return -1;
  std::size_t j = 1;
  for (std::uint8_t k = 0; k < lead.needed; ++k, ++j) {
    if (j >= n) return 0;
    const unsigned char low = k == 0 ? lead.low : 0x80;
    const unsigned char high = k == 0 ? lead.high : 0xBF;
    if (p[j] < low || p[j] > high) return -static_cast<int>(j);
  }
  return static_cast<int>(j);
}

/// Length of the longest prefix of `s` made of whole well-formed characters. What ends it is
/// the end of `s`, an incomplete last character, or (`ill_formed` set) an ill-formed sequence.
std::size_t well_formed_prefix(std::string_view s, bool& ill_formed) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const std::size_t n = s.size();
  std::size_t i = 0;
  while (i < n) {
    i += detail::ascii_prefix(p + i, n - i);
    if (i == n) break;
    const int len = scan_character(p + i, n - i);
    if (len <= 0) {
      ill_formed = len < 0;
      break;
    }
    i += static_cast<std::size_t>(len);
  }
  return i;
}

}  // namespace

void utf8_decoder::decode(std::string_view bytes, std::string& out) {
  const auto* p = reinterpret_cast<const unsigned char*>(bytes.data());
  const std::size_t n = bytes.size();
  std::size_t i = 0;

  // Complete (or reject) the character carried over from the previous chunk.
  while (pending_needed_ > 0 && i < n) {
    const unsigned char c = p[i];
    if (c < next_low_ || c > next_high_) {
      out.append(replacement);
      pending_size_ = pending_needed_ = 0;
      break;  // c starts afresh below
    }
    pending_[pending_size_++] = static_cast<char>(c);
    next_low_ = 0x80;
    next_high_ = 0xBF;
    ++i;
    if (--pending_needed_ == 0) {
      out.append(pending_, pending_size_);
      pending_size_ = 0;
    }
  }
  if (pending_needed_ > 0) return;

  std::size_t run_start = i;  // start of valid bytes not yet appended
  while (i < n) {
    i += detail::ascii_prefix(p + i, n - i);
    if (i == n) break;
    const int len = scan_character(p + i, n - i);
    if (len > 0) {
      i += static_cast<std::size_t>(len);
      continue;
    }
    out.append(bytes.data() + run_start, i - run_start);
    if (len < 0) {
      out.append(replacement);
      i += static_cast<std::size_t>(-len);
      run_start = i;
      continue;
    }
    // Incomplete at the end of the chunk: keep it for the next one.
    const lead_info lead = classify_lead(p[i]);
    pending_size_ = static_cast<std::uint8_t>(n - i);
    std::memcpy(pending_, p + i, pending_size_);
    pending_needed_ = static_cast<std::uint8_t>(lead.needed + 1 - pending_size_);
    next_low_ = pending_size_ == 1 ? lead.low : 0x80;
    next_high_ = pending_size_ == 1 ? lead.high : 0xBF;
    return;
  }
  out.append(bytes.data() + run_start, n - run_start);
}

bool utf8_decoder::decode_unchanged(std::string_view bytes, std::string_view& text) {
  if (pending_needed_ > 0) return false;
  bool ill_formed = false;
  const std::size_t whole = well_formed_prefix(bytes, ill_formed);
  if (ill_formed) return false;
  text = bytes.substr(0, whole);
  std::string none;
  decode(bytes.substr(whole), none);  // holds the incomplete last character back
  return true;
}

void utf8_decoder::finish(std::string& out) {
  if (pending_needed_ > 0) out.append(replacement);
  pending_size_ = pending_needed_ = 0;
}

bool is_valid_utf8(std::string_view s) {
  bool ill_formed = false;
  return well_formed_prefix(s, ill_formed) == s.size();
}

}  // namespace cmdcast::common
