#include "app/batch_view.hpp"

#include <algorithm>

namespace cmdcast::client {

std::string_view to_string(batch_filter f) {
  switch (f) {
    case batch_filter::all: return "all";
    case batch_filter::failed: return "failed";
    case batch_filter::running: return "running";
  }
  return "all";
}

batch_view::batch_view(std::string batch_id) : id_(std::move(batch_id)) {}

batch_view::member_state* batch_view::find(const std::string& execution_id) {
  const auto it = members_.find(execution_id);
  return it == members_.end() ? nullptr : &it->second;
}

const batch_view::member_state* batch_view::find(const std::string& execution_id) const {
  const auto it = members_.find(execution_id);
  return it == members_.end() ? nullptr : &it->second;
}

batch_view::member_state& batch_view::add(const std::string& machine_id, const std::string& execution_id) {
  if (auto* m = find(execution_id)) return *m;
  order_.push_back(execution_id);
  auto& m = members_[execution_id];
  m.machine_id = machine_id;
  m.view = std::make_unique<common::execution_view>(execution_id);
  return m;
}

void batch_view::apply_record(const common::batch_record& r) {
  if (r.batch_id != id_) return;
  for (const auto& e : r.executions) add(e.machine_id, e.execution_id).recorded = e;
  // The stream's summaries are newer than a record, except the record of a batch that ended.
  if (state_.empty() || (r.state != "running" && state_ == "running")) {
    state_ = r.state;
    counts_ = r.counts;
  }
  record_ = r;
  ++version_;
}

bool batch_view::apply(const common::tagged_event& t) {
  if (const auto* b = std::get_if<common::batch_event>(&t.e)) {
    if (b->batch_id != id_ && !b->batch_id.empty()) return false;
    state_ = b->state;
    counts_ = b->counts;
    ++version_;
    return true;
  }
  if (t.execution_id.empty()) return false;
  // A member not in the record yet (the record comes by another request) is added in the
  // order its events arrive; the record puts nothing twice.
  member_state* m = find(t.execution_id);
  if (!m) {
    if (record_) return false;  // the record names every member: this one is not of the batch
    m = &add(t.machine_id, t.execution_id);
  }
  if (const auto* err = std::get_if<common::error_event>(&t.e)) {
    m->error = err->message;
    ++version_;
    return true;
  }
  if (!m->view->apply(t.e)) return false;
  ++version_;
  return true;
}

std::string batch_view::resume_after() const {
  std::string out;
  for (const auto& id : order_) {
    const auto& m = members_.at(id);
    if (m.view->resume_after() < 0) continue;
    if (!out.empty()) out += ',';
    out += id + ":" + std::to_string(m.view->resume_after());
  }
  return out;
}

batch_row batch_view::row_of(const std::string& execution_id, const member_state& m) const {
  batch_row r;
  r.machine_id = m.machine_id;
  r.execution_id = execution_id;
  const auto& v = *m.view;
  const auto& rec = m.recorded;
  if (const auto& x = v.exit()) {
    r.state = std::string(common::to_string(x->state));
    r.exit_code = x->code;
    r.duration_ms = x->duration_ms;
    r.ended = true;
    r.failed = !(x->state == common::exit_state::exited && x->code == 0) && x->state != common::exit_state::cancelled;
  } else if (rec && common::parse_exit_state(rec->state)) {  // ended, its exit not here yet
    r.state = rec->state;
    r.exit_code = rec->exit_code;
    r.ended = true;
    r.failed = !(rec->state == "exited" && rec->exit_code == 0) && rec->state != "cancelled";
  } else if (v.started()) {
    r.state = "running";
    r.duration_ms = v.last_t();
  } else {
    r.state = rec ? rec->state : "queued";
  }
  if (const auto& p = v.progress()) {
    r.progress = p->percent;
    r.busy = !p->percent && !r.ended;
  } else if (rec) {
    r.progress = rec->progress;
  }
  // The last line with something on it (output often ends with a newline).
  const auto& out = v.output();
  for (std::size_t i = out.size(), looked = 0; i > 0 && looked < 8; --i, ++looked) {
    const auto text = out.line(i - 1).text;
    if (text.find_first_not_of(" \t") == std::string_view::npos) continue;
    r.last_line = std::string(text);
    break;
  }
  if (r.last_line.empty()) r.last_line = m.error;
  return r;
}

std::vector<batch_row> batch_view::rows(batch_filter f) const {
  std::vector<batch_row> out;
  out.reserve(order_.size());
  for (const auto& id : order_) {
    auto r = row_of(id, members_.at(id));
    if (f == batch_filter::failed && !r.failed) continue;
    if (f == batch_filter::running && r.ended) continue;
    out.push_back(std::move(r));
  }
  return out;
}

std::optional<batch_row> batch_view::row(const std::string& execution_id) const {
  const auto* m = find(execution_id);
  if (!m) return std::nullopt;
  return row_of(execution_id, *m);
}

const common::execution_view* batch_view::member(const std::string& execution_id) const {
  const auto* m = find(execution_id);
  return m ? m->view.get() : nullptr;
}

std::string batch_view::execution_of(const std::string& machine_id) const {
  for (const auto& id : order_) {
    if (members_.at(id).machine_id == machine_id) return id;
  }
  return "";
}

std::vector<std::string> batch_view::failed_machines() const {
  std::vector<std::string> out;
  for (const auto& r : rows(batch_filter::failed)) out.push_back(r.machine_id);
  return out;
}

}  // namespace cmdcast::client
