// cmdcast behind Debian's real nginx on loopback, running the site cmdcast ships
// (deploy/nginx/cmdcast.conf): TLS at nginx with a certificate from a private CA made at test
// time, cmdcast-server on plain loopback behind it. The CLI runs through it over WebSocket;
// through the same site without its Upgrade and Connection lines (the usual misconfiguration)
// it says why the WebSocket failed and follows the run by long-polling instead; the server's
// log names the real client only when the proxy is one of its trusted_proxies.
#include <gtest/gtest.h>

#include <boost/json.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <memory>
#include <thread>

#include "nginx_proxy.hpp"
#include "server_harness.hpp"
#include "tls_fixture.hpp"

namespace cmdcast::testing {
namespace {

namespace json = boost::json;

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> out;
  std::size_t start = 0;
  while (start < text.size()) {
    const auto end = text.find('\n', start);
    out.push_back(text.substr(start, end == std::string::npos ? std::string::npos : end - start));
    if (end == std::string::npos) break;
    start = end + 1;
  }
  return out;
}

/// The CLI's stdout line by line with the time each came (seconds from the start), its stderr
/// and exit code: whether output arrives while the command runs, as a user watching sees it.
struct timed_run {
  std::vector<std::pair<double, std::string>> lines;
  double seconds = 0;
  program_result result;
};

timed_run run_timed(const std::string& command_line) {
  char err_path[] = "/tmp/cmdcast-program-err-XXXXXX";
  ::close(::mkstemp(err_path));
  const std::string command = "CMDCAST_TOKEN=" + operator_token + " " + command_line + " 2>" + err_path;
  timed_run r;
  const auto start = std::chrono::steady_clock::now();
  const auto since = [&start] { return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(); };
  std::FILE* p = ::popen(command.c_str(), "r");
  char buf[4096];
  while (std::fgets(buf, sizeof buf, p)) {
    r.result.out += buf;
    r.lines.emplace_back(since(), std::string(buf));
  }
  const int status = ::pclose(p);
  r.seconds = since();
  r.result.status = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  std::ifstream in(err_path);
  r.result.err.assign(std::istreambuf_iterator<char>(in), {});
  ::unlink(err_path);
  return r;
}

program_result cmdcast_cli(const std::string& args) { return run_program(std::string(CMDCAST_CLI_BINARY) + " " + args); }

/// curl as a user's script would call it, from the loopback address `from` (nginx then sees
/// that address; it reaches cmdcast-server from 127.0.0.1). Prints the body, then the status
/// on a line of its own.
program_result curl(const std::string& from, const std::string& args) {
  return run_program("curl -sS --max-time 20 --interface " + from + " -w '\\n%{http_code}' " + args);
}

/// The status curl printed last, and the body before it.
std::pair<std::string, std::string> status_and_body(const program_result& r) {
  const auto nl = r.out.rfind('\n');
  if (nl == std::string::npos) return {r.out, ""};
  return {r.out.substr(nl + 1), r.out.substr(0, nl)};
}

/// The server's log lines (JSON, one per line) of `event` that `match` accepts, waiting up to
/// 5 s for at least one.
std::vector<json::object> log_events(const server_process& server, const std::string& event,
                                     const std::function<bool(const json::object&)>& match, std::size_t from = 0) {
  std::vector<json::object> found;
  for (int i = 0; i < 100 && found.empty(); ++i) {
    if (i > 0) std::this_thread::sleep_for(std::chrono::milliseconds(50));
    const std::string log = server.log();
    for (const auto& line : lines_of(log.substr(std::min(from, log.size())))) {
      boost::system::error_code ec;
      auto v = json::parse(line, ec);
      if (ec || !v.is_object()) continue;
      const auto& o = v.as_object();
      if (o.contains("event") && o.at("event") == event.c_str() && match(o)) found.push_back(o);
    }
  }
  return found;
}

std::string field(const json::object& o, const char* name) {
  const auto* v = o.if_contains(name);
  return v && v->is_string() ? std::string(v->as_string()) : std::string();
}

std::string execution_of(const std::string& accepted_body) {
  const auto accepted = common::decode_run_accepted(accepted_body);
  EXPECT_TRUE(accepted.ok()) << accepted_body;
  return accepted.ok() ? accepted->execution_id : "";
}

std::string shown(const json::object& o) { return json::serialize(o); }

// The shipped file itself is nginx configuration nginx accepts: only its certificate paths are
// placeholders (without the files nginx refuses it for them, and for nothing else).
TEST(ProxySite, TheShippedSiteIsValidNginxOnceItsCertificatesExist) {
  tls_fixture pki;
  const auto [status, said] = nginx_check(substitute(shipped_nginx_site(),
                                                     {{"/etc/ssl/certs/cmdcast.example.org.pem", pki.loopback().cert},
                                                      {"/etc/ssl/private/cmdcast.example.org.key", pki.loopback().key}}));
  EXPECT_EQ(status, 0) << said;
  EXPECT_TRUE(contains(said, "test is successful")) << said;
  const auto [as_shipped, complaint] = nginx_check(shipped_nginx_site());
  EXPECT_NE(as_shipped, 0) << complaint;
  EXPECT_TRUE(contains(complaint, "/etc/ssl/certs/cmdcast.example.org.pem")) << complaint;
}

/// One sshd and one cmdcast-server that trusts 127.0.0.1 (where nginx connects from), behind
/// two nginx: the shipped site, and the same site without its Upgrade and Connection lines.
class Proxy : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    pki_ = std::make_unique<tls_fixture>();
    sshd_ = std::make_unique<loopback_sshd>();
    server_ = std::make_unique<server_process>(*sshd_, "trusted_proxies = [\"127.0.0.1\", \"10.0.0.0/8\"]",
                                               std::vector<std::string>{},
                                               sshd_->machine_toml("m2") + "[groups]\npair = [\"box\", \"m2\"]\n");
    proxy_ = std::make_unique<nginx_proxy>(nginx_site_options{server_->port(), pki_->loopback(), true});
    no_upgrades_ = std::make_unique<nginx_proxy>(nginx_site_options{server_->port(), pki_->loopback(), false});
  }
  static void TearDownTestSuite() {
    no_upgrades_.reset();
    proxy_.reset();
    server_.reset();
    sshd_.reset();
    pki_.reset();
  }
  static std::string ca() { return " --cacert " + pki_->ca() + " "; }

  static inline std::unique_ptr<tls_fixture> pki_;
  static inline std::unique_ptr<loopback_sshd> sshd_;
  static inline std::unique_ptr<server_process> server_;
  static inline std::unique_ptr<nginx_proxy> proxy_, no_upgrades_;
};

