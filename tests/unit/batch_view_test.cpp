// The batch view's pure logic (web-client/app/batch_view.cpp): members from the record and the
// stream, rows with their states, exit codes, progress and last lines, the filters, the
// per-execution resume, and which machines a re-run on the failed ones takes.
#include "app/batch_view.hpp"

#include <gtest/gtest.h>

#include "app/presentation.hpp"

namespace cmdcast::client {
namespace {

common::batch_record record_of(std::vector<std::pair<std::string, std::string>> members, std::string state = "running") {
  common::batch_record r;
  r.batch_id = "b1";
  r.group = "web";
  r.action_type = "apt_upgrade";
  r.state = state;
  for (const auto& [machine, execution] : members) r.executions.push_back({machine, execution, "queued", std::nullopt, std::nullopt});
  r.counts.queued = static_cast<std::int64_t>(members.size());
  return r;
}

common::tagged_event tagged(common::event e, std::string execution, std::string machine) {
  return {std::move(e), std::move(execution), std::move(machine)};
}

common::started_event started(const std::string& execution, const std::string& machine) {
  return {0, execution, machine, "apt_upgrade", "apt-get upgrade", "2026-12-02T13:00:00Z"};
}

TEST(BatchView, RowsFollowTheRecordThenTheStream) {
  batch_view v("b1");
  v.apply_record(record_of({{"a", "e1"}, {"b", "e2"}, {"c", "e3"}}));
  ASSERT_EQ(v.size(), 3u);
  EXPECT_EQ(v.state(), "running");
  EXPECT_EQ(v.rows()[0].state, "queued");
  EXPECT_TRUE(v.apply(tagged(started("e1", "a"), "e1", "a")));
  EXPECT_TRUE(v.apply(tagged(common::output_event{1, common::output_stream::out, "one\ntwo\n\n", 40}, "e1", "a")));
  EXPECT_TRUE(v.apply(tagged(common::progress_event{2, 42.5, "Unpacking", 50}, "e1", "a")));
  auto r = v.rows()[0];
  EXPECT_EQ(r.machine_id, "a");
  EXPECT_EQ(r.state, "running");
  EXPECT_EQ(r.last_line, "two") << "the last line with something on it";
  EXPECT_EQ(r.progress, 42.5);
  EXPECT_EQ(r.duration_ms, 50);
  EXPECT_FALSE(r.ended);
  EXPECT_TRUE(v.apply(tagged(common::exit_event{3, 0, std::nullopt, common::exit_state::exited, 1234}, "e1", "a")));
  r = v.rows()[0];
  EXPECT_EQ(r.state, "exited");
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_EQ(r.duration_ms, 1234);
  EXPECT_TRUE(r.ended);
  EXPECT_FALSE(r.failed);
  // Already applied: dropped (a reconnect resends nothing twice).
  EXPECT_FALSE(v.apply(tagged(common::output_event{1, common::output_stream::out, "one\n", 40}, "e1", "a")));
  // Not of this batch.
  EXPECT_FALSE(v.apply(tagged(started("zz", "z"), "zz", "z")));
}

TEST(BatchView, FailedAndRunningFiltersAndTheReRunTakesTheFailedOnes) {
  batch_view v("b1");
  v.apply_record(record_of({{"a", "e1"}, {"b", "e2"}, {"down", "e3"}, {"c", "e4"}}));
  v.apply(tagged(started("e1", "a"), "e1", "a"));
  v.apply(tagged(common::exit_event{1, 0, std::nullopt, common::exit_state::exited, 10}, "e1", "a"));
  v.apply(tagged(started("e2", "b"), "e2", "b"));
  v.apply(tagged(common::exit_event{1, 3, std::nullopt, common::exit_state::exited, 10}, "e2", "b"));
  v.apply(tagged(common::output_event{0, common::output_stream::err, "cmdcast: cannot connect\n", 0}, "e3", "down"));
  v.apply(tagged(common::exit_event{1, std::nullopt, std::nullopt, common::exit_state::failed, 0}, "e3", "down"));
  v.apply(tagged(common::exit_event{0, std::nullopt, std::nullopt, common::exit_state::cancelled, 0}, "e4", "c"));
  std::vector<std::string> failed;
  for (const auto& r : v.rows(batch_filter::failed)) failed.push_back(r.machine_id);
  EXPECT_EQ(failed, (std::vector<std::string>{"b", "down"})) << "cancelled is not failed";
  EXPECT_EQ(v.failed_machines(), failed);
  EXPECT_EQ(v.rows()[2].last_line, "cmdcast: cannot connect");
  EXPECT_EQ(v.rows()[2].state, "failed");
  EXPECT_TRUE(v.rows(batch_filter::running).empty());
  EXPECT_EQ(v.rows(batch_filter::all).size(), 4u);
}

TEST(BatchView, ResumeNamesEachExecutionsOwnLastSeq) {
  batch_view v("b1");
  v.apply_record(record_of({{"a", "e1"}, {"b", "e2"}, {"c", "e3"}}));
  EXPECT_EQ(v.resume_after(), "") << "nothing yet: every execution from its first event";
  v.apply(tagged(started("e1", "a"), "e1", "a"));
  v.apply(tagged(common::output_event{1, common::output_stream::out, "x\n", 1}, "e1", "a"));
  v.apply(tagged(started("e3", "c"), "e3", "c"));
  EXPECT_EQ(v.resume_after(), "e1:1,e3:0");
  EXPECT_EQ(v.execution_of("c"), "e3");
  ASSERT_NE(v.member("e1"), nullptr);
  EXPECT_EQ(v.member("e1")->tail(1), std::vector<std::string>{"x"});
}

TEST(BatchView, SummariesCarryTheCountsAndTheEnd) {
  batch_view v("b1");
  v.apply_record(record_of({{"a", "e1"}, {"b", "e2"}}));
  EXPECT_FALSE(v.finished());
  v.apply(tagged(common::batch_event{"b1", "running", {0, 1, 1, 0, 0}}, "", ""));
  EXPECT_EQ(v.ended(), 1);
  v.apply(tagged(common::batch_event{"b1", "failed", {0, 0, 1, 1, 0}}, "", ""));
  EXPECT_TRUE(v.finished());
  EXPECT_EQ(v.state(), "failed");
  // An older record does not take the summary back.
  v.apply_record(record_of({{"a", "e1"}, {"b", "e2"}}));
  EXPECT_EQ(v.state(), "failed");
}

TEST(BatchView, EventsBeforeTheRecordAddMembersInTheirOrder) {
  batch_view v("b1");
  v.apply(tagged(started("e2", "b"), "e2", "b"));
  v.apply(tagged(started("e1", "a"), "e1", "a"));
  v.apply_record(record_of({{"a", "e1"}, {"b", "e2"}}));
  ASSERT_EQ(v.size(), 2u);
  EXPECT_EQ(v.rows()[0].state, "running");
  EXPECT_EQ(v.rows()[1].state, "running");
}

TEST(BatchView, RoutesAndTitles) {
  EXPECT_EQ(parse_route("#/batches/b1"), (route{route::kind::batch, "b1", std::nullopt}));
  EXPECT_EQ(parse_route("#/batches/"), route{});
  EXPECT_EQ(batch_route("b1"), "#/batches/b1");
  EXPECT_EQ(batch_title_text("running", 3, 5, "apt_upgrade", "web"), "⟳ 3/5 apt_upgrade · web");
  EXPECT_EQ(batch_title_text("succeeded", 5, 5, "apt_upgrade", "web"), "✓ apt_upgrade · web");
  EXPECT_EQ(batch_title_text("failed", 5, 5, "apt_upgrade", "web"), "✗ apt_upgrade · web");
  EXPECT_EQ(batch_title_text("cancelled", 5, 5, "apt_upgrade", "web"), "✗ apt_upgrade · web");
}

}  // namespace
}  // namespace cmdcast::client
