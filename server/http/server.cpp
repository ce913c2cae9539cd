#include "http/server.hpp"

#include <openssl/evp.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/websocket/rfc6455.hpp>
#include <boost/url/parse.hpp>

#include <algorithm>
#include <array>
#include <charconv>
#include <cstdio>
#include <deque>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <set>
#include <sstream>
#include <variant>

#include "cmdcast/common/codec.hpp"
#include "audit/audit_store.hpp"
#include "exec/execution.hpp"
#include "exec/registry.hpp"
#include "http/request_policy.hpp"
#include "http/static_files.hpp"
#include "http/transport.hpp"
#include "http/ws_connection.hpp"
#include "support/log.hpp"

namespace cmdcast::server {
namespace {

namespace beast = boost::beast;
namespace http = beast::http;
namespace websocket = beast::websocket;
using tcp = net::ip::tcp;
using namespace net::experimental::awaitable_operators;
constexpr auto use_tuple = net::as_tuple(net::use_awaitable);
using common::error_code;

using request = http::request<http::string_body>;
using response = http::response<http::string_body>;

constexpr std::size_t stored_page_bytes = 256u << 10;  // frames read from the audit per page
constexpr std::size_t poll_answer_bytes = 1u << 20;    // a long-poll answer's bound
constexpr std::int64_t max_poll_wait_s = 30;
constexpr std::int64_t max_list_limit = 1000;
constexpr auto request_deadline = std::chrono::seconds(10);  // the TLS handshake and a whole request
constexpr std::size_t max_header_bytes = 16 * 1024;

std::string error_json(error_code code, std::string_view message) {
  return common::encode(common::event{common::error_event{code, std::string(message)}});
}

/// Path and query of a request target, decoded.
struct target {
  std::vector<std::string> parts;  // path segments
  std::map<std::string, std::string> query;
};

std::optional<target> parse_target(std::string_view t) {
  const auto url = boost::urls::parse_origin_form(t);
  if (!url) return std::nullopt;
  target out;
  for (const auto& segment : url->segments()) {
    if (!segment.empty()) out.parts.push_back(segment);
  }
  for (const auto& param : url->params()) out.query[param.key] = param.value;
  return out;
}

/// Sec-WebSocket-Accept for a client's key (RFC 6455 4.2.2), or nullopt for a key that is not
/// 16 bytes in base64.
std::optional<std::string> websocket_accept(std::string_view key) {
  if (key.size() != 24 || !key.ends_with("==")) return std::nullopt;
  const std::string text = std::string(key) + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
  unsigned char digest[20];
  unsigned int n = 0;
  EVP_Digest(text.data(), text.size(), digest, &n, EVP_sha1(), nullptr);
  unsigned char encoded[32];
  const int len = EVP_EncodeBlock(encoded, digest, 20);
  return std::string(reinterpret_cast<char*>(encoded), static_cast<std::size_t>(len));
}

/// A query number such as `after`: absent gives `fallback`, anything but a decimal fails.
std::optional<std::int64_t> query_number(const target& t, const std::string& key, std::int64_t fallback, std::int64_t min) {
  const auto it = t.query.find(key);
  if (it == t.query.end()) return fallback;
  std::int64_t v = 0;
  const auto& s = it->second;
  const auto r = std::from_chars(s.data(), s.data() + s.size(), v);
  if (r.ec != std::errc() || r.ptr != s.data() + s.size() || v < min) return std::nullopt;
  return v;
}

}  // namespace

/// A subscriber on a connection of ours: told when the server shuts down.
class live_subscriber : public subscriber {
 public:
  virtual void shut_down() = 0;
};

/// A WebSocket watching an execution. Frames go to the connection's queue, written as the
/// socket takes them (ws_connection); past the queue bound the watcher is evicted (1013).
class ws_watcher : public live_subscriber, public std::enable_shared_from_this<ws_watcher> {
 public:
  ws_watcher(std::shared_ptr<ws_connection> connection, std::size_t limit)
      : connection_(std::move(connection)), limit_(limit) {}

  bool push(const frame& f, common::seq_t seq) override {
    if (connection_->closing()) return true;
    if (connection_->queued_bytes() + f->size() > limit_ && connection_->writing()) return false;
    connection_->send(f, seq);
    return true;
  }
  std::size_t room() const override {
    const auto queued = connection_->queued_bytes();
    return queued == 0 ? std::numeric_limits<std::size_t>::max() : limit_ - std::min(limit_, queued);
  }
  void wants_more() override {
    connection_->when_drained([w = weak_from_this()] {
      const auto self = w.lock();
      if (self && !self->connection_->closing()) self->more_();
    });
  }
  /// Called when it wants more while catching up (execution::feed).
  void on_more(std::function<void()> f) { more_ = std::move(f); }
  void ended() override { connection_->close(ws::normal, "execution finished"); }
  void evicted() override {
    const auto last = std::to_string(connection_->last_seq());
    connection_->close(ws::try_again_later, "too slow: evicted after seq " + last + "; resume with after=" + last, true);
  }
  void shut_down() override { connection_->close(ws::going_away, "server shutting down"); }
  /// Answers a message of the client's (an error), within the same bound as the events: a
  /// client that sends without reading gets no more answers once that much is queued.
  void say(std::string text) {
    if (connection_->queued_bytes() + text.size() <= limit_) connection_->send(std::make_shared<const std::string>(std::move(text)));
  }

