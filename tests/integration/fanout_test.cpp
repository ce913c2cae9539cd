// Fan-out without loss, with the default config, against cmdcast-server as a process and a
// loopback sshd: every watcher who keeps reading gets every byte (checked by SHA-256 against
// the source), a watcher alone paces the command instead of being cut off, a stalled one
// slows nobody and is told what it missed, and long-pollers follow the same rules; watchers
// that negotiate permessage-deflate get the same events, compressed.
#include <gtest/gtest.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <thread>

#include "config/config.hpp"
#include "digest.hpp"
#include "server_harness.hpp"

namespace cmdcast::testing {
namespace {

using clock_type = std::chrono::steady_clock;
constexpr std::string_view burst_line = "cmdcast burst: every watcher who keeps reading gets every line\n";

/// SHA-256 of the first `bytes` bytes of the burst action's output (`yes LINE | head -c`).
std::string burst_digest(std::size_t bytes) {
  std::string block;
  while (block.size() < (1u << 20)) block += burst_line;
  sha256 h;
  for (std::size_t done = 0; done < bytes;) {
    const std::size_t take = std::min(bytes - done, block.size());
    h.add(std::string_view(block).substr(0, take));
    done += take;
  }
  return h.hex();
}

/// The burst command waits for this file, so that every watcher is attached from the start.
class go_file {
 public:
  go_file() : path_("/tmp/cmdcast-go-" + std::to_string(::getpid()) + "x" + std::to_string(counter_++)) {}
  ~go_file() { std::filesystem::remove(path_); }
  go_file(const go_file&) = delete;
  go_file& operator=(const go_file&) = delete;
  void go() { std::ofstream(path_) << "go"; }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  static inline int counter_ = 0;
};

/// Starts the burst once `watchers` are attached to it.
void go_when_watched(std::uint16_t port, const std::string& id, std::int64_t watchers, go_file& go) {
  while (record_of(port, id).watchers < watchers) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  go.go();
}

/// A run of `burst` (lines of text) or `control_burst` (\x01 bytes) that waits for `go`.
std::string burst_request(const go_file& go, std::size_t bytes, const std::string& action = "burst") {
  return run_request(action, R"({"go":")" + go.path() + R"(","bytes":")" + std::to_string(bytes) + R"("})");
}

/// What one watcher saw of an execution.
struct watched {
  std::string stdout_sha256;
  std::uint64_t stdout_bytes = 0;
  std::vector<common::gap_event> gaps;
  bool exited = false;
  bool in_order = true;  // seq 0, 1, 2, ... with no hole a gap does not declare
  unsigned close_code = 0;
  std::string read_error;  // why reading ended without a close (the connection dropped)
};

/// Takes the output of a stdout frame without a general JSON decoder when it can (the burst
/// escapes nothing but newlines), so that 100 readers in this process keep up with the server.
bool append_plain_stdout(std::string_view frame, std::string& out) {
  constexpr std::string_view head = R"({"type":"stdout","seq":)";
  if (!frame.starts_with(head) || !frame.ends_with("\"}")) return false;
  const auto data = frame.find(R"(,"data":")");
  if (data == std::string_view::npos) return false;
  std::string_view rest = frame.substr(data + 9, frame.size() - data - 9 - 2);
  for (auto at = rest.find('\\'); at != std::string_view::npos; at = rest.find('\\')) {
    if (at + 1 >= rest.size() || rest[at + 1] != 'n') return false;
    out.append(rest.substr(0, at));
    out += '\n';
    rest.remove_prefix(at + 2);
  }
  out.append(rest);
  return true;
}

std::int64_t seq_of_frame(std::string_view frame) {
  const auto at = frame.find(R"("seq":)");
  return at == std::string_view::npos ? -1 : std::atoll(frame.data() + at + 6);
}

/// Reads a watcher's stream to the end; `after_message` runs after each message (to read
/// slowly) with its size.
watched read_to_the_end(ws_client& c, const std::function<void(std::size_t)>& after_message = {}) {
  watched w;
  sha256 h;
  std::int64_t expected = 0;
  std::string text;
  while (auto m = c.next()) {
    text.clear();
    if (append_plain_stdout(*m, text)) {
      w.in_order = w.in_order && seq_of_frame(*m) == expected++;
    } else {
      auto e = common::decode_event(*m);
      if (!e.ok()) {
        ADD_FAILURE() << e.error();
        break;
      }
      const auto seq = common::event_seq(*e);
      if (auto* gap = std::get_if<common::gap_event>(&*e)) {
        w.in_order = w.in_order && gap->missed_from == expected;
        expected = gap->missed_to;  // the gap's own seq
        w.gaps.push_back(*gap);
      }
      if (seq) w.in_order = w.in_order && *seq == expected++;
      if (auto* out = std::get_if<common::output_event>(&*e); out && out->stream == common::output_stream::out) {
        text = out->data;
      }
      w.exited = w.exited || std::holds_alternative<common::exit_event>(*e);
    }
    w.stdout_bytes += text.size();
    h.add(text);
    if (after_message) after_message(m->size());
  }
  w.stdout_sha256 = h.hex();
  w.close_code = c.reason().code;
  if (c.error()) w.read_error = c.error().message();
  return w;
}

/// Attaches to an execution from its start and reads it to the end.
watched watch_to_the_end(std::uint16_t port, const std::string& id, ws_options o = {},
                         const std::function<void(std::size_t)>& after_message = {}) {
  ws_client c(port, "/executions/" + id + "/stream?after=-1", std::move(o));
  return read_to_the_end(c, after_message);
}

/// Waits until the execution's stdout count has not moved for a second (or it has ended);
/// returns its record then.
common::execution_record when_output_settles(std::uint16_t port, const std::string& id) {
  auto r = record_of(port, id);
  const auto deadline = clock_type::now() + std::chrono::seconds(60);
  while (clock_type::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::seconds(1));
    const auto now = record_of(port, id);
    if (now.bytes_stdout == r.bytes_stdout || now.state != "running") return now;
    r = now;
  }
  return r;
}

/// Sequenced events from `from` on, each seq once, in order: a gap declares what it skips.
void expect_every_seq_accounted_for(const std::vector<event>& events, common::seq_t from) {
  common::seq_t expected = from;
  for (const auto& e : events) {
    const auto seq = common::event_seq(e);
    if (!seq) continue;
    if (auto* g = std::get_if<common::gap_event>(&e)) {
      EXPECT_EQ(g->missed_from, expected);
      expected = g->missed_to;  // the gap's own seq
    }
    EXPECT_EQ(*seq, expected++);
  }
}

class Fanout : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { shared_.start(); }  // the default config
  static void TearDownTestSuite() { shared_.stop(); }
  static std::uint16_t port() { return shared_.port(); }
  static inline shared_server shared_;
};

