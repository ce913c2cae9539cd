// The cmdcast CLI's fleet runs (`cmdcast run SERVER @GROUP ...`, `cmdcast watch SERVER BATCH_ID`)
// as a user runs them in a shell, against the real server and a loopback sshd: several machine
// entries on the one sshd and one whose port nobody listens on.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <future>
#include <atomic>
#include <mutex>
#include <regex>
#include <thread>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "server_harness.hpp"

namespace cmdcast::testing {
namespace {

program_result cmdcast_cli(const std::string& args) { return run_program(std::string(CMDCAST_CLI_BINARY) + " " + args); }

/// The lines of `text` that start with "machine | ", without it.
std::vector<std::string> lines_of(const std::string& text, const std::string& machine) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    if (line.starts_with(machine + " | ")) out.push_back(line.substr(machine.size() + 3));
  }
  return out;
}

/// The summary table's row of `machine`: its cells.
std::vector<std::string> row_of(const std::string& err, const std::string& machine) {
  const auto header = err.find("MACHINE  ");
  if (header == std::string::npos) return {};
  std::istringstream in(err.substr(header));
  for (std::string line; std::getline(in, line);) {
    std::istringstream cells(line);
    std::vector<std::string> row;
    for (std::string c; cells >> c;) row.push_back(c);
    if (!row.empty() && row[0] == machine) return row;
  }
  return {};
}

class FleetCli : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    sshd_ = std::make_unique<loopback_sshd>();
    std::string down = sshd_->machine_toml("down");
    const auto at = down.find("port = ");
    down.replace(at, down.find('\n', at) - at, "port = 1");  // nobody listens there
    server_ = std::make_unique<server_process>(
        *sshd_, "", std::vector<std::string>{},
        sshd_->machine_toml("m2") + sshd_->machine_toml("m3") + sshd_->machine_toml("m4") + down +
            "[groups]\nfour = [\"box\", \"m2\", \"m3\", \"m4\"]\nfive = [\"box\", \"m2\", \"down\", \"m3\", \"m4\"]\n");
  }
  static void TearDownTestSuite() {
    server_.reset();
    sshd_.reset();
  }
  static std::uint16_t port() { return server_->port(); }
  static std::string server() { return "127.0.0.1:" + std::to_string(port()); }
  /// The newest batch of `action` (GET /batches).
  static common::batch_record newest_batch(const std::string& action) {
    auto list = common::decode_batch_records(http_request(port(), http::verb::get, "/batches", viewer_token).body);
    EXPECT_TRUE(list.ok());
    common::batch_record newest;
    if (list.ok()) {
      for (const auto& b : *list) {
        if (b.action_type == action && b.started_at >= newest.started_at) newest = b;
      }
    }
    return newest;
  }

  static inline std::unique_ptr<loopback_sshd> sshd_;
  static inline std::unique_ptr<server_process> server_;
};

TEST_F(FleetCli, AGroupWithAMachineDownPrintsEveryLineBySourceTheSummaryAndExits1) {
  const auto r = cmdcast_cli("run " + server() + " @five lines");
  EXPECT_EQ(r.status, 1) << r.err;
  for (const std::string m : {"box", "m2", "m3", "m4"}) {
    EXPECT_EQ(lines_of(r.out, m), (std::vector<std::string>{"line 1", "line 2", "line 3"})) << m << "\n" << r.out;
    EXPECT_EQ(lines_of(r.err, m), std::vector<std::string>{"done"}) << m << "\n" << r.err;
    EXPECT_EQ(row_of(r.err, m), (std::vector<std::string>{m, "exited", "0", row_of(r.err, m).at(3)})) << r.err;
  }
  EXPECT_TRUE(lines_of(r.out, "down").empty()) << r.out;
  const auto down = lines_of(r.err, "down");
  ASSERT_FALSE(down.empty()) << r.err;
  EXPECT_TRUE(down[0].starts_with("cmdcast: ")) << "the server says why: " << down[0];
  const auto row = row_of(r.err, "down");
  ASSERT_EQ(row.size(), 4u) << r.err;
  EXPECT_EQ(row[1], "failed");
  EXPECT_EQ(row[2], "-");
  EXPECT_NE(r.err.find("\n4 succeeded, 1 failed\n"), std::string::npos) << r.err;
  EXPECT_EQ(r.out.find('\x1b'), std::string::npos) << "no colour without a terminal";
  EXPECT_EQ(r.err.find('\x1b'), std::string::npos) << "no colour without a terminal";
}

