#include "app/presentation.hpp"

#include <charconv>
#include <cmath>
#include <cstdio>
#include <ctime>

namespace cmdcast::client {
namespace {

/// "L5" at the start of text: 5, and how many characters it took.
std::optional<std::pair<std::uint64_t, std::size_t>> line_number_at(std::string_view text) {
  if (text.size() < 2 || text[0] != 'L') return std::nullopt;
  std::uint64_t n = 0;
  const auto [end, ec] = std::from_chars(text.data() + 1, text.data() + text.size(), n);
  if (ec != std::errc{} || n == 0 || end == text.data() + 1) return std::nullopt;
  return std::pair{n, static_cast<std::size_t>(end - text.data())};
}

}  // namespace

route parse_route(std::string_view hash) {
  constexpr std::string_view executions = "#/executions/", machines = "#/machines/", batches = "#/batches/";
  route r;
  if (hash.starts_with(batches) && hash.size() > batches.size()) {
    r.id = hash.substr(batches.size());
    if (r.id.find('/') != std::string::npos) r.id.resize(r.id.find('/'));
    if (!r.id.empty()) r.what = route::kind::batch;
    return r;
  }
  if (hash.starts_with(machines) && hash.size() > machines.size()) {
    r.what = route::kind::machine;
    r.id = hash.substr(machines.size());
    return r;
  }
  if (!hash.starts_with(executions) || hash.size() == executions.size()) return r;
  std::string_view rest = hash.substr(executions.size());
  const auto slash = rest.find('/');
  r.what = route::kind::execution;
  r.id = rest.substr(0, slash);
  if (slash == std::string_view::npos || r.id.empty()) {
    if (r.id.empty()) r.what = route::kind::none;
    return r;
  }
  // Lines: "L5" or "L5-L9" (or "L5-9"); a malformed one opens the execution without it.
  const std::string_view lines = rest.substr(slash + 1);
  const auto first = line_number_at(lines);
  if (!first) return r;
  line_range range{first->first, first->first};
  std::string_view tail = lines.substr(first->second);
  if (tail.starts_with('-')) {
    tail.remove_prefix(1);
    std::string with_l = tail.starts_with('L') ? std::string(tail) : "L" + std::string(tail);
    const auto last = line_number_at(with_l);
    if (!last || last->second != with_l.size()) return r;
    range.last = last->first;
  } else if (!tail.empty()) {
    return r;
  }
  if (range.last < range.first) std::swap(range.first, range.last);
  r.lines = range;
  return r;
}

std::string execution_route(const std::string& id, const std::optional<line_range>& lines) {
  std::string s = "#/executions/" + id;
  if (lines) {
    s += "/L" + std::to_string(lines->first);
    if (lines->last != lines->first) s += "-L" + std::to_string(lines->last);
  }
  return s;
}

std::string elapsed_label(std::int64_t ms) {
  if (ms < 0) ms = 0;
  char buf[48];
  std::snprintf(buf, sizeof buf, "+%02lld:%02lld.%03lld", static_cast<long long>(ms / 60000),
                static_cast<long long>(ms / 1000 % 60), static_cast<long long>(ms % 1000));
  return buf;
}

std::string clock_label(std::int64_t epoch_ms) {
  const std::time_t t = static_cast<std::time_t>(epoch_ms >= 0 ? epoch_ms / 1000 : (epoch_ms - 999) / 1000);
  std::tm tm{};
  localtime_r(&t, &tm);
  char buf[32];
  std::snprintf(buf, sizeof buf, "%02d:%02d:%02d", tm.tm_hour, tm.tm_min, tm.tm_sec);
  return buf;
}

std::string short_duration(std::int64_t ms) {
  const std::int64_t s = std::max<std::int64_t>(0, ms) / 1000;
  char buf[48];
  if (s < 60) {
    std::snprintf(buf, sizeof buf, "%llds", static_cast<long long>(s));
  } else if (s < 3600) {
    std::snprintf(buf, sizeof buf, "%lldm%02llds", static_cast<long long>(s / 60), static_cast<long long>(s % 60));
  } else {
    std::snprintf(buf, sizeof buf, "%lldh%02lldm", static_cast<long long>(s / 3600),
                  static_cast<long long>(s / 60 % 60));
  }
  return buf;
}

std::string exit_summary(const common::exit_event& e) {
  switch (e.state) {
    case common::exit_state::exited:
      return e.code ? "exited " + std::to_string(*e.code) : "killed by " + e.signal.value_or("a signal");
    case common::exit_state::timed_out: return "timed out";
    default: return std::string(common::to_string(e.state));
  }
}

std::string title_text(run_phase phase, std::optional<double> percent, const std::string& action,
                       const std::string& machine) {
  std::string s;
  switch (phase) {
    case run_phase::waiting: s = "⏸ "; break;
    case run_phase::running:
      s = "⟳ ";
      if (percent) s += std::to_string(static_cast<int>(std::floor(*percent))) + "% ";
      break;
    case run_phase::succeeded: s = "✓ "; break;
    case run_phase::failed: s = "✗ "; break;
  }
  return s + action + " · " + machine;
}

std::string batch_route(const std::string& id) { return "#/batches/" + id; }

std::string batch_title_text(const std::string& state, std::int64_t ended, std::int64_t total,
                             const std::string& action, const std::string& group) {
  std::string s;
  if (state == "running" || state.empty()) {
    s = "⟳ " + std::to_string(ended) + "/" + std::to_string(total) + " ";
  } else {
    s = state == "succeeded" ? "✓ " : "✗ ";
  }
  return s + action + " · " + group;
}

std::string finish_notice(const std::string& action, const std::string& machine, const common::exit_event& e) {
  return action + " on " + machine + ": " + exit_summary(e) + " (" + short_duration(e.duration_ms) + ")";
}

}  // namespace cmdcast::client
