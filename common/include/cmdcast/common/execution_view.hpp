// What a client knows of one execution it watches, whatever carries the events (a WebSocket,
// long-polls, several of them across reconnects): the transcript of its output, progress,
// exit, watcher count, and the seq to resume from. Events it already has are dropped, so a
// reconnect with `after` never shows anything twice. Not thread-safe: the UI thread owns it.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "cmdcast/common/protocol.hpp"
#include "cmdcast/common/transcript.hpp"

namespace cmdcast::common {

class execution_view {
 public:
  explicit execution_view(std::string execution_id, transcript_limits limits = {});

  /// Applies one event. Returns false when it was dropped: a sequenced event at or before
  /// resume_after() (already applied), or an event for another execution.
  bool apply(const event& e);

  const std::string& execution_id() const { return id_; }
  /// The `after` to reconnect with: the last seq applied (-1: none yet).
  seq_t resume_after() const { return last_seq_; }
  const transcript& output() const { return output_; }
  const std::optional<started_event>& started() const { return started_; }
  const std::optional<progress_event>& progress() const { return progress_; }
  const std::optional<exit_event>& exit() const { return exit_; }
  std::optional<std::int64_t> watchers() const { return watchers_; }
  /// Before it runs: its place in the machine's queue (1 is next), or the approval it waits
  /// for (who asked, until when). Both end when it starts or ends.
  std::optional<std::int64_t> queued_position() const { return queued_; }
  const std::optional<awaiting_approval_event>& awaiting_approval() const { return awaiting_; }
  /// The `t` of the last output or progress applied (ms since started_at).
  std::int64_t last_t() const { return last_t_; }
  /// Events the server no longer held when asked for (gap events), in total.
  std::int64_t missed_events() const { return missed_; }
  bool finished() const { return exit_.has_value(); }

  /// Ends the view from the execution's record, for when its exit event is out of reach (the
  /// server lost its last events in a crash and marked it lost). No-op when finished already.
  void end_from_record(const execution_record& r);

  /// The last `n` lines as plain text (for tests and screen readers), and their times.
  std::vector<std::string> tail(std::size_t n) const;
  std::vector<std::int64_t> tail_times(std::size_t n) const;
  /// Line numbers as links use them: 1-based over the whole output, so the same line keeps
  /// its number while output grows and after the oldest lines are dropped. index_of_line:
  /// the transcript index of line number `n`, empty when it is not held (dropped, or not yet
  /// arrived).
  std::uint64_t line_number(std::size_t index) const { return output_.dropped_lines() + index + 1; }
  std::optional<std::size_t> index_of_line(std::uint64_t n) const;
  /// The whole output as plain text, one line per line.
  std::string plain_text() const;

 private:
  std::string id_;
  seq_t last_seq_ = -1;
  transcript output_;
  std::optional<started_event> started_;
  std::optional<progress_event> progress_;
  std::optional<exit_event> exit_;
  std::optional<std::int64_t> watchers_;
  std::optional<std::int64_t> queued_;
  std::optional<awaiting_approval_event> awaiting_;
  std::int64_t last_t_ = 0;
  std::int64_t missed_ = 0;
  bool at_line_start_ = true;  // the output so far ends a line
};

}  // namespace cmdcast::common
