// common's hot paths: the transcript's ingest (both clients) and the codec (the server
// serialises every event once; clients decode every event).
#include <benchmark/benchmark.h>

#include <string>

#include "cmdcast/common/codec.hpp"
#include "cmdcast/common/transcript.hpp"
#include "cmdcast/common/utf8.hpp"
#include "corpus.hpp"

namespace {
using namespace cmdcast::common;
using cmdcast::bench::mixed_ansi_output;


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

/// The server's step from one read of output to its frame: a 256 KiB read decoded to UTF-8
/// and encoded as a stdout event, the frame new each time as in the server. range(0): as
/// stdout_event_of; range(1): 0 decoded into a string first, 1 encoded where it lies when it
/// is its own text (decode_unchanged, the server's way for a read due at once).
void read_to_frame(benchmark::State& state) {
  const std::string text = state.range(0) ? mixed_ansi_output() : plain_output();
  const std::string_view read = std::string_view(text).substr(0, 256u << 10);
  const bool in_place = state.range(1) == 1;
  for (auto _ : state) {
    utf8_decoder d;
    std::string_view unchanged;
    std::string frame;
    if (in_place && d.decode_unchanged(read, unchanged)) {
      frame = encode_output(output_stream::out, 123456, unchanged, 0);
    } else {
      std::string decoded;
      d.decode(read, decoded);
      frame = encode(event{output_event{123456, output_stream::out, std::move(decoded)}});
    }
    benchmark::DoNotOptimize(frame.data());
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * read.size()));
}
BENCHMARK(read_to_frame)->ArgsProduct({{0, 1}, {0, 1}});

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