TEST_F(FleetCli, AllSucceededExits0AndAFailingCodeIsTheExitStatus) {
  const auto ok = cmdcast_cli("run " + server() + " @four restart_service service=nginx");
  EXPECT_EQ(ok.status, 0) << ok.err;
  std::vector<std::string> out_lines;
  std::istringstream in(ok.out);
  for (std::string line; std::getline(in, line);) out_lines.push_back(line);
  std::sort(out_lines.begin(), out_lines.end());
  EXPECT_EQ(out_lines, (std::vector<std::string>{"box | restarting nginx", "m2 | restarting nginx",
                                                 "m3 | restarting nginx", "m4 | restarting nginx"}))
      << ok.out;
  EXPECT_TRUE(ok.err.starts_with("MACHINE  STATE   EXIT  DURATION\n")) << ok.err;
  EXPECT_TRUE(ok.err.ends_with("\n4 succeeded\n")) << ok.err;
  const auto failing = cmdcast_cli("run " + server() + " @four fail");
  EXPECT_EQ(failing.status, 3) << failing.err;
  EXPECT_EQ(failing.out, "");
  for (const std::string m : {"box", "m2", "m3", "m4"}) {
    EXPECT_EQ(lines_of(failing.err, m), std::vector<std::string>{"oops"}) << failing.err;
    EXPECT_EQ(row_of(failing.err, m).at(2), "3") << failing.err;
  }
}

TEST_F(FleetCli, ParallelAndStopOnFailureAreForwarded) {
  const std::string dir = "/tmp/cmdcast-par-cli" + std::to_string(::getpid());
  std::filesystem::remove(dir + ".log");
  const auto r = cmdcast_cli("run " + server() + " @four concurrency dir=" + dir + " --parallel 2");
  EXPECT_EQ(r.status, 0) << r.err;
  const auto b = newest_batch("concurrency");
  EXPECT_EQ(b.parallel, 2);
  EXPECT_FALSE(b.stop_on_failure);
  std::ifstream log(dir + ".log");
  std::vector<int> seen;
  for (int n; log >> n;) seen.push_back(n);
  ASSERT_EQ(seen.size(), 4u) << "each ran once";
  EXPECT_LE(*std::max_element(seen.begin(), seen.end()), 2) << "never more than two at once, on the remote";
  std::filesystem::remove(dir + ".log");
  std::filesystem::remove_all(dir);

  const auto stopped = cmdcast_cli("run " + server() + " @four fail --parallel=1 --stop-on-failure");
  EXPECT_EQ(stopped.status, 3) << stopped.err;
  const auto s = newest_batch("fail");
  EXPECT_TRUE(s.stop_on_failure);
  EXPECT_EQ(s.parallel, 1);
  EXPECT_EQ(row_of(stopped.err, "box"), (std::vector<std::string>{"box", "exited", "3", row_of(stopped.err, "box").at(3)}));
  for (const std::string m : {"m2", "m3", "m4"}) {
    EXPECT_EQ(lines_of(stopped.err, m),
              std::vector<std::string>{"cmdcast: skipped: the fleet run stops on failure, and \"box\" failed"})
        << stopped.err;
    EXPECT_EQ(row_of(stopped.err, m).at(1), "cancelled") << stopped.err;
  }
  EXPECT_NE(stopped.err.find("\n1 failed, 3 cancelled\n"), std::string::npos) << stopped.err;
  // Only with a group.
  const auto misused = cmdcast_cli("run " + server() + " box lines --parallel 2");
  EXPECT_EQ(misused.status, 2);
  EXPECT_TRUE(misused.err.starts_with("cmdcast: --parallel is for a fleet run")) << misused.err;
}