TEST_F(Fanout, AHundredWatchersOfA200MBBurstEachGetEveryByte) {
#if defined(__SANITIZE_ADDRESS__)
  // Under AddressSanitizer the test's own 100 readers are instrumented too: 20 GB through
  // them would outlast CI. The same test at full size runs in the other builds.
  constexpr std::size_t bytes = 20'000'000;
#else
  constexpr std::size_t bytes = 200'000'000;
#endif
  constexpr int watchers = 100;
  go_file go;
  const std::string id = post_run(port(), burst_request(go, bytes));
  std::vector<watched> seen(watchers);
  std::vector<std::thread> threads;
  std::atomic<int> attached{0};
  for (int i = 0; i < watchers; ++i) {
    threads.emplace_back([&, i] {
      ++attached;
      seen[static_cast<std::size_t>(i)] = watch_to_the_end(port(), id, {.token = viewer_token});
    });
  }
  go_when_watched(port(), id, watchers, go);
  for (auto& t : threads) t.join();
  const std::string expected = burst_digest(bytes);
  for (int i = 0; i < watchers; ++i) {
    const auto& w = seen[static_cast<std::size_t>(i)];
    EXPECT_EQ(w.stdout_bytes, bytes) << "watcher " << i;
    EXPECT_EQ(w.stdout_sha256, expected) << "watcher " << i;
    EXPECT_TRUE(w.gaps.empty()) << "watcher " << i << " missed seq " << w.gaps.front().missed_from << "-"
                                << w.gaps.front().missed_to;
    EXPECT_TRUE(w.in_order) << "watcher " << i;
    EXPECT_TRUE(w.exited) << "watcher " << i;
    EXPECT_EQ(w.close_code, 1000u) << "watcher " << i << ": " << w.read_error;
  }
  EXPECT_EQ(metric(port(), "cmdcast_watcher_gaps_total"), 0u);
}

