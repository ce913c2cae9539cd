// An execution's output as a download file: what a terminal finally shows (text), the bytes as
// received (ansi), the events (ndjson); times per line; where the output was cut.
#include <gtest/gtest.h>

#include "cmdcast/common/codec.hpp"
#include "exec/output_export.hpp"

namespace cmdcast::server {
namespace {

using common::output_stream;

std::string frame(std::string data, std::int64_t t = 0, output_stream s = output_stream::out, common::seq_t seq = 1) {
  return common::encode(common::event{common::output_event{seq, s, std::move(data), t}});
}

/// The file made of these events, in `format`.
std::string file_of(export_format format, const std::vector<std::string>& frames, bool timestamps = false,
                    std::optional<std::uint64_t> gap_bytes = std::nullopt) {
  output_export x(format, timestamps, std::chrono::system_clock::from_time_t(1764684000));  // 2025-12-02T14:00:00Z
  std::string out;
  for (const auto& f : frames) x.add(f, out, gap_bytes);
  x.finish(out);
  return out;
}

TEST(OutputExport, TextIsWhatATerminalFinallyShows) {
  const auto text = file_of(export_format::text, {frame("plain \x1b[1;31mbold red\x1b[0m\n"), frame("10%\r20%\r"),
                                                   frame("100% done\nab\bc\n"), frame("\x1b]0;title\x07" "after osc")});
  EXPECT_EQ(text, "plain bold red\n100% done\nac\nafter osc\n");
}

TEST(OutputExport, AnsiIsTheOutputAsReceivedStdoutAndStderrInOrder) {
  const auto ansi = file_of(export_format::ansi, {frame("a\x1b[31mred\r"), frame("err\n", 0, output_stream::err), frame("x")});
  EXPECT_EQ(ansi, "a\x1b[31mred\rerr\nx");
}

TEST(OutputExport, NdjsonIsTheEventsOnePerLine) {
  const std::vector<std::string> frames = {frame("a\n"), common::encode(common::event{common::exit_event{2, 0, {}, {}, 5}})};
  EXPECT_EQ(file_of(export_format::ndjson, frames), frames[0] + "\n" + frames[1] + "\n");
  EXPECT_EQ(file_of(export_format::ndjson, frames, true), frames[0] + "\n" + frames[1] + "\n") << "times are in the events";
}

TEST(OutputExport, TimestampsAreTheWallClockTimeEachLineBegan) {
  // The line begun at 1.5 s and finished at 2 s keeps 1.5 s; the next ones begin at 2 s.
  const auto text = file_of(export_format::text, {frame("one\ntw", 1500), frame("o\nthree\n", 2000)}, true);
  EXPECT_EQ(text,
            "2025-12-02T14:00:01.500Z one\n"
            "2025-12-02T14:00:01.500Z two\n"
            "2025-12-02T14:00:02.000Z three\n");
  const auto ansi = file_of(export_format::ansi, {frame("one\ntw", 1500), frame("o\nthree", 2000)}, true);
  EXPECT_EQ(ansi,
            "2025-12-02T14:00:01.500Z one\n"
            "2025-12-02T14:00:01.500Z two\n"
            "2025-12-02T14:00:02.000Z three\n");
}

TEST(OutputExport, AStartedEventSetsTheClock) {
  const auto started = common::encode(common::event{common::started_event{0, "id", "box", "a", "c", "2026-01-02T03:04:05.006Z"}});
  EXPECT_EQ(file_of(export_format::text, {started, frame("x\n", 10)}, true), "2026-01-02T03:04:05.016Z x\n");
}

TEST(OutputExport, ACutIsALineSayingHowMuchIsMissing) {
  const auto gap = common::encode(common::event{common::gap_event{7, 2, 7}});
  EXPECT_EQ(file_of(export_format::text, {frame("head\nhalf a li"), gap, frame("ne\ntail\n")}, false, 1234),
            "head\nhalf a li\n[cmdcast: 1234 bytes not kept]\nne\ntail\n");
  EXPECT_EQ(file_of(export_format::ansi, {frame("head\nhalf"), gap, frame("tail\n")}, false, 99),
            "head\nhalf\n[cmdcast: 99 bytes not kept]\ntail\n");
  EXPECT_EQ(file_of(export_format::text, {gap, frame("tail\n")}), "[cmdcast: events 2 to 7 not kept]\ntail\n")
      << "without the byte count, the events";
}

TEST(OutputExport, ManyLinesInOneEventAndLongLinesAreAllKept) {
  std::string many;
  for (int i = 0; i < 100000; ++i) many += std::to_string(i) + "\n";
  EXPECT_EQ(file_of(export_format::text, {frame(many)}), many);
  const std::string long_line(100000, 'x');
  EXPECT_EQ(file_of(export_format::text, {frame(long_line + "\n")}), long_line + "\n") << "a wrapped line is one line";
}

TEST(OutputExport, FormatsByName) {
  EXPECT_EQ(parse_export_format("text"), export_format::text);
  EXPECT_EQ(parse_export_format("ansi"), export_format::ansi);
  EXPECT_EQ(parse_export_format("ndjson"), export_format::ndjson);
  EXPECT_FALSE(parse_export_format("html"));
  EXPECT_FALSE(parse_export_format(""));
}

}  // namespace
}  // namespace cmdcast::server