const std::string proxy_notice_part = "a proxy in between most likely does not pass WebSocket upgrades";

TEST_F(Proxy, TheCliRunsAndWatchesThroughNginxOverWebSocket) {
  const auto ran = cmdcast_cli("run " + proxy_->url() + ca() + "box lines");
  EXPECT_EQ(ran.status, 0) << ran.err;
  EXPECT_EQ(ran.out, "line 1\nline 2\nline 3\n");
  EXPECT_EQ(ran.err, "done\n");  // nothing about proxies or polling
  const auto failed = cmdcast_cli("run " + proxy_->url() + ca() + "box fail");
  EXPECT_EQ(failed.status, 3) << failed.err;
  EXPECT_EQ(failed.err, "oops\n");
  // watch: attach to a run started by a script with curl through the same nginx.
  const auto [status, body] = status_and_body(curl("127.0.0.1", "--cacert " + pki_->ca() + " -H 'Authorization: Bearer " +
                                                                   operator_token + "' -d '" + run_request("lines") + "' " +
                                                                   proxy_->url() + "/machines/box/commands"));
  ASSERT_EQ(status, "202") << body;
  const auto watched = cmdcast_cli("watch " + proxy_->url() + ca() + execution_of(body));
  EXPECT_EQ(watched.status, 0) << watched.err;
  EXPECT_EQ(watched.out, "line 1\nline 2\nline 3\n");
  EXPECT_EQ(watched.err, "done\n");
  // nginx's own record: the runs were started with POSTs, the streams were WebSocket upgrades
  // it passed on (101), none a poll.
  const auto log = proxy_->access_log();
  EXPECT_TRUE(contains(log, "\"POST /machines/box/commands HTTP/1.1\" 202")) << log;
  EXPECT_TRUE(contains(log, "\"GET /executions/" + execution_of(body) + "/stream HTTP/1.1\" 101")) << log;
  EXPECT_FALSE(contains(log, "/events")) << log;
}

