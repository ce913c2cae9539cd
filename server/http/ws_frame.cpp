#include "http/ws_frame.hpp"

#include <utility>

#include "cmdcast/common/utf8.hpp"
#include "support/deflate.hpp"

namespace cmdcast::server::ws {

frame_header make_header(opcode op, std::size_t n, bool compressed) {
  frame_header h;
  h.bytes[0] = static_cast<std::uint8_t>(0x80 | (compressed ? 0x40 : 0) | static_cast<std::uint8_t>(op));
  if (n < 126) {
    h.bytes[1] = static_cast<std::uint8_t>(n);
    h.size = 2;
  } else if (n < 65536) {
    h.bytes[1] = 126;
    h.bytes[2] = static_cast<std::uint8_t>(n >> 8);
    h.bytes[3] = static_cast<std::uint8_t>(n);
    h.size = 4;
  } else {
    h.bytes[1] = 127;
    for (int i = 0; i < 8; ++i) h.bytes[2 + i] = static_cast<std::uint8_t>(static_cast<std::uint64_t>(n) >> (56 - 8 * i));
    h.size = 10;
  }
  return h;
}

std::string close_payload(std::uint16_t code, std::string_view reason) {
  std::string p;
  p += static_cast<char>(code >> 8);
  p += static_cast<char>(code & 0xFF);
  // A control frame carries at most 125 bytes; do not cut a UTF-8 sequence in two.
  std::size_t n = std::min<std::size_t>(reason.size(), 123);
  while (n > 0 && n < reason.size() && (static_cast<unsigned char>(reason[n]) & 0xC0) == 0x80) --n;
  p.append(reason.substr(0, n));
  return p;
}

client_item client_frame_reader::next() {
  for (;;) {
    const std::string_view in = std::string_view(buffer_).substr(consumed_);
    if (in.size() < 2) break;
    const auto b0 = static_cast<std::uint8_t>(in[0]);
    const auto b1 = static_cast<std::uint8_t>(in[1]);
    const bool fin = b0 & 0x80;
    const auto op = static_cast<opcode>(b0 & 0x0F);
    // RSV1 marks a compressed message, where negotiated, on its first frame only (RFC 7692 6).
    const bool rsv1 = b0 & 0x40;
    if ((b0 & 0x30) || (rsv1 && (!deflate_ || op != opcode::text))) return violation{protocol_error, "reserved bits set"};
    if (!(b1 & 0x80)) return violation{protocol_error, "client frames must be masked"};
    std::uint64_t length = b1 & 0x7F;
    std::size_t at = 2;
    if (length == 126) {
      if (in.size() < 4) break;
      length = (static_cast<std::uint64_t>(static_cast<std::uint8_t>(in[2])) << 8) | static_cast<std::uint8_t>(in[3]);
      at = 4;
    } else if (length == 127) {
      if (in.size() < 10) break;
      length = 0;
      for (int i = 0; i < 8; ++i) length = (length << 8) | static_cast<std::uint8_t>(in[2 + i]);
      at = 10;
    }
    const bool control = static_cast<std::uint8_t>(op) & 0x08;
    if (control && (!fin || length > 125)) return violation{protocol_error, "bad control frame"};
    // Compared so that no sum can overflow: the length may be anything up to 2^64 - 1.
    if (!control && length > max_message_ - message_.size()) return violation{too_big, "message too big"};
    if (in.size() < at + 4 + length) break;
    const char* mask = in.data() + at;
    std::string payload(in.substr(at + 4, length));
    for (std::size_t i = 0; i < payload.size(); ++i) payload[i] = static_cast<char>(payload[i] ^ mask[i % 4]);
    consumed_ += at + 4 + length;
    if (consumed_ > 4096 && consumed_ * 2 > buffer_.size()) {
      buffer_.erase(0, consumed_);
      consumed_ = 0;
    }
    switch (op) {
      case opcode::ping:
        return ping{std::move(payload)};
      case opcode::pong:
        return pong{};
      case opcode::close: {
        if (payload.size() == 1) return violation{protocol_error, "bad close frame"};
        std::uint16_t code = 0;
        if (payload.size() >= 2) code = static_cast<std::uint16_t>(static_cast<std::uint8_t>(payload[0]) << 8 | static_cast<std::uint8_t>(payload[1]));
        // Codes a peer may send (RFC 6455 7.4): 1004-1006 and 1015 are reserved, the rest
        // below 3000 is unassigned; anything else is a broken peer, not a code to echo.
        const bool valid = payload.empty() || (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014) ||
                           (code >= 3000 && code <= 4999);
        if (!valid) return violation{protocol_error, "invalid close code " + std::to_string(code)};
        return close_received{code};
      }
      case opcode::binary:
        return violation{unsupported_data, "only text messages are accepted"};
      case opcode::text:
      case opcode::continuation:
        if ((op == opcode::text) == in_message_) return violation{protocol_error, "bad fragmentation"};
        if (op == opcode::text) compressed_ = rsv1;
        message_ += payload;
        in_message_ = !fin;
        if (!fin) continue;
        if (compressed_) {
          std::string text;
          const auto result = inflate_message(message_, max_message_, text);
          if (result == inflated::too_long) return violation{too_big, "message too big"};
          if (result == inflated::invalid) return violation{invalid_payload, "compressed message is not valid"};
          message_ = std::move(text);
        }
        if (!common::is_valid_utf8(message_)) return violation{invalid_payload, "text is not UTF-8"};
        return text_message{std::exchange(message_, std::string())};
      default:
        return violation{protocol_error, "unknown opcode"};
    }
  }
  if (consumed_ == buffer_.size()) {
    buffer_.clear();
    consumed_ = 0;
  }
  return need_more{};
}

}  // namespace cmdcast::server::ws