 private:
  std::shared_ptr<ws_connection> connection_;
  std::size_t limit_;
  std::function<void()> more_;
};

/// A long-poll waiting for its answer: it collects the frames of one answer (up to a bound;
/// the next poll starts after the last one it took) and is woken by the first sequenced event,
/// once the events that arrive with it have been added too.
class poll_collector : public live_subscriber, public std::enable_shared_from_this<poll_collector> {
 public:
  poll_collector(net::any_io_executor ex, common::seq_t after)
      : next_(after), wake_(ex, net::steady_timer::time_point::max()) {}

  std::size_t room() const override {
    return frames_.empty() ? std::numeric_limits<std::size_t>::max() : poll_answer_bytes - std::min(poll_answer_bytes, bytes_);
  }
  void wants_more() override {  // the answer is full: the next poll gets the rest
    full_ = true;
    wake_soon();
  }
  bool push(const frame& f, common::seq_t seq) override {
    if (full_ || answered_) return true;
    if (bytes_ + f->size() > poll_answer_bytes && !frames_.empty()) {
      full_ = true;
      wake_soon();
      return true;
    }
    frames_.push_back(f);
    bytes_ += f->size();
    if (seq >= 0) {
      next_ = seq;
      wake_soon();
    }
    return true;
  }
  void ended() override {
    done_ = !full_;
    wake_soon();
  }
  void evicted() override { wake_soon(); }
  void shut_down() override { wake_soon(); }

  /// Waits until there is something to answer or `wait` has passed.
  net::awaitable<void> wait(std::chrono::seconds wait) {
    if (!woken_) {
      wake_.expires_after(wait);
      co_await wake_.async_wait(use_tuple);
    }
    answered_ = true;
  }

  /// {"events": [...], "next": SEQ, "done": bool}, from the frames as they are.
  std::string answer() const {
    std::string body = "{\"events\":[";
    for (std::size_t i = 0; i < frames_.size(); ++i) {
      if (i) body += ',';
      body += *frames_[i];
    }
    body += "],\"next\":" + std::to_string(next_) + ",\"done\":" + (done_ ? "true" : "false") + "}";
    return body;
  }

 private:
  void wake_soon() {
    if (woken_) return;
    woken_ = true;
    net::post(wake_.get_executor(), [self = shared_from_this()] { self->wake_.cancel(); });
  }

  std::vector<frame> frames_;
  std::size_t bytes_ = 0;
  common::seq_t next_;
  bool full_ = false, done_ = false, woken_ = false, answered_ = false;
  net::steady_timer wake_;
};

struct server::impl : std::enable_shared_from_this<server::impl> {
  impl(net::io_context& io_, config c)
      : io(io_), cfg(std::move(c)), policy(cfg.server, cfg.tokens), registry(io_.get_executor(), cfg.server), acceptor(io_) {}

  net::io_context& io;
  config cfg;
  request_policy policy;
  execution_registry registry;
  std::shared_ptr<tls_context> tls;  // null: plaintext
  tcp::acceptor acceptor;
  bool stopping = false;
  std::function<void()> on_stopped;
  std::unique_ptr<net::steady_timer> drain_deadline;

  std::set<live_subscriber*> watchers;  // WebSockets and long-polls, told of a shutdown
  std::unique_ptr<audit_store> audit;
  std::unique_ptr<net::steady_timer> prune_timer;

  /// Deletes audit records past audit_retention_days, now and then every hour, until shutdown.
  net::awaitable<void> prune_audit() {
    const int days = cfg.server.audit_retention_days;
    if (!audit || days <= 0) co_return;
    prune_timer = std::make_unique<net::steady_timer>(io);
    while (!stopping) {
      const auto cutoff = rfc3339(std::chrono::system_clock::now() - std::chrono::hours(24 * days));
      if (const auto removed = co_await audit->async_prune(cutoff)) {
        log_event("audit_pruned", {{"executions", std::to_string(removed)}, {"before", cutoff}});
      }
      prune_timer->expires_after(std::chrono::hours(1));
      auto [ec] = co_await prune_timer->async_wait(use_tuple);
      if (ec) co_return;
    }
  }

