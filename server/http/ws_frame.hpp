// WebSocket framing after the handshake (RFC 6455), the server's side: frames it sends are
// unmasked, so the header is all that differs from the payload; frames it reads come masked
// from the client and are checked, reassembled and bounded here.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <variant>

namespace cmdcast::server::ws {

enum class opcode : std::uint8_t { continuation = 0, text = 1, binary = 2, close = 8, ping = 9, pong = 10 };

/// Close codes the server sends.
enum close_code : std::uint16_t {
  normal = 1000,
  going_away = 1001,
  protocol_error = 1002,
  unsupported_data = 1003,
  invalid_payload = 1007,
  policy_error = 1008,
  too_big = 1009,
  try_again_later = 1013,
};

/// A frame header of the server's (FIN set, unmasked): up to 10 bytes.
struct frame_header {
  std::array<std::uint8_t, 10> bytes{};
  std::uint8_t size = 0;
};
/// `compressed`: RSV1, a permessage-deflate message.
frame_header make_header(opcode op, std::size_t payload_size, bool compressed = false);

/// A close frame's payload: the code, then the reason (cut to fit a control frame).
std::string close_payload(std::uint16_t code, std::string_view reason);

/// What the client sent, one item at a time.
struct text_message {
  std::string text;
};
struct ping {
  std::string payload;
};
struct pong {};
struct close_received {
  std::uint16_t code = 0;  // 0: no code given
};
/// The client broke the protocol or a limit: close with `code` and stop reading.
struct violation {
  close_code code;
  std::string reason;
};
struct need_more {};
using client_item = std::variant<need_more, text_message, ping, pong, close_received, violation>;

class client_frame_reader {
 public:
  /// `deflate`: permessage-deflate was negotiated, so a message may come compressed (RSV1).
  explicit client_frame_reader(std::size_t max_message_bytes, bool deflate = false)
      : max_message_(max_message_bytes), deflate_(deflate) {}
  /// Adds bytes read from the socket.
  void feed(std::string_view bytes) { buffer_.append(bytes); }
  /// The next complete item, or need_more. After a violation or a close, stop reading.
  client_item next();

 private:
  std::size_t max_message_;
  bool deflate_;
  bool compressed_ = false;  // the message being assembled
  std::string buffer_;
  std::size_t consumed_ = 0;  // of buffer_, already taken
  std::string message_;       // a fragmented text message being assembled
  bool in_message_ = false;
};

}  // namespace cmdcast::server::ws