TEST_F(Fanout, AWatcherAloneWhoStopsReadingHoldsTheCommandAndThenGetsEverything) {
  constexpr std::size_t bytes = 100'000'000;
  go_file go;
  const std::string id = post_run(port(), burst_request(go, bytes));
  // Attached, then reading nothing (a small receive buffer: little hides in the kernel).
  ws_client stalled(port(), "/executions/" + id + "/stream?after=-1", {.token = viewer_token, .receive_buffer = 65536});
  go_when_watched(port(), id, 1, go);
  // The command is held: SSH's window fills and its output stops well short of the end.
  const auto held = when_output_settles(port(), id);
  EXPECT_EQ(held.state, "running");
  EXPECT_LT(held.bytes_stdout, 60'000'000) << "the command was not held";
  EXPECT_GT(metric(port(), "cmdcast_output_holds_total"), 0u);
  // Reading again, the watcher gets every byte, with no gap.
  const auto got = read_to_the_end(stalled);
  EXPECT_TRUE(got.gaps.empty());
  EXPECT_TRUE(got.in_order);
  EXPECT_EQ(got.stdout_bytes, bytes);
  EXPECT_EQ(got.stdout_sha256, burst_digest(bytes));
  EXPECT_TRUE(got.exited);
  EXPECT_EQ(got.close_code, 1000u);
}

TEST_F(Fanout, AStalledWatcherSlowsNobodyAndIsToldWhatItMissed) {
  constexpr std::size_t bytes = 100'000'000;
  go_file go;
  const std::string id = post_run(port(), burst_request(go, bytes));
  ws_client stalled(port(), "/executions/" + id + "/stream?after=-1", {.token = viewer_token, .receive_buffer = 65536});
  watched fast;
  std::thread reader([&] { fast = watch_to_the_end(port(), id, {.token = viewer_token}); });
  go_when_watched(port(), id, 2, go);
  // The fast watcher gets the whole run while the stalled one reads nothing at all.
  reader.join();
  EXPECT_EQ(fast.stdout_bytes, bytes);
  EXPECT_EQ(fast.stdout_sha256, burst_digest(bytes));
  EXPECT_TRUE(fast.gaps.empty());
  EXPECT_TRUE(fast.exited);
  // Now the stalled one reads: a prefix, a gap that declares what is gone, the rest, the exit.
  std::vector<event> got;
  std::uint64_t output = 0;
  while (auto m = stalled.next()) {
    auto e = common::decode_event(*m);
    ASSERT_TRUE(e.ok()) << e.error();
    if (auto* o = std::get_if<common::output_event>(&*e)) output += o->data.size();
    if (common::event_seq(*e)) got.push_back(std::move(*e));
  }
  EXPECT_EQ(stalled.reason().code, 1000u) << "not cut off";
  ASSERT_EQ(of_type<common::gap_event>(got).size(), 1u);
  const auto gap = of_type<common::gap_event>(got).at(0);
  expect_every_seq_accounted_for(got, 0);
  EXPECT_FALSE(of_type<common::exit_event>(got).empty());
  EXPECT_LT(output, bytes);
  EXPECT_GT(gap.missed_to, gap.missed_from);
  EXPECT_GT(metric(port(), "cmdcast_watcher_gaps_total"), 0u);
}

