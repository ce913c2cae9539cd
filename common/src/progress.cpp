#include "cmdcast/common/progress.hpp"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdint>

namespace cmdcast::common {
namespace {

constexpr std::size_t max_line_bytes = 4096;  // longer lines are cut: no pattern needs more

bool starts_with(std::string_view s, std::string_view prefix) { return s.starts_with(prefix); }

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

std::optional<double> parse_number(std::string_view s) {
  // std::from_chars for double is missing from some standard libraries: parse by hand.
  s = trim(s);
  double value = 0;
  std::size_t i = 0;
  bool digits = false;
  for (; i < s.size() && s[i] >= '0' && s[i] <= '9'; ++i, digits = true) value = value * 10 + (s[i] - '0');
  if (i < s.size() && s[i] == '.') {
    double scale = 0.1;
    for (++i; i < s.size() && s[i] >= '0' && s[i] <= '9'; ++i, scale /= 10, digits = true) {
      value += (s[i] - '0') * scale;
    }
  }
  if (!digits || i != s.size()) return std::nullopt;
  return value;
}

std::optional<long> parse_count(std::string_view s) {
  long v = 0;
  auto r = std::from_chars(s.data(), s.data() + s.size(), v);
  if (r.ec != std::errc() || r.ptr != s.data() + s.size()) return std::nullopt;
  return v;
}

/// The word after `prefix` in a line such as "Unpacking tmux (3.3a-3) ...", without ":amd64".
std::string_view package_after(std::string_view line, std::string_view prefix) {
  std::string_view rest = line.substr(prefix.size());
  rest = rest.substr(0, rest.find(' '));
  return rest.substr(0, rest.find(':'));
}

/// apt-get and dpkg, as printed without a terminal, with -o APT::Status-Fd=N (dlstatus:,
/// pmstatus:) and with dpkg's fancy progress (Progress: [ NN%]).
///
/// Each "N upgraded, M newly installed, ..." summary starts a stage that runs from the percent
/// reached so far to 100: a third for downloads, two thirds for unpacking and setting up (or
/// removing). `apt-get update` has no total, so it is busy with a phase only.
class apt_parser final : public progress_parser {
 protected:
  void on_line(std::string_view line) override {
    line = trim(line);
    if (line.empty()) return;
    if (starts_with(line, "dlstatus:")) return on_status(line.substr(9), true);
    if (starts_with(line, "pmstatus:")) return on_status(line.substr(9), false);
    if (starts_with(line, "Progress: [")) return on_dpkg_fancy(line);
    if (line.find(" upgraded, ") != std::string_view::npos &&
        line.find(" newly installed, ") != std::string_view::npos) {
      return on_summary(line);
    }
    if (starts_with(line, "Get:")) return on_get(line);
    if (starts_with(line, "Hit:") || starts_with(line, "Ign:")) {
      if (!in_stage_) report(std::nullopt, "Updating package lists");
      return;
    }
    if (starts_with(line, "Fetched ")) {
      if (in_stage_) {
        downloaded_ = installs_;
        heuristic("Downloaded");
      }
      return;
    }
    if (starts_with(line, "Unpacking ")) return step(unpacked_, "Unpacking ", line);
    if (starts_with(line, "Setting up ")) return step(set_up_, "Setting up ", line);
    if (starts_with(line, "Removing ")) return step(removed_, "Removing ", line);
    if (starts_with(line, "Processing triggers for ")) {
      return report(std::nullopt, "Processing triggers for " +
                                      std::string(package_after(line, "Processing triggers for ")));
    }
    for (std::string_view p : {"Reading package lists", "Building dependency tree",
                               "Reading state information", "Calculating upgrade"}) {
      if (starts_with(line, p)) return report(std::nullopt, p);
    }
    if (starts_with(line, "E: ")) return report(std::nullopt, line);
  }

