// The WebSocket framing of the server's side: headers of each length class, close payloads,
// and the reading of client frames, valid and not.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "http/ws_frame.hpp"

using namespace cmdcast::server::ws;

namespace {

/// A client frame: masked, as RFC 6455 requires of clients.
std::string client_frame(std::uint8_t first_byte, std::string_view payload, bool masked = true) {
  std::string f;
  f += static_cast<char>(first_byte);
  const std::uint8_t mask_bit = masked ? 0x80 : 0;
  if (payload.size() < 126) {
    f += static_cast<char>(mask_bit | payload.size());
  } else if (payload.size() < 65536) {
    f += static_cast<char>(mask_bit | 126);
    f += static_cast<char>(payload.size() >> 8);
    f += static_cast<char>(payload.size() & 0xFF);
  } else {
    f += static_cast<char>(mask_bit | 127);
    for (int i = 7; i >= 0; --i) f += static_cast<char>((static_cast<std::uint64_t>(payload.size()) >> (8 * i)) & 0xFF);
  }
  const char mask[4] = {'\x12', '\x34', '\x56', '\x78'};
  if (masked) f.append(mask, 4);
  for (std::size_t i = 0; i < payload.size(); ++i) f += masked ? static_cast<char>(payload[i] ^ mask[i % 4]) : payload[i];
  return f;
}

constexpr std::uint8_t fin = 0x80;

}  // namespace

TEST(WsFrame, HeadersUseTheShortestLengthForm) {
  const auto small = make_header(opcode::text, 125);
  ASSERT_EQ(small.size, 2);
  EXPECT_EQ(small.bytes[0], 0x81);
  EXPECT_EQ(small.bytes[1], 125);
  const auto medium = make_header(opcode::text, 65535);
  ASSERT_EQ(medium.size, 4);
  EXPECT_EQ(medium.bytes[1], 126);
  EXPECT_EQ(medium.bytes[2], 0xFF);
  EXPECT_EQ(medium.bytes[3], 0xFF);
  const auto large = make_header(opcode::text, 65536);
  ASSERT_EQ(large.size, 10);
  EXPECT_EQ(large.bytes[1], 127);
  EXPECT_EQ(large.bytes[7], 1);  // 0x00..010000
  EXPECT_EQ(large.bytes[8], 0);
  EXPECT_EQ(make_header(opcode::close, 2).bytes[0], 0x88);
}

TEST(WsFrame, ClosePayloadsFitAControlFrameWithoutCuttingACharacter) {
  const auto p = close_payload(1013, "too slow");
  EXPECT_EQ(p, std::string("\x03\xF5too slow", 10));
  std::string reason(122, 'a');
  reason += "é";  // two bytes, at 122 and 123: the cut at 123 would split it
  const auto cut = close_payload(1000, reason);
  EXPECT_EQ(cut.size(), 2u + 122u);
}

TEST(WsFrame, ReadsMaskedTextFedOneByteAtATime) {
  client_frame_reader r(1024);
  const auto bytes = client_frame(fin | 1, R"({"type":"cancel"})") + client_frame(fin | 9, "hi");
  std::vector<std::string> texts;
  for (char c : bytes.substr(0, bytes.size() - 1)) {
    r.feed(std::string_view(&c, 1));
    for (auto item = r.next(); !std::holds_alternative<need_more>(item); item = r.next()) {
      ASSERT_TRUE(std::holds_alternative<text_message>(item));
      texts.push_back(std::get<text_message>(item).text);
    }
  }
  EXPECT_EQ(texts, std::vector<std::string>{R"({"type":"cancel"})"});
  r.feed(bytes.substr(bytes.size() - 1));  // the ping's last byte
  const auto p = r.next();
  ASSERT_TRUE(std::holds_alternative<ping>(p));
  EXPECT_EQ(std::get<ping>(p).payload, "hi");
}