TEST_F(FleetCli, AViewerIsRefusedWithTheServersMessageButMayWatch) {
  const auto refused = cmdcast_cli("run " + server() + " @four lines --token " + viewer_token);
  EXPECT_EQ(refused.status, 2);
  EXPECT_EQ(refused.out, "");
  EXPECT_EQ(refused.err, "cmdcast: forbidden: running a command needs the operator role\n");
  const auto unknown = cmdcast_cli("run " + server() + " @nope lines");
  EXPECT_EQ(unknown.status, 2);
  EXPECT_EQ(unknown.err, "cmdcast: unknown_machine: unknown group \"nope\"\n");
  // watch takes a batch's id as well as an execution's.
  const auto answer = http_request(port(), http::verb::post, "/groups/four/commands", operator_token, run_request("lines"));
  ASSERT_EQ(answer.status, 202u) << answer.body;
  const auto b = common::decode_batch_record(answer.body);
  ASSERT_TRUE(b.ok());
  const auto watched = cmdcast_cli("watch " + server() + " " + b->batch_id + " --token " + viewer_token);
  EXPECT_EQ(watched.status, 0) << watched.err;
  for (const std::string m : {"box", "m2", "m3", "m4"}) {
    EXPECT_EQ(lines_of(watched.out, m), (std::vector<std::string>{"line 1", "line 2", "line 3"})) << watched.out;
  }
  EXPECT_TRUE(watched.err.ends_with("\n4 succeeded\n")) << watched.err;
  // ...and after the end, from what the server still holds.
  const auto again = cmdcast_cli("watch " + server() + " " + b->batch_id);
  EXPECT_EQ(again.status, 0) << again.err;
  EXPECT_EQ(lines_of(again.out, "m3").size(), 3u) << again.out;
}

TEST_F(FleetCli, CtrlCCancelsTheWholeBatch) {
  // SIGINT once two machines run, as a user's Ctrl-C: the batch is cancelled, the CLI says so
  // and exits 1.
  const std::string pid_file = "/tmp/cmdcast-cli-pid-" + std::to_string(::getpid());
  auto run = std::async(std::launch::async, [&] {
    return run_program("sh -c '" + std::string(CMDCAST_CLI_BINARY) + " run " + server() +
                       " @four forever --parallel 2 & echo $! > " + pid_file + "; wait $!'");
  });
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (std::chrono::steady_clock::now() < deadline && newest_batch("forever").counts.running < 2) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  int pid = 0;
  std::ifstream(pid_file) >> pid;
  std::filesystem::remove(pid_file);
  ASSERT_GT(pid, 0);
  ::kill(pid, SIGINT);
  const auto r = run.get();
  EXPECT_EQ(r.status, 1) << r.err;
  EXPECT_NE(r.err.find("cmdcast: cancelling the fleet run (Ctrl-C again to leave it running and detach)"),
            std::string::npos)
      << r.err;
  EXPECT_NE(r.err.find("\n4 cancelled\n"), std::string::npos) << r.err;
  const auto b = newest_batch("forever");
  EXPECT_EQ(b.state, "cancelled");
  for (const auto& m : b.executions) EXPECT_EQ(record_of(port(), m.execution_id).state, "cancelled") << m.machine_id;
}

TEST_F(FleetCli, MachinesShowTheGroups) {
  const auto r = cmdcast_cli("machines " + server());
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.out.find("\ngroups (run SERVER @GROUP ACTION)\n"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("\n  @five  box m2 m3 m4 down\n"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("\n  @four  box m2 m3 m4\n"), std::string::npos) << r.out;
}

}  // namespace
}  // namespace cmdcast::testing

namespace cmdcast::testing {
namespace {

/// A TCP relay to the server on loopback that cuts the first batch stream (a WebSocket to
/// /batches/{id}/stream without `after`) once two stdout events have gone through it: a
/// connection that drops mid-run. Everything else passes untouched.
class cutting_relay {
 public:
  explicit cutting_relay(std::uint16_t target) : target_(target) {
    listener_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ::bind(listener_, reinterpret_cast<sockaddr*>(&a), sizeof a);
    ::listen(listener_, 16);
    socklen_t len = sizeof a;
    ::getsockname(listener_, reinterpret_cast<sockaddr*>(&a), &len);
    port_ = ntohs(a.sin_port);
    acceptor_ = std::thread([this] {
      while (!stop_) {
        pollfd p{listener_, POLLIN, 0};
        if (::poll(&p, 1, 100) <= 0) continue;
        const int client = ::accept(listener_, nullptr, nullptr);
        if (client < 0) continue;
        std::lock_guard lock(mutex_);
        pipes_.emplace_back([this, client] { pump(client); });
      }
    });
  }
  ~cutting_relay() {
    stop_ = true;
    acceptor_.join();
    std::lock_guard lock(mutex_);
    for (auto& t : pipes_) t.join();
    ::close(listener_);
  }
  std::uint16_t port() const { return port_; }
  bool cut() const { return cut_; }
  std::vector<std::string> request_lines() {
    std::lock_guard lock(mutex_);
    return requests_;
  }