  // Metrics.
  std::uint64_t connections_open = 0, connections_total = 0, connections_refused = 0, accept_errors = 0;
  ws_connection::traffic ws_traffic;
  std::uint64_t requests_rejected = 0;

  // --- HTTP -----------------------------------------------------------------------------------

  response json_response(const request& req, http::status status, std::string body) {
    auto res = text_response(req, status, std::move(body), "application/json");
    res.set(http::field::cache_control, "no-store");
    return res;
  }

  /// An answer with a body (named for what it mostly carries; the type says what it is).
  response text_response(const request& req, http::status status, std::string body,
                         std::string_view type = "text/plain") {
    response res{status, req.version()};
    res.set(http::field::content_type, type);
    res.keep_alive(req.keep_alive());
    res.body() = std::move(body);
    res.prepare_payload();
    return res;
  }

  response error_response(const request& req, error_code code, std::string_view message) {
    ++requests_rejected;
    return json_response(req, static_cast<http::status>(common::http_status(code)), error_json(code, message));
  }

  std::vector<common::machine_info> machine_list() const {
    std::vector<common::machine_info> out;
    for (const auto& m : cfg.machines) {
      common::machine_info info{m.id, m.name, {}};
      for (const auto* a : cfg.actions_for(m)) info.actions.push_back({a->name, a->params, a->progress});
      out.push_back(std::move(info));
    }
    return out;
  }

  std::string metrics_text() const {
    std::size_t subscribers = 0;
    std::map<std::string, std::size_t> by_state;
    std::uint64_t exec_evictions = 0;
    const std::uint64_t ssh_bytes_in = registry.ssh_bytes_in();
    for (const auto& [id, e] : registry.all()) {
      const auto r = e->record();
      ++by_state[r.state];
      subscribers += e->watchers();
      exec_evictions += e->evictions();
    }
    std::ostringstream m;
    m << "# TYPE cmdcast_connections gauge\ncmdcast_connections " << connections_open << "\n"
      << "# TYPE cmdcast_connections_total counter\ncmdcast_connections_total " << connections_total << "\n"
      << "# TYPE cmdcast_connections_refused_total counter\ncmdcast_connections_refused_total " << connections_refused << "\n"
      << "# TYPE cmdcast_accept_errors_total counter\ncmdcast_accept_errors_total " << accept_errors << "\n"
      << "# TYPE cmdcast_executions gauge\n";
    for (const char* state : {"running", "exited", "cancelled", "timed_out", "failed", "lost"}) {
      m << "cmdcast_executions{state=\"" << state << "\"} " << (by_state.count(state) ? by_state.at(state) : 0) << "\n";
    }
    m << "# TYPE cmdcast_subscribers gauge\ncmdcast_subscribers " << subscribers << "\n"
      << "# TYPE cmdcast_bytes_out_total counter\ncmdcast_bytes_out_total " << ws_traffic.out << "\n"
      << "# TYPE cmdcast_ws_bytes_in_total counter\ncmdcast_ws_bytes_in_total " << ws_traffic.in << "\n"
      << "# TYPE cmdcast_ssh_bytes_in_total counter\ncmdcast_ssh_bytes_in_total " << ssh_bytes_in << "\n"
      << "# TYPE cmdcast_evictions_total counter\ncmdcast_evictions_total " << exec_evictions << "\n"
      << "# TYPE cmdcast_requests_rejected_total counter\ncmdcast_requests_rejected_total " << requests_rejected << "\n";
    return m.str();
  }

  /// A file of the web client under web_root (GET or HEAD), gzip-compressed when the build left
  /// a FILE.gz beside it and the browser takes gzip.
  std::optional<response> serve_static(const request& req, const target& t) {
    const bool head = req.method() == http::verb::head;
    if (!cfg.server.web_root || (req.method() != http::verb::get && !head)) return std::nullopt;
    const bool gzip = req[http::field::accept_encoding].find("gzip") != std::string_view::npos;
    auto file = read_static_file(*cfg.server.web_root, t.parts, gzip);
    if (!file) return std::nullopt;
    auto res = text_response(req, http::status::ok, std::move(file->body), file->content_type);
    // The page always asks whether it changed (a new build is picked up at once).
    res.set(http::field::cache_control, "no-cache");
    res.set(http::field::vary, "Accept-Encoding");
    if (file->gzip) res.set(http::field::content_encoding, "gzip");
    if (head) res.body().clear();  // Content-Length still says what a GET would get
    return res;
  }

