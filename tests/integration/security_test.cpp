// What a hostile value does to cmdcast-server: params that try to reach the remote shell,
// requests from other sites and other host names, anonymous access, and the bounds that keep
// one client from holding the server. Against the real server process and a loopback sshd.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>
#include <string>
#include <vector>

#include "config/config.hpp"
#include "server_harness.hpp"

namespace cmdcast::testing {
namespace {

using common::error_code;

class Security : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { shared_.start(); }
  static void TearDownTestSuite() { shared_.stop(); }
  static std::uint16_t port() { return shared_.port(); }

  static std::vector<event> run(const std::string& request, websocket::close_reason* reason = nullptr) {
    ws_client c(port(), "/machines/box/commands/stream");
    c.send(request);
    auto events = c.all();
    if (reason) *reason = c.reason();
    return events;
  }

  static std::string params_json(const std::vector<std::pair<std::string, std::string>>& values) {
    std::string out = "{";
    for (const auto& [name, value] : values) {
      if (out.size() > 1) out += ",";
      common::append_json_string(out, name);
      out += ":";
      common::append_json_string(out, value);
    }
    return out + "}";
  }

  static inline shared_server shared_;
};

// Each value goes to the real remote shell as one argument of printf '%s' and comes back byte
// for byte: nothing in it is run, expanded or split.
TEST_F(Security, HostileParamValuesReachTheShellAsPlainText) {
  const std::vector<std::string> hostile = {
      "{value}",
      "{b}",
      "'",
      "\"",
      "'\\''",
      "$(touch /tmp/cmdcast-pwned)",
      "`touch /tmp/cmdcast-pwned`",
      "x; touch /tmp/cmdcast-pwned",
      "x && touch /tmp/cmdcast-pwned",
      "x | cat /etc/passwd",
      "line one\nline two",
      "tab\there",
      "$HOME ${PATH} $0 $$ $?",
      "* ? [a-z] ~",
      "-n",
      "%s %d %n",
      "back\\slash\\",
      "ünïcödé ✓ 日本語 🚀",
      std::string(4096, 'q'),
      std::string(256, '\'') + std::string(3840, '"'),
  };
  for (const auto& value : hostile) {
    const auto events = run(run_request("echo_value", params_json({{"value", value}})));
    const auto exits = of_type<common::exit_event>(events);
    ASSERT_EQ(exits.size(), 1u) << value;
    EXPECT_EQ(exits[0].code, 0) << text_of(events, common::output_stream::err);
    EXPECT_EQ(text_of(events, common::output_stream::out), value);
  }
  EXPECT_FALSE(std::filesystem::exists("/tmp/cmdcast-pwned"));
}

// A value whose quoting would make a command line longer than an SSH exec request carries is
// refused up front, with a reason, not left to fail on the machine.
TEST_F(Security, ACommandLineTooLongForSshIsRefusedWithAReason) {
  const auto events = run(run_request("echo_value", params_json({{"value", std::string(1024, '\'')}})));
  const auto errors = of_type<common::error_event>(events);
  ASSERT_EQ(errors.size(), 1u);
  EXPECT_EQ(errors[0].code, error_code::bad_params);
  EXPECT_NE(errors[0].message.find("command line"), std::string::npos) << errors[0].message;
  EXPECT_TRUE(of_type<common::started_event>(events).empty());
}

// A value naming another param's placeholder stays that text: substitution is one pass over
// the template, never over what a value brought in.
TEST_F(Security, AValueNamingAnotherPlaceholderIsNotSubstitutedAgain) {
  const auto events = run(run_request("two_values", params_json({{"a", "{b}"}, {"b", "x;touch /tmp/cmdcast-p;#"}})));
  EXPECT_EQ(text_of(events, common::output_stream::out), "{b}|x;touch /tmp/cmdcast-p;#");
  const auto started = of_type<common::started_event>(events);
  ASSERT_EQ(started.size(), 1u);
  EXPECT_EQ(started[0].command, "printf '%s|%s' '{b}' 'x;touch /tmp/cmdcast-p;#'");
  EXPECT_FALSE(std::filesystem::exists("/tmp/cmdcast-p"));
}

// NUL is valid JSON and matched by '.', but no shell argument can hold it: refused before
// anything runs, and the machine's other runs are untouched.
TEST_F(Security, ANulByteInAParamIsRefusedAndHarmsNothing) {
  ws_client running(port(), "/machines/box/commands/stream");
  running.send(run_request("lines"));
  ASSERT_TRUE(running.next());  // started
  const std::string nul_params = R"({"value":"x\u0000y"})";
  websocket::close_reason reason;
  const auto refused = run(run_request("echo_value", nul_params), &reason);
  const auto errors = of_type<common::error_event>(refused);
  ASSERT_EQ(errors.size(), 1u);
  EXPECT_EQ(errors[0].code, error_code::bad_params);
  EXPECT_NE(errors[0].message.find("NUL"), std::string::npos) << errors[0].message;
  EXPECT_TRUE(of_type<common::started_event>(refused).empty());
  EXPECT_EQ(reason.code, websocket::close_code::policy_error);
  const auto posted = http_request(port(), http::verb::post, "/machines/box/commands", operator_token,
                                   run_request("echo_value", nul_params));
  EXPECT_EQ(posted.status, 400u);
  EXPECT_NE(posted.body.find("bad_params"), std::string::npos);
  // The run that was going on ends as it would have.
  const auto rest = running.all();
  const auto exits = of_type<common::exit_event>(rest);
  ASSERT_EQ(exits.size(), 1u);
  EXPECT_EQ(exits[0].state, common::exit_state::exited);
  EXPECT_TRUE(text_of(rest, common::output_stream::out).ends_with("line 3\n"));
}

// A pattern that backtracks exponentially under a backtracking engine is matched in linear
// time: the answer comes, and the server goes on serving.
TEST_F(Security, ABacktrackingPatternCannotFreezeTheServer) {
  const std::string long_word = std::string(4000, 'a') + "!";
  const auto refused = run(run_request("backtrack", params_json({{"word", long_word}})));
  const auto errors = of_type<common::error_event>(refused);
  ASSERT_EQ(errors.size(), 1u);
  EXPECT_EQ(errors[0].code, error_code::bad_params) << errors[0].message;
  const auto ok = run(run_request("backtrack", params_json({{"word", std::string(4000, 'b')}})));
  EXPECT_EQ(text_of(ok, common::output_stream::out), std::string(4000, 'b') + "\n");
  EXPECT_EQ(http_request(port(), http::verb::get, "/healthz", "").body, "ok");
}

// A page of another site makes the operator's browser send a "simple" POST (text/plain, no
// preflight) with its Origin: refused before it runs anything. Without an Origin (the CLI,
// the desktop client, curl) or from the server's own pages, the same POST runs.
TEST_F(Security, APostFromAnotherSiteIsRefused) {
  const auto evil = http_request(port(), http::verb::post, "/machines/box/commands", operator_token,
                                 run_request("lines"), {{"Origin", "https://evil.example"}, {"Content-Type", "text/plain"}});
  EXPECT_EQ(evil.status, 403u);
  EXPECT_NE(evil.body.find("\"forbidden\""), std::string::npos) << evil.body;
  EXPECT_NE(evil.body.find("evil.example"), std::string::npos) << evil.body;
  EXPECT_EQ(http_request(port(), http::verb::post, "/executions/x/cancel", operator_token, "", {{"Origin", "null"}}).status, 403u);
  for (const std::string& origin : std::vector<std::string>{"", "http://allowed.example", "http://127.0.0.1:" + std::to_string(port())}) {
    // (Host as a browser sends it, with the port.)
    std::vector<std::pair<std::string, std::string>> headers = {{"Host", "127.0.0.1:" + std::to_string(port())}};
    if (!origin.empty()) headers.emplace_back("Origin", origin);
    const auto ok = http_request(port(), http::verb::post, "/machines/box/commands", operator_token, run_request("fail"), headers);
    EXPECT_EQ(ok.status, 202u) << origin << ": " << ok.body;
  }
}

// DNS rebinding: a page of evil.example whose name now resolves to 127.0.0.1 sends requests
// with `Host: evil.example`. Every route but /healthz refuses them, WebSockets included.
TEST_F(Security, AnotherHostNameIsRefusedOnEveryRouteButHealthz) {
  const std::string rebound = "rebind.evil:" + std::to_string(port());
  for (const std::string path : {"/machines", "/executions", "/metrics", "/me", "/", "/executions/x/events"}) {
    const auto answer = http_request(port(), http::verb::get, path, operator_token, "", {{"Host", rebound}});
    EXPECT_EQ(answer.status, 403u) << path;
    EXPECT_NE(answer.body.find("rebind.evil"), std::string::npos) << answer.body;
  }
  EXPECT_EQ(http_request(port(), http::verb::get, "/healthz", "", "", {{"Host", rebound}}).body, "ok");
  ws_client c(port(), "/machines/box/commands/stream", {.host = rebound});
  c.send(run_request("lines"));
  const auto events = c.all();
  const auto errors = of_type<common::error_event>(events);
  ASSERT_EQ(errors.size(), 1u);
  EXPECT_EQ(errors[0].code, error_code::forbidden);
  EXPECT_EQ(c.reason().code, websocket::close_code::policy_error);
  EXPECT_TRUE(of_type<common::started_event>(events).empty());
  // The server's own names: its address, localhost on any port, the allowed origins' hosts.
  for (const std::string& host : std::vector<std::string>{"127.0.0.1:" + std::to_string(port()), "localhost:" + std::to_string(port()),
                                                         "LOCALHOST", "allowed.example", "[::1]:80"}) {
    EXPECT_EQ(http_request(port(), http::verb::get, "/machines", operator_token, "", {{"Host", host}}).status, 200u) << host;
  }
}

TEST(SecurityHosts, AllowedHostsAddTheNamesAProxyUses) {
  loopback_sshd sshd;
  server_process srv(sshd, "allowed_hosts = [\"cmdcast.example.org\"]");
  EXPECT_EQ(http_request(srv.port(), http::verb::get, "/machines", operator_token, "", {{"Host", "cmdcast.example.org"}}).status, 200u);
  EXPECT_EQ(http_request(srv.port(), http::verb::get, "/machines", operator_token, "", {{"Host", "other.example.org"}}).status, 403u);
}

// Without tokens the config says who everyone is; a viewer may watch and list, not run.
TEST(SecurityAnonymous, AnAnonymousViewerMayWatchButNotRun) {
  loopback_sshd sshd;
  server_process srv(sshd, "anonymous = \"viewer\"");
  EXPECT_EQ(http_request(srv.port(), http::verb::get, "/me", "").body, R"({"user":"anonymous","role":"viewer"})");
  EXPECT_EQ(http_request(srv.port(), http::verb::get, "/machines", "").status, 200u);
  const auto run = http_request(srv.port(), http::verb::post, "/machines/box/commands", "", run_request("lines"));
  EXPECT_EQ(run.status, 403u);
  EXPECT_NE(run.body.find("operator"), std::string::npos) << run.body;
}

// With every SSH session of the machine in use, cancel cannot open the channel that would send
// the kill: the run ends `failed`, with a line saying the command may still be running,
// never a `cancelled` it was not.
TEST(SecurityBounds, ACancelThatCannotReachTheCommandSaysSo) {
  loopback_sshd sshd(false, "MaxSessions 2\n");
  server_process srv(sshd, "max_executions_per_machine = 2\nkill_grace_ms = 300");
  // Each runs until its command has printed: the wrapper says its process group before the
  // command starts, so the kill has a group to go to and only lacks a channel.
  const auto until_printed = [](ws_client& c) {
    while (auto m = c.next()) {
      if (m->find(R"("type":"stdout")") != std::string::npos) return true;
    }
    return false;
  };
  ws_client first(srv.port(), "/machines/box/commands/stream");
  first.send(run_request("forever"));
  ASSERT_TRUE(until_printed(first));
  ws_client second(srv.port(), "/machines/box/commands/stream");
  second.send(run_request("forever"));
  ASSERT_TRUE(until_printed(second));
  first.send(R"({"type":"cancel"})");
  const auto events = first.all();
  const auto exits = of_type<common::exit_event>(events);
  ASSERT_EQ(exits.size(), 1u);
  EXPECT_EQ(exits[0].state, common::exit_state::failed);
  const auto err = text_of(events, common::output_stream::err);
  EXPECT_NE(err.find("cancel could not reach the command"), std::string::npos) << err;
  EXPECT_NE(err.find("may still be running"), std::string::npos) << err;
}

/// Reads until the server closes; what came.
std::string read_to_end(tcp::socket& s) {
  std::string received;
  char buf[4096];
  boost::system::error_code ec;
  while (!ec) received.append(buf, s.read_some(net::buffer(buf), ec));
  return received;
}

std::uint64_t metric(std::uint16_t port, const std::string& name) {
  const auto body = http_request(port, http::verb::get, "/metrics", viewer_token).body;
  const auto at = body.find("\n" + name + " ");
  return at == std::string::npos ? 0 : std::stoull(body.substr(at + name.size() + 2));
}

TEST(SecurityBounds, ConnectionsPastTheLimitAreClosedAtOnceAndCounted) {
  loopback_sshd sshd;
  server_process srv(sshd, "max_connections = 3");
  net::io_context io;
  std::vector<std::unique_ptr<tcp::socket>> held;
  for (int i = 0; i < 3; ++i) {
    held.push_back(std::make_unique<tcp::socket>(io));
    held.back()->connect({net::ip::make_address("127.0.0.1"), srv.port()});
  }
  // The fourth is accepted by the kernel and closed by the server without a word.
  tcp::socket extra(io);
  extra.connect({net::ip::make_address("127.0.0.1"), srv.port()});
  EXPECT_EQ(read_to_end(extra), "");
  // One leaves: the server serves again, and says how many it turned away.
  held.pop_back();
  std::uint64_t refused = 0;
  for (int i = 0; i < 100 && refused == 0; ++i) {
    try {
      refused = metric(srv.port(), "cmdcast_connections_refused_total");
    } catch (const std::exception&) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));  // the held one not yet seen gone
    }
  }
  EXPECT_GE(refused, 1u);
}