TEST_F(Proxy, OutputComesThroughNginxWhileTheCommandRuns) {
  // "slow" prints "started", sleeps 1.5 s, then prints "finished".
  const auto run = run_timed(CMDCAST_CLI_BINARY " run " + proxy_->url() + ca() + "box slow");
  ASSERT_EQ(run.result.status, 0) << run.result.err;
  ASSERT_EQ(run.lines.size(), 2u) << run.result.out;
  EXPECT_EQ(run.lines[0].second, "started\n");
  EXPECT_LT(run.lines[0].first, run.seconds - 1.0) << "the first line waited for the end";
}

TEST_F(Proxy, WithoutUpgradeHeadersTheCliSaysWhyAndFollowsByPolling) {
  const auto ran = cmdcast_cli("run " + no_upgrades_->url() + ca() + "box lines");
  EXPECT_EQ(ran.status, 0) << ran.err;
  EXPECT_EQ(ran.out, "line 1\nline 2\nline 3\n");
  // One line says what went wrong, where to look, and what the CLI does instead; then the
  // command's own stderr.
  const auto err = lines_of(ran.err);
  ASSERT_EQ(err.size(), 2u) << ran.err;
  EXPECT_TRUE(err[0].starts_with("cmdcast: the WebSocket upgrade to 127.0.0.1:" + std::to_string(no_upgrades_->port()) +
                                 " was answered with HTTP 426, not 101"))
      << err[0];
  EXPECT_TRUE(contains(err[0], proxy_notice_part)) << err[0];
  EXPECT_TRUE(contains(err[0], "deploy/nginx/cmdcast.conf")) << err[0];
  EXPECT_TRUE(contains(err[0], "docs/proxy.md")) << err[0];
  EXPECT_TRUE(contains(err[0], "following by polling instead")) << err[0];
  EXPECT_EQ(err[1], "done");
  // The remote exit code comes through the polls too.
  const auto failed = cmdcast_cli("run " + no_upgrades_->url() + ca() + "box fail");
  EXPECT_EQ(failed.status, 3) << failed.err;
  EXPECT_EQ(failed.out, "");
  EXPECT_TRUE(contains(failed.err, proxy_notice_part)) << failed.err;
  EXPECT_TRUE(failed.err.ends_with("\noops\n")) << failed.err;
  // nginx's record: the run was started with a POST, the upgrade to follow it reached the
  // server as a plain GET (426), then it was followed with long-polls.
  const auto log = no_upgrades_->access_log();
  EXPECT_TRUE(contains(log, "\"POST /machines/box/commands HTTP/1.1\" 202")) << log;
  EXPECT_TRUE(contains(log, "/stream HTTP/1.1\" 426")) << log;
  EXPECT_TRUE(contains(log, "/events?after=-1&wait=25 HTTP/1.1\" 200")) << log;
  EXPECT_FALSE(contains(log, "\" 101 ")) << log;
}