  /// The audit's records (it has every execution) with the live ones' current state on top.
  net::awaitable<std::vector<common::execution_record>> execution_list(std::string state, std::size_t limit) {
    std::vector<common::execution_record> list;
    std::set<std::string> seen;
    if (audit) {
      for (auto& r : co_await audit->async_list(state, limit)) {
        if (const auto e = registry.find(r.execution_id)) r = e->record();
        seen.insert(r.execution_id);
        if (state == "all" || r.state == state) list.push_back(std::move(r));
      }
    }
    for (const auto& [id, e] : registry.all()) {
      if (seen.count(id)) continue;
      auto r = e->record();
      if (state == "all" || r.state == state) list.push_back(std::move(r));
    }
    std::sort(list.begin(), list.end(), [](const auto& a, const auto& b) { return a.started_at > b.started_at; });
    if (list.size() > limit) list.resize(limit);
    co_return list;
  }

  /// A run request (the first WebSocket message or a POST body) checked and started.
  std::variant<std::shared_ptr<execution>, request_error> begin_run(const std::string& machine_id,
                                                                     std::string_view body, const principal& who) {
    auto req = common::decode_run_request(body);
    if (!req) return request_error{error_code::bad_request, req.error()};
    if (who.granted != role::operator_) return request_error{error_code::forbidden, "running a command needs the operator role"};
    if (stopping) return request_error{error_code::busy, "the server is shutting down"};
    auto resolved = resolve(cfg, machine_id, *req);
    if (auto* err = std::get_if<request_error>(&resolved)) {
      log_event("rejected", {{"machine", machine_id}, {"action", req->action_type}, {"user", who.name}, {"error", err->message}});
      return *err;
    }
    auto& r = std::get<resolved_command>(resolved);
    const auto running = registry.running_on(r.machine->id);
    if (running >= cfg.server.max_executions_per_machine) {
      return request_error{error_code::busy,
                           "machine \"" + r.machine->id + "\" already runs " + std::to_string(running) + " commands"};
    }
    return registry.start(r, req->params, who.name, audit.get(), [self = shared_from_this()] { self->maybe_stopped(); });
  }

  /// Every route but the long-poll and WebSockets. (Reading the audit store is awaited: it works
  /// on a thread of its own.)
  net::awaitable<response> handle_http(const request& req, const target& t, std::optional<principal> who) {
    const auto& p = t.parts;
    const bool get = req.method() == http::verb::get;
    if (get && p.size() == 1 && p[0] == "healthz") {
      co_return text_response(req, http::status::ok, "ok");
    }
    const bool api = !p.empty() && (p[0] == "machines" || p[0] == "executions" || p[0] == "metrics" || p[0] == "me");
    if (!api) {
      if (auto file = serve_static(req, t)) co_return *file;
      if (cfg.server.web_root && (get || req.method() == http::verb::head)) {
        co_return text_response(req, http::status::not_found, "not found");
      }
      co_return error_response(req, error_code::bad_request, "no such endpoint: " + std::string(req.target()));
    }
    if (!who) co_return error_response(req, error_code::unauthorized, "a valid token is required");
    if (get && p.size() == 1 && p[0] == "metrics") {
      co_return text_response(req, http::status::ok, metrics_text(), "text/plain; version=0.0.4");
    }
    if (get && p.size() == 1 && p[0] == "me") {
      std::string body = "{\"user\":";
      common::append_json_string(body, who->name);
      body += who->granted == role::operator_ ? ",\"role\":\"operator\"}" : ",\"role\":\"viewer\"}";
      co_return json_response(req, http::status::ok, std::move(body));
    }
    if (get && p.size() == 1 && p[0] == "machines") co_return json_response(req, http::status::ok, common::encode(machine_list()));
    if (get && p.size() == 1 && p[0] == "executions") {
      const auto state = t.query.count("state") ? t.query.at("state") : "all";
      const auto limit = query_number(t, "limit", 100, 1);
      if (!limit) co_return error_response(req, error_code::bad_request, "limit must be a positive number");
      if (state != "all" && state != "running" && !common::parse_exit_state(state)) {
        co_return error_response(req, error_code::bad_request, "unknown state \"" + state + "\"");
      }
      // A bounded answer, however much the audit holds.
      const auto capped = static_cast<std::size_t>(std::min(*limit, max_list_limit));
      const auto list = co_await execution_list(state, capped);
      co_return json_response(req, http::status::ok, common::encode(list));
    }
    if (req.method() == http::verb::post && p.size() == 3 && p[0] == "machines" && p[2] == "commands") {
      auto started = begin_run(p[1], req.body(), *who);
      if (auto* err = std::get_if<request_error>(&started)) co_return error_response(req, err->code, err->message);
      const auto& e = std::get<std::shared_ptr<execution>>(started);
      co_return json_response(req, http::status::accepted, common::encode(common::run_accepted{e->id()}));
    }
    if (p.size() >= 2 && p[0] == "executions") {
      const std::string id = p[1];
      std::optional<common::execution_record> stored;
      if (!registry.find(id) && audit) stored = co_await audit->async_record(id);
      const auto live = registry.find(id);  // (after the wait: it may have changed)
      if (!live && !stored) {
        co_return error_response(req, error_code::unknown_execution, "unknown execution \"" + p[1] + "\"");
      }
      const auto rec = [&] { return live ? live->record() : *stored; };
      if (get && p.size() == 2) co_return json_response(req, http::status::ok, common::encode(rec()));
      if (req.method() == http::verb::post && p.size() == 3 && p[2] == "cancel") {
        if (who->granted != role::operator_) co_return error_response(req, error_code::forbidden, "cancel needs the operator role");
        log_event("cancel", {{"execution_id", p[1]}, {"user", who->name}});
        if (live) live->cancel();  // one that is only in the audit has ended
        co_return json_response(req, http::status::accepted, common::encode(rec()));
      }
    }
    co_return error_response(req, error_code::bad_request, "no such endpoint: " + std::string(req.method_string()) + " " +
                                                            std::string(req.target()));
  }

