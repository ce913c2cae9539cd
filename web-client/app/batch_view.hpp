// What a client knows of one fleet run (a batch) it watches: the batch's record and summary,
// and for each machine an ordinary execution_view fed from the batch stream's tagged events,
// so that opening a machine's output shows every line it has had since the batch began, with
// nothing lost or shown twice across reconnects (each execution resumes from its own seq).
// Also the grid's rows, their filters, and which machines a re-run on the failed ones takes.
// Pure logic, no ImGui: unit-tested in tests/unit/batch_view_test.cpp.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "cmdcast/common/codec.hpp"
#include "cmdcast/common/execution_view.hpp"
#include "cmdcast/common/protocol.hpp"

namespace cmdcast::client {

/// The grid's filters: every machine, the ones that failed (the batch's `failed` count: any
/// end but exit 0 and cancelled), the ones not ended yet (running or waiting to start).
enum class batch_filter { all, failed, running };
std::string_view to_string(batch_filter f);

/// One row of the grid.
struct batch_row {
  std::string machine_id;
  std::string execution_id;
  /// "queued", "running", or how it ended ("exited", "failed", "cancelled", "timed_out", ...).
  std::string state;
  std::optional<int> exit_code;
  std::optional<double> progress;  // percent; empty: no measure (yet)
  bool busy = false;               // a progress parser says it works, without a measure
  std::optional<std::int64_t> duration_ms;  // its exit's, or the time of its last output while it runs
  std::string last_line;           // the last non-empty line of its output, as plain text
  bool ended = false;
  bool failed = false;  // ended other than exit 0 or cancelled
};

class batch_view {
 public:
  explicit batch_view(std::string batch_id);

  /// The record (GET /batches/{id}, or the 202 of a group run): its members and what they were
  /// doing then. Live events win over it for a member whose view has gone further.
  void apply_record(const common::batch_record& r);
  /// One event of the batch stream (or of a poll's answer). Returns false when it was dropped
  /// (already applied, or of an execution not in the batch).
  bool apply(const common::tagged_event& t);

  const std::string& batch_id() const { return id_; }
  const std::optional<common::batch_record>& record() const { return record_; }
  const std::string& state() const { return state_; }  // "running", "succeeded", "failed", "cancelled"
  const common::batch_counts& counts() const { return counts_; }
  /// Every execution has ended (the batch's state is no longer "running").
  bool finished() const { return !state_.empty() && state_ != "running"; }
  std::size_t size() const { return members_.size(); }
  /// How many have ended (for the title's "3/5").
  std::int64_t ended() const { return counts_.succeeded + counts_.failed + counts_.cancelled; }

  /// The `after` of a resume: "EXEC:SEQ,..." for each execution with events applied (empty
  /// when none has any yet: the stream then starts every execution from its first event).
  std::string resume_after() const;

  /// The rows, in the group's order, those the filter passes.
  std::vector<batch_row> rows(batch_filter f = batch_filter::all) const;
  std::optional<batch_row> row(const std::string& execution_id) const;
  /// A member's view (its whole output so far), null when it is not in the batch.
  const common::execution_view* member(const std::string& execution_id) const;
  /// The execution of a machine in this batch, empty when it has none.
  std::string execution_of(const std::string& machine_id) const;
  /// The machines whose execution failed, in the group's order (a re-run takes these).
  std::vector<std::string> failed_machines() const;
  /// Changes whenever what the grid shows does.
  std::uint64_t version() const { return version_; }

 private:
  struct member_state {
    std::string machine_id;
    std::unique_ptr<common::execution_view> view;
    std::optional<common::batch_member> recorded;  // from the last record
    std::string error;                             // an error event for it, if any
  };
  member_state* find(const std::string& execution_id);
  const member_state* find(const std::string& execution_id) const;
  member_state& add(const std::string& machine_id, const std::string& execution_id);
  batch_row row_of(const std::string& execution_id, const member_state& m) const;

  std::string id_;
  std::optional<common::batch_record> record_;
  std::string state_;
  common::batch_counts counts_;
  std::vector<std::string> order_;  // execution ids in the group's order
  std::map<std::string, member_state> members_;
  std::uint64_t version_ = 0;
};

}  // namespace cmdcast::client