TEST_F(Proxy, WithoutUpgradeHeadersTheCliWatchesByPollingAndOutputStillComesLive) {
  const auto run = run_timed(CMDCAST_CLI_BINARY " run " + no_upgrades_->url() + ca() + "box slow");
  ASSERT_EQ(run.result.status, 0) << run.result.err;
  ASSERT_EQ(run.lines.size(), 2u) << run.result.out;
  EXPECT_EQ(run.lines[0].second, "started\n");
  EXPECT_EQ(run.lines[1].second, "finished\n");
  EXPECT_LT(run.lines[0].first, run.seconds - 1.0) << "the first line waited for the end";
  EXPECT_TRUE(contains(run.result.err, proxy_notice_part)) << run.result.err;

  const std::string id = post_run(server_->port(), run_request("lines"));
  const auto watched = cmdcast_cli("watch " + no_upgrades_->url() + ca() + id);
  EXPECT_EQ(watched.status, 0) << watched.err;
  EXPECT_EQ(watched.out, "line 1\nline 2\nline 3\n");
  EXPECT_EQ(lines_of(watched.err).size(), 2u) << watched.err;
  EXPECT_TRUE(contains(watched.err, proxy_notice_part)) << watched.err;
  EXPECT_TRUE(watched.err.ends_with("\ndone\n")) << watched.err;
}

TEST_F(Proxy, WithoutUpgradeHeadersAFleetRunIsFollowedByPollingTheBatch) {
  const auto ran = cmdcast_cli("run " + no_upgrades_->url() + ca() + "@pair lines");
  EXPECT_EQ(ran.status, 0) << ran.err;
  for (const std::string m : {"box", "m2"}) {
    std::vector<std::string> mine;
    for (const auto& line : lines_of(ran.out)) {
      if (line.starts_with(m + " | ")) mine.push_back(line.substr(m.size() + 3));
    }
    EXPECT_EQ(mine, (std::vector<std::string>{"line 1", "line 2", "line 3"})) << ran.out;
    EXPECT_TRUE(contains(ran.err, "\n" + m + " | done\n")) << ran.err;
  }
  EXPECT_TRUE(contains(ran.err, proxy_notice_part)) << ran.err;
  EXPECT_TRUE(ran.err.ends_with("\n2 succeeded\n")) << ran.err;
  // Started with a POST; the batch stream's upgrade reached the server as a plain GET (426);
  // then long-polls of the batch, each execution after its own seq.
  const auto log = no_upgrades_->access_log();
  EXPECT_TRUE(contains(log, "\"POST /groups/pair/commands HTTP/1.1\" 202")) << log;
  EXPECT_TRUE(contains(log, "/stream HTTP/1.1\" 426")) << log;
  EXPECT_TRUE(contains(log, "/events?wait=25 HTTP/1.1\" 200")) << log;
  EXPECT_TRUE(contains(log, "/events?wait=25&after=")) << log;
}

TEST_F(Proxy, PlainHttpOnlyRedirectsToHttpsAndLargeBodiesStopAtNginx) {
  const auto [status, body] = status_and_body(
      curl("127.0.0.1", "-o /dev/null -D - http://127.0.0.1:" + std::to_string(proxy_->plain_port()) + "/machines"));
  EXPECT_EQ(status, "301") << body;
  EXPECT_TRUE(contains(body, "Location: https://127.0.0.1/machines")) << body;
  // client_max_body_size is the server's max_message_bytes (64 KiB): a larger request to run
  // is refused by nginx with 413 before it reaches cmdcast-server.
  const std::string dir = sshd_->dir();
  std::ofstream(dir + "/big.json") << run_request("echo_value", "{\"value\":\"" + std::string(70000, 'x') + "\"}");
  const auto [big, big_body] = status_and_body(curl("127.0.0.1", "--cacert " + pki_->ca() + " -H 'Authorization: Bearer " +
                                                                     operator_token + "' --data-binary @" + dir +
                                                                     "/big.json " + proxy_->url() + "/machines/box/commands"));
  EXPECT_EQ(big, "413") << big_body;
}

