#include "cmdcast/common/execution_view.hpp"

#include <gtest/gtest.h>

namespace cmdcast::common {
namespace {

started_event started(const std::string& id) { return {0, id, "box", "lines", "echo", "2026-11-24T00:00:00.000Z"}; }
output_event out(seq_t seq, std::string text, std::int64_t t = 0) {
  return {seq, output_stream::out, std::move(text), t};
}

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

TEST(ExecutionView, LinesKeepTheirTimesAndNumbersAsOutputGrows) {
  execution_view v("e1", {.max_lines = 4, .max_line_bytes = 1024});
  v.apply(started("e1"));
  v.apply(out(1, "a\nb\n", 12));
  v.apply(out(2, "c\n", 340));
  EXPECT_EQ(v.tail_times(10), (std::vector<std::int64_t>{12, 12, 340}));
  EXPECT_EQ(v.last_t(), 340);
  EXPECT_EQ(v.line_number(0), 1u);
  EXPECT_EQ(v.index_of_line(3), 2u);
  EXPECT_FALSE(v.index_of_line(4));
  EXPECT_FALSE(v.index_of_line(0));
  // Past max_lines the oldest go; line 3 is still "c", wherever it is held now.
  v.apply(out(3, "d\ne\nf\n", 900));
  EXPECT_EQ(v.output().dropped_lines(), 2u);
  EXPECT_FALSE(v.index_of_line(2));
  ASSERT_TRUE(v.index_of_line(3));
  EXPECT_EQ(v.output().line(*v.index_of_line(3)).text, "c");
  EXPECT_EQ(v.line_number(*v.index_of_line(6)), 6u);
  // A gap's line takes the time of the output before it.
  v.apply(gap_event{5, 4, 5});
  EXPECT_EQ(v.tail_times(1), (std::vector<std::int64_t>{900}));
}

TEST(ExecutionView, QueuedAndAwaitingApprovalUntilItStartsOrEnds) {
  execution_view v("e1");
  EXPECT_TRUE(v.apply(awaiting_approval_event{"olivia", "2026-11-24T01:00:00.000Z"}));
  ASSERT_TRUE(v.awaiting_approval());
  EXPECT_EQ(v.awaiting_approval()->requested_by, "olivia");
  EXPECT_FALSE(v.queued_position());
  // Approved, then queued behind the machine's running exclusive action, then started.
  EXPECT_TRUE(v.apply(queued_event{2}));
  EXPECT_FALSE(v.awaiting_approval());
  EXPECT_EQ(v.queued_position(), 2);
  EXPECT_TRUE(v.apply(queued_event{1}));
  EXPECT_EQ(v.queued_position(), 1);
  EXPECT_EQ(v.resume_after(), -1);  // live only: nothing to resume from
  EXPECT_TRUE(v.apply(started("e1")));
  EXPECT_FALSE(v.queued_position());
  EXPECT_FALSE(v.apply(queued_event{1}));  // late: it runs
  // Rejected before it ran: a stderr line saying why, then the exit; no started event.
  execution_view r("e2");
  r.apply(awaiting_approval_event{"olivia", "2026-11-24T01:00:00.000Z"});
  r.apply(output_event{0, output_stream::err, "cmdcast: rejected by oscar\n", 0});
  EXPECT_TRUE(r.apply(exit_event{1, std::nullopt, std::nullopt, exit_state::rejected, 0}));
  EXPECT_FALSE(r.awaiting_approval());
  EXPECT_FALSE(r.started());
  EXPECT_EQ(r.exit()->state, exit_state::rejected);
  EXPECT_EQ(r.tail(1), (std::vector<std::string>{"cmdcast: rejected by oscar"}));
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
