// The cmdcast CLI and cmdcast-desktop against cmdcast-server serving HTTPS and WSS, with
// certificates from a private CA made at test time: the clients verify the chain and the name,
// take --cacert for a private CA, and refuse what does not verify with one line and exit code 2.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>

#include "cmdcast/client_net/connection.hpp"
#include "http/transport.hpp"
#include "server_harness.hpp"
#include "tls_fixture.hpp"

namespace cmdcast::testing {
namespace {

program_result cmdcast_cli(const std::string& args) { return run_program(std::string(CMDCAST_CLI_BINARY) + " " + args); }

std::size_t lines_in(const std::string& text) { return static_cast<std::size_t>(std::count(text.begin(), text.end(), '\n')); }

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

/// One server with a certificate from the private CA for 127.0.0.1 and localhost.
class TlsClients : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    pki_ = std::make_unique<tls_fixture>();
    shared_.start([](const std::string&) { return tls_fixture::server_config(pki_->loopback()); });
  }
  static void TearDownTestSuite() {
    shared_.stop();
    pki_.reset();
  }
  static std::string address(const std::string& host = "127.0.0.1") { return host + ":" + std::to_string(shared_.port()); }
  static std::string url(const std::string& host = "127.0.0.1") { return "https://" + address(host); }

  static inline std::unique_ptr<tls_fixture> pki_;
  static inline shared_server shared_;
};

TEST_F(TlsClients, TheCliRunsAndWatchesOverHttpsWithThePrivateCa) {
  const auto ok = cmdcast_cli("run " + url() + " box restart_service service=nginx --cacert " + pki_->ca());
  EXPECT_EQ(ok.status, 0) << ok.err;
  EXPECT_EQ(ok.out, "restarting nginx\n");
  EXPECT_EQ(ok.err, "");
  // By name too (--cacert anywhere on the line), and the remote exit code comes through.
  const auto failing = cmdcast_cli("run --cacert " + pki_->ca() + " " + url("localhost") + " box fail");
  EXPECT_EQ(failing.status, 3) << failing.err;
  EXPECT_EQ(failing.out, "");
  EXPECT_EQ(failing.err, "oops\n");
  // watch: attach over WSS to an execution started over HTTPS.
  const auto accepted =
      https_request(shared_.port(), pki_->ca(), "POST", "/machines/box/commands", operator_token, run_request("lines"));
  ASSERT_EQ(accepted.status, 202u) << accepted.body;
  const auto started = common::decode_run_accepted(accepted.body);
  ASSERT_TRUE(started.ok()) << accepted.body;
  const auto watched = cmdcast_cli("watch " + url() + " " + started->execution_id + " --cacert " + pki_->ca());
  EXPECT_EQ(watched.status, 0) << watched.err;
  EXPECT_EQ(watched.out, "line 1\nline 2\nline 3\n");
  EXPECT_EQ(watched.err, "done\n");
}

TEST_F(TlsClients, AnotherCaIsRefusedWithOneLineAndExitCode2) {
  const auto refused = cmdcast_cli("run " + url() + " box restart_service service=nginx --cacert " + pki_->unrelated_ca());
  EXPECT_EQ(refused.status, 2) << refused.err;
  EXPECT_EQ(refused.out, "");
  EXPECT_EQ(lines_in(refused.err), 1u) << refused.err;
  EXPECT_TRUE(contains(refused.err, "cmdcast: TLS: certificate verify failed for " + address())) << refused.err;
  EXPECT_TRUE(contains(refused.err, "--cacert")) << refused.err;
  // watch gives up at once as well: no retry makes a certificate verify.
  const auto watched = cmdcast_cli("watch " + url() + " some-execution --cacert " + pki_->unrelated_ca());
  EXPECT_EQ(watched.status, 2) << watched.err;
  EXPECT_EQ(lines_in(watched.err), 1u) << watched.err;
}

TEST_F(TlsClients, WithoutCacertThePrivateCaIsNotTrusted) {
  const auto refused = cmdcast_cli("run " + url() + " box restart_service service=nginx");
  EXPECT_EQ(refused.status, 2) << refused.err;
  EXPECT_EQ(refused.out, "");
  EXPECT_EQ(lines_in(refused.err), 1u) << refused.err;
  EXPECT_TRUE(contains(refused.err, "cmdcast: TLS: certificate verify failed for " + address())) << refused.err;
}

TEST_F(TlsClients, ACertificateForAnotherNameIsRefused) {
  loopback_sshd sshd;
  server_process other(sshd, tls_fixture::server_config(pki_->other_name()));
  for (const std::string host : {"127.0.0.1", "localhost"}) {
    const std::string where = host + ":" + std::to_string(other.port());
    const auto refused = cmdcast_cli("run https://" + where + " box restart_service service=nginx --cacert " + pki_->ca());
    EXPECT_EQ(refused.status, 2) << refused.err;
    EXPECT_EQ(refused.out, "");
    EXPECT_EQ(lines_in(refused.err), 1u) << refused.err;
    EXPECT_TRUE(contains(refused.err, "cmdcast: TLS: certificate verify failed for " + where)) << refused.err;
    EXPECT_TRUE(contains(refused.err, "mismatch")) << refused.err;
  }
}

