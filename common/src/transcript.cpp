#include "cmdcast/common/transcript.hpp"

#include <algorithm>
#include <cstring>
#include <optional>

namespace cmdcast::common {
namespace {

constexpr std::size_t block_bytes = 256 * 1024;
constexpr std::size_t max_csi_params = 32;
constexpr std::uint32_t max_csi_param_value = 65535;
constexpr std::size_t max_osc_bytes = 4096;

constexpr std::uint64_t byte_ones = 0x0101010101010101ull;
constexpr std::uint64_t byte_highs = 0x8080808080808080ull;

inline std::uint64_t has_byte(std::uint64_t w, unsigned char b) {
  const std::uint64_t x = w ^ (byte_ones * b);
  return (x - byte_ones) & ~x & byte_highs;
}

// Bytes that end a run of plain text: C0 controls, DEL, and 0xC2 (the lead byte of the C1
// controls U+0080..U+009F, and of some printable characters, which are checked one by one).
inline bool word_may_end_text(std::uint64_t w) {
  const std::uint64_t below_space = (w - byte_ones * 0x20) & ~w & byte_highs;
  return (below_space | has_byte(w, 0x7f) | has_byte(w, 0xC2)) != 0;
}

inline bool is_c1_control(const unsigned char* p, std::size_t i, std::size_t n) {
  return p[i] == 0xC2 && i + 1 < n && p[i + 1] >= 0x80 && p[i + 1] <= 0x9F;
}

/// Index of the first byte at or after i that is not plain text.
std::size_t find_text_end(std::string_view text, std::size_t i) {
  const auto* p = reinterpret_cast<const unsigned char*>(text.data());
  const std::size_t n = text.size();
  while (i < n) {
    if (i + 8 <= n) {
      std::uint64_t w;
      std::memcpy(&w, p + i, 8);
      if (!word_may_end_text(w)) {
        i += 8;
        continue;
      }
    }
    const unsigned char c = p[i];
    if (c < 0x20 || c == 0x7f || is_c1_control(p, i, n)) return i;
    ++i;
  }
  return n;
}

inline bool is_continuation(char c) { return (static_cast<unsigned char>(c) & 0xC0) == 0x80; }

std::size_t count_code_points(std::string_view s) {
  std::size_t n = 0;
  for (char c : s) n += is_continuation(c) ? 0 : 1;
  return n;
}

/// Byte offset reached from `from` after `count` characters (or the end of s).
std::size_t advance_code_points(std::string_view s, std::size_t from, std::size_t count) {
  std::size_t i = from;
  while (count > 0 && i < s.size()) {
    ++i;
    while (i < s.size() && is_continuation(s[i])) ++i;
    --count;
  }
  return i;
}

/// Appends [begin, end) in `style` to spans, merging with the last span when styles match.
void push_span(std::vector<styled_span>& spans, std::size_t begin, std::size_t end,
               const text_style& style) {
  if (begin >= end) return;
  if (!spans.empty() && spans.back().end == begin && spans.back().style == style) {
    spans.back().end = static_cast<std::uint32_t>(end);
    return;
  }
  spans.push_back({static_cast<std::uint32_t>(begin), static_cast<std::uint32_t>(end), style});
}

// xterm's default palette: 16 system colours, a 6x6x6 cube, a 24-step grey ramp.
constexpr std::uint32_t system_colors[16] = {
    0x000000, 0xcd0000, 0x00cd00, 0xcdcd00, 0x0000ee, 0xcd00cd, 0x00cdcd, 0xe5e5e5,
    0x7f7f7f, 0xff0000, 0x00ff00, 0xffff00, 0x5c5cff, 0xff00ff, 0x00ffff, 0xffffff};

}  // namespace

std::uint32_t to_rgb(color c, std::uint32_t fallback) {
  if (is_rgb(c)) return c & 0xFFFFFFu;
  if (!is_palette(c)) return fallback;
  const std::uint32_t i = c & 0xFFu;
  if (i < 16) return system_colors[i];
  if (i < 232) {
    const std::uint32_t levels[6] = {0, 95, 135, 175, 215, 255};
    const std::uint32_t v = i - 16;
    return levels[v / 36] << 16 | levels[(v / 6) % 6] << 8 | levels[v % 6];
  }
  const std::uint32_t g = 8 + (i - 232) * 10;
  return g << 16 | g << 8 | g;
}

/// Per-stream parser state: where in an escape sequence the stream is, and its SGR style.
struct transcript::stream_state {
  enum class mode : std::uint8_t { ground, escape, escape_intermediate, csi, osc, osc_escape };
  mode state = mode::ground;
  text_style style;
  bool csi_private = false;       // a parameter prefix such as '?': not SGR
  bool csi_intermediate = false;  // an intermediate byte: not SGR
  std::uint8_t param_count = 0;
  std::uint32_t params[max_csi_params] = {};
  bool colon_before[max_csi_params] = {};  // joined to the previous one by ':'
  std::size_t osc_bytes = 0;
  bool cursor_saved = false;       // ESC 7 or CSI s seen, not yet restored
  bool drawing_elsewhere = false;  // moved away from the output line while saved

