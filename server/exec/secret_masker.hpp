// Masks secret param values in one output stream (stdout or stderr: one masker each), on the
// raw SSH bytes before UTF-8 decoding: every occurrence of a secret becomes "***", also when it
// is split across reads of any size.
//
// Rules:
// - Scanning left to right, the leftmost match wins; among secrets matching at the same place,
//   the longest. Matches do not overlap: "abcdef" with secrets "abc" and "bcdef" is "***def".
// - The output never holds a secret as a substring. For values without '*' this follows from the
//   rule above (a secret cannot be formed across a "***", which is all '*'). A value holding '*'
//   could be formed around a "***" ("a*" from "a" + a masked "b"), and preventing that in general
//   needs unbounded look-behind, so for such a value its longest run without '*' is masked too,
//   wherever it appears ("pass*word1" also masks "word1"): the output can then never hold the
//   value, at the price of some over-masking. A value made only of '*' is ignored (masking '*'
//   with '*' hides nothing); so is an empty one.
// - A tail that may be the start of a secret (shorter than the longest secret) is held back until
//   the next feed decides it, or finish() lets it out (masking any shorter secret inside it). A
//   command that goes quiet right after such a tail shows it only with its next output.
// - Each stream has its own masker: a value printed half on stdout, half on stderr is not
//   masked (neither half is the secret).
//
// Cost: candidate starts are found 16 at a time (SSE2) by a pattern's first byte there and its
// last byte where it would end, then compared whole; text between matches is copied in bulk.
// Up to 8 distinct (first, last, length) filters are kept in registers; more are read from
// memory. Without SSE2 it scans with a byte table.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace cmdcast::server {

class secret_masker {
 public:
  static constexpr std::string_view mask = "***";

  /// `secrets`: the values to mask; empty ones and ones made only of '*' are ignored.
  explicit secret_masker(std::vector<std::string> secrets);

  /// Any secret at all: without one, feed() would only copy, and the execution skips it.
  bool active() const { return !patterns_.empty(); }

  /// Appends `in` to `out` with every secret replaced by "***". A tail that may be the start of
  /// a secret is held back until the next feed or finish.
  void feed(std::string_view in, std::string& out);

  /// End of the stream: what is held goes out; it was only the possible start of a longer
  /// secret, so at most shorter secrets inside it are masked.
  void finish(std::string& out);

  /// Bytes held back now (for tests).
  std::size_t held() const { return held_.size(); }

  /// The byte strings actually searched for: the secrets plus, for those holding '*', their
  /// longest run without '*' (see above); deduplicated, longest first.
  static std::vector<std::string> patterns_of(std::vector<std::string> secrets);

 private:
  // Scans v for candidate starts in [from, stop), appending to `out` what is decided: masked
  // matches and the text between them. Returns the position up to which v is consumed (may be
  // past `stop` when a match crosses it). When a start in range cannot be decided yet (v ends
  // inside a possible match and `more` input may follow), stops there: `undecided` is set and
  // the return value is that start.
  std::size_t scan(std::string_view v, std::size_t from, std::size_t stop, bool more, std::string& out,
                   bool& undecided) const;
  // At candidate c: the length of the longest pattern matching there (0: none). Sets
  // `undecided` when v ends inside a longer pattern that may still match and `more` may come.
  std::size_t match_at(std::string_view v, std::size_t c, bool more, bool& undecided) const;

  struct filter {
    unsigned char first;
    unsigned char last;
    std::size_t last_at;  // the pattern's length - 1
    bool operator==(const filter&) const = default;
  };
  template <std::size_t K, class Candidate>
  static std::size_t vector_scan(const char* p, std::size_t c, std::size_t limit, const filter* filters,
                                 std::size_t count, const Candidate& candidate);

  std::vector<std::string> patterns_;                 // longest first
  std::array<std::vector<std::uint16_t>, 256> by_first_{};  // indexes into patterns_, longest first
  std::array<bool, 256> first_{};                     // a byte that starts a pattern
  // The vector scan's test of a start: a pattern's first byte there and its last byte where it
  // would end (rarer together in text than two adjacent bytes), one per distinct pair.
  std::vector<filter> filters_;
  bool simd_ = false;  // the vector scan (SSE2) is there
  std::size_t longest_ = 0;
  std::string held_;
  std::string joined_;  // scratch: held_ + the start of the next input
};

}  // namespace cmdcast::server
