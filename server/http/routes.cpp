// The JSON routes (machines, executions, runs, cancel, /me, /metrics, the web client's files)
// and the long-poll.
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/http.hpp>

#include <algorithm>
#include <functional>
#include <limits>
#include <sstream>

#include "cmdcast/common/codec.hpp"
#include "http/server_impl.hpp"
#include "http/static_files.hpp"
#include "support/log.hpp"

namespace cmdcast::server {
namespace {

constexpr auto use_tuple = net::as_tuple(net::use_awaitable);
constexpr std::size_t poll_answer_bytes = 1u << 20;  // a long-poll answer's bound
constexpr std::int64_t max_poll_wait_s = 30;
constexpr std::int64_t max_list_limit = 1000;

/// A long-poll waiting for its answer: it collects the frames of one answer (up to a bound;
/// the next poll starts after the last one it took) and is woken by the first sequenced event,
/// once the events that arrive with it have been added too. Answered, it stays subscribed,
/// parked, until the next poll takes its place (or the idle timeout): a poller between two
/// polls is a watcher that has not read yet, so it paces the command as a WebSocket does.
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
    if (full_ || answered_) return false;
    if (bytes_ + f->size() > poll_answer_bytes && !frames_.empty()) {
      full_ = true;
      wake_soon();
      return false;
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
  void shut_down() override { wake_soon(); }
  void revoke() override { wake_soon(); }  // (its next poll is refused)

  /// Waits until there is something to answer or `wait` has passed.
  net::awaitable<void> wait(std::chrono::seconds wait) {
    if (!woken_) {
      wake_.expires_after(wait);
      co_await wake_.async_wait(use_tuple);
    }
    answered_ = true;
  }

  common::seq_t next() const { return next_; }
  bool done() const { return done_; }
  const std::vector<frame>& frames() const { return frames_; }
  /// Also called when it wakes (a batch poll waits for the first of its collectors).
  void on_wake(std::function<void()> f) { on_wake_ = std::move(f); }

  /// {"events": [...], "next": SEQ, "done": bool}, from the frames as they are.
  std::string answer() const {
    std::string body = "{\"events\":[";
    for (std::size_t i = 0; i < frames_.size(); ++i) {
      if (i) body += ',';
      body += *frames_[i]->text();
    }
    body += "],\"next\":" + std::to_string(next_) + ",\"done\":" + (done_ ? "true" : "false") + "}";
    return body;
  }

 private:
  void wake_soon() {
    if (woken_) return;
    woken_ = true;
    if (on_wake_) on_wake_();
    net::post(wake_.get_executor(), [self = shared_from_this()] { self->wake_.cancel(); });
  }

  std::vector<frame> frames_;
  std::size_t bytes_ = 0;
  common::seq_t next_;
  bool full_ = false, done_ = false, woken_ = false, answered_ = false;
  net::steady_timer wake_;
  std::function<void()> on_wake_;
};

}  // namespace

response server::impl::json_response(const request& req, http::status status, std::string body) {
  auto res = text_response(req, status, std::move(body), "application/json");
  res.set(http::field::cache_control, "no-store");
  return res;
}

/// An answer with a body (named for what it mostly carries; the type says what it is).
response server::impl::text_response(const request& req, http::status status, std::string body,
                       std::string_view type) {
  response res{status, req.version()};
  res.set(http::field::content_type, type);
  res.keep_alive(req.keep_alive());
  res.body() = std::move(body);
  res.prepare_payload();
  return res;
}

response server::impl::error_response(const request& req, error_code code, std::string_view message) {
  ++requests_rejected;
  return json_response(req, static_cast<http::status>(common::http_status(code)), error_json(code, message));
}

std::vector<common::machine_info> server::impl::machine_list() const {
  std::vector<common::machine_info> out;
  for (const auto& m : cfg->machines) {
    common::machine_info info{m.id, m.name, {}, cfg->groups_of(m)};
    for (const auto* a : cfg->actions_for(m)) {
      info.actions.push_back({a->name, a->params, a->progress,
                              std::vector<std::string>(a->secret_params.begin(), a->secret_params.end()), a->exclusive,
                              a->approval});
    }
    out.push_back(std::move(info));
  }
  return out;
}

std::string server::impl::metrics_text() const {
  std::size_t subscribers = 0;
  std::map<std::string, std::size_t> by_state;
  std::uint64_t gaps = 0, holds = 0;
  const std::uint64_t ssh_bytes_in = registry.ssh_bytes_in();
  for (const auto& [id, e] : registry.all()) {
    const auto r = e->record();
    ++by_state[r.state];
    subscribers += e->watchers();
    gaps += e->gaps();
    holds += e->holds();
  }
  std::ostringstream m;
  m << "# TYPE cmdcast_connections gauge\ncmdcast_connections " << connections_open << "\n"
    << "# TYPE cmdcast_connections_total counter\ncmdcast_connections_total " << connections_total << "\n"
    << "# TYPE cmdcast_connections_refused_total counter\ncmdcast_connections_refused_total " << connections_refused << "\n"
    << "# TYPE cmdcast_accept_errors_total counter\ncmdcast_accept_errors_total " << accept_errors << "\n"
    << "# TYPE cmdcast_executions gauge\n";
  for (const char* state : {"queued", "awaiting_approval", "running", "exited", "cancelled", "timed_out", "failed", "lost",
                            "rejected", "expired"}) {
    m << "cmdcast_executions{state=\"" << state << "\"} " << (by_state.count(state) ? by_state.at(state) : 0) << "\n";
  }
  m << "# TYPE cmdcast_subscribers gauge\ncmdcast_subscribers " << subscribers << "\n"
    << "# TYPE cmdcast_bytes_out_total counter\ncmdcast_bytes_out_total " << ws_traffic.out << "\n"
    << "# TYPE cmdcast_ws_bytes_in_total counter\ncmdcast_ws_bytes_in_total " << ws_traffic.in << "\n"
    << "# TYPE cmdcast_ssh_bytes_in_total counter\ncmdcast_ssh_bytes_in_total " << ssh_bytes_in << "\n"
    << "# TYPE cmdcast_watcher_gaps_total counter\ncmdcast_watcher_gaps_total " << gaps << "\n"
    << "# TYPE cmdcast_output_holds_total counter\ncmdcast_output_holds_total " << holds << "\n"
    << "# TYPE cmdcast_websockets_compressed_total counter\ncmdcast_websockets_compressed_total " << websockets_compressed << "\n"
    << "# TYPE cmdcast_requests_rejected_total counter\ncmdcast_requests_rejected_total " << requests_rejected << "\n"
    << "# TYPE cmdcast_requests_denied_total counter\ncmdcast_requests_denied_total " << requests_denied << "\n"
    << "# TYPE cmdcast_config_reloads_total counter\ncmdcast_config_reloads_total " << reloads << "\n"
    << "# TYPE cmdcast_config_reloads_refused_total counter\ncmdcast_config_reloads_refused_total " << reloads_refused << "\n";
  if (cluster) {
    m << "# TYPE cmdcast_cluster_connected gauge\ncmdcast_cluster_connected " << (cluster->healthy() ? 1 : 0) << "\n"
      << "# TYPE cmdcast_cluster_copies gauge\ncmdcast_cluster_copies " << cluster->copies() << "\n"
      << "# TYPE cmdcast_cluster_unsent_bytes gauge\ncmdcast_cluster_unsent_bytes " << cluster->unsent_bytes() << "\n"
      << "# TYPE cmdcast_cluster_disconnects_total counter\ncmdcast_cluster_disconnects_total " << cluster->disconnects() << "\n";
  }
  return m.str();
}

/// A file of the web client under web_root (GET or HEAD), gzip-compressed when the build left
/// a FILE.gz beside it and the browser takes gzip.
std::optional<response> server::impl::serve_static(const request& req, const target& t) {
  const bool head = req.method() == http::verb::head;
  if (!cfg->server.web_root || (req.method() != http::verb::get && !head)) return std::nullopt;
  const bool gzip = req[http::field::accept_encoding].find("gzip") != std::string_view::npos;
  auto file = read_static_file(*cfg->server.web_root, t.parts, gzip);
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
net::awaitable<std::vector<common::execution_record>> server::impl::execution_list(std::string state, std::string machine,
                                                                                  std::size_t limit) {
  std::vector<common::execution_record> list;
  std::set<std::string> seen;
  const auto wanted = [&](const common::execution_record& r) {
    return (state == "all" || r.state == state) && (machine.empty() || r.machine_id == machine);
  };
  if (audit) {
    for (auto& r : co_await audit->async_list(state, machine, limit)) {
      if (const auto e = registry.find(r.execution_id)) r = e->record();
      seen.insert(r.execution_id);
      if (wanted(r)) list.push_back(std::move(r));
    }
  }
  for (const auto& [id, e] : registry.all()) {
    if (seen.count(id)) continue;
    auto r = e->record();
    if (wanted(r)) list.push_back(std::move(r));
  }
  std::sort(list.begin(), list.end(), [](const auto& a, const auto& b) { return a.started_at > b.started_at; });
  if (list.size() > limit) list.resize(limit);
  co_return list;
}

/// A run request (the first WebSocket message or a POST body) checked and started.
std::variant<std::shared_ptr<execution>, request_error> server::impl::begin_run(const std::string& machine_id,
                                                                   std::string_view body, const principal& who) {
  auto req = common::decode_run_request(body);
  if (!req) return request_error{error_code::bad_request, req.error()};
  if (who.granted != role::operator_) return request_error{error_code::forbidden, "running a command needs the operator role"};
  if (stopping) return request_error{error_code::busy, "the server is shutting down"};
  auto resolved = resolve(*cfg, machine_id, *req);
  if (auto* err = std::get_if<request_error>(&resolved)) {
    log_event("rejected", {{"machine", machine_id}, {"action", req->action_type}, {"user", who.name},
                           {"client", who.from.client}, {"proxy", who.from.proxy}, {"error", err->message}});
    return *err;
  }
  auto& r = std::get<resolved_command>(resolved);
  const auto running = registry.running_on(r.machine->id);
  if (running >= cfg->server.max_executions_per_machine) {
    return request_error{error_code::busy,
                         "machine \"" + r.machine->id + "\" already runs " + std::to_string(running) + " commands"};
  }
  auto submitted = registry.submit(r, who.name, audit.get(), [self = shared_from_this()] { self->maybe_stopped(); });
  if (auto* err = std::get_if<request_error>(&submitted)) return *err;
  auto e = std::get<std::shared_ptr<execution>>(std::move(submitted));
  log_event("run", {{"execution_id", e->id()}, {"machine", r.machine->id}, {"action", r.action->name}, {"user", who.name},
                    {"client", who.from.client}, {"proxy", who.from.proxy}});
  return e;
}

/// POST /groups/{group}/commands: the request checked against the whitelist for every machine of
/// the group (one that fails refuses the whole run, naming the machine), then started.
std::variant<std::shared_ptr<batch>, request_error> server::impl::begin_batch(const std::string& group,
                                                                               std::string_view body, const principal& who) {
  auto req = common::decode_group_run_request(body);
  if (!req) return request_error{error_code::bad_request, req.error()};
  if (who.granted != role::operator_) return request_error{error_code::forbidden, "running a command needs the operator role"};
  if (stopping) return request_error{error_code::busy, "the server is shutting down"};
  const auto g = cfg->groups.find(group);
  if (g == cfg->groups.end()) return request_error{error_code::unknown_machine, "unknown group \"" + group + "\""};
  // A subset (a re-run on the failed ones), in the group's order; each must be in the group.
  for (const auto& id : req->machines) {
    if (std::find(g->second.begin(), g->second.end(), id) == g->second.end()) {
      return request_error{error_code::unknown_machine, "machine \"" + id + "\" is not in group \"" + group + "\""};
    }
  }
  std::vector<resolved_command> runs;
  for (const auto& machine_id : g->second) {
    if (!req->machines.empty() && std::find(req->machines.begin(), req->machines.end(), machine_id) == req->machines.end()) {
      continue;
    }
    auto resolved = resolve(*cfg, machine_id, req->run);
    if (auto* err = std::get_if<request_error>(&resolved)) {
      log_event("rejected", {{"group", group}, {"machine", machine_id}, {"action", req->run.action_type}, {"user", who.name},
                             {"client", who.from.client}, {"proxy", who.from.proxy}, {"error", err->message}});
      return request_error{err->code, "machine \"" + machine_id + "\": " + err->message};
    }
    runs.push_back(std::get<resolved_command>(std::move(resolved)));
  }
  auto submitted = registry.submit_batch(group, runs, *req, who.name, audit.get(), [self = shared_from_this()] {
    self->maybe_stopped();
  });
  if (auto* err = std::get_if<request_error>(&submitted)) return *err;
  auto b = std::get<std::shared_ptr<batch>>(std::move(submitted));
  log_event("run_batch", {{"batch_id", b->id()}, {"group", group}, {"action", req->run.action_type}, {"user", who.name},
                          {"client", who.from.client}, {"proxy", who.from.proxy}});
  return b;
}

/// Every route but the long-poll and WebSockets. (Reading the audit store is awaited: it works
/// on a thread of its own.)
net::awaitable<response> server::impl::handle_http(const request& req, const target& t, std::optional<principal> who,
                                                   std::string unauthenticated) {
  const auto& p = t.parts;
  const bool get = req.method() == http::verb::get;
  if (get && p.size() == 1 && p[0] == "healthz") {
    // Still serving: what it cannot reach is named, and local runs go on meanwhile.
    std::string unreachable;
    if (cluster && !cluster->healthy()) unreachable = "redis";
    if (audit && audit->degraded()) unreachable += unreachable.empty() ? "postgres" : " and postgres";
    if (!unreachable.empty()) co_return text_response(req, http::status::ok, "degraded: " + unreachable + " unreachable");
    co_return text_response(req, http::status::ok, "ok");
  }
  const bool api = !p.empty() && (p[0] == "machines" || p[0] == "executions" || p[0] == "metrics" || p[0] == "me" ||
                                  p[0] == "groups" || p[0] == "batches");
  if (!api) {
    if (auto file = serve_static(req, t)) co_return *file;
    if (cfg->server.web_root && (get || req.method() == http::verb::head)) {
      co_return text_response(req, http::status::not_found, "not found");
    }
    co_return error_response(req, error_code::bad_request, "no such endpoint: " + std::string(req.target()));
  }
  if (!who) co_return error_response(req, error_code::unauthorized, unauthenticated);
  const bool stream = (p.size() == 4 && p[0] == "machines" && p[2] == "commands" && p[3] == "stream") ||
                      (p.size() == 3 && (p[0] == "executions" || p[0] == "batches") && p[2] == "stream");
  if (stream) {
    // A WebSocket endpoint reached without the upgrade: most often a proxy that drops the
    // Upgrade and Connection headers. Say so, where curl and the browser's tools show it.
    auto res = error_response(req, error_code::bad_request,
                              "this is a WebSocket endpoint and the request came without \"Upgrade: websocket\": a "
                              "proxy in between may not pass upgrades (docs/proxy.md); polling works without");
    res.result(http::status::upgrade_required);
    res.set(http::field::upgrade, "websocket");
    res.set(http::field::connection, "Upgrade");
    co_return res;
  }
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
    const auto machine = t.query.count("machine") ? t.query.at("machine") : "";
    const auto limit = query_number(t, "limit", 100, 1);
    if (!limit) co_return error_response(req, error_code::bad_request, "limit must be a positive number");
    if (state != "all" && state != "running" && state != "queued" && state != "awaiting_approval" &&
        !common::parse_exit_state(state)) {
      co_return error_response(req, error_code::bad_request, "unknown state \"" + state + "\"");
    }
    if (!machine.empty() && !cfg->find_machine(machine)) {
      co_return error_response(req, error_code::unknown_machine, "unknown machine \"" + machine + "\"");
    }
    // A bounded answer, however much the audit holds.
    const auto capped = static_cast<std::size_t>(std::min(*limit, max_list_limit));
    const auto list = co_await execution_list(state, machine, capped);
    co_return json_response(req, http::status::ok, common::encode(list));
  }
  if (req.method() == http::verb::post && p.size() == 3 && p[0] == "machines" && p[2] == "commands") {
    auto started = begin_run(p[1], req.body(), *who);
    if (auto* err = std::get_if<request_error>(&started)) co_return error_response(req, err->code, err->message);
    const auto& e = std::get<std::shared_ptr<execution>>(started);
    if (cluster) co_await cluster->written();
    co_return json_response(req, http::status::accepted, common::encode(common::run_accepted{e->id()}));
  }
  if (req.method() == http::verb::post && p.size() == 3 && p[0] == "groups" && p[2] == "commands") {
    auto started = begin_batch(p[1], req.body(), *who);
    if (auto* err = std::get_if<request_error>(&started)) co_return error_response(req, err->code, err->message);
    if (cluster) co_await cluster->written();
    co_return json_response(req, http::status::accepted, common::encode(std::get<std::shared_ptr<batch>>(started)->record()));
  }
  if (get && p.size() == 1 && p[0] == "batches") {
    const auto limit = query_number(t, "limit", 100, 1);
    if (!limit) co_return error_response(req, error_code::bad_request, "limit must be a positive number");
    const auto capped = static_cast<std::size_t>(std::min(*limit, max_list_limit));
    // The audit's (every batch) with the ones in memory, live, on top.
    std::map<std::string, common::batch_record> by_id;
    if (audit) {
      for (auto& b : co_await audit->async_batches("", capped)) by_id.emplace(b.batch_id, std::move(b));
    }
    for (const auto& b : registry.batches()) by_id.insert_or_assign(b->id(), b->record());
    std::vector<common::batch_record> list;
    for (auto& [id, b] : by_id) list.push_back(std::move(b));
    std::sort(list.begin(), list.end(), [](const auto& a, const auto& b) { return a.started_at > b.started_at; });
    if (list.size() > capped) list.resize(capped);
    co_return json_response(req, http::status::ok, common::encode(list));
  }
  if (p.size() == 2 || (p.size() == 3 && p[2] == "cancel")) {
    if (p[0] == "batches") {
      const auto b = co_await find_batch(p[1]);
      if (!b && get && p.size() == 2 && audit) {
        // Not in memory: a batch of an earlier run of the server, from the audit store.
        const auto stored = co_await audit->async_batches(p[1], 1);
        if (!stored.empty()) co_return json_response(req, http::status::ok, common::encode(stored.front()));
      }
      if (!b) co_return error_response(req, error_code::unknown_execution, "unknown batch \"" + p[1] + "\"");
      if (get && p.size() == 2) co_return json_response(req, http::status::ok, common::encode(b->record()));
      if (req.method() == http::verb::post && p.size() == 3) {
        if (who->granted != role::operator_) co_return error_response(req, error_code::forbidden, "cancel needs the operator role");
        co_await cancel_batch(b, *who);
        co_return json_response(req, http::status::accepted, common::encode(b->record()));
      }
    }
  }
  if (p.size() >= 2 && p[0] == "executions") {
    const std::string id = p[1];
    std::optional<common::execution_record> stored;
    if (!registry.find(id) && audit) stored = co_await audit->async_record(id);
    // (after the wait: it may have changed.) Reading another server's record needs no copy.
    const bool record_only = get && p.size() == 2;
    auto live = registry.find(id);
    if (!live && cluster) live = cluster->find_copy(id);
    if (!live && cluster && record_only) {
      if (auto shared = co_await cluster->record(id)) stored = std::move(shared);  // fresher than a local audit
    } else if (!live) {
      live = co_await find_execution(id);
    }
    if (!live && !stored) {
      co_return error_response(req, error_code::unknown_execution, "unknown execution \"" + p[1] + "\"");
    }
    const auto rec = [&] { return live ? live->record() : *stored; };
    if (get && p.size() == 2) co_return json_response(req, http::status::ok, common::encode(rec()));
    if (req.method() == http::verb::post && p.size() == 3 && p[2] == "cancel") {
      if (who->granted != role::operator_) co_return error_response(req, error_code::forbidden, "cancel needs the operator role");
      if (live) co_await cancel_execution(live, *who);  // one that is only in the audit has ended
      co_return json_response(req, http::status::accepted, common::encode(rec()));
    }
    if (req.method() == http::verb::post && p.size() == 3 && (p[2] == "approve" || p[2] == "reject")) {
      const bool approving = p[2] == "approve";
      if (who->granted != role::operator_) {
        co_return error_response(req, error_code::forbidden, std::string(p[2]) + " needs the operator role");
      }
      if (!live) {
        co_return error_response(req, error_code::bad_request, "execution \"" + id + "\" is not awaiting approval (" +
                                                                   rec().state + ")");
      }
      // Four eyes: the one who asked for it cannot decide it, whatever token they use.
      if (auto err = check_decision(*live, who->name)) {
        if (err->code == error_code::forbidden) {
          request_facts facts;
          facts.from = who->from;
          log_denied(req, facts, error_code::forbidden, "the requester cannot decide their own run");
        }
        co_return error_response(req, err->code, err->message);
      }
      log_event(approving ? "approve" : "reject", {{"execution_id", id}, {"user", who->name}, {"client", who->from.client},
                                                   {"proxy", who->from.proxy}});
      if (!live->is_copy()) {
        if (auto err = decide(live, approving, who->name)) co_return error_response(req, err->code, err->message);
        co_return json_response(req, http::status::ok, common::encode(live->record()));
      }
      // Another server of the cluster holds it: the owner decides, and its record comes back
      // through Redis. Answered 200 once this copy shows the decision, else 202 (on its way).
      const auto outcome = co_await cluster->send_control(id, std::string(p[2]), who->name);
      if (outcome == cluster::cluster_node::control_outcome::sent) {
        net::steady_timer poll(io);
        for (int i = 0; i < 400 && live->pending() == pending_state::awaiting_approval && !live->finished(); ++i) {
          poll.expires_after(std::chrono::milliseconds(5));
          co_await poll.async_wait(net::as_tuple(net::use_awaitable));
        }
      }
      const bool decided = live->pending() != pending_state::awaiting_approval || live->finished();
      co_return json_response(req, decided ? http::status::ok : http::status::accepted, common::encode(live->record()));
    }
  }
  co_return error_response(req, error_code::bad_request, "no such endpoint: " + std::string(req.method_string()) + " " +
                                                          std::string(req.target()));
}

/// GET /executions/{id}/events?after=SEQ&wait=S: what is there after SEQ at once, or the
/// first new events within S seconds. The poller is a watcher while it waits.
net::awaitable<response> server::impl::long_poll(const request& req, const target& t, const principal& who) {
  (void)who;  // every role may poll
  const std::string& id = t.parts[1];
  const auto after = query_number(t, "after", -1, -1);
  if (!after) co_return error_response(req, error_code::bad_request, "after must be a number >= -1");
  const auto wait = query_number(t, "wait", 0, 0);
  if (!wait) co_return error_response(req, error_code::bad_request, "wait must be a number of seconds >= 0");
  const auto held = co_await find_execution(id);
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
  // This poll takes the place of its previous one (nothing can be trimmed in between: no wait).
  unpark_poll(id, *after);
  if (!e->subscribe(collector, *after)) {
    co_return error_response(req, error_code::busy, "this execution has its maximum of watchers");
  }
  watchers.emplace(collector.get(), who);
  co_await collector->wait(std::chrono::seconds(std::min(*wait, max_poll_wait_s)));
  watchers.erase(collector.get());
  if (collector->done() || e->finished() || stopping || !policy.still_valid(who)) {
    e->unsubscribe(collector.get());
  } else {
    park_poll(e, collector, collector->next(), who);
  }
  maybe_stopped();
  co_return json_response(req, http::status::ok, collector->answer());
}

net::awaitable<response> server::impl::batch_poll(const request& req, const target& t, const principal& who) {
  (void)who;  // every role may poll
  const auto b = co_await find_batch(t.parts[1]);
  if (!b) co_return error_response(req, error_code::unknown_execution, "unknown batch \"" + t.parts[1] + "\"");
  auto parsed = parse_batch_after(t, *b);
  if (auto* error = std::get_if<std::string>(&parsed)) co_return error_response(req, error_code::bad_request, *error);
  const auto after = std::get<0>(std::move(parsed));
  const auto wait = query_number(t, "wait", 0, 0);
  if (!wait) co_return error_response(req, error_code::bad_request, "wait must be a number of seconds >= 0");
  // Each execution's part of the answer: from the replay buffer by a collector, or (finished
  // and no longer held) from the audit store.
  struct part {
    std::shared_ptr<execution> e;
    std::string machine_id;
    common::seq_t next;
    std::shared_ptr<poll_collector> collector;
    std::vector<std::string> stored;
    bool done = false;
  };
  std::vector<part> parts;
  net::steady_timer any(io, net::steady_timer::time_point::max());
  bool woken = false;
  for (const auto& m : b->members()) {
    const common::seq_t from = after.at(m.e->id());
    if (from > m.e->last_seq()) co_return error_response(req, error_code::bad_request, past_the_end(from, m.e->last_seq()));
    part p{m.e, m.machine_id, from, nullptr, {}, false};
    if (m.e->finished() && from >= m.e->last_seq()) {
      p.done = true;  // all sent: nothing to wait for here (a collector would wake the poll at once)
    } else if (m.e->finished() && !m.e->holds_after(from)) {
      if (audit) {
        for (auto& stored : co_await audit->async_events_after(m.e->id(), from, poll_answer_bytes / b->members().size() + 1)) {
          p.stored.push_back(common::tag_event(stored.frame, m.e->id(), m.machine_id));
          p.next = stored.seq;
        }
      }
      p.done = !audit || p.next >= co_await audit->async_last_seq(m.e->id());
    } else {
      p.collector = std::make_shared<poll_collector>(io.get_executor(), from);
      p.collector->on_wake([&woken, &any] {
        woken = true;
        any.cancel();
      });
      if (!m.e->subscribe(p.collector, from)) p.collector.reset();
    }
    parts.push_back(std::move(p));
  }
  bool anything = false;
  for (const auto& p : parts) anything = anything || !p.stored.empty() || (p.collector && p.collector->next() > p.next);
  if (!anything && !woken && *wait > 0 && !b->finished()) {
    any.expires_after(std::chrono::seconds(std::min(*wait, max_poll_wait_s)));
    co_await any.async_wait(use_tuple);
  }
  std::string body = "{\"events\":[";
  bool first = true;
  const auto add = [&](std::string_view frame_text) {
    if (!first) body += ',';
    first = false;
    body += frame_text;
  };
  std::string next;
  bool done = b->finished();
  for (auto& p : parts) {
    if (p.collector) {
      p.e->unsubscribe(p.collector.get());
      for (const auto& f : p.collector->frames()) {
        if (f->text()->starts_with("{\"type\":\"watchers\"")) continue;
        add(*f->tagged(p.e->id(), p.machine_id));
      }
      p.next = p.collector->next();
      p.done = p.e->finished() && p.next >= p.e->last_seq();
    }
    for (const auto& f : p.stored) add(f);
    done = done && p.done;
    if (!next.empty()) next += ',';
    next += p.e->id() + ":" + std::to_string(p.next);
  }
  add(*b->summary_frame()->text());
  body += "],\"next\":";
  common::append_json_string(body, next);
  body += ",\"done\":";
  body += done ? "true}" : "false}";
  maybe_stopped();
  co_return json_response(req, http::status::ok, std::move(body));
}

void server::impl::park_poll(std::shared_ptr<execution> e, std::shared_ptr<subscriber> collector, common::seq_t next,
                             principal who) {
  const std::string id = e->id();
  auto p = std::make_shared<parked_poll>(
      parked_poll{std::move(e), std::move(collector), next, net::steady_timer(io), std::move(who)});
  p->expiry.expires_after(cfg->server.idle_timeout);
  p->expiry.async_wait([self = shared_from_this(), p](boost::system::error_code ec) {
    if (ec) return;  // taken by the next poll
    p->e->unsubscribe(p->collector.get());
    for (auto [it, end] = self->parked_polls.equal_range(p->e->id()); it != end; ++it) {
      if (it->second == p) {
        self->parked_polls.erase(it);
        break;
      }
    }
  });
  parked_polls.emplace(id, std::move(p));
}

void server::impl::unpark_poll(const std::string& id, common::seq_t next) {
  for (auto [it, end] = parked_polls.equal_range(id); it != end; ++it) {
    if (it->second->next != next) continue;
    it->second->expiry.cancel();
    it->second->e->unsubscribe(it->second->collector.get());
    parked_polls.erase(it);
    return;
  }
}

void server::impl::unpark_all() {
  for (auto& [id, p] : parked_polls) {
    p->expiry.cancel();
    p->e->unsubscribe(p->collector.get());
  }
  parked_polls.clear();
}

std::string server::impl::past_the_end(common::seq_t after, common::seq_t last) {
  return "after=" + std::to_string(after) + " is past the last event (" + std::to_string(last) + ")";
}

}  // namespace cmdcast::server
