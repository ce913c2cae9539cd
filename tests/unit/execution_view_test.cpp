#include "cmdcast/common/execution_view.hpp"

#include <gtest/gtest.h>

namespace cmdcast::common {
namespace {

started_event started(const std::string& id) { return {0, id, "box", "lines", "echo", "2026-11-24T00:00:00.000Z"}; }
output_event out(seq_t seq, std::string text) { return {seq, output_stream::out, std::move(text)}; }

TEST(ExecutionView, AppliesEventsInOrderAndResumesAfterTheLast) {
  execution_view v("e1");
  EXPECT_EQ(v.resume_after(), -1);
  EXPECT_TRUE(v.apply(started("e1")));
  EXPECT_TRUE(v.apply(out(1, "one\ntw")));
  EXPECT_TRUE(v.apply(out(2, "o\n")));
  EXPECT_TRUE(v.apply(progress_event{3, 50.0, "Unpacking x"}));
  EXPECT_TRUE(v.apply(watchers_event{2}));
  EXPECT_EQ(v.resume_after(), 3);
  EXPECT_EQ(v.tail(5), (std::vector<std::string>{"one", "two"}));
  EXPECT_EQ(v.progress()->percent, 50.0);
  EXPECT_EQ(v.watchers(), 2);
  EXPECT_FALSE(v.finished());
  EXPECT_TRUE(v.apply(exit_event{4, 0, std::nullopt, exit_state::exited, 10}));
  EXPECT_TRUE(v.finished());
  EXPECT_EQ(v.plain_text(), "one\ntwo\n");
}

TEST(ExecutionView, AReconnectThatRepeatsEventsShowsNothingTwice) {
  execution_view v("e1");
  v.apply(started("e1"));
  v.apply(out(1, "a\n"));
  v.apply(out(2, "b\n"));
  // The transport reconnected with after=1 but the server sent from 1 again.
  EXPECT_FALSE(v.apply(out(1, "a\n")));
  EXPECT_FALSE(v.apply(out(2, "b\n")));
  EXPECT_TRUE(v.apply(out(3, "c\n")));
  EXPECT_EQ(v.plain_text(), "a\nb\nc\n");
}

TEST(ExecutionView, AGapIsShownWhereTheOutputIsMissing) {
  execution_view v("e1");
  v.apply(started("e1"));
  v.apply(out(1, "first\n"));
  EXPECT_TRUE(v.apply(gap_event{9, 2, 9}));
  v.apply(out(10, "last\n"));
  EXPECT_EQ(v.missed_events(), 8);
  const auto lines = v.tail(10);
  ASSERT_EQ(lines.size(), 3u);
  EXPECT_EQ(lines[0], "first");
  EXPECT_NE(lines[1].find("8 events of output are no longer held"), std::string::npos);
  EXPECT_EQ(lines[2], "last");
  EXPECT_EQ(v.resume_after(), 10);
}

TEST(ExecutionView, RefusesAnotherExecutionsStartAndIgnoresErrors) {
  execution_view v("e1");
  EXPECT_FALSE(v.apply(started("e2")));
  EXPECT_FALSE(v.apply(error_event{error_code::busy, "busy"}));
  EXPECT_EQ(v.resume_after(), -1);
}

TEST(ExecutionView, EndsFromTheRecordWhenTheExitIsOutOfReach) {
  execution_view v("e1");
  v.apply(started("e1"));
  v.apply(out(5, "tick\n"));
  execution_record r;
  r.execution_id = "e1";
  r.state = "running";
  v.end_from_record(r);
  EXPECT_FALSE(v.finished());
  r.state = "lost";
  v.end_from_record(r);
  ASSERT_TRUE(v.finished());
  EXPECT_EQ(v.exit()->state, exit_state::lost);
  EXPECT_EQ(v.plain_text(), "tick\n");
}

}  // namespace
}  // namespace cmdcast::common
