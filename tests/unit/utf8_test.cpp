#include "cmdcast/common/utf8.hpp"

#include <gtest/gtest.h>

#include <random>

namespace cmdcast::common {
namespace {

const std::string fffd = "\xEF\xBF\xBD";

std::string decode_in_chunks(std::string_view input, std::size_t chunk) {
  utf8_decoder d;
  std::string out;
  for (std::size_t i = 0; i < input.size(); i += chunk) d.decode(input.substr(i, chunk), out);
  d.finish(out);
  return out;
}

TEST(Utf8, ValidTextPassesThroughUnchanged) {
  const std::string text = "plain ASCII, café, ✓ check, 𝄞 clef, 日本語\n";
  EXPECT_EQ(decode_in_chunks(text, text.size()), text);
  EXPECT_TRUE(is_valid_utf8(text));
}

TEST(Utf8, NeverSplitsACharacterAcrossChunks) {
  const std::string text = "aé✓𝄞b日本語🙂z";
  for (std::size_t chunk = 1; chunk <= text.size(); ++chunk) {
    utf8_decoder d;
    std::string all;
    for (std::size_t i = 0; i < text.size(); i += chunk) {
      std::string out;
      d.decode(std::string_view(text).substr(i, chunk), out);
      // Every piece handed on is valid on its own: a watcher can render it at once.
      EXPECT_TRUE(is_valid_utf8(out)) << "chunk " << chunk << " at " << i;
      all += out;
    }
    d.finish(all);
    EXPECT_EQ(all, text) << "chunk " << chunk;
  }
}

TEST(Utf8, HoldsBackAnIncompleteCharacterUntilTheNextChunk) {
  utf8_decoder d;
  std::string out;
  d.decode("ab\xE2\x9C", out);  // ✓ is E2 9C 93
  EXPECT_EQ(out, "ab");
  EXPECT_EQ(d.pending(), 2u);
  d.decode("\x93!", out);
  EXPECT_EQ(out, "ab✓!");
  EXPECT_EQ(d.pending(), 0u);
}

TEST(Utf8, ReplacesInvalidBytesWithReplacementCharacter) {
  struct case_t {
    std::string in, out;
  };
  const std::vector<case_t> cases = {
      {"a\xFFz", "a" + fffd + "z"},                      // never valid
      {"a\x80z", "a" + fffd + "z"},                      // lone continuation
      {"\xC0\xAF", fffd + fffd},                         // overlong '/'
      {"\xE0\x80\xAF", fffd + fffd + fffd},              // overlong, 3 bytes
      {"\xED\xA0\x80", fffd + fffd + fffd},              // UTF-16 surrogate
      {"\xF4\x90\x80\x80", fffd + fffd + fffd + fffd},   // above U+10FFFF
      {"\xE2\x9Cx", fffd + "x"},                         // truncated: one U+FFFD for the maximal subpart
      {"\xF0\x9F\x99", fffd},                            // truncated at the very end
      {"\xC3", fffd},
      {"ok\xC3\xA9\xFE\xC3\xA9", "oké" + fffd + "é"},
  };
  for (const auto& c : cases) {
    for (std::size_t chunk = 1; chunk <= c.in.size(); ++chunk) {
      EXPECT_EQ(decode_in_chunks(c.in, chunk), c.out) << "input bytes " << c.in.size() << ", chunk " << chunk;
    }
    EXPECT_FALSE(is_valid_utf8(c.in));
  }
}

TEST(Utf8, RandomBytesAlwaysGiveValidUtf8IndependentOfChunking) {
  std::mt19937 rng(1234);
  for (int round = 0; round < 200; ++round) {
    std::string bytes(rng() % 300, '\0');
    for (auto& b : bytes) b = static_cast<char>(rng() % 4 == 0 ? rng() % 128 : 0x80 + rng() % 128);
    const std::string whole = decode_in_chunks(bytes, bytes.size() + 1);
    EXPECT_TRUE(is_valid_utf8(whole));
    EXPECT_EQ(decode_in_chunks(bytes, 1 + rng() % 7), whole);
  }
}

TEST(Utf8, FindsACharacterOrAnInvalidByteAtEveryPositionOfALongChunk) {
  // The decoder skips ASCII 16 or 8 bytes a step: what follows must be seen at any offset.
  for (std::size_t at = 0; at < 70; ++at) {
    std::string text(70, 'a');
    text.replace(at, 1, "\xC3\xA9");  // é
    EXPECT_EQ(decode_in_chunks(text, text.size()), text) << at;
    EXPECT_TRUE(is_valid_utf8(text)) << at;
    std::string bad(70, 'a');
    bad[at] = '\xFF';
    std::string expected = bad;
    expected.replace(at, 1, fffd);
    EXPECT_EQ(decode_in_chunks(bad, bad.size()), expected) << at;
    EXPECT_FALSE(is_valid_utf8(bad)) << at;
  }
}

/// As the server decodes a read: without a copy where it can, with decode() where it cannot.
std::string decode_unchanged_where_possible(std::string_view input, std::size_t chunk, int& uncopied) {
  utf8_decoder d;
  std::string out;
  for (std::size_t i = 0; i < input.size(); i += chunk) {
    const auto bytes = input.substr(i, chunk);
    std::string_view text;
    if (d.decode_unchanged(bytes, text)) {
      EXPECT_EQ(text.data(), bytes.data());  // a view of the read itself
      out += text;
      ++uncopied;
    } else {
      d.decode(bytes, out);
    }
  }
  d.finish(out);
  return out;
}

TEST(Utf8, DecodingWithoutACopyGivesWhatDecodeGivesForAnyChunking) {
  std::mt19937 rng(99);
  int uncopied = 0;
  for (int round = 0; round < 300; ++round) {
    // Mostly text with characters of every length, now and then a byte that is never valid.
    std::string bytes;
    const std::size_t size = rng() % 200;
    while (bytes.size() < size) {
      const char* pieces[] = {"a", "\n", "\xC3\xA9", "\xE2\x9C\x93", "\xF0\x9D\x84\x9E", "\xFF", "\x80"};
      bytes += pieces[rng() % (round % 2 == 0 ? 5 : 7)];
    }
    const std::size_t chunk = 1 + rng() % 9;
    EXPECT_EQ(decode_unchanged_where_possible(bytes, chunk, uncopied), decode_in_chunks(bytes, chunk)) << round;
  }
  EXPECT_GT(uncopied, 1000);  // the copy was spared for most chunks, and they came out right
}

TEST(Utf8, DecodingWithoutACopyRefusesIllFormedBytesAndKeepsWhatIsHeldBack) {
  utf8_decoder d;
  std::string_view text;
  EXPECT_FALSE(d.decode_unchanged("ab\xFF", text));  // U+FFFD needed: decode() must do it
  EXPECT_TRUE(d.decode_unchanged("ab\xE2\x9C", text));
  EXPECT_EQ(text, "ab");
  EXPECT_EQ(d.pending(), 2u);
  EXPECT_FALSE(d.decode_unchanged("\x93!", text));  // completes a held-back character
  std::string out;
  d.decode("\x93!", out);
  EXPECT_EQ(out, "✓!");
}

TEST(Utf8, FinishWithNothingPendingAddsNothing) {
  utf8_decoder d;
  std::string out;
  d.decode("done", out);
  d.finish(out);
  d.finish(out);
  EXPECT_EQ(out, "done");
}

}  // namespace
}  // namespace cmdcast::common