TEST_F(Fanout, AWatcherReadingSlowlyAloneGetsEveryByte) {
  // About 20 MB/s, far slower than the command writes: the command is paced, nothing is lost.
  constexpr std::size_t bytes = 60'000'000;
  go_file go;
  const std::string id = post_run(port(), burst_request(go, bytes));
  watched slow;
  std::thread reader([&] {
    slow = watch_to_the_end(port(), id, {.token = viewer_token, .receive_buffer = 65536}, [](std::size_t size) {
      std::this_thread::sleep_for(std::chrono::microseconds(size / 20));
    });
  });
  go_when_watched(port(), id, 1, go);
  reader.join();
  EXPECT_EQ(slow.stdout_bytes, bytes);
  EXPECT_EQ(slow.stdout_sha256, burst_digest(bytes));
  EXPECT_TRUE(slow.gaps.empty());
  EXPECT_TRUE(slow.exited);
  EXPECT_EQ(slow.close_code, 1000u);
}

TEST_F(Fanout, ALongPollerAloneHoldsTheCommandBetweenItsPollsAndGetsEveryByte) {
  constexpr std::size_t bytes = 60'000'000;
  go_file go;
  const std::string id = post_run(port(), burst_request(go, bytes));
  auto first = poll(port(), id, -1, 0);  // the started event: from now on a watcher
  ASSERT_FALSE(first.events.empty());
  go.go();
  // Between two polls the poller is a watcher who has not read yet: the command waits for it.
  const auto held = when_output_settles(port(), id);
  EXPECT_EQ(held.state, "running");
  EXPECT_LT(held.bytes_stdout, 60'000'000) << "the command was not held";
  sha256 h;
  std::uint64_t got = 0;
  common::seq_t after = first.next;
  for (bool done = false; !done;) {
    auto p = poll(port(), id, after, 5);
    for (const auto& e : p.events) {
      EXPECT_FALSE(std::holds_alternative<common::gap_event>(e));
      if (auto* o = std::get_if<common::output_event>(&e)) {
        h.add(o->data);
        got += o->data.size();
      }
    }
    after = p.next;
    done = p.done;
  }
  EXPECT_EQ(got, bytes);
  EXPECT_EQ(h.hex(), burst_digest(bytes));
  EXPECT_EQ(record_of(port(), id).state, "exited");
}

TEST_F(Fanout, ControlBytesAtFullSpeedReachAWatcherAndAPollerWhole) {
  // \x01 as fast as the command writes it: each byte is six once escaped in JSON ("\u0001"),
  // so a read of 1 MiB makes a frame of 6 MiB, and a poll answer of one such frame.
  constexpr std::size_t bytes = 6'000'000;
  go_file go;
  const std::string id = post_run(port(), burst_request(go, bytes, "control_burst"));
  auto first = poll(port(), id, -1, 0);  // the started event: from now on a watcher
  ASSERT_FALSE(first.events.empty());
  ws_client websocket(port(), "/executions/" + id + "/stream?after=-1", {.token = viewer_token, .receive_buffer = 65536});
  go_when_watched(port(), id, 1, go);
  // Both watchers hold the command until it waits in SSH's window: the reads after that are
  // full, of the largest size.
  when_output_settles(port(), id);
  watched by_websocket;
  std::thread reader([&] { by_websocket = read_to_the_end(websocket); });
  std::string polled;
  std::size_t largest = 0;
  bool exited = false;
  for (common::seq_t after = first.next;;) {
    auto p = poll(port(), id, after, 5);
    for (const auto& e : p.events) {
      EXPECT_FALSE(std::holds_alternative<common::gap_event>(e));
      exited = exited || std::holds_alternative<common::exit_event>(e);
      if (auto* o = std::get_if<common::output_event>(&e)) {
        polled += o->data;
        largest = std::max(largest, o->data.size());
      }
    }
    after = p.next;
    if (p.done) break;
  }
  reader.join();
  const std::string expected(bytes, '\x01');
  EXPECT_TRUE(polled == expected) << polled.size() << " bytes polled";
  EXPECT_TRUE(exited);
  EXPECT_GT(largest, std::size_t{256} << 10) << "the reads stayed small: no large frame was sent";
  sha256 h;
  h.add(expected);
  EXPECT_EQ(by_websocket.stdout_bytes, bytes);
  EXPECT_EQ(by_websocket.stdout_sha256, h.hex());
  EXPECT_TRUE(by_websocket.gaps.empty());
  EXPECT_TRUE(by_websocket.exited);
  EXPECT_EQ(by_websocket.close_code, 1000u) << by_websocket.read_error;
}

