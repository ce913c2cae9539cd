// cmdcast-desktop as its users run it: a real window on a real X server (Xvfb), talking to the
// real cmdcast-server on a loopback sshd. What the window shows is read from its --state-file and
// from a screenshot of the screen (kept in e2e-artifacts/desktop.png).
#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <boost/json.hpp>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <sstream>
#include <thread>

#include "server_harness.hpp"
#include "tls_fixture.hpp"

extern char** environ;

namespace cmdcast::testing {
namespace {

namespace fs = std::filesystem;
namespace json = boost::json;
using namespace std::chrono_literals;
using clock_type = std::chrono::steady_clock;

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

/// A child process with its output in a log file; killed, if it still runs, when this goes.
class child_process {
 public:
  /// `args[0]` is a path. `env` entries ("NAME=value") are added to this process's environment,
  /// replacing the same names.
  child_process(std::vector<std::string> args, const std::vector<std::string>& env, std::string log)
      : log_(std::move(log)) {
    std::vector<std::string> environment = env;
    for (char** e = environ; *e; ++e) {
      const std::string entry = *e;
      const std::string name = entry.substr(0, entry.find('=') + 1);
      if (std::none_of(env.begin(), env.end(), [&](const std::string& mine) { return mine.starts_with(name); })) {
        environment.push_back(entry);
      }
    }
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 1, log_.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    posix_spawn_file_actions_adddup2(&actions, 1, 2);
    const int failed = ::posix_spawn(&pid_, args[0].c_str(), &actions, nullptr, pointers(args).data(),
                                     pointers(environment).data());
    posix_spawn_file_actions_destroy(&actions);
    if (failed) throw std::runtime_error("cannot start " + args[0]);
  }
  ~child_process() {
    if (running()) ::kill(pid_, SIGKILL);
    if (!status_) ::waitpid(pid_, nullptr, 0);
  }
  child_process(const child_process&) = delete;
  child_process& operator=(const child_process&) = delete;

  bool running() { return !exit_status(); }
  /// The wait status once it has ended.
  std::optional<int> exit_status() {
    int status = 0;
    if (!status_ && ::waitpid(pid_, &status, WNOHANG) == pid_) status_ = status;
    return status_;
  }
  /// Waits up to `limit` for the end; its wait status, if it ended.
  std::optional<int> wait(std::chrono::milliseconds limit) {
    const auto deadline = clock_type::now() + limit;
    while (running() && clock_type::now() < deadline) std::this_thread::sleep_for(20ms);
    return exit_status();
  }
  /// SIGTERM, as a window manager or Ctrl-C would end it, then waits up to `limit`.
  std::optional<int> terminate(std::chrono::milliseconds limit) {
    if (running()) ::kill(pid_, SIGTERM);
    return wait(limit);
  }
  std::string log() const { return read_file(log_); }

 private:
  static std::vector<char*> pointers(std::vector<std::string>& strings) {
    std::vector<char*> out;
    for (auto& s : strings) out.push_back(s.data());
    out.push_back(nullptr);
    return out;
  }

  std::string log_;
  pid_t pid_ = -1;
  std::optional<int> status_;
};

/// "exit 0", "exit 23", "signal 11" or "still running", for messages.
std::string describe(std::optional<int> status) {
  if (!status) return "still running";
  if (WIFEXITED(*status)) return "exit " + std::to_string(WEXITSTATUS(*status));
  return "signal " + std::to_string(WTERMSIG(*status));
}

/// Xvfb on a display number it picks itself (-displayfd), which it tells once it accepts clients.
class xvfb {
 public:
  explicit xvfb(const std::string& dir) {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) throw std::runtime_error("pipe");
    ::fcntl(fds[1], F_SETFD, 0);  // the write end goes to Xvfb
    process_ = std::make_unique<child_process>(
        std::vector<std::string>{"/usr/bin/Xvfb", "-displayfd", std::to_string(fds[1]), "-screen", "0", "1280x800x24",
                                 "-nolisten", "tcp"},
        std::vector<std::string>{}, dir + "/xvfb.log");
    ::close(fds[1]);
    std::string number;
    pollfd readable{fds[0], POLLIN, 0};
    char c = 0;
    while (::poll(&readable, 1, 15000) == 1 && ::read(fds[0], &c, 1) == 1 && c != '\n') number += c;
    ::close(fds[0]);
    if (number.empty()) throw std::runtime_error("Xvfb did not start: " + process_->log());
    display_ = ":" + number;
  }
  ~xvfb() { process_->terminate(5s); }  // so that it removes its socket and lock file
  xvfb(const xvfb&) = delete;
  xvfb& operator=(const xvfb&) = delete;

