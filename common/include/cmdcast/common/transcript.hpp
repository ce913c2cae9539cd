// The transcript model both clients render: a command's stdout and stderr turned into lines of
// styled spans, as a terminal would show them (ANSI SGR colours and attributes, \r overwriting
// the current line, backspace, tabs), with every other escape sequence skipped. Not thread-safe:
// one owner (the UI thread) appends and reads.
#pragma once

#include <cstdint>
#include <deque>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "cmdcast/common/protocol.hpp"

namespace cmdcast::common {

/// A colour: the terminal's default, one of the 256 palette entries, or 24-bit RGB.
using color = std::uint32_t;
inline constexpr color default_color = 0;
constexpr color palette_color(std::uint8_t index) { return 0x01000000u | index; }
constexpr color rgb_color(std::uint8_t r, std::uint8_t g, std::uint8_t b) {
  return 0x02000000u | (std::uint32_t{r} << 16) | (std::uint32_t{g} << 8) | b;
}
constexpr bool is_palette(color c) { return (c >> 24) == 1; }
constexpr bool is_rgb(color c) { return (c >> 24) == 2; }
/// 0xRRGGBB of a palette or RGB colour (xterm's palette); `fallback` for the default colour.
std::uint32_t to_rgb(color c, std::uint32_t fallback);

namespace style_flag {
inline constexpr std::uint8_t bold = 1;
inline constexpr std::uint8_t dim = 2;
inline constexpr std::uint8_t italic = 4;
inline constexpr std::uint8_t underline = 8;
inline constexpr std::uint8_t inverse = 16;
inline constexpr std::uint8_t from_stderr = 32;  // the text came from stderr
}  // namespace style_flag

struct text_style {
  color fg = default_color;
  color bg = default_color;
  std::uint8_t flags = 0;
  bool operator==(const text_style&) const = default;
};

/// Bytes [begin, end) of a line's text in one style.
struct styled_span {
  std::uint32_t begin = 0;
  std::uint32_t end = 0;
  text_style style;
  bool operator==(const styled_span&) const = default;
};

struct line_view {
  std::string_view text;  // valid UTF-8, no control characters
  std::span<const styled_span> spans;  // cover text in order, adjacent spans differ in style
  bool wrapped = false;  // the line went on past max_line_bytes: the next line continues it
  /// The `t` (ms since the execution started) of the output that began the line; a line
  /// wrapped onto keeps the time of the line it continues.
  std::int64_t t = 0;
};

struct transcript_limits {
  std::size_t max_lines = 1000000;   // the oldest lines are dropped past this, and counted
  std::size_t max_line_bytes = 16384;  // a longer line wraps onto the next one
};

class transcript {
 public:
  explicit transcript(transcript_limits limits = {});
  ~transcript();
  transcript(const transcript&) = delete;
  transcript& operator=(const transcript&) = delete;

  /// Adds output. `text` must be valid UTF-8 cut at character boundaries (as event data is);
  /// escape sequences may be split across calls. Each stream has its own escape and colour
  /// state; both write at one cursor, as on a terminal. `t` is when the text was read (the
  /// event's `t`): a line keeps the `t` of the append that began it (times past about 49 days
  /// are held as 2^32-1 ms).
  void append(output_stream stream, std::string_view text, std::int64_t t = 0);

  /// Lines held, counting the unfinished last line when it has text.
  std::size_t size() const;
  /// Lines held that are finished (a newline, or a wrap, ended them): size() less the open one.
  std::size_t finished_lines() const { return lines_.size(); }
  /// Line `i` of size(); valid until the next append.
  line_view line(std::size_t i) const;
  /// Lines dropped at the front to respect max_lines. Line i of size() is line number
  /// dropped_lines() + i + 1 of the whole output: a line's number never changes.
  std::uint64_t dropped_lines() const { return dropped_; }
  /// Changes whenever the content does: renderers redraw only then.
  std::uint64_t version() const { return version_; }
  void clear();

 private:
  struct stream_state;
  struct stored_line {
    const styled_span* spans;
    const char* text;
    std::uint32_t span_count;
    std::uint32_t text_size;
    std::uint64_t block;  // arena block holding it
    std::uint32_t t;      // line_view::t (in what was padding: a line costs no more)
    bool wrapped;
  };
  struct block {
    std::unique_ptr<char[]> data;
    std::size_t size = 0;
    std::size_t used = 0;
  };

  std::size_t consume_escape(stream_state& st, std::string_view text, std::size_t i);
  void dispatch_csi(stream_state& st, char final_byte);
  void apply_sgr(stream_state& st);
  void erase_in_line(unsigned mode);
  void write_text(std::string_view run, const text_style& style);
  void replace_open(std::size_t begin, std::size_t end, std::string_view text,
                    const text_style& style);
  void tab(const text_style& style);
  void backspace();
  void commit_open_line(bool wrapped);
  void wrap_long_open_line();
  char* allocate(std::size_t bytes, std::uint64_t& block_id);
  void drop_oldest();

  transcript_limits limits_;
  std::unique_ptr<stream_state[]> streams_;  // indexed by output_stream

  // Committed lines, and the arena blocks holding their spans and text (freed from the front
  // as the oldest lines are dropped).
  std::deque<stored_line> lines_;
  std::deque<block> blocks_;
  std::uint64_t first_block_id_ = 0;
  std::uint64_t dropped_ = 0;
  std::uint64_t version_ = 0;

  // The line being written, where \r, backspace and erase may still change it.
  std::string open_text_;
  std::vector<styled_span> open_spans_;
  std::vector<styled_span> scratch_spans_;
  std::size_t cursor_ = 0;  // byte offset in open_text_, at a character boundary
  std::uint32_t open_t_ = 0;      // the open line's time
  bool open_t_pending_ = true;    // the open line was begun by nothing yet: the next append sets it
};

}  // namespace cmdcast::common
