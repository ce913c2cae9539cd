// The secret masker's cost on an output stream: the executor feeds every SSH read (256 KiB to
// 1 MiB) of a run with secret params through one, before UTF-8 decoding.
// range(0): the output: 0 apt-like lines, 1 mixed ANSI build output (the bench corpus), 2 `yes`;
// range(1): how many secrets: 0 (what the executor skips), or random ones of 20 to 64 characters
// as a `^[A-Za-z0-9]{20,64}$` pattern allows (3: of 20, 40 and 64), each echoed once per 64 KiB
// of output; range(2): 1 to have them begin and end with "e", the commonest letter of the
// output (a bad case for the candidate filter, which tests a secret's first and last bytes).
#include <benchmark/benchmark.h>

#include <random>
#include <string>
#include <vector>

#include "corpus.hpp"
#include "exec/secret_masker.hpp"

namespace {

using cmdcast::server::secret_masker;

std::string apt_lines() {
  std::string s;
  for (int i = 0; s.size() < (4u << 20); ++i) {
    s += "Get:" + std::to_string(i) + " http://deb.debian.org/debian bookworm/main amd64 libfoo" + std::to_string(i) +
         " amd64 1.2.3-4 [131 kB]\n";
    s += "Unpacking libfoo" + std::to_string(i) + ":amd64 (1.2.3-4) over (1.2.3-3) ...\n";
  }
  return s;
}

std::string yes_lines() {
  std::string s;
  while (s.size() < (4u << 20)) s += "y\n";
  return s;
}

std::vector<std::string> secrets_of(std::int64_t count, bool bad_case) {
  std::mt19937 rng(15);
  const std::string alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
  std::vector<std::string> secrets;
  for (std::int64_t i = 0; i < count; ++i) {
    std::string s(count == 3 ? 20 + 20 * static_cast<std::size_t>(i) + (i == 2 ? 4 : 0) : 20 + rng() % 45, ' ');
    for (char& c : s) c = alphabet[rng() % alphabet.size()];
    if (bad_case) s.front() = s.back() = 'e';
    secrets.push_back(s);
  }
  return secrets;
}

void mask_output(benchmark::State& state) {
  std::string text = state.range(0) == 0 ? apt_lines() : state.range(0) == 1 ? cmdcast::bench::mixed_ansi_output() : yes_lines();
  const auto secrets = secrets_of(state.range(1), state.range(2) != 0);
  // Each secret echoed once per 64 KiB, at a line start.
  for (std::size_t at = 65536, k = 0; at < text.size() && !secrets.empty(); at += 65536, ++k) {
    const std::size_t line = text.find('\n', at);
    if (line == std::string::npos) break;
    text.insert(line + 1, "token: " + secrets[k % secrets.size()] + "\n");
  }
  constexpr std::size_t read_size = 256 * 1024;
  std::string out;
  out.reserve(read_size * 2);
  for (auto _ : state) {
    secret_masker m(secrets);
    for (std::size_t i = 0; i < text.size(); i += read_size) {
      out.clear();
      m.feed(std::string_view(text).substr(i, read_size), out);
      benchmark::DoNotOptimize(out.data());
    }
    m.finish(out);
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * text.size()));
}
BENCHMARK(mask_output)
    ->ArgsProduct({{0, 1, 2}, {0, 3}, {0}})
    ->Args({0, 3, 1})
    ->Args({1, 12, 0})
    ->Unit(benchmark::kMillisecond);

}  // namespace
