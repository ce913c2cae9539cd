// What the UI says in words, apart from ImGui so that it can be tested alone: routes (deep
// links, with line links #/executions/ID/L5 and /L5-L9), times (the time column, RFC 3339),
// the window title and the notification at the end of a run.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include "cmdcast/common/protocol.hpp"
#include "cmdcast/common/rfc3339.hpp"

namespace cmdcast::client {

/// A range of output lines, 1-based and inclusive, as line links name them.
struct line_range {
  std::uint64_t first = 0, last = 0;
  bool operator==(const line_range&) const = default;
};

/// A deep link: "#/executions/ID", "#/executions/ID/L5", "#/executions/ID/L5-L9",
/// "#/machines/ID", "#/batches/ID" (a fleet run). Anything else is kind none.
struct route {
  enum class kind { none, execution, machine, batch };
  kind what = kind::none;
  std::string id;
  std::optional<line_range> lines;  // executions only
  bool operator==(const route&) const = default;
};
route parse_route(std::string_view hash);
/// "#/executions/ID", with "/L5" or "/L5-L9" for lines.
std::string execution_route(const std::string& id, const std::optional<line_range>& lines = std::nullopt);

/// "#/batches/ID".
std::string batch_route(const std::string& id);

using common::parse_rfc3339_ms;
/// The time column: "+MM:SS.mmm" since the start (minutes go on past 59), and the wall clock
/// "HH:MM:SS" in local time.
std::string elapsed_label(std::int64_t ms);
std::string clock_label(std::int64_t epoch_ms);
/// "12s", "1m12s", "2h03m".
std::string short_duration(std::int64_t ms);

/// "exited 0", "exited 3", "killed by TERM", "cancelled", "timed out", "rejected", ...
std::string exit_summary(const common::exit_event& e);

/// What a watched execution is doing, for its title.
enum class run_phase { waiting, running, succeeded, failed };
/// "⟳ 42% apt_upgrade · pihole" (the percent only when known), "✓ ...", "✗ ...", "⏸ ...".
std::string title_text(run_phase phase, std::optional<double> percent, const std::string& action,
                       const std::string& machine);
/// A fleet run's title: "⟳ 3/5 apt_upgrade · web" while it runs (3 of 5 machines ended),
/// "✓ ..." when every machine succeeded, "✗ ..." otherwise (`state`: the batch's).
std::string batch_title_text(const std::string& state, std::int64_t ended, std::int64_t total,
                             const std::string& action, const std::string& group);
/// "apt_upgrade on pihole: exited 0 (1m12s)".
std::string finish_notice(const std::string& action, const std::string& machine, const common::exit_event& e);

}  // namespace cmdcast::client
