// The SSH executor against a real OpenSSH sshd on loopback.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>

#include <algorithm>
#include <memory>
#include <numeric>
#include <random>
#include <thread>

#include "digest.hpp"
#include "loopback_sshd.hpp"
#include "ssh/machine_connection.hpp"

namespace cmdcast::testing {
namespace {

namespace net = boost::asio;
using namespace server::ssh;
using common::error_code;
using common::exit_state;
using common::output_stream;

struct captured {
  run_result result;
  std::string out;
  std::string err;
};

/// A marker unique to this test run, to find its remote processes.
std::string unique_marker() {
  std::random_device rd;
  return std::to_string(4000 + rd() % 1000) + "." + std::to_string(rd() % 1000000);
}

class SshExecutor : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { sshd_ = new loopback_sshd(/*accept_ssh_rsa=*/true); }
  static void TearDownTestSuite() {
    delete sshd_;
    sshd_ = nullptr;
  }

  std::shared_ptr<machine_connection> connection(machine_endpoint endpoint, connection_options options = {}) {
    return std::make_shared<machine_connection>(io_.get_executor(), std::move(endpoint), options);
  }

  /// Runs one command to its end; `on_output` may act on what arrives (cancel, kill sshd).
  captured run(const std::shared_ptr<machine_connection>& c, const std::string& command,
               run_options options = {}, std::shared_ptr<run_control> control = nullptr,
               std::function<void(const captured&)> on_output = nullptr) {
    captured cap;
    bool done = false;
    net::co_spawn(io_, [&]() -> net::awaitable<void> {
      cap.result = co_await c->run(command, [&](output_stream s, std::string_view data) {
        (s == output_stream::out ? cap.out : cap.err).append(data);
        if (on_output) on_output(cap);
      }, control, options);
      done = true;
    }, net::detached);
    while (!done) io_.run_one();
    return cap;
  }

  captured run(const std::string& command, run_options options = {}) {
    return run(connection(sshd_->endpoint()), command, options);
  }

  /// Whether a process whose command line contains `marker` exists on the remote side.
  bool remote_process_exists(const std::string& marker, const loopback_sshd* via = nullptr) {
    // "[s]leep" keeps pgrep from matching the shell that runs it.
    const auto check = run(connection((via ? via : sshd_)->endpoint()),
                           "pgrep -f -- '[s]leep " + marker + "' >/dev/null && echo yes || echo no");
    EXPECT_EQ(check.result.state, exit_state::exited);
    return check.out == "yes\n";
  }