  // --- WebSocket ------------------------------------------------------------------------------

  /// Sends an error event and closes with 1008 (policy): for auth, origin and request errors.
  net::awaitable<void> refuse(ws_connection& ws, error_code code, std::string message) {
    ++requests_rejected;
    ws.send(std::make_shared<const std::string>(error_json(code, message)));
    ws.close(ws::policy_error, message);
    for (;;) {  // until the close handshake is over (not in a while condition: GCC 12)
      const auto incoming = co_await ws.read();
      if (!incoming) break;
    }
  }

  /// Streams `e` to the WebSocket from `after` on, and takes cancel requests, until the
  /// execution ends, the client leaves or the watcher is evicted.
  net::awaitable<void> watch(ws_connection& ws, std::shared_ptr<execution> e, common::seq_t after, const principal& who) {
    auto watcher = std::make_shared<ws_watcher>(ws.shared_from_this(), cfg.server.subscriber_queue_bytes);
    watcher->on_more([e, w = watcher.get()] { e->feed(w); });
    watchers.insert(watcher.get());
    if (!e->subscribe(watcher, after)) {
      watchers.erase(watcher.get());
      co_await refuse(ws, error_code::busy, "this execution has its maximum of watchers");
      co_return;
    }
    // Until the close handshake is over (the execution ended, the watcher was evicted, the
    // server is going) or the client has gone.
    for (;;) {
      const auto text = co_await ws.read();
      if (!text) break;
      auto m = common::decode_client_message(*text);
      if (!m) {
        watcher->say(error_json(error_code::bad_request, m.error()));
      } else if (!std::holds_alternative<common::cancel_request>(*m)) {
        watcher->say(error_json(error_code::bad_request, "only {\"type\":\"cancel\"} is accepted while streaming"));
      } else if (who.granted != role::operator_) {
        watcher->say(error_json(error_code::forbidden, "cancel needs the operator role"));
      } else {
        log_event("cancel", {{"execution_id", e->id()}, {"user", who.name}});
        e->cancel();
      }
    }
    e->unsubscribe(watcher.get());
    watchers.erase(watcher.get());
    maybe_stopped();
  }

  /// GET /executions/{id}/events?after=SEQ&wait=S: what is there after SEQ at once, or the
  /// first new events within S seconds. The poller is a watcher while it waits.
  net::awaitable<response> long_poll(const request& req, const target& t, const principal& who) {
    (void)who;  // every role may poll
    const std::string& id = t.parts[1];
    const auto after = query_number(t, "after", -1, -1);
    if (!after) co_return error_response(req, error_code::bad_request, "after must be a number >= -1");
    const auto wait = query_number(t, "wait", 0, 0);
    if (!wait) co_return error_response(req, error_code::bad_request, "wait must be a number of seconds >= 0");
    const auto held = registry.find(id);
    if (!held || (held->finished() && !held->holds_after(*after))) {
      if (!audit || !co_await audit->async_record(id)) {
        co_return error_response(req, error_code::unknown_execution, "unknown execution \"" + id + "\"");
      }
      // Finished, and served from the audit store.
      const auto page = co_await audit->async_events_after(id, *after, poll_answer_bytes);
      const common::seq_t last = co_await audit->async_last_seq(id);
      if (*after > last) co_return error_response(req, error_code::bad_request, past_the_end(*after, last));
      std::string body = "{\"events\":[";
      common::seq_t next = *after;
      for (const auto& e : page) {
        if (next != *after) body += ',';
        body += e.frame;
        next = e.seq;
      }
      body += "],\"next\":" + std::to_string(next) + ",\"done\":" + (next == last ? "true" : "false") + "}";
      co_return json_response(req, http::status::ok, std::move(body));
    }
    const auto& e = held;
    if (*after > e->last_seq()) co_return error_response(req, error_code::bad_request, past_the_end(*after, e->last_seq()));
    auto collector = std::make_shared<poll_collector>(io.get_executor(), *after);
    if (!e->subscribe(collector, *after)) {
      co_return error_response(req, error_code::busy, "this execution has its maximum of watchers");
    }
    watchers.insert(collector.get());
    co_await collector->wait(std::chrono::seconds(std::min(*wait, max_poll_wait_s)));
    e->unsubscribe(collector.get());
    watchers.erase(collector.get());
    maybe_stopped();
    co_return json_response(req, http::status::ok, collector->answer());
  }

