#include "app/client_app.hpp"

#include <algorithm>
#include <chrono>

#include <boost/json.hpp>

#include "cmdcast/common/codec.hpp"
#include "cmdcast/common/reconnect.hpp"

namespace cmdcast::client {
namespace {

constexpr int poll_wait_s = 25;
constexpr double list_refresh_s = 2.0;
constexpr std::size_t state_tail_lines = 100;

/// The message of an error answer, or a fallback naming the status.
std::string error_message(const http_answer& a, const std::string& what) {
  auto e = common::decode_event(a.body);
  if (e.ok()) {
    if (const auto* err = std::get_if<common::error_event>(&*e)) return err->message;
  }
  if (a.status == 0) return what + ": the server cannot be reached";
  return what + ": HTTP " + std::to_string(a.status);
}

}  // namespace

std::string_view to_string(link_mode m) {
  switch (m) {
    case link_mode::websocket: return "websocket";
    case link_mode::polling: return "polling";
    case link_mode::disconnected: return "disconnected";
  }
  return "disconnected";
}

client_app::client_app(transport& t) : transport_(t) {}
client_app::~client_app() { ++generation_; }

void client_app::start(const std::string& route, const std::string& token) {
  token_ = token;
  transport_.set_token(token);
  load_lists();
  open_route(route);
}

void client_app::set_token(const std::string& token) {
  token_ = token;
  transport_.set_token(token);
  needs_token_ = false;
  error_.clear();
  load_lists();
  if ((view_ && !view_->finished()) || (batch_ && !batch_->finished())) connect();
}

void client_app::load_lists() {
  transport_.request("GET", "/me", "", [this](http_answer a) {
    if (unauthorized(a) || a.status != 200) return;
    boost::system::error_code ec;
    const auto v = boost::json::parse(a.body, ec);
    if (ec || !v.is_object()) return;
    const auto& o = v.as_object();
    if (const auto* u = o.if_contains("user"); u && u->is_string()) user_ = std::string(u->as_string());
    if (const auto* r = o.if_contains("role"); r && r->is_string()) role_ = std::string(r->as_string());
  });
  transport_.request("GET", "/machines", "", [this](http_answer a) {
    if (unauthorized(a)) return;
    auto m = common::decode_machines(a.body);
    if (a.status != 200 || !m) return fail(error_message(a, "machines"));
    machines_ = std::move(*m);
    if (selected_machine_.empty() && !machines_.empty()) selected_machine_ = machines_.front().id;
  });
  refresh_executions();
}

void client_app::refresh_executions() {
  next_list_refresh_ = now_ + list_refresh_s;
  transport_.request("GET", "/executions?limit=50", "", [this](http_answer a) {
    if (a.status != 200) return;
    if (auto list = common::decode_execution_records(a.body)) executions_ = std::move(*list);
    if (!view_) return;
    for (const auto& r : executions_) {
      if (r.execution_id != view_->execution_id()) continue;
      record_ = r;
    }
  });
}

bool client_app::unauthorized(const http_answer& a) {
  if (a.status != 401) return false;
  needs_token_ = true;
  error_ = token_.empty() ? "this server needs a token" : "the token was not accepted";
  return true;
}

void client_app::fail(const std::string& message) { error_ = message; }

void client_app::select_machine(const std::string& id) {
  selected_machine_ = id;
  if (!view_ && !batch_) route_ = "#/machines/" + id;
}

void client_app::open_route(const std::string& hash) {
  const auto r = parse_route(hash);
  if (r.what == route::kind::execution) {
    attach(r.id);
    // A link to lines scrolls there; the same lines again (the address bar catching up) do not.
    if (r.lines != line_link_) set_line_link(r.lines, true);
  } else if (r.what == route::kind::machine) {
    select_machine(r.id);
  } else if (r.what == route::kind::batch) {
    open_batch(r.id);
  }
}

void client_app::set_line_link(std::optional<line_range> lines, bool scroll) {
  if (!view_) return;
  line_link_ = lines;
  if (scroll && lines) ++line_link_scrolls_;
  update_route();
}

void client_app::update_route() {
  if (view_) route_ = execution_route(view_->execution_id(), line_link_);
}

void client_app::show_execution(const std::string& id) {
  ++generation_;
  socket_.reset();
  batch_.reset();
  batch_member_.clear();
  view_ = std::make_unique<common::execution_view>(id);
  line_link_.reset();
  record_.reset();
  posted_run_.reset();
  seen_unfinished_ = false;
  finish_notice_.reset();
  update_route();
  degraded_ = false;
  poll_in_flight_ = false;
  attempts_ = 0;
  retry_at_ = -1;
  error_.clear();
  fetch_record();
}

void client_app::fetch_record() {
  if (!view_) return;
  const std::string id = view_->execution_id();
  transport_.request("GET", "/executions/" + id, "", [this, id](http_answer a) {
    if (!view_ || view_->execution_id() != id || a.status != 200) return;
    auto r = common::decode_execution_record(a.body);
    if (!r) return;
    record_ = std::move(*r);
    if (!view_->finished() && !common::parse_exit_state(record_->state)) seen_unfinished_ = true;
    title_may_change();
  });
}

void client_app::attach(const std::string& execution_id) {
  if (!batch_ && view_ && view_->execution_id() == execution_id) return;
  pending_run_.reset();
  show_execution(execution_id);
  connect();
}

void client_app::run(const std::string& machine_id, const std::string& action,
                     const std::map<std::string, std::string>& params) {
  ++generation_;
  socket_.reset();
  view_.reset();
  batch_.reset();
  batch_member_.clear();
  error_.clear();
  pending_run_ = run_to_send{machine_id, action, common::encode(common::run_request{action, params, std::nullopt})};
  // An action that may wait (for the machine, or for an approval) has no started event to
  // learn its id from until it runs: it is posted, then watched like any other.
  for (const auto& m : machines_) {
    if (m.id != machine_id) continue;
    for (const auto& a : m.actions) {
      if (a.name == action && (a.approval || a.exclusive)) return post_run(false);
    }
  }
  connect_socket("/machines/" + machine_id + "/commands/stream", pending_run_->request);
  if (!socket_) post_run();  // no WebSocket in this client
}

void client_app::post_run(bool fallback) {
  if (!pending_run_) return;
  const run_to_send posted = *pending_run_;
  const auto gen = ++generation_;
  transport_.request("POST", "/machines/" + posted.machine + "/commands", posted.request, [this, gen, fallback, posted](http_answer a) {
    if (gen != generation_) return;
    pending_run_.reset();
    if (unauthorized(a)) return;
    auto accepted = common::decode_run_accepted(a.body);
    if (a.status != 202 || !accepted) return fail(error_message(a, "run"));
    show_execution(accepted->execution_id);
    posted_run_ = posted;
    seen_unfinished_ = true;  // our own run: its end is news
    refresh_executions();
    if (!fallback) return connect();
    degraded_ = true;  // the WebSocket just failed: poll this one
    poll();
  });
}

void client_app::cancel() {
  if (batch_) {  // the open machine's execution only
    const auto* v = view();
    if (!v || v->finished()) return;
    transport_.request("POST", "/executions/" + v->execution_id() + "/cancel", "", [this](http_answer a) {
      if (unauthorized(a)) return;
      if (a.status != 202) fail(error_message(a, "cancel"));
    });
    return;
  }
  if (!view_ || view_->finished()) return;
  if (socket_ && socket_opened_) {
    socket_->send(R"({"type":"cancel"})");
    return;
  }
  transport_.request("POST", "/executions/" + view_->execution_id() + "/cancel", "", [this](http_answer a) {
    if (unauthorized(a)) return;
    if (a.status != 202) fail(error_message(a, "cancel"));
  });
}

void client_app::approve() { decide("approve"); }
void client_app::reject() { decide("reject"); }

void client_app::decide(const std::string& what) {
  if (!view_ || view_->finished()) return;
  const std::string id = view_->execution_id();
  transport_.request("POST", "/executions/" + id + "/" + what, "", [this, what, id](http_answer a) {
    if (unauthorized(a)) return;
    if (a.status < 200 || a.status >= 300) return fail(error_message(a, what));
    if (view_ && view_->execution_id() == id) fetch_record();
    refresh_executions();
  });
}

void client_app::connect() {
  ++generation_;
  socket_.reset();
  poll_in_flight_ = false;
  if (batch_) {
    if (batch_->finished()) return;
    if (!degraded_) {
      const std::string after = batch_->resume_after();
      connect_socket("/batches/" + batch_->batch_id() + "/stream" + (after.empty() ? "" : "?after=" + after),
                     std::nullopt);
      if (socket_) return;
      degraded_ = true;  // this client has no WebSocket
    }
    return poll_batch();
  }
  if (!view_ || view_->finished()) return;
  if (!degraded_) {
    connect_socket("/executions/" + view_->execution_id() + "/stream?after=" + std::to_string(view_->resume_after()),
                   std::nullopt);
    if (socket_) return;
    degraded_ = true;  // this client has no WebSocket
  }
  poll();
}

void client_app::connect_socket(const std::string& path, std::optional<std::string> first_message) {
  socket_opened_ = false;
  const auto gen = generation_;
  socket_callbacks cb;
  cb.on_open = [this, gen, first_message] {
    if (gen != generation_) return;
    socket_opened_ = true;
    mode_ = link_mode::websocket;
    attempts_ = 0;
    if (first_message && socket_) socket_->send(*first_message);
  };
  cb.on_message = [this, gen](std::string text) {
    if (gen == generation_) on_event_text(text);
  };
  cb.on_close = [this, gen](int code, std::string reason) {
    if (gen == generation_) on_socket_closed(code, reason);
  };
  socket_ = transport_.open_socket(path, std::move(cb));
}

void client_app::on_event_text(const std::string& text) {
  const auto started = std::chrono::steady_clock::now();
  ingest_bytes_ += text.size();
  if (batch_) {
    apply_batch_text(text);
  } else {
    apply_event_text(text);
  }
  ingest_seconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
}

void client_app::apply_event_text(const std::string& text) {
  auto e = common::decode_event(text);
  if (!e) return fail("the server sent something this client does not understand: " + e.error());
  if (const auto* err = std::get_if<common::error_event>(&*e)) return fail(err->message);
  if (!view_) {
    const auto* started = std::get_if<common::started_event>(&*e);
    if (!started || !pending_run_) return;
    // Our run has started: from here on it is watched like any other execution.
    view_ = std::make_unique<common::execution_view>(started->execution_id);
    line_link_.reset();
    record_.reset();
    finish_notice_.reset();
    seen_unfinished_ = true;  // our own run, live from its start
    update_route();
    pending_run_.reset();
    refresh_executions();
  }
  const bool was_finished = view_->finished();
  apply_to_view(*e);
  if (view_->finished() && !was_finished) refresh_executions();
  title_may_change();
}

void client_app::apply_to_view(const common::event& e) {
  if (!view_) return;
  const bool was_finished = view_->finished();
  // After the replay a subscriber gets the watcher count; queued and awaiting events are live.
  if (!was_finished && (std::holds_alternative<common::watchers_event>(e) ||
                        std::holds_alternative<common::queued_event>(e) ||
                        std::holds_alternative<common::awaiting_approval_event>(e))) {
    seen_unfinished_ = true;
  }
  view_->apply(e);
  if (!was_finished && view_->finished()) {
    if (seen_unfinished_) note_finish(finish_notice(watched_action(), watched_machine(), *view_->exit()));
    fetch_record();
  }
}

void client_app::on_socket_closed(int code, const std::string& reason) {
  const bool opened = socket_opened_;
  socket_.reset();
  if (batch_) return on_batch_socket_closed(code, opened);
  if (!view_) {
    if (pending_run_ && !opened) return post_run();  // the upgrade failed: run over HTTP
    pending_run_.reset();
    if (error_.empty()) fail("the run did not start: " + (reason.empty() ? "connection closed" : reason));
    mode_ = link_mode::disconnected;
    return;
  }
  if (view_->finished()) return;
  if (code == 1000 || code == 1008) {
    // Closed without an exit we have, or refused (the error event says why): the record says
    // whether the execution is over (the server may have lost its last events in a crash).
    return end_from_record();
  }
  if (code == 1013) return connect();  // closed as idle (or by a proxy so): resume from where it was
  if (!opened) {
    // The upgrade failed (or the server is down): long-polling may still get through.
    degraded_ = true;
    return poll();
  }
  mode_ = link_mode::disconnected;
  schedule_retry();
}

void client_app::poll() {
  if (!view_ || poll_in_flight_) return;
  poll_in_flight_ = true;
  const auto gen = generation_;
  const std::string path = "/executions/" + view_->execution_id() + "/events?after=" +
                           std::to_string(view_->resume_after()) + "&wait=" + std::to_string(poll_wait_s);
  transport_.request("GET", path, "", [this, gen](http_answer a) {
    if (gen != generation_) return;
    poll_in_flight_ = false;
    if (a.status == 0 || a.status >= 500) {
      mode_ = link_mode::disconnected;
      return schedule_retry();
    }
    if (unauthorized(a)) {
      mode_ = link_mode::disconnected;
      return;
    }
    const auto started = std::chrono::steady_clock::now();
    ingest_bytes_ += a.body.size();
    auto answer = common::decode_poll_response(a.body);
    if (a.status != 200 || !answer) {
      fail(error_message(a, "polling"));
      return end_from_record();
    }
    mode_ = link_mode::polling;
    attempts_ = 0;
    for (const auto& e : answer->events) apply_to_view(e);
    title_may_change();
    ingest_seconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    if (answer->done || view_->finished()) {
      refresh_executions();
      return;
    }
    poll();
  });
}

void client_app::end_from_record() {
  mode_ = link_mode::disconnected;
  const auto gen = generation_;
  transport_.request("GET", "/executions/" + view_->execution_id(), "", [this, gen](http_answer a) {
    if (gen != generation_ || !view_) return;
    auto record = common::decode_execution_record(a.body);
    if (a.status == 200 && record && common::parse_exit_state(record->state)) {
      const bool was_finished = view_->finished();
      view_->end_from_record(*record);
      if (!was_finished && view_->finished() && seen_unfinished_) {
        note_finish(finish_notice(watched_action(), watched_machine(), *view_->exit()));
      }
      record_ = *record;
      title_may_change();
      error_.clear();
      return refresh_executions();
    }
    if (a.status == 404) return fail("unknown execution " + view_->execution_id());
    schedule_retry();
  });
}

void client_app::schedule_retry() {
  // 0.25 s, 0.5 s, 1 s, ... at most 4 s between attempts (each drawn from its upper half).
  const auto delay = common::reconnect_delay(attempts_, std::chrono::milliseconds(250), std::chrono::seconds(4));
  ++attempts_;
  retry_at_ = now_ + std::chrono::duration<double>(delay).count();
}

void client_app::tick(double now) {
  now_ = now;
  if (retry_at_ >= 0 && now >= retry_at_) {
    retry_at_ = -1;
    degraded_ = false;  // try the WebSocket again first
    connect();
  }
  if (now >= next_list_refresh_) refresh_executions();
  title_may_change();
}

std::uint64_t client_app::revision() const {
  std::uint64_t h = 1469598103934665603ull;  // FNV-1a over what the screen shows
  const auto mix = [&h](std::uint64_t v) { h = (h ^ v) * 1099511628211ull; };
  const auto text = [&mix](const std::string& s) { mix(std::hash<std::string>{}(s)); };
  if (batch_) {
    text(batch_->batch_id());
    mix(batch_->version());
    text(batch_member_);
    mix(static_cast<std::uint64_t>(filter_));
    mix(rerun_.size());
    for (const auto& r : rerun_) text(r.execution_id + r.error);
  }
  if (const auto* v = view()) {
    text(v->execution_id());
    mix(v->output().version());
  }
  if (view_) {
    text(view_->execution_id());
    mix(view_->output().version());
    mix(static_cast<std::uint64_t>(view_->resume_after() + 1));
    mix(static_cast<std::uint64_t>(view_->watchers().value_or(-1)));
    mix(static_cast<std::uint64_t>(view_->queued_position().value_or(-1)));
    mix(view_->awaiting_approval().has_value());
    if (record_) text(record_->state);
  }
  mix(static_cast<std::uint64_t>(mode_));
  mix(machines_.size());
  for (const auto& r : executions_) {
    text(r.execution_id);
    text(r.state);
    mix(static_cast<std::uint64_t>(r.watchers));
  }
  text(error_);
  text(user_);
  text(route_);
  mix(needs_token_);
  return h;
}

// --- Fleet runs -----------------------------------------------------------------------------

std::vector<std::string> client_app::groups() const {
  std::vector<std::string> out;
  for (const auto& m : machines_) {
    for (const auto& g : m.groups) {
      if (std::find(out.begin(), out.end(), g) == out.end()) out.push_back(g);
    }
  }
  std::sort(out.begin(), out.end());
  return out;
}

std::vector<const common::machine_info*> client_app::group_machines(const std::string& group) const {
  std::vector<const common::machine_info*> out;
  for (const auto& m : machines_) {
    if (std::find(m.groups.begin(), m.groups.end(), group) != m.groups.end()) out.push_back(&m);
  }
  return out;
}

std::vector<const common::action_info*> client_app::group_actions(const std::string& group) const {
  std::vector<const common::action_info*> out;
  const auto members = group_machines(group);
  if (members.empty()) return out;
  for (const auto& a : members.front()->actions) {
    if (a.approval) continue;  // an action needing approval cannot run on a group
    bool everywhere = true;
    for (const auto* m : members) {
      everywhere = everywhere && std::any_of(m->actions.begin(), m->actions.end(),
                                             [&](const common::action_info& b) { return b.name == a.name; });
    }
    if (everywhere) out.push_back(&a);
  }
  return out;
}

void client_app::run_group(const std::string& group, const std::string& action,
                           const std::map<std::string, std::string>& params, std::optional<std::int64_t> parallel,
                           bool stop_on_failure) {
  common::group_run_request request{common::run_request{action, params, std::nullopt}, parallel, stop_on_failure};
  const auto gen = ++generation_;
  error_.clear();
  transport_.request("POST", "/groups/" + group + "/commands", common::encode(request),
                     [this, gen, group, request](http_answer a) {
                       if (gen != generation_) return;
                       if (unauthorized(a)) return;
                       auto b = common::decode_batch_record(a.body);
                       if (a.status != 202 || !b) return fail(error_message(a, "run on " + group));
                       batch_requests_[b->batch_id] = request.run;
                       show_batch(b->batch_id);
                       batch_->apply_record(*b);
                       batch_seen_running_ = true;  // our own run: its end is news
                       title_may_change();
                       connect();
                       refresh_executions();
                     });
}

void client_app::open_batch(const std::string& batch_id) {
  if (batch_ && batch_->batch_id() == batch_id) return;
  show_batch(batch_id);
  connect();
}

void client_app::show_batch(const std::string& id) {
  ++generation_;
  socket_.reset();
  view_.reset();
  pending_run_.reset();
  record_.reset();
  line_link_.reset();
  finish_notice_.reset();
  batch_ = std::make_unique<batch_view>(id);
  batch_member_.clear();
  filter_ = batch_filter::all;
  batch_seen_running_ = false;
  filling_.clear();
  rerun_.clear();
  route_ = batch_route(id);
  degraded_ = false;
  poll_in_flight_ = false;
  attempts_ = 0;
  retry_at_ = -1;
  error_.clear();
  fetch_batch();
}

void client_app::fetch_batch(bool resume) {
  if (!batch_) return;
  const std::string id = batch_->batch_id();
  transport_.request("GET", "/batches/" + id, "", [this, id, resume](http_answer a) {
    if (!batch_ || batch_->batch_id() != id) return;
    if (unauthorized(a)) return;
    auto r = common::decode_batch_record(a.body);
    if (resume && (a.status == 0 || a.status >= 500)) return schedule_retry();
    if (a.status != 200 || !r) return fail(error_message(a, "batch " + id));
    const bool was_finished = batch_->finished();
    batch_->apply_record(*r);
    if (r->state == "running") batch_seen_running_ = true;
    if (!was_finished && batch_->finished()) {
      socket_.reset();
      ++generation_;
      mode_ = link_mode::disconnected;
      error_.clear();  // whatever the stream said, the record tells how it ended
      fill_member();
    } else if (resume && !batch_->finished()) {
      schedule_retry();  // the stream closed while the batch still runs: resume it
    }
    title_may_change();
  });
}

void client_app::open_batch_member(const std::string& execution_id) {
  if (!batch_) return;
  batch_member_ = execution_id;
  fill_member();
  title_may_change();
}

void client_app::fill_member() {
  // A batch over whose stream none of this machine's events came (one the server no longer
  // holds in memory: its stream is refused) is read execution by execution, as any other.
  if (!batch_ || !batch_->finished() || batch_member_.empty() || filling_ == batch_member_) return;
  const auto* v = batch_->member(batch_member_);
  const auto row = batch_->row(batch_member_);
  if (!v || !row || v->finished()) return;
  filling_ = batch_member_;
  const std::string batch_id = batch_->batch_id(), id = batch_member_, machine = row->machine_id;
  const std::string after = v->resume_after() < 0 ? "" : "?after=" + std::to_string(v->resume_after());
  transport_.request("GET", "/executions/" + id + "/events" + after, "", [this, batch_id, id, machine](http_answer a) {
    if (!batch_ || batch_->batch_id() != batch_id) return;
    filling_.clear();
    auto answer = common::decode_poll_response(a.body);
    if (a.status != 200 || !answer) return fail(error_message(a, "the output of " + machine));
    const auto* member = batch_->member(id);
    const auto before = member ? member->resume_after() : -1;
    for (auto& e : answer->events) apply_to_batch(common::tagged_event{std::move(e), id, machine});
    // More to read: the answer was cut short, or the execution had not ended.
    if (!answer->done && member && member->resume_after() > before && batch_member_ == id) fill_member();
  });
}

void client_app::apply_batch_text(const std::string& text) {
  auto t = common::decode_tagged_event(text);
  if (!t) return fail("the server sent something this client does not understand: " + t.error());
  if (const auto* err = std::get_if<common::error_event>(&t->e); err && t->execution_id.empty()) {
    return fail(err->message);
  }
  apply_to_batch(*t);
}

void client_app::apply_to_batch(const common::tagged_event& t) {
  const bool was_finished = batch_->finished();
  batch_->apply(t);
  if (!batch_->finished()) batch_seen_running_ = true;
  if (!was_finished && batch_->finished()) {
    const auto& r = batch_->record();
    if (batch_seen_running_ && r) {
      const auto& c = batch_->counts();
      note_finish(r->action_type + " on " + r->group + ": " + batch_->state() + " (" + std::to_string(c.succeeded) +
                  " succeeded, " + std::to_string(c.failed) + " failed, " + std::to_string(c.cancelled) +
                  " cancelled)");
    }
    refresh_executions();
  }
  title_may_change();
}

void client_app::on_batch_socket_closed(int code, bool opened) {
  if (batch_->finished()) return;
  mode_ = link_mode::disconnected;
  // Closed normally: every execution ended and the record says how, or (a proxy, the page
  // leaving) it did not, and the stream is resumed.
  if (code == 1000 || code == 1005) return fetch_batch(true);
  if (code == 1008) return fetch_batch();  // refused: the error event says why
  if (code == 1013) return connect();
  if (!opened) {
    degraded_ = true;
    return poll_batch();
  }
  mode_ = link_mode::disconnected;
  schedule_retry();
}

void client_app::poll_batch() {
  if (!batch_ || poll_in_flight_) return;
  poll_in_flight_ = true;
  const auto gen = generation_;
  const std::string after = batch_->resume_after();
  const std::string path = "/batches/" + batch_->batch_id() + "/events?wait=" + std::to_string(poll_wait_s) +
                           (after.empty() ? "" : "&after=" + after);
  transport_.request("GET", path, "", [this, gen](http_answer a) {
    if (gen != generation_ || !batch_) return;
    poll_in_flight_ = false;
    if (a.status == 0 || a.status >= 500) {
      mode_ = link_mode::disconnected;
      return schedule_retry();
    }
    if (unauthorized(a)) {
      mode_ = link_mode::disconnected;
      return;
    }
    const auto started = std::chrono::steady_clock::now();
    ingest_bytes_ += a.body.size();
    boost::system::error_code ec;
    const auto v = boost::json::parse(a.body, ec);
    const auto* o = !ec && v.is_object() ? &v.as_object() : nullptr;
    const auto* events = o ? o->if_contains("events") : nullptr;
    if (a.status != 200 || !events || !events->is_array()) {
      fail(error_message(a, "polling"));
      mode_ = link_mode::disconnected;
      return fetch_batch();
    }
    mode_ = link_mode::polling;
    attempts_ = 0;
    for (const auto& e : events->as_array()) {
      auto t = common::decode_tagged_event(boost::json::serialize(e));
      if (t) apply_to_batch(*t);
    }
    ingest_seconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    const auto* done = o->if_contains("done");
    if ((done && done->is_bool() && done->as_bool()) || batch_->finished()) {
      fetch_batch();
      return refresh_executions();
    }
    poll_batch();
  });
}

void client_app::cancel_batch() {
  if (!batch_ || batch_->finished()) return;
  if (socket_ && socket_opened_) {
    socket_->send(R"({"type":"cancel"})");
    return;
  }
  transport_.request("POST", "/batches/" + batch_->batch_id() + "/cancel", "", [this](http_answer a) {
    if (unauthorized(a)) return;
    if (a.status != 202) fail(error_message(a, "cancel"));
  });
}

bool client_app::can_rerun_failed() const {
  if (!batch_ || !batch_->record() || !can_run()) return false;
  if (batch_->failed_machines().empty()) return false;
  if (batch_requests_.count(batch_->batch_id())) return true;
  // A secret value is masked in the record: only the page that started the batch knows it.
  for (const auto& [name, value] : batch_->record()->params) {
    if (value == "***") return false;
  }
  return true;
}

void client_app::rerun_failed() {
  if (!can_rerun_failed()) return;
  const auto& record = *batch_->record();
  const auto known = batch_requests_.find(batch_->batch_id());
  const common::run_request request =
      known != batch_requests_.end() ? known->second : common::run_request{record.action_type, record.params, std::nullopt};
  const auto machines = batch_->failed_machines();
  // A new batch of just those: the group run with `machines` (docs/protocol.md). A server
  // older than that field refuses it (400: no unknown fields): then one run per machine.
  common::group_run_request rerun{request, record.parallel, record.stop_on_failure};
  rerun.machines = machines;
  const std::string body = common::encode(rerun);
  const std::string batch_id = batch_->batch_id(), group = record.group;
  rerun_.clear();
  transport_.request("POST", "/groups/" + group + "/commands", body,
                     [this, batch_id, group, request, machines](http_answer a) {
                       if (!batch_ || batch_->batch_id() != batch_id) return;
                       if (unauthorized(a)) return;
                       if (a.status == 400) return rerun_one_by_one(request, machines);
                       auto b = common::decode_batch_record(a.body);
                       if (a.status != 202 || !b) return fail(error_message(a, "re-run on " + group));
                       batch_requests_[b->batch_id] = request;
                       show_batch(b->batch_id);
                       batch_->apply_record(*b);
                       batch_seen_running_ = true;
                       title_may_change();
                       connect();
                       refresh_executions();
                     });
}

void client_app::rerun_one_by_one(const common::run_request& request, const std::vector<std::string>& machines) {
  const std::string body = common::encode(request);
  const std::string batch_id = batch_->batch_id();
  rerun_.clear();
  for (const auto& machine : machines) {
    rerun_.push_back({machine, "", ""});
    transport_.request("POST", "/machines/" + machine + "/commands", body, [this, batch_id, machine](http_answer a) {
      if (!batch_ || batch_->batch_id() != batch_id) return;
      if (unauthorized(a)) return;
      for (auto& r : rerun_) {
        if (r.machine_id != machine) continue;
        auto accepted = common::decode_run_accepted(a.body);
        if (a.status == 202 && accepted) {
          r.execution_id = accepted->execution_id;
        } else {
          r.error = error_message(a, "run on " + machine);
        }
      }
      refresh_executions();
    });
  }
}

std::string client_app::watched_action() const {
  const auto* v = view();
  if (!v) return "";
  if (v->started()) return v->started()->action_type;
  if (batch_) return batch_->record() ? batch_->record()->action_type : "";
  if (record_) return record_->action_type;
  return posted_run_ ? posted_run_->action : "";
}

std::string client_app::watched_machine() const {
  const auto* v = view();
  if (!v) return "";
  std::string id = v->started() ? v->started()->machine_id
                  : record_      ? record_->machine_id
                  : posted_run_  ? posted_run_->machine
                                 : "";
  if (batch_ && id.empty()) {
    if (const auto r = batch_->row(batch_member_)) id = r->machine_id;
  }
  for (const auto& m : machines_) {
    if (m.id == id && !m.name.empty()) return m.name;
  }
  return id;
}

bool client_app::waiting() const {
  if (batch_) {
    const auto* v = view();
    return v && !v->finished() && !v->started();
  }
  if (!view_ || view_->finished() || view_->started()) return false;
  if (view_->queued_position() || view_->awaiting_approval()) return true;
  return record_ && (record_->state == "queued" || record_->state == "awaiting_approval");
}

std::string client_app::approval_requester() const {
  if (!view_ || view_->finished() || view_->started()) return "";
  if (view_->awaiting_approval()) return view_->awaiting_approval()->requested_by;
  if (record_ && record_->state == "awaiting_approval") return record_->user;
  return "";
}

bool client_app::can_approve() const {
  const std::string requester = approval_requester();
  return !requester.empty() && role_ == "operator" && !user_.empty() && user_ != requester;
}

std::string client_app::title() const {
  if (batch_) {
    const auto& r = batch_->record();
    if (!r) return "";
    return batch_title_text(batch_->state(), batch_->ended(), static_cast<std::int64_t>(batch_->size()), r->action_type,
                            r->group);
  }
  if (!view_) return "";
  const std::string action = watched_action();
  if (action.empty()) return "";
  run_phase phase = run_phase::running;
  if (const auto& e = view_->exit()) {
    phase = e->state == common::exit_state::exited && e->code == 0 ? run_phase::succeeded : run_phase::failed;
  } else if (waiting()) {
    phase = run_phase::waiting;
  }
  std::optional<double> percent;
  if (phase == run_phase::running && view_->progress()) percent = view_->progress()->percent;
  return title_text(phase, percent, action, watched_machine());
}

std::optional<std::string> client_app::take_finish_notice() { return std::exchange(finish_notice_, std::nullopt); }

void client_app::note_finish(std::string notice) {
  if (on_finish) {
    on_finish(notice);
  } else {
    finish_notice_ = std::move(notice);
  }
}

void client_app::title_may_change() {
  if (!on_title) return;
  std::string t = title();
  if (t == last_title_) return;
  last_title_ = std::move(t);
  on_title(last_title_);
}

std::string client_app::output_path(const std::string& format) const {
  return view() ? "/executions/" + view()->execution_id() + "/output?format=" + format : "";
}

void client_app::download(const std::string& format, std::function<void(http_answer)> done) {
  if (!view()) return;
  transport_.request("GET", output_path(format), "", std::move(done));
}

std::string client_app::batch_json() const {
  if (!batch_) return "null";
  std::string s = "{\"batch_id\":";
  common::append_json_string(s, batch_->batch_id());
  s += ",\"state\":";
  common::append_json_string(s, batch_->state());
  const auto& c = batch_->counts();
  s += ",\"counts\":{\"queued\":" + std::to_string(c.queued) + ",\"running\":" + std::to_string(c.running) +
       ",\"succeeded\":" + std::to_string(c.succeeded) + ",\"failed\":" + std::to_string(c.failed) +
       ",\"cancelled\":" + std::to_string(c.cancelled) + "}";
  const auto& r = batch_->record();
  s += ",\"group\":";
  common::append_json_string(s, r ? r->group : "");
  s += ",\"action_type\":";
  common::append_json_string(s, r ? r->action_type : "");
  const auto rows_json = [](const std::vector<batch_row>& rows, bool full) {
    std::string out = "[";
    for (const auto& row : rows) {
      if (out.size() > 1) out += ',';
      if (!full) {
        common::append_json_string(out, row.machine_id);
        continue;
      }
      out += "{\"machine_id\":";
      common::append_json_string(out, row.machine_id);
      out += ",\"execution_id\":";
      common::append_json_string(out, row.execution_id);
      out += ",\"state\":";
      common::append_json_string(out, row.state);
      out += ",\"exit_code\":" + (row.exit_code ? std::to_string(*row.exit_code) : std::string("null"));
      out += ",\"progress\":" + (row.progress ? std::to_string(*row.progress) : std::string("null"));
      out += ",\"duration_ms\":" + (row.duration_ms ? std::to_string(*row.duration_ms) : std::string("null"));
      out += ",\"last_line\":";
      common::append_json_string(out, row.last_line);
      out += "}";
    }
    return out + "]";
  };
  s += ",\"machines\":" + rows_json(batch_->rows(), true);
  s += ",\"filter\":";
  common::append_json_string(s, to_string(filter_));
  // The machines the grid shows under the filter, in order.
  s += ",\"shown\":" + rows_json(batch_->rows(filter_), false);
  s += ",\"open\":";
  common::append_json_string(s, batch_member_);
  s += ",\"can_rerun_failed\":";
  s += can_rerun_failed() ? "true" : "false";
  s += ",\"rerun\":[";
  for (std::size_t i = 0; i < rerun_.size(); ++i) {
    if (i) s += ',';
    s += "{\"machine_id\":";
    common::append_json_string(s, rerun_[i].machine_id);
    s += ",\"execution_id\":";
    common::append_json_string(s, rerun_[i].execution_id);
    s += ",\"error\":";
    common::append_json_string(s, rerun_[i].error);
    s += "}";
  }
  s += "]}";
  return s;
}

bool client_app::animating() const {
  if (batch_) {
    if (batch_->finished()) return false;
    if (mode_ == link_mode::disconnected) return true;
    for (const auto& r : batch_->rows()) {
      if (r.busy) return true;
    }
    return false;
  }
  if (!view_ || view_->finished()) return false;
  return mode_ == link_mode::disconnected || (view_->progress() && !view_->progress()->percent);
}

std::string client_app::state_json() const {
  const auto* v = view();
  std::string s = "{\"transport\":";
  common::append_json_string(s, to_string(mode_));
  s += ",\"execution_id\":";
  if (v) {
    common::append_json_string(s, v->execution_id());
  } else {
    s += "null";
  }
  s += ",\"lines\":" + std::to_string(v ? v->output().size() : 0);
  s += ",\"tail\":[";
  if (v) {
    const auto tail = v->tail(state_tail_lines);
    for (std::size_t i = 0; i < tail.size(); ++i) {
      if (i) s += ',';
      common::append_json_string(s, tail[i]);
    }
  }
  s += "],\"tail_times\":[";
  if (v) {
    const auto times = v->tail_times(state_tail_lines);
    for (std::size_t i = 0; i < times.size(); ++i) {
      if (i) s += ',';
      s += std::to_string(times[i]);
    }
  }
  s += "],\"started_at\":";
  if (v && v->started()) {
    common::append_json_string(s, v->started()->started_at);
  } else {
    s += "null";
  }
  s += ",\"title\":";
  common::append_json_string(s, title());
  s += ",\"highlight\":";
  s += line_link_ ? "[" + std::to_string(line_link_->first) + "," + std::to_string(line_link_->last) + "]" : "null";
  s += ",\"record_state\":";
  if (record_) {
    common::append_json_string(s, record_->state);
  } else {
    s += "null";
  }
  s += ",\"approved_by\":";
  if (record_ && record_->approved_by) {
    common::append_json_string(s, *record_->approved_by);
  } else {
    s += "null";
  }
  s += ",\"queued_position\":";
  s += v && v->queued_position() ? std::to_string(*v->queued_position()) : "null";
  s += ",\"awaiting_approval\":";
  if (v && v->awaiting_approval()) {
    s += "{\"requested_by\":";
    common::append_json_string(s, v->awaiting_approval()->requested_by);
    s += ",\"expires_at\":";
    common::append_json_string(s, v->awaiting_approval()->expires_at);
    s += "}";
  } else {
    s += "null";
  }
  s += ",\"can_approve\":";
  s += can_approve() ? "true" : "false";
  s += ",\"progress\":";
  const auto* p = v && v->progress() ? &*v->progress() : nullptr;
  s += p && p->percent ? std::to_string(*p->percent) : "null";
  s += ",\"phase\":";
  common::append_json_string(s, p ? p->phase : "");
  s += ",\"exit\":";
  s += v && v->exit() ? common::encode(common::event{*v->exit()}) : "null";
  s += ",\"watchers\":";
  s += v && v->watchers() ? std::to_string(*v->watchers()) : "null";
  s += ",\"missed_events\":" + std::to_string(v ? v->missed_events() : 0);
  s += ",\"machines\":" + std::to_string(machines_.size());
  s += ",\"executions\":" + std::to_string(executions_.size());
  s += ",\"user\":";
  common::append_json_string(s, user_);
  s += ",\"can_run\":";
  s += can_run() ? "true" : "false";
  s += ",\"needs_token\":";
  s += needs_token_ ? "true" : "false";
  s += ",\"error\":";
  common::append_json_string(s, error_);
  s += ",\"ingest_bytes\":" + std::to_string(ingest_bytes_);
  s += ",\"ingest_ms\":" + std::to_string(ingest_seconds_ * 1000.0);
  s += ",\"selected_machine\":";
  common::append_json_string(s, selected_machine_);
  s += ",\"batch\":" + batch_json();
  s += ",\"route\":";
  common::append_json_string(s, route_);
  s += "}";
  return s;
}

}  // namespace cmdcast::client
