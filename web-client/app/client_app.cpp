#include "app/client_app.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>

#include <boost/json.hpp>

#include "cmdcast/common/codec.hpp"

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
  if (view_ && !view_->finished()) connect();
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
  if (!view_) route_ = "#/machines/" + id;
}

void client_app::open_route(const std::string& hash) {
  const auto r = parse_route(hash);
  if (r.what == route::kind::execution) {
    attach(r.id);
    // A link to lines scrolls there; the same lines again (the address bar catching up) do not.
    if (r.lines != line_link_) set_line_link(r.lines, true);
  } else if (r.what == route::kind::machine) {
    select_machine(r.id);
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
  view_ = std::make_unique<common::execution_view>(id);
  line_link_.reset();
  record_.reset();
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
  if (view_ && view_->execution_id() == execution_id) return;
  pending_run_.reset();
  show_execution(execution_id);
  connect();
}

void client_app::run(const std::string& machine_id, const std::string& action,
                     const std::map<std::string, std::string>& params) {
  ++generation_;
  socket_.reset();
  view_.reset();
  error_.clear();
  pending_run_ = std::pair{machine_id, common::encode(common::run_request{action, params, std::nullopt})};
  // An action that may wait (for the machine, or for an approval) has no started event to
  // learn its id from until it runs: it is posted, then watched like any other.
  for (const auto& m : machines_) {
    if (m.id != machine_id) continue;
    for (const auto& a : m.actions) {
      if (a.name == action && (a.approval || a.exclusive)) return post_run(false);
    }
  }
  connect_socket("/machines/" + machine_id + "/commands/stream", pending_run_->second);
  if (!socket_) post_run();  // no WebSocket in this client
}

void client_app::post_run(bool fallback) {
  if (!pending_run_) return;
  const auto [machine, body] = *pending_run_;
  const auto gen = ++generation_;
  transport_.request("POST", "/machines/" + machine + "/commands", body, [this, gen, fallback](http_answer a) {
    if (gen != generation_) return;
    pending_run_.reset();
    if (unauthorized(a)) return;
    auto accepted = common::decode_run_accepted(a.body);
    if (a.status != 202 || !accepted) return fail(error_message(a, "run"));
    show_execution(accepted->execution_id);
    seen_unfinished_ = true;  // our own run: its end is news
    refresh_executions();
    if (!fallback) return connect();
    degraded_ = true;  // the WebSocket just failed: poll this one
    poll();
  });
}

void client_app::cancel() {
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
  apply_event_text(text);
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
  // 0.25 s, 0.5 s, 1 s, ... at most 4 s between attempts.
  const double delay = std::min(4.0, 0.25 * std::pow(2.0, std::min(attempts_, 8)));
  ++attempts_;
  retry_at_ = now_ + delay;
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

std::string client_app::watched_action() const {
  if (!view_) return "";
  if (view_->started()) return view_->started()->action_type;
  return record_ ? record_->action_type : "";
}

std::string client_app::watched_machine() const {
  if (!view_) return "";
  const std::string id = view_->started() ? view_->started()->machine_id : record_ ? record_->machine_id : "";
  for (const auto& m : machines_) {
    if (m.id == id && !m.name.empty()) return m.name;
  }
  return id;
}

bool client_app::waiting() const {
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
  return view_ ? "/executions/" + view_->execution_id() + "/output?format=" + format : "";
}

void client_app::download(const std::string& format, std::function<void(http_answer)> done) {
  if (!view_) return;
  transport_.request("GET", output_path(format), "", std::move(done));
}

bool client_app::animating() const {
  if (!view_ || view_->finished()) return false;
  return mode_ == link_mode::disconnected || (view_->progress() && !view_->progress()->percent);
}

std::string client_app::state_json() const {
  std::string s = "{\"transport\":";
  common::append_json_string(s, to_string(mode_));
  s += ",\"execution_id\":";
  if (view_) {
    common::append_json_string(s, view_->execution_id());
  } else {
    s += "null";
  }
  s += ",\"lines\":" + std::to_string(view_ ? view_->output().size() : 0);
  s += ",\"tail\":[";
  if (view_) {
    const auto tail = view_->tail(state_tail_lines);
    for (std::size_t i = 0; i < tail.size(); ++i) {
      if (i) s += ',';
      common::append_json_string(s, tail[i]);
    }
  }
  s += "],\"tail_times\":[";
  if (view_) {
    const auto times = view_->tail_times(state_tail_lines);
    for (std::size_t i = 0; i < times.size(); ++i) {
      if (i) s += ',';
      s += std::to_string(times[i]);
    }
  }
  s += "],\"started_at\":";
  if (view_ && view_->started()) {
    common::append_json_string(s, view_->started()->started_at);
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
  s += view_ && view_->queued_position() ? std::to_string(*view_->queued_position()) : "null";
  s += ",\"awaiting_approval\":";
  if (view_ && view_->awaiting_approval()) {
    s += "{\"requested_by\":";
    common::append_json_string(s, view_->awaiting_approval()->requested_by);
    s += ",\"expires_at\":";
    common::append_json_string(s, view_->awaiting_approval()->expires_at);
    s += "}";
  } else {
    s += "null";
  }
  s += ",\"can_approve\":";
  s += can_approve() ? "true" : "false";
  s += ",\"progress\":";
  const auto* p = view_ && view_->progress() ? &*view_->progress() : nullptr;
  s += p && p->percent ? std::to_string(*p->percent) : "null";
  s += ",\"phase\":";
  common::append_json_string(s, p ? p->phase : "");
  s += ",\"exit\":";
  s += view_ && view_->exit() ? common::encode(common::event{*view_->exit()}) : "null";
  s += ",\"watchers\":";
  s += view_ && view_->watchers() ? std::to_string(*view_->watchers()) : "null";
  s += ",\"missed_events\":" + std::to_string(view_ ? view_->missed_events() : 0);
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
  s += ",\"route\":";
  common::append_json_string(s, route_);
  s += "}";
  return s;
}

}  // namespace cmdcast::client
