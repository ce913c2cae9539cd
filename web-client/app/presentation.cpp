#include "app/presentation.hpp"

#include <charconv>
#include <cmath>
#include <cstdio>
#include <ctime>

namespace cmdcast::client {
namespace {

/// A decimal number of exactly `digits` digits at text[at..], or -1.
int digits_at(std::string_view text, std::size_t at, std::size_t digits) {
  if (at + digits > text.size()) return -1;
  int v = 0;
  for (std::size_t i = at; i < at + digits; ++i) {
    if (text[i] < '0' || text[i] > '9') return -1;
    v = v * 10 + (text[i] - '0');
  }
  return v;
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's days_from_civil).
std::int64_t days_from_civil(std::int64_t y, unsigned m, unsigned d) {
  y -= m <= 2;
  const std::int64_t era = (y >= 0 ? y : y - 399) / 400;
  const auto yoe = static_cast<unsigned>(y - era * 400);
  const unsigned doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
  const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + static_cast<std::int64_t>(doe) - 719468;
}

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

std::optional<std::int64_t> parse_rfc3339_ms(std::string_view s) {
  // YYYY-MM-DDTHH:MM:SS[.fff...](Z|+HH:MM|-HH:MM)
  const int year = digits_at(s, 0, 4), month = digits_at(s, 5, 2), day = digits_at(s, 8, 2);
  const int hour = digits_at(s, 11, 2), minute = digits_at(s, 14, 2), second = digits_at(s, 17, 2);
  if (year < 0 || month < 1 || month > 12 || day < 1 || day > 31 || hour < 0 || hour > 23 || minute < 0 ||
      minute > 59 || second < 0 || second > 60 || s[4] != '-' || s[7] != '-' || (s[10] != 'T' && s[10] != 't' && s[10] != ' ') ||
      s[13] != ':' || s[16] != ':') {
    return std::nullopt;
  }
  std::size_t i = 19;
  std::int64_t ms = 0;
  if (i < s.size() && s[i] == '.') {
    ++i;
    int scale = 100, count = 0;
    while (i < s.size() && s[i] >= '0' && s[i] <= '9') {
      ms += (s[i] - '0') * scale;
      scale /= 10;
      ++i;
      ++count;
    }
    if (count == 0) return std::nullopt;
  }
  std::int64_t offset_min = 0;
  if (i < s.size() && (s[i] == 'Z' || s[i] == 'z')) {
    ++i;
  } else if (i < s.size() && (s[i] == '+' || s[i] == '-')) {
    const int oh = digits_at(s, i + 1, 2), om = digits_at(s, i + 4, 2);
    if (oh < 0 || om < 0 || s[i + 3] != ':') return std::nullopt;
    offset_min = (oh * 60 + om) * (s[i] == '-' ? -1 : 1);
    i += 6;
  } else {
    return std::nullopt;
  }
  if (i != s.size()) return std::nullopt;
  const std::int64_t days = days_from_civil(year, static_cast<unsigned>(month), static_cast<unsigned>(day));
  const std::int64_t seconds = days * 86400 + hour * 3600 + minute * 60 + second - offset_min * 60;
  return seconds * 1000 + ms;
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
