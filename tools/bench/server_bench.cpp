// cmdcast-server end to end, in one run (a private loopback sshd, the release server process,
// subscribers as WebSocket clients in this process):
//  1. one subscriber against the executor's raw read rate of the same command, and against
//     a plain relay of that read to a loopback reader (the floor: what a send costs here);
//  2. the server's memory per idle subscriber, with 10,000 of them on one execution;
//  3. a stream of BYTES (default 1 GB; /dev/zero made printable) to 1, 10 and 100 subscribers;
//  4. the latency of a line to 1000 subscribers (the line carries its remote send time);
//  5. the audit store's cost: the stream to 1 subscriber with and without it, alternately;
//  6. long-polling: a line's latency to 1 and to 100 pollers, and the server's CPU time for
//     100 pollers against 100 WebSocket subscribers of the same command;
//  7. TLS against plaintext: the stream to 1 and to 100 subscribers, a TLS server and a
//     plaintext one alternately, both read by the clients' own client_net (--tls runs 7 alone);
//  8. permessage-deflate: wire bytes of the recorded apt transcripts and of the mixed-ANSI
//     corpus, compressed and not, and the server's CPU for 1 and 100 compressed subscribers
//     (--deflate runs 8 alone);
//  9. downloads (--download), 10. a fleet run (--fleet), 11. three servers sharing executions
//     through a loopback redis-server (--cluster), 12. a watcher's pong round trip beside
//     10,000 idle ones (--idle-pings): each alone only.
// --one-watcher [ROUNDS] runs 1. alone, for ROUNDS rounds (default 30): one round moves by
// 10-20% with the VM's pace, so a figure worth quoting is the median of many.
// The fan-out bounds are the server's defaults (a watcher that cannot keep up holds the
// command or falls back to the replay buffer); only max_connections and
// max_subscribers_per_execution are raised, for the 10,000-subscriber rows.
// Usage: server_bench [BYTES] [--latency-only | --fanout | --tls | --deflate | --download | --fleet | --cluster |
//                              --idle-pings | --one-watcher [ROUNDS]]
// (4., 1. and 3., 7., 8., 9., 10., 11., 12. or 1. alone)
#include <sys/resource.h>
#include <signal.h>
#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/websocket.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <numeric>
#include <sstream>
#include <tuple>
#include <string>
#include <thread>
#include <vector>

#include "cmdcast/client_net/connection.hpp"
#include "corpus.hpp"
#include "loopback_sshd.hpp"
#include "redis_fixture.hpp"
#include "ssh/machine_connection.hpp"

extern char** environ;

namespace net = boost::asio;
namespace beast = boost::beast;
namespace websocket = beast::websocket;
namespace http = beast::http;
using tcp = net::ip::tcp;
using clock_type = std::chrono::steady_clock;
constexpr auto use_tuple = net::as_tuple(net::use_awaitable);

namespace {

/// The `ticks` action waits (30 s at most) for this file before its first line. The bench makes
/// it once every watcher of the row has attached, and removes it once the run has ended (the
/// remote user may not write there). A watcher that came late would be served the first lines
/// from the replay buffer, and their "latency" would be its connection time.
std::string ticks_go_file;
std::atomic<int> attached = 0;  // subscribers and pollers attached (or failed to), since the bench started

double now_seconds() { return std::chrono::duration<double>(clock_type::now().time_since_epoch()).count(); }

struct subscriber_stats {
  std::uint64_t bytes = 0;
  double first_output = 0, exit = 0;
  unsigned close_code = 0;
  int gaps = 0;
  std::vector<double> latencies_ms;
  std::string execution_id;
};

std::int64_t wall_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

/// Each stdout line of the `ticks` action is its remote wall-clock send time in ns: records
/// the latency of every line in `text` (one event or a long-poll answer of several).
void record_latencies(std::string_view text, subscriber_stats& st) {
  for (auto at = text.find(R"("type":"stdout","seq":)"); at != std::string_view::npos;
       at = text.find(R"("type":"stdout","seq":)", at + 1)) {
    const auto data = text.find(R"("data":")", at);
    if (data == std::string_view::npos) return;
    for (std::size_t i = data + 8; i < text.size();) {
      const auto end = text.find("\\n", i);
      if (end == std::string_view::npos) break;
      const auto sent = std::stoll(std::string(text.substr(i, end - i)));
      st.latencies_ms.push_back(static_cast<double>(wall_ns() - sent) / 1e6);
      i = end + 2;
      if (i < text.size() && text[i] == '"') break;
    }
  }
}

/// One WebSocket subscriber: counts what it receives; with `timestamps`, each stdout line is a
/// nanosecond wall-clock time from the remote side and its latency is recorded. `deflate`:
/// offers permessage-deflate, as browsers and cmdcast's clients do.
net::awaitable<void> subscribe(std::uint16_t port, std::string target, std::string request, subscriber_stats& st,
                               bool timestamps, int& done, bool deflate = false) {
  auto ex = co_await net::this_coro::executor;
  // Over the plain socket (no per-operation timers): the bench's 1000 clients share the 2 cores
  // with the server, so the lighter they are, the more the figures measure the server.
  websocket::stream<tcp::socket> ws(ex);
  auto [cec] = co_await ws.next_layer().async_connect(tcp::endpoint(net::ip::make_address("127.0.0.1"), port), use_tuple);
  if (cec) ++attached;
  if (!cec) {
    ws.read_message_max(64u << 20);
    if (deflate) {
      websocket::permessage_deflate offer;
      offer.client_enable = true;
      ws.set_option(offer);
    }
    auto [hec] = co_await ws.async_handshake("127.0.0.1", target, use_tuple);
    ++attached;
    if (!hec && !request.empty()) co_await ws.async_write(net::buffer(request), use_tuple);
    beast::flat_buffer buffer;
    while (!hec) {
      auto [ec, n] = co_await ws.async_read(buffer, use_tuple);
      if (ec) break;
      const auto data = buffer.data();
      std::string_view text(static_cast<const char*>(data.data()), data.size());
      st.bytes += n;
      if (text.starts_with(R"({"type":"stdout")")) {
        if (st.first_output == 0) st.first_output = now_seconds();
        if (timestamps) record_latencies(text, st);
      } else if (text.starts_with(R"({"type":"exit")")) {
        st.exit = now_seconds();
      } else if (text.starts_with(R"({"type":"started")")) {
        const auto at = text.find(R"("execution_id":")") + 16;
        st.execution_id = std::string(text.substr(at, text.find('"', at) - at));
      } else if (text.starts_with(R"({"type":"gap")")) {
        ++st.gaps;
      }
      buffer.consume(buffer.size());
    }
    st.close_code = ws.reason().code;
    if (st.close_code != 1000 && st.close_code != 0) {
      std::fprintf(stderr, "subscriber closed with %u: %s\n", st.close_code, ws.reason().reason.c_str());
    }
  }
  ++done;
}

double percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[static_cast<std::size_t>(p * static_cast<double>(v.size() - 1))];
}

/// A line of /proc/PID/status in KiB: VmRSS (now) or VmHWM (the peak).
long status_kib(pid_t pid, std::string_view key = "VmRSS:") {
  std::ifstream status("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.starts_with(key)) return std::stol(line.substr(key.size()));
  }
  return 0;
}
long rss_kib(pid_t pid) { return status_kib(pid); }

