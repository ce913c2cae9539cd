// The secret masker against a plain reference implementation, with the input split at every
// place (and at random places, many times over): the output must not depend on how SSH cut the
// bytes, and must never hold a secret.
#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "exec/secret_masker.hpp"

namespace {

using cmdcast::server::secret_masker;

/// What the masker must do, the simplest way: the whole text at once, leftmost match first,
/// the longest of those starting there. Its own derivation of the patterns (the secrets, plus
/// the longest run without '*' of those holding one; none made only of '*').
std::string reference(const std::vector<std::string>& secrets, std::string_view text) {
  std::vector<std::string> patterns;
  for (const auto& s : secrets) {
    if (std::all_of(s.begin(), s.end(), [](char c) { return c == '*'; })) continue;
    patterns.push_back(s);
    if (s.find('*') == std::string::npos) continue;
    std::string best, run;
    for (char c : s + '*') {
      if (c != '*') {
        run += c;
        continue;
      }
      if (run.size() > best.size()) best = run;
      run.clear();
    }
    patterns.push_back(best);
  }
  std::string out;
  for (std::size_t i = 0; i < text.size();) {
    std::size_t best = 0;
    for (const auto& p : patterns) {
      if (text.substr(i).starts_with(p)) best = std::max(best, p.size());
    }
    if (best) {
      out += "***";
      i += best;
    } else {
      out += text[i++];
    }
  }
  return out;
}

/// The masker fed `text` cut at `cuts` (ascending offsets).
std::string masked(const std::vector<std::string>& secrets, std::string_view text, const std::vector<std::size_t>& cuts) {
  secret_masker m(secrets);
  std::string out;
  std::size_t at = 0;
  for (std::size_t cut : cuts) {
    m.feed(text.substr(at, cut - at), out);
    at = cut;
  }
  m.feed(text.substr(at), out);
  m.finish(out);
  EXPECT_EQ(m.held(), 0u);
  return out;
}

void expect_no_secret(const std::vector<std::string>& secrets, const std::string& out, const std::string& context) {
  for (const auto& s : secrets) {
    if (std::all_of(s.begin(), s.end(), [](char c) { return c == '*'; })) continue;
    EXPECT_EQ(out.find(s), std::string::npos) << "secret \"" << s << "\" in \"" << out << "\" " << context;
  }
}

/// Every single cut, every pair of cuts (short texts), byte by byte, and random cuts.
void check_all_splits(const std::vector<std::string>& secrets, const std::string& text) {
  const std::string want = reference(secrets, text);
  expect_no_secret(secrets, want, "(reference)");
  EXPECT_EQ(masked(secrets, text, {}), want) << "whole";
  expect_no_secret(secrets, masked(secrets, text, {}), "(whole)");
  for (std::size_t i = 0; i <= text.size(); ++i) {
    ASSERT_EQ(masked(secrets, text, {i}), want) << "cut at " << i << " of \"" << text << "\"";
  }
  if (text.size() <= 80) {
    for (std::size_t i = 0; i <= text.size(); ++i) {
      for (std::size_t j = i; j <= text.size(); ++j) {
        ASSERT_EQ(masked(secrets, text, {i, j}), want) << "cuts at " << i << ", " << j << " of \"" << text << "\"";
      }
    }
  }
  std::vector<std::size_t> every(text.size());
  for (std::size_t i = 0; i < text.size(); ++i) every[i] = i;
  EXPECT_EQ(masked(secrets, text, every), want) << "byte by byte";
  std::mt19937 rng(static_cast<unsigned>(text.size()));
  for (int round = 0; round < 200; ++round) {
    std::vector<std::size_t> cuts;
    const std::size_t n = 1 + rng() % 12;
    for (std::size_t k = 0; k < n; ++k) cuts.push_back(rng() % (text.size() + 1));
    std::sort(cuts.begin(), cuts.end());
    ASSERT_EQ(masked(secrets, text, cuts), want) << "random cuts, round " << round;
  }
}

const std::string token = "s3cr3tT0kenABCDEFGHIJ";  // 21 bytes, as a {20,64} pattern allows

TEST(SecretMasker, MasksASecretOnceTwiceAndAdjacent) {
  const std::vector<std::string> secrets = {token};
  EXPECT_EQ(masked(secrets, "token=" + token + "\n", {}), "token=***\n");
  EXPECT_EQ(masked(secrets, token + " and " + token, {3}), "*** and ***");
  EXPECT_EQ(masked(secrets, token + token + "\n", {30}), "******\n");
  check_all_splits(secrets, "token=" + token + "\n");
  check_all_splits(secrets, "a " + token + " b " + token + " c\n");
  check_all_splits(secrets, token + token + token);
  check_all_splits(secrets, "no secret here at all\n");
}

TEST(SecretMasker, WhenOneSecretStartsAnotherTheLongestWins) {
  const std::vector<std::string> secrets = {"abcdef", "abc", "abcdefgh"};
  EXPECT_EQ(masked(secrets, "xabcdefghx", {}), "x***x");
  EXPECT_EQ(masked(secrets, "xabcdefgx", {}), "x***gx");
  EXPECT_EQ(masked(secrets, "xabcdx", {4}), "x***dx");
  EXPECT_EQ(masked(secrets, "abcabcdefabcdefgh", {}), "*********");
  check_all_splits(secrets, "xabcdefghx abcdefg abcd abc ab a abcdefgh");
  check_all_splits(secrets, "abcabcdefabcdefgh");
}

TEST(SecretMasker, OverlappingSecretsTheLeftmostWins) {
  const std::vector<std::string> secrets = {"abc", "bcdef"};
  EXPECT_EQ(masked(secrets, "abcdef", {}), "***def");
  EXPECT_EQ(masked(secrets, "xbcdefabc", {2}), "x******");
  check_all_splits(secrets, "abcdef bcdef abcbcdef aabcdeff");
  // A secret that overlaps itself: no repeat of it survives either.
  check_all_splits({"aXa"}, "aXaXaXa aXXa");
}

TEST(SecretMasker, ASecretInACarriageReturnLineAndAtTheVeryEnd) {
  const std::vector<std::string> secrets = {token};
  EXPECT_EQ(masked(secrets, "\rDownloading " + token + " 42%\r\x1b[K", {15}), "\rDownloading *** 42%\r\x1b[K");
  check_all_splits(secrets, "\rprogress 10% " + token + "\rprogress 20% " + token + "\r\n");
  check_all_splits(secrets, "ends with the secret " + token);
  check_all_splits(secrets, token);
}

TEST(SecretMasker, APrefixThatNeverCompletesGoesOutAtTheEnd) {
  const std::vector<std::string> secrets = {token};
  secret_masker m(secrets);
  std::string out;
  m.feed("line\n" + token.substr(0, 10), out);
  EXPECT_EQ(out, "line\n");  // the start of the token waits for what follows
  EXPECT_EQ(m.held(), 10u);
  m.feed(token.substr(10, 5), out);
  EXPECT_EQ(out, "line\n");
  m.finish(out);
  EXPECT_EQ(out, "line\n" + token.substr(0, 15));
  // A prefix that turns out not to be the secret goes out as soon as that is known.
  secret_masker n(secrets);
  std::string out2;
  n.feed("x" + token.substr(0, 5), out2);
  n.feed("!rest\n", out2);
  EXPECT_EQ(out2, "x" + token.substr(0, 5) + "!rest\n");
  EXPECT_EQ(n.held(), 0u);
  check_all_splits(secrets, "almost " + token.substr(0, token.size() - 1));
  check_all_splits(secrets, token.substr(0, 7) + token);  // a false start right before the real one
}

TEST(SecretMasker, UTF8SecretsAreMaskedAsBytes) {
  const std::vector<std::string> secrets = {"pässwörd✓", "✓✓"};
  EXPECT_EQ(masked(secrets, "x pässwörd✓ y ✓✓✓", {3}), "x *** y ***✓");
  check_all_splits(secrets, "x pässwörd✓ y ✓✓✓ pässwör ✓");
}

TEST(SecretMasker, NoSecretIsFormedAroundAMask) {
  // "a" then a masked "b" would read "a***", which holds "a*": so "a" is masked too.
  std::vector<std::string> secrets = {"a*", "b"};
  EXPECT_EQ(masked(secrets, "xab", {}), "x******");
  check_all_splits(secrets, "xab ab a* ba aab");
  secrets = {"to*ken", "ke", "*start", "end*", "x**y"};
  check_all_splits(secrets, "to*ken to ke *start end* x**y xkey tokentoken ***");
  // Made only of '*' (or empty): ignored, they would mask nothing.
  secret_masker only_stars({"*", "**", ""});
  EXPECT_FALSE(only_stars.active());
  EXPECT_EQ(secret_masker::patterns_of({"pass*word1", "*", "xy"}),
            (std::vector<std::string>{"pass*word1", "word1", "xy"}));
}

TEST(SecretMasker, WithoutSecretsItOnlyCopies) {
  secret_masker m({});
  EXPECT_FALSE(m.active());
  std::string out;
  m.feed("a***b", out);
  m.finish(out);
  EXPECT_EQ(out, "a***b");
}

TEST(SecretMasker, HoldsBackLessThanTheLongestSecret) {
  const std::vector<std::string> secrets = {std::string(64, 'k'), "kx"};
  secret_masker m(secrets);
  std::string out;
  for (int i = 0; i < 200; ++i) {
    m.feed("k", out);
    EXPECT_LT(m.held(), 64u);
  }
  m.finish(out);
  EXPECT_EQ(out, reference(secrets, std::string(200, 'k')));
}

TEST(SecretMasker, LongTextsAcrossTheVectorScanAgreeWithTheReference) {
  // Long enough for the 16-byte scan, with secrets near every block boundary.
  const std::vector<std::string> secrets = {"Zq9", "Zq9Zq9Zq9Zq9Zq9Zq9Zq9x", "y"};
  std::string text;
  for (int i = 0; i < 60; ++i) {
    text += std::string(static_cast<std::size_t>(i % 17), '.');
    text += (i % 3 == 0) ? "Zq9" : (i % 3 == 1) ? "Zq9Zq9Zq9Zq9Zq9Zq9Zq9x" : "Zq";
  }
  check_all_splits(secrets, text);
}

TEST(SecretMasker, RandomSecretsAndTextsOverASmallAlphabet) {
  // A small alphabet makes secrets overlap, nest and repeat all the time.
  std::mt19937 rng(1234);
  const std::string alphabet = "ab*\r\n";
  const auto random_string = [&](std::size_t max) {
    std::string s(1 + rng() % max, ' ');
    for (char& c : s) c = alphabet[rng() % alphabet.size()];
    return s;
  };
  for (int round = 0; round < 400; ++round) {
    std::vector<std::string> secrets;
    const std::size_t n = 1 + rng() % 4;
    for (std::size_t k = 0; k < n; ++k) secrets.push_back(random_string(6));
    const std::string text = random_string(60);
    const std::string want = reference(secrets, text);
    expect_no_secret(secrets, want, "(reference, round " + std::to_string(round) + ")");
    for (int split = 0; split < 20; ++split) {
      std::vector<std::size_t> cuts;
      for (std::size_t k = rng() % 8; k > 0; --k) cuts.push_back(rng() % (text.size() + 1));
      std::sort(cuts.begin(), cuts.end());
      ASSERT_EQ(masked(secrets, text, cuts), want) << "round " << round << ", text \"" << text << "\"";
    }
  }
}

TEST(SecretMasker, LongRandomTextsWithFewAndManySecrets) {
  // Long reads (the vector scan) with 1 to 12 secrets of 1 to 40 bytes: past 8 distinct
  // (first, last, length) filters the masker scans with a table instead.
  std::mt19937 rng(99);
  const std::string alphabet = "abcd\n";
  const auto random_string = [&](std::size_t min, std::size_t max) {
    std::string s(min + rng() % (max - min + 1), ' ');
    for (char& c : s) c = alphabet[rng() % alphabet.size()];
    return s;
  };
  for (int round = 0; round < 60; ++round) {
    std::vector<std::string> secrets;
    for (std::size_t k = 1 + rng() % 12; k > 0; --k) secrets.push_back(random_string(round % 3 == 0 ? 1 : 4, 40));
    std::string text = random_string(2000, 6000);
    for (int k = 0; k < 20; ++k) text.insert(rng() % text.size(), secrets[rng() % secrets.size()]);
    const std::string want = reference(secrets, text);
    expect_no_secret(secrets, want, "(reference)");
    for (int split = 0; split < 10; ++split) {
      std::vector<std::size_t> cuts;
      for (std::size_t k = rng() % 6; k > 0; --k) cuts.push_back(rng() % (text.size() + 1));
      std::sort(cuts.begin(), cuts.end());
      ASSERT_EQ(masked(secrets, text, cuts), want) << "round " << round;
    }
  }
}

}  // namespace