 private:
  void on_summary(std::string_view line) {
    // "1 upgraded, 3 newly installed, 2 reinstalled, 0 to remove and 5 not upgraded."
    long counts[4] = {0, 0, 0, 0};  // upgraded, newly installed, reinstalled, to remove
    constexpr std::string_view names[4] = {" upgraded", " newly installed", " reinstalled",
                                            " to remove"};
    for (int i = 0; i < 4; ++i) {
      const auto at = line.find(names[i]);
      if (at == std::string_view::npos) continue;
      auto start = line.rfind(' ', at - 1);
      start = start == std::string_view::npos ? 0 : start + 1;
      counts[i] = parse_count(line.substr(start, at - start)).value_or(0);
    }
    installs_ = counts[0] + counts[1] + counts[2];
    removes_ = counts[3];
    downloaded_ = unpacked_ = set_up_ = removed_ = 0;
    stage_base_ = percent_so_far().value_or(0);
    in_stage_ = true;
    if (installs_ + removes_ == 0) {
      stage(1.0, "Nothing to do");
    } else {
      stage(0.0, "Starting");
    }
  }

  void on_get(std::string_view line) {
    if (!in_stage_) return report(std::nullopt, "Updating package lists");
    // "Get:3 http://... bookworm/main amd64 tmux amd64 3.3a-3 [455 kB]": the package is the
    // third word from the end once the size is removed.
    const auto n = parse_count(line.substr(4, line.find(' ') - 4)).value_or(0);
    downloaded_ = std::max(downloaded_, std::min(n, installs_));
    std::string_view words = trim(line.substr(0, line.rfind('[')));
    std::string_view name;
    for (int i = 0; i < 3 && !words.empty(); ++i) {
      const auto sp = words.rfind(' ');
      name = sp == std::string_view::npos ? words : words.substr(sp + 1);
      words = sp == std::string_view::npos ? std::string_view{} : trim(words.substr(0, sp));
    }
    heuristic("Downloading " + std::string(name));
  }

  void step(long& counter, std::string_view verb, std::string_view line) {
    if (!in_stage_) return report(std::nullopt, std::string(verb) + std::string(package_after(line, verb)));
    ++counter;
    downloaded_ = installs_;  // dpkg runs only once everything is fetched
    heuristic(std::string(verb) + std::string(package_after(line, verb)));
  }

  // Stage fraction from the counted steps.
  void heuristic(const std::string& phase) {
    const double units = 3.0 * static_cast<double>(installs_) + static_cast<double>(removes_);
    if (units <= 0) return report(std::nullopt, phase);
    const double done = static_cast<double>(std::min(downloaded_, installs_) + std::min(unpacked_, installs_) +
                                            std::min(set_up_, installs_) + std::min(removed_, removes_));
    // Downloads are a third of a stage even when removals share it.
    stage(done / units, phase);
  }

  // dpkg's fancy progress on a terminal: "Progress: [ 42%] [#####.....] " and, once the
  // escape sequences are gone, whatever dpkg printed next on the same line.
  void on_dpkg_fancy(std::string_view line) {
    const auto percent_end = line.find('%');
    if (percent_end == std::string_view::npos) return;
    if (const auto p = parse_number(line.substr(11, percent_end - 11)); p && in_stage_) {
      stage(1.0 / 3 + *p / 100 * 2 / 3, {});
    }
    const auto bar_end = line.find(']', line.find(']', percent_end) + 1);
    if (bar_end != std::string_view::npos) on_line(line.substr(bar_end + 1));
  }

  // "N:PERCENT:TEXT" of dlstatus (downloads) or pmstatus (dpkg).
  void on_status(std::string_view rest, bool download) {
    const auto c1 = rest.find(':');
    if (c1 == std::string_view::npos) return;
    const auto c2 = rest.find(':', c1 + 1);
    if (c2 == std::string_view::npos) return;
    const auto p = parse_number(rest.substr(c1 + 1, c2 - c1 - 1));
    if (!p || *p < 0 || *p > 100) return;
    const std::string_view text = rest.substr(c2 + 1);
    if (!in_stage_) {
      // apt-get update: no total to measure against.
      return report(std::nullopt, download ? "Updating package lists" : text);
    }
    stage(download ? *p / 100 / 3 : 1.0 / 3 + *p / 100 * 2 / 3, text);
  }

  void stage(double fraction, std::string_view phase) {
    report(stage_base_ + (100 - stage_base_) * std::clamp(fraction, 0.0, 1.0), phase);
  }

