// Drives cmdcast-server as its users do: the server binary as a process with a config for a
// loopback sshd, plain Beast HTTP and WebSocket clients, and helpers to pick events apart.
#pragma once

#include <gtest/gtest.h>
#include <sys/types.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/websocket.hpp>

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "cmdcast/common/codec.hpp"
#include "loopback_sshd.hpp"

namespace cmdcast::testing {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace websocket = beast::websocket;
using tcp = net::ip::tcp;
using common::event;

inline const std::string operator_token = "op-secret-token";
inline const std::string viewer_token = "view-secret-token";
inline const std::string second_operator_token = "op2-secret-token";  // "oscar", a second operator

/// cmdcast-server started from its binary with a config for a loopback sshd: machine "box", the
/// test actions, an operator and a viewer token, the audit in the sshd's folder (so a server
/// started again on the same sshd finds the same audit). `extra_server` adds [server] keys;
/// with `anonymous` among them the config has no tokens.
class server_process {
 public:
  /// `launcher` goes before the server's command line (e.g. prlimit and its options);
  /// `extra_toml` is added at the end of the config (more machines, [groups]).
  explicit server_process(const loopback_sshd& sshd, const std::string& extra_server = "",
                          const std::vector<std::string>& launcher = {}, const std::string& extra_toml = "");
  ~server_process();
  server_process(const server_process&) = delete;
  server_process& operator=(const server_process&) = delete;

  /// Sends SIGTERM and returns the exit status.
  int terminate();
  /// SIGKILL: the crash a process cannot clean up after.
  void kill_hard();
  std::uint16_t port() const { return port_; }
  pid_t pid() const { return pid_; }
  std::string log() const;
  /// The config file it was started with (a test may rewrite it, then reload()).
  const std::string& config_path() const { return config_; }
  /// SIGHUP, then waits (up to 10 s) until the log shows one more `event_name` line than before:
  /// "reloaded" or "reload_refused". False when none came.
  bool reload(const std::string& event_name = "reloaded");

 private:
  std::uint16_t port_ = 0;
  std::string config_, log_;
  pid_t pid_ = -1;
};

/// A loopback sshd and a cmdcast-server shared by the tests of one suite: started in its
/// SetUpTestSuite, stopped in its TearDownTestSuite.
struct shared_server {
  /// `extra_server` may use the folder of the sshd, which exists first (for a web root, say).
  void start(const std::function<std::string(const std::string& sshd_dir)>& extra_server = {});
  void stop();
  std::uint16_t port() const { return server->port(); }

  std::unique_ptr<loopback_sshd> sshd;
  std::unique_ptr<server_process> server;
};

struct http_answer {
  unsigned status = 0;
  std::string body;
};

http_answer http_request(std::uint16_t port, http::verb verb, const std::string& target, const std::string& token,
                         const std::string& body = "",
                         const std::vector<std::pair<std::string, std::string>>& headers = {});

/// For the audit store's own tests: the record of a run of "lines" on "box" by olivia, running
/// since now, and a stdout event's frame.
common::execution_record running_record(const std::string& id);
std::shared_ptr<const std::string> output_frame(common::seq_t seq, const std::string& text);

/// GET /executions/{id} as a viewer, decoded (a failed expectation when it is not there).
common::execution_record record_of(std::uint16_t port, const std::string& id);

struct program_result {
  int status = -1;  // the exit code, -1 when killed by a signal
  std::string out, err;
};

/// The cmdcast-server binary under test.
std::string server_binary();
/// How many lines of the log `log` have "event":"NAME".
std::size_t count_events(const std::string& log, const std::string& name);

/// Runs a command line in a shell as a user would, with the operator's token in
/// $CMDCAST_TOKEN: its exit code, stdout and stderr.
program_result run_program(const std::string& command_line);

/// POST /machines/box/commands as the operator: the execution id.
std::string post_run(std::uint16_t port, const std::string& request);

struct ws_options {
  std::string token = operator_token;
  bool token_as_subprotocol = false;
  std::string origin;
  std::string host = "127.0.0.1";  // the Host header
  int receive_buffer = 0;  // SO_RCVBUF before connecting (0: the system's, which grows to MBs)
  bool deflate = false;    // offer permessage-deflate, as browsers do
};

/// A WebSocket client that records everything it receives.
class ws_client {
 public:
  ws_client(std::uint16_t port, const std::string& target, ws_options o = ws_options());

  void send(const std::string& text) { ws_.write(net::buffer(text)); }
  void close() { ws_.close(websocket::close_code::normal); }
  /// The next message, or nullopt once the server closed.
  std::optional<std::string> next();
  /// Reads to the end: every message, decoded.
  std::vector<event> all();
  websocket::close_reason reason() const { return ws_.reason(); }
  /// Why reading ended, unless by a close handshake.
  beast::error_code error() const { return error_; }
  const websocket::response_type& response() const { return response_; }
  /// The stream itself, for frames the helpers above do not send (pings, fragments, binary).
  websocket::stream<beast::tcp_stream>& stream() { return ws_; }

 private:
  net::io_context io_;
  websocket::stream<beast::tcp_stream> ws_;
  websocket::response_type response_;
  beast::error_code error_;
};

std::string run_request(const std::string& action, const std::string& params = "{}");

/// A counter or gauge of /metrics (a failed expectation, and 0, when it is not there).
std::uint64_t metric(std::uint16_t port, const std::string& name);

/// GET /executions/{id}/events?after=AFTER&wait=WAIT_S as the viewer, decoded (a failed
/// expectation, and a done answer, when it is not 200 and a poll answer).
common::poll_response poll(std::uint16_t port, const std::string& id, common::seq_t after, int wait_s);
/// Polls from the start until done, as a client without WebSocket would.
std::vector<event> poll_to_the_end(std::uint16_t port, const std::string& id);

/// A WebSocket opened by hand on `s` (connected by the caller, who may set options first), for
/// frames and silences no client library would produce: the 101 answer's head, and what came
/// after it.
struct raw_upgrade_result {
  std::string head, rest;
};
raw_upgrade_result raw_upgrade(tcp::socket& s, const std::string& target, const std::string& token,
                               const std::string& extra_headers = "");

/// A client frame as the protocol wants it (masked, here with a zero mask): `first` is the
/// FIN bit and opcode byte.
std::string masked_frame(std::uint8_t first, const std::string& payload);

template <class T>
std::vector<T> of_type(const std::vector<event>& events) {
  std::vector<T> out;
  for (const auto& e : events) {
    if (auto* t = std::get_if<T>(&e)) out.push_back(*t);
  }
  return out;
}

std::string text_of(const std::vector<event>& events, common::output_stream stream);
/// What a fleet run's watcher got, by execution: its events in order, and the summaries.
struct batch_view {
  std::map<std::string, std::vector<event>> by_execution;
  std::map<std::string, std::string> machine_of;
  std::vector<common::batch_event> summaries;
  std::map<std::string, common::seq_t> last_seq;

  /// Takes one message of a batch stream (or one event of its polling twin).
  void add(const std::string& text);
  /// EXEC:SEQ,... for a resume.
  std::string after() const;
};

/// The sequenced events, as the client must see them: seq 0, 1, 2, ... with no hole.
std::vector<event> sequenced(const std::vector<event>& events);

}  // namespace cmdcast::testing