TEST(WsFrame, ReassemblesAFragmentedMessageWithAControlFrameBetween) {
  client_frame_reader r(1024);
  r.feed(client_frame(1, "{\"type\":") + client_frame(fin | 10, "") + client_frame(fin | 0, "\"cancel\"}"));
  EXPECT_TRUE(std::holds_alternative<pong>(r.next()));
  const auto m = r.next();
  ASSERT_TRUE(std::holds_alternative<text_message>(m));
  EXPECT_EQ(std::get<text_message>(m).text, R"({"type":"cancel"})");
  EXPECT_TRUE(std::holds_alternative<need_more>(r.next()));
}

TEST(WsFrame, ReadsTheCloseCode) {
  client_frame_reader r(1024);
  r.feed(client_frame(fin | 8, std::string("\x03\xE8", 2)) + client_frame(fin | 8, ""));
  EXPECT_EQ(std::get<close_received>(r.next()).code, 1000);
  EXPECT_EQ(std::get<close_received>(r.next()).code, 0);
}

TEST(WsFrame, RejectsWhatBreaksTheProtocolWithTheMatchingCode) {
  const auto violation_of = [](const std::string& bytes, std::size_t limit = 1024) {
    client_frame_reader r(limit);
    r.feed(bytes);
    const auto item = r.next();
    return std::holds_alternative<violation>(item) ? std::get<violation>(item).code : close_code{};
  };
  EXPECT_EQ(violation_of(client_frame(fin | 1, "{}", false)), protocol_error);  // unmasked
  EXPECT_EQ(violation_of(client_frame(fin | 0x40 | 1, "{}")), protocol_error);  // a reserved bit
  EXPECT_EQ(violation_of(client_frame(fin | 2, "\x01")), unsupported_data);     // binary
  EXPECT_EQ(violation_of(client_frame(fin | 3, "")), protocol_error);           // unknown opcode
  EXPECT_EQ(violation_of(client_frame(9, "")), protocol_error);                 // a fragmented ping
  EXPECT_EQ(violation_of(client_frame(fin | 9, std::string(126, 'p'))), protocol_error);
  EXPECT_EQ(violation_of(client_frame(fin | 8, "\x03")), protocol_error);       // half a close code
  // Close codes no peer may send are a violation (1002), not a code to echo back.
  for (const int code : {0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535}) {
    const std::string payload{static_cast<char>(code >> 8), static_cast<char>(code & 255)};
    EXPECT_EQ(violation_of(client_frame(fin | 8, payload)), protocol_error) << code;
  }
  for (const int code : {1000, 1001, 1003, 1007, 1011, 1014, 3000, 4999}) {
    const std::string payload{static_cast<char>(code >> 8), static_cast<char>(code & 255)};
    EXPECT_EQ(violation_of(client_frame(fin | 8, payload)), close_code{}) << code;
  }
  EXPECT_EQ(violation_of(client_frame(fin | 0, "x")), protocol_error);          // continuation of nothing
  EXPECT_EQ(violation_of(client_frame(1, "a") + client_frame(fin | 1, "b")), protocol_error);
  EXPECT_EQ(violation_of(client_frame(fin | 1, "\xC3\x28")), invalid_payload);  // not UTF-8
  // Over the limit, whole or in fragments; known from the header, before the payload is in.
  EXPECT_EQ(violation_of(client_frame(fin | 1, std::string(1025, 'a'))), too_big);
  EXPECT_EQ(violation_of(client_frame(fin | 1, std::string(1025, 'a')).substr(0, 8)), too_big);
  EXPECT_EQ(violation_of(client_frame(1, std::string(1000, 'a')) + client_frame(fin | 0, std::string(25, 'a'))), too_big);
  EXPECT_EQ(violation_of(client_frame(fin | 1, std::string(1024, 'a'))), close_code{});  // exactly the limit
  // A 64-bit length that would overflow any sum.
  EXPECT_EQ(violation_of(std::string("\x81\xFF\xFF\xFF\xFF\xFF\xFF\xFF\xFF\xFF", 10)), too_big);
  // ... also after a first fragment, where a sum with the length would wrap round to small.
  EXPECT_EQ(violation_of(client_frame(1, "abcde") + std::string("\x80\xFF\xFF\xFF\xFF\xFF\xFF\xFF\xFF\xFD", 10) +
                         std::string(20, 'x')),
            too_big);
}