  const std::string& display() const { return display_; }

 private:
  std::unique_ptr<child_process> process_;
  std::string display_;
};

/// The desktop's state file as JSON, or nullopt before it is first written.
std::optional<json::object> read_state(const std::string& path) {
  if (!fs::exists(path)) return std::nullopt;
  const std::string text = read_file(path);
  boost::system::error_code ec;
  auto v = json::parse(text, ec);
  if (ec || !v.is_object()) {
    ADD_FAILURE() << "the state file is not a JSON object: " << text;
    return std::nullopt;
  }
  return std::move(v.as_object());
}

/// A string of the state ("" when it is not one).
std::string text_at(const json::object& state, std::string_view key) {
  const auto* v = state.if_contains(key);
  return v && v->is_string() ? std::string(v->as_string()) : "";
}

struct picture {
  int width = 0, height = 0;
  std::vector<std::uint32_t> pixels;  // 0xRRGGBB, row by row
};

/// Decodes an image file through ImageMagick (as binary PPM).
picture decode_image(const std::string& path) {
  std::istringstream in(shell("convert '" + path + "' -depth 8 ppm:-"));
  std::string magic;
  int max = 0;
  picture p;
  in >> magic >> p.width >> p.height >> max;
  in.get();  // the one whitespace before the samples
  if (magic != "P6" || max != 255 || p.width <= 0 || p.height <= 0) throw std::runtime_error("not an 8-bit PPM");
  for (std::size_t i = 0; i < static_cast<std::size_t>(p.width) * static_cast<std::size_t>(p.height); ++i) {
    unsigned char rgb[3];
    if (!in.read(reinterpret_cast<char*>(rgb), 3)) throw std::runtime_error("the PPM is cut short");
    p.pixels.push_back(static_cast<std::uint32_t>(rgb[0] << 16 | rgb[1] << 8 | rgb[2]));
  }
  return p;
}

class Desktop : public ::testing::Test {
 protected:
  void SetUp() override {
    char pattern[] = "/tmp/cmdcast-desktop-XXXXXX";
    dir_ = ::mkdtemp(pattern);
    display_ = std::make_unique<xvfb>(dir_);
  }
  void TearDown() override {
    desktop_.reset();
    display_.reset();
    std::error_code ignored;
    fs::remove_all(dir_, ignored);
  }

  std::string state_file() const { return dir_ + "/state.json"; }

  /// Starts cmdcast-desktop on the X server with --state-file and `args`.
  child_process& start_desktop(std::vector<std::string> args) {
    args.insert(args.begin(), {CMDCAST_DESKTOP_BINARY, "--state-file", state_file()});
    std::vector<std::string> env = {"DISPLAY=" + display_->display()};
#ifdef CMDCAST_DESKTOP_PRELOAD
    env.push_back("LD_PRELOAD=" CMDCAST_DESKTOP_PRELOAD);  // see CMakeLists.txt
#endif
    desktop_ = std::make_unique<child_process>(std::move(args), env, dir_ + "/desktop.log");
    return *desktop_;
  }

  /// The first state that satisfies `wanted`, within `limit`; fails the test (with the last
  /// state and the desktop's log) when none does or the desktop ends first.
  json::object wait_for_state(const std::function<bool(const json::object&)>& wanted, const std::string& what,
                              std::chrono::seconds limit) {
    const auto deadline = clock_type::now() + limit;
    std::optional<json::object> state;
    while (clock_type::now() < deadline && desktop_->running()) {
      state = read_state(state_file());
      if (state && wanted(*state)) return *state;
      std::this_thread::sleep_for(50ms);
    }
    ADD_FAILURE() << "no state with " << what << " (desktop: " << describe(desktop_->exit_status()) << ")\nlast state: "
                  << (state ? json::serialize(*state) : "none") << "\ndesktop log:\n"
                  << desktop_->log();
    return state.value_or(json::object{});
  }

  /// A screenshot of the whole screen, kept as an artifact.
  picture screenshot(const std::string& name) {
    const fs::path artifacts = CMDCAST_E2E_ARTIFACTS;
    fs::create_directories(artifacts);
    const std::string path = (artifacts / name).string();
    shell("import -display " + display_->display() + " -window root '" + path + "'");
    return decode_image(path);
  }

