// Turns a byte stream that arrives in arbitrary chunks (SSH reads) into valid UTF-8.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace cmdcast::common {

/// Incremental UTF-8 decoder: a character split across chunks is held back until it is
/// complete, never split; each ill-formed sequence becomes U+FFFD (one per maximal subpart, as
/// the Unicode standard recommends). One instance per stream; not thread-safe.
class utf8_decoder {
 public:
  /// Appends the valid UTF-8 of `bytes` to `out`, holding back an incomplete trailing character.
  void decode(std::string_view bytes, std::string& out);
  /// decode() without the copy, where it would append `bytes` unchanged: when nothing is held
  /// back and `bytes` is well-formed up to an incomplete last character, sets `text` to the
  /// well-formed part (a view of `bytes`), holds back the rest and returns true. Otherwise
  /// changes nothing and returns false (decode() then replaces what is ill-formed).
  bool decode_unchanged(std::string_view bytes, std::string_view& text);
  /// End of stream: a held-back incomplete character becomes U+FFFD.
  void finish(std::string& out);
  /// Bytes held back, waiting for the rest of a character (0 to 3).
  std::size_t pending() const { return pending_size_; }

 private:
  // The incomplete character carried over from the previous chunk.
  char pending_[4] = {};
  std::uint8_t pending_size_ = 0;
  std::uint8_t pending_needed_ = 0;  // continuation bytes still expected
  unsigned char next_low_ = 0x80;    // allowed range of the next continuation byte
  unsigned char next_high_ = 0xBF;
};

/// True when `s` is entirely valid UTF-8.
bool is_valid_utf8(std::string_view s);

}  // namespace cmdcast::common
