// cmdcast-server's shared state, for the files that make up its front: server.cpp (the
// listener and connections: TLS handshake, requests, upgrades, accepting, shutdown),
// routes.cpp (the JSON routes and the long-poll), websocket_routes.cpp (runs and attaches
// over WebSocket). The request policy, the static files, the executions registry and the
// TLS transport have files of their own. Used on the server's thread only.
#pragma once

#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core/error.hpp>
#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/message.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/string_body.hpp>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <variant>
#include <vector>

#include "audit/audit_store.hpp"
#include "cluster/cluster_node.hpp"
#include "exec/registry.hpp"
#include "http/request_policy.hpp"
#include "http/server.hpp"
#include "http/transport.hpp"
#include "http/ws_connection.hpp"

namespace cmdcast::server {

namespace beast = boost::beast;
namespace http = beast::http;
using tcp = net::ip::tcp;
using common::error_code;
using request = http::request<http::string_body>;
using response = http::response<http::string_body>;

/// Path and query of a request target, decoded.
struct target {
  std::vector<std::string> parts;  // path segments
  std::map<std::string, std::string> query;
};

/// An error event's JSON, as HTTP answers and WebSocket refusals carry it.
std::string error_json(error_code code, std::string_view message);
/// A query number such as `after`: absent gives `fallback`, anything but a decimal >= `min` fails.
std::optional<std::int64_t> query_number(const target& t, const std::string& key, std::int64_t fallback, std::int64_t min);

/// A batch stream's or batch poll's `after` (EXECUTION_ID:SEQ,...), every execution of `b`
/// with its seq (-1 when not given), or what is wrong with it.
std::variant<std::map<std::string, common::seq_t>, std::string> parse_batch_after(const target& t, const batch& b);

/// A subscriber on a connection of ours: told when the server shuts down.
class live_subscriber : public subscriber {
 public:
  virtual void shut_down() = 0;
  /// Its token was removed (or its role changed) by a reload: it is let go.
  virtual void revoke() = 0;
};

struct server::impl : std::enable_shared_from_this<server::impl> {
  impl(net::io_context& io_, config c)
      : io(io_),
        cfg(std::make_shared<const config>(std::move(c))),
        policy(cfg->server, cfg->tokens),
        registry(io_.get_executor(), cfg->server),
        acceptor(io_) {}

  net::io_context& io;
  std::shared_ptr<const config> cfg;  // replaced whole by a reload; runs keep what they started with
  request_policy policy;
  execution_registry registry;
  std::shared_ptr<tls_context> tls;  // null: plaintext
  tcp::acceptor acceptor;
  bool stopping = false;
  std::function<void()> on_stopped;
  std::unique_ptr<net::steady_timer> drain_deadline;

  std::map<live_subscriber*, principal> watchers;  // WebSockets and long-polls, told of a shutdown or a revoked token
  /// A long-poller between two polls: still subscribed where its answer ended, until its next
  /// poll (with after = next) takes its place or the idle timeout passes.
  struct parked_poll {
    std::shared_ptr<execution> e;
    std::shared_ptr<subscriber> collector;
    common::seq_t next;
    net::steady_timer expiry;
    principal who;
  };
  std::multimap<std::string, std::shared_ptr<parked_poll>> parked_polls;  // by execution id
  void park_poll(std::shared_ptr<execution> e, std::shared_ptr<subscriber> collector, common::seq_t next, principal who);
  /// Ends the parking of a poller of `id` that had its answer up to `next`, if there is one.
  void unpark_poll(const std::string& id, common::seq_t next);
  void unpark_all();
  std::unique_ptr<audit_store> audit;
  std::shared_ptr<cluster::cluster_node> cluster;  // [cluster]: executions shared through Redis
  /// The execution `id` wherever it runs: held here, or (in a cluster) a copy of another
  /// server's; null when neither.
  net::awaitable<std::shared_ptr<execution>> find_execution(const std::string& id);
  /// The fleet run `id` wherever it runs (held here, or a copy of another server's); null when
  /// neither.
  net::awaitable<std::shared_ptr<batch>> find_batch(const std::string& id);
  /// Cancels `e` (a copy: through its owner) or every execution of `b` not yet ended, for `who`.
  net::awaitable<void> cancel_execution(const std::shared_ptr<execution>& e, const principal& who);
  net::awaitable<void> cancel_batch(const std::shared_ptr<batch>& b, const principal& who);
  /// Approves or rejects `e` (held here, or a copy: the checks are the same) for `user`: an
  /// error when it is not awaiting approval or `user` asked for it (four eyes).
  std::optional<request_error> check_decision(const execution& e, const std::string& user) const;
  std::optional<request_error> decide(const std::shared_ptr<execution>& e, bool approving, const std::string& user);
  std::unique_ptr<net::steady_timer> prune_timer;

  // Metrics.
  std::uint64_t connections_open = 0, connections_total = 0, connections_refused = 0, accept_errors = 0;
  ws_connection::traffic ws_traffic;
  std::uint64_t requests_rejected = 0;
  std::uint64_t requests_denied = 0;  // 401 and 403
  std::uint64_t reloads = 0, reloads_refused = 0;
  std::uint64_t websockets_compressed = 0;  // that negotiated permessage-deflate