  static std::string past_the_end(common::seq_t after, common::seq_t last) {
    return "after=" + std::to_string(after) + " is past the last event (" + std::to_string(last) + ")";
  }

  /// A finished execution from the audit store: its stored events after `after`, page by page,
  /// then 1000.
  net::awaitable<void> send_stored(ws_connection& ws, const std::string& id, common::seq_t after) {
    for (;;) {
      const auto page = co_await audit->async_events_after(id, after, stored_page_bytes);
      if (page.empty() || ws.closing()) break;
      for (const auto& e : page) {
        ws.send(std::make_shared<const std::string>(e.frame), e.seq);
        after = e.seq;
      }
      // One page at a time: the next is read once this one is written.
      net::steady_timer drained(io, net::steady_timer::time_point::max());
      ws.when_drained([&drained] { drained.cancel(); });
      co_await drained.async_wait(use_tuple);
    }
    ws.close(ws::normal, "execution finished");
    for (;;) {  // until the close handshake is over (not in a while condition: GCC 12)
      const auto incoming = co_await ws.read();
      if (!incoming) break;
    }
  }

  net::awaitable<void> run_websocket(ws_connection& ws, const target& t, const principal& who) {
    const auto& p = t.parts;
    if (p.size() == 4 && p[0] == "machines" && p[2] == "commands" && p[3] == "stream") {
      // The first message is the request (one over max_message_bytes is closed with 1009).
      const auto request = co_await ws.read();
      if (!request) co_return;
      auto started = begin_run(p[1], *request, who);
      if (auto* err = std::get_if<request_error>(&started)) {
        co_await refuse(ws, err->code, err->message);
        co_return;
      }
      co_await watch(ws, std::get<std::shared_ptr<execution>>(started), -1, who);
      co_return;
    }
    if (p.size() == 3 && p[0] == "executions" && p[2] == "stream") {
      const auto after = query_number(t, "after", -1, -1);
      if (!after) {
        co_await refuse(ws, error_code::bad_request, "after must be a number >= -1");
        co_return;
      }
      const auto held = registry.find(p[1]);
      if (held && *after > held->last_seq()) {
        co_await refuse(ws, error_code::bad_request, past_the_end(*after, held->last_seq()));
      } else if (held && (!held->finished() || held->holds_after(*after))) {
        co_await watch(ws, held, *after, who);
      } else if (audit && co_await audit->async_record(p[1])) {
        const auto last = co_await audit->async_last_seq(p[1]);
        if (*after > last) {
          co_await refuse(ws, error_code::bad_request, past_the_end(*after, last));
        } else {
          co_await send_stored(ws, p[1], *after);
        }
      } else {
        co_await refuse(ws, error_code::unknown_execution, "unknown execution \"" + p[1] + "\"");
      }
      co_return;
    }
    co_await refuse(ws, error_code::bad_request, "no such WebSocket endpoint");
  }

  // --- Connections ----------------------------------------------------------------------------

  /// The answer to a WebSocket upgrade, or an HTTP error for an upgrade that is not one.
  std::variant<std::string, response> upgrade_answer(const request& req) {
    if (req[http::field::sec_websocket_version] != "13") {
      auto res = error_response(req, error_code::bad_request, "Sec-WebSocket-Version must be 13");
      res.result(http::status::upgrade_required);
      res.set(http::field::sec_websocket_version, "13");
      return res;
    }
    const auto accept = websocket_accept(req[http::field::sec_websocket_key]);
    if (!accept || req.method() != http::verb::get) {
      return error_response(req, error_code::bad_request, "not a valid WebSocket upgrade");
    }
    std::string head = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                       "Server: cmdcast\r\nSec-WebSocket-Accept: " + *accept + "\r\n";
    if (req[http::field::sec_websocket_protocol].find("cmdcast.v1") != std::string_view::npos) {
      head += "Sec-WebSocket-Protocol: cmdcast.v1\r\n";
    }
    return head + "\r\n";
  }

