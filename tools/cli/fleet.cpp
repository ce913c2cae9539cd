#include "fleet.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "cli.hpp"

namespace cmdcast::cli {

bool use_colour(bool is_tty, const char* no_color, const char* term) {
  if (!is_tty) return false;
  if (no_color && *no_color) return false;
  if (term && std::string_view(term) == "dumb") return false;
  return true;
}

namespace {

// Foreground colours that read well on dark and light backgrounds alike; no red (errors).
constexpr const char* palette[] = {
    "\x1b[36m", "\x1b[35m", "\x1b[33m", "\x1b[32m", "\x1b[34m", "\x1b[96m",
    "\x1b[95m", "\x1b[93m", "\x1b[92m", "\x1b[94m", "\x1b[37m", "\x1b[90m",
};
constexpr const char* reset = "\x1b[0m";

/// `s` cut to `columns` as shown: escape sequences take no column, a UTF-8 character one.
std::string cut_to_columns(const std::string& s, std::size_t columns) {
  std::size_t shown = 0;
  bool escaped = false;
  for (std::size_t i = 0; i < s.size(); ++i) {
    const auto u = static_cast<unsigned char>(s[i]);
    if (u == 0x1b) {
      escaped = true;
      while (i < s.size() && !(s[i] >= '@' && s[i] <= '~' && s[i] != '[')) ++i;  // to the final byte
      continue;
    }
    if ((u & 0xC0) == 0x80) continue;  // a continuation byte
    if (shown == columns) return s.substr(0, i) + (escaped ? reset : "");
    ++shown;
  }
  return s;
}

}  // namespace

std::size_t palette_size() { return std::size(palette); }

std::string machine_colour(std::size_t index) { return palette[index % std::size(palette)]; }

std::string machine_prefix(std::string_view machine, std::size_t width, std::string_view colour) {
  std::string out;
  if (!colour.empty()) out += colour;
  out += machine;
  if (machine.size() < width) out.append(width - machine.size(), ' ');
  out += " |";
  if (!colour.empty()) out += reset;
  out += ' ';
  return out;
}

void line_splitter::feed(std::string_view data, std::string_view prefix, std::string& out, std::size_t max_partial) {
  while (!data.empty()) {
    const auto nl = data.find('\n');
    if (nl == std::string_view::npos) {
      partial_ += data;
      if (partial_.size() > max_partial) flush(prefix, out);
      return;
    }
    out += prefix;
    out += partial_;
    out.append(data.substr(0, nl + 1));
    partial_.clear();
    data.remove_prefix(nl + 1);
  }
}

void line_splitter::flush(std::string_view prefix, std::string& out) {
  if (partial_.empty()) return;
  out += prefix;
  out += partial_;
  out += '\n';
  partial_.clear();
}

int signal_number(std::string_view name) {
  static const std::pair<const char*, int> table[] = {{"HUP", 1},   {"INT", 2},   {"QUIT", 3},  {"ABRT", 6}, {"KILL", 9},
                                                      {"SEGV", 11}, {"PIPE", 13}, {"ALRM", 14}, {"TERM", 15}};
  for (const auto& [n, v] : table) {
    if (name == n) return v;
  }
  return 0;
}

int member_status(const member_outcome& m) {
  if (!m.ended) return 1;
  if (m.state == "exited" && m.code == 0) return 0;
  if (m.code) return std::max(1, *m.code);
  // A signal the command got (not the TERM of a cancel or a timeout, which are the server's).
  if (m.state == "exited" && m.signal && signal_number(*m.signal) != 0) return 128 + signal_number(*m.signal);
  return 1;
}

int batch_exit_status(const std::vector<member_outcome>& members) {
  int status = 0;
  for (const auto& m : members) status = std::max(status, member_status(m));
  return status;
}

std::string format_batch_summary(const std::vector<member_outcome>& members) {
  std::vector<std::vector<std::string>> rows = {{"MACHINE", "STATE", "EXIT", "DURATION"}};
  std::int64_t succeeded = 0, failed = 0, cancelled = 0, unfinished = 0;
  for (const auto& m : members) {
    std::string exit = "-";
    if (m.code) {
      exit = std::to_string(*m.code);
    } else if (m.signal) {
      exit = "SIG" + *m.signal;
    }
    const std::string duration =
        m.ended && m.duration_ms ? format_duration(std::chrono::milliseconds(*m.duration_ms)) : std::string("-");
    rows.push_back({m.machine_id, m.state, exit, duration});
    if (!m.ended) {
      ++unfinished;
    } else if (member_status(m) == 0) {
      ++succeeded;
    } else if (m.state == "cancelled") {
      ++cancelled;
    } else {
      ++failed;
    }
  }
  std::vector<std::size_t> width(rows[0].size(), 0);
  for (const auto& row : rows) {
    for (std::size_t c = 0; c < row.size(); ++c) width[c] = std::max(width[c], row[c].size());
  }
  std::string out;
  for (const auto& row : rows) {
    for (std::size_t c = 0; c < row.size(); ++c) {
      out += row[c];
      if (c + 1 < row.size()) out += std::string(width[c] - row[c].size() + 2, ' ');
    }
    out += '\n';
  }
  std::string counts;
  const auto add = [&](std::int64_t n, const char* what) {
    if (n == 0) return;
    counts += (counts.empty() ? "" : ", ") + std::to_string(n) + " " + what;
  };
  add(succeeded, "succeeded");
  add(failed, "failed");
  add(cancelled, "cancelled");
  add(unfinished, "not ended");
  if (counts.empty()) counts = "no machines";
  out += counts + '\n';
  return out;
}

std::vector<std::string> format_progress_block(const std::vector<running_member>& running,
                                               const common::batch_counts& counts, std::size_t name_width,
                                               std::size_t columns, std::size_t max_lines) {
  constexpr std::size_t bar = 20;
  std::vector<std::string> lines;
  max_lines = std::max<std::size_t>(max_lines, 1);
  // Room for the counts' line, and one for "N more" when they do not all fit.
  std::size_t shown = running.size();
  if (shown + 1 > max_lines) shown = max_lines >= 3 ? max_lines - 2 : 0;
  for (std::size_t i = 0; i < shown; ++i) {
    const auto& r = running[i];
    std::string line = r.colour + r.machine_id + (r.colour.empty() ? "" : reset);
    if (r.machine_id.size() < name_width) line.append(name_width - r.machine_id.size(), ' ');
    line += "  [";
    char percent[16] = "      ";
    if (r.percent) {
      const double p = std::clamp(*r.percent, 0.0, 100.0);
      const auto filled = static_cast<std::size_t>(std::lround(p / 100.0 * bar));
      line += std::string(filled, '#') + std::string(bar - filled, '.');
      std::snprintf(percent, sizeof percent, "%5.1f%%", p);
    } else {
      const std::string word = r.has_progress ? "busy" : "running";
      const std::size_t left = (bar - word.size()) / 2;
      line += std::string(left, ' ') + word + std::string(bar - word.size() - left, ' ');
    }
    line += "] ";
    line += percent;
    line += "  " + format_duration(r.elapsed);
    if (!r.phase.empty()) line += "  " + r.phase;
    lines.push_back(cut_to_columns(line, columns));
  }
  if (shown < running.size()) {
    lines.push_back(cut_to_columns("... and " + std::to_string(running.size() - shown) + " more running", columns));
  }
  std::string summary = "fleet run: " + std::to_string(counts.running) + " running";
  const auto add = [&](std::int64_t n, const char* what) {
    if (n) summary += ", " + std::to_string(n) + " " + what;
  };
  add(counts.queued, "queued");
  add(counts.succeeded, "succeeded");
  add(counts.failed, "failed");
  add(counts.cancelled, "cancelled");
  lines.push_back(cut_to_columns(summary, columns));
  if (lines.size() > max_lines) lines.erase(lines.begin(), lines.end() - static_cast<std::ptrdiff_t>(max_lines));
  return lines;
}

std::string batch_after(const std::vector<std::pair<std::string, common::seq_t>>& last_seqs) {
  std::string out;
  for (const auto& [id, seq] : last_seqs) {
    if (seq < 0) continue;
    if (!out.empty()) out += ',';
    out += path_segment(id) + ':' + std::to_string(seq);
  }
  return out;
}

}  // namespace cmdcast::cli
