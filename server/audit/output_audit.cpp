#include "audit/output_audit.hpp"

#include <algorithm>

namespace cmdcast::server {

void output_audit::add(common::seq_t seq, std::shared_ptr<const std::string> frame, std::size_t output_bytes) {
  ++added_;
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

void output_audit::flush(const common::execution_record& record, bool last) {
  // One save at a time keeps at most one copy of the pending data in flight; the last one
  // cannot wait (no flush follows it) and is queued behind the one under way.
  if (saving_ > 0 && !last) return;
  audit_save s;
  for (const auto& h : head_pending_) s.add.push_back({h.seq, h.frame});
  for (const auto& h : tail_) {
    if (h.seq > tail_written_) s.add.push_back({h.seq, h.frame});
  }
  if (tail_dropped_to_ > deleted_to_) s.drop = std::pair{std::max(head_last_, deleted_to_) + 1, tail_dropped_to_};
  s.record = record;
  s.record.output_truncated = truncated_;
  const sent what{added_, head_pending_.empty() ? -1 : head_pending_.back().seq,
                  tail_.empty() ? tail_written_ : tail_.back().seq, tail_dropped_to_};
  ++saving_;
  store_.async_save(std::move(s), last ? save_retry::until_written : save_retry::once, executor_,
                    [self = shared_from_this(), what](bool written) { self->saved(what, written); });
}

void output_audit::saved(const sent& s, bool written) {
  --saving_;
  // Not written: everything stays pending for the next flush.
  if (!written) return;
  std::erase_if(head_pending_, [&s](const held& h) { return h.seq <= s.head_to; });
  tail_written_ = std::max(tail_written_, s.tail_to);
  deleted_to_ = std::max(deleted_to_, s.deleted_to);
  confirmed_ = std::max(confirmed_, s.added);
}

}  // namespace cmdcast::server
