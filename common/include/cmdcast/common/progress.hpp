// Progress parsers: each reads one family of command output (apt, ...) and tracks how far the
// command has come. They see the same text the watchers get, in chunks of any size. Percent
// never goes backwards within a run and is empty (busy) where the output gives no measure.
// Not thread-safe: one parser per execution.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace cmdcast::common {

struct progress_state {
  std::optional<double> percent;  // 0..100, one decimal; empty: busy
  std::string phase;              // what is happening, e.g. "Unpacking tmux"
  bool operator==(const progress_state&) const = default;
};

class progress_parser {
 public:
  virtual ~progress_parser();

  /// Reads output; returns true when current() changed.
  bool feed(std::string_view text);
  /// The command ended; a success reaches 100. Returns true when current() changed.
  bool finish(bool success);
  const progress_state& current() const { return current_; }

 protected:
  progress_parser() = default;
  /// One line of output with escape sequences removed; lines end at \n or \r.
  virtual void on_line(std::string_view line) = 0;
  /// Reports a percent (clamped so it never decreases) and a phase; empty phase keeps the old.
  void report(std::optional<double> percent, std::string_view phase = {});
  std::optional<double> percent_so_far() const { return current_.percent; }

 private:
  void end_line();

  progress_state current_;
  bool changed_ = false;
  std::string line_;
  enum class escape : unsigned char { none, esc, csi, string, string_esc } escape_ = escape::none;
};

/// The families a parser exists for ("apt").
const std::vector<std::string_view>& progress_families();
/// A parser for `family`, or null when there is none.
std::unique_ptr<progress_parser> make_progress_parser(std::string_view family);

}  // namespace cmdcast::common
