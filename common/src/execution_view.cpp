#include "cmdcast/common/execution_view.hpp"

#include <algorithm>

namespace cmdcast::common {

execution_view::execution_view(std::string execution_id, transcript_limits limits)
    : id_(std::move(execution_id)), output_(limits) {}

bool execution_view::apply(const event& e) {
  if (const auto* w = std::get_if<watchers_event>(&e)) {
    watchers_ = w->count;
    return true;
  }
  if (const auto* q = std::get_if<queued_event>(&e)) {
    if (started_ || exit_) return false;
    queued_ = q->position;
    awaiting_.reset();
    return true;
  }
  if (const auto* a = std::get_if<awaiting_approval_event>(&e)) {
    if (started_ || exit_) return false;
    awaiting_ = *a;
    queued_.reset();
    return true;
  }
  const auto seq = event_seq(e);
  if (!seq) return false;  // an error event is the transport's business
  if (*seq <= last_seq_) return false;
  if (const auto* s = std::get_if<started_event>(&e)) {
    if (s->execution_id != id_) return false;
    started_ = *s;
    queued_.reset();
    awaiting_.reset();
  } else if (const auto* o = std::get_if<output_event>(&e)) {
    last_t_ = std::max(last_t_, o->t);
    output_.append(o->stream, o->data, o->t);
    if (!o->data.empty()) at_line_start_ = o->data.back() == '\n';
  } else if (const auto* p = std::get_if<progress_event>(&e)) {
    progress_ = *p;
    last_t_ = std::max(last_t_, p->t);
  } else if (const auto* x = std::get_if<exit_event>(&e)) {
    exit_ = *x;
    queued_.reset();
    awaiting_.reset();
  } else if (const auto* g = std::get_if<gap_event>(&e)) {
    // Say so in the output itself, where the missing part would have been.
    const auto missed = g->missed_to - std::max(g->missed_from, last_seq_ + 1) + 1;
    missed_ += missed;
    output_.append(output_stream::err, std::string(at_line_start_ ? "" : "\n") + "[cmdcast: " +
                                           std::to_string(missed) + " events of output are no longer held by the server]\n",
                   last_t_);
    at_line_start_ = true;
  }
  last_seq_ = *seq;
  return true;
}

void execution_view::end_from_record(const execution_record& r) {
  if (finished() || r.execution_id != id_) return;
  const auto state = parse_exit_state(r.state);
  if (!state) return;
  exit_event e;
  e.seq = last_seq_ + 1;
  e.code = r.exit_code;
  e.signal = r.signal;
  e.state = *state;
  apply(e);
}

std::vector<std::string> execution_view::tail(std::size_t n) const {
  std::vector<std::string> out;
  const std::size_t size = output_.size();
  for (std::size_t i = size > n ? size - n : 0; i < size; ++i) out.emplace_back(output_.line(i).text);
  return out;
}

std::vector<std::int64_t> execution_view::tail_times(std::size_t n) const {
  std::vector<std::int64_t> out;
  const std::size_t size = output_.size();
  for (std::size_t i = size > n ? size - n : 0; i < size; ++i) out.push_back(output_.line(i).t);
  return out;
}

std::optional<std::size_t> execution_view::index_of_line(std::uint64_t n) const {
  if (n <= output_.dropped_lines()) return std::nullopt;
  const std::uint64_t index = n - output_.dropped_lines() - 1;
  if (index >= output_.size()) return std::nullopt;
  return static_cast<std::size_t>(index);
}

std::string execution_view::plain_text() const {
  std::string out;
  for (std::size_t i = 0; i < output_.size(); ++i) {
    out += output_.line(i).text;
    if (!output_.line(i).wrapped) out += '\n';
  }
  return out;
}

}  // namespace cmdcast::common