 private:
  void pump(int client) {
    const int server = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons(target_);
    if (::connect(server, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
      ::close(client);
      ::close(server);
      return;
    }
    std::string head;  // the client's first bytes: its request line
    bool to_cut = false;
    int stdouts = 0;
    char buf[65536];
    while (!stop_) {
      pollfd p[2] = {{client, POLLIN, 0}, {server, POLLIN, 0}};
      if (::poll(p, 2, 100) <= 0) continue;
      if (p[0].revents) {
        const auto n = ::read(client, buf, sizeof buf);
        if (n <= 0) break;
        if (head.empty()) {
          head.assign(buf, static_cast<std::size_t>(n));
          head = head.substr(0, head.find("\r\n"));
          std::lock_guard lock(mutex_);
          requests_.push_back(head);
          to_cut = !cut_ && head.find("/batches/") != std::string::npos &&
                   head.find("/stream") != std::string::npos && head.find("after=") == std::string::npos;
        }
        if (::write(server, buf, static_cast<std::size_t>(n)) != n) break;
      }
      if (p[1].revents) {
        const auto n = ::read(server, buf, sizeof buf);
        if (n <= 0) break;
        if (::write(client, buf, static_cast<std::size_t>(n)) != n) break;
        if (to_cut) {
          const std::string_view got(buf, static_cast<std::size_t>(n));
          for (auto at = got.find("\"type\":\"stdout\""); at != std::string_view::npos; at = got.find("\"type\":\"stdout\"", at + 1)) {
            ++stdouts;
          }
          if (stdouts >= 2) {
            cut_ = true;
            break;
          }
        }
      }
    }
    ::close(client);
    ::close(server);
  }

  std::uint16_t target_;
  std::uint16_t port_ = 0;
  int listener_ = -1;
  std::atomic<bool> stop_{false}, cut_{false};
  std::thread acceptor_;
  std::mutex mutex_;
  std::vector<std::thread> pipes_;
  std::vector<std::string> requests_;
};

TEST_F(FleetCli, AStreamThatDropsMidRunIsResumedWithEachExecutionsOwnSeq) {
  cutting_relay relay(port());
  const auto r = cmdcast_cli("run 127.0.0.1:" + std::to_string(relay.port()) + " @four lines");
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_TRUE(relay.cut()) << "the first stream was cut";
  for (const std::string m : {"box", "m2", "m3", "m4"}) {
    EXPECT_EQ(lines_of(r.out, m), (std::vector<std::string>{"line 1", "line 2", "line 3"})) << "no loss, no repeat\n" << r.out;
  }
  bool resumed = false;
  for (const auto& line : relay.request_lines()) {
    resumed = resumed || (line.find("/stream?after=") != std::string::npos && line.find(':') != std::string::npos);
  }
  EXPECT_TRUE(resumed) << "a second stream, with after=EXEC:SEQ,...";
}

TEST_F(FleetCli, OnATerminalEachMachineHasItsColourAndProgressLinesStayAtTheBottom) {
  // script(1) gives the CLI a terminal (stdout and stderr both); what it wrote comes out here.
  const auto r = run_program("script -qfec \"TERM=xterm COLUMNS=100 LINES=40 " + std::string(CMDCAST_CLI_BINARY) + " run " +
                             server() + " @four lines\" /dev/null");
  EXPECT_EQ(r.status, 0) << r.out;
  // The names padded to line up, each with its colour.
  EXPECT_NE(r.out.find("\x1b[36mbox |\x1b[0m line 1"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("\x1b[35mm2  |\x1b[0m line 1"), std::string::npos) << r.out;
  // The progress lines: drawn, then erased before more output and at the end.
  EXPECT_NE(r.out.find("[      running       ]"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("fleet run: "), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("\x1b[J"), std::string::npos) << r.out;
  const auto table = r.out.find("MACHINE  STATE");
  ASSERT_NE(table, std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("fleet run: ", table), std::string::npos) << "no progress line after the summary";
  const auto no_colour = run_program("script -qfec \"NO_COLOR=1 " + std::string(CMDCAST_CLI_BINARY) + " run " + server() +
                                     " @four lines\" /dev/null");
  EXPECT_EQ(no_colour.status, 0);
  EXPECT_FALSE(std::regex_search(no_colour.out, std::regex("\x1b\\[[0-9;]*m"))) << "NO_COLOR: no colours" << no_colour.out;
  EXPECT_NE(no_colour.out.find("m2  | line 1"), std::string::npos) << no_colour.out;
}

}  // namespace
}  // namespace cmdcast::testing
