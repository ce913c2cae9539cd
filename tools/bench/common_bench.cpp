// common's hot paths: the transcript's ingest (both clients) and the codec (the server
// serialises every event once; clients decode every event).
#include <benchmark/benchmark.h>

#include <random>
#include <string>

#include "cmdcast/common/codec.hpp"
#include "cmdcast/common/transcript.hpp"
#include "cmdcast/common/utf8.hpp"

namespace {
using namespace cmdcast::common;

/// About 4 MiB of what builds and package managers print: plain lines, coloured words,
/// \r progress lines, erase-in-line, tabs and some UTF-8.
std::string mixed_ansi_output() {
  std::mt19937 rng(7);
  std::string s;
  int line = 0;
  while (s.size() < (4u << 20)) {
    switch (rng() % 6) {
      case 0:
        s += "\x1b[1m\x1b[32m[" + std::to_string(line) + "/9999]\x1b[0m Building CXX object src/file_" +
             std::to_string(rng() % 1000) + ".cpp.o\n";
        break;
      case 1:
        s += "\x1b[31merror:\x1b[0m expected ';' after expression \x1b[38;5;208m(x)\x1b[39m at line " +
             std::to_string(rng() % 500) + "\n";
        break;
      case 2:
        for (int p = 0; p <= 100; p += 25) s += "\rDownloading 12.3 MB \x1b[K" + std::to_string(p) + "%";
        s += "\n";
        break;
      case 3: s += "Unpacking libfoo-dev:amd64 (1.2.3-4) over (1.2.3-3) ...\n"; break;
      case 4: s += "name\tsize\tstate\tdétails ✓\n"; break;
      default:
        s += "\x1b[38;2;200;100;50mtruecolor\x1b[0m plain text follows to fill the line with ordinary words\n";
        break;
    }
    ++line;
  }
  return s;
}

void transcript_ingest(benchmark::State& state) {
  const std::string input = mixed_ansi_output();
  const std::size_t chunk = static_cast<std::size_t>(state.range(0));
  for (auto _ : state) {
    transcript t;
    for (std::size_t i = 0; i < input.size(); i += chunk) t.append(output_stream::out, std::string_view(input).substr(i, chunk));
    benchmark::DoNotOptimize(t.size());
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * input.size()));
}
BENCHMARK(transcript_ingest)->Arg(4096)->Arg(65536)->Unit(benchmark::kMillisecond);

void utf8_decode(benchmark::State& state) {
  const std::string input = mixed_ansi_output();
  std::string out;
  for (auto _ : state) {
    utf8_decoder d;
    out.clear();
    for (std::size_t i = 0; i < input.size(); i += 32768) d.decode(std::string_view(input).substr(i, 32768), out);
    benchmark::DoNotOptimize(out.data());
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * input.size()));
}
BENCHMARK(utf8_decode)->Unit(benchmark::kMillisecond);

/// Plain output as apt prints it over SSH: lines of text, no escape sequences.
std::string plain_output() {
  std::string s;
  for (int i = 0; s.size() < (1u << 20); ++i) {
    s += "Get:" + std::to_string(i) + " http://deb.debian.org/debian bookworm/main amd64 libfoo" +
         std::to_string(i) + " amd64 1.2.3-4 [131 kB]\n";
    s += "Unpacking libfoo" + std::to_string(i) + ":amd64 (1.2.3-4) over (1.2.3-3) ...\n";
  }
  return s;
}

// range(0): bytes of data; range(1): 0 plain apt-like text, 1 ANSI-dense build output.
output_event stdout_event_of(const benchmark::State& state) {
  const std::string text = state.range(1) ? mixed_ansi_output() : plain_output();
  return output_event{123456, output_stream::out, text.substr(0, static_cast<std::size_t>(state.range(0)))};
}

void encode_stdout_event(benchmark::State& state) {
  const event e = stdout_event_of(state);
  std::string out;
  for (auto _ : state) {
    out.clear();
    encode(e, out);
    benchmark::DoNotOptimize(out.data());
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * state.range(0)));
}
BENCHMARK(encode_stdout_event)->ArgsProduct({{4096, 65536}, {0, 1}});

void decode_stdout_event(benchmark::State& state) {
  const std::string json = encode(event{stdout_event_of(state)});
  for (auto _ : state) {
    auto e = decode_event(json);
    benchmark::DoNotOptimize(e.ok());
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * state.range(0)));
}
BENCHMARK(decode_stdout_event)->ArgsProduct({{4096, 65536}, {0, 1}});

void encode_exit_event(benchmark::State& state) {
  const event e = exit_event{99, 0, std::nullopt, exit_state::exited, 1234};
  std::string out;
  for (auto _ : state) {
    out.clear();
    encode(e, out);
    benchmark::DoNotOptimize(out.data());
  }
}
BENCHMARK(encode_exit_event);

void decode_run_request_bench(benchmark::State& state) {
  const std::string json = R"({"action_type":"restart_service","params":{"service":"nginx"}})";
  for (auto _ : state) {
    auto r = decode_client_message(json);
    benchmark::DoNotOptimize(r.ok());
  }
}
BENCHMARK(decode_run_request_bench);

}  // namespace