TEST_F(Proxy, TheLogNamesTheRealClientBehindATrustedProxy) {
  const std::string auth = "--cacert " + pki_->ca() + " -H 'Authorization: Bearer " + operator_token + "' ";
  // A run from 127.0.0.7 through nginx: nginx reaches the server from 127.0.0.1, a trusted
  // proxy, which names 127.0.0.7 in X-Forwarded-For.
  const auto [status, body] = status_and_body(curl("127.0.0.7", auth + "-d '" + run_request("forever") + "' " + proxy_->url() +
                                                                    "/machines/box/commands"));
  ASSERT_EQ(status, "202") << body;
  const std::string id = execution_of(body);
  const auto runs = log_events(*server_, "run", [&](const json::object& o) { return field(o, "execution_id") == id; });
  ASSERT_EQ(runs.size(), 1u) << server_->log();
  EXPECT_EQ(field(runs[0], "client"), "127.0.0.7") << shown(runs[0]);
  EXPECT_EQ(field(runs[0], "proxy"), "127.0.0.1") << shown(runs[0]);
  EXPECT_EQ(field(runs[0], "user"), "olivia") << shown(runs[0]);

  const auto [cancelled, cancel_body] =
      status_and_body(curl("127.0.0.7", auth + "-X POST " + proxy_->url() + "/executions/" + id + "/cancel"));
  EXPECT_EQ(cancelled, "202") << cancel_body;
  const auto cancels = log_events(*server_, "cancel", [&](const json::object& o) { return field(o, "execution_id") == id; });
  ASSERT_EQ(cancels.size(), 1u) << server_->log();
  EXPECT_EQ(field(cancels[0], "client"), "127.0.0.7") << shown(cancels[0]);
  EXPECT_EQ(field(cancels[0], "proxy"), "127.0.0.1") << shown(cancels[0]);

  // A request to run an action the machine does not have.
  const auto [refused, refused_body] = status_and_body(
      curl("127.0.0.7", auth + "-d '" + run_request("no_such_action") + "' " + proxy_->url() + "/machines/box/commands"));
  EXPECT_EQ(refused, "404") << refused_body;
  const auto rejected =
      log_events(*server_, "rejected", [](const json::object& o) { return field(o, "action") == "no_such_action"; });
  ASSERT_EQ(rejected.size(), 1u) << server_->log();
  EXPECT_EQ(field(rejected[0], "client"), "127.0.0.7") << shown(rejected[0]);
  EXPECT_EQ(field(rejected[0], "proxy"), "127.0.0.1") << shown(rejected[0]);

  // A wrong token (401) and a viewer trying to run (403).
  const std::size_t before = server_->log().size();
  const auto [denied, denied_body] = status_and_body(curl(
      "127.0.0.7", "--cacert " + pki_->ca() + " -H 'Authorization: Bearer wrong-token' " + proxy_->url() + "/machines"));
  EXPECT_EQ(denied, "401") << denied_body;
  const auto [forbidden, forbidden_body] = status_and_body(
      curl("127.0.0.7", "--cacert " + pki_->ca() + " -H 'Authorization: Bearer " + viewer_token + "' -d '" +
                            run_request("lines") + "' " + proxy_->url() + "/machines/box/commands"));
  EXPECT_EQ(forbidden, "403") << forbidden_body;
  const auto denials = log_events(*server_, "denied", [](const json::object&) { return true; }, before);
  ASSERT_GE(denials.size(), 2u) << server_->log().substr(before);
  for (const auto& d : denials) {
    EXPECT_EQ(field(d, "client"), "127.0.0.7") << shown(d);
    EXPECT_EQ(field(d, "proxy"), "127.0.0.1") << shown(d);
  }
}