TEST_F(TlsClients, TheDesktopRefusesAnUnverifiedServerBeforeItOpensAWindow) {
  // No display at all: the check must come before the window.
  for (const std::string& ca : {std::string(" --cacert ") + pki_->unrelated_ca(), std::string()}) {
    const auto refused = run_program("DISPLAY= " CMDCAST_DESKTOP_BINARY " --server " + url() + ca);
    EXPECT_EQ(refused.status, 2) << refused.err;
    EXPECT_EQ(lines_in(refused.err), 1u) << refused.err;
    EXPECT_TRUE(contains(refused.err, "cmdcast-desktop: TLS: certificate verify failed for " + address())) << refused.err;
  }
}

// A certificate and key the server cannot use are refused when it starts, naming the file.
TEST(TlsServer, AKeyThatDoesNotMatchItsCertificateOrIsNoPemIsRefused) {
  tls_fixture pki;
  const auto mismatch = server::tls_context::load(pki.loopback().cert, pki.other_name().key);
  ASSERT_FALSE(mismatch.ok());
  EXPECT_NE(mismatch.error().find("does not match the certificate"), std::string::npos) << mismatch.error();
  const auto not_pem = server::tls_context::load("/etc/hostname", pki.loopback().key);
  ASSERT_FALSE(not_pem.ok());
  EXPECT_NE(not_pem.error().find("/etc/hostname: not a usable PEM certificate chain"), std::string::npos) << not_pem.error();
  EXPECT_TRUE(server::tls_context::load(pki.loopback().cert, pki.loopback().key).ok());
}

// A renewed certificate is put in place and the server reloaded: new connections get it,
// without a restart. A key that does not match is refused, and the certificate in force stays.
TEST(TlsServer, AReloadTakesARenewedCertificate) {
  tls_fixture pki;
  loopback_sshd sshd;
  const tls_files in_place{sshd.dir() + "/cert.pem", sshd.dir() + "/key.pem"};
  std::filesystem::copy_file(pki.other_name().cert, in_place.cert);
  std::filesystem::copy_file(pki.other_name().key, in_place.key);
  server_process srv(sshd, tls_fixture::server_config(in_place));
  // For other.example only: a client reaching 127.0.0.1 refuses it.
  EXPECT_EQ(https_request(srv.port(), pki.ca(), "GET", "/healthz", "").status, 0u);

  std::filesystem::copy_file(pki.loopback().cert, in_place.cert, std::filesystem::copy_options::overwrite_existing);
  ASSERT_TRUE(srv.reload("reload_refused")) << "the old key does not match the new certificate";
  EXPECT_EQ(https_request(srv.port(), pki.ca(), "GET", "/healthz", "").status, 0u);
  std::filesystem::copy_file(pki.loopback().key, in_place.key, std::filesystem::copy_options::overwrite_existing);
  ASSERT_TRUE(srv.reload()) << srv.log();
  const auto renewed = https_request(srv.port(), pki.ca(), "GET", "/healthz", "");
  EXPECT_EQ(renewed.status, 200u) << renewed.body;
}

// On a fresh server the first run also opens the machine's SSH connection, whose crypto
// (OpenSSL's, on the same thread) may leave errors in the thread's error queue: a TLS read
// must not take them for its own and drop the WebSocket. Here the cancel sent over WSS during
// that first run reaches the command.
TEST(TlsServer, TheFirstRunOfAFreshServerIsCancelledOverWss) {
  tls_fixture pki;
  loopback_sshd sshd;
  server_process srv(sshd, tls_fixture::server_config(pki.loopback()));
  auto server = client_net::connector::make(
      *client_net::parse_server_url("https://127.0.0.1:" + std::to_string(srv.port())), pki.ca());
  ASSERT_TRUE(server.ok()) << server.error();
  net::io_context io;
  std::vector<event> events;
  net::co_spawn(io, [&]() -> net::awaitable<void> {
    client_net::websocket_client ws(io.get_executor(), *server);
    if (const auto failed = co_await ws.connect("/machines/box/commands/stream", operator_token, std::chrono::seconds(10))) {
      ADD_FAILURE() << failed->message;
      co_return;
    }
    co_await ws.write(run_request("ticks"));
    std::string message;
    while (!co_await ws.read(message)) {
      auto e = common::decode_event(message);
      if (!e.ok()) continue;
      events.push_back(*e);
      if (of_type<common::output_event>(events).size() == 5 && std::holds_alternative<common::output_event>(*e)) {
        co_await ws.write(R"({"type":"cancel"})");
      }
    }
  }, net::detached);
  io.run();
  const auto exits = of_type<common::exit_event>(events);
  ASSERT_EQ(exits.size(), 1u);
  EXPECT_EQ(exits[0].state, common::exit_state::cancelled);
}

}  // namespace
}  // namespace cmdcast::testing
