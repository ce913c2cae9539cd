// Fuzzes the output path of a client: raw bytes through the UTF-8 decoder into the transcript,
// split into chunks and streams as the input says. Every line must stay valid UTF-8 without
// control bytes, and its spans must cover it exactly. The server's way of decoding a read
// (without a copy where the bytes are their own text) must give the same text.
#include <cstdint>
#include <string>
#include <string_view>

#include "cmdcast/common/transcript.hpp"
#include "cmdcast/common/utf8.hpp"

#include "fuzz_check.hpp"

using namespace cmdcast::common;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 1) return 0;
  // First byte: chunk size and line limits; the rest is the output.
  const std::size_t chunk = 1 + data[0] % 64;
  transcript t({.max_lines = 1 + data[0] % 16u, .max_line_bytes = 16 + data[0] % 100u});
  utf8_decoder decoders[2], server_decoders[2];
  std::string decoded[2], server_decoded[2];
  const std::string_view bytes(reinterpret_cast<const char*>(data) + 1, size - 1);
  for (std::size_t i = 0, k = 0; i < bytes.size(); i += chunk, ++k) {
    const auto stream = (k % 3 == 2) ? output_stream::err : output_stream::out;
    const int index = static_cast<int>(stream);
    std::string text;
    decoders[index].decode(bytes.substr(i, chunk), text);
    t.append(stream, text);
    decoded[index] += text;
    std::string_view unchanged;
    if (server_decoders[index].decode_unchanged(bytes.substr(i, chunk), unchanged)) {
      server_decoded[index] += unchanged;
    } else {
      server_decoders[index].decode(bytes.substr(i, chunk), server_decoded[index]);
    }
  }
  for (int index = 0; index < 2; ++index) {
    std::string rest;
    decoders[index].finish(rest);
    t.append(output_stream::out, rest);
    decoded[index] += rest;
    server_decoders[index].finish(server_decoded[index]);
    check(server_decoded[index] == decoded[index]);
  }
  for (std::size_t i = 0; i < t.size(); ++i) {
    const line_view l = t.line(i);
    check(is_valid_utf8(l.text));
    std::uint32_t at = 0;
    for (const auto& s : l.spans) {
      check(s.begin == at && s.begin < s.end);
      at = s.end;
    }
    check(at == l.text.size());
    for (char c : l.text) check(static_cast<unsigned char>(c) >= 0x20 && c != 0x7f);
  }
  return 0;
}