/// Connections turned away by a full listen queue, on every socket of the machine since boot.
long listen_overflows() {
  std::ifstream netstat("/proc/net/netstat");
  std::string names, values;
  while (std::getline(netstat, names) && std::getline(netstat, values)) {
    if (!names.starts_with("TcpExt:")) continue;
    std::istringstream n(names), v(values);
    for (std::string name, value; n >> name && v >> value;) {
      if (name == "ListenOverflows") return std::stol(value);
    }
  }
  return 0;
}

/// A counter of the server's /metrics (anonymous operator: no token), read synchronously.
std::uint64_t metric(std::uint16_t port, const std::string& name) {
  net::io_context io;
  beast::tcp_stream stream(io);
  stream.connect(tcp::endpoint(net::ip::make_address("127.0.0.1"), port));
  http::request<http::empty_body> req{http::verb::get, "/metrics", 11};
  req.set(http::field::host, "127.0.0.1");
  http::write(stream, req);
  beast::flat_buffer buffer;
  http::response<http::string_body> res;
  http::read(stream, buffer, res);
  const auto at = res.body().find("\n" + name + " ");
  return at == std::string::npos ? 0 : std::stoull(res.body().substr(at + name.size() + 2));
}

void run_until(net::io_context& io, const int& done, int count) {
  while (done < count) io.run_one();
}

/// Lets a row's `ticks` run begin once `target` watchers have attached (watchers of a second
/// client thread count too: `io` is run meanwhile, never blocked on).
void start_ticks(net::io_context& io, int target) {
  while (attached < target) io.run_one_for(std::chrono::milliseconds(10));
  std::ofstream{ticks_go_file};
}

/// After a row's `ticks` run: the next one waits for its own go.
void end_ticks() { std::filesystem::remove(ticks_go_file); }

/// Runs `action` with `n` subscribers (one runs it, n-1 attach as soon as it started), all
/// offering compression or none.
std::vector<subscriber_stats> fan_out(net::io_context& io, std::uint16_t port, const std::string& action, int n,
                                      bool timestamps, bool deflate = false, const std::string& params = "{}") {
  std::vector<subscriber_stats> stats(static_cast<std::size_t>(n));
  int done = 0;
  const int attached_before = attached;
  net::co_spawn(io, subscribe(port, "/machines/box/commands/stream",
                              R"({"action_type":")" + action + R"(","params":)" + params + "}", stats[0], timestamps,
                              done, deflate), net::detached);
  while (stats[0].execution_id.empty()) io.run_one();
  // The others alternate between this thread and a second one: with one client thread the
  // 100-subscriber row measured that thread (at 97% of a core, the server at a third of one).
  net::io_context second;
  int second_done = 0, on_second = 0;
  for (int i = 1; i < n; ++i) {
    const bool there = i % 2 == 0;
    on_second += there;
    net::co_spawn(there ? second : io,
                  subscribe(port, "/executions/" + stats[0].execution_id + "/stream", "", stats[i], timestamps,
                            there ? second_done : done, deflate),
                  net::detached);
  }
  std::thread reader([&second] { second.run(); });
  if (action == "ticks") start_ticks(io, attached_before + n);
  run_until(io, done, n - on_second);
  reader.join();
  if (action == "ticks") end_ticks();
  return stats;
}

/// A subscriber through the clients' own connection code (plain or TLS as the URL says): the
/// TLS rows and their plaintext references read alike.
net::awaitable<void> client_subscriber(cmdcast::client_net::connector server, std::string target, std::string request,
                                       subscriber_stats& st, int& done) {
  cmdcast::client_net::websocket_client ws(co_await net::this_coro::executor, server);
  if (!co_await ws.connect(target, "", std::chrono::seconds(30))) {
    if (!request.empty()) co_await ws.write(request);
    std::string text;
    while (!co_await ws.read(text)) {
      st.bytes += text.size();
      if (text.starts_with(R"({"type":"stdout")")) {
        if (st.first_output == 0) st.first_output = now_seconds();
      } else if (text.starts_with(R"({"type":"exit")")) {
        st.exit = now_seconds();
      } else if (text.starts_with(R"({"type":"started")")) {
        const auto at = text.find(R"("execution_id":")") + 16;
        st.execution_id = text.substr(at, text.find('"', at) - at);
      }
    }
  }
  ++done;
}

/// The stream to `n` client_net subscribers: MB/s each (median) and aggregate.
std::pair<double, double> client_fan_out(net::io_context& io, const cmdcast::client_net::connector& server, int n) {
  std::vector<subscriber_stats> stats(static_cast<std::size_t>(n));
  int done = 0;
  net::co_spawn(io, client_subscriber(server, "/machines/box/commands/stream", R"({"action_type":"stream"})", stats[0], done),
                net::detached);
  while (stats[0].execution_id.empty() && done == 0) io.run_one();
  for (int i = 1; i < n; ++i) {
    net::co_spawn(io, client_subscriber(server, "/executions/" + stats[0].execution_id + "/stream", "", stats[i], done),
                  net::detached);
  }
  run_until(io, done, n);
  double slowest = 0;
  std::uint64_t total = 0;
  std::vector<double> each;
  for (const auto& s : stats) {
    const double d = s.exit - s.first_output;
    slowest = std::max(slowest, d);
    total += s.bytes;
    if (d > 0) each.push_back(static_cast<double>(s.bytes) / d / 1e6);
  }
  return {percentile(each, 0.5), slowest > 0 ? static_cast<double>(total) / slowest / 1e6 : 0};
}

/// A long-poller following an execution to its end over one keep-alive connection.
net::awaitable<void> poller(std::uint16_t port, std::string id, subscriber_stats& st, int& done) {
  auto ex = co_await net::this_coro::executor;
  beast::tcp_stream stream(ex);
  auto [cec] = co_await stream.async_connect(tcp::endpoint(net::ip::make_address("127.0.0.1"), port), use_tuple);
  beast::flat_buffer buffer;
  if (cec) ++attached;
  for (long after = -1; !cec;) {
    http::request<http::empty_body> req{http::verb::get, "/executions/" + id + "/events?wait=30&after=" + std::to_string(after), 11};
    req.set(http::field::host, "127.0.0.1");
    auto [wec, wn] = co_await http::async_write(stream, req, use_tuple);
    http::response_parser<http::string_body> parser;
    parser.body_limit(64u << 20);
    auto [rec, rn] = co_await http::async_read(stream, buffer, parser, use_tuple);
    if (after == -1) ++attached;
    if (wec || rec) break;
    const std::string& body = parser.get().body();
    st.bytes += body.size();
    record_latencies(body, st);
    const auto next = body.rfind(R"("next":)");
    after = std::stol(body.substr(next + 7));
    if (body.find(R"("done":true)") != std::string::npos) break;
  }
  ++done;
}


struct server_process {
  pid_t pid = 0;
  std::uint16_t port = 0;
};

