#include "server_harness.hpp"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <thread>

#include "config/config.hpp"
#include "support/log.hpp"

extern char** environ;

namespace cmdcast::testing {

server_process::server_process(const loopback_sshd& sshd, const std::string& extra_server,
                               const std::vector<std::string>& launcher, const std::string& extra_toml) {
  port_ = free_loopback_port();
  config_ = sshd.dir() + "/cmdcast.toml";
  // The tests' own defaults, unless `extra_server` sets the key itself (TOML refuses a key
  // twice). The fan-out's bounds are the server's defaults: what a user runs.
  std::string server_keys = extra_server + "\n";
  for (const std::string& line : std::vector<std::string>{"allowed_origins = [\"http://allowed.example\"]", "kill_grace_ms = 1000",
                                 "audit_db = \"" + sshd.dir() + "/cmdcast.db\""}) {
    const std::string key = line.substr(0, line.find(' ') + 1);
    // An [audit] table of its own (PostgreSQL) replaces audit_db.
    if (key == "audit_db " && ("\n" + extra_toml).find("\n[audit]") != std::string::npos) continue;
    if (("\n" + extra_server).find("\n" + key) == std::string::npos) server_keys += line + "\n";
  }
  const bool anonymous = ("\n" + extra_server).find("\nanonymous ") != std::string::npos;
  std::ofstream(config_) << "[server]\nlisten = \"127.0.0.1:" << port_ << "\"\n"
                         << server_keys
                         << (anonymous ? "" : "[[tokens]]\nname = \"olivia\"\nsha256 = \"" + server::sha256_hex(operator_token) +
                                                  "\"\nrole = \"operator\"\n"
                                                  "[[tokens]]\nname = \"victor\"\nsha256 = \"" + server::sha256_hex(viewer_token) +
                                                  "\"\nrole = \"viewer\"\n"
                                                  "[[tokens]]\nname = \"oscar\"\nsha256 = \"" + server::sha256_hex(second_operator_token) +
                                                  "\"\nrole = \"operator\"\n")
                         << sshd.machine_toml("box")
                         << R"(
[actions.lines]
command = "for i in 1 2 3; do echo line $i; sleep 0.3; done; echo done >&2"
[actions.fail]
command = "echo oops >&2; exit 3"
[actions.restart_service]
command = "echo restarting {service}"
params = { service = "^[a-z0-9@._-]{1,64}$" }
[actions.slow]
command = "echo started; sleep 1.5; echo finished"
[actions.forever]
command = "echo started; sleep 600"
[actions.ticks]
command = "for i in $(seq 100); do echo tick $i; sleep 0.2; done"
[actions.python_buffered]
command = "python3 -c \"import time; print('first'); time.sleep(1.5); print('second')\""
[actions.utf8_edges]
command = "printf 'a\\342\\234'; sleep 0.3; printf '\\223b\\377c\\n'; yes 'é' | head -c 600001"
[actions.control_burst]
command = "while [ ! -e {go} ]; do sleep 0.05; done; head -c {bytes} /dev/zero | tr '\\0' '\\1'"
params = { go = "^/tmp/cmdcast-go-[A-Za-z0-9]{1,32}$", bytes = "^[0-9]{1,10}$" }
[actions.flood]
command = "for i in $(seq 300); do head -c 100000 /dev/zero | tr '\\0' a; sleep 0.005; done"
[actions.burst]
command = "while [ ! -e {go} ]; do sleep 0.05; done; yes 'cmdcast burst: every watcher who keeps reading gets every line' | head -c {bytes}"
params = { go = "^/tmp/cmdcast-go-[A-Za-z0-9]{1,32}$", bytes = "^[0-9]{1,10}$" }
[actions.echo_value]
command = "printf '%s' {value}"
params = { value = "^(?s:.+)$" }
[actions.two_values]
command = "printf '%s|%s' {a} {b}"
params = { a = "^.{1,64}$", b = "^.{1,64}$" }
[actions.backtrack]
command = "echo {word}"
params = { word = "^([a-z]+)*$" }
[actions.numbers]
command = "seq 1 {count}"
params = { count = "^[0-9]{1,8}$" }
[actions.apt_reinstall]
command = "DEBIAN_FRONTEND=noninteractive sudo -n apt-get install --reinstall -y {package}"
params = { package = "^[a-z0-9][a-z0-9+.-]{0,63}$" }
progress = "apt"
timeout_s = 600
[actions.secret_echo]
command = "printf 'once %s\\n' {token}; printf 'twice %s and %s\\n' {token} {token}; v={token}; printf 'split %.10s' \"$v\"; sleep 0.3; printf '%s end\\n' \"${v#??????????}\"; printf 'progress 10%%\\rkey=%s done\\n' {token}; printf 'err %s\\n' {token} >&2"
params = { token = { pattern = "^[A-Za-z0-9]{20,64}$", secret = true } }
[actions.exclusive_wait]
command = "echo start {tag}; while [ ! -e {go} ]; do sleep 0.05; done; echo end {tag}"
params = { tag = "^[a-z0-9]{1,16}$", go = "^/tmp/cmdcast-go-[A-Za-z0-9]{1,32}$" }
exclusive = true
[actions.exclusive_refuse]
command = "echo refusing {tag}"
params = { tag = "^[a-z0-9]{1,16}$" }
exclusive = true
on_busy = "refuse"
[actions.concurrency]
command = "mkdir -p {dir}; touch {dir}/$$; ls {dir} | wc -l >> {dir}.log; sleep 0.4; rm {dir}/$$"
params = { dir = "^/tmp/cmdcast-par-[A-Za-z0-9]{1,32}$" }
)"
                         // Approval needs tokens: with anonymous access nobody could approve another's run.
                         << (anonymous ? "" : R"(
[actions.approved_echo]
command = "echo approved run {word}"
params = { word = "^[a-z]{1,16}$" }
approval = true
[actions.approval_expires]
command = "echo never"
approval = true
approval_timeout_s = 1
)") << extra_toml;
  std::vector<std::string> args = launcher;
  for (const char* a : {CMDCAST_SERVER_BINARY, "--config", config_.c_str()}) args.emplace_back(a);
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  log_ = sshd.dir() + "/server.log";
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 2, log_.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
  if (posix_spawnp(&pid_, argv[0], &actions, nullptr, argv.data(), environ) != 0) throw std::runtime_error("spawn");
  posix_spawn_file_actions_destroy(&actions);
  for (int i = 0; i < 200; ++i) {
    try {
      net::io_context io;
      tcp::socket s(io);
      s.connect({net::ip::make_address("127.0.0.1"), port_});
      return;
    } catch (...) {
      std::this_thread::sleep_for(std::chrono::milliseconds(25));
    }
  }
  throw std::runtime_error("cmdcast-server did not start; see " + log_);
}

