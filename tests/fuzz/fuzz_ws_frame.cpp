// Fuzzes the server's reading of client WebSocket frames: any bytes, fed in chunks the input
// chooses, with and without permessage-deflate. Reading must never crash or overrun, a
// message never exceeds the limit and is always UTF-8, and after a violation or a close
// nothing more is read.
#include <cstdint>
#include <string_view>

#include "cmdcast/common/utf8.hpp"
#include "http/ws_frame.hpp"

#include "fuzz_check.hpp"

using namespace cmdcast::server::ws;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 1) return 0;
  const std::size_t chunk = 1 + data[0] % 32;
  const std::size_t limit = 1 + static_cast<std::size_t>(data[0]) * 4;
  client_frame_reader reader(limit, (data[0] & 0x80) != 0);  // half the inputs with compression negotiated
  const std::string_view bytes(reinterpret_cast<const char*>(data) + 1, size - 1);
  for (std::size_t i = 0; i < bytes.size(); i += chunk) {
    reader.feed(bytes.substr(i, chunk));
    for (;;) {
      const auto item = reader.next();
      if (std::holds_alternative<need_more>(item)) break;
      if (const auto* m = std::get_if<text_message>(&item)) {
        check(m->text.size() <= limit);
        check(cmdcast::common::is_valid_utf8(m->text));
      }
      if (const auto* p = std::get_if<ping>(&item)) check(p->payload.size() <= 125);
      if (std::holds_alternative<violation>(item) || std::holds_alternative<close_received>(item)) return 0;
    }
  }
  return 0;
}