TEST_F(Proxy, ForgedForwardingHeadersDoNotChangeTheLoggedClient) {
  const std::string auth = "--cacert " + pki_->ca() + " -H 'Authorization: Bearer " + operator_token + "' ";
  const auto run_as = [&](const std::string& headers, const std::string& url) {
    const auto [status, body] =
        status_and_body(curl("127.0.0.7", auth + headers + " -d '" + run_request("lines") + "' " + url + "/machines/box/commands"));
    EXPECT_EQ(status, "202") << body;
    const std::string id = execution_of(body);
    const auto runs = log_events(*server_, "run", [&](const json::object& o) { return field(o, "execution_id") == id; });
    EXPECT_EQ(runs.size(), 1u) << server_->log();
    return runs.empty() ? json::object() : runs[0];
  };
  // Through nginx: it appends the address it was reached from to X-Forwarded-For, and the
  // server walks the list from its nearest end; a client's Forwarded is dropped by the site.
  for (const std::string forged : {"-H 'X-Forwarded-For: 6.6.6.6'", "-H 'Forwarded: for=6.6.6.6'",
                                   "-H 'X-Forwarded-For: 6.6.6.6' -H 'Forwarded: for=\"[2001:db8::6]\"'"}) {
    const auto run = run_as(forged, proxy_->url());
    EXPECT_EQ(field(run, "client"), "127.0.0.7") << forged << ": " << shown(run);
    EXPECT_EQ(field(run, "proxy"), "127.0.0.1") << forged << ": " << shown(run);
  }
  // Straight to the server from an address it does not trust: the headers are not believed.
  const std::string direct = "http://127.0.0.1:" + std::to_string(server_->port());
  for (const std::string forged : {"-H 'X-Forwarded-For: 6.6.6.6'", "-H 'Forwarded: for=6.6.6.6'"}) {
    const auto run = run_as(forged, direct);
    EXPECT_EQ(field(run, "client"), "127.0.0.7") << forged << ": " << shown(run);
    EXPECT_EQ(field(run, "proxy"), "") << forged << ": " << shown(run);
  }
}

// A server without trusted_proxies believes no forwarding header: behind nginx, its log names
// nginx's address, and says nothing of a proxy.
TEST(ProxyUntrusted, WithoutTrustedProxiesTheLogNamesTheProxyAsTheClient) {
  tls_fixture pki;
  loopback_sshd sshd;
  server_process server(sshd);
  nginx_proxy proxy({server.port(), pki.loopback(), true});
  const auto [status, body] = status_and_body(curl("127.0.0.7", "--cacert " + pki.ca() + " -H 'Authorization: Bearer " +
                                                                    operator_token + "' -d '" + run_request("lines") + "' " +
                                                                    proxy.url() + "/machines/box/commands"));
  ASSERT_EQ(status, "202") << body;
  const std::string id = execution_of(body);
  const auto runs = log_events(server, "run", [&](const json::object& o) { return field(o, "execution_id") == id; });
  ASSERT_EQ(runs.size(), 1u) << server.log();
  EXPECT_EQ(field(runs[0], "client"), "127.0.0.1") << shown(runs[0]);
  EXPECT_EQ(field(runs[0], "proxy"), "") << shown(runs[0]);
  // The CLI works through it all the same.
  const auto ran = cmdcast_cli("run " + proxy.url() + " --cacert " + pki.ca() + " box lines");
  EXPECT_EQ(ran.status, 0) << ran.err;
  EXPECT_EQ(ran.out, "line 1\nline 2\nline 3\n");
}

// nginx whose cmdcast-server is down answers the upgrade with 502: that is not a proxy losing
// upgrades, and the CLI does not say it is.
TEST(ProxyDown, ThroughNginxWhoseServerIsDownTheCliSaysSoWithoutBlamingUpgrades) {
  tls_fixture pki;
  nginx_proxy proxy({free_loopback_port(), pki.loopback(), true});
  const auto ran = cmdcast_cli("run " + proxy.url() + " --cacert " + pki.ca() + " box lines");
  EXPECT_NE(ran.status, 0);
  EXPECT_EQ(ran.out, "");
  EXPECT_TRUE(contains(ran.err, "was answered with HTTP 502 (is cmdcast-server behind a proxy down or unreachable?)")) << ran.err;
  EXPECT_FALSE(contains(ran.err, "WebSocket upgrades")) << ran.err;
  EXPECT_FALSE(contains(ran.err, "<html>")) << ran.err;
}

}  // namespace
}  // namespace cmdcast::testing
