// Runs and attaches over WebSocket: the request as the first message, then the events as
// they come (or from the audit store for an execution no longer held), and cancel requests.
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <charconv>
#include <limits>
#include <map>

#include "cmdcast/common/codec.hpp"
#include "http/server_impl.hpp"
#include "support/log.hpp"

namespace cmdcast::server {
namespace {

constexpr auto use_tuple = net::as_tuple(net::use_awaitable);
constexpr std::size_t stored_page_bytes = 256u << 10;  // frames read from the audit per page

/// A WebSocket watching an execution. Frames go to the connection's queue, written as the
/// socket takes them (ws_connection); past the queue bound the watcher catches up from the
/// replay buffer each time its queue is down to half the bound.
class ws_watcher : public live_subscriber, public std::enable_shared_from_this<ws_watcher> {
 public:
  ws_watcher(std::shared_ptr<ws_connection> connection, std::size_t limit)
      : connection_(std::move(connection)), limit_(limit) {}

  /// As one of a batch stream's watchers: each event tagged with its execution and machine
  /// (sent uncompressed), no watcher counts, and `on_ended` instead of closing at the exit.
  void for_batch(std::string execution_id, std::string machine_id, std::function<void()> on_ended) {
    tag_ = {std::move(execution_id), std::move(machine_id)};
    on_ended_ = std::move(on_ended);
  }

  bool push(const frame& f, common::seq_t seq) override {
    if (connection_->closing()) return true;
    if (tag_ && seq < 0 && f->text()->starts_with("{\"type\":\"watchers\"")) return true;
    // The bound counts bytes as sent: compressed, for a connection that compresses.
    const bool compressed = connection_->compresses() && !tag_;
    const auto& payload = tag_ ? f->tagged(tag_->first, tag_->second) : compressed ? f->deflated() : f->text();
    if (connection_->queued_bytes() + payload->size() > limit_ && connection_->writing()) return false;
    connection_->send(payload, seq, compressed);
    return true;
  }
  std::size_t room() const override {
    const auto queued = connection_->queued_bytes();
    return queued == 0 ? std::numeric_limits<std::size_t>::max() : limit_ - std::min(limit_, queued);
  }
  void wants_more() override {
    // At half the bound, not empty: a watcher catching up stays close behind the fastest.
    connection_->when_queued_at_most(limit_ / 2, [w = weak_from_this()] {
      const auto self = w.lock();
      if (self && !self->connection_->closing()) self->more_();
    });
  }
  /// Called when it wants more while catching up (execution::feed).
  void on_more(std::function<void()> f) { more_ = std::move(f); }
  void ended() override {
    if (on_ended_) {
      on_ended_();
    } else {
      connection_->close(ws::normal, "execution finished");
    }
  }
  void shut_down() override { connection_->close(ws::going_away, "server shutting down"); }
  void revoke() override { connection_->close(ws::policy_error, "token revoked"); }
  /// Answers a message of the client's (an error), within the same bound as the events: a
  /// client that sends without reading gets no more answers once that much is queued.
  void say(std::string text) {
    if (connection_->queued_bytes() + text.size() <= limit_) connection_->send(std::make_shared<const std::string>(std::move(text)));
  }

 private:
  std::shared_ptr<ws_connection> connection_;
  std::size_t limit_;
  std::function<void()> more_;
  std::optional<std::pair<std::string, std::string>> tag_;  // execution and machine, for a batch stream
  std::function<void()> on_ended_;
};

/// A batch stream's summaries: sent as the counts change, and the close once every execution
/// has ended and been sent.
class batch_summaries : public batch_listener {
 public:
  batch_summaries(std::shared_ptr<ws_connection> connection, std::shared_ptr<batch> b, std::size_t parts)
      : connection_(std::move(connection)), batch_(std::move(b)), parts_left_(parts) {}
  void batch_changed(const frame& summary) override {
    if (!connection_->closing()) connection_->send(summary->text());
    maybe_close();
  }
  void part_ended() {
    --parts_left_;
    maybe_close();
  }