  /// Reads one request into `parser`, from `pending` (bytes already read) and then the
  /// connection. An error, or end_of_stream when the peer left (or the deadline closed it).
  static net::awaitable<beast::error_code> read_request(transport& conn, std::string& pending,
                                                        http::request_parser<http::string_body>& parser) {
    beast::error_code ec;
    std::array<char, 16 * 1024> chunk;
    for (;;) {
      if (!pending.empty()) {
        const auto used = parser.put(net::buffer(pending), ec);
        pending.erase(0, used);
        if (ec && ec != http::error::need_more) co_return ec;
        ec = {};
        if (parser.is_done()) co_return ec;
        if (used > 0) continue;
      }
      const auto n = co_await conn.read_some(chunk.data(), chunk.size());
      if (n == 0) co_return http::error::end_of_stream;
      pending.append(chunk.data(), n);
    }
  }

  /// One connection: TLS handshake, then requests until it closes or upgrades to a WebSocket.
  net::awaitable<void> session(tcp::socket socket) {
    ++connections_open;
    ++connections_total;
    struct counter {
      std::uint64_t& n;
      ~counter() { --n; }
    } open{connections_open};
    // Events are small and must go out at once: no Nagle delay waiting for the peer's ACK.
    boost::system::error_code ignored;
    socket.set_option(tcp::no_delay(true), ignored);
    auto conn = std::make_unique<transport>(std::move(socket), tls);
    // A peer gets request_deadline for the handshake and for each whole request: one that
    // trickles bytes or sends nothing holds no connection longer.
    net::steady_timer deadline(io);
    auto arm = [&deadline, &s = conn->socket()] {
      deadline.expires_after(request_deadline);
      deadline.async_wait([&deadline, &s](boost::system::error_code ec) {
        // (A wait that completed just before it was disarmed finds the expiry moved.)
        if (!ec && deadline.expiry() <= net::steady_timer::clock_type::now()) s.cancel();
      });
    };
    arm();
    if (!co_await conn->handshake()) co_return;
    deadline.expires_at(net::steady_timer::time_point::max());
    std::string pending;
    for (;;) {
      http::request_parser<http::string_body> parser;
      parser.body_limit(cfg.server.max_message_bytes);
      parser.header_limit(max_header_bytes);
      parser.eager(true);
      arm();
      const auto ec = co_await read_request(*conn, pending, parser);
      deadline.expires_at(net::steady_timer::time_point::max());  // disarmed: handling may take long (long-polls)
      if (ec == http::error::end_of_stream) co_return;
      if (ec) {
        request req;
        req.version(11);
        auto res = error_response(req, error_code::bad_request,
                                  ec == http::error::body_limit     ? "request body too large"
                                  : ec == http::error::header_limit ? "request header too large"
                                                                    : "malformed HTTP request: " + ec.message());
        res.keep_alive(false);
        std::ostringstream out;
        out << res;
        co_await conn->write_all(out.str());
        conn->close();
        co_return;
      }
      request req = parser.release();
      const auto t = parse_target(req.target());
      const bool upgrade = websocket::is_upgrade(req);
      const request_facts facts{req[http::field::host], req[http::field::origin], req[http::field::authorization],
                                req[http::field::sec_websocket_protocol],
                                upgrade || (req.method() != http::verb::get && req.method() != http::verb::head),
                                conn->secure()};
      const bool health = t && req.method() == http::verb::get && t->parts.size() == 1 && t->parts[0] == "healthz";
      const auto refusal = health ? std::nullopt : policy.refusal(facts);
      const auto who = policy.authenticate(facts);

      if (upgrade && t) {
        auto answer = upgrade_answer(req);
        if (auto* res = std::get_if<response>(&answer)) {
          res->keep_alive(false);
          std::ostringstream out;
          out << *res;
          co_await conn->write_all(out.str());
          conn->close();
          co_return;
        }
        if (!co_await conn->write_all(std::get<std::string>(answer))) co_return;
        // From here the connection is cmdcast's WebSocket (ws_connection).
        auto ws = std::make_shared<ws_connection>(std::move(conn), cfg.server.max_message_bytes,
                                                  cfg.server.idle_timeout, ws_traffic);
        ws->start(pending);
        if (refusal) {
          co_await refuse(*ws, error_code::forbidden, *refusal);
        } else if (!who) {
          co_await refuse(*ws, error_code::unauthorized, "a valid token is required");
        } else if (stopping) {
          co_await refuse(*ws, error_code::busy, "the server is shutting down");
        } else {
          co_await run_websocket(*ws, *t, *who);
        }
        co_return;
      }

      response res;
      if (refusal) {
        res = error_response(req, error_code::forbidden, *refusal);
      } else if (!t) {
        res = error_response(req, error_code::bad_request, "malformed request target");
      } else if (who && req.method() == http::verb::get && t->parts.size() == 3 && t->parts[0] == "executions" &&
                 t->parts[2] == "events") {
        // Not a ?: around the co_await: GCC 12 miscompiles that (the response came out corrupt).
        res = co_await long_poll(req, *t, *who);
      } else {
        res = co_await handle_http(req, *t, who);
      }
      std::ostringstream out;
      out << res;
      if (!co_await conn->write_all(out.str()) || !res.keep_alive()) {
        conn->close();
        co_return;
      }
    }
  }

