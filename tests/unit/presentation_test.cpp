// The clients' words: routes with line links, the time column, the title and the notice.
#include "app/presentation.hpp"

#include <gtest/gtest.h>

#include <ctime>

namespace cmdcast::client {
namespace {

TEST(Route, ExecutionsMachinesAndLineLinks) {
  EXPECT_EQ(parse_route("#/executions/abc"), (route{route::kind::execution, "abc", std::nullopt}));
  EXPECT_EQ(parse_route("#/machines/box"), (route{route::kind::machine, "box", std::nullopt}));
  EXPECT_EQ(parse_route("#/executions/abc/L5"), (route{route::kind::execution, "abc", line_range{5, 5}}));
  EXPECT_EQ(parse_route("#/executions/abc/L5-L9"), (route{route::kind::execution, "abc", line_range{5, 9}}));
  EXPECT_EQ(parse_route("#/executions/abc/L5-9"), (route{route::kind::execution, "abc", line_range{5, 9}}));
  EXPECT_EQ(parse_route("#/executions/abc/L9-L5"), (route{route::kind::execution, "abc", line_range{5, 9}}));
  // Malformed lines open the execution without them; no id is no route.
  for (const char* bad : {"#/executions/abc/L", "#/executions/abc/L0", "#/executions/abc/Lx", "#/executions/abc/L5-",
                          "#/executions/abc/L5-Lx", "#/executions/abc/L5x", "#/executions/abc/5"}) {
    EXPECT_EQ(parse_route(bad), (route{route::kind::execution, "abc", std::nullopt})) << bad;
  }
  EXPECT_EQ(parse_route("#/executions/").what, route::kind::none);
  EXPECT_EQ(parse_route("#/executions//L5").what, route::kind::none);
  EXPECT_EQ(parse_route("").what, route::kind::none);
  EXPECT_EQ(parse_route("#/other/x").what, route::kind::none);
}

TEST(Route, RoundTripsThroughExecutionRoute) {
  EXPECT_EQ(execution_route("abc"), "#/executions/abc");
  EXPECT_EQ(execution_route("abc", line_range{7, 7}), "#/executions/abc/L7");
  EXPECT_EQ(execution_route("abc", line_range{7, 12}), "#/executions/abc/L7-L12");
  for (const auto& r : {line_range{1, 1}, line_range{3, 40}, line_range{1000000, 1000001}}) {
    EXPECT_EQ(parse_route(execution_route("e-1", r)).lines, r);
  }
}

TEST(Times, Rfc3339AsTheServerWritesItAndWithOffsets) {
  EXPECT_EQ(parse_rfc3339_ms("1970-01-01T00:00:00Z"), 0);
  EXPECT_EQ(parse_rfc3339_ms("1970-01-01T00:00:01.5Z"), 1500);
  EXPECT_EQ(parse_rfc3339_ms("2026-12-02T13:30:21.123Z"), 1796218221123);
  EXPECT_EQ(parse_rfc3339_ms("2026-12-02T15:30:21.123+02:00"), 1796218221123);
  EXPECT_EQ(parse_rfc3339_ms("2000-02-29T23:59:59.999-00:30"), 951868799999 + 1800000);
  for (const char* bad : {"", "2026-12-02", "2026-12-02T13:30:21", "2026-13-02T13:30:21Z", "2026-12-02T13:30:21.Z",
                          "2026-12-02T13:30:21Zx", "2026-12-02T13:30:21+0200"}) {
    EXPECT_FALSE(parse_rfc3339_ms(bad)) << bad;
  }
}

TEST(Times, TheTimeColumnsLabels) {
  EXPECT_EQ(elapsed_label(0), "+00:00.000");
  EXPECT_EQ(elapsed_label(72345), "+01:12.345");
  EXPECT_EQ(elapsed_label(75 * 60000 + 2120), "+75:02.120");
  // The clock is local time, as the C library (the browser, in the web build) has it.
  const std::int64_t at = 1796218221123;
  const std::time_t seconds = at / 1000;
  std::tm tm{};
  localtime_r(&seconds, &tm);
  char expected[16];
  std::snprintf(expected, sizeof expected, "%02d:%02d:%02d", tm.tm_hour, tm.tm_min, tm.tm_sec);
  EXPECT_EQ(clock_label(at), expected);
  EXPECT_EQ(short_duration(999), "0s");
  EXPECT_EQ(short_duration(72000), "1m12s");
  EXPECT_EQ(short_duration(2 * 3600000 + 3 * 60000 + 5000), "2h03m");
}

TEST(Title, SaysTheStateActionAndMachine) {
  EXPECT_EQ(title_text(run_phase::running, 42.7, "apt_upgrade", "pihole"), "⟳ 42% apt_upgrade · pihole");
  EXPECT_EQ(title_text(run_phase::running, std::nullopt, "apt_upgrade", "pihole"), "⟳ apt_upgrade · pihole");
  EXPECT_EQ(title_text(run_phase::succeeded, 100.0, "apt_upgrade", "pihole"), "✓ apt_upgrade · pihole");
  EXPECT_EQ(title_text(run_phase::failed, std::nullopt, "apt_upgrade", "pihole"), "✗ apt_upgrade · pihole");
  EXPECT_EQ(title_text(run_phase::waiting, std::nullopt, "apt_upgrade", "pihole"), "⏸ apt_upgrade · pihole");
}

TEST(Notice, NamesTheEndAndHowLongItTook) {
  common::exit_event e{9, 0, std::nullopt, common::exit_state::exited, 72000};
  EXPECT_EQ(finish_notice("apt_upgrade", "pihole", e), "apt_upgrade on pihole: exited 0 (1m12s)");
  e = {9, std::nullopt, "TERM", common::exit_state::cancelled, 5000};
  EXPECT_EQ(finish_notice("ticks", "box", e), "ticks on box: cancelled (5s)");
  e = {9, std::nullopt, "KILL", common::exit_state::exited, 1000};
  EXPECT_EQ(exit_summary(e), "killed by KILL");
  e = {1, std::nullopt, std::nullopt, common::exit_state::timed_out, 0};
  EXPECT_EQ(exit_summary(e), "timed out");
  e.state = common::exit_state::rejected;
  EXPECT_EQ(exit_summary(e), "rejected");
}

}  // namespace
}  // namespace cmdcast::client
