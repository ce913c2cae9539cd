// An execution's output as a file (GET /executions/{id}/output): its events, in order, turned
// into `text` (what a terminal finally shows: escape sequences removed, \r rewrites collapsed,
// by the clients' own transcript model), `ansi` (the output as received) or `ndjson` (the
// events themselves), each line optionally stamped with the wall-clock time its output was read.
// Pure: no I/O; the route feeds it frames as it gets them and writes what it appends.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "cmdcast/common/protocol.hpp"

namespace cmdcast::common {
class transcript;
}

namespace cmdcast::server {

enum class export_format : std::uint8_t { text, ansi, ndjson };
std::optional<export_format> parse_export_format(std::string_view name);

class output_export {
 public:
  /// `started`: the execution's started_at (times are started + t); a started event, if one
  /// comes, sets it too.
  output_export(export_format format, bool timestamps, std::chrono::system_clock::time_point started);
  ~output_export();
  output_export(const output_export&) = delete;
  output_export& operator=(const output_export&) = delete;

  /// Appends to `out` what the event in `frame` (its JSON) adds to the file. A gap stands as a
  /// line `[cmdcast: N bytes not kept]` (`gap_bytes`, when known) in text and ansi.
  void add(std::string_view frame, std::string& out, std::optional<std::uint64_t> gap_bytes = std::nullopt);
  /// The end: the last line, if it has no newline yet.
  void finish(std::string& out);

 private:
  void add_output(const common::output_event& e, std::string& out);
  /// A line of cmdcast's own (a gap), after the line under way.
  void note(std::string_view text, std::string& out);
  /// Appends the transcript's lines finished since the last call (`all`: the open one too).
  void take_text_lines(std::string& out, bool all);
  void stamp(std::int64_t t, std::string& out) const;

  export_format format_;
  bool timestamps_;
  std::chrono::system_clock::time_point started_;
  std::int64_t last_t_ = 0;  // of the last output
  // text: the transcript (it keeps each line's time), read line by line as lines finish.
  std::unique_ptr<common::transcript> transcript_;
  std::uint64_t written_lines_ = 0;  // counted from the first line ever (dropped ones included)
  bool continuing_ = false;          // the last line written wrapped: the next goes on with it
  // ansi: whether the next byte begins a line (for its time stamp).
  bool at_line_start_ = true;
};

}  // namespace cmdcast::server
