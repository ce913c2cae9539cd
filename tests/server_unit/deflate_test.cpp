// permessage-deflate as the server negotiates and speaks it: which offers it accepts, events
// compressed on their own, and client messages inflated within the message limit.
#include <gtest/gtest.h>
#include <zlib.h>

#include <string>

#include "http/ws_frame.hpp"
#include "support/deflate.hpp"

using namespace cmdcast::server;

namespace {

/// Inflates as a browser does a message of a connection without server context takeover.
std::string inflate_as_a_client(std::string compressed) {
  compressed.append("\x00\x00\xff\xff", 4);
  z_stream z{};
  inflateInit2(&z, -15);
  std::string out(1 << 20, '\0');
  z.next_in = reinterpret_cast<Bytef*>(compressed.data());
  z.avail_in = static_cast<uInt>(compressed.size());
  z.next_out = reinterpret_cast<Bytef*>(out.data());
  z.avail_out = static_cast<uInt>(out.size());
  inflate(&z, Z_SYNC_FLUSH);
  out.resize(out.size() - z.avail_out);
  inflateEnd(&z);
  return out;
}

std::string masked(std::uint8_t first_byte, const std::string& payload) {
  std::string f;
  f += static_cast<char>(first_byte);
  if (payload.size() < 126) {
    f += static_cast<char>(0x80 | payload.size());
  } else {
    f += static_cast<char>(0x80 | 126);
    f += static_cast<char>(payload.size() >> 8);
    f += static_cast<char>(payload.size() & 0xFF);
  }
  f.append("\0\0\0\0", 4);  // a zero mask leaves the payload as it is
  return f + payload;
}

}  // namespace

TEST(Deflate, AcceptsBrowserOffersAndAnswersWithoutContextTakeover) {
  const std::string answer = "permessage-deflate; server_no_context_takeover; client_no_context_takeover";
  EXPECT_EQ(negotiate_deflate("permessage-deflate; client_max_window_bits"), answer);  // Chromium, Firefox
  EXPECT_EQ(negotiate_deflate("permessage-deflate"), answer);
  EXPECT_EQ(negotiate_deflate("permessage-deflate; client_max_window_bits=10; server_no_context_takeover"), answer);
  EXPECT_EQ(negotiate_deflate("x-webkit-deflate-frame, permessage-deflate; server_max_window_bits=15"), answer);
  // Offers it cannot honour: a smaller server window (one compressed frame serves all), unknown
  // parameters, other extensions.
  EXPECT_EQ(negotiate_deflate("permessage-deflate; server_max_window_bits=10"), "");
  EXPECT_EQ(negotiate_deflate("permessage-deflate; mystery"), "");
  EXPECT_EQ(negotiate_deflate("permessage-deflate; server_no_context_takeover=1"), "");
  EXPECT_EQ(negotiate_deflate("x-webkit-deflate-frame"), "");
  EXPECT_EQ(negotiate_deflate(""), "");
  // The first acceptable offer wins.
  EXPECT_EQ(negotiate_deflate("permessage-deflate; server_max_window_bits=9, permessage-deflate"), answer);
}

TEST(Deflate, EachMessageIsCompressedOnItsOwn) {
  const std::string event = R"({"type":"stdout","seq":7,"data":")" + std::string(4000, 'x') + R"("})";
  const auto compressed = deflate_message(event);
  EXPECT_LT(compressed.size() * 20, event.size());
  EXPECT_NE(compressed.substr(compressed.size() - 4), std::string("\x00\x00\xff\xff", 4)) << "the tail is taken off";
  EXPECT_EQ(inflate_as_a_client(compressed), event);
  // No context carries over: the same message compresses to the same bytes again.
  deflate_message("something else entirely");
  EXPECT_EQ(deflate_message(event), compressed);
  EXPECT_EQ(inflate_as_a_client(deflate_message("")), "");
}

TEST(Deflate, ClientMessagesInflateWithinTheLimit) {
  std::string out;
  EXPECT_EQ(inflate_message(deflate_message(R"({"type":"cancel"})"), 100, out), inflated::ok);
  EXPECT_EQ(out, R"({"type":"cancel"})");
  // A bomb: 10 MB of zeros in some 40 KB; refused once past the limit.
  const std::string bomb = deflate_message(std::string(10'000'000, '0'));
  EXPECT_LT(bomb.size(), 65'536u);
  EXPECT_EQ(inflate_message(bomb, 65536, out), inflated::too_long);
  EXPECT_EQ(inflate_message("\xff\xff\xff garbage", 65536, out), inflated::invalid);
}

TEST(Deflate, TheReaderInflatesCompressedMessagesWhereNegotiated) {
  const std::string cancel = R"({"type":"cancel"})";
  ws::client_frame_reader reader(1024, true);
  reader.feed(masked(0xC1, deflate_message(cancel)));  // FIN, RSV1, text
  auto item = reader.next();
  ASSERT_TRUE(std::holds_alternative<ws::text_message>(item));
  EXPECT_EQ(std::get<ws::text_message>(item).text, cancel);
  // Fragmented: RSV1 on the first frame only.
  const auto compressed = deflate_message(cancel);
  reader.feed(masked(0x41, compressed.substr(0, 5)) + masked(0x80, compressed.substr(5)));
  item = reader.next();
  ASSERT_TRUE(std::holds_alternative<ws::text_message>(item));
  EXPECT_EQ(std::get<ws::text_message>(item).text, cancel);
  // Plain messages still pass.
  reader.feed(masked(0x81, cancel));
  EXPECT_EQ(std::get<ws::text_message>(reader.next()).text, cancel);
}

TEST(Deflate, TheReaderRefusesWhatTheNegotiationDoesNotAllow) {
  const auto compressed = deflate_message(R"({"type":"cancel"})");
  ws::client_frame_reader plain(1024);
  plain.feed(masked(0xC1, compressed));
  EXPECT_EQ(std::get<ws::violation>(plain.next()).code, ws::protocol_error);  // not negotiated
  ws::client_frame_reader on_continuation(1024, true);
  on_continuation.feed(masked(0x01, "{") + masked(0xC0, "}"));
  EXPECT_EQ(std::get<ws::violation>(on_continuation.next()).code, ws::protocol_error);
  ws::client_frame_reader on_ping(1024, true);
  on_ping.feed(masked(0xC9, ""));
  EXPECT_EQ(std::get<ws::violation>(on_ping.next()).code, ws::protocol_error);
  ws::client_frame_reader bomb(65536, true);
  bomb.feed(masked(0xC1, deflate_message(std::string(1'000'000, 'a')).substr(0, 65000)));
  EXPECT_EQ(std::get<ws::violation>(bomb.next()).code, ws::too_big);
  ws::client_frame_reader garbage(1024, true);
  garbage.feed(masked(0xC1, "\xff\xfe not deflate"));
  EXPECT_EQ(std::get<ws::violation>(garbage.next()).code, ws::invalid_payload);
}
