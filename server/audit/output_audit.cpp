#include "audit/output_audit.hpp"

namespace cmdcast::server {

void output_audit::add(common::seq_t seq, std::shared_ptr<const std::string> frame, std::size_t output_bytes) {
  dirty_ = true;
  if (!head_full_ && (head_used_ < head_limit_ || output_bytes == 0)) {
    head_used_ += output_bytes;
    head_last_ = seq;
    head_pending_.push_back({seq, std::move(frame), output_bytes});
    return;
  }
  head_full_ = true;
  tail_used_ += output_bytes;
  tail_.push_back({seq, std::move(frame), output_bytes});
  // Drop from the front what the window does not need to hold its bytes (and never the newest
  // event: the exit event is never cut).
  while (tail_.size() > 1 && tail_used_ - tail_.front().output_bytes >= tail_limit_) {
    tail_used_ -= tail_.front().output_bytes;
    tail_dropped_to_ = tail_.front().seq;
    tail_.pop_front();
    truncated_ = true;
  }
}

void output_audit::flush(const common::execution_record& record) {
  std::vector<event_ref> add;
  for (const auto& h : head_pending_) add.push_back({h.seq, *h.frame});
  for (const auto& h : tail_) {
    if (h.seq > tail_written_) add.push_back({h.seq, *h.frame});
  }
  std::optional<std::pair<common::seq_t, common::seq_t>> drop;
  if (tail_dropped_to_ > deleted_to_) drop = std::pair{std::max(head_last_, deleted_to_) + 1, tail_dropped_to_};
  auto r = record;
  r.output_truncated = truncated_;
  if (store_.save(r, add, drop)) {
    head_pending_.clear();
    if (!tail_.empty()) tail_written_ = tail_.back().seq;
    deleted_to_ = tail_dropped_to_;
  }
  dirty_ = false;
}

}  // namespace cmdcast::server