  void start_csi() {
    state = mode::csi;
    csi_private = csi_intermediate = false;
    param_count = 1;
    params[0] = 0;
    colon_before[0] = false;
  }
};

transcript::transcript(transcript_limits limits)
    : limits_(limits), streams_(std::make_unique<stream_state[]>(2)) {
  limits_.max_line_bytes = std::clamp<std::size_t>(limits_.max_line_bytes, 16, block_bytes / 2);
}

transcript::~transcript() = default;

void transcript::clear() {
  lines_.clear();
  blocks_.clear();
  first_block_id_ = 0;
  dropped_ = 0;
  open_text_.clear();
  open_spans_.clear();
  cursor_ = 0;
  open_t_ = 0;
  open_t_pending_ = true;
  streams_[0] = {};
  streams_[1] = {};
  ++version_;
}

std::size_t transcript::size() const { return lines_.size() + (open_text_.empty() ? 0 : 1); }

line_view transcript::line(std::size_t i) const {
  if (i < lines_.size()) {
    const stored_line& l = lines_[i];
    return {std::string_view(l.text, l.text_size), std::span(l.spans, l.span_count), l.wrapped, l.t};
  }
  return {open_text_, open_spans_, false, open_t_};
}

void transcript::append(output_stream stream, std::string_view text, std::int64_t t) {
  if (text.empty()) return;
  ++version_;
  const auto time = static_cast<std::uint32_t>(std::clamp<std::int64_t>(t, 0, UINT32_MAX));
  if (open_t_pending_) {
    open_t_ = time;
    open_t_pending_ = false;
  }
  stream_state& st = streams_[static_cast<std::size_t>(stream)];
  const auto* p = reinterpret_cast<const unsigned char*>(text.data());
  const std::size_t n = text.size();
  std::size_t i = 0;
  while (i < n) {
    if (st.state != stream_state::mode::ground) {
      i = consume_escape(st, text, i);
      continue;
    }
    const std::size_t end = find_text_end(text, i);
    text_style style = st.style;
    if (stream == output_stream::err) style.flags |= style_flag::from_stderr;
    if (end > i) {
      if (!st.drawing_elsewhere) write_text(text.substr(i, end - i), style);
      i = end;
      continue;
    }
    switch (p[i]) {
      case '\n':
        commit_open_line(false);
        // What follows in this text begins the next line; a newline that ends the text leaves
        // the next line to the next append.
        open_t_ = time;
        open_t_pending_ = i + 1 == n;
        break;
      case '\r': cursor_ = 0; break;
      case '\b': backspace(); break;
      case '\t': tab(style); break;
      case 0x1b: st.state = stream_state::mode::escape; break;
      case 0xC2: ++i; break;  // a C1 control: two bytes, both dropped
      default: break;         // other controls are not shown
    }
    ++i;
  }
}

// Consumes escape-sequence bytes from text[i..]; returns where ground text resumes or the end.
// A byte that aborts a sequence (a control, or a non-ASCII character outside a string) is left
// for the ground state, so no part of a character is ever swallowed or leaked.
std::size_t transcript::consume_escape(stream_state& st, std::string_view text, std::size_t i) {
  using mode = stream_state::mode;
  const std::size_t n = text.size();
  while (i < n && st.state != mode::ground) {
    const auto c = static_cast<unsigned char>(text[i]);
    switch (st.state) {
      case mode::escape:
        if (c == '[') {
          st.start_csi();
        } else if (c == ']' || c == 'P' || c == 'X' || c == '^' || c == '_') {
          st.state = mode::osc;  // OSC, DCS, SOS, PM, APC: a string up to ST or BEL
          st.osc_bytes = 0;
        } else if (c >= 0x20 && c <= 0x2F) {
          st.state = mode::escape_intermediate;
        } else if (c == 0x1b) {
          break;  // ESC ESC: the second one starts afresh
        } else if (c == '7' || c == '8') {
          st.state = mode::ground;  // save / restore cursor
          st.cursor_saved = c == '7';
          st.drawing_elsewhere = false;
        } else if (c >= 0x30 && c <= 0x7E) {
          st.state = mode::ground;  // another two-byte sequence: ignored
        } else {
          st.state = mode::ground;
          return i;
        }
        break;
      case mode::escape_intermediate:
        if (c >= 0x20 && c <= 0x2F) break;
        st.state = mode::ground;
        if (c >= 0x30 && c <= 0x7E) break;
        return i;
      case mode::csi:
        if (c >= '0' && c <= '9') {
          auto& v = st.params[st.param_count - 1];
          v = std::min<std::uint32_t>(v * 10 + (c - '0'), max_csi_param_value);
        } else if (c == ';' || c == ':') {
          if (st.param_count < max_csi_params) {
            st.params[st.param_count] = 0;
            st.colon_before[st.param_count] = c == ':';
            ++st.param_count;
          }
        } else if (c >= 0x3C && c <= 0x3F) {
          st.csi_private = true;
        } else if (c >= 0x20 && c <= 0x2F) {
          st.csi_intermediate = true;
        } else if (c >= 0x40 && c <= 0x7E) {
          st.state = mode::ground;
          dispatch_csi(st, static_cast<char>(c));
        } else if (c == 0x1b) {
          st.state = mode::escape;
        } else {
          st.state = mode::ground;
          return i;
        }
        break;
      case mode::osc:
        if (c == 0x07 || c == 0x18 || c == 0x1a) {
          st.state = mode::ground;
        } else if (c == 0x1b) {
          st.state = mode::osc_escape;
        } else if (c == '\n' || ++st.osc_bytes > max_osc_bytes) {
          // Not a real string command (they never hold a newline): show the rest as text.
          st.state = mode::ground;
          return i;
        }
        break;
      case mode::osc_escape:
        if (c == '\\') {
          st.state = mode::ground;  // ST
          break;
        }
        st.state = mode::escape;  // the ESC began a new sequence
        continue;
      case mode::ground: break;
    }
    ++i;
  }
  return i;
}

void transcript::dispatch_csi(stream_state& st, char final_byte) {
  if (st.csi_private || st.csi_intermediate) return;
  switch (final_byte) {
    case 'm': apply_sgr(st); break;
    case 'K': erase_in_line(st.params[0]); break;
    case 's': st.cursor_saved = true; break;
    case 'u': st.cursor_saved = st.drawing_elsewhere = false; break;
    case 'H':
    case 'f':
      // Saving the cursor, jumping elsewhere and coming back is a status bar drawn apart from
      // the output (dpkg's "Progress: [ 42%]"): not part of the lines.
      st.drawing_elsewhere = st.cursor_saved;
      break;
    default: break;
  }
}

void transcript::apply_sgr(stream_state& st) {
  text_style& s = st.style;
  const std::size_t n = st.param_count;
  auto joined = [&](std::size_t from) {  // parameters joined to params[from] by ':'
    std::size_t k = 0;
    while (from + 1 + k < n && st.colon_before[from + 1 + k]) ++k;
    return k;
  };
  for (std::size_t i = 0; i < n; ++i) {
    const std::uint32_t p = st.params[i];
    const std::size_t sub = joined(i);
    if (p == 38 || p == 48 || p == 58) {
      // Extended colour, as 38;5;N / 38;2;R;G;B or 38:5:N / 38:2:[CS]:R:G:B.
      std::optional<color> c;
      const std::uint32_t* a = st.params + i + 1;
      std::size_t used = 0;
      if (sub > 0) {
        used = sub;
        if (a[0] == 5 && sub >= 2) c = palette_color(static_cast<std::uint8_t>(a[1] & 0xFF));
        if (a[0] == 2 && sub >= 4) {
          const std::uint32_t* rgb = sub >= 5 ? a + 2 : a + 1;
          c = rgb_color(static_cast<std::uint8_t>(rgb[0] & 0xFF),
                        static_cast<std::uint8_t>(rgb[1] & 0xFF),
                        static_cast<std::uint8_t>(rgb[2] & 0xFF));
        }
      } else if (i + 2 < n && a[0] == 5) {
        used = 2;
        c = palette_color(static_cast<std::uint8_t>(a[1] & 0xFF));
      } else if (i + 4 < n && a[0] == 2) {
        used = 4;
        c = rgb_color(static_cast<std::uint8_t>(a[1] & 0xFF), static_cast<std::uint8_t>(a[2] & 0xFF),
                      static_cast<std::uint8_t>(a[3] & 0xFF));
      } else {
        used = n - i - 1;  // malformed: ignore the rest
      }
      if (c && p == 38) s.fg = *c;
      if (c && p == 48) s.bg = *c;  // 58 (underline colour) is not drawn
      i += used;
      continue;
    }
    if (p == 4 && sub > 0) {  // 4:0 no underline, 4:N some underline style
      if (st.params[i + 1] == 0) {
        s.flags &= static_cast<std::uint8_t>(~style_flag::underline);
      } else {
        s.flags |= style_flag::underline;
      }
      i += sub;
      continue;
    }
    i += sub;  // other sub-parameters are not understood: skip them
    switch (p) {
      case 0: s = text_style{}; break;
      case 1: s.flags |= style_flag::bold; break;
      case 2: s.flags |= style_flag::dim; break;
      case 3: s.flags |= style_flag::italic; break;
      case 4: s.flags |= style_flag::underline; break;
      case 7: s.flags |= style_flag::inverse; break;
      case 22: s.flags &= static_cast<std::uint8_t>(~(style_flag::bold | style_flag::dim)); break;
      case 23: s.flags &= static_cast<std::uint8_t>(~style_flag::italic); break;
      case 24: s.flags &= static_cast<std::uint8_t>(~style_flag::underline); break;
      case 27: s.flags &= static_cast<std::uint8_t>(~style_flag::inverse); break;
      case 39: s.fg = default_color; break;
      case 49: s.bg = default_color; break;
      default:
        if (p >= 30 && p <= 37) s.fg = palette_color(static_cast<std::uint8_t>(p - 30));
        if (p >= 40 && p <= 47) s.bg = palette_color(static_cast<std::uint8_t>(p - 40));
        if (p >= 90 && p <= 97) s.fg = palette_color(static_cast<std::uint8_t>(p - 90 + 8));
        if (p >= 100 && p <= 107) s.bg = palette_color(static_cast<std::uint8_t>(p - 100 + 8));
        break;
    }
  }
}

void transcript::erase_in_line(unsigned mode) {
  if (mode == 0 || mode == 2) {
    // Erase from the cursor to the end.
    open_text_.resize(cursor_);
    while (!open_spans_.empty() && open_spans_.back().begin >= cursor_) open_spans_.pop_back();
    if (!open_spans_.empty()) {
      open_spans_.back().end = std::min<std::uint32_t>(open_spans_.back().end,
                                                       static_cast<std::uint32_t>(cursor_));
    }
  }
  if (mode == 1 || mode == 2) {
    // Blank from the start through the cursor, keeping the cursor's column.
    const std::size_t column = count_code_points(std::string_view(open_text_).substr(0, cursor_));
    const std::size_t through = advance_code_points(open_text_, cursor_, 1);
    const std::string blanks(count_code_points(std::string_view(open_text_).substr(0, through)), ' ');
    replace_open(0, through, blanks, text_style{});
    cursor_ = column;
  }
}

void transcript::write_text(std::string_view run, const text_style& style) {
  if (cursor_ == open_text_.size()) {
    open_text_.append(run);
    push_span(open_spans_, cursor_, open_text_.size(), style);
    cursor_ = open_text_.size();
  } else {
    // Overwrite as many characters as the run has, from the cursor on.
    const std::size_t end = advance_code_points(open_text_, cursor_, count_code_points(run));
    replace_open(cursor_, end, run, style);
    cursor_ += run.size();
  }
  if (open_text_.size() > limits_.max_line_bytes) wrap_long_open_line();
}

void transcript::replace_open(std::size_t begin, std::size_t end, std::string_view text,
                              const text_style& style) {
  open_text_.replace(begin, end - begin, text);
  const std::ptrdiff_t delta =
      static_cast<std::ptrdiff_t>(text.size()) - static_cast<std::ptrdiff_t>(end - begin);
  scratch_spans_.clear();
  bool inserted = false;
  for (const styled_span& s : open_spans_) {
    if (s.begin < begin) push_span(scratch_spans_, s.begin, std::min<std::size_t>(s.end, begin), s.style);
    if (!inserted && s.end > begin) {
      push_span(scratch_spans_, begin, begin + text.size(), style);
      inserted = true;
    }
    if (s.end > end) {
      push_span(scratch_spans_, static_cast<std::size_t>(std::max<std::size_t>(s.begin, end) + delta),
                static_cast<std::size_t>(s.end + delta), s.style);
    }
  }
  if (!inserted) push_span(scratch_spans_, begin, begin + text.size(), style);
  open_spans_.swap(scratch_spans_);
}

void transcript::tab(const text_style& style) {
  const std::size_t column = count_code_points(std::string_view(open_text_).substr(0, cursor_));
  const std::size_t spaces = 8 - column % 8;
  write_text(std::string_view("        ", spaces), style);
}

void transcript::backspace() {
  if (cursor_ == 0) return;
  --cursor_;
  while (cursor_ > 0 && is_continuation(open_text_[cursor_])) --cursor_;
}

void transcript::wrap_long_open_line() {
  while (open_text_.size() > limits_.max_line_bytes) {
    std::size_t cut = limits_.max_line_bytes;
    while (cut > 0 && is_continuation(open_text_[cut])) --cut;
    // Split the open line at `cut`: commit the head, keep the tail open.
    std::string tail = open_text_.substr(cut);
    std::vector<styled_span> tail_spans;
    for (const styled_span& s : open_spans_) {
      if (s.end > cut) {
        tail_spans.push_back({static_cast<std::uint32_t>(std::max<std::size_t>(s.begin, cut) - cut),
                              static_cast<std::uint32_t>(s.end - cut), s.style});
      }
    }
    const std::size_t cursor = cursor_ >= cut ? cursor_ - cut : 0;
    open_text_.resize(cut);
    cursor_ = cut;
    erase_in_line(0);
    commit_open_line(true);
    open_text_ = std::move(tail);
    open_spans_ = std::move(tail_spans);
    cursor_ = cursor;
  }
}

char* transcript::allocate(std::size_t bytes, std::uint64_t& block_id) {
  if (blocks_.empty() || blocks_.back().size - blocks_.back().used < bytes) {
    block b;
    b.size = std::max(block_bytes, bytes);
    b.data.reset(new char[b.size]);  // not zeroed: every byte is written before it is read
    blocks_.push_back(std::move(b));
  }
  block& b = blocks_.back();
  char* p = b.data.get() + b.used;
  // Keep the next allocation aligned for its spans.
  b.used += (bytes + alignof(styled_span) - 1) / alignof(styled_span) * alignof(styled_span);
  b.used = std::min(b.used, b.size);
  block_id = first_block_id_ + blocks_.size() - 1;
  return p;
}

void transcript::commit_open_line(bool wrapped) {
  const std::size_t span_bytes = open_spans_.size() * sizeof(styled_span);
  stored_line l{};
  char* p = allocate(span_bytes + open_text_.size(), l.block);
  if (span_bytes) std::memcpy(p, open_spans_.data(), span_bytes);
  if (!open_text_.empty()) std::memcpy(p + span_bytes, open_text_.data(), open_text_.size());
  l.spans = reinterpret_cast<const styled_span*>(p);
  l.text = p + span_bytes;
  l.span_count = static_cast<std::uint32_t>(open_spans_.size());
  l.text_size = static_cast<std::uint32_t>(open_text_.size());
  l.wrapped = wrapped;
  l.t = open_t_;
  lines_.push_back(l);
  open_text_.clear();
  open_spans_.clear();
  cursor_ = 0;
  while (lines_.size() > limits_.max_lines) drop_oldest();
}

void transcript::drop_oldest() {
  lines_.pop_front();
  ++dropped_;
  // Free the blocks that no remaining line uses (the newest block stays for new lines).
  const std::uint64_t oldest_needed = lines_.empty() ? first_block_id_ + blocks_.size() - 1
                                                     : lines_.front().block;
  while (first_block_id_ < oldest_needed && blocks_.size() > 1) {
    blocks_.pop_front();
    ++first_block_id_;
  }
}

}  // namespace cmdcast::common