  // Connections (server.cpp): TLS handshake, requests, upgrades, accepting, shutdown.
  /// Deletes audit records past audit_retention_days, now and then every hour, until shutdown.
  net::awaitable<void> prune_audit();
  /// The answer to a WebSocket upgrade, or an HTTP error for an upgrade that is not one.
  /// `deflate`: the Sec-WebSocket-Extensions answer negotiated (negotiate_deflate), or empty.
  std::variant<std::string, response> upgrade_answer(const request& req, std::string_view deflate);
  /// Reads one request into `parser`, from `pending` (bytes already read) and then the
  /// connection. An error, or end_of_stream when the peer left (or the deadline closed it).
  static net::awaitable<beast::error_code> read_request(transport& conn, std::string& pending,
                                                        http::request_parser<http::string_body>& parser);
  /// One connection: TLS handshake, then requests until it closes or upgrades to a WebSocket.
  net::awaitable<void> session(tcp::socket socket);
  net::awaitable<void> accept_loop();
  /// A connection accepted: its session, or closed at once past max_connections.
  void serve(tcp::socket socket);
  /// During shutdown: once every execution has ended and every watcher has been sent what it
  /// had queued and closed (or a few seconds have passed), report the server stopped.
  void maybe_stopped(bool force = false);
  /// Puts `next` in force (server::reload).
  void reconfigure(config next);
  /// Logs a refused request (401 or 403) with where it came from.
  void log_denied(const request& req, const request_facts& facts, error_code code, std::string_view reason);

  // The JSON routes and the long-poll (routes.cpp).
  response json_response(const request& req, http::status status, std::string body);
  /// An answer with a body (named for what it mostly carries; the type says what it is).
  response text_response(const request& req, http::status status, std::string body,
                         std::string_view type = "text/plain");
  response error_response(const request& req, error_code code, std::string_view message);
  std::vector<common::machine_info> machine_list() const;
  std::string metrics_text() const;
  /// A file of the web client under web_root (GET or HEAD), gzip-compressed when the build left
  /// a FILE.gz beside it and the browser takes gzip.
  std::optional<response> serve_static(const request& req, const target& t);
  /// The audit's records (it has every execution) with the live ones' current state on top.
  net::awaitable<std::vector<common::execution_record>> execution_list(std::string state, std::string machine,
                                                                       std::size_t limit);
  /// A run request (the first WebSocket message or a POST body) checked and started.
  std::variant<std::shared_ptr<execution>, request_error> begin_run(const std::string& machine_id,
                                                                     std::string_view body, const principal& who);
  /// Every route but the long-poll and WebSockets. (Reading the audit store is awaited: it works
  /// on a thread of its own.)
  /// `unauthenticated`: what a 401 says, when `who` is nullopt.
  net::awaitable<response> handle_http(const request& req, const target& t, std::optional<principal> who,
                                       std::string unauthenticated);
  /// GET /executions/{id}/events?after=SEQ&wait=S: what is there after SEQ at once, or the
  /// first new events within S seconds. The poller is a watcher while it waits.
  net::awaitable<response> long_poll(const request& req, const target& t, const principal& who);
  static std::string past_the_end(common::seq_t after, common::seq_t last);
  /// GET /executions/{id}/output (download_route.cpp): an error to answer, or the file was
  /// written to `conn` and whether the connection may serve another request.
  net::awaitable<std::variant<response, bool>> download(const request& req, const target& t, const principal& who,
                                                        transport& conn);

  // Runs and attaches over WebSocket (websocket_routes.cpp).
  /// Sends an error event and closes with 1008 (policy): for auth, origin and request errors.
  net::awaitable<void> refuse(ws_connection& ws, error_code code, std::string message);
  /// Streams `e` to the WebSocket from `after` on, and takes cancel requests, until the
  /// execution ends or the client leaves (or is closed for reading nothing).
  net::awaitable<void> watch(ws_connection& ws, std::shared_ptr<execution> e, common::seq_t after, const principal& who);
  /// A finished execution from the audit store: its stored events after `after`, page by page,
  /// then 1000.
  net::awaitable<void> send_stored(ws_connection& ws, const std::string& id, common::seq_t after);
  net::awaitable<void> run_websocket(ws_connection& ws, const target& t, const principal& who);
  net::awaitable<void> watch_batch(ws_connection& ws, std::shared_ptr<batch> b, std::map<std::string, common::seq_t> after,
                                   const principal& who);

  // Fleet runs (routes.cpp).
  /// POST /groups/{group}/commands, checked and started.
  std::variant<std::shared_ptr<batch>, request_error> begin_batch(const std::string& group, std::string_view body,
                                                                  const principal& who);
  /// GET /batches/{id}/events?after=EXEC:SEQ,...&wait=S: every execution's events after its own
  /// seq, tagged, and the summary.
  net::awaitable<response> batch_poll(const request& req, const target& t, const principal& who);
};

}  // namespace cmdcast::server
