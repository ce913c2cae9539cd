#include "exec/output_export.hpp"

#include <cstdio>
#include <ctime>

#include "cmdcast/common/codec.hpp"
#include "cmdcast/common/transcript.hpp"
#include "support/log.hpp"

namespace cmdcast::server {
namespace {

// The transcript is read as lines complete, so it need hold only a few: text is fed in pieces
// of at most piece_bytes, which cannot complete more lines than it keeps.
constexpr std::size_t piece_bytes = 4096;
constexpr std::size_t kept_lines = 4 * piece_bytes;

/// The length of the longest prefix of `text` of at most `max` bytes cut at a character boundary.
std::size_t utf8_cut(std::string_view text, std::size_t max) {
  if (text.size() <= max) return text.size();
  std::size_t n = max;
  while (n > 0 && (static_cast<unsigned char>(text[n]) & 0xC0) == 0x80) --n;
  return n == 0 ? max : n;
}

}  // namespace

std::optional<export_format> parse_export_format(std::string_view name) {
  if (name == "text") return export_format::text;
  if (name == "ansi") return export_format::ansi;
  if (name == "ndjson") return export_format::ndjson;
  return std::nullopt;
}

output_export::output_export(export_format format, bool timestamps, std::chrono::system_clock::time_point started)
    : format_(format), timestamps_(timestamps && format != export_format::ndjson), started_(started) {
  if (format_ == export_format::text) {
    common::transcript_limits limits;
    limits.max_lines = kept_lines;
    transcript_ = std::make_unique<common::transcript>(limits);
  }
}

output_export::~output_export() = default;

void output_export::stamp(std::int64_t t, std::string& out) const {
  // The wall-clock time the output was read, as in the server's logs: 2026-12-02T14:03:01.123Z
  out += rfc3339(started_ + std::chrono::milliseconds(t));
  out += ' ';
}

void output_export::add(std::string_view frame, std::string& out, std::optional<std::uint64_t> gap_bytes) {
  if (format_ == export_format::ndjson) {
    out += frame;
    out += '\n';
    return;
  }
  auto decoded = common::decode_event(frame);
  if (!decoded) return;  // (a frame the server wrote itself: cannot happen)
  if (const auto* o = std::get_if<common::output_event>(&*decoded)) {
    add_output(*o, out);
  } else if (const auto* s = std::get_if<common::started_event>(&*decoded)) {
    if (const auto at = parse_rfc3339(s->started_at)) started_ = *at;
  } else if (const auto* g = std::get_if<common::gap_event>(&*decoded)) {
    note(gap_bytes ? "[cmdcast: " + std::to_string(*gap_bytes) + " bytes not kept]"
                   : "[cmdcast: events " + std::to_string(g->missed_from) + " to " + std::to_string(g->missed_to) +
                         " not kept]",
         out);
  }
}

void output_export::add_output(const common::output_event& e, std::string& out) {
  last_t_ = e.t;
  if (format_ == export_format::ansi) {
    if (!timestamps_) {
      out += e.data;
      if (!e.data.empty()) at_line_start_ = e.data.back() == '\n';
      return;
    }
    std::size_t from = 0;
    while (from < e.data.size()) {
      if (at_line_start_) stamp(e.t, out);
      const auto nl = e.data.find('\n', from);
      const auto end = nl == std::string::npos ? e.data.size() : nl + 1;
      out.append(e.data, from, end - from);
      at_line_start_ = nl != std::string::npos;
      from = end;
    }
    return;
  }
  std::string_view rest = e.data;
  while (!rest.empty()) {
    const auto n = utf8_cut(rest, piece_bytes);
    transcript_->append(e.stream, rest.substr(0, n), e.t);
    rest.remove_prefix(n);
    take_text_lines(out, false);
  }
}

void output_export::take_text_lines(std::string& out, bool all) {
  const std::uint64_t first = transcript_->dropped_lines();
  const std::uint64_t finished = first + (all ? transcript_->size() : transcript_->finished_lines());
  for (; written_lines_ < finished; ++written_lines_) {
    const auto line = transcript_->line(static_cast<std::size_t>(written_lines_ - first));
    if (timestamps_ && !continuing_) stamp(line.t, out);
    out += line.text;
    continuing_ = line.wrapped;
    if (!line.wrapped) out += '\n';
  }
}

void output_export::note(std::string_view text, std::string& out) {
  if (format_ == export_format::ansi) {
    if (!at_line_start_) out += '\n';
  } else {
    take_text_lines(out, true);
    transcript_->clear();
    written_lines_ = 0;
    continuing_ = false;
  }
  if (timestamps_) stamp(last_t_, out);
  out += text;
  out += '\n';
  at_line_start_ = true;
}

void output_export::finish(std::string& out) {
  if (format_ == export_format::text) {
    take_text_lines(out, true);
  } else if (format_ == export_format::ansi && timestamps_ && !at_line_start_) {
    out += '\n';
  }
}

}  // namespace cmdcast::server
