// Fuzzes the secret masker: a few secrets, a text and the places SSH cut it, all chosen by the
// input. The output must be what a plain whole-text implementation gives (leftmost match, the
// longest there), whatever the cuts, and must never hold a secret.
//
// Input: n = 1 + data[0] % 12 secrets, each a length byte (1 + b % 24) and that many bytes; then
// a byte k (k % 8 cuts) and k cut bytes (each a fraction b/255 of the text); the rest is the text.
#include <algorithm>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "exec/secret_masker.hpp"

#include "fuzz_check.hpp"

using cmdcast::server::secret_masker;

namespace {

bool only_stars(const std::string& s) {
  return std::all_of(s.begin(), s.end(), [](char c) { return c == '*'; });
}

// The reference: the secrets (none made only of '*'), plus for those holding '*' their longest
// run without one; at each place the longest that matches, else the byte.
std::string reference(const std::vector<std::string>& secrets, std::string_view text) {
  std::vector<std::string> patterns;
  for (const auto& s : secrets) {
    if (only_stars(s)) continue;
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

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view in(reinterpret_cast<const char*>(data), size);
  const auto take = [&](std::size_t n) {
    const auto part = in.substr(0, n);
    in.remove_prefix(part.size());
    return part;
  };
  const auto byte = [&]() -> std::size_t { return in.empty() ? 0 : static_cast<unsigned char>(take(1)[0]); };
  if (in.empty()) return 0;
  std::vector<std::string> secrets(1 + byte() % 12);  // past 8 filters: the scan from memory
  for (auto& s : secrets) s = std::string(take(1 + byte() % 24));
  std::vector<std::size_t> cut_bytes(byte() % 8);
  for (auto& c : cut_bytes) c = byte();
  const std::string_view text = in;
  std::vector<std::size_t> cuts;
  for (const std::size_t c : cut_bytes) cuts.push_back(c * text.size() / 255);
  std::sort(cuts.begin(), cuts.end());

  secret_masker m(secrets);
  std::string out;
  std::size_t at = 0;
  std::size_t longest = 0;
  for (const auto& s : secrets) longest = std::max(longest, s.size());
  for (const std::size_t cut : cuts) {
    m.feed(text.substr(at, cut - at), out);
    check(m.held() < std::max<std::size_t>(longest, 1));
    at = cut;
  }
  m.feed(text.substr(at), out);
  m.finish(out);
  check(m.held() == 0);
  check(out == reference(secrets, text));
  for (const auto& s : secrets) check(only_stars(s) || out.find(s) == std::string::npos);
  return 0;
}