/// The release cmdcast-server with the bench's actions; `extra` adds [server] keys.
server_process start_server(const cmdcast::testing::loopback_sshd& sshd, const std::string& name,
                            const std::string& bytes, const std::string& extra, const std::string& tail = "") {
  server_process p;
  p.port = cmdcast::testing::free_loopback_port();
  const std::string config = sshd.dir() + "/" + name + ".toml";
  std::ofstream(config) << "[server]\nlisten = \"127.0.0.1:" << p.port << "\"\n"
                        << "audit_db = \"" << sshd.dir() << "/" << name << ".db\"\nanonymous = \"operator\"\n" << extra
                        << "max_subscribers_per_execution = 20000\nmax_connections = 20000\n"
                        << sshd.machine_toml("box")
                        // Printable bytes: NUL would be sent as \u0000, six bytes each.
                        << "[actions.stream]\ncommand = \"sleep 1; head -c " << bytes << " /dev/zero | tr '\\\\0' a\"\n"
                        << "line_buffered = false\n"
                        << "[actions.ticks]\ncommand = \"for i in $(seq 3000); do [ -e " << ticks_go_file
                        << " ] && break; sleep 0.01; done; for i in $(seq 100); do date +%s%N; sleep 0.05; done\"\n"
                        << "[actions.idle]\ncommand = \"sleep 600\"\n"
                        << "[actions.corpus]\ncommand = \"sleep 1; cat {file}\"\nline_buffered = false\n"
                        << "params = { file = \"^/[A-Za-z0-9/._-]+$\" }\n"
                        << "[actions.apt_stream]\ncommand = \"sleep 1; yes 'Get:1 http://deb.debian.org/debian bookworm/main "
                        << "amd64 libexample1 amd64 1.2.3-4 [123 kB]' | head -c " << bytes << "\"\nline_buffered = false\n"
                        << tail;
  std::vector<std::string> args = {CMDCAST_SERVER_BINARY, "--config", config};
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 2, (sshd.dir() + "/" + name + ".log").c_str(), O_WRONLY | O_CREAT, 0644);
  posix_spawn(&p.pid, argv[0], &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  return p;
}

void stop_server(server_process& p) {
  ::kill(p.pid, SIGKILL);
  ::waitpid(p.pid, nullptr, 0);
}

/// MB/s of the stream to one subscriber.
double one_subscriber_rate(net::io_context& io, std::uint16_t port) {
  const auto stats = fan_out(io, port, "stream", 1, false);
  return static_cast<double>(stats[0].bytes) / (stats[0].exit - stats[0].first_output) / 1e6;
}

}  // namespace