TEST_F(Fanout, ALongPollerWhoStopsPollingSlowsNobodyAndIsToldWhatItMissed) {
  constexpr std::size_t bytes = 100'000'000;
  go_file go;
  const std::string id = post_run(port(), burst_request(go, bytes));
  auto first = poll(port(), id, -1, 0);
  watched fast;
  std::thread reader([&] { fast = watch_to_the_end(port(), id, {.token = viewer_token}); });
  go_when_watched(port(), id, 2, go);
  reader.join();
  EXPECT_EQ(fast.stdout_bytes, bytes);
  EXPECT_TRUE(fast.gaps.empty());
  // The poller comes back: a gap for what is no longer held, then the rest.
  std::vector<event> rest;
  for (common::seq_t after = first.next;;) {
    auto p = poll(port(), id, after, 5);
    rest.insert(rest.end(), p.events.begin(), p.events.end());
    after = p.next;
    if (p.done) break;
  }
  EXPECT_EQ(of_type<common::gap_event>(rest).size(), 1u);
  expect_every_seq_accounted_for(rest, first.next + 1);
  EXPECT_FALSE(of_type<common::exit_event>(rest).empty());
}

/// A frame of the server's, read off a raw socket: its first byte (FIN, RSV1, opcode) and payload.
struct server_frame {
  std::uint8_t first = 0;
  std::string payload;
};

std::optional<server_frame> read_frame(tcp::socket& s, std::string& pending) {
  auto need = [&](std::size_t n) {
    char buf[65536];
    boost::system::error_code ec;
    while (pending.size() < n && !ec) pending.append(buf, s.read_some(net::buffer(buf), ec));
    return pending.size() >= n;
  };
  if (!need(2)) return std::nullopt;
  std::uint64_t length = static_cast<std::uint8_t>(pending[1]) & 0x7F;
  std::size_t at = 2;
  if (length >= 126) {
    const std::size_t bytes = length == 126 ? 2 : 8;
    if (!need(2 + bytes)) return std::nullopt;
    length = 0;
    for (std::size_t i = 0; i < bytes; ++i) length = (length << 8) | static_cast<std::uint8_t>(pending[2 + i]);
    at += bytes;
  }
  if (!need(at + length)) return std::nullopt;
  server_frame f{static_cast<std::uint8_t>(pending[0]), pending.substr(at, length)};
  pending.erase(0, at + length);
  return f;
}

/// Inflates one message of a connection without server context takeover.
std::string inflate_message_as_a_client(std::string compressed) {
  compressed.append("\x00\x00\xff\xff", 4);
  z_stream z{};
  inflateInit2(&z, -15);
  std::string out;
  z.next_in = reinterpret_cast<Bytef*>(compressed.data());
  z.avail_in = static_cast<uInt>(compressed.size());
  char chunk[65536];
  do {
    z.next_out = reinterpret_cast<Bytef*>(chunk);
    z.avail_out = sizeof chunk;
    if (inflate(&z, Z_SYNC_FLUSH) < 0) break;
    out.append(chunk, sizeof chunk - z.avail_out);
  } while (z.avail_in > 0 || z.avail_out == 0);
  inflateEnd(&z);
  return out;
}