  static loopback_sshd* sshd_;
  net::io_context io_;
  // The tests drive io_ with run_one() until their coroutines end: never let it run dry.
  net::executor_work_guard<net::io_context::executor_type> work_{io_.get_executor()};
};

loopback_sshd* SshExecutor::sshd_ = nullptr;

TEST_F(SshExecutor, StdoutAndStderrArriveSeparatelyAndComplete) {
  const auto c = run("printf 'out 1\\n'; printf 'err 1\\n' >&2; printf 'out 2'; printf 'é✓' >&2");
  EXPECT_EQ(c.result.state, exit_state::exited);
  EXPECT_EQ(c.result.exit_code, 0);
  EXPECT_EQ(c.out, "out 1\nout 2");
  EXPECT_EQ(c.err, "err 1\né✓");
  EXPECT_EQ(c.result.bytes_stdout, c.out.size());
  EXPECT_EQ(c.result.bytes_stderr, c.err.size());
}

TEST_F(SshExecutor, HundredMegabytesArriveIntactOnBothStreams) {
  // Pseudo-random bytes (AES-CTR of zeros), 60 MB on stdout and 40 MB on stderr at once.
  const std::string gen =
      "openssl enc -aes-128-ctr -nosalt -K 000102030405060708090a0b0c0d0e0f -iv 0 -in /dev/zero 2>/dev/null | head -c ";
  const std::string out_cmd = gen + "60000000";
  const std::string err_cmd = gen + "40000000 | tr 'a' 'b'";
  const std::string expect_out = shell(out_cmd + " | sha256sum").substr(0, 64);
  const std::string expect_err = shell(err_cmd + " | sha256sum").substr(0, 64);

  sha256 out_hash, err_hash;
  std::uint64_t out_bytes = 0, err_bytes = 0;
  std::size_t largest_read = 0;
  run_result result;
  bool done = false;
  auto conn = connection(sshd_->endpoint());
  net::co_spawn(io_, [&]() -> net::awaitable<void> {
    result = co_await conn->run("(" + out_cmd + ") & (" + err_cmd + ") >&2; wait",
                                [&](output_stream s, std::string_view data) {
                                  largest_read = std::max(largest_read, data.size());
                                  if (s == output_stream::out) {
                                    out_hash.add(data);
                                    out_bytes += data.size();
                                  } else {
                                    err_hash.add(data);
                                    err_bytes += data.size();
                                  }
                                });
    done = true;
  }, net::detached);
  while (!done) io_.run_one();
  EXPECT_EQ(result.state, exit_state::exited);
  EXPECT_EQ(result.exit_code, 0);
  EXPECT_EQ(out_bytes, 60000000u);
  EXPECT_EQ(err_bytes, 40000000u);
  EXPECT_EQ(out_hash.hex(), expect_out);
  EXPECT_EQ(err_hash.hex(), expect_err);
  EXPECT_LE(largest_read, connection_options{}.max_read_buffer_bytes);
}

TEST_F(SshExecutor, ReadsGrowWhileTheyFillTheBufferAndNoFurther) {
  connection_options options;
  options.read_buffer_bytes = 4096;
  options.max_read_buffer_bytes = 16384;
  std::vector<std::size_t> reads;
  const auto c = run(connection(sshd_->endpoint(), options), "head -c 4000000 /dev/zero | tr '\\0' a", {}, nullptr,
                     [&](const captured& so_far) {
                       const auto read = so_far.out.size() - std::accumulate(reads.begin(), reads.end(), std::size_t{0});
                       if (read == 0) return;  // stderr
                       reads.push_back(read);
                       // Stop reading for a moment after the first read: the output waits, so
                       // the reads after it are full.
                       if (reads.size() == 1) std::this_thread::sleep_for(std::chrono::milliseconds(300));
                     });
  EXPECT_EQ(c.result.exit_code, 0);
  EXPECT_EQ(c.out, std::string(4000000, 'a'));
  ASSERT_GE(reads.size(), 3u);
  // A first read that filled its 4 KiB has already doubled the buffer.
  EXPECT_LE(reads[0], 4096u);
  EXPECT_EQ(reads[1], reads[0] == 4096 ? 8192u : 4096u);
  EXPECT_EQ(*std::max_element(reads.begin(), reads.end()), 16384u);
}

TEST_F(SshExecutor, ReportsExitCodes) {
  auto conn = connection(sshd_->endpoint());
  EXPECT_EQ(run(conn, "true").result.exit_code, 0);
  EXPECT_EQ(run(conn, "false").result.exit_code, 1);
  const auto c = run(conn, "echo bye; exit 42");
  EXPECT_EQ(c.result.state, exit_state::exited);
  EXPECT_EQ(c.result.exit_code, 42);
  EXPECT_FALSE(c.result.signal);
  EXPECT_EQ(run(conn, "no-such-command-anywhere").result.exit_code, 127);
  EXPECT_EQ(conn->connections_made(), 1u);
}

TEST_F(SshExecutor, ReportsExitBySignal) {
  const auto c = run("echo before; kill -KILL $$");
  EXPECT_EQ(c.result.state, exit_state::exited);
  EXPECT_EQ(c.result.signal, "KILL");
  EXPECT_FALSE(c.result.exit_code);
  EXPECT_EQ(c.out, "before\n");
}

TEST_F(SshExecutor, StdinIsClosed) {
  const auto c = run("cat; read line || echo 'stdin at EOF'");
  EXPECT_EQ(c.result.exit_code, 0);
  EXPECT_EQ(c.out, "stdin at EOF\n");
}

TEST_F(SshExecutor, ShellQuotingKeepsHostileTextLiteral) {
  for (const std::string text : {"nginx; rm -rf /", "$(reboot)", "`id`", "a'b\"c\\d", "x\ny", "*", "-n"}) {
    const auto c = run("printf %s " + shell_quote(text));
    EXPECT_EQ(c.out, text);
    EXPECT_EQ(c.result.exit_code, 0);
  }
}

TEST_F(SshExecutor, ManyConcurrentCommandsShareOneConnection) {
  connection_options options;
  options.max_channels = 8;
  auto conn = connection(sshd_->endpoint(), options);
  constexpr int count = 40;
  std::vector<captured> results(count);
  int done = 0;
  std::size_t most_running = 0;
  for (int i = 0; i < count; ++i) {
    net::co_spawn(io_, [&, i]() -> net::awaitable<void> {
      results[i].result = co_await conn->run("echo start " + std::to_string(i) + "; sleep 0.2; echo end >&2",
                                             [&, i](output_stream s, std::string_view data) {
                                               most_running = std::max(most_running, conn->running());
                                               (s == output_stream::out ? results[i].out : results[i].err).append(data);
                                             });
      ++done;
    }, net::detached);
  }
  while (done < count) io_.run_one();
  for (int i = 0; i < count; ++i) {
    EXPECT_EQ(results[i].result.exit_code, 0) << i;
    EXPECT_EQ(results[i].out, "start " + std::to_string(i) + "\n");
    EXPECT_EQ(results[i].err, "end\n");
  }
  EXPECT_EQ(conn->connections_made(), 1u);
  EXPECT_EQ(most_running, 8u);
  EXPECT_EQ(conn->running(), 0u);
}

TEST_F(SshExecutor, CancelStopsTheRemoteProcessAndItsChildren) {
  const std::string marker = unique_marker();
  auto control = std::make_shared<run_control>();
  const auto c = run(connection(sshd_->endpoint()),
                     "sleep " + marker + " & sleep " + marker + " & echo ready; wait", {}, control,
                     [&](const captured& cap) {
                       if (cap.out == "ready\n") control->cancel();
                     });
  EXPECT_EQ(c.result.state, exit_state::cancelled);
  EXPECT_EQ(c.result.signal, "TERM");
  EXPECT_FALSE(remote_process_exists(marker));
}

TEST_F(SshExecutor, CancelEscalatesToKillWhenTermIsIgnored) {
  const std::string marker = unique_marker();
  auto control = std::make_shared<run_control>();
  run_options options;
  options.kill_grace = std::chrono::milliseconds(300);
  const auto c = run(connection(sshd_->endpoint()),
                     "trap '' TERM; sleep " + marker + " & echo ready; wait", options, control,
                     [&](const captured& cap) {
                       if (cap.out == "ready\n") control->cancel();
                     });
  EXPECT_EQ(c.result.state, exit_state::cancelled);
  EXPECT_EQ(c.result.signal, "KILL");
  EXPECT_FALSE(remote_process_exists(marker));
}

TEST_F(SshExecutor, CancelRightAfterTheStartStillStopsTheCommand) {
  // Cancelled before any output: the process group is not known yet at that moment.
  const std::string marker = unique_marker();
  captured c;
  bool done = false;
  auto conn = connection(sshd_->endpoint());
  auto early = std::make_shared<run_control>();
  net::co_spawn(io_, [&]() -> net::awaitable<void> {
    const output_handler ignore = [](output_stream, std::string_view) {};
    auto running = conn->run("sleep " + marker, ignore, early);
    early->cancel();  // before the channel even opened
    c.result = co_await std::move(running);
    done = true;
  }, net::detached);
  while (!done) io_.run_one();
  EXPECT_EQ(c.result.state, exit_state::cancelled);
  EXPECT_FALSE(remote_process_exists(marker));
}

TEST_F(SshExecutor, CommandTimeoutStopsIt) {
  const std::string marker = unique_marker();
  run_options options;
  options.timeout = std::chrono::milliseconds(500);
  const auto c = run("echo working; sleep " + marker, options);
  EXPECT_EQ(c.result.state, exit_state::timed_out);
  EXPECT_EQ(c.out, "working\n");
  EXPECT_FALSE(remote_process_exists(marker));
}

TEST_F(SshExecutor, CancelBeforeTheCommandStartsRunsNothing) {
  connection_options options;
  options.max_channels = 1;
  auto conn = connection(sshd_->endpoint(), options);
  auto blocker = std::make_shared<run_control>();
  auto queued = std::make_shared<run_control>();
  run_result first, second;
  int done = 0;
  net::co_spawn(io_, [&]() -> net::awaitable<void> {
    first = co_await conn->run("echo x; sleep 30", [&](output_stream, std::string_view) {
      queued->cancel();   // the second run is waiting for the only channel: cancel it there
      blocker->cancel();
    }, blocker);
    ++done;
  }, net::detached);
  net::co_spawn(io_, [&]() -> net::awaitable<void> {
    second = co_await conn->run("echo should-not-run", [](output_stream, std::string_view) {
      ADD_FAILURE() << "a cancelled queued run produced output";
    }, queued);
    ++done;
  }, net::detached);
  while (done < 2) io_.run_one();
  EXPECT_EQ(first.state, exit_state::cancelled);
  EXPECT_EQ(second.state, exit_state::cancelled);
  EXPECT_EQ(conn->waiting(), 0u);
}

TEST_F(SshExecutor, RsaKeysAuthenticateWhereTheServerAcceptsSshRsa) {
  // libssh2 1.10 signs with ssh-rsa (SHA-1) only, which OpenSSH 8.8+ refuses unless allowed:
  // the suite's sshd allows it; see the next test for a server that does not.
  auto endpoint = sshd_->endpoint();
  endpoint.identity = sshd_->make_client_key("rsa-client", "rsa", true);
  const auto c = run(connection(endpoint), "echo rsa ok");
  EXPECT_EQ(c.result.state, exit_state::exited) << (c.result.error ? c.result.error->message : "");
  EXPECT_EQ(c.out, "rsa ok\n");
}

TEST_F(SshExecutor, WrongKeyIsAnAuthFailure) {
  auto endpoint = sshd_->endpoint();
  endpoint.identity = sshd_->make_client_key("stranger", "ed25519", false);
  const auto c = run(connection(endpoint), "echo never");
  EXPECT_EQ(c.result.state, exit_state::failed);
  ASSERT_TRUE(c.result.error);
  EXPECT_EQ(c.result.error->code, error_code::ssh_auth_failed);
  EXPECT_NE(c.result.error->message.find("public key authentication as "), std::string::npos)
      << c.result.error->message;
  EXPECT_EQ(c.out, "");
}

TEST_F(SshExecutor, UnknownHostKeyIsRefusedWithItsFingerprint) {
  auto endpoint = sshd_->endpoint();
  endpoint.known_hosts = sshd_->dir() + "/empty_known_hosts";
  shell("touch " + endpoint.known_hosts);
  const auto c = run(connection(endpoint), "echo never");
  EXPECT_EQ(c.result.state, exit_state::failed);
  ASSERT_TRUE(c.result.error);
  EXPECT_EQ(c.result.error->code, error_code::host_key_mismatch);
  const std::string& m = c.result.error->message;
  EXPECT_NE(m.find("is not in"), std::string::npos) << m;
  EXPECT_NE(m.find("ssh-ed25519 " + sshd_->host_key_fingerprint()), std::string::npos) << m;
}

TEST_F(SshExecutor, ChangedHostKeyIsRefused) {
  shell("ssh-keygen -q -t ed25519 -N '' -f " + sshd_->dir() + "/other_hostkey");
  auto endpoint = sshd_->endpoint();
  endpoint.known_hosts = sshd_->write_known_hosts("changed_known_hosts", sshd_->dir() + "/other_hostkey.pub");
  const auto c = run(connection(endpoint), "echo never");
  EXPECT_EQ(c.result.state, exit_state::failed);
  ASSERT_TRUE(c.result.error);
  EXPECT_EQ(c.result.error->code, error_code::host_key_mismatch);
  EXPECT_NE(c.result.error->message.find("does not match"), std::string::npos) << c.result.error->message;
  EXPECT_NE(c.result.error->message.find(sshd_->host_key_fingerprint()), std::string::npos);
}

TEST_F(SshExecutor, MissingKnownHostsFileIsRefused) {
  auto endpoint = sshd_->endpoint();
  endpoint.known_hosts = sshd_->dir() + "/no-such-file";
  const auto c = run(connection(endpoint), "echo never");
  ASSERT_TRUE(c.result.error);
  EXPECT_EQ(c.result.error->code, error_code::host_key_mismatch);
  EXPECT_NE(c.result.error->message.find("cannot read known_hosts"), std::string::npos);
}

TEST_F(SshExecutor, ConnectionRefused) {
  auto endpoint = sshd_->endpoint();
  endpoint.port = free_loopback_port();
  const auto c = run(connection(endpoint), "echo never");
  EXPECT_EQ(c.result.state, exit_state::failed);
  ASSERT_TRUE(c.result.error);
  EXPECT_EQ(c.result.error->code, error_code::ssh_connect_failed);
  EXPECT_NE(c.result.error->message.find("Connection refused"), std::string::npos) << c.result.error->message;
}

TEST_F(SshExecutor, NameNotResolved) {
  auto endpoint = sshd_->endpoint();
  endpoint.host = "no-such-host.invalid";
  const auto c = run(connection(endpoint), "echo never");
  ASSERT_TRUE(c.result.error);
  EXPECT_EQ(c.result.error->code, error_code::ssh_connect_failed);
  EXPECT_NE(c.result.error->message.find("cannot resolve host \"no-such-host.invalid\""), std::string::npos)
      << c.result.error->message;
}

TEST_F(SshExecutor, AnAddressThatNeverAnswersTimesOut) {
  // A listener whose accept queue is full: the kernel drops further SYNs, so a connect hangs
  // exactly as it does towards a host that is down.
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  ASSERT_EQ(::listen(fd, 0), 0);
  socklen_t len = sizeof addr;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  std::vector<int> fillers;
  for (int i = 0; i < 4; ++i) {
    const int f = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    ::connect(f, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
    fillers.push_back(f);
  }
  auto endpoint = sshd_->endpoint();
  endpoint.port = ntohs(addr.sin_port);
  connection_options options;
  options.connect_timeout = std::chrono::milliseconds(300);
  const auto c = run(connection(endpoint, options), "echo never");
  ASSERT_TRUE(c.result.error);
  EXPECT_EQ(c.result.error->code, error_code::ssh_connect_failed);
  EXPECT_NE(c.result.error->message.find("no answer from 127.0.0.1"), std::string::npos) << c.result.error->message;
  for (int f : fillers) ::close(f);
  ::close(fd);
}

TEST_F(SshExecutor, AServerThatNeverSpeaksSshTimesOut) {
  net::ip::tcp::acceptor acceptor(io_, {net::ip::make_address("127.0.0.1"), 0});
  net::ip::tcp::socket silent(io_);
  acceptor.async_accept(silent, [](boost::system::error_code) {});
  auto endpoint = sshd_->endpoint();
  endpoint.port = acceptor.local_endpoint().port();
  connection_options options;
  options.auth_timeout = std::chrono::milliseconds(300);
  const auto c = run(connection(endpoint, options), "echo never");
  ASSERT_TRUE(c.result.error);
  EXPECT_EQ(c.result.error->code, error_code::ssh_connect_failed);
  EXPECT_NE(c.result.error->message.find("during the SSH handshake within 0.3 s"), std::string::npos)
      << c.result.error->message;
}

/// Tests that kill or restart sshd get one of their own.
class SshExecutorCrashes : public SshExecutor {
 protected:
  static void SetUpTestSuite() {}
  static void TearDownTestSuite() {}
  void SetUp() override { own_ = std::make_unique<loopback_sshd>(); }
  std::unique_ptr<loopback_sshd> own_;
};

TEST_F(SshExecutorCrashes, RsaKeyRefusedByADefaultServerSaysWhy) {
  auto endpoint = own_->endpoint();
  endpoint.identity = own_->make_client_key("rsa-client", "rsa", true);
  const auto c = run(connection(endpoint), "echo never");
  ASSERT_TRUE(c.result.error);
  EXPECT_EQ(c.result.error->code, error_code::ssh_auth_failed);
  EXPECT_NE(c.result.error->message.find("use an ed25519 key"), std::string::npos) << c.result.error->message;
}

TEST_F(SshExecutorCrashes, StartupFilesPrintingToStderrDoNotHideTheProcessGroup) {
  // A login that writes to stderr before the command runs, as a noisy .bashrc does (here the
  // test user's /bin/sh reads no rc file, so sshd's ForceCommand plays it): that text reaches
  // the watcher, and cancel still finds the process group.
  loopback_sshd noisy(false, "ForceCommand echo rc noise >&2; exec /bin/sh -c \"$SSH_ORIGINAL_COMMAND\"\n");
  auto conn = connection(noisy.endpoint());
  const auto plain = run(conn, "echo out; echo err >&2");
  EXPECT_EQ(plain.out, "out\n");
  EXPECT_TRUE(plain.err.starts_with("rc noise\n")) << plain.err;
  EXPECT_TRUE(plain.err.ends_with("\nerr\n")) << plain.err;
  EXPECT_EQ(plain.err.find("cmdcast-pgid"), std::string::npos) << plain.err;
  const std::string marker = unique_marker();
  auto control = std::make_shared<run_control>();
  const auto c = run(conn, "echo ready; sleep " + marker, {}, control, [&](const captured& cap) {
    if (cap.out == "ready\n") control->cancel();
  });
  EXPECT_EQ(c.result.state, exit_state::cancelled);
  EXPECT_EQ(c.err.find("cmdcast-pgid"), std::string::npos) << c.err;
  EXPECT_FALSE(remote_process_exists(marker, &noisy));
}

TEST_F(SshExecutorCrashes, SshdKilledMidCommandIsAFailureNotAnExit) {
  auto conn = connection(own_->endpoint());
  const auto c = run(conn, "echo started; sleep 30; echo never", {}, nullptr, [&](const captured& cap) {
    if (cap.out == "started\n") own_->kill_all();
  });
  EXPECT_EQ(c.result.state, exit_state::failed);
  EXPECT_FALSE(c.result.exit_code);
  ASSERT_TRUE(c.result.error);
  EXPECT_EQ(c.result.error->code, error_code::ssh_disconnected);
  EXPECT_NE(c.result.error->message.find("lost while the command ran"), std::string::npos)
      << c.result.error->message;
}

TEST_F(SshExecutorCrashes, SshdRestartedBetweenCommandsReconnects) {
  auto conn = connection(own_->endpoint());
  EXPECT_EQ(run(conn, "echo one").out, "one\n");
  own_->kill_all();
  own_->start();
  const auto c = run(conn, "echo two");
  EXPECT_EQ(c.result.state, exit_state::exited) << (c.result.error ? c.result.error->message : "");
  EXPECT_EQ(c.out, "two\n");
  EXPECT_EQ(conn->connections_made(), 2u);
}

TEST_F(SshExecutorCrashes, SshdDownThenBackIsReachedAgain) {
  auto conn = connection(own_->endpoint());
  own_->kill_all();
  const auto down = run(conn, "echo one");
  ASSERT_TRUE(down.result.error);
  EXPECT_EQ(down.result.error->code, error_code::ssh_connect_failed);
  own_->start();
  EXPECT_EQ(run(conn, "echo back").out, "back\n");
}

}  // namespace
}  // namespace cmdcast::testing