  net::awaitable<void> accept_loop() {
    auto backoff = std::chrono::milliseconds(0);
    for (;;) {
      auto [ec, socket] = co_await acceptor.async_accept(use_tuple);
      if (ec) {
        if (!acceptor.is_open()) co_return;
        // Out of descriptors (or memory): retrying at once would spin. Wait, longer each time,
        // until connections close and accepting works again.
        ++accept_errors;
        backoff = std::clamp(backoff * 2, std::chrono::milliseconds(10), std::chrono::milliseconds(1000));
        if (backoff == std::chrono::milliseconds(10) || backoff == std::chrono::milliseconds(1000)) {
          log_event("accept_failed", {{"error", ec.message()}, {"retry_in_ms", std::to_string(backoff.count())}});
        }
        net::steady_timer pause(io, backoff);
        co_await pause.async_wait(use_tuple);
        continue;
      }
      backoff = std::chrono::milliseconds(0);
      if (connections_open >= cfg.server.max_connections) {
        ++connections_refused;  // closed at once: the connections already open are served as before
        boost::system::error_code ignored;
        socket.close(ignored);
        continue;
      }
      net::co_spawn(io, [self = shared_from_this(), s = std::move(socket)]() mutable {
        return self->session(std::move(s));
      }, net::detached);
    }
  }

  /// During shutdown: once every execution has ended and every watcher has been sent what it
  /// had queued and closed (or a few seconds have passed), report the server stopped.
  void maybe_stopped(bool force = false) {
    if (!stopping || !on_stopped) return;
    if (!force) {
      if (!registry.all_finished()) return;
      if (!watchers.empty()) {
        for (auto* w : watchers) w->shut_down();
        if (!drain_deadline) {
          drain_deadline = std::make_unique<net::steady_timer>(io, std::chrono::seconds(3));
          drain_deadline->async_wait([self = shared_from_this()](boost::system::error_code ec) {
            if (!ec) self->maybe_stopped(true);
          });
        }
        return;
      }
    }
    registry.disconnect_all();
    if (drain_deadline) drain_deadline->cancel();
    auto done = std::move(on_stopped);
    on_stopped = nullptr;
    done();
  }
};

server::server(net::io_context& io, config c) : impl_(std::make_shared<impl>(io, std::move(c))) {}
server::~server() = default;

void server::start() {
  auto& s = impl_->cfg.server;
  if (s.tls_cert) {
    auto tls = tls_context::load(*s.tls_cert, *s.tls_key);
    if (!tls) throw std::runtime_error(tls.error());
    impl_->tls = std::move(*tls);
  }
  if (!s.audit_db.empty()) {
    auto store = audit_store::open(s.audit_db);
    if (!store) throw std::runtime_error(store.error());
    impl_->audit = std::move(*store);
    net::co_spawn(impl_->io, [i = impl_] { return i->prune_audit(); }, net::detached);
  }
  const tcp::endpoint ep(net::ip::make_address(s.listen_host), s.listen_port);
  impl_->acceptor.open(ep.protocol());
  impl_->acceptor.set_option(tcp::acceptor::reuse_address(true));
  impl_->acceptor.bind(ep);
  impl_->acceptor.listen();
  log_event("listening", {{"address", s.listen_host + ":" + std::to_string(port())}, {"tls", impl_->tls ? "yes" : "no"}});
  net::co_spawn(impl_->io, [i = impl_] { return i->accept_loop(); }, net::detached);
}

std::uint16_t server::port() const { return impl_->acceptor.local_endpoint().port(); }

void server::shut_down(std::function<void()> done) {
  auto& i = *impl_;
  if (i.stopping) return;
  i.stopping = true;
  log_event("shutdown", {});
  boost::system::error_code ignored;
  i.acceptor.close(ignored);
  if (i.prune_timer) i.prune_timer->cancel();
  i.on_stopped = std::move(done);
  // Running commands are cancelled: their watchers get the exit event, then 1000.
  i.registry.cancel_all();
  i.maybe_stopped();
}

}  // namespace cmdcast::server
