#include "cmdcast/common/transcript.hpp"

#include <gtest/gtest.h>

#include <fstream>
#include <random>
#include <sstream>

#include "cmdcast/common/utf8.hpp"

namespace cmdcast::common {
namespace {

constexpr auto out = output_stream::out;
constexpr auto err = output_stream::err;

std::vector<std::string> lines_of(const transcript& t) {
  std::vector<std::string> lines;
  for (std::size_t i = 0; i < t.size(); ++i) lines.emplace_back(t.line(i).text);
  return lines;
}

std::vector<std::string> lines_of(std::string_view text, std::size_t chunk = 0) {
  transcript t;
  if (chunk == 0) chunk = text.size() + 1;
  for (std::size_t i = 0; i < text.size(); i += chunk) t.append(out, text.substr(i, chunk));
  return lines_of(t);
}

using lines = std::vector<std::string>;

// Every line's spans cover its text exactly, in order, without empty or mergeable spans.
void expect_well_formed(const transcript& t) {
  for (std::size_t i = 0; i < t.size(); ++i) {
    const line_view l = t.line(i);
    EXPECT_TRUE(is_valid_utf8(l.text)) << "line " << i;
    std::uint32_t at = 0;
    for (std::size_t s = 0; s < l.spans.size(); ++s) {
      EXPECT_EQ(l.spans[s].begin, at) << "line " << i;
      EXPECT_LT(l.spans[s].begin, l.spans[s].end) << "line " << i;
      if (s > 0) {
        EXPECT_FALSE(l.spans[s].style == l.spans[s - 1].style) << "line " << i;
      }
      at = l.spans[s].end;
    }
    EXPECT_EQ(at, l.text.size()) << "line " << i;
    for (char c : l.text) EXPECT_GE(static_cast<unsigned char>(c), 0x20u) << "control byte leaked";
  }
}

TEST(Transcript, SplitsLinesOnNewlineAndCrLf) {
  EXPECT_EQ(lines_of("one\ntwo\r\nthree"), (lines{"one", "two", "three"}));
  EXPECT_EQ(lines_of("a\n\nb\n"), (lines{"a", "", "b"}));
  EXPECT_EQ(lines_of(""), lines{});
}

TEST(Transcript, CarriageReturnOverwritesTheCurrentLine) {
  EXPECT_EQ(lines_of("progress 10%\rprogress 55%\rprogress 100%\ndone\n"),
            (lines{"progress 100%", "done"}));
  // A shorter rewrite leaves the tail of the old text, as a terminal does.
  EXPECT_EQ(lines_of("abcdef\rXY\n"), (lines{"XYcdef"}));
  // Rewriting with multi-byte characters counts characters, not bytes.
  EXPECT_EQ(lines_of("ééé\rab\n"), (lines{"abé"}));
  EXPECT_EQ(lines_of("abc\r✓\n"), (lines{"✓bc"}));
}

TEST(Transcript, EraseInLineClearsWhatItShould) {
  EXPECT_EQ(lines_of("downloading 99%\r\x1b[Kdone\n"), (lines{"done"}));
  EXPECT_EQ(lines_of("abcdef\r\x1b[0Kx\n"), (lines{"x"}));
  EXPECT_EQ(lines_of("abcdef\b\b\x1b[1K\n"), (lines{"     f"}));
  EXPECT_EQ(lines_of("abcdef\b\b\x1b[2K!\n"), (lines{"    !"}));
}

TEST(Transcript, BackspaceAndTabs) {
  EXPECT_EQ(lines_of("abc\b\bX\n"), (lines{"aXc"}));
  EXPECT_EQ(lines_of("\b\bab\n"), (lines{"ab"}));
  EXPECT_EQ(lines_of("a\tb\n12345678\tc\n"), (lines{"a       b", "12345678        c"}));
  EXPECT_EQ(lines_of("é\tx\n"), (lines{"é       x"}));
}

TEST(Transcript, AppliesSgrColoursAndAttributes) {
  transcript t;
  t.append(out, "plain \x1b[1;31mbold red\x1b[0m \x1b[38;5;208morange\x1b[39m \x1b[38;2;1;2;3mrgb\x1b[m\n");
  ASSERT_EQ(t.size(), 1u);
  const line_view l = t.line(0);
  EXPECT_EQ(l.text, "plain bold red orange rgb");
  ASSERT_EQ(l.spans.size(), 6u);
  EXPECT_EQ(l.spans[0].style, text_style{});
  EXPECT_EQ(l.text.substr(l.spans[1].begin, l.spans[1].end - l.spans[1].begin), "bold red");
  EXPECT_EQ(l.spans[1].style, (text_style{palette_color(1), default_color, style_flag::bold}));
  EXPECT_EQ(l.spans[3].style.fg, palette_color(208));
  EXPECT_EQ(l.spans[5].style.fg, rgb_color(1, 2, 3));
  expect_well_formed(t);
}

TEST(Transcript, UnderstandsEverySgrForm) {
  auto style_after = [](std::string_view sgr) {
    transcript t;
    t.append(out, std::string(sgr) + "x");
    return t.line(0).spans.back().style;
  };
  EXPECT_EQ(style_after("\x1b[2;3;4;7m").flags,
            style_flag::dim | style_flag::italic | style_flag::underline | style_flag::inverse);
  EXPECT_EQ(style_after("\x1b[1;2;22m").flags, 0);
  EXPECT_EQ(style_after("\x1b[3;4;7;23;24;27m").flags, 0);
  EXPECT_EQ(style_after("\x1b[4:3m").flags, style_flag::underline);
  EXPECT_EQ(style_after("\x1b[4m\x1b[4:0m").flags, 0);
  EXPECT_EQ(style_after("\x1b[94;103m").fg, palette_color(12));
  EXPECT_EQ(style_after("\x1b[94;103m").bg, palette_color(11));
  EXPECT_EQ(style_after("\x1b[42m").bg, palette_color(2));
  EXPECT_EQ(style_after("\x1b[48;2;10;20;30m").bg, rgb_color(10, 20, 30));
  EXPECT_EQ(style_after("\x1b[38:2::10:20:30m").fg, rgb_color(10, 20, 30));
  EXPECT_EQ(style_after("\x1b[38:2:10:20:30m").fg, rgb_color(10, 20, 30));
  EXPECT_EQ(style_after("\x1b[38:5:99m").fg, palette_color(99));
  EXPECT_EQ(style_after("\x1b[31m\x1b[49;39m").fg, default_color);
  EXPECT_EQ(style_after("\x1b[31;1m\x1b[m"), text_style{});
  // A colour sequence cut short changes nothing it cannot read.
  EXPECT_EQ(style_after("\x1b[38;5m").fg, default_color);
  EXPECT_EQ(style_after("\x1b[38;2;1;2m").fg, default_color);
  EXPECT_EQ(style_after("\x1b[31;99999999999m").fg, palette_color(1));
}

TEST(Transcript, MapsPaletteToRgb) {
  EXPECT_EQ(to_rgb(palette_color(1), 0), 0xcd0000u);
  EXPECT_EQ(to_rgb(palette_color(16), 0), 0x000000u);
  EXPECT_EQ(to_rgb(palette_color(196), 0), 0xff0000u);
  EXPECT_EQ(to_rgb(palette_color(255), 0), 0xeeeeeeu);
  EXPECT_EQ(to_rgb(rgb_color(1, 2, 3), 0), 0x010203u);
  EXPECT_EQ(to_rgb(default_color, 0xabcdef), 0xabcdefu);
}

TEST(Transcript, SkipsOtherEscapeSequencesWithoutLeakingBytes) {
  EXPECT_EQ(lines_of("a\x1b[2Jb\x1b[10;20Hc\x1b[?25ld\x1b[?1049he\n"), (lines{"abcde"}));
  EXPECT_EQ(lines_of("\x1b]0;window title\x07title gone\n"), (lines{"title gone"}));
  EXPECT_EQ(lines_of("\x1b]8;;http://x\x1b\\link\x1b]8;;\x1b\\ end\n"), (lines{"link end"}));
  EXPECT_EQ(lines_of("\x1bPq#0;2;0;0;0\x1b\\dcs\n"), (lines{"dcs"}));
  EXPECT_EQ(lines_of("x\x1b" "7y\x1b" "8z\x1b(Bw\x1b=v\n"), (lines{"xyzwv"}));
  // Text drawn elsewhere on the screen between save and restore is not output.
  EXPECT_EQ(lines_of("a\x1b" "7\x1b[30;0fstatus bar\x1b" "8b\n"), (lines{"ab"}));
  EXPECT_EQ(lines_of("a\x1b[s\x1b[1;1Hbar\x1b[ub\n"), (lines{"ab"}));
  EXPECT_EQ(lines_of("bell\x07 del\x7f nul") , (lines{"bell del nul"}));
  // C1 controls (U+0080..U+009F) are not shown; other characters led by 0xC2 are.
  EXPECT_EQ(lines_of("a\xC2\x9B" "b\xC2\xB0" "c\n"), (lines{"ab°c"}));
  // A sequence aborted by a non-ASCII character leaves the character whole.
  EXPECT_EQ(lines_of("a\x1b[1é\n"), (lines{"aé"}));
  // A never-terminated OSC ends at the newline instead of eating the output.
  EXPECT_EQ(lines_of("\x1b]0;unterminated\nnext\n"), (lines{"", "next"}));
}

TEST(Transcript, SequencesSplitAcrossChunksAreStillUnderstood) {
  const std::string text =
      "\x1b[1;38;2;255;128;0mhot\x1b[0m \x1b]0;title\x1b\\ok\r\x1b[KOK 50%\rOK 100%\n"
      "\x1b[?25l\x1b[32mgreen\x1b[0m\ttab\n";
  transcript whole;
  whole.append(out, text);
  for (std::size_t chunk = 1; chunk < text.size(); ++chunk) {
    transcript t;
    for (std::size_t i = 0; i < text.size(); i += chunk) t.append(out, std::string_view(text).substr(i, chunk));
    ASSERT_EQ(t.size(), whole.size()) << chunk;
    for (std::size_t i = 0; i < t.size(); ++i) {
      EXPECT_EQ(t.line(i).text, whole.line(i).text) << "chunk " << chunk;
      EXPECT_TRUE(std::equal(t.line(i).spans.begin(), t.line(i).spans.end(), whole.line(i).spans.begin(),
                             whole.line(i).spans.end()))
          << "chunk " << chunk << " line " << i;
    }
  }
  EXPECT_EQ(lines_of(whole), (lines{"OK 100%", "green   tab"}));
}

TEST(Transcript, StderrIsMarkedAndKeepsItsOwnEscapeState) {
  transcript t;
  t.append(out, "out \x1b[3");       // stdout's sequence is split here...
  t.append(err, "\x1b[31merr\n");   // ...stderr writes in between...
  t.append(out, "2mgreen\n");        // ...and stdout's sequence completes
  ASSERT_EQ(t.size(), 2u);
  const line_view first = t.line(0);
  EXPECT_EQ(first.text, "out err");
  EXPECT_EQ(first.spans[0].style.flags & style_flag::from_stderr, 0);
  EXPECT_EQ(first.spans[1].style, (text_style{palette_color(1), default_color, style_flag::from_stderr}));
  EXPECT_EQ(t.line(1).text, "green");
  EXPECT_EQ(t.line(1).spans[0].style.fg, palette_color(2));
  expect_well_formed(t);
}

TEST(Transcript, OverwritingRestylesOnlyTheOverwrittenPart) {
  transcript t;
  t.append(out, "\x1b[31mred\x1b[32mgreen\x1b[0m\r\x1b[34mBL");
  const line_view l = t.line(0);
  EXPECT_EQ(l.text, "BLdgreen");
  ASSERT_EQ(l.spans.size(), 3u);
  EXPECT_EQ(l.spans[0].style.fg, palette_color(4));
  EXPECT_EQ(l.spans[1].style.fg, palette_color(1));
  EXPECT_EQ(l.spans[2].style.fg, palette_color(2));
  expect_well_formed(t);
}

TEST(Transcript, LineCapDropsTheOldestAndCountsThem) {
  transcript t({.max_lines = 1000, .max_line_bytes = 16384});
  for (int i = 0; i < 250000; ++i) t.append(out, "line " + std::to_string(i) + "\n");
  EXPECT_EQ(t.size(), 1000u);
  EXPECT_EQ(t.dropped_lines(), 249000u);
  EXPECT_EQ(t.line(0).text, "line 249000");
  EXPECT_EQ(t.line(999).text, "line 249999");
}

TEST(Transcript, LongLinesWrapAtCharacterBoundaries) {
  transcript t({.max_lines = 100, .max_line_bytes = 100});
  std::string longline;
  for (int i = 0; i < 120; ++i) longline += "é";  // 240 bytes
  t.append(out, "\x1b[31m" + longline + "\n");
  ASSERT_EQ(t.size(), 3u);
  EXPECT_TRUE(t.line(0).wrapped);
  EXPECT_TRUE(t.line(1).wrapped);
  EXPECT_FALSE(t.line(2).wrapped);
  EXPECT_EQ(std::string(t.line(0).text) + std::string(t.line(1).text) + std::string(t.line(2).text), longline);
  expect_well_formed(t);
}

TEST(Transcript, EachLineKeepsTheTimeOfTheOutputThatBeganIt) {
  transcript t;
  t.append(out, "one\ntw", 100);    // "one" and "two" begin at 100
  t.append(out, "o\nthree\n", 250);  // "three" begins at 250; the newline ends the text
  t.append(err, "four", 400);         // so "four" begins at 400, not 250
  t.append(out, "\rFOUR\n\n", 500);  // overwriting keeps the line's time; an empty line too
  t.append(out, "six", 700);
  ASSERT_EQ(t.size(), 6u);
  const std::vector<std::int64_t> times = {100, 100, 250, 400, 500, 700};
  for (std::size_t i = 0; i < t.size(); ++i) EXPECT_EQ(t.line(i).t, times[i]) << "line " << i;
  EXPECT_EQ(t.line(3).text, "FOUR");
  // An escape sequence alone begins a line too (it is output), and a cleared transcript
  // starts afresh.
  t.append(out, "\n", 800);
  t.append(out, "\x1b[31m", 900);
  t.append(out, "red\n", 950);
  EXPECT_EQ(t.line(6).text, "red");
  EXPECT_EQ(t.line(6).t, 900);
  t.clear();
  t.append(out, "again", 5);
  EXPECT_EQ(t.line(0).t, 5);
}

TEST(Transcript, WrappedLinesKeepTheirTimeAndDroppedLinesTakeTheirsAlong) {
  transcript t({.max_lines = 3, .max_line_bytes = 16});
  t.append(out, std::string(40, 'x'), 10);
  t.append(out, "\n", 20);
  ASSERT_EQ(t.size(), 3u);
  for (std::size_t i = 0; i < 3; ++i) EXPECT_EQ(t.line(i).t, 10) << "line " << i;
  for (int i = 0; i < 5; ++i) t.append(out, "l" + std::to_string(i) + "\n", 100 + i);
  EXPECT_EQ(t.dropped_lines(), 5u);
  EXPECT_EQ(t.line(0).text, "l2");
  EXPECT_EQ(t.line(0).t, 102);
  EXPECT_EQ(t.line(2).t, 104);
  // Times past what 32 bits of milliseconds hold stay at the largest.
  t.append(out, "late\n", std::int64_t{1} << 40);
  EXPECT_EQ(t.line(2).t, 0xFFFFFFFFll);
}

TEST(Transcript, VersionChangesWithContentAndClearEmpties) {
  transcript t;
  const auto v0 = t.version();
  t.append(out, "x");
  EXPECT_NE(t.version(), v0);
  t.clear();
  EXPECT_EQ(t.size(), 0u);
  EXPECT_EQ(t.dropped_lines(), 0u);
}

TEST(Transcript, RandomInputStaysWellFormed) {
  // Random mixes of text, controls and partial escape sequences in random chunks.
  std::mt19937 rng(99);
  const std::vector<std::string> pieces = {"a", "é", "✓", "\n", "\r", "\r\n", "\b", "\t", "\x1b", "[", "]", ";",
                                           "3", "1", "m", "K", "\x07", "\x1b\\", "\x1b[31m", "\x1b[0K", "\x1b[",
                                           "38;2;", "\x7f", "\xC2\x85", "\x1b]0;t"};
  for (int round = 0; round < 300; ++round) {
    transcript t({.max_lines = 50, .max_line_bytes = 64});
    for (int k = 0; k < 200; ++k) {
      std::string chunk;
      for (int j = 0, n = static_cast<int>(rng() % 6); j < n; ++j) chunk += pieces[rng() % pieces.size()];
      t.append(rng() % 3 ? out : err, chunk);
    }
    expect_well_formed(t);
  }
}

TEST(Transcript, RealAptRunOnATerminalRendersCleanly) {
  // apt on a terminal: \r progress, dpkg's fancy progress bar with cursor save/restore.
  std::ifstream f(CMDCAST_TEST_DATA "/apt/install-new-tty.txt", std::ios::binary);
  ASSERT_TRUE(f) << "missing test data";
  std::stringstream ss;
  ss << f.rdbuf();
  transcript t;
  t.append(out, ss.str());
  expect_well_formed(t);
  const auto all = lines_of(t);
  auto has = [&](std::string_view s) {
    return std::any_of(all.begin(), all.end(), [&](const std::string& l) { return l == s; });
  };
  EXPECT_TRUE(has("Reading package lists... Done"));
  EXPECT_TRUE(has("0 upgraded, 3 newly installed, 0 to remove and 129 not upgraded."));
  EXPECT_TRUE(has("Unpacking libevent-core-2.1-7:amd64 (2.1.12-stable-8+deb12u1) ..."));
  for (const auto& l : all) {
    EXPECT_EQ(l.find("Reading package lists... 0%"), std::string::npos) << l;
    // dpkg's status bar is drawn at the bottom of the screen, apart from the output lines.
    EXPECT_EQ(l.find("Progress: ["), std::string::npos) << l;
  }
}

}  // namespace
}  // namespace cmdcast::common