server_process::~server_process() {
  kill_hard();
  // When something failed, the server's own log is the first place to look.
  if (::testing::UnitTest::GetInstance()->failed_test_count() > 0) {
    std::fprintf(stderr, "--- cmdcast-server log ---\n%s--- end of log ---\n", log().c_str());
  }
}

int server_process::terminate() {
  ::kill(pid_, SIGTERM);
  int status = 0;
  ::waitpid(pid_, &status, 0);
  pid_ = -1;
  return status;
}

void server_process::kill_hard() {
  if (pid_ <= 0) return;
  ::kill(pid_, SIGKILL);
  ::waitpid(pid_, nullptr, 0);
  pid_ = -1;
}

std::string server_binary() { return CMDCAST_SERVER_BINARY; }

common::execution_record running_record(const std::string& id) {
  common::execution_record r;
  r.execution_id = id;
  r.machine_id = "box";
  r.action_type = "lines";
  r.command = "echo";
  r.user = "olivia";
  r.state = "running";
  r.started_at = server::rfc3339_now();
  return r;
}

std::shared_ptr<const std::string> output_frame(common::seq_t seq, const std::string& text) {
  return std::make_shared<const std::string>(common::encode(event{common::output_event{seq, common::output_stream::out, text}}));
}

std::size_t count_events(const std::string& log, const std::string& name) {
  const std::string needle = "\"event\":\"" + name + "\"";
  std::size_t n = 0;
  for (auto at = log.find(needle); at != std::string::npos; at = log.find(needle, at + 1)) ++n;
  return n;
}