  std::string dir_;
  std::unique_ptr<xvfb> display_;
  std::unique_ptr<child_process> desktop_;
};

TEST_F(Desktop, ADeepLinkOpensTheExecutionAndShowsItToTheExit) {
  loopback_sshd sshd;
  server_process server(sshd);
  const std::string id = post_run(server.port(), run_request("lines"));
  ASSERT_FALSE(id.empty());
  auto& desktop = start_desktop({"--server", "http://127.0.0.1:" + std::to_string(server.port()), "--token",
                                 operator_token, "--open", "#/executions/" + id});

  const auto state = wait_for_state(
      [](const json::object& s) { return s.contains("exit") && !s.at("exit").is_null(); }, "the exit", 60s);
  ASSERT_FALSE(state.empty());
  EXPECT_EQ(text_at(state, "execution_id"), id);
  EXPECT_EQ(text_at(state, "route"), "#/executions/" + id);
  EXPECT_EQ(text_at(state, "transport"), "websocket");
  const std::vector<std::string> expected_tail = {"line 1", "line 2", "line 3", "done"};
  EXPECT_EQ(json::value_to<std::vector<std::string>>(state.at("tail")), expected_tail);
  EXPECT_EQ(json::serialize(state.at("exit").at("data")), "0") << json::serialize(state);
  EXPECT_EQ(text_at(state, "error"), "");
  EXPECT_EQ(text_at(state, "user"), "olivia") << "the token did not reach the server";

  // The window really shows something: not one flat colour, and more than a few colours (text,
  // frames, buttons). The state file is written after the frame is on screen.
  const picture shot = screenshot("desktop.png");
  std::map<std::uint32_t, std::size_t> colours;
  for (auto p : shot.pixels) ++colours[p];
  std::size_t background = 0;
  for (const auto& [colour, count] : colours) background = std::max(background, count);
  const double other = 1.0 - static_cast<double>(background) / static_cast<double>(shot.pixels.size());
  EXPECT_GT(other, 0.01) << "the screen is nearly one colour";
  EXPECT_GT(colours.size(), 5u) << "too few colours for a drawn UI";

  // Closed as a user would: a clean exit (under ASan, one without leaks).
  EXPECT_EQ(describe(desktop.terminate(20s)), "exit 0") << desktop.log();
  const auto last = read_state(state_file());
  ASSERT_TRUE(last);
  EXPECT_EQ(last->at("tail"), state.at("tail"));
}

/// The titles of the X server's windows (_NET_WM_NAME, UTF-8), as xprop reports them.
std::vector<std::string> window_titles(const std::string& display) {
  std::vector<std::string> titles;
  std::istringstream tree(shell("xwininfo -display " + display + " -root -tree"));
  for (std::string line; std::getline(tree, line);) {
    const auto at = line.find("0x");
    if (at == std::string::npos) continue;
    const std::string id = line.substr(at, line.find(' ', at) - at);
    const std::string name = shell("xprop -display " + display + " -id " + id + " _NET_WM_NAME 2>/dev/null || true");
    const auto open = name.find(" = \""), close = name.rfind('"');
    if (open != std::string::npos && close > open + 4) titles.push_back(name.substr(open + 4, close - open - 4));
  }
  return titles;
}

TEST_F(Desktop, TheWindowTitleShowsTheRunAndEveryLineHasItsTime) {
  loopback_sshd sshd;
  server_process server(sshd);
  const std::string id = post_run(server.port(), run_request("lines"));  // three lines 0.3 s apart
  ASSERT_FALSE(id.empty());
  start_desktop({"--server", "http://127.0.0.1:" + std::to_string(server.port()), "--token", operator_token, "--open",
                 "#/executions/" + id + "/L2"});
  const auto running = wait_for_state(
      [](const json::object& s) { return text_at(s, "title").starts_with("⟳ ") || text_at(s, "title").starts_with("✓ "); },
      "a title", 60s);
  const auto state = wait_for_state(
      [](const json::object& s) { return s.contains("exit") && !s.at("exit").is_null() && text_at(s, "title").starts_with("✓"); },
      "the exit", 60s);
  ASSERT_FALSE(state.empty());
  EXPECT_EQ(text_at(state, "title"), "✓ lines · box") << json::serialize(state);
  // The window manager's title is the same (the state file is written after the frame).
  std::vector<std::string> titles;
  for (int i = 0; i < 40; ++i) {
    titles = window_titles(display_->display());
    if (std::find(titles.begin(), titles.end(), "✓ lines · box") != titles.end()) break;
    std::this_thread::sleep_for(100ms);
  }
  EXPECT_NE(std::find(titles.begin(), titles.end(), "✓ lines · box"), titles.end())
      << "window titles: " << ::testing::PrintToString(titles);
  // Each line has the time it was read at, and they go forward (0.3 s apart).
  const auto times = json::value_to<std::vector<std::int64_t>>(state.at("tail_times"));
  ASSERT_EQ(times.size(), 4u) << json::serialize(state);
  EXPECT_GE(times[2] - times[0], 400) << json::serialize(state);
  EXPECT_TRUE(std::is_sorted(times.begin(), times.end())) << json::serialize(state);
  EXPECT_EQ(text_at(state, "time_column"), "off");
  // The line link of --open: line 2 highlighted.
  EXPECT_EQ(json::serialize(state.at("highlight")), "[2,2]");
  EXPECT_EQ(text_at(state, "route"), "#/executions/" + id + "/L2");
  (void)running;
  EXPECT_EQ(describe(desktop_->terminate(20s)), "exit 0") << desktop_->log();
}

TEST_F(Desktop, ABatchDeepLinkShowsEveryMachineOfTheFleetRunToItsEndAndTheTitle) {
  loopback_sshd sshd;
  std::string down = sshd.machine_toml("down");
  const auto at = down.find("port = ");
  down.replace(at, down.find('\n', at) - at, "port = 1");  // nobody listens there
  server_process server(sshd, "", {}, sshd.machine_toml("m2") + down + "[groups]\nthree = [\"box\", \"m2\", \"down\"]\n");
  const auto answer = http_request(server.port(), http::verb::post, "/groups/three/commands", operator_token,
                                   run_request("lines"));
  ASSERT_EQ(answer.status, 202u) << answer.body;
  const auto batch = common::decode_batch_record(answer.body);
  ASSERT_TRUE(batch.ok()) << answer.body;
  start_desktop({"--server", "http://127.0.0.1:" + std::to_string(server.port()), "--token", viewer_token, "--open",
                 "#/batches/" + batch->batch_id});
  const auto state = wait_for_state(
      [](const json::object& s) {
        const auto* b = s.if_contains("batch");
        return b && b->is_object() && text_at(b->as_object(), "state") == "failed" && text_at(s, "title").starts_with("✗");
      },
      "the batch's end", 60s);
  ASSERT_FALSE(state.empty());
  EXPECT_EQ(text_at(state, "route"), "#/batches/" + batch->batch_id);
  EXPECT_EQ(text_at(state, "title"), "✗ lines · three");
  const auto& machines = state.at("batch").at("machines").as_array();
  ASSERT_EQ(machines.size(), 3u) << json::serialize(state);
  for (std::size_t i = 0; i < 2; ++i) {
    const auto& m = machines[i].as_object();
    EXPECT_EQ(text_at(m, "state"), "exited") << json::serialize(m);
    EXPECT_EQ(json::serialize(m.at("exit_code")), "0") << json::serialize(m);
    EXPECT_EQ(text_at(m, "last_line"), "done") << json::serialize(m);
  }
  EXPECT_EQ(text_at(machines[2].as_object(), "machine_id"), "down");
  EXPECT_EQ(text_at(machines[2].as_object(), "state"), "failed");
  std::vector<std::string> titles;
  for (int i = 0; i < 40; ++i) {
    titles = window_titles(display_->display());
    if (std::find(titles.begin(), titles.end(), "✗ lines · three") != titles.end()) break;
    std::this_thread::sleep_for(100ms);
  }
  EXPECT_NE(std::find(titles.begin(), titles.end(), "✗ lines · three"), titles.end())
      << "window titles: " << ::testing::PrintToString(titles);
  screenshot("desktop-batch.png");
  EXPECT_EQ(describe(desktop_->terminate(20s)), "exit 0") << desktop_->log();
}

TEST_F(Desktop, FollowsARunningExecutionLiveAndClosesWhileItStreams) {
  loopback_sshd sshd;
  server_process server(sshd);
  const std::string id = post_run(server.port(), run_request("ticks"));  // 20 s of "tick N"
  ASSERT_FALSE(id.empty());
  auto& desktop = start_desktop({"--server", "http://127.0.0.1:" + std::to_string(server.port()), "--token",
                                 operator_token, "--open", "#/executions/" + id});

  const auto state = wait_for_state(
      [](const json::object& s) { return s.contains("lines") && json::value_to<std::int64_t>(s.at("lines")) >= 3; },
      "three ticks", 60s);
  ASSERT_FALSE(state.empty());
  EXPECT_EQ(text_at(state, "transport"), "websocket");
  EXPECT_TRUE(state.at("exit").is_null()) << json::serialize(state);
  const auto tail = json::value_to<std::vector<std::string>>(state.at("tail"));
  ASSERT_GE(tail.size(), 3u);
  EXPECT_EQ(tail[0], "tick 1");
  EXPECT_EQ(tail[2], "tick 3");

  // Closed while its WebSocket streams: still a clean exit.
  EXPECT_EQ(describe(desktop.terminate(20s)), "exit 0") << desktop.log();
}

TEST_F(Desktop, OverHttpsWithAPrivateCaItFollowsAnExecution) {
  tls_fixture pki;
  loopback_sshd sshd;
  server_process server(sshd, tls_fixture::server_config(pki.loopback()));
  const auto accepted =
      https_request(server.port(), pki.ca(), "POST", "/machines/box/commands", operator_token, run_request("lines"));
  ASSERT_EQ(accepted.status, 202u) << accepted.body;
  const auto started = common::decode_run_accepted(accepted.body);
  ASSERT_TRUE(started.ok()) << accepted.body;
  auto& desktop = start_desktop({"--server", "https://localhost:" + std::to_string(server.port()), "--cacert", pki.ca(),
                                 "--token", operator_token, "--open", "#/executions/" + started->execution_id});

  // HTTPS (the user, the machines) and WSS (the output) both went through.
  const auto state = wait_for_state(
      [](const json::object& s) { return s.contains("exit") && !s.at("exit").is_null(); }, "the exit", 60s);
  ASSERT_FALSE(state.empty());
  EXPECT_EQ(text_at(state, "transport"), "websocket");
  EXPECT_EQ(text_at(state, "user"), "olivia");
  const std::vector<std::string> expected_tail = {"line 1", "line 2", "line 3", "done"};
  EXPECT_EQ(json::value_to<std::vector<std::string>>(state.at("tail")), expected_tail);
  EXPECT_EQ(describe(desktop.terminate(20s)), "exit 0") << desktop.log();
}

TEST_F(Desktop, WithNoServerItSaysSoAndKeepsRunning) {
  auto& desktop = start_desktop({"--server", "http://127.0.0.1:" + std::to_string(free_loopback_port()), "--open",
                                 "#/executions/somewhere"});
  const auto state = wait_for_state(
      [](const json::object& s) { return text_at(s, "transport") == "disconnected" && !text_at(s, "error").empty(); },
      "the server unreachable", 30s);
  EXPECT_NE(text_at(state, "error").find("cannot be reached"), std::string::npos) << json::serialize(state);
  EXPECT_EQ(text_at(state, "execution_id"), "somewhere");
  // It keeps trying (reconnects) without crashing, and still closes cleanly.
  std::this_thread::sleep_for(1500ms);
  EXPECT_TRUE(desktop.running()) << describe(desktop.exit_status()) << "\n" << desktop.log();
  EXPECT_EQ(describe(desktop.terminate(20s)), "exit 0") << desktop.log();
}

TEST(DesktopArguments, BadArgumentsGetAUsageError) {
  char pattern[] = "/tmp/cmdcast-desktop-args-XXXXXX";
  const std::string dir = ::mkdtemp(pattern);
  for (const std::vector<std::string>& args : {std::vector<std::string>{}, {"--server", "ftp://example.com"},
                                              {"--server", "http://127.0.0.1:port"}, {"--open"}, {"--bogus"}}) {
    std::vector<std::string> argv = args;
    argv.insert(argv.begin(), CMDCAST_DESKTOP_BINARY);
    child_process desktop(argv, {"DISPLAY="}, dir + "/usage.log");  // no window: it must stop before
    EXPECT_EQ(describe(desktop.wait(20s)), "exit 2") << desktop.log();
  }
  const std::string all = read_file(dir + "/usage.log");
  EXPECT_NE(all.find("usage: cmdcast-desktop --server URL"), std::string::npos) << all;
  EXPECT_NE(all.find("unknown argument \"--bogus\""), std::string::npos) << all;
  std::error_code ignored;
  fs::remove_all(dir, ignored);
}

}  // namespace
}  // namespace cmdcast::testing
