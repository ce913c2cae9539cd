// What a hostile value does to cmdcast-server: params that try to reach the remote shell,
// requests from other sites and other host names, anonymous access, and the bounds that keep
// one client from holding the server. Against the real server process and a loopback sshd.
#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
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
  ws_client first(srv.port(), "/machines/box/commands/stream");
  first.send(run_request("forever"));
  ASSERT_TRUE(first.next());
  ws_client second(srv.port(), "/machines/box/commands/stream");
  second.send(run_request("forever"));
  ASSERT_TRUE(second.next());
  std::this_thread::sleep_for(std::chrono::milliseconds(300));  // both have said their process group
  first.send(R"({"type":"cancel"})");
  const auto events = first.all();
  const auto exits = of_type<common::exit_event>(events);
  ASSERT_EQ(exits.size(), 1u);
  EXPECT_EQ(exits[0].state, common::exit_state::failed);
  const auto err = text_of(events, common::output_stream::err);
  EXPECT_NE(err.find("cancel could not reach the command"), std::string::npos) << err;
  EXPECT_NE(err.find("may still be running"), std::string::npos) << err;
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
  EXPECT_NE(wide.error().find("a.toml:3: server.anonymous"), std::string::npos) << wide.error();
  const auto both = server::parse_config(
      "[server]\nanonymous = \"viewer\"\n[[tokens]]\nname = \"a\"\nsha256 = \"" + std::string(64, 'a') + "\"\nrole = \"viewer\"\n",
      "a.toml");
  ASSERT_FALSE(both.ok());
  EXPECT_NE(both.error().find("only without [[tokens]]"), std::string::npos) << both.error();
  const auto typo = server::parse_config("[server]\nanonymous = \"admin\"\n", "a.toml");
  ASSERT_FALSE(typo.ok());
  EXPECT_NE(typo.error().find("a.toml:2: server.anonymous"), std::string::npos) << typo.error();
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
  EXPECT_NE(missing.error().find("t.toml:3: server.tls_cert: cannot read \"/nonexistent.pem\""), std::string::npos) << missing.error();
}

TEST(SecurityConfig, APatternRe2CannotCompileIsAConfigErrorNamingFileLineAndKey) {
  const auto c = server::parse_config(
      "[server]\nanonymous = \"operator\"\n[actions.a]\ncommand = \"echo {x}\"\nparams = { x = \"^(?<=a)b$\" }\n", "p.toml");
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.error().find("p.toml:5: actions.a.params.x: is not a valid RE2 pattern"), std::string::npos) << c.error();
}

}  // namespace
}  // namespace cmdcast::testing