TEST_F(Fanout, WatchersThatNegotiateCompressionGetTheSameEventsInFewerBytes) {
  // Compressed, a burst fits in the sockets' buffers at once, so the compressed watchers take
  // it as fast as the command writes it: the plain one must keep up or fall behind. 8 MB is
  // less than the replay buffer keeps while someone catches up: it cannot miss anything.
  constexpr std::size_t bytes = 8'000'000;
  go_file go;
  const std::string id = post_run(port(), burst_request(go, bytes));
  const std::string target = "/executions/" + id + "/stream?after=-1";
  ws_client plain(port(), target, {.token = viewer_token});
  ws_client compressed(port(), target, {.token = viewer_token, .deflate = true});
  EXPECT_EQ(plain.response()[http::field::sec_websocket_extensions], "");
  EXPECT_EQ(compressed.response()[http::field::sec_websocket_extensions],
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover");
  // A third watcher offers compression as Chromium does, on a raw socket: the wire itself.
  net::io_context io;
  tcp::socket raw(io);
  raw.connect({net::ip::make_address("127.0.0.1"), port()});
  const auto upgrade = raw_upgrade(raw, target, viewer_token, "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n");
  EXPECT_NE(upgrade.head.find("\r\nSec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; "
                              "client_no_context_takeover\r\n"),
            std::string::npos)
      << upgrade.head;
  go_when_watched(port(), id, 3, go);
  std::vector<event> plain_events, compressed_events;
  std::thread plain_reader([&] { plain_events = plain.all(); });
  std::thread compressed_reader([&] { compressed_events = compressed.all(); });
  std::vector<event> raw_events;
  std::uint64_t wire = 0, inflated = 0;
  bool every_event_compressed = true;
  std::string pending = upgrade.rest;
  while (auto f = read_frame(raw, pending)) {
    if ((f->first & 0x0F) == 0x8) break;  // close
    if ((f->first & 0x0F) != 0x1) continue;
    every_event_compressed = every_event_compressed && (f->first & 0x40);
    const auto text = inflate_message_as_a_client(f->payload);
    wire += f->payload.size();
    inflated += text.size();
    auto e = common::decode_event(text);
    ASSERT_TRUE(e.ok()) << e.error() << ": " << text.substr(0, 100);
    raw_events.push_back(*e);
  }
  plain_reader.join();
  compressed_reader.join();
  EXPECT_TRUE(every_event_compressed) << "RSV1 on every text frame";
  EXPECT_FALSE(plain.error()) << plain.error().message();
  EXPECT_FALSE(compressed.error()) << compressed.error().message();
  EXPECT_EQ(text_of(plain_events, common::output_stream::out).size(), bytes);
  // (Compared as booleans: a failure would print megabytes.)
  EXPECT_TRUE(sequenced(compressed_events) == sequenced(plain_events));
  EXPECT_TRUE(sequenced(raw_events) == sequenced(plain_events))
      << raw_events.size() << " events against " << plain_events.size() << ", stdout "
      << text_of(raw_events, common::output_stream::out).size() << ", gaps " << of_type<common::gap_event>(raw_events).size();
  EXPECT_GT(inflated, wire * 3) << "compressed " << inflated << " to " << wire;
  EXPECT_GE(metric(port(), "cmdcast_websockets_compressed_total"), 2u);
}

TEST_F(Fanout, ACompressedCancelIsUnderstood) {
  // Beast, as browsers do, compresses what it sends once compression is negotiated.
  ws_client c(port(), "/machines/box/commands/stream", {.deflate = true});
  c.send(run_request("forever"));
  ASSERT_TRUE(c.next());  // started
  c.send(R"({"type":"cancel"})");
  const auto exits = of_type<common::exit_event>(c.all());
  ASSERT_EQ(exits.size(), 1u);
  EXPECT_EQ(exits[0].state, common::exit_state::cancelled);
}

TEST(FanoutConfig, BrokenBoundsAreClearErrors) {
  const auto error_of = [](const std::string& keys) {
    const auto c = server::parse_config("[server]\nanonymous = \"viewer\"\n" + keys + "\n", "f.toml");
    return c.ok() ? std::string("accepted") : c.error();
  };
  for (const std::string key : {"max_lag_bytes", "subscriber_queue_bytes"}) {
    for (const std::string value : {"0", "-1", "\"64M\"", "1.5", "2199023255552"}) {
      const auto error = error_of(key + " = " + value);
      EXPECT_NE(error.find("f.toml:3:" + std::to_string(key.size() + 4) + ": server." + key + ": "), std::string::npos) << key << " = " << value << ": " << error;
    }
  }
  EXPECT_EQ(error_of("max_lag_bytes = 1048576"), "accepted");
}

}  // namespace
}  // namespace cmdcast::testing
