// cmdcast-server as a real process on a real socket, running commands on a loopback sshd,
// driven by plain Beast clients.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <future>
#include <sstream>
#include <thread>

#include "config/config.hpp"
#include "server_harness.hpp"

namespace cmdcast::testing {
namespace {

using clock_type = std::chrono::steady_clock;
using common::error_code;

class Server : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { shared_.start(); }
  static void TearDownTestSuite() { shared_.stop(); }
  static std::uint16_t port() { return shared_.port(); }

  /// Runs an action over a WebSocket and reads to the end.
  std::vector<event> run(const std::string& request, websocket::close_reason* reason = nullptr) {
    ws_client c(port(), "/machines/box/commands/stream");
    c.send(request);
    auto events = c.all();
    if (reason) *reason = c.reason();
    return events;
  }

  common::error_event error_of(const std::vector<event>& events) {
    const auto errors = of_type<common::error_event>(events);
    EXPECT_EQ(errors.size(), 1u);
    return errors.empty() ? common::error_event{} : errors[0];
  }

  static inline shared_server shared_;
};

/// What the server has read from WebSocket clients so far (its /metrics).
std::uint64_t ws_bytes_in(std::uint16_t port) { return metric(port, "cmdcast_ws_bytes_in_total"); }

/// Waits until the server has read (and so handled) `bytes` more from WebSocket clients.
void wait_until_read(std::uint16_t port, std::uint64_t from, std::uint64_t bytes) {
  const auto deadline = clock_type::now() + std::chrono::seconds(60);
  while (ws_bytes_in(port) < from + bytes && clock_type::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ASSERT_GE(ws_bytes_in(port), from + bytes);
}

TEST_F(Server, StreamsStdoutAndStderrAsProducedThenExitThenCloses) {
  ws_client c(port(), "/machines/box/commands/stream");
  c.send(run_request("lines"));
  std::vector<event> events;
  std::optional<clock_type::time_point> first_line_at, exit_at;
  while (auto m = c.next()) {
    auto e = common::decode_event(*m);
    ASSERT_TRUE(e.ok()) << *m;
    if (std::holds_alternative<common::output_event>(*e) && !first_line_at) first_line_at = clock_type::now();
    if (std::holds_alternative<common::exit_event>(*e)) exit_at = clock_type::now();
    events.push_back(*e);
  }
  ASSERT_TRUE(first_line_at && exit_at);
  // The first line arrived while the command still ran (it runs about 0.9 s).
  EXPECT_GT(*exit_at - *first_line_at, std::chrono::milliseconds(500));
  EXPECT_EQ(text_of(events, common::output_stream::out), "line 1\nline 2\nline 3\n");
  EXPECT_EQ(text_of(events, common::output_stream::err), "done\n");
  const auto started = of_type<common::started_event>(events);
  ASSERT_EQ(started.size(), 1u);
  EXPECT_EQ(started[0].machine_id, "box");
  EXPECT_EQ(started[0].action_type, "lines");
  const auto exits = of_type<common::exit_event>(events);
  ASSERT_EQ(exits.size(), 1u);
  EXPECT_EQ(exits[0].code, 0);
  EXPECT_EQ(exits[0].state, common::exit_state::exited);
  const auto seq = sequenced(events);
  for (std::size_t i = 0; i < seq.size(); ++i) EXPECT_EQ(common::event_seq(seq[i]), static_cast<common::seq_t>(i));
  EXPECT_TRUE(std::holds_alternative<common::exit_event>(seq.back()));
  EXPECT_EQ(c.reason().code, websocket::close_code::normal);
}

TEST_F(Server, SendsTheExitCodeOfAFailingCommand) {
  const auto events = run(run_request("fail"));
  const auto exits = of_type<common::exit_event>(events);
  ASSERT_EQ(exits.size(), 1u);
  EXPECT_EQ(exits[0].code, 3);
  EXPECT_EQ(text_of(events, common::output_stream::err), "oops\n");
}

TEST_F(Server, ParamsAreValidatedAndShellQuoted) {
  const auto ok = run(run_request("restart_service", R"({"service":"nginx"})"));
  EXPECT_EQ(text_of(ok, common::output_stream::out), "restarting nginx\n");
  EXPECT_EQ(of_type<common::started_event>(ok)[0].command, "echo restarting 'nginx'");
  for (const std::string bad : {"nginx; rm -rf /", "$(reboot)", "`reboot`", "nginx\nreboot", "", "a b"}) {
    std::string params = "{\"service\":";
    common::append_json_string(params, bad);
    params += "}";
    websocket::close_reason reason;
    const auto events = run(run_request("restart_service", params), &reason);
    const auto err = error_of(events);
    EXPECT_EQ(err.code, error_code::bad_params) << bad;
    EXPECT_EQ(reason.code, websocket::close_code::policy_error);
    EXPECT_TRUE(of_type<common::started_event>(events).empty()) << "ran with " << bad;
  }
  EXPECT_EQ(error_of(run(run_request("restart_service"))).code, error_code::bad_params);  // missing
  EXPECT_EQ(error_of(run(run_request("restart_service", R"({"service":"x","other":"y"})"))).code, error_code::bad_params);
}

TEST_F(Server, RejectsWhatIsNotWhitelisted) {
  const auto mismatch = error_of(run(R"({"action_type":"lines","command":"rm -rf /"})"));
  EXPECT_EQ(mismatch.code, error_code::not_whitelisted);
  EXPECT_EQ(mismatch.message, "Command not whitelisted");
  EXPECT_EQ(error_of(run(run_request("format_disk"))).code, error_code::unknown_action);
  ws_client c(port(), "/machines/nonesuch/commands/stream");
  c.send(run_request("lines"));
  EXPECT_EQ(error_of(c.all()).code, error_code::unknown_machine);
  // A command field equal to the resolved command is accepted.
  const auto same = run(R"({"action_type":"restart_service","params":{"service":"ok"},"command":"echo restarting 'ok'"})");
  EXPECT_EQ(text_of(same, common::output_stream::out), "restarting ok\n");
}

TEST_F(Server, RejectsMalformedAndOversizedRequests) {
  websocket::close_reason reason;
  const auto bad = error_of(run("{not json", &reason));
  EXPECT_EQ(bad.code, error_code::bad_request);
  EXPECT_NE(bad.message.find("malformed JSON"), std::string::npos);
  EXPECT_EQ(reason.code, websocket::close_code::policy_error);
  EXPECT_EQ(error_of(run(R"({"action_type":42})")).code, error_code::bad_request);
  EXPECT_EQ(error_of(run(R"({"type":"cancel"})")).code, error_code::bad_request);

  ws_client c(port(), "/machines/box/commands/stream");
  c.send(R"({"action_type":"lines","params":{"x":")" + std::string(100000, 'a') + "\"}}");
  EXPECT_TRUE(c.all().empty());
  EXPECT_EQ(c.reason().code, websocket::close_code::too_big);
}

TEST_F(Server, SpeaksWebSocketToTheLetter) {
  // A ping is answered with a pong that carries its payload, and a request may come in fragments.
  ws_client c(port(), "/machines/box/commands/stream");
  std::string pong;
  c.stream().control_callback([&](websocket::frame_type kind, beast::string_view payload) {
    if (kind == websocket::frame_type::pong) pong = std::string(payload);
  });
  c.stream().ping("are you there");
  const std::string request = run_request("lines");
  c.stream().write_some(false, net::buffer(request.substr(0, 5)));
  c.stream().write_some(true, net::buffer(request.substr(5)));
  const auto events = c.all();
  EXPECT_EQ(pong, "are you there");
  EXPECT_EQ(of_type<common::exit_event>(events).size(), 1u);
  EXPECT_EQ(c.reason().code, websocket::close_code::normal);

  // Binary messages and text that is not UTF-8 are closed with their codes, nothing run.
  ws_client binary(port(), "/machines/box/commands/stream");
  binary.stream().binary(true);
  binary.send(request);
  EXPECT_TRUE(binary.all().empty());
  EXPECT_EQ(binary.reason().code, websocket::close_code::unknown_data);
  ws_client not_utf8(port(), "/machines/box/commands/stream");
  not_utf8.send("{\"action_type\":\"\xC3\x28\"}");
  EXPECT_TRUE(not_utf8.all().empty());
  EXPECT_EQ(not_utf8.reason().code, websocket::close_code::bad_payload);

  // An unmasked frame (a client must mask) is a protocol error: a close 1002, then the end.
  net::io_context io;
  tcp::socket s(io);
  s.connect({net::ip::make_address("127.0.0.1"), port()});
  // The 101 first, as a client must.
  std::string received = raw_upgrade(s, "/machines/box/commands/stream", operator_token).rest;
  net::write(s, net::buffer(std::string("\x81\x02{}", 4)));
  char buf[4096];
  boost::system::error_code ec;
  while (!ec) {
    const auto n = s.read_some(net::buffer(buf), ec);
    received.append(buf, n);
  }
  EXPECT_EQ(ec, net::error::eof) << ec.message();
  // A close frame with code 1002 and the reason.
  ASSERT_GT(received.size(), 4u);
  EXPECT_EQ(received[0], '\x88');
  EXPECT_EQ(received.substr(2, 2), "\x03\xEA");
  EXPECT_EQ(received.substr(4), "client frames must be masked");
}

TEST_F(Server, APeerThatBreaksTheProtocolAndGoesOnSendingIsCutOff) {
  // After a protocol error the server sends its close and drops what still comes; a peer that
  // never stops sending is cut off a few seconds later rather than held forever.
  net::io_context io;
  tcp::socket s(io);
  s.connect({net::ip::make_address("127.0.0.1"), port()});
  raw_upgrade(s, "/machines/box/commands/stream", operator_token);
  net::write(s, net::buffer(std::string("\x81\x02{}", 4)));  // unmasked: a protocol error
  const std::string junk(1024, 'j');
  boost::system::error_code ec;
  for (const auto give_up = clock_type::now() + std::chrono::seconds(30); !ec && clock_type::now() < give_up;) {
    net::write(s, net::buffer(junk), ec);
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_TRUE(ec == net::error::connection_reset || ec == net::error::broken_pipe) << ec.message();
}

TEST_F(Server, APeerThatPingsWithoutReadingCannotGrowTheQueue) {
  // 200,000 pings of 125 bytes (26 MB), none of the pongs read until the end: once the socket
  // is full, the one pong waiting in the queue answers the newest ping instead of a new one
  // being queued for each (RFC 6455 5.5.3). What arrives is a few MB of pongs, the last of
  // which answers the last ping.
  net::io_context io;
  tcp::socket s(io);
  s.open(tcp::v4());
  s.set_option(net::socket_base::receive_buffer_size(4096));
  s.connect({net::ip::make_address("127.0.0.1"), port()});
  std::string received = raw_upgrade(s, "/machines/box/commands/stream", operator_token).rest;
  char buf[65536];
  constexpr int pings = 200000;
  const auto payload = [](int i) {
    std::string p = std::to_string(i);
    p.resize(125, '.');
    return p;
  };
  std::string flood;
  for (int i = 0; i < pings; ++i) {
    flood += std::string("\x89\xFD\0\0\0\0", 6);  // ping, masked (with a zero mask), 125 bytes
    flood += payload(i);
  }
  const auto before = ws_bytes_in(port());
  net::write(s, net::buffer(flood));
  // Only once the server has handled every ping, read: the pongs until the one that answers
  // the last ping.
  wait_until_read(port(), before, flood.size());
  int pongs = 0;
  std::string last;
  while (last != payload(pings - 1)) {
    received.append(buf, s.read_some(net::buffer(buf)));
    std::size_t at = 0;
    for (; received.size() - at >= 127; at += 127) {
      ASSERT_EQ(received.substr(at, 2), "\x8A\x7D");  // a pong of 125 bytes
      last = received.substr(at + 2, 125);
      ++pongs;
    }
    received.erase(0, at);
  }
  EXPECT_LT(pongs, pings / 2);
}

TEST_F(Server, AClientThatSendsWithoutReadingCannotGrowTheQueueWithAnswers) {
  // 400,000 malformed messages while watching a silent command, nothing read meanwhile: each
  // would get an error answer (36 MB of them), but answers stop once the watcher's queue
  // bound is reached (and the socket buffers are full: the client keeps its receive buffer
  // small). A ping after the flood marks where the answers end: its pong comes behind them.
  const auto started = http_request(port(), http::verb::post, "/machines/box/commands", operator_token,
                                    run_request("forever"));
  const std::string id = common::decode_run_accepted(started.body)->execution_id;
  ws_client c(port(), "/executions/" + id + "/stream", {.receive_buffer = 4096});
  std::size_t errors = 0, answers_before_pong = 0;
  bool pong = false;
  c.stream().control_callback([&](websocket::frame_type kind, beast::string_view) {
    if (kind != websocket::frame_type::pong || pong) return;
    pong = true;
    answers_before_pong = errors;
    http_request(port(), http::verb::post, "/executions/" + id + "/cancel", operator_token);  // to end it
  });
  // First what comes on joining: the started event, the newcomer's watcher count and
  // everyone's once it has settled, and the command's one line. Nothing more comes from the
  // command until it is cancelled.
  int counts = 0;
  bool line = false;
  while (counts < 2 || !line) {
    const auto e = common::decode_event(*c.next());
    ASSERT_TRUE(e.ok());
    counts += std::holds_alternative<common::watchers_event>(*e);
    line = line || std::holds_alternative<common::output_event>(*e);
  }
  constexpr int messages = 400000;
  const auto before = ws_bytes_in(port());
  for (int i = 0; i < messages; ++i) c.send("x");
  c.stream().ping("after the flood");
  // Only once the server has handled it all, read (7 bytes a masked "x", 21 the ping).
  wait_until_read(port(), before, messages * 7u + 21u);
  while (auto m = c.next()) {
    const auto e = common::decode_event(*m);
    if (e.ok() && std::holds_alternative<common::error_event>(*e)) ++errors;
  }
  ASSERT_TRUE(pong);
  EXPECT_GT(answers_before_pong, 0u);
  EXPECT_LT(answers_before_pong, static_cast<std::size_t>(messages / 2));
  EXPECT_EQ(c.reason().code, websocket::close_code::normal);
}

TEST_F(Server, AuthIsRequiredAndRolesAreEnforced) {
  for (const std::string token : {"", "wrong-token"}) {
    ws_client c(port(), "/machines/box/commands/stream", {.token = token});
    c.send(run_request("lines"));
    EXPECT_EQ(error_of(c.all()).code, error_code::unauthorized);
    EXPECT_EQ(c.reason().code, websocket::close_code::policy_error);
    EXPECT_EQ(http_request(port(), http::verb::get, "/machines", token).status, 401u);
  }
  ws_client viewer(port(), "/machines/box/commands/stream", {.token = viewer_token});
  viewer.send(run_request("lines"));
  EXPECT_EQ(error_of(viewer.all()).code, error_code::forbidden);
  EXPECT_EQ(http_request(port(), http::verb::get, "/machines", viewer_token).status, 200u);
  EXPECT_EQ(http_request(port(), http::verb::get, "/me", viewer_token).body, R"({"user":"victor","role":"viewer"})");
  EXPECT_EQ(http_request(port(), http::verb::get, "/me", operator_token).body, R"({"user":"olivia","role":"operator"})");
  EXPECT_EQ(http_request(port(), http::verb::get, "/me", "").status, 401u);
  // The browser way: the token as a subprotocol, which the server answers with cmdcast.v1.
  ws_client browser(port(), "/machines/box/commands/stream",
                    {.token = operator_token, .token_as_subprotocol = true, .origin = "http://allowed.example"});
  EXPECT_EQ(browser.response()[http::field::sec_websocket_protocol], "cmdcast.v1");
  browser.send(run_request("fail"));
  EXPECT_EQ(of_type<common::exit_event>(browser.all()).size(), 1u);
  EXPECT_EQ(http_request(port(), http::verb::get, "/healthz", "").body, "ok");
}

TEST_F(Server, RefusesABrowserFromAnotherOrigin) {
  ws_client c(port(), "/machines/box/commands/stream", {.origin = "http://evil.example"});
  c.send(run_request("lines"));
  const auto err = error_of(c.all());
  EXPECT_EQ(err.code, error_code::forbidden);
  EXPECT_NE(err.message.find("evil.example"), std::string::npos);
}

TEST_F(Server, SeveralWatchersGetIdenticalStreams) {
  ws_client runner(port(), "/machines/box/commands/stream");
  runner.send(run_request("lines"));
  const auto first = common::decode_event(*runner.next());
  ASSERT_TRUE(first.ok());
  const std::string id = std::get<common::started_event>(*first).execution_id;
  ws_client a(port(), "/executions/" + id + "/stream?after=-1", {.token = viewer_token});
  ws_client b(port(), "/executions/" + id + "/stream");
  std::vector<event> from_runner = {*first};
  for (auto& e : runner.all()) from_runner.push_back(e);
  const auto from_a = a.all();
  const auto from_b = b.all();
  EXPECT_EQ(sequenced(from_a), sequenced(from_runner));
  EXPECT_EQ(sequenced(from_b), sequenced(from_runner));
  EXPECT_EQ(text_of(from_a, common::output_stream::out), "line 1\nline 2\nline 3\n");
  // Watcher counts are pushed live.
  const auto counts = of_type<common::watchers_event>(from_runner);
  ASSERT_FALSE(counts.empty());
  EXPECT_EQ(std::max_element(counts.begin(), counts.end(), [](auto& x, auto& y) { return x.count < y.count; })->count, 3);
}

TEST_F(Server, TwoHundredWatchersOfOneExecutionGetTheSameStream) {
  ws_client runner(port(), "/machines/box/commands/stream");
  runner.send(run_request("slow"));
  const auto first = common::decode_event(*runner.next());
  ASSERT_TRUE(first.ok());
  const std::string id = std::get<common::started_event>(*first).execution_id;
  std::vector<std::unique_ptr<ws_client>> watchers;
  for (int i = 0; i < 200; ++i) {
    watchers.push_back(std::make_unique<ws_client>(port(), "/executions/" + id + "/stream", ws_options{.token = viewer_token}));
  }
  std::vector<event> expected = {*first};
  for (auto& e : runner.all()) expected.push_back(e);
  std::int64_t most = 0;
  for (const auto& c : of_type<common::watchers_event>(expected)) most = std::max(most, c.count);
  EXPECT_GE(most, 2);  // the runner saw others join (how many depends on timing)
  for (auto& w : watchers) {
    const auto got = w->all();
    ASSERT_EQ(sequenced(got), sequenced(expected));
    EXPECT_EQ(w->reason().code, websocket::close_code::normal);
  }
  EXPECT_EQ(text_of(expected, common::output_stream::out), "started\nfinished\n");
}

TEST_F(Server, TwelveHundredWatchersAreAllToldTheCountThoughItGoesOutASliceAtATime) {
  // The count goes to 1,000 live watchers per turn of the server's loop: those past the first
  // slice (the later joiners, told a smaller count when they joined) must get it too.
  ws_client runner(port(), "/machines/box/commands/stream");
  runner.send(run_request("forever"));
  const auto first = common::decode_event(*runner.next());
  ASSERT_TRUE(first.ok());
  const std::string id = std::get<common::started_event>(*first).execution_id;
  constexpr std::int64_t joining = 1199;
  std::vector<std::unique_ptr<ws_client>> watchers;
  for (std::int64_t i = 0; i < joining; ++i) {
    watchers.push_back(std::make_unique<ws_client>(port(), "/executions/" + id + "/stream", ws_options{.token = viewer_token}));
  }
  // The last to join first: had the second slice never gone out, this would wait for ever
  // (and the test time out).
  for (auto w = watchers.rbegin(); w != watchers.rend(); ++w) {
    std::int64_t count = 0;
    while (count != joining + 1) {
      const auto m = (*w)->next();
      ASSERT_TRUE(m) << "closed before the count of " << joining + 1 << " came";
      const auto e = common::decode_event(*m);
      ASSERT_TRUE(e.ok()) << *m;
      if (const auto* c = std::get_if<common::watchers_event>(&*e)) count = c->count;
    }
  }
  runner.send(R"({"type":"cancel"})");
  EXPECT_EQ(of_type<common::exit_event>(runner.all()).at(0).state, common::exit_state::cancelled);
}

TEST_F(Server, AMachineAtItsLimitAnswersBusy) {
  std::vector<std::unique_ptr<ws_client>> running;
  for (int i = 0; i < 8; ++i) {  // max_executions_per_machine defaults to 8
    running.push_back(std::make_unique<ws_client>(port(), "/machines/box/commands/stream"));
    running.back()->send(run_request("forever"));
    ASSERT_TRUE(running.back()->next());  // started
  }
  websocket::close_reason reason;
  const auto refused = run(run_request("lines"), &reason);
  EXPECT_EQ(error_of(refused).code, error_code::busy);
  EXPECT_EQ(reason.code, websocket::close_code::policy_error);
  for (auto& r : running) r->send(R"({"type":"cancel"})");
  for (auto& r : running) EXPECT_EQ(of_type<common::exit_event>(r->all()).at(0).state, common::exit_state::cancelled);
  // Once they ended, the machine takes commands again.
  EXPECT_EQ(of_type<common::exit_event>(run(run_request("fail"))).at(0).code, 3);
}

TEST_F(Server, ADisconnectLeavesTheCommandRunning) {
  std::string id;
  {
    ws_client c(port(), "/machines/box/commands/stream");
    c.send(run_request("slow"));
    id = std::get<common::started_event>(*common::decode_event(*c.next())).execution_id;
  }  // the only watcher goes away mid-command
  ws_client later(port(), "/executions/" + id + "/stream?after=0");
  const auto events = later.all();
  EXPECT_EQ(text_of(events, common::output_stream::out), "started\nfinished\n");
  const auto exits = of_type<common::exit_event>(events);
  ASSERT_EQ(exits.size(), 1u);
  EXPECT_EQ(exits[0].code, 0);
  // after=0: the started event is not sent again.
  EXPECT_TRUE(of_type<common::started_event>(events).empty());
  const auto answer = http_request(port(), http::verb::get, "/executions/" + id, viewer_token);
  const auto rec = common::decode_execution_record(answer.body);
  ASSERT_TRUE(rec.ok()) << rec.error() << ": " << answer.body;
  EXPECT_EQ(rec->state, "exited");
  EXPECT_EQ(rec->bytes_stdout, 17);  // "started\nfinished\n"
}

TEST_F(Server, CancelOverTheWebSocketAndOverHttp) {
  ws_client c(port(), "/machines/box/commands/stream");
  c.send(run_request("forever"));
  const std::string id = std::get<common::started_event>(*common::decode_event(*c.next())).execution_id;
  // A viewer may not cancel.
  ws_client v(port(), "/executions/" + id + "/stream", {.token = viewer_token});
  v.send(R"({"type":"cancel"})");
  EXPECT_EQ(http_request(port(), http::verb::post, "/executions/" + id + "/cancel", viewer_token).status, 403u);
  c.send(R"({"type":"cancel"})");
  const auto events = c.all();
  const auto exits = of_type<common::exit_event>(events);
  ASSERT_EQ(exits.size(), 1u);
  EXPECT_EQ(exits[0].state, common::exit_state::cancelled);
  EXPECT_EQ(exits[0].signal, "TERM") << "exit code " << exits[0].code.value_or(-1);
  const auto viewer_events = v.all();
  const auto viewer_errors = of_type<common::error_event>(viewer_events);
  ASSERT_EQ(viewer_errors.size(), 1u);
  EXPECT_EQ(viewer_errors[0].code, error_code::forbidden);

  ws_client d(port(), "/machines/box/commands/stream");
  d.send(run_request("forever"));
  const std::string id2 = std::get<common::started_event>(*common::decode_event(*d.next())).execution_id;
  EXPECT_EQ(http_request(port(), http::verb::post, "/executions/" + id2 + "/cancel", operator_token).status, 202u);
  EXPECT_EQ(of_type<common::exit_event>(d.all()).at(0).state, common::exit_state::cancelled);
}

TEST_F(Server, ProgramsThatBufferTheirOutputStillStreamLineByLine) {
  ws_client c(port(), "/machines/box/commands/stream");
  c.send(run_request("python_buffered"));
  std::optional<clock_type::time_point> first_at, second_at;
  while (auto m = c.next()) {
    auto e = common::decode_event(*m);
    if (auto* o = std::get_if<common::output_event>(&*e)) {
      if (o->data.find("first") != std::string::npos) first_at = clock_type::now();
      if (o->data.find("second") != std::string::npos) second_at = clock_type::now();
    }
  }
  ASSERT_TRUE(first_at && second_at);
  EXPECT_GT(*second_at - *first_at, std::chrono::milliseconds(1000)) << "python's first line came only at the end";
}

TEST_F(Server, OutputIsValidUtf8WhereverTheReadsSplitIt) {
  // ✓ (E2 9C 93) split by a pause between two reads; an invalid byte (FF); then 600,001 bytes
  // of "é\n" in reads of 256 KiB to 1 MiB, which split some é, and end half-way through one.
  const auto events = run(run_request("utf8_edges"));
  std::string expected = "a✓b\xEF\xBF\xBD" "c\n";
  for (int i = 0; i < 200000; ++i) expected += "é\n";
  expected += "\xEF\xBF\xBD";
  const std::string got = text_of(events, common::output_stream::out);
  EXPECT_EQ(got.size(), expected.size());
  const auto agree = std::mismatch(got.begin(), got.end(), expected.begin(), expected.end()).first - got.begin();
  EXPECT_TRUE(got == expected) << "the first " << agree << " bytes agree";
  EXPECT_EQ(of_type<common::exit_event>(events).size(), 1u);
}

TEST_F(Server, LateJoinersGetTheReplayAndUnknownExecutionsAreRefused) {
  const auto events = run(run_request("fail"));
  const std::string id = of_type<common::started_event>(events).at(0).execution_id;
  ws_client late(port(), "/executions/" + id + "/stream?after=1");
  const auto replay = late.all();
  ASSERT_FALSE(replay.empty());
  EXPECT_EQ(common::event_seq(replay.front()), 2);
  const auto all_sequenced = sequenced(events);
  EXPECT_EQ(sequenced(replay), std::vector<event>(all_sequenced.begin() + 2, all_sequenced.end()));
  ws_client bad_after(port(), "/executions/" + id + "/stream?after=abc");
  EXPECT_EQ(error_of(bad_after.all()).code, error_code::bad_request);
  ws_client unknown(port(), "/executions/no-such-id/stream");
  EXPECT_EQ(error_of(unknown.all()).code, error_code::unknown_execution);
  EXPECT_EQ(http_request(port(), http::verb::get, "/executions/no-such-id", viewer_token).status, 404u);
}

TEST_F(Server, ListsMachinesAndExecutions) {
  auto machines = common::decode_machines(http_request(port(), http::verb::get, "/machines", viewer_token).body);
  ASSERT_TRUE(machines.ok()) << machines.error();
  ASSERT_EQ(machines->size(), 1u);
  EXPECT_EQ(machines->at(0).id, "box");
  std::map<std::string, common::action_info> actions;
  for (const auto& a : machines->at(0).actions) actions[a.name] = a;
  EXPECT_EQ(actions.size(), 22u);
  EXPECT_EQ(actions["restart_service"].params.at("service"), "^[a-z0-9@._-]{1,64}$");
  EXPECT_EQ(actions["apt_reinstall"].progress, "apt");
  EXPECT_FALSE(actions["lines"].progress);
  run(run_request("fail"));
  auto all = common::decode_execution_records(http_request(port(), http::verb::get, "/executions?state=all", viewer_token).body);
  ASSERT_TRUE(all.ok()) << all.error();
  EXPECT_FALSE(all->empty());
  EXPECT_EQ(http_request(port(), http::verb::get, "/executions?state=bogus", viewer_token).status, 400u);
  const auto metrics = http_request(port(), http::verb::get, "/metrics", viewer_token).body;
  EXPECT_NE(metrics.find("cmdcast_executions{state=\"exited\"}"), std::string::npos) << metrics;
  // The log names users and actions, never a token.
  const std::string log = shared_.server->log();
  EXPECT_NE(log.find("\"user\":\"olivia\""), std::string::npos);
  EXPECT_EQ(log.find(operator_token), std::string::npos);
  EXPECT_EQ(log.find(viewer_token), std::string::npos);
}

/// Runs the cmdcast CLI with the operator token, as a user would in a shell.
program_result cmdcast_cli(const std::string& args) { return run_program(std::string(CMDCAST_CLI_BINARY) + " " + args); }

TEST_F(Server, TheCliStreamsBothStreamsAndExitsWithTheRemoteCode) {
  const std::string server = "127.0.0.1:" + std::to_string(port());
  const auto compressed_before = metric(port(), "cmdcast_websockets_compressed_total");
  const auto ok = cmdcast_cli("run " + server + " box restart_service service=nginx");
  EXPECT_EQ(ok.status, 0) << ok.err;
  EXPECT_EQ(ok.out, "restarting nginx\n");
  EXPECT_EQ(metric(port(), "cmdcast_websockets_compressed_total"), compressed_before + 1) << "the CLI offers compression";
  const auto failing = cmdcast_cli("run http://" + server + " box fail");
  EXPECT_EQ(failing.status, 3);
  EXPECT_EQ(failing.out, "");
  EXPECT_NE(failing.err.find("oops\n"), std::string::npos) << failing.err;
  const auto bad = cmdcast_cli("run " + server + " box restart_service 'service=x; reboot'");
  EXPECT_EQ(bad.status, 2);
  EXPECT_NE(bad.err.find("bad_params"), std::string::npos) << bad.err;
  // watch: attach to a finished execution and replay it.
  const auto events = run(run_request("lines"));
  const std::string id = of_type<common::started_event>(events).at(0).execution_id;
  const auto watched = cmdcast_cli("watch " + server + " " + id);
  EXPECT_EQ(watched.status, 0);
  EXPECT_EQ(watched.out, "line 1\nline 2\nline 3\n");
  EXPECT_EQ(watched.err, "done\n");
  EXPECT_EQ(cmdcast_cli("frobnicate").status, 2);
}

/// The newest execution of `action` in `state`, or the one `id` when given (waits up to 20 s for
/// it to be there).
std::string newest_in_state(std::uint16_t port, const std::string& action, const std::string& state,
                            const std::string& id = "") {
  const auto deadline = clock_type::now() + std::chrono::seconds(20);
  while (clock_type::now() < deadline) {
    const auto list = common::decode_execution_records(
        http_request(port, http::verb::get, "/executions?state=" + state + "&machine=box", viewer_token).body);
    if (list) {
      for (const auto& r : *list) {
        if (r.action_type == action && (id.empty() || r.execution_id == id)) return r.execution_id;
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ADD_FAILURE() << "no " << action << " became " << state;
  return "";
}

TEST_F(Server, TheCliListsMachinesAndExecutions) {
  const std::string server = "127.0.0.1:" + std::to_string(port());
  const auto machines = cmdcast_cli("machines " + server);
  EXPECT_EQ(machines.status, 0) << machines.err;
  EXPECT_TRUE(machines.out.starts_with("box\n")) << machines.out;
  // An action's line: its name, padded to the longest, then its params and marks.
  const auto line_of = [&](const std::string& action) {
    const auto at = machines.out.find("\n  " + action + " ");
    if (at == std::string::npos) return std::string();
    const auto end = machines.out.find('\n', at + 1);
    const std::string line = machines.out.substr(at + 3 + action.size(), end - at - 3 - action.size());
    return line.substr(line.find_first_not_of(' '));
  };
  EXPECT_EQ(line_of("restart_service"), "service=^[a-z0-9@._-]{1,64}$") << machines.out;
  EXPECT_EQ(line_of("secret_echo"), "token=^[A-Za-z0-9]{20,64}$ (secret)") << machines.out;
  EXPECT_EQ(line_of("exclusive_refuse"), "tag=^[a-z0-9]{1,16}$  [exclusive]") << machines.out;
  EXPECT_EQ(line_of("approval_expires"), "[needs approval]") << machines.out;
  EXPECT_EQ(line_of("apt_reinstall"), "package=^[a-z0-9][a-z0-9+.-]{0,63}$  [progress: apt]") << machines.out;
  EXPECT_NE(machines.out.find("\n  lines\n"), std::string::npos) << machines.out;

  const std::string failed = post_run(port(), run_request("fail"));
  newest_in_state(port(), "fail", "exited", failed);  // (an earlier test's may be there too)
  const auto ls = cmdcast_cli("ls " + server + " --machine box --state exited --limit 1");
  EXPECT_EQ(ls.status, 0) << ls.err;
  EXPECT_TRUE(ls.out.starts_with("ID ")) << ls.out;
  std::istringstream row(ls.out.substr(ls.out.find('\n') + 1));
  std::vector<std::string> cells;
  for (std::string cell; row >> cell && cells.size() < 6;) cells.push_back(cell);
  EXPECT_EQ(cells, (std::vector<std::string>{failed, "box", "fail", "olivia", "exited", "3"})) << ls.out;
  EXPECT_EQ(std::count(ls.out.begin(), ls.out.end(), '\n'), 2) << "the header and one row";
  const auto none = cmdcast_cli("ls " + server + " --state expired");
  EXPECT_EQ(none.status, 0);
  EXPECT_EQ(none.out, "");
  EXPECT_EQ(none.err, "cmdcast: no executions\n");
  // The server's error object, as CODE: message; a bad state is the CLI's own usage error.
  const auto unknown = cmdcast_cli("ls " + server + " --machine nope");
  EXPECT_EQ(unknown.status, 2);
  EXPECT_TRUE(unknown.err.starts_with("cmdcast: unknown_machine: ")) << unknown.err;
  const auto bad = cmdcast_cli("ls " + server + " --state sleeping");
  EXPECT_EQ(bad.status, 2);
  EXPECT_NE(bad.err.find("usage: cmdcast run"), std::string::npos) << bad.err;
}

TEST_F(Server, TheCliDownloadsAndFollowsTheOutput) {
  const std::string server = "127.0.0.1:" + std::to_string(port());
  const std::string coloured = "a \x1b[31mred\x1b[0m word\nprogress 10%\rprogress 100%\nlast";
  std::string params = "{\"value\":";
  common::append_json_string(params, coloured);
  const std::string id = post_run(port(), run_request("echo_value", params + "}"));
  newest_in_state(port(), "echo_value", "exited", id);
  // Not a terminal: text by default.
  const auto text = cmdcast_cli("logs " + server + " " + id);
  EXPECT_EQ(text.status, 0) << text.err;
  EXPECT_EQ(text.out, "a red word\nprogress 100%\nlast\n");
  const auto ansi = cmdcast_cli("logs " + server + " " + id + " --format ansi");
  EXPECT_EQ(ansi.out, coloured);
  const auto ndjson = cmdcast_cli("logs " + server + " " + id + " --format=ndjson");
  EXPECT_TRUE(ndjson.out.starts_with("{\"type\":\"started\"")) << ndjson.out;
  const auto timed = cmdcast_cli("logs " + server + " " + id + " --timestamps");
  EXPECT_EQ(timed.status, 0);
  EXPECT_NE(timed.out, text.out);
  EXPECT_NE(timed.out.find("a red word\n"), std::string::npos) << timed.out;
  // --follow: from the start of a run that is still going, to its end.
  const std::string slow = post_run(port(), run_request("slow"));
  const auto start = clock_type::now();
  const auto followed = cmdcast_cli("logs " + server + " " + slow + " --follow");
  EXPECT_EQ(followed.status, 0) << followed.err;
  EXPECT_EQ(followed.out, "started\nfinished\n");
  EXPECT_GE(clock_type::now() - start, std::chrono::milliseconds(1000)) << "it waited for the end";
  const auto missing = cmdcast_cli("logs " + server + " no-such-execution");
  EXPECT_EQ(missing.status, 2);
  EXPECT_TRUE(missing.err.starts_with("cmdcast: unknown_execution: ")) << missing.err;
}

TEST_F(Server, TheCliApprovesAndRejectsOnlyAnotherOperatorsRun) {
  const std::string server = "127.0.0.1:" + std::to_string(port());
  const std::string id = post_run(port(), run_request("approved_echo", R"({"word":"hi"})"));
  // run_program's token is olivia's, who asked for it.
  const auto own = cmdcast_cli("approve " + server + " " + id);
  EXPECT_EQ(own.status, 2);
  EXPECT_TRUE(own.err.starts_with("cmdcast: forbidden: ")) << own.err;
  EXPECT_EQ(record_of(port(), id).state, "awaiting_approval");
  const auto approved = cmdcast_cli("approve " + server + " " + id + " --token " + second_operator_token);
  EXPECT_EQ(approved.status, 0) << approved.err;
  EXPECT_TRUE(approved.out.starts_with(id + ": ")) << approved.out;
  EXPECT_NE(approved.out.find(" (approved by oscar)\n"), std::string::npos) << approved.out;
  const std::string other = post_run(port(), run_request("approved_echo", R"({"word":"no"})"));
  const auto rejected = cmdcast_cli("reject " + server + " " + other + " --token " + second_operator_token);
  EXPECT_EQ(rejected.status, 0) << rejected.err;
  EXPECT_EQ(rejected.out, other + ": rejected (by oscar)\n");
  const auto again = cmdcast_cli("reject " + server + " " + other + " --token " + second_operator_token);
  EXPECT_EQ(again.status, 2);
  EXPECT_TRUE(again.err.starts_with("cmdcast: bad_request: ")) << again.err;
}

TEST_F(Server, TheCliRunSaysItAwaitsApprovalAndWaits) {
  const std::string server = "127.0.0.1:" + std::to_string(port());
  auto run = std::async(std::launch::async, [&] { return cmdcast_cli("run " + server + " box approved_echo word=later"); });
  const std::string id = newest_in_state(port(), "approved_echo", "awaiting_approval");
  std::this_thread::sleep_for(std::chrono::milliseconds(300));  // it waits
  EXPECT_EQ(run.wait_for(std::chrono::seconds(0)), std::future_status::timeout);
  EXPECT_EQ(http_request(port(), http::verb::post, "/executions/" + id + "/approve", second_operator_token).status, 200u);
  const auto done = run.get();
  EXPECT_EQ(done.status, 0) << done.err;
  EXPECT_EQ(done.out, "approved run later\n");
  EXPECT_NE(done.err.find("cmdcast: waiting for another operator to approve (expires "), std::string::npos) << done.err;
  EXPECT_NE(done.err.find("); cmdcast approve " + server + " " + id + "\n"), std::string::npos) << done.err;
  // Rejected: said, and exit status 1.
  auto refused = std::async(std::launch::async, [&] { return cmdcast_cli("run " + server + " box approved_echo word=never"); });
  const std::string other = newest_in_state(port(), "approved_echo", "awaiting_approval");
  EXPECT_EQ(http_request(port(), http::verb::post, "/executions/" + other + "/reject", second_operator_token).status, 200u);
  const auto no = refused.get();
  EXPECT_EQ(no.status, 1);
  EXPECT_EQ(no.out, "");
  EXPECT_NE(no.err.find("cmdcast: rejected (another operator refused it; it never ran)\n"), std::string::npos) << no.err;
}

TEST_F(Server, TheCliRunSaysItIsQueuedBehindAnExclusiveActionAndWaits) {
  const std::string server = "127.0.0.1:" + std::to_string(port());
  const std::string first_go = "/tmp/cmdcast-go-cli" + std::to_string(::getpid()) + "a";
  const std::string second_go = "/tmp/cmdcast-go-cli" + std::to_string(::getpid()) + "b";
  const std::string first =
      post_run(port(), run_request("exclusive_wait", R"({"tag":"first","go":")" + first_go + R"("})"));
  newest_in_state(port(), "exclusive_wait", "running");
  std::ofstream(second_go) << "go";  // the second would end at once, once it runs
  auto run = std::async(std::launch::async, [&] {
    return cmdcast_cli("run " + server + " box exclusive_wait tag=second go=" + second_go);
  });
  newest_in_state(port(), "exclusive_wait", "queued");
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  EXPECT_EQ(run.wait_for(std::chrono::seconds(0)), std::future_status::timeout) << "queued, it waits";
  std::ofstream(first_go) << "go";
  const auto done = run.get();
  std::filesystem::remove(first_go);
  std::filesystem::remove(second_go);
  EXPECT_EQ(done.status, 0) << done.err;
  EXPECT_EQ(done.out, "start second\nend second\n");
  EXPECT_NE(done.err.find("cmdcast: queued behind the machine's running exclusive action (position 1)\n"),
            std::string::npos)
      << done.err;
  EXPECT_EQ(record_of(port(), first).state, "exited");
}

/// A server with tight limits: watchers per execution; a large replay buffer, so that a
/// watcher far behind misses nothing; a web root.
class Limits : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    shared_.start([](const std::string& dir) {
      const std::string web = dir + "/web";
      std::filesystem::create_directories(web);
      std::ofstream(web + "/index.html") << "<!doctype html><title>cmdcast</title>";
      std::ofstream(web + "/app.wasm") << std::string("\0asm", 4);
      std::ofstream(web + "/app.js") << "console.log('plain')";
      std::ofstream(web + "/app.js.gz") << "pretend-gzip";
      return "max_subscribers_per_execution = 3\nweb_root = \"" + web + "\"\nreplay_bytes = 67108864\n";
    });
  }
  static void TearDownTestSuite() { shared_.stop(); }
  static std::uint16_t port() { return shared_.port(); }
  static inline shared_server shared_;
};

TEST_F(Limits, AStalledWatcherWithinTheReplayWindowMissesNothing) {
  ws_client runner(port(), "/machines/box/commands/stream");
  runner.send(run_request("flood"));
  const auto first = runner.next();
  ASSERT_TRUE(first);
  const std::string id = std::get<common::started_event>(*common::decode_event(*first)).execution_id;
  ws_client stalled(port(), "/executions/" + id + "/stream?after=-1", ws_options{.token = viewer_token});
  auto expected = runner.all();
  expected.insert(expected.begin(), *common::decode_event(*first));
  // Only now does the stalled watcher read: it fell behind, and the replay buffer (64 MiB
  // here) still held all it missed, so it gets it all, then the end.
  const auto got = stalled.all();
  EXPECT_EQ(stalled.reason().code, websocket::close_code::normal);
  EXPECT_EQ(sequenced(got), sequenced(expected));
  EXPECT_TRUE(of_type<common::gap_event>(got).empty());
  EXPECT_EQ(text_of(got, common::output_stream::out).size(), 30000000u);
}

TEST_F(Limits, AnExecutionRefusesWatchersPastItsLimit) {
  ws_client runner(port(), "/machines/box/commands/stream");
  runner.send(run_request("slow"));
  const std::string id = std::get<common::started_event>(*common::decode_event(*runner.next())).execution_id;
  ws_client second(port(), "/executions/" + id + "/stream", ws_options{.token = viewer_token});
  ws_client third(port(), "/executions/" + id + "/stream", ws_options{.token = viewer_token});
  ws_client fourth(port(), "/executions/" + id + "/stream", ws_options{.token = viewer_token});
  const auto refused = fourth.all();
  ASSERT_EQ(of_type<common::error_event>(refused).size(), 1u);
  EXPECT_EQ(of_type<common::error_event>(refused)[0].code, error_code::busy);
  EXPECT_EQ(fourth.reason().code, websocket::close_code::policy_error);
  // A poller is a watcher too.
  EXPECT_EQ(http_request(port(), http::verb::get, "/executions/" + id + "/events?wait=1", viewer_token).status, 429u);
  // The three admitted ones get the whole run.
  EXPECT_EQ(of_type<common::exit_event>(third.all()).size(), 1u);
}

TEST(ServerIdle, APeerThatStopsAnsweringIsClosedAfterTheIdleTimeout) {
  loopback_sshd sshd;
  server_process srv(sshd, "idle_timeout_s = 1\n");
  const auto port = [&] { return srv.port(); };
  // Attach by hand to a command that runs for minutes, then silence: no pong to the pings.
  const auto started = http_request(port(), http::verb::post, "/machines/box/commands", operator_token,
                                    run_request("forever"));
  const std::string id = common::decode_run_accepted(started.body)->execution_id;
  net::io_context io;
  tcp::socket s(io);
  s.connect({net::ip::make_address("127.0.0.1"), port()});
  // The server answers (101, the started event, pings this peer never answers), then closes.
  const auto upgrade = raw_upgrade(s, "/executions/" + id + "/stream", viewer_token);
  std::string received = upgrade.head + upgrade.rest;
  char buf[4096];
  boost::system::error_code ec;
  const auto start = clock_type::now();
  while (!ec && clock_type::now() - start < std::chrono::seconds(20)) {
    const auto n = s.read_some(net::buffer(buf), ec);
    received.append(buf, n);
  }
  EXPECT_EQ(ec, net::error::eof) << ec.message();
  EXPECT_NE(received.find("101 Switching Protocols"), std::string::npos);
  EXPECT_NE(received.find(R"("type":"started")"), std::string::npos);
  // The command itself goes on: leaving never stops it.
  EXPECT_EQ(common::decode_execution_record(http_request(port(), http::verb::get, "/executions/" + id, viewer_token).body)
                ->state, "running");
  http_request(port(), http::verb::post, "/executions/" + id + "/cancel", operator_token);
}

TEST(ServerIdle, AWatcherFarBehindButReadingIsKeptPastTheIdleTimeout) {
  // A reader that takes 30 MB at 3 MB/s has megabytes queued for it in the server and its
  // socket: seconds of reading before it sees a ping and answers it. That it takes what was
  // sent (the server sees its backlog acknowledged) shows it is alive, so it is kept past the
  // 4 s idle timeout, to the end (about 10 s). Its receive buffer is small, as the server's
  // rule can only see what its own socket holds (what waits in the reader's kernel is not
  // visible to it). (With 2 s, a test process starved of CPU that long on a loaded machine
  // was, rightly, idle.)
  loopback_sshd sshd;
  server_process srv(sshd, "idle_timeout_s = 4\n");
  ws_client c(srv.port(), "/machines/box/commands/stream", {.receive_buffer = 65536});
  c.send(run_request("flood"));
  std::size_t bytes = 0;
  bool exited = false;
  while (auto m = c.next()) {
    auto e = common::decode_event(*m);
    ASSERT_TRUE(e.ok());
    if (auto* o = std::get_if<common::output_event>(&*e)) bytes += o->data.size();
    exited = exited || std::holds_alternative<common::exit_event>(*e);
    std::this_thread::sleep_for(std::chrono::microseconds(m->size() / 3));  // about 3 MB/s
  }
  EXPECT_EQ(bytes, 30000000u);
  EXPECT_TRUE(exited);
  EXPECT_EQ(c.reason().code, websocket::close_code::normal);
}

TEST_F(Limits, ServesTheWebClientFromItsRoot) {
  const auto index = http_request(port(), http::verb::get, "/", "");
  EXPECT_EQ(index.status, 200u);
  EXPECT_EQ(index.body, "<!doctype html><title>cmdcast</title>");
  EXPECT_EQ(http_request(port(), http::verb::get, "/app.wasm", "").body, std::string("\0asm", 4));
  EXPECT_EQ(http_request(port(), http::verb::get, "/missing.js", "").status, 404u);
  EXPECT_EQ(http_request(port(), http::verb::get, "/app.js", "").body, "console.log('plain')");
  EXPECT_EQ(http_request(port(), http::verb::get, "/app.js", "", "", {{"Accept-Encoding", "gzip, deflate"}}).body,
            "pretend-gzip");
  EXPECT_EQ(http_request(port(), http::verb::get, "/../cmdcast.toml", "").status, 404u);
  EXPECT_EQ(http_request(port(), http::verb::get, "/%2e%2e/cmdcast.toml", "").status, 404u);
  // The API still needs its token.
  EXPECT_EQ(http_request(port(), http::verb::get, "/machines", "").status, 401u);
}

TEST(ServerLifecycle, SigtermDuringARunEndsItCleanly) {
  loopback_sshd sshd;
  server_process srv(sshd);
  ws_client c(srv.port(), "/machines/box/commands/stream");
  c.send(run_request("forever"));
  ASSERT_TRUE(c.next());  // started
  std::thread stopper([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    const int status = srv.terminate();
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  });
  const auto events = c.all();
  stopper.join();
  const auto exits = of_type<common::exit_event>(events);
  ASSERT_EQ(exits.size(), 1u);
  EXPECT_EQ(exits[0].state, common::exit_state::cancelled);
  EXPECT_EQ(c.reason().code, websocket::close_code::normal);
}

TEST(ServerConfig, EveryProblemIsOneLineNamingFileLineColumnAndKey) {
  const std::string none = "tokens: none configured: add [[tokens]] (name, sha256, role), or for a server on loopback "
                           "only, say who everyone is with anonymous = \"operator\" (or \"viewer\") under [server]";
  auto c = server::parse_config("[server]\nlisten = \"127.0.0.1:8080\"\n\n[actions.x]\ncommand = \"echo {who}\"\n", "my.toml");
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.error(), "my.toml:1:1: " + none + "\nmy.toml:5:11: actions.x.command: uses {who} but params has no pattern for it");
  // One mistake does not hide the next: each is reported where it is, in the order of the file.
  auto typo = server::parse_config(
      "[server]\nlisen = \"x\"\nanonymous = \"viewer\"\nmax_connections = -3\n[actions.a]\ncommand = \"x\"\ntimeout_s = 0\n"
      "progres = \"apt\"\n[actions.b]\ncommand = \"echo {v}\"\nparams = { v = \"(\" }\n",
      "t.toml");
  ASSERT_FALSE(typo.ok());
  EXPECT_EQ(typo.error(),
            "t.toml:2:1: server.lisen: unknown key\n"
            "t.toml:4:19: server.max_connections: must be between 1 and 1099511627776\n"
            "t.toml:7:13: actions.a.timeout_s: must be between 1 and 604800\n"
            "t.toml:8:1: actions.a.progres: unknown key\n"
            "t.toml:11:16: actions.b.params.v: is not a valid RE2 pattern: missing ): (");
  auto syntax = server::parse_config("[server\n", "s.toml");
  ASSERT_FALSE(syntax.ok());
  EXPECT_NE(syntax.error().find("s.toml:1:"), std::string::npos) << syntax.error();
  auto machine = server::parse_config("[[machines]]\nid = \"bad id!\"\nhost = \"h\"\nuser = \"u\"\nidentity = \"i\"\nknown_hosts = \"k\"\n", "m.toml");
  ASSERT_FALSE(machine.ok());
  EXPECT_NE(machine.error().find("m.toml:2:6: machines.id"), std::string::npos) << machine.error();
  auto progress = server::parse_config("[actions.a]\ncommand = \"x\"\nprogress = \"yum\"\n", "p.toml");
  ASSERT_FALSE(progress.ok());
  EXPECT_NE(progress.error().find("unknown progress parser"), std::string::npos);
}

}  // namespace
}  // namespace cmdcast::testing