  bool in_stage_ = false;
  double stage_base_ = 0;
  long installs_ = 0, removes_ = 0;
  long downloaded_ = 0, unpacked_ = 0, set_up_ = 0, removed_ = 0;
};

}  // namespace

progress_parser::~progress_parser() = default;

bool progress_parser::feed(std::string_view text) {
  changed_ = false;
  for (char ch : text) {
    const auto c = static_cast<unsigned char>(ch);
    switch (escape_) {
      case escape::none:
        if (c == '\n' || c == '\r') {
          end_line();
        } else if (c == 0x1b) {
          escape_ = escape::esc;
        } else if (line_.size() < max_line_bytes) {
          line_.push_back(ch);
        }
        break;
      case escape::esc:
        escape_ = c == '[' ? escape::csi : (c == ']' || c == 'P' || c == '_') ? escape::string
                                                                                : escape::none;
        break;
      case escape::csi:
        if (c >= 0x40 && c <= 0x7E) escape_ = escape::none;
        break;
      case escape::string:
        if (c == 0x07 || c == '\n') escape_ = escape::none;
        if (c == 0x1b) escape_ = escape::string_esc;
        break;
      case escape::string_esc:
        escape_ = escape::none;
        break;
    }
  }
  return changed_;
}

bool progress_parser::finish(bool success) {
  changed_ = false;
  end_line();
  if (success) report(100.0, "Done");
  return changed_;
}

void progress_parser::end_line() {
  if (!line_.empty()) on_line(line_);
  line_.clear();
}

void progress_parser::report(std::optional<double> percent, std::string_view phase) {
  progress_state next = current_;
  if (percent) {
    const double tenths = std::round(std::clamp(*percent, 0.0, 100.0) * 10) / 10;
    next.percent = std::max(tenths, current_.percent.value_or(0.0));
  }
  if (!phase.empty()) next.phase.assign(phase.data(), phase.size());
  if (next != current_) {
    current_ = std::move(next);
    changed_ = true;
  }
}

/// Any tool that prints its progress as "NN%" or "NN.N%" on a line (wget in both its styles,
/// curl -#, rsync --progress of one file, pv): the last such figure on a line is the percent,
/// and the line without its bar drawing is the phase.
class percent_parser final : public progress_parser {
 protected:
  void on_line(std::string_view line) override {
    for (std::size_t at = line.rfind('%'); at != std::string_view::npos && at > 0;
         at = line.rfind('%', at - 1)) {
      std::size_t begin = at;
      while (begin > 0 && ((line[begin - 1] >= '0' && line[begin - 1] <= '9') || line[begin - 1] == '.')) --begin;
      const auto value = parse_number(line.substr(begin, at - begin));
      if (value && *value <= 100) {
        // A figure below the one reached (a tool's next file) waits until it passes it.
        if (*value >= percent_so_far().value_or(0)) report(*value, phase_of(line));
        return;
      }
      if (at == 0) break;
    }
  }

 private:
  /// "/dev/null  63%[=====>   ]  18.27M  10.0MB/s" -> "/dev/null 63% 18.27M 10.0MB/s"
  static std::string phase_of(std::string_view line) {
    std::string out;
    bool in_bar = false;
    for (std::size_t i = 0; i < line.size(); ++i) {
      const char c = line[i];
      if (c == '[') in_bar = true;
      const bool dots = c == '.' && ((i > 0 && line[i - 1] == '.') || (i + 1 < line.size() && line[i + 1] == '.'));
      const bool drawing = in_bar || c == '#' || c == '=' || c == '>' || dots;
      if (c == ']') in_bar = false;
      if (drawing || c == ']' || c == ' ' || c == '\t') {
        if (!out.empty() && out.back() != ' ') out += ' ';
        continue;
      }
      out += c;
    }
    while (!out.empty() && out.back() == ' ') out.pop_back();
    return out.size() > 120 ? out.substr(0, 120) : out;
  }
};

const std::vector<std::string_view>& progress_families() {
  static const std::vector<std::string_view> families = {"apt", "percent"};
  return families;
}

std::unique_ptr<progress_parser> make_progress_parser(std::string_view family) {
  if (family == "apt") return std::make_unique<apt_parser>();
  if (family == "percent") return std::make_unique<percent_parser>();
  return nullptr;
}

}  // namespace cmdcast::common