 private:
  void maybe_close() {
    if (parts_left_ > 0 || !batch_->finished() || connection_->closing()) return;
    connection_->send(batch_->summary_frame()->text());
    connection_->close(ws::normal, "batch finished");
  }
  std::shared_ptr<ws_connection> connection_;
  std::shared_ptr<batch> batch_;
  std::size_t parts_left_;
};

}  // namespace

/// A batch stream's `after`: EXECUTION_ID:SEQ pairs, comma-separated, each execution of `b`
/// (the others start from the first event held). An error message for anything else.
std::variant<std::map<std::string, common::seq_t>, std::string> parse_batch_after(const target& t, const batch& b) {
  std::map<std::string, common::seq_t> out;
  for (const auto& m : b.members()) out[m.e->id()] = -1;
  const auto it = t.query.find("after");
  if (it == t.query.end() || it->second.empty()) return out;
  std::string_view rest = it->second;
  while (!rest.empty()) {
    const auto comma = rest.find(',');
    const auto item = rest.substr(0, comma);
    rest = comma == std::string_view::npos ? std::string_view() : rest.substr(comma + 1);
    const auto colon = item.rfind(':');
    if (colon == std::string_view::npos) return "after must be EXECUTION_ID:SEQ pairs separated by commas";
    const std::string id(item.substr(0, colon));
    const auto number = item.substr(colon + 1);
    common::seq_t seq = 0;
    const auto r = std::from_chars(number.data(), number.data() + number.size(), seq);
    if (r.ec != std::errc() || r.ptr != number.data() + number.size() || seq < -1) {
      return "after: \"" + std::string(number) + "\" is not a seq >= -1";
    }
    const auto m = out.find(id);
    if (m == out.end()) return "after: \"" + id + "\" is not an execution of this batch";
    m->second = seq;
  }
  return out;
}

/// WS /batches/{id}/stream: every execution's events, tagged, each from its own `after`, and
/// the batch's summaries; cancel requests cancel the whole batch.
net::awaitable<void> server::impl::watch_batch(ws_connection& ws, std::shared_ptr<batch> b,
                                               std::map<std::string, common::seq_t> after, const principal& who) {
  auto connection = ws.shared_from_this();
  auto summaries = std::make_shared<batch_summaries>(connection, b, b->members().size());
  std::vector<std::pair<std::shared_ptr<execution>, std::shared_ptr<ws_watcher>>> parts;
  connection->send(b->summary_frame()->text());
  b->listen(summaries.get());
  for (const auto& m : b->members()) {
    auto watcher = std::make_shared<ws_watcher>(connection, cfg->server.subscriber_queue_bytes);
    watcher->on_more([e = m.e, w = watcher.get()] { e->feed(w); });
    watcher->for_batch(m.e->id(), m.machine_id, [s = summaries.get()] { s->part_ended(); });
    watchers.emplace(watcher.get(), who);
    parts.emplace_back(m.e, watcher);
  }
  for (auto& [e, watcher] : parts) {
    if (!e->subscribe(watcher, std::min(after[e->id()], e->last_seq()))) summaries->part_ended();
  }
  for (;;) {
    const auto text = co_await ws.read();
    if (!text) break;
    auto m = common::decode_client_message(*text);
    if (!m || !std::holds_alternative<common::cancel_request>(*m)) {
      connection->send(std::make_shared<const std::string>(
          error_json(error_code::bad_request, m ? "only {\"type\":\"cancel\"} is accepted while streaming" : m.error())));
    } else if (who.granted != role::operator_) {
      connection->send(std::make_shared<const std::string>(error_json(error_code::forbidden, "cancel needs the operator role")));
    } else {
      co_await cancel_batch(b, who);
    }
  }
  b->unlisten(summaries.get());
  for (auto& [e, watcher] : parts) {
    e->unsubscribe(watcher.get());
    watchers.erase(watcher.get());
  }
  maybe_stopped();
}

/// Sends an error event and closes with 1008 (policy): for auth, origin and request errors.
net::awaitable<void> server::impl::refuse(ws_connection& ws, error_code code, std::string message) {
  ++requests_rejected;
  ws.send(std::make_shared<const std::string>(error_json(code, message)));
  ws.close(ws::policy_error, message);
  for (;;) {  // until the close handshake is over (not in a while condition: GCC 12)
    const auto incoming = co_await ws.read();
    if (!incoming) break;
  }
}

/// Streams `e` to the WebSocket from `after` on, and takes cancel requests, until the
/// execution ends or the client leaves (or is closed for reading nothing).
net::awaitable<void> server::impl::watch(ws_connection& ws, std::shared_ptr<execution> e, common::seq_t after, const principal& who) {
  auto watcher = std::make_shared<ws_watcher>(ws.shared_from_this(), cfg->server.subscriber_queue_bytes);
  watcher->on_more([e, w = watcher.get()] { e->feed(w); });
  watchers.emplace(watcher.get(), who);
  if (!e->subscribe(watcher, after)) {
    watchers.erase(watcher.get());
    co_await refuse(ws, error_code::busy, "this execution has its maximum of watchers");
    co_return;
  }
  // Until the close handshake is over (the execution ended, the watcher read nothing for the
  // idle timeout, the server is going) or the client has gone.
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
      co_await cancel_execution(e, who);
    }
  }
  e->unsubscribe(watcher.get());
  watchers.erase(watcher.get());
  maybe_stopped();
}

/// A finished execution from the audit store: its stored events after `after`, page by page,
/// then 1000.
net::awaitable<void> server::impl::send_stored(ws_connection& ws, const std::string& id, common::seq_t after) {
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

net::awaitable<void> server::impl::run_websocket(ws_connection& ws, const target& t, const principal& who) {
  const auto& p = t.parts;
  if (p.size() == 4 && p[0] == "machines" && p[2] == "commands" && p[3] == "stream") {
    // The first message is the request (one over max_message_bytes is closed with 1009).
    const auto first = co_await ws.read();
    if (!first) co_return;
    auto started = begin_run(p[1], *first, who);
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
    const auto held = co_await find_execution(p[1]);
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
  if (p.size() == 3 && p[0] == "batches" && p[2] == "stream") {
    const auto b = co_await find_batch(p[1]);
    if (!b) {
      co_await refuse(ws, error_code::unknown_execution, "unknown batch \"" + p[1] + "\"");
      co_return;
    }
    auto after = parse_batch_after(t, *b);
    if (auto* error = std::get_if<std::string>(&after)) {
      co_await refuse(ws, error_code::bad_request, *error);
      co_return;
    }
    co_await watch_batch(ws, b, std::get<0>(std::move(after)), who);
    co_return;
  }
  co_await refuse(ws, error_code::bad_request, "no such WebSocket endpoint");
}

}  // namespace cmdcast::server
