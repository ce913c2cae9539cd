// What the audit keeps of one execution's output: the first `head_bytes` and the last
// `tail_bytes` of it (counted in output text, rounded up to whole events, which a fast stream
// makes up to a read of 1 MiB; the other events ride along), written to the
// store in batches while the command runs. Between two flushes the tail lives in memory, so
// output that enters and leaves the tail window in that time never touches the disk: a fast
// stream costs the store at most head + tail bytes a flush.
//
// Data counts as written only once the audit thread says it is: until then (a locked
// database, say) it stays here, within the same head and tail bounds, and the next flush
// sends it again. Used on the execution's executor only.
#pragma once

#include <deque>
#include <memory>
#include <string>
#include <vector>

#include "audit/audit_store.hpp"

namespace cmdcast::server {

class output_audit : public std::enable_shared_from_this<output_audit> {
 public:
  /// Saves complete on `executor`, the one this is used on.
  output_audit(audit_store& store, net::any_io_executor executor, std::size_t head_bytes, std::size_t tail_bytes)
      : store_(store), executor_(std::move(executor)), head_limit_(head_bytes), tail_limit_(tail_bytes) {}

  /// One sequenced event; `output_bytes` is the size of its output text (0 for the others).
  void add(common::seq_t seq, std::shared_ptr<const std::string> frame, std::size_t output_bytes);
  /// Sends the record and what the store does not have yet to the audit thread. While a save
  /// is under way, another waits for the next flush; `last` (the execution has ended) goes at
  /// once, after it, and is retried until written.
  void flush(const common::execution_record& record, bool last);
  /// Whether some output has been cut (it is then missing from the store, not from the stream).
  bool truncated() const { return truncated_; }
  /// Whether something added is not known to be written yet.
  bool dirty() const { return confirmed_ != added_; }

 private:
  struct held {
    common::seq_t seq;
    std::shared_ptr<const std::string> frame;
    std::size_t output_bytes;
  };
  /// What a save carried, marked written once it is.
  struct sent {
    std::uint64_t added;
    common::seq_t head_to, tail_to, deleted_to;
  };
  void saved(const sent& s, bool written);

  audit_store& store_;
  net::any_io_executor executor_;
  std::size_t head_limit_, tail_limit_;
  std::size_t head_used_ = 0, tail_used_ = 0;
  bool head_full_ = false, truncated_ = false;
  std::uint64_t added_ = 0, confirmed_ = 0;  // events added; how many of those are written
  int saving_ = 0;                            // saves under way
  std::vector<held> head_pending_;     // head events not yet written
  common::seq_t head_last_ = -1;       // the last seq of the head
  std::deque<held> tail_;              // the tail window
  common::seq_t tail_written_ = -1;    // the last tail seq written
  common::seq_t tail_dropped_to_ = -1;  // tail seqs up to this one have left the window
  common::seq_t deleted_to_ = -1;       // and have been deleted from the store up to this one
};

}  // namespace cmdcast::server