/// 8. permessage-deflate: wire bytes of two corpora to one subscriber, compressed and not; then
/// the server's CPU for an apt-like stream of BYTES to 1 and 100 subscribers, compressed and not.
void deflate_rows(net::io_context& io, const cmdcast::testing::loopback_sshd& sshd, const std::string& bytes) {
  auto srv = start_server(sshd, "deflate", bytes, "audit = false\n");
  const std::string prefix = "/tmp/cmdcast-bench-" + std::to_string(::getpid());
  std::string apt;
  for (const auto& f : std::filesystem::directory_iterator(std::string(CMDCAST_SOURCE_DIR) + "/tests/data/apt")) {
    if (f.path().extension() != ".txt") continue;
    std::ifstream in(f.path());
    apt.append(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }
  std::ofstream(prefix + "-apt.txt") << apt;
  std::ofstream(prefix + "-ansi.txt") << cmdcast::bench::mixed_ansi_output();
  std::printf("\n%-34s %10s %14s %14s %8s\n", "permessage-deflate, 1 subscriber", "output", "wire, plain", "wire, deflate",
              "ratio");
  for (const auto& [label, file, size] : {std::tuple{"apt transcripts (tests/data/apt)", prefix + "-apt.txt", apt.size()},
                                          std::tuple{"mixed-ANSI corpus", prefix + "-ansi.txt", std::size_t{4u << 20}}}) {
    std::uint64_t wire[2] = {0, 0};
    for (const bool deflate : {false, true}) {
      const auto before = metric(srv.port, "cmdcast_bytes_out_total");
      fan_out(io, srv.port, "corpus", 1, false, deflate, R"({"file":")" + file + R"("})");
      wire[deflate] = metric(srv.port, "cmdcast_bytes_out_total") - before;
    }
    std::printf("%-34s %10zu %14llu %14llu %7.1fx\n", label, size, static_cast<unsigned long long>(wire[0]),
                static_cast<unsigned long long>(wire[1]), static_cast<double>(wire[0]) / static_cast<double>(wire[1]));
  }
  std::filesystem::remove(prefix + "-apt.txt");
  std::filesystem::remove(prefix + "-ansi.txt");
  std::printf("\n%-34s %14s %16s %14s\n", ("apt-like stream of " + bytes + " bytes to").c_str(), "server CPU s", "MB/s aggregate",
              "wire MB");
  for (const int n : {1, 100}) {
    for (const bool deflate : {false, true}) {
      const double cpu0 = cmdcast::testing::process_cpu_seconds(srv.pid);
      const auto out0 = metric(srv.port, "cmdcast_bytes_out_total");
      const auto stats = fan_out(io, srv.port, "apt_stream", n, false, deflate);
      double slowest = 0;
      std::uint64_t total = 0;
      for (const auto& s : stats) {
        slowest = std::max(slowest, s.exit - s.first_output);
        total += s.bytes;
      }
      const std::string label = std::to_string(n) + (n == 1 ? " subscriber" : " subscribers") + (deflate ? ", deflate" : ", plain");
      std::printf("%-34s %14.2f %16.0f %14.1f\n", label.c_str(), cmdcast::testing::process_cpu_seconds(srv.pid) - cpu0,
                  static_cast<double>(total) / slowest / 1e6,
                  static_cast<double>(metric(srv.port, "cmdcast_bytes_out_total") - out0) / 1e6);
    }
  }
  stop_server(srv);
}

/// 7. TLS against plaintext, two servers alternately: 1 subscriber (BYTES, median of 3 rounds)
/// and 100 subscribers (BYTES / 5, median of 2 rounds).
void tls_against_plaintext(net::io_context& io, const cmdcast::testing::loopback_sshd& sshd, const std::string& bytes) {
  const std::string dir = sshd.dir();
  const std::string make_cert = "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout " +
                                dir + "/key.pem -out " + dir + "/cert.pem -days 1 -subj /CN=127.0.0.1 -addext "
                                "subjectAltName=IP:127.0.0.1 2>/dev/null";
  if (std::system(make_cert.c_str()) != 0) {
    std::fprintf(stderr, "openssl could not make a certificate\n");
    return;
  }
  const std::string fifth = std::to_string(std::stoull(bytes) / 5);
  for (const auto& [n, size, rounds] : {std::tuple{1, bytes, 3}, std::tuple{100, fifth, 2}}) {
    const std::string tls_keys = "tls_cert = \"" + dir + "/cert.pem\"\ntls_key = \"" + dir + "/key.pem\"\n";
    auto plain = start_server(sshd, "plain" + std::to_string(n), size, "audit = false\n");
    auto secure = start_server(sshd, "tls" + std::to_string(n), size, "audit = false\n" + tls_keys);
    auto plain_url = cmdcast::client_net::connector::make(
        *cmdcast::client_net::parse_server_url("http://127.0.0.1:" + std::to_string(plain.port)), "");
    auto tls_url = cmdcast::client_net::connector::make(
        *cmdcast::client_net::parse_server_url("https://127.0.0.1:" + std::to_string(secure.port)), dir + "/cert.pem");
    std::vector<double> each_plain, each_tls, all_plain, all_tls;
    double cpu_plain = 0, cpu_tls = 0;  // the servers' CPU seconds over all rounds
    for (int round = 0; round < rounds; ++round) {
      double cpu0 = cmdcast::testing::process_cpu_seconds(plain.pid);
      const auto [pe, pa] = client_fan_out(io, *plain_url, n);
      cpu_plain += cmdcast::testing::process_cpu_seconds(plain.pid) - cpu0;
      cpu0 = cmdcast::testing::process_cpu_seconds(secure.pid);
      const auto [te, ta] = client_fan_out(io, *tls_url, n);
      cpu_tls += cmdcast::testing::process_cpu_seconds(secure.pid) - cpu0;
      each_plain.push_back(pe);
      all_plain.push_back(pa);
      each_tls.push_back(te);
      all_tls.push_back(ta);
    }
    const double p = percentile(n == 1 ? each_plain : all_plain, 0.5), t = percentile(n == 1 ? each_tls : all_tls, 0.5);
    // Server CPU seconds per GB delivered to the subscribers, all of them together.
    const double delivered_gb = static_cast<double>(rounds) * n * std::stod(size) / 1e9;
    std::printf("%s bytes to %d subscriber%s, %s, median of %d: plaintext %.0f MB/s, TLS %.0f MB/s (%.2fx); "
                "server CPU per GB delivered: plaintext %.2f s, TLS %.2f s\n",
                size.c_str(), n, n == 1 ? "" : "s", n == 1 ? "each" : "aggregate", rounds, p, t, t / p,
                cpu_plain / delivered_gb, cpu_tls / delivered_gb);
    stop_server(plain);
    stop_server(secure);
  }
}

/// Reads GET `target` to the end (chunked or not), synchronously: the body's size.
std::uint64_t download_size(std::uint16_t port, const std::string& target) {
  net::io_context io;
  beast::tcp_stream stream(io);
  stream.connect(tcp::endpoint(net::ip::make_address("127.0.0.1"), port));
  http::request<http::empty_body> req{http::verb::get, target, 11};
  req.set(http::field::host, "127.0.0.1");
  http::write(stream, req);
  beast::flat_buffer buffer;
  http::response_parser<http::buffer_body> parser;
  parser.body_limit(boost::none);
  http::read_header(stream, buffer, parser);
  std::uint64_t size = 0;
  std::vector<char> chunk(1u << 20);
  while (!parser.is_done()) {
    parser.get().body().data = chunk.data();
    parser.get().body().size = chunk.size();
    beast::error_code ec;
    http::read(stream, buffer, parser, ec);
    if (ec && ec != http::error::need_buffer) break;
    size += chunk.size() - parser.get().body().size;
  }
  return size;
}

/// 9. Downloads (GET /executions/{id}/output) of a finished apt-like output of BYTES, as text,
/// ansi and ndjson: from the replay buffer, then from the audit store (each raised to hold it).
void download_rows(net::io_context& io, const cmdcast::testing::loopback_sshd& sshd, const std::string& bytes) {
  const std::string room = std::to_string(std::stoull(bytes) * 2 + (64u << 20));
  std::printf("\n%-44s %8s %12s %10s %10s\n", ("download of a finished " + bytes + "-byte output").c_str(), "format",
              "file bytes", "seconds", "MB/s");
  for (const auto& [source, extra] :
       {std::pair{"replay buffer (replay_bytes raised)", "replay_bytes = " + room + "\n"},
        std::pair{"audit store (audit head raised)", "audit_head_bytes = " + room + "\n"}}) {
    auto srv = start_server(sshd, "download", bytes, extra);
    const auto stats = fan_out(io, srv.port, "apt_stream", 1, false);
    const std::string id = stats[0].execution_id;
    if (std::string(source).starts_with("audit")) {
      // A fresh server: the execution is no longer in memory, only in the audit store.
      std::this_thread::sleep_for(std::chrono::seconds(2));  // its last audit write
      stop_server(srv);
      srv = start_server(sshd, "download", bytes, extra);
    }
    for (const char* format : {"text", "ansi", "ndjson"}) {
      const double t0 = now_seconds();
      const auto size = download_size(srv.port, "/executions/" + id + "/output?format=" + std::string(format));
      const double seconds = now_seconds() - t0;
      std::printf("%-44s %8s %12llu %10.2f %10.0f\n", source, format, static_cast<unsigned long long>(size), seconds,
                  std::stod(bytes) / seconds / 1e6);
    }
    stop_server(srv);
  }
}

/// 10. A fleet run: an apt-like output of 2,000 lines on 50 machine entries (each its own SSH
/// connection to the loopback sshd), as one batch and as 50 runs one after another.
void fleet_rows(net::io_context& io, const cmdcast::testing::loopback_sshd& sshd) {
  constexpr int machines = 50;
  std::string tail =
      "[actions.apt_lines]\ncommand = \"for i in $(seq 2000); do echo \\\"Get:$i http://deb.debian.org/debian bookworm/main "
      "amd64 libexample$i amd64 1.2.3-4 [123 kB]\\\"; done\"\n";
  std::string group = "[groups]\nfleet = [";
  for (int i = 1; i <= machines; ++i) {
    char id[8];
    std::snprintf(id, sizeof id, "m%02d", i);
    tail += sshd.machine_toml(id);
    group += std::string(i > 1 ? ", " : "") + "\"" + id + "\"";
  }
  tail += group + "]\n";
  auto srv = start_server(sshd, "fleet", "0", "", tail);
  const std::string request = R"({"action_type":"apt_lines"})";
  // Once, to connect every machine (the fleet and the sequence then both find them connected).
  std::vector<subscriber_stats> warm(machines);
  int warm_done = 0;
  for (int i = 0; i < machines; ++i) {
    char id[8];
    std::snprintf(id, sizeof id, "m%02d", i + 1);
    net::co_spawn(io, subscribe(srv.port, "/machines/" + std::string(id) + "/commands/stream", request, warm[i], false, warm_done),
                  net::detached);
  }
  run_until(io, warm_done, machines);

  std::printf("\n%-40s %10s %14s %12s\n", "50 machines x 2,000 apt-like lines", "wall s", "server CPU s", "MB received");
  double cpu0 = cmdcast::testing::process_cpu_seconds(srv.pid);
  double t0 = now_seconds();
  std::uint64_t bytes = 0;
  for (int i = 0; i < machines; ++i) {
    char id[8];
    std::snprintf(id, sizeof id, "m%02d", i + 1);
    subscriber_stats st;
    int done = 0;
    net::co_spawn(io, subscribe(srv.port, "/machines/" + std::string(id) + "/commands/stream", request, st, false, done),
                  net::detached);
    run_until(io, done, 1);
    bytes += st.bytes;
  }
  std::printf("%-40s %10.2f %14.2f %12.1f\n", "one after another (50 runs)", now_seconds() - t0,
              cmdcast::testing::process_cpu_seconds(srv.pid) - cpu0, static_cast<double>(bytes) / 1e6);

  cpu0 = cmdcast::testing::process_cpu_seconds(srv.pid);
  t0 = now_seconds();
  net::io_context sync_io;
  beast::tcp_stream stream(sync_io);
  stream.connect(tcp::endpoint(net::ip::make_address("127.0.0.1"), srv.port));
  http::request<http::string_body> post{http::verb::post, "/groups/fleet/commands", 11};
  post.set(http::field::host, "127.0.0.1");
  post.body() = request;
  post.prepare_payload();
  http::write(stream, post);
  beast::flat_buffer buffer;
  http::response<http::string_body> accepted;
  http::read(stream, buffer, accepted);
  const auto at = accepted.body().find(R"("batch_id":")") + 12;
  const std::string batch_id = accepted.body().substr(at, accepted.body().find('"', at) - at);
  subscriber_stats st;
  int done = 0;
  net::co_spawn(io, subscribe(srv.port, "/batches/" + batch_id + "/stream", "", st, false, done), net::detached);
  run_until(io, done, 1);
  std::printf("%-40s %10.2f %14.2f %12.1f\n", "one batch (all at once)", now_seconds() - t0,
              cmdcast::testing::process_cpu_seconds(srv.pid) - cpu0, static_cast<double>(st.bytes) / 1e6);
  stop_server(srv);
}

/// A synchronous POST with an empty body (the anonymous operator): the answer's status.
unsigned post_empty(std::uint16_t port, const std::string& target) {
  net::io_context sync_io;
  beast::tcp_stream stream(sync_io);
  stream.connect(tcp::endpoint(net::ip::make_address("127.0.0.1"), port));
  http::request<http::string_body> post{http::verb::post, target, 11};
  post.set(http::field::host, "127.0.0.1");
  post.prepare_payload();
  http::write(stream, post);
  beast::flat_buffer buffer;
  http::response<http::string_body> answer;
  http::read(stream, buffer, answer);
  return answer.result_int();
}

/// Runs `action` on the server at `run_port` (its runner's socket is not counted) and watches
/// it with groups[i].second subscribers on port groups[i].first: their stats, by group.
std::vector<std::vector<subscriber_stats>> spread(net::io_context& io, std::uint16_t run_port, const std::string& action,
                                                  const std::vector<std::pair<std::uint16_t, int>>& groups,
                                                  bool timestamps) {
  subscriber_stats runner;
  int done = 0;
  const int attached_before = attached;
  net::co_spawn(io, subscribe(run_port, "/machines/box/commands/stream", R"({"action_type":")" + action + R"("})", runner,
                              false, done), net::detached);
  while (runner.execution_id.empty()) io.run_one();
  std::vector<std::vector<subscriber_stats>> out;
  out.reserve(groups.size());  // the subscribers write into these: no reallocation
  int total = 1;
  for (const auto& [port, n] : groups) {
    out.emplace_back(static_cast<std::size_t>(n));
    for (auto& st : out.back()) {
      net::co_spawn(io, subscribe(port, "/executions/" + runner.execution_id + "/stream?after=-1", "", st, timestamps, done),
                    net::detached);
    }
    total += n;
  }
  if (action == "ticks") start_ticks(io, attached_before + total);
  run_until(io, done, total);
  if (action == "ticks") end_ticks();
  return out;
}

/// MB/s over all of `stats` (bytes / the slowest one's time), how many saw the exit, gaps.
std::tuple<double, int, int> aggregate(const std::vector<subscriber_stats>& stats) {
  double slowest = 0;
  std::uint64_t total = 0;
  int complete = 0, gaps = 0;
  for (const auto& s : stats) {
    slowest = std::max(slowest, s.exit - s.first_output);
    total += s.bytes;
    complete += s.exit > 0;
    gaps += s.gaps;
  }
  return {slowest > 0 ? static_cast<double>(total) / slowest / 1e6 : 0, complete, gaps};
}

/// The server's loop as one more watcher sees it beside 10,000 idle ones that connected
/// together: a WebSocket ping every 10 ms for 45 s and each pong's round trip, per 5 s. The
/// server pings quiet watchers every half idle timeout (15 s by default); all at once, they
/// would show here as a stall. (--idle-pings, alone.)
void idle_ping_rows(net::io_context& io, const cmdcast::testing::loopback_sshd& sshd, const std::string& bytes) {
  auto srv = start_server(sshd, "idle_pings", bytes, "");
  std::vector<subscriber_stats> idle(10000);
  int done = 0;
  net::co_spawn(io, subscribe(srv.port, "/machines/box/commands/stream", R"({"action_type":"idle"})", idle[0], false, done),
                net::detached);
  while (idle[0].execution_id.empty()) io.run_one();
  const std::string target = "/executions/" + idle[0].execution_id + "/stream";
  const int attached_before = attached;
  // What the joining costs: mostly the watcher count, sent to everyone as it changes.
  const double join_cpu0 = cmdcast::testing::process_cpu_seconds(srv.pid);
  const auto join_out0 = metric(srv.port, "cmdcast_bytes_out_total");
  const double join_start = now_seconds();
  for (std::size_t i = 1; i < idle.size(); ++i) {
    net::co_spawn(io, subscribe(srv.port, target, "", idle[i], false, done), net::detached);
  }
  while (attached < attached_before + static_cast<int>(idle.size()) - 1) io.run_one();
  const double connected = now_seconds();
  std::printf("10,000 watchers joined in %.1f s: the server sent %.1f MB and used %.2f s of CPU meanwhile\n\n",
              connected - join_start, static_cast<double>(metric(srv.port, "cmdcast_bytes_out_total") - join_out0) / 1e6,
              cmdcast::testing::process_cpu_seconds(srv.pid) - join_cpu0);

  websocket::stream<tcp::socket> probe(io);
  probe.next_layer().connect(tcp::endpoint(net::ip::make_address("127.0.0.1"), srv.port));
  probe.handshake("127.0.0.1", target);
  constexpr int windows = 9;
  constexpr double window_s = 5;
  std::vector<std::vector<double>> rtt_ms(windows);
  double sent_at = 0;
  probe.control_callback([&](websocket::frame_type kind, beast::string_view) {
    if (kind != websocket::frame_type::pong || sent_at == 0) return;
    const double now = now_seconds();
    const auto w = static_cast<std::size_t>((now - connected) / window_s);
    if (w < rtt_ms.size()) rtt_ms[w].push_back((now - sent_at) * 1e3);
    sent_at = 0;
  });
  bool finished = false;
  net::co_spawn(io, [&]() -> net::awaitable<void> {
    beast::flat_buffer buffer;
    while (!finished) {
      auto [ec, n] = co_await probe.async_read(buffer, use_tuple);
      if (ec) break;
      buffer.consume(n);
    }
  }, net::detached);
  net::co_spawn(io, [&]() -> net::awaitable<void> {
    net::steady_timer tick(io);
    while (now_seconds() - connected < windows * window_s) {
      if (sent_at == 0) {
        sent_at = now_seconds();
        co_await probe.async_ping({}, use_tuple);
      }
      tick.expires_after(std::chrono::milliseconds(10));
      co_await tick.async_wait(use_tuple);
    }
    finished = true;
  }, net::detached);
  while (!finished) io.run_one();
  std::printf("pong round trip beside 10,000 idle watchers connected together (ping every 10 ms)\n");
  std::printf("%-12s %8s %10s %10s %10s\n", "seconds", "pings", "p50 ms", "p99 ms", "max ms");
  for (int w = 0; w < windows; ++w) {
    const auto& v = rtt_ms[static_cast<std::size_t>(w)];
    std::printf("%3.0f-%-8.0f %8zu %10.2f %10.2f %10.2f\n", w * window_s, (w + 1) * window_s, v.size(),
                percentile(v, 0.5), percentile(v, 0.99), v.empty() ? 0.0 : *std::max_element(v.begin(), v.end()));
  }
  stop_server(srv);
  run_until(io, done, static_cast<int>(idle.size()));
}

/// 11. Three servers sharing executions through a loopback redis-server ([cluster]): the
/// latency a second server adds, fan-out over the three, cancel from another server, and
/// Redis' CPU with 200 executions on each server watched from the next.
void cluster_rows(net::io_context& io, const cmdcast::testing::loopback_sshd& sshd, const std::string& bytes) {
  cmdcast::testing::redis_server redis;
  // 200 at once on the one machine entry: raised from 8 for the Redis row only (a fleet would
  // spread them over many machines).
  const std::string tail = "[actions.light]\ncommand = \"bash -c 'exec 3<> <(:); sleep 2; for i in $(seq 100); do "
                           "echo tick $i; read -t 0.1 -u 3; done'\"\n";
  std::vector<server_process> servers;
  for (const char* id : {"a", "b", "c"}) {
    servers.push_back(start_server(sshd, std::string("cluster_") + id, bytes, "max_executions_per_machine = 1000\n",
                                   tail + "[cluster]\nredis = \"" + redis.address() + "\"\nserver_id = \"" + id + "\"\n"));
  }
  std::this_thread::sleep_for(std::chrono::seconds(1));
  const std::uint16_t a = servers[0].port, b = servers[1].port, c = servers[2].port;

  {
    const auto groups = spread(io, a, "ticks", {{a, 100}, {b, 100}}, true);
    std::vector<double> on[2];
    for (std::size_t g = 0; g < 2; ++g) {
      for (const auto& st : groups[g]) on[g].insert(on[g].end(), st.latencies_ms.begin(), st.latencies_ms.end());
    }
    std::printf("\nline latency, a run on A, 100 watchers on A and 100 on B (%zu + %zu samples):\n"
                "  on A p50 %.2f ms, p99 %.2f ms; on B p50 %.2f ms, p99 %.2f ms; added by B: p99 %+.2f ms\n",
                on[0].size(), on[1].size(), percentile(on[0], 0.5), percentile(on[0], 0.99), percentile(on[1], 0.5),
                percentile(on[1], 0.99), percentile(on[1], 0.99) - percentile(on[0], 0.99));
  }
  {
    std::printf("\n%-40s %16s %10s %8s\n", ("stream of " + bytes + " bytes to").c_str(), "MB/s aggregate", "complete",
                "gaps");
    const auto one = spread(io, a, "stream", {{a, 300}}, false);
    const auto [rate1, complete1, gaps1] = aggregate(one[0]);
    std::printf("%-40s %16.0f %6d/300 %8d\n", "300 watchers on A alone", rate1, complete1, gaps1);
    // The same through a copy: what the Redis path costs a server's fan-out.
    const auto copied = spread(io, a, "stream", {{b, 300}}, false);
    const auto [rate_b, complete_b, gaps_b] = aggregate(copied[0]);
    std::printf("%-40s %16.0f %6d/300 %8d (%.2fx)\n", "300 watchers on B alone (a copy)", rate_b, complete_b, gaps_b,
                rate_b / rate1);
    const auto three = spread(io, a, "stream", {{a, 300}, {b, 300}, {c, 300}}, false);
    std::vector<subscriber_stats> all;
    for (const auto& g : three) all.insert(all.end(), g.begin(), g.end());
    const auto [rate3, complete3, gaps3] = aggregate(all);
    std::printf("%-40s %16.0f %6d/900 %8d (%.2fx the single server)\n", "300 watchers on each of A, B, C", rate3, complete3,
                gaps3, rate3 / rate1);
  }
  {
    std::vector<double> ms;
    for (int round = 0; round < 50; ++round) {
      subscriber_stats runner;
      int done = 0;
      const double asked = now_seconds();
      net::co_spawn(io, subscribe(a, "/machines/box/commands/stream", R"({"action_type":"idle"})", runner, false, done),
                    net::detached);
      while (runner.execution_id.empty() && done == 0) io.run_one();
      const double t0 = now_seconds();
      const unsigned status = runner.execution_id.empty() ? 0 : post_empty(b, "/executions/" + runner.execution_id + "/cancel");
      const double posted = now_seconds();
      run_until(io, done, 1);
      ms.push_back((runner.exit - t0) * 1000);
      // A round that stalls says where (one did, once, for about 90 s: docs/benchmarks.md).
      if (now_seconds() - asked > 1) {
        std::fprintf(stderr, "cancel round %d: started after %.2f s, POST to B %u after %.2f s, exit after %.2f s more "
                     "(close code %u)\n", round, t0 - asked, status, posted - t0, now_seconds() - posted, runner.close_code);
      }
    }
    std::printf("\ncancel sent to B of a run on A, until A's watcher has the exit (50 runs): p50 %.2f ms, p99 %.2f ms\n",
                percentile(ms, 0.5), percentile(ms, 0.99));
  }
  {
    const double redis0 = cmdcast::testing::process_cpu_seconds(redis.pid());
    double server0[3];
    for (std::size_t i = 0; i < 3; ++i) server0[i] = cmdcast::testing::process_cpu_seconds(servers[i].pid);
    const double t0 = now_seconds();
    std::vector<subscriber_stats> runners(600), watchers(600);
    int started = 0, done = 0;
    for (std::size_t i = 0; i < 600; ++i) {
      net::co_spawn(io, subscribe(servers[i % 3].port, "/machines/box/commands/stream", R"({"action_type":"light"})",
                                  runners[i], false, done), net::detached);
    }
    while (started < 600) {
      io.run_one();
      started = static_cast<int>(std::count_if(runners.begin(), runners.end(),
                                               [](const auto& r) { return !r.execution_id.empty() || r.exit > 0; }));
    }
    for (std::size_t i = 0; i < 600; ++i) {
      net::co_spawn(io, subscribe(servers[(i + 1) % 3].port, "/executions/" + runners[i].execution_id + "/stream?after=-1",
                                  "", watchers[i], false, done), net::detached);
    }
    run_until(io, done, 1200);
    int complete = 0, gaps = 0;
    for (const auto& w : watchers) {
      complete += w.exit > 0;
      gaps += w.gaps;
    }
    std::printf("\n200 executions on each of A, B, C (100 lines at 10/s each), each watched from the next server:\n"
                "  %.1f s; redis-server CPU %.2f s; server CPU A %.2f s, B %.2f s, C %.2f s; watchers complete %d/600, "
                "gaps %d\n",
                now_seconds() - t0, cmdcast::testing::process_cpu_seconds(redis.pid()) - redis0,
                cmdcast::testing::process_cpu_seconds(servers[0].pid) - server0[0],
                cmdcast::testing::process_cpu_seconds(servers[1].pid) - server0[1],
                cmdcast::testing::process_cpu_seconds(servers[2].pid) - server0[2], complete, gaps);
  }
  for (auto& s : servers) stop_server(s);
}

int main(int argc, char** argv) {
  const std::string bytes = argc > 1 ? argv[1] : "1000000000";
  const bool latency_only = argc > 2 && std::string_view(argv[2]) == "--latency-only";
  const bool tls_only = argc > 2 && std::string_view(argv[2]) == "--tls";
  const bool deflate_only = argc > 2 && std::string_view(argv[2]) == "--deflate";
  const bool fanout_only = argc > 2 && std::string_view(argv[2]) == "--fanout";
  const bool download_only = argc > 2 && std::string_view(argv[2]) == "--download";
  const bool fleet_only = argc > 2 && std::string_view(argv[2]) == "--fleet";
  const bool cluster_only = argc > 2 && std::string_view(argv[2]) == "--cluster";
  const bool idle_pings_only = argc > 2 && std::string_view(argv[2]) == "--idle-pings";
  const bool one_watcher_only = argc > 2 && std::string_view(argv[2]) == "--one-watcher";
  const int one_watcher_rounds = one_watcher_only ? (argc > 3 ? std::max(1, std::atoi(argv[3])) : 30) : 6;
  rlimit files{};
  getrlimit(RLIMIT_NOFILE, &files);
  files.rlim_cur = files.rlim_max;
  setrlimit(RLIMIT_NOFILE, &files);  // the server inherits it too

  // (MaxStartups: the fleet row connects 50 machine entries at once.)
  cmdcast::testing::loopback_sshd sshd(false, "MaxSessions 200\nMaxStartups 200\n");
  const auto e = sshd.endpoint();
  ticks_go_file = sshd.dir() + "/ticks.go";
  if (tls_only || deflate_only || download_only || fleet_only || cluster_only || idle_pings_only) {
    net::io_context io;
    auto work = net::make_work_guard(io);
    if (tls_only) tls_against_plaintext(io, sshd, bytes);
    if (deflate_only) deflate_rows(io, sshd, bytes);
    if (download_only) download_rows(io, sshd, bytes);
    if (fleet_only) fleet_rows(io, sshd);
    if (cluster_only) cluster_rows(io, sshd, bytes);
    if (idle_pings_only) idle_ping_rows(io, sshd, bytes);
    return 0;
  }
  auto main_server = start_server(sshd, "main", bytes, "");
  const std::uint16_t port = main_server.port;

  net::io_context io;
  auto work = net::make_work_guard(io);
  std::printf("cmdcast server_bench: %s bytes of /dev/zero; 2 cores shared by sshd, server and clients\n\n", bytes.c_str());

  // 1. One watcher against the executor's raw read rate of the same command, alternately, in
  // rounds: on a VM the raw rate alone moved from 195 to 349 MB/s between runs minutes apart,
  // and single rounds of one run from 0.74x to 1.11x. The three runs of a round take turns
  // at going first, so that none is always the one after a pause (or after the server's run).
  if (!latency_only) {
    auto conn = std::make_shared<cmdcast::server::ssh::machine_connection>(io.get_executor(), e);
    // `relay`: each chunk is also sent, as it is, over a loopback TCP connection to a thread
    // that reads and drops it. That is the least any server must add for one watcher on this
    // machine (a send, the kernel's loopback, a reader sharing the cores): the floor under
    // the 1-watcher row, with no WebSocket, JSON or UTF-8 work at either end.
    auto raw_rate = [&](bool relay) {
      std::uint64_t got = 0;
      double seconds = 0;
      int done = 0;
      tcp::acceptor listener(io, tcp::endpoint(net::ip::make_address("127.0.0.1"), 0));
      tcp::socket out(io), in(io);
      std::thread sink;
      if (relay) {
        out.connect(listener.local_endpoint());
        listener.accept(in);
        sink = std::thread([&in] {
          std::vector<char> b(256u << 10);
          while (::recv(in.native_handle(), b.data(), b.size(), 0) > 0) {
          }
        });
      }
      net::co_spawn(io, [&]() -> net::awaitable<void> {
        const cmdcast::server::ssh::output_handler none = [](auto, auto) {};
        co_await conn->run("true", none);
        const cmdcast::server::ssh::output_handler count = [&](auto, std::string_view d) {
          got += d.size();
          if (relay) net::write(out, net::buffer(d));
        };
        const auto t0 = now_seconds();
        // The same command as the `stream` action, so that the comparison is of the paths only.
        co_await conn->run("head -c " + bytes + " /dev/zero | tr '\\0' a", count);
        seconds = now_seconds() - t0;
        ++done;
      }, net::detached);
      run_until(io, done, 1);
      if (relay) {
        out.shutdown(tcp::socket::shutdown_send);
        sink.join();
      }
      return static_cast<double>(got) / seconds / 1e6;
    };
    std::vector<double> ratios, floors;
    for (int round = 1; round <= one_watcher_rounds; ++round) {
      // CPU per GB too: the raw read's (this thread's) and the server process's.
      double raw = 0, raw_cpu = 0, relayed = 0, watched = 0, server_cpu = 0;
      for (int turn = 0; turn < 3; ++turn) {
        switch ((round + turn) % 3) {
          case 0: {
            timespec t0{}, t1{};
            clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t0);
            raw = raw_rate(false);
            clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t1);
            raw_cpu = static_cast<double>(t1.tv_sec - t0.tv_sec) + static_cast<double>(t1.tv_nsec - t0.tv_nsec) / 1e9;
            break;
          }
          case 1: relayed = raw_rate(true); break;
          default: {
            const double cpu0 = cmdcast::testing::process_cpu_seconds(main_server.pid);
            watched = one_subscriber_rate(io, port);
            server_cpu = cmdcast::testing::process_cpu_seconds(main_server.pid) - cpu0;
          }
        }
      }
      const double gb = std::stod(bytes) / 1e9;
      ratios.push_back(watched / raw);
      floors.push_back(relayed / raw);
      std::printf("round %d: executor raw read %.0f MB/s (%.2f s CPU per GB), relayed %.0f MB/s (%.2fx), 1 watcher "
                  "%.0f MB/s (server %.2f s CPU per GB): %.2fx\n",
                  round, raw, raw_cpu / gb, relayed, floors.back(), watched, server_cpu / gb, ratios.back());
    }
    const double mean = std::accumulate(ratios.begin(), ratios.end(), 0.0) / static_cast<double>(ratios.size());
    std::printf("1 watcher / raw read, median of %d: %.2fx, mean %.3fx (the plain relay: median %.2fx)\n\n",
                one_watcher_rounds, percentile(ratios, 0.5), mean, percentile(floors, 0.5));
    if (one_watcher_only) {
      stop_server(main_server);
      return 0;
    }
  }

  // 2. Memory per idle subscriber, measured first, on a fresh heap. The 10,000 stay connected
  // (idle) through the rest.
  std::vector<subscriber_stats> idle(latency_only || fanout_only ? 0 : 10000);
  int idle_done = 0;
  if (!idle.empty()) {
    const long before = rss_kib(main_server.pid);
    auto& stats = idle;
    auto& done = idle_done;
    net::co_spawn(io, subscribe(port, "/machines/box/commands/stream", R"({"action_type":"idle"})", stats[0], false, done),
                  net::detached);
    while (stats[0].execution_id.empty()) io.run_one();
    for (std::size_t i = 1; i < stats.size(); ++i) {
      net::co_spawn(io, subscribe(port, "/executions/" + stats[0].execution_id + "/stream", "", stats[i], false, done),
                    net::detached);
    }
    // Let every subscriber connect and settle.
    net::steady_timer settle(io, std::chrono::seconds(8));
    bool settled = false;
    settle.async_wait([&](auto) { settled = true; });
    while (!settled) io.run_one();
    const long after = rss_kib(main_server.pid);
    std::printf("10,000 idle subscribers: server RSS %ld -> %ld KiB, %.1f KiB per subscriber\n", before, after,
                static_cast<double>(after - before) / 10000.0);
  }
  // 3. Fan-out throughput.
  if (!latency_only) {
    std::printf("%-12s %14s %16s %10s %10s %16s\n", "subscribers", "MB/s each", "MB/s aggregate", "complete", "gaps",
                "server RSS MiB");
  }
  for (int n : {1, 10, 100}) {
    if (latency_only) break;
    const auto stats = fan_out(io, port, "stream", n, false);
    double slowest = 0;
    std::uint64_t total = 0;
    int complete = 0, gaps = 0;
    std::vector<double> each;
    for (const auto& s : stats) {
      const double d = s.exit - s.first_output;
      slowest = std::max(slowest, d);
      total += s.bytes;
      complete += s.exit > 0 && s.close_code == 1000;
      gaps += s.gaps;
      if (d > 0) each.push_back(static_cast<double>(s.bytes) / d / 1e6);
    }
    // The peak so far (with the 10,000 idle subscribers), and what is left after the run.
    std::printf("%-12d %14.0f %16.0f %10d %10d %7ld, now %ld\n", n, percentile(each, 0.5),
                static_cast<double>(total) / slowest / 1e6, complete, gaps, status_kib(main_server.pid, "VmHWM:") / 1024,
                rss_kib(main_server.pid) / 1024);
  }

  if (fanout_only) {
    stop_server(main_server);
    return 0;
  }

  // 4. Line latency to 1000 subscribers.
  {
    const auto stats = fan_out(io, port, "ticks", 1000, true);
    std::vector<double> all;
    for (const auto& s : stats) all.insert(all.end(), s.latencies_ms.begin(), s.latencies_ms.end());
    std::printf("\nline latency to 1000 subscribers (%zu samples): p50 %.2f ms, p99 %.2f ms\n", all.size(),
                percentile(all, 0.5), percentile(all, 0.99));
  }

  stop_server(main_server);
  // The idle subscribers see the server go; let them finish before their stats go away.
  run_until(io, idle_done, static_cast<int>(idle.size()));

  // 4b. Line latency to 10,000 live subscribers, on a fresh server.
  {
    auto srv = start_server(sshd, "live10k", bytes, "");
    const long overflows = listen_overflows();
    const auto stats = fan_out(io, srv.port, "ticks", 10000, true);
    std::vector<double> all;
    for (const auto& s : stats) all.insert(all.end(), s.latencies_ms.begin(), s.latencies_ms.end());
    std::printf("line latency to 10,000 subscribers (%zu samples): p50 %.2f ms, p99 %.2f ms "
                "(connects the full listen queue turned away: %ld)\n",
                all.size(), percentile(all, 0.5), percentile(all, 0.99), listen_overflows() - overflows);
    stop_server(srv);
  }
  if (latency_only) return 0;

  // 5. The audit's cost: the same stream to one subscriber, with and without the store,
  // alternately on two fresh servers, three rounds each.
  {
    auto with = start_server(sshd, "with_audit", bytes, "");
    auto without = start_server(sshd, "without_audit", bytes, "audit = false\n");
    std::vector<double> rate_with, rate_without;
    for (int round = 0; round < 3; ++round) {
      rate_without.push_back(one_subscriber_rate(io, without.port));
      rate_with.push_back(one_subscriber_rate(io, with.port));
    }
    const double w = percentile(rate_with, 0.5), wo = percentile(rate_without, 0.5);
    std::printf("\naudit store cost, 1 subscriber, median of 3: without %.0f MB/s, with %.0f MB/s (%+.1f%%)\n", wo, w,
                (w / wo - 1) * 100);
    stop_server(with);
    stop_server(without);
  }

  // 6. Long-polling against WebSocket on a fresh server: line latency, and the server's CPU.
  {
    auto srv = start_server(sshd, "polling", bytes, "");
    std::printf("\n%-28s %10s %10s %14s\n", "ticks (100 lines, 20/s) to", "p50 ms", "p99 ms", "server CPU s");
    for (const auto& [label, n, polling] : {std::tuple{"1 poller", 1, true}, std::tuple{"100 pollers", 100, true},
                                            std::tuple{"100 WebSocket subscribers", 100, false}}) {
      const double cpu0 = cmdcast::testing::process_cpu_seconds(srv.pid);
      std::vector<subscriber_stats> stats(static_cast<std::size_t>(n) + 1);
      int done = 0;
      const int attached_before = attached;
      // The runner's own WebSocket is not measured; the others attach as pollers or sockets.
      net::co_spawn(io, subscribe(srv.port, "/machines/box/commands/stream", R"({"action_type":"ticks"})", stats[0],
                                  false, done), net::detached);
      while (stats[0].execution_id.empty()) io.run_one();
      for (int i = 1; i <= n; ++i) {
        auto& st = stats[static_cast<std::size_t>(i)];
        if (polling) {
          net::co_spawn(io, poller(srv.port, stats[0].execution_id, st, done), net::detached);
        } else {
          net::co_spawn(io, subscribe(srv.port, "/executions/" + stats[0].execution_id + "/stream", "", st, true, done),
                        net::detached);
        }
      }
      start_ticks(io, attached_before + n + 1);
      run_until(io, done, n + 1);
      end_ticks();
      std::vector<double> all;
      for (std::size_t i = 1; i < stats.size(); ++i) {
        all.insert(all.end(), stats[i].latencies_ms.begin(), stats[i].latencies_ms.end());
      }
      std::printf("%-28s %10.2f %10.2f %14.2f\n", label, percentile(all, 0.5), percentile(all, 0.99),
                  cmdcast::testing::process_cpu_seconds(srv.pid) - cpu0);
    }
    stop_server(srv);
  }

  // 7. TLS against plaintext.
  std::printf("\n");
  tls_against_plaintext(io, sshd, bytes);

  // 8. permessage-deflate.
  deflate_rows(io, sshd, bytes);
  return 0;
}
