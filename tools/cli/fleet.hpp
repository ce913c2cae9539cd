// The pure parts of a fleet run in the CLI (`cmdcast run SERVER @GROUP ...`, `cmdcast watch` of a
// batch): each output line prefixed with its machine, a colour per machine, the progress lines
// kept at the bottom of a terminal, the summary table and the exit status. No I/O: unit-tested.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "cmdcast/common/protocol.hpp"

namespace cmdcast::cli {

/// Whether to colour what goes to a stream: only a terminal, and not with $NO_COLOR set to
/// anything but "" (no-color.org) or $TERM=dumb. `no_color` and `term` are the variables'
/// values, nullptr when unset.
bool use_colour(bool is_tty, const char* no_color, const char* term);

/// The SGR sequence of the `index`th machine's colour: distinct for neighbours, repeating after
/// the palette (12 colours, none of them red, which reads as an error).
std::string machine_colour(std::size_t index);
std::size_t palette_size();

/// "box | " (`width`: the name padded to it, 0 for none), its name and bar coloured when
/// `colour` is not empty.
std::string machine_prefix(std::string_view machine, std::size_t width, std::string_view colour);

/// One machine's stream cut into lines: a partial line is held until its end comes (or until
/// `flush`, at the end of the run), so lines of different machines never mix.
class line_splitter {
 public:
  /// Appends each complete line of `data` (held part first) to `out`, `prefix` before each.
  /// A partial line longer than `max_partial` bytes is let out as a line of its own.
  void feed(std::string_view data, std::string_view prefix, std::string& out, std::size_t max_partial = 65536);
  /// The held partial line, if any, with a newline.
  void flush(std::string_view prefix, std::string& out);
  bool holding() const { return !partial_.empty(); }

 private:
  std::string partial_;
};

/// The exit status of a signal's name ("TERM": 15); 0 for a name it does not know.
int signal_number(std::string_view name);

/// A machine of a batch as the follower knows it.
struct member_outcome {
  std::string machine_id;
  std::string state;  // an exit state once ended ("exited", "failed", ...), else "queued" or "running"
  bool ended = false;
  std::optional<int> code;
  std::optional<std::string> signal;
  std::optional<std::int64_t> duration_ms;
};

/// Its exit status: 0 for exited 0; the code for another; 128+N when signal N ended it (state
/// exited: not the server's own TERM of a cancel or timeout); 1 for the rest (failed, cancelled,
/// timed out or lost without a code, or not ended).
int member_status(const member_outcome& m);
/// The fleet run's: 0 when every machine succeeded, else the highest of theirs.
int batch_exit_status(const std::vector<member_outcome>& members);

/// The table printed at the end: MACHINE STATE EXIT DURATION, one row per machine, then a line
/// with the counts ("4 succeeded, 1 failed").
std::string format_batch_summary(const std::vector<member_outcome>& members);

/// A running machine, for the lines kept at the bottom of a terminal.
struct running_member {
  std::string machine_id;
  std::string colour;                // its prefix colour, or ""
  bool has_progress = false;         // a progress event came
  std::optional<double> percent;     // null: busy, no measure
  std::string phase;
  std::chrono::milliseconds elapsed{0};
};

/// The lines kept at the bottom of a terminal: one per running machine (a bar, the percent, the
/// time it has run, the phase), then one with the batch's counts; each cut to `columns`, at most
/// `max_lines` in all (the rest of the running machines summed up in one line).
std::vector<std::string> format_progress_block(const std::vector<running_member>& running,
                                               const common::batch_counts& counts, std::size_t name_width,
                                               std::size_t columns, std::size_t max_lines);

/// "EXEC:SEQ,..." (for `after`): each execution with a seq seen (>= 0), in the order given.
std::string batch_after(const std::vector<std::pair<std::string, common::seq_t>>& last_seqs);

}  // namespace cmdcast::cli