bool server_process::reload(const std::string& event_name) {
  const auto before = count_events(log(), event_name);
  ::kill(pid_, SIGHUP);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (std::chrono::steady_clock::now() < deadline) {
    if (count_events(log(), event_name) > before) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return false;
}

std::string server_process::log() const {
  std::ifstream in(log_);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

void shared_server::start(const std::function<std::string(const std::string&)>& extra_server) {
  sshd = std::make_unique<loopback_sshd>();
  server = std::make_unique<server_process>(*sshd, extra_server ? extra_server(sshd->dir()) : "");
}

void shared_server::stop() {
  server.reset();
  sshd.reset();
}

http_answer http_request(std::uint16_t port, http::verb verb, const std::string& target, const std::string& token,
                         const std::string& body, const std::vector<std::pair<std::string, std::string>>& headers) {
  net::io_context io;
  beast::tcp_stream stream(io);
  stream.connect(tcp::endpoint(net::ip::make_address("127.0.0.1"), port));
  http::request<http::string_body> req{verb, target, 11};
  req.set(http::field::host, "127.0.0.1");
  if (!token.empty()) req.set(http::field::authorization, "Bearer " + token);
  for (const auto& [name, value] : headers) req.set(name, value);
  req.body() = body;
  req.prepare_payload();
  http::write(stream, req);
  beast::flat_buffer buffer;
  http::response_parser<http::string_body> parser;
  parser.body_limit(64 << 20);
  http::read(stream, buffer, parser);
  return {parser.get().result_int(), parser.get().body()};
}

common::execution_record record_of(std::uint16_t port, const std::string& id) {
  const auto answer = http_request(port, http::verb::get, "/executions/" + id, viewer_token);
  EXPECT_EQ(answer.status, 200u) << answer.body;
  auto r = common::decode_execution_record(answer.body);
  EXPECT_TRUE(r.ok()) << answer.body;
  return r.ok() ? *r : common::execution_record{};
}

program_result run_program(const std::string& command_line) {
  char err_path[] = "/tmp/cmdcast-program-err-XXXXXX";
  const int fd = ::mkstemp(err_path);
  ::close(fd);
  const std::string command = "CMDCAST_TOKEN=" + operator_token + " " + command_line + " 2>" + err_path;
  std::FILE* p = ::popen(command.c_str(), "r");
  program_result r;
  char buf[4096];
  std::size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) r.out.append(buf, n);
  const int status = ::pclose(p);
  r.status = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  std::ifstream in(err_path);
  r.err.assign(std::istreambuf_iterator<char>(in), {});
  ::unlink(err_path);
  return r;
}

std::string post_run(std::uint16_t port, const std::string& request) {
  const auto answer = http_request(port, http::verb::post, "/machines/box/commands", operator_token, request);
  EXPECT_EQ(answer.status, 202u) << answer.body;
  auto accepted = common::decode_run_accepted(answer.body);
  EXPECT_TRUE(accepted.ok()) << answer.body;
  return accepted.ok() ? accepted->execution_id : "";
}

ws_client::ws_client(std::uint16_t port, const std::string& target, ws_options o) : ws_(io_) {
  auto& socket = beast::get_lowest_layer(ws_).socket();
  socket.open(tcp::v4());
  if (o.receive_buffer > 0) socket.set_option(net::socket_base::receive_buffer_size(o.receive_buffer));
  socket.connect(tcp::endpoint(net::ip::make_address("127.0.0.1"), port));
  ws_.set_option(websocket::stream_base::decorator([o](websocket::request_type& req) {
    if (!o.origin.empty()) req.set(http::field::origin, o.origin);
    if (o.token.empty()) return;
    if (o.token_as_subprotocol) {
      req.set(http::field::sec_websocket_protocol, "cmdcast.v1, cmdcast.bearer." + o.token);
    } else {
      req.set(http::field::authorization, "Bearer " + o.token);
    }
  }));
  if (o.deflate) {
    websocket::permessage_deflate deflate;
    deflate.client_enable = true;
    ws_.set_option(deflate);
  }
  ws_.read_message_max(64 << 20);
  ws_.handshake(response_, o.host, target);
}

std::optional<std::string> ws_client::next() {
  beast::flat_buffer buffer;
  beast::error_code ec;
  ws_.read(buffer, ec);
  if (ec) {
    if (ec != websocket::error::closed) error_ = ec;
    return std::nullopt;
  }
  return beast::buffers_to_string(buffer.data());
}

std::vector<event> ws_client::all() {
  std::vector<event> out;
  while (auto m = next()) {
    auto e = common::decode_event(*m);
    EXPECT_TRUE(e.ok()) << e.error() << ": " << *m;
    if (e.ok()) out.push_back(*e);
  }
  return out;
}

std::string run_request(const std::string& action, const std::string& params) {
  return R"({"action_type":")" + action + R"(","params":)" + params + "}";
}

std::uint64_t metric(std::uint16_t port, const std::string& name) {
  const auto text = http_request(port, http::verb::get, "/metrics", viewer_token).body;
  const auto at = text.find("\n" + name + " ");
  EXPECT_NE(at, std::string::npos) << name << " is not in /metrics";
  return at == std::string::npos ? 0 : std::stoull(text.substr(at + name.size() + 2));
}

common::poll_response poll(std::uint16_t port, const std::string& id, common::seq_t after, int wait_s) {
  const auto answer = http_request(port, http::verb::get,
                                   "/executions/" + id + "/events?after=" + std::to_string(after) +
                                       "&wait=" + std::to_string(wait_s),
                                   viewer_token);
  EXPECT_EQ(answer.status, 200u) << answer.body;
  auto p = common::decode_poll_response(answer.body);
  EXPECT_TRUE(p.ok()) << p.error() << ": " << answer.body.substr(0, 200);
  return p.ok() ? *p : common::poll_response{{}, after, true};
}

std::vector<event> poll_to_the_end(std::uint16_t port, const std::string& id) {
  std::vector<event> all;
  common::seq_t after = -1;
  for (int i = 0; i < 100000; ++i) {
    auto p = poll(port, id, after, 5);
    all.insert(all.end(), p.events.begin(), p.events.end());
    after = p.next;
    if (p.done) return all;
  }
  ADD_FAILURE() << "the poll never said done";
  return all;
}

std::string text_of(const std::vector<event>& events, common::output_stream stream) {
  std::string s;
  for (const auto& o : of_type<common::output_event>(events)) {
    if (o.stream == stream) s += o.data;
  }
  return s;
}

std::vector<event> sequenced(const std::vector<event>& events) {
  std::vector<event> out;
  for (const auto& e : events) {
    if (common::event_seq(e)) out.push_back(e);
  }
  return out;
}

raw_upgrade_result raw_upgrade(tcp::socket& s, const std::string& target, const std::string& token,
                               const std::string& extra_headers) {
  net::write(s, net::buffer("GET " + target + " HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                            "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                            "Sec-WebSocket-Version: 13\r\nAuthorization: Bearer " + token + "\r\n" +
                            extra_headers + "\r\n"));
  std::string received;
  char buf[4096];
  while (received.find("\r\n\r\n") == std::string::npos) received.append(buf, s.read_some(net::buffer(buf)));
  const auto end = received.find("\r\n\r\n") + 4;
  return {received.substr(0, end), received.substr(end)};
}

std::string masked_frame(std::uint8_t first, const std::string& payload) {
  std::string f(1, static_cast<char>(first));
  f += static_cast<char>(0x80 | payload.size());  // short payloads only (< 126 bytes)
  f += std::string(4, '\0');
  return f + payload;
}

void batch_view::add(const std::string& text) {
  auto t = common::decode_tagged_event(text);
  ASSERT_TRUE(t.ok()) << t.error() << ": " << text;
  if (const auto* s = std::get_if<common::batch_event>(&t->e)) {
    summaries.push_back(*s);
    return;
  }
  ASSERT_FALSE(t->execution_id.empty()) << text;
  machine_of[t->execution_id] = t->machine_id;
  by_execution[t->execution_id].push_back(t->e);
  if (const auto seq = common::event_seq(t->e)) last_seq[t->execution_id] = *seq;
}

std::string batch_view::after() const {
  std::string out;
  for (const auto& [id, seq] : last_seq) out += (out.empty() ? "" : ",") + id + ":" + std::to_string(seq);
  return out;
}

}  // namespace cmdcast::testing
