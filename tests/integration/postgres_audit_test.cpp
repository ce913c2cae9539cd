// The audit in PostgreSQL ([audit] postgres) against a real PostgreSQL 15 of the test's own:
// first the store on its own (several server ids, an unreachable database, a bad conninfo),
// then cmdcast-server as a process with a loopback sshd (replay after a restart, two servers
// sharing one database, the database stopped mid-run, hostile values).
#include <gtest/gtest.h>

#include <boost/asio/co_spawn.hpp>

#include <chrono>
#include <thread>

#include "audit/audit_store.hpp"
#include "postgres_fixture.hpp"
#include "server_harness.hpp"
#include "support/log.hpp"

namespace cmdcast::testing {
namespace {

using clock_type = std::chrono::steady_clock;
using server::audit_store;

/// Runs `io` until `done()` or `limit` has passed; whether done() came true.
bool run_until(net::io_context& io, const std::function<bool()>& done, std::chrono::seconds limit = std::chrono::seconds(15)) {
  const auto deadline = clock_type::now() + limit;
  while (!done() && clock_type::now() < deadline) {
    io.restart();
    io.run_for(std::chrono::milliseconds(10));
  }
  return done();
}

/// Polls `check` every 50 ms for up to `limit`.
bool eventually(const std::function<bool()>& check, std::chrono::seconds limit = std::chrono::seconds(20)) {
  const auto deadline = clock_type::now() + limit;
  while (clock_type::now() < deadline) {
    if (check()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return check();
}

/// Awaits `a` on `io` (run until it completes).
template <class T>
T await(net::io_context& io, net::awaitable<T> a) {
  std::optional<T> out;
  net::co_spawn(io, std::move(a), [&out](const std::exception_ptr&, T v) { out = std::move(v); });
  EXPECT_TRUE(run_until(io, [&] { return out.has_value(); }));
  return out ? std::move(*out) : T{};
}

/// Saves `s` and runs `io` until it is written (or not).
bool save(net::io_context& io, audit_store& store, server::audit_save s, server::save_retry retry = server::save_retry::once) {
  std::optional<bool> written;
  store.async_save(std::move(s), retry, io.get_executor(), [&written](bool w) { written = w; });
  EXPECT_TRUE(run_until(io, [&] { return written.has_value(); }));
  return written.value_or(false);
}

/// The rows of `sql`; none while the server has not made the tables yet.
std::vector<std::string> rows_of(const postgres_server& pg, const std::string& sql, const std::vector<std::string>& params) {
  try {
    return pg.query(sql, params);
  } catch (const std::exception&) {
    return {};
  }
}

/// The stored events of `id`, decoded, in seq order.
std::vector<event> stored_events(const postgres_server& pg, const std::string& id) {
  std::vector<event> out;
  for (const auto& frame : rows_of(pg, "SELECT frame FROM events WHERE execution_id = $1 ORDER BY seq", {id})) {
    auto e = common::decode_event(frame);
    EXPECT_TRUE(e.ok()) << frame;
    if (e.ok()) out.push_back(*e);
  }
  return out;
}

std::string stored_state(const postgres_server& pg, const std::string& id) {
  const auto rows = rows_of(pg, "SELECT state FROM executions WHERE id = $1", {id});
  return rows.empty() ? "" : rows.front();
}

void wait_until_finished(std::uint16_t port, const std::string& id) {
  ASSERT_TRUE(eventually([&] { return record_of(port, id).state != "running"; }, std::chrono::seconds(60)));
}

TEST(PostgresAuditStore, ARestartedServerMarksOnlyItsOwnLeftoverRunsLost) {
  postgres_server pg;
  net::io_context io;
  {
    auto a = audit_store::open_postgres(pg.conninfo(), "a", io.get_executor());
    auto b = audit_store::open_postgres(pg.conninfo(), "b", io.get_executor());
    ASSERT_TRUE(a.ok() && b.ok());
    server::audit_save sa{running_record("run-a"), {{0, output_frame(0, "from a\n")}}, {}};
    server::audit_save sb{running_record("run-b"), {{0, output_frame(0, "from b\n")}}, {}};
    EXPECT_TRUE(save(io, **a, sa));
    EXPECT_TRUE(save(io, **b, sb));
    EXPECT_FALSE((*a)->degraded());
    // Server a goes away with its run unfinished; b goes on.
  }
  EXPECT_EQ(stored_state(pg, "run-a"), "running");
  auto again = audit_store::open_postgres(pg.conninfo(), "a", io.get_executor());
  ASSERT_TRUE(again.ok());
  // Its first read comes after the first connection, which marks the leftovers.
  const auto record = await(io, (*again)->async_record("run-a"));
  ASSERT_TRUE(record);
  EXPECT_EQ(record->state, "lost");
  EXPECT_EQ((*again)->lost_at_open(), 1u);
  EXPECT_EQ(stored_state(pg, "run-b"), "running");
  const auto events = stored_events(pg, "run-a");
  ASSERT_EQ(events.size(), 2u);
  EXPECT_EQ(std::get<common::exit_event>(events[1]).state, common::exit_state::lost);
  // Each sees the other's runs.
  const auto all = await(io, (*again)->async_list("all", "", 10));
  EXPECT_EQ(all.size(), 2u);
  EXPECT_EQ(pg.query("SELECT server_id FROM executions ORDER BY id"), (std::vector<std::string>{"a", "b"}));
}

TEST(PostgresAuditStore, EventsTheStoreCutReadBackWithAGapAsInSqlite) {
  postgres_server pg;
  net::io_context io;
  auto store = audit_store::open_postgres(pg.conninfo(), "", io.get_executor());
  ASSERT_TRUE(store.ok());
  server::audit_save s{running_record("cut"), {}, {}};
  for (common::seq_t seq = 0; seq < 6; ++seq) s.add.push_back({seq, output_frame(seq, "line " + std::to_string(seq) + "\n")});
  EXPECT_TRUE(save(io, **store, s));
  server::audit_save drop{running_record("cut"), {}, std::pair<common::seq_t, common::seq_t>{2, 3}};
  EXPECT_TRUE(save(io, **store, drop));
  const auto events = await(io, (*store)->async_events_after("cut", -1, 1 << 20));
  ASSERT_EQ(events.size(), 5u);  // 0, 1, the gap, 4, 5
  const auto gap = common::decode_event(events[2].frame);
  ASSERT_TRUE(gap.ok());
  EXPECT_EQ(std::get<common::gap_event>(*gap), (common::gap_event{3, 2, 3}));
  EXPECT_EQ(events[3].seq, 4);
  EXPECT_EQ(await(io, (*store)->async_last_seq("cut")), 5);
  EXPECT_EQ(await(io, (*store)->async_last_seq("none")), -1);
}

TEST(PostgresAuditStore, UnreachableAtStartItIsDegradedAnswersReadsAtOnceAndWritesOnceItIsUp) {
  postgres_server pg;
  pg.stop();
  net::io_context io;
  auto store = audit_store::open_postgres(pg.conninfo(), "", io.get_executor());
  ASSERT_TRUE(store.ok()) << "an unreachable database is no reason not to start";
  EXPECT_TRUE(run_until(io, [&] { return (*store)->degraded(); }));
  const auto asked = clock_type::now();
  EXPECT_TRUE(await(io, (*store)->async_list("all", "", 10)).empty());
  EXPECT_FALSE(await(io, (*store)->async_record("late")));
  EXPECT_LT(clock_type::now() - asked, std::chrono::seconds(1));

  std::optional<bool> written;
  server::audit_save s{running_record("late"), {{0, output_frame(0, "kept in memory\n")}}, {}};
  (*store)->async_save(s, server::save_retry::once, io.get_executor(), [&written](bool w) { written = w; });
  run_until(io, [] { return false; }, std::chrono::seconds(1));
  EXPECT_FALSE(written) << "a save waits for the database, it is not given up";
  pg.start();
  EXPECT_TRUE(run_until(io, [&] { return written.has_value(); }));
  EXPECT_TRUE(written.value_or(false));
  EXPECT_FALSE((*store)->degraded());
  EXPECT_EQ(stored_state(pg, "late"), "running");
  EXPECT_EQ(common::decode_event(pg.query("SELECT frame FROM events WHERE execution_id = 'late'").at(0))->index(),
            event{common::output_event{}}.index());
}

TEST(PostgresAuditStore, AConninfoLibpqCannotParseIsAClearError) {
  net::io_context io;
  auto store = audit_store::open_postgres("host=/tmp port", "", io.get_executor());
  ASSERT_FALSE(store.ok());
  EXPECT_NE(store.error().find("[audit] postgres: not a libpq connection string"), std::string::npos) << store.error();
}

TEST(PostgresAudit, AFinishedRunIsReplayedWholeFromPostgresAfterARestart) {
  postgres_server pg;
  loopback_sshd sshd;
  const std::string small_replay = "replay_bytes = 4096\n";
  std::string id;
  std::vector<event> streamed;
  {
    server_process first(sshd, small_replay, {}, pg.audit_toml());
    ws_client runner(first.port(), "/machines/box/commands/stream");
    runner.send(run_request("numbers", R"({"count":"5000"})"));
    streamed = runner.all();
    ASSERT_FALSE(streamed.empty());
    id = std::get<common::started_event>(streamed.front()).execution_id;
    wait_until_finished(first.port(), id);
    EXPECT_TRUE(eventually([&] { return stored_state(pg, id) == "exited"; }));
    EXPECT_EQ(first.terminate(), 0);
  }
  server_process second(sshd, small_replay, {}, pg.audit_toml());
  EXPECT_EQ(record_of(second.port(), id).state, "exited");
  ws_client replay(second.port(), "/executions/" + id + "/stream");
  const auto replayed = replay.all();
  const auto expected = text_of(streamed, common::output_stream::out);
  EXPECT_EQ(expected.size(), 23893u);  // "1\n" .. "5000\n"
  EXPECT_EQ(text_of(replayed, common::output_stream::out), expected);
  EXPECT_TRUE(of_type<common::gap_event>(replayed).empty());
  ASSERT_EQ(of_type<common::exit_event>(replayed).size(), 1u);
  EXPECT_EQ(of_type<common::exit_event>(replayed).front().state, common::exit_state::exited);
  EXPECT_EQ(sequenced(replayed), sequenced(streamed));
  EXPECT_EQ(count_events(second.log(), "audit_connected"), 2u);  // one log for both servers
}

TEST(PostgresAudit, TwoServersSharingOnePostgresSeeEachOthersRuns) {
  postgres_server pg;
  loopback_sshd sshd_one, sshd_two;
  server_process one(sshd_one, "", {}, pg.audit_toml());
  server_process two(sshd_two, "", {}, pg.audit_toml());
  const std::string on_one = post_run(one.port(), run_request("lines"));
  const std::string on_two = post_run(two.port(), run_request("fail"));
  wait_until_finished(one.port(), on_one);
  wait_until_finished(two.port(), on_two);
  ASSERT_TRUE(eventually([&] { return stored_state(pg, on_one) == "exited" && stored_state(pg, on_two) == "exited"; }));
  for (const auto* s : {&one, &two}) {
    const auto list = http_request(s->port(), http::verb::get, "/executions?state=all", viewer_token);
    EXPECT_EQ(list.status, 200u);
    EXPECT_NE(list.body.find(on_one), std::string::npos) << list.body;
    EXPECT_NE(list.body.find(on_two), std::string::npos) << list.body;
  }
  const auto other = record_of(one.port(), on_two);
  EXPECT_EQ(other.state, "exited");
  EXPECT_EQ(other.exit_code, 3);
  EXPECT_EQ(record_of(two.port(), on_one).action_type, "lines");
  // The other's output, from the store.
  const auto events = poll_to_the_end(one.port(), on_two);
  EXPECT_EQ(text_of(events, common::output_stream::err), "oops\n");
}

TEST(PostgresAudit, PostgresStoppedMidRunThenStartedTheOutputEndsUpWholeInTheStore) {
  postgres_server pg;
  loopback_sshd sshd;
  server_process srv(sshd, "", {}, pg.audit_toml() + R"(
[actions.count_slowly]
command = "for i in $(seq 30); do echo count $i; sleep 0.1; done"
)");
  const std::string id = post_run(srv.port(), run_request("count_slowly"));
  ASSERT_TRUE(eventually([&] { return !stored_events(pg, id).empty(); }));
  pg.stop();
  // The stream goes on meanwhile; the store is degraded once a write meets the closed database.
  ASSERT_TRUE(eventually([&] { return count_events(srv.log(), "audit_degraded") == 1; }));
  const auto live = poll_to_the_end(srv.port(), id);
  std::string expected;
  for (int i = 1; i <= 30; ++i) expected += "count " + std::to_string(i) + "\n";
  EXPECT_EQ(text_of(live, common::output_stream::out), expected);
  pg.start();
  ASSERT_TRUE(eventually([&] { return stored_state(pg, id) == "exited"; }));
  EXPECT_EQ(count_events(srv.log(), "audit_recovered"), 1u);
  const auto stored = stored_events(pg, id);
  EXPECT_EQ(text_of(stored, common::output_stream::out), expected);
  EXPECT_EQ(sequenced(stored), sequenced(live));
  EXPECT_TRUE(of_type<common::gap_event>(stored).empty());
}

TEST(PostgresAudit, AnUnreachablePostgresAtStartIsLoggedAndTheServerServes) {
  postgres_server pg;
  pg.stop();
  loopback_sshd sshd;
  server_process srv(sshd, "", {}, pg.audit_toml());
  ASSERT_TRUE(eventually([&] { return count_events(srv.log(), "audit_degraded") == 1; })) << srv.log();
  EXPECT_NE(srv.log().find("cannot be reached at start"), std::string::npos);
  const auto asked = clock_type::now();
  const auto list = http_request(srv.port(), http::verb::get, "/executions?state=all", viewer_token);
  EXPECT_EQ(list.status, 200u);
  EXPECT_LT(clock_type::now() - asked, std::chrono::seconds(1));
  const std::string id = post_run(srv.port(), run_request("lines"));
  wait_until_finished(srv.port(), id);
  pg.start();
  ASSERT_TRUE(eventually([&] { return stored_state(pg, id) == "exited"; }));
  EXPECT_EQ(text_of(stored_events(pg, id), common::output_stream::out), "line 1\nline 2\nline 3\n");
}

TEST(PostgresAudit, HostileValuesAreStoredVerbatim) {
  postgres_server pg;
  loopback_sshd sshd;
  server_process srv(sshd, "", {}, pg.audit_toml());
  const std::string hostile = "it's \"quoted\" $1 '); DROP TABLE executions;--";
  const std::string id = post_run(srv.port(), run_request("echo_value", R"({"value":"it's \"quoted\" $1 '); DROP TABLE executions;--"})"));
  wait_until_finished(srv.port(), id);
  ASSERT_TRUE(eventually([&] { return stored_state(pg, id) == "exited"; }));
  const auto stored = common::decode_execution_record(pg.query("SELECT record FROM executions WHERE id = $1", {id}).at(0));
  ASSERT_TRUE(stored.ok());
  EXPECT_EQ(stored->params.at("value"), hostile);
  EXPECT_EQ(text_of(stored_events(pg, id), common::output_stream::out), hostile);
  EXPECT_EQ(pg.query("SELECT count(*) FROM executions"), std::vector<std::string>{"1"});
}

}  // namespace
}  // namespace cmdcast::testing