TEST(SecurityBounds, ConnectsWaitingInTheListenQueueAreServedUpToTheLimitTheRestClosedAtOnce) {
  loopback_sshd sshd;
  server_process srv(sshd, "max_connections = 50");
  // The server stopped, 120 connects (each with a keep-alive request) wait in the listen
  // queue; then it takes them (in one burst of accepts): 50 answered and kept open, 70 closed
  // at once and counted.
  ASSERT_EQ(::kill(srv.pid(), SIGSTOP), 0);
  net::io_context io;
  std::vector<std::unique_ptr<tcp::socket>> burst;
  const std::string request = "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
  for (int i = 0; i < 120; ++i) {
    burst.push_back(std::make_unique<tcp::socket>(io));
    burst.back()->connect({net::ip::make_address("127.0.0.1"), srv.port()});
    net::write(*burst.back(), net::buffer(request));
  }
  ASSERT_EQ(::kill(srv.pid(), SIGCONT), 0);
  int served = 0, closed = 0;
  for (auto& s : burst) {
    char answer[512];
    boost::system::error_code ec;
    const auto n = s->read_some(net::buffer(answer), ec);  // an answer, or the end at once
    if (std::string_view(answer, n).starts_with("HTTP/1.1 200 OK\r\n")) {
      ++served;
    } else {
      EXPECT_EQ(n, 0u);
      EXPECT_TRUE(ec == net::error::eof || ec == net::error::connection_reset) << ec.message();
      ++closed;
    }
  }
  EXPECT_EQ(served, 50);
  EXPECT_EQ(closed, 70);
  burst.clear();  // room again: the server answers the metrics request once it sees them go
  std::uint64_t refused = 0, asked_too_soon = 0;
  for (int i = 0; i < 100 && refused == 0; ++i) {
    try {
      refused = metric(srv.port(), "cmdcast_connections_refused_total");
    } catch (const std::exception&) {
      ++asked_too_soon;  // closed at once too: the closes not seen yet
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  }
  EXPECT_EQ(refused, 70u + asked_too_soon);
}

TEST(SecurityBounds, AConnectionThatNeverCompletesARequestIsClosed) {
  loopback_sshd sshd;
  server_process srv(sshd);
  net::io_context io;
  tcp::socket s(io);
  s.connect({net::ip::make_address("127.0.0.1"), srv.port()});
  net::write(s, net::buffer(std::string("GET /machines HTTP/1.1\r\nHost: 127.0.0.1\r\n")));  // and no more
  const auto start = std::chrono::steady_clock::now();
  EXPECT_EQ(read_to_end(s), "");
  // Closed by the server's request deadline (10 s), not by this test giving up.
  EXPECT_GE(std::chrono::steady_clock::now() - start, std::chrono::seconds(5));
}

// Out of descriptors, accepting fails again and again: the server waits between tries instead
// of spinning, and serves again once descriptors are free.
TEST(SecurityBounds, AcceptFailuresBackOffAndServingResumes) {
  loopback_sshd sshd;
  server_process srv(sshd, "", {"prlimit", "--nofile=40:40"});
  net::io_context io;
  std::vector<std::unique_ptr<tcp::socket>> held;
  for (int i = 0; i < 60; ++i) {
    held.push_back(std::make_unique<tcp::socket>(io));
    held.back()->connect({net::ip::make_address("127.0.0.1"), srv.port()});
  }
  const double before = process_cpu_seconds(srv.pid());
  std::this_thread::sleep_for(std::chrono::seconds(2));
  const double used = process_cpu_seconds(srv.pid()) - before;
  EXPECT_LT(used, 0.25) << "CPU seconds in 2 s with accept failing";
  held.clear();
  http_answer health;
  for (int i = 0; i < 100 && health.status != 200; ++i) {
    try {
      health = http_request(srv.port(), http::verb::get, "/healthz", "");
    } catch (const std::exception&) {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  }
  EXPECT_EQ(health.status, 200u);
  EXPECT_GT(metric(srv.port(), "cmdcast_accept_errors_total"), 0u);
  EXPECT_NE(srv.log().find("accept_failed"), std::string::npos);
}

TEST_F(Security, TheListLimitIsCappedAndChecked) {
  const auto huge = http_request(port(), http::verb::get, "/executions?limit=1000000000000", viewer_token);
  EXPECT_EQ(huge.status, 200u);
  EXPECT_TRUE(common::decode_execution_records(huge.body).ok()) << huge.body;
  EXPECT_EQ(http_request(port(), http::verb::get, "/executions?limit=0", viewer_token).status, 400u);
  EXPECT_EQ(http_request(port(), http::verb::get, "/executions?limit=-5", viewer_token).status, 400u);
  EXPECT_EQ(http_request(port(), http::verb::get, "/executions?limit=1e3", viewer_token).status, 400u);
}

// `after` past the last event is refused on attach as on a long-poll: no gap with a negative
// start, whatever the number.
TEST_F(Security, AttachingAfterThePastEndIsABadRequest) {
  const auto id = post_run(port(), run_request("forever"));
  for (const std::string after : {"9223372036854775807", "9223372036854775806", "500"}) {
    ws_client c(port(), "/executions/" + id + "/stream?after=" + after);
    const auto events = c.all();
    const auto errors = of_type<common::error_event>(events);
    ASSERT_EQ(errors.size(), 1u) << after;
    EXPECT_EQ(errors[0].code, error_code::bad_request);
    EXPECT_TRUE(of_type<common::gap_event>(events).empty());
    EXPECT_EQ(c.reason().code, websocket::close_code::policy_error);
  }
  for (const std::string after : {"9223372036854775808", "-2", "x"}) {
    ws_client c(port(), "/executions/" + id + "/stream?after=" + after);
    EXPECT_EQ(of_type<common::error_event>(c.all()).at(0).code, error_code::bad_request) << after;
  }
  EXPECT_EQ(http_request(port(), http::verb::post, "/executions/" + id + "/cancel", operator_token).status, 202u);
}

// A close code no peer may send is a protocol error (1002), not a code to echo back.
TEST_F(Security, AnInvalidCloseCodeIsAnsweredWith1002) {
  const auto id = post_run(port(), run_request("forever"));
  for (const int code : {999, 1005, 1006, 2000, 5000}) {
    net::io_context io;
    tcp::socket s(io);
    s.connect({net::ip::make_address("127.0.0.1"), port()});
    const auto upgrade = raw_upgrade(s, "/executions/" + id + "/stream", viewer_token);
    ASSERT_NE(upgrade.head.find("101"), std::string::npos);
    net::write(s, net::buffer(masked_frame(0x88, std::string{static_cast<char>(code >> 8), static_cast<char>(code & 255)})));
    const std::string received = upgrade.rest + read_to_end(s);
    const auto close = received.find("\x88");
    ASSERT_NE(close, std::string::npos) << code;
    ASSERT_GE(received.size(), close + 4);
    const int answered = static_cast<std::uint8_t>(received[close + 2]) << 8 | static_cast<std::uint8_t>(received[close + 3]);
    EXPECT_EQ(answered, 1002) << code;
  }
  EXPECT_EQ(http_request(port(), http::verb::post, "/executions/" + id + "/cancel", operator_token).status, 202u);
}

// The longest wait a long-poll may ask for is answered (200, nothing new), not cut by the
// connection's own deadline.
TEST_F(Security, ALongPollOfThirtySecondsIsAnswered) {
  const auto id = post_run(port(), run_request("forever"));
  common::seq_t next = -1;
  for (int i = 0; i < 50 && next < 1; ++i) {  // "started" and "started\n" are in: then nothing more comes
    const auto first = http_request(port(), http::verb::get, "/executions/" + id + "/events?after=-1", viewer_token);
    const auto page = common::decode_poll_response(first.body);
    ASSERT_TRUE(page.ok()) << first.body;
    next = page->next;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  const auto waited = http_request(port(), http::verb::get,
                                   "/executions/" + id + "/events?after=" + std::to_string(next) + "&wait=30", viewer_token);
  EXPECT_EQ(waited.status, 200u);
  const auto page = common::decode_poll_response(waited.body);
  ASSERT_TRUE(page.ok()) << waited.body;
  EXPECT_TRUE(sequenced(page->events).empty());  // nothing new (a watcher count may come along)
  EXPECT_EQ(page->next, next);
  EXPECT_EQ(http_request(port(), http::verb::post, "/executions/" + id + "/cancel", operator_token).status, 202u);
}

TEST(SecurityConfig, AnonymousAccessIsADecisionNotADefault) {
  const auto none = server::parse_config("[server]\nlisten = \"127.0.0.1:8080\"\n", "a.toml");
  ASSERT_FALSE(none.ok());
  EXPECT_NE(none.error().find("add [[tokens]]"), std::string::npos) << none.error();
  EXPECT_NE(none.error().find("anonymous = \"operator\""), std::string::npos) << none.error();
  EXPECT_TRUE(server::parse_config("[server]\nanonymous = \"operator\"\n", "a.toml").ok());
  EXPECT_TRUE(server::parse_config("[server]\nlisten = \"[::1]:9\"\nanonymous = \"viewer\"\n", "a.toml").ok());
  const auto wide = server::parse_config("[server]\nlisten = \"0.0.0.0:8080\"\nanonymous = \"operator\"\n", "a.toml");
  ASSERT_FALSE(wide.ok());
  EXPECT_NE(wide.error().find("a.toml:3:13: server.anonymous"), std::string::npos) << wide.error();
  const auto both = server::parse_config(
      "[server]\nanonymous = \"viewer\"\n[[tokens]]\nname = \"a\"\nsha256 = \"" + std::string(64, 'a') + "\"\nrole = \"viewer\"\n",
      "a.toml");
  ASSERT_FALSE(both.ok());
  EXPECT_NE(both.error().find("only without [[tokens]]"), std::string::npos) << both.error();
  const auto typo = server::parse_config("[server]\nanonymous = \"admin\"\n", "a.toml");
  ASSERT_FALSE(typo.ok());
  EXPECT_NE(typo.error().find("a.toml:2:13: server.anonymous"), std::string::npos) << typo.error();
}

TEST(SecurityConfig, ANonLoopbackListenNeedsTlsOrSaysAProxyHasIt) {
  const std::string tokens = "[[tokens]]\nname = \"a\"\nsha256 = \"" + std::string(64, 'a') + "\"\nrole = \"viewer\"\n";
  const auto plain = server::parse_config("[server]\nlisten = \"0.0.0.0:8080\"\n" + tokens, "t.toml");
  ASSERT_FALSE(plain.ok());
  EXPECT_NE(plain.error().find("tls_cert"), std::string::npos) << plain.error();
  EXPECT_NE(plain.error().find("insecure_plaintext"), std::string::npos) << plain.error();
  EXPECT_TRUE(server::parse_config("[server]\nlisten = \"0.0.0.0:8080\"\ninsecure_plaintext = true\n" + tokens, "t.toml").ok());
  const auto half = server::parse_config("[server]\nanonymous = \"viewer\"\ntls_cert = \"/etc/hostname\"\n", "t.toml");
  ASSERT_FALSE(half.ok());
  EXPECT_NE(half.error().find("server.tls_key"), std::string::npos) << half.error();
  const auto missing = server::parse_config(
      "[server]\nanonymous = \"viewer\"\ntls_cert = \"/nonexistent.pem\"\ntls_key = \"/nonexistent.key\"\n", "t.toml");
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.error().find("t.toml:3:12: server.tls_cert: cannot read \"/nonexistent.pem\""), std::string::npos) << missing.error();
}

TEST(SecurityConfig, BrokenValuesOfTheNewServerKeysAreClearErrors) {
  const auto error_of = [](const std::string& keys) {
    const auto c = server::parse_config("[server]\nanonymous = \"viewer\"\n" + keys + "\n", "k.toml");
    return c.ok() ? std::string("accepted") : c.error();
  };
  EXPECT_NE(error_of("max_connections = 0").find("k.toml:3:19: server.max_connections: must be between 1"), std::string::npos);
  EXPECT_NE(error_of("insecure_plaintext = \"yes\"").find("k.toml:3:22: server.insecure_plaintext: must be true or false"),
            std::string::npos);
  EXPECT_NE(error_of("allowed_origins = [\"evil.example\"]").find("server.allowed_origins: \"evil.example\" is not an origin"),
            std::string::npos);
  EXPECT_NE(error_of("allowed_hosts = [1]").find("server.allowed_hosts: must be an array of strings"), std::string::npos);
  const auto number = server::parse_config("[server]\nanonymous = 1\n", "k.toml");
  ASSERT_FALSE(number.ok());
  EXPECT_NE(number.error().find("k.toml:2:13: server.anonymous: must be a string"), std::string::npos) << number.error();
}

TEST(SecurityConfig, APatternRe2CannotCompileIsAConfigErrorNamingFileLineAndKey) {
  const auto c = server::parse_config(
      "[server]\nanonymous = \"operator\"\n[actions.a]\ncommand = \"echo {x}\"\nparams = { x = \"^(?<=a)b$\" }\n", "p.toml");
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.error().find("p.toml:5:16: actions.a.params.x: is not a valid RE2 pattern"), std::string::npos) << c.error();
}

}  // namespace
}  // namespace cmdcast::testing
