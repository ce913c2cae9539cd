// The audit in PostgreSQL ([audit] postgres) against a real PostgreSQL 15 of the test's own:
// first the store on its own (several server ids, an unreachable database, a bad conninfo),
// then cmdcast-server as a process with a loopback sshd (replay after a restart, two servers
// sharing one database, the database stopped mid-run, hostile values); then the paths a
// database that misbehaves takes: the bounded queue while it is down, batches, retention, and
// a write that never gets an answer (a lock held elsewhere).
#include <gtest/gtest.h>
#include <libpq-fe.h>

#include <boost/asio/co_spawn.hpp>

#include <chrono>
#include <memory>
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

/// Another session holding `LOCK TABLE executions, events IN ACCESS EXCLUSIVE MODE` in an open
/// transaction, as an admin's forgotten psql or a long migration would: every write of the
/// store (and every read of those tables) waits until release().
class table_lock {
 public:
  explicit table_lock(const postgres_server& pg) : c_(PQconnectdb(pg.conninfo().c_str()), &PQfinish) {
    if (PQstatus(c_.get()) != CONNECTION_OK) throw std::runtime_error(PQerrorMessage(c_.get()));
    exec("BEGIN");
    exec("LOCK TABLE executions, events IN ACCESS EXCLUSIVE MODE");
  }
  void release() { exec("COMMIT"); }

 private:
  void exec(const char* sql) {
    const std::unique_ptr<PGresult, decltype(&PQclear)> r(PQexec(c_.get(), sql), &PQclear);
    if (PQresultStatus(r.get()) != PGRES_COMMAND_OK) throw std::runtime_error(sql + std::string(": ") + PQerrorMessage(c_.get()));
  }
  std::unique_ptr<PGconn, decltype(&PQfinish)> c_;
};

/// How many of the store's connections (libpq's application_name cmdcast-server) wait on a lock.
int store_sessions_waiting_on_a_lock(const postgres_server& pg) {
  return std::stoi(pg.query("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'cmdcast-server' "
                            "AND wait_event_type = 'Lock'")
                       .at(0));
}

std::string healthz(std::uint16_t port) { return http_request(port, http::verb::get, "/healthz", "").body; }

common::batch_record batch(const std::string& id, const std::string& state, const std::string& started_at) {
  common::batch_record b;
  b.batch_id = id;
  b.group = "pair";
  b.action_type = "lines";
  b.user = "olivia";
  b.started_at = started_at;
  b.state = state;
  b.parallel = 1;
  b.executions = {{"box", id + "-box", "running", std::nullopt, std::nullopt},
                  {"m2", id + "-m2", "queued", std::nullopt, std::nullopt}};
  b.counts.running = 1;
  b.counts.queued = 1;
  return b;
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

/// An action that prints "count 1" to "count N", a line every 0.1 s: a run that lasts while
/// the test breaks the database under it.
std::string count_slowly_action(int n) {
  return "\n[actions.count_slowly]\ncommand = \"for i in $(seq " + std::to_string(n) +
         "); do echo count $i; sleep 0.1; done\"\n";
}

/// What count_slowly prints.
std::string counted(int n) {
  std::string text;
  for (int i = 1; i <= n; ++i) text += "count " + std::to_string(i) + "\n";
  return text;
}

TEST(PostgresAudit, PostgresStoppedMidRunThenStartedTheOutputEndsUpWholeInTheStore) {
  postgres_server pg;
  loopback_sshd sshd;
  server_process srv(sshd, "", {}, pg.audit_toml() + count_slowly_action(30));
  const std::string id = post_run(srv.port(), run_request("count_slowly"));
  ASSERT_TRUE(eventually([&] { return !stored_events(pg, id).empty(); }));
  pg.stop();
  // The stream goes on meanwhile; the store is degraded once a write meets the closed database.
  ASSERT_TRUE(eventually([&] { return count_events(srv.log(), "audit_degraded") == 1; }));
  const auto live = poll_to_the_end(srv.port(), id);
  const std::string expected = counted(30);
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

TEST(PostgresAuditStore, WhilePostgresIsDownTheQueueHoldsAt64MiBOfOutputAndReadsBackWithAGap) {
  postgres_server pg;
  pg.stop();
  net::io_context io;
  auto store = audit_store::open_postgres(pg.conninfo(), "", io.get_executor());
  ASSERT_TRUE(store.ok());
  ASSERT_TRUE(run_until(io, [&] { return (*store)->degraded(); }));

  // 192 saves of 512 KiB of output each (96 MiB) while the database is down: an execution
  // printing fast. The store alone holds the frames (the test keeps weak references only).
  constexpr std::size_t limit = std::size_t{64} << 20;
  constexpr common::seq_t saves = 192;
  const std::string chunk(512 * 1024, 'x');
  std::vector<std::weak_ptr<const std::string>> frames;
  std::size_t done = 0, written = 0;
  auto count = [&done, &written](bool w) {
    ++done;
    written += w ? 1 : 0;
  };
  auto held = [&frames] {
    std::size_t bytes = 0;
    for (const auto& f : frames) {
      if (const auto alive = f.lock()) bytes += alive->size();
    }
    return bytes;
  };
  std::size_t most_held = 0;
  for (common::seq_t seq = 0; seq < saves; ++seq) {
    auto frame = output_frame(seq, chunk);
    frames.push_back(frame);
    server::audit_save s{running_record("big"), {{seq, std::move(frame)}}, {}};
    (*store)->async_save(std::move(s), server::save_retry::once, io.get_executor(), count);
    io.restart();
    io.poll();
    most_held = std::max(most_held, held());
  }
  // The last save (the exit) is kept whatever the bound.
  auto last = running_record("big");
  last.state = "exited";
  last.exit_code = 0;
  common::exit_event exit;
  exit.seq = saves;
  exit.code = 0;
  exit.state = common::exit_state::exited;
  server::audit_save final_save{last, {{saves, std::make_shared<const std::string>(common::encode(event{exit}))}}, {}};
  (*store)->async_save(std::move(final_save), server::save_retry::until_written, io.get_executor(), count);
  io.restart();
  io.poll();
  most_held = std::max(most_held, held());
  EXPECT_EQ(done, 0u) << "nothing is given up while the database is down";
  EXPECT_LE(most_held, limit) << "memory is bounded";
  EXPECT_GT(held(), limit - 2 * (chunk.size() + 64))
      << "it keeps as much as the bound allows";
  // What it keeps is the newest output: the oldest went first.
  common::seq_t first_kept = 0;
  while (first_kept < saves && frames[static_cast<std::size_t>(first_kept)].expired()) ++first_kept;
  EXPECT_GT(first_kept, 0);
  for (auto seq = first_kept; seq < saves; ++seq) EXPECT_FALSE(frames[static_cast<std::size_t>(seq)].expired()) << seq;

  pg.start();
  ASSERT_TRUE(run_until(io, [&] { return done == saves + 1; }, std::chrono::seconds(60)));
  EXPECT_EQ(written, done) << "a save whose output went still writes its record";
  EXPECT_FALSE((*store)->degraded());
  EXPECT_EQ(held(), 0u);

  // A reader gets a gap for what was dropped, then the output kept, then the exit.
  const auto events = await(io, (*store)->async_events_after("big", -1, std::size_t{1} << 30));
  ASSERT_EQ(events.size(), static_cast<std::size_t>(saves - first_kept + 2));
  const auto gap = common::decode_event(events.front().frame);
  ASSERT_TRUE(gap.ok());
  EXPECT_EQ(std::get<common::gap_event>(*gap), (common::gap_event{first_kept - 1, 0, first_kept - 1}));
  for (std::size_t i = 1; i + 1 < events.size(); ++i) {
    EXPECT_EQ(events[i].seq, first_kept + static_cast<common::seq_t>(i) - 1);
    const auto e = common::decode_event(events[i].frame);
    ASSERT_TRUE(e.ok());
    EXPECT_EQ(std::get<common::output_event>(*e).data, chunk);
  }
  EXPECT_EQ(std::get<common::exit_event>(*common::decode_event(events.back().frame)).state, common::exit_state::exited);
  const auto record = await(io, (*store)->async_record("big"));
  ASSERT_TRUE(record);
  EXPECT_EQ(record->state, "exited");
  EXPECT_TRUE(record->output_truncated);
}

TEST(PostgresAuditStore, BatchRecordsWrittenAtStartAndEndReadBackFromAnotherServersStore) {
  postgres_server pg;
  net::io_context io;
  auto a = audit_store::open_postgres(pg.conninfo(), "a", io.get_executor());
  auto b = audit_store::open_postgres(pg.conninfo(), "b", io.get_executor());
  ASSERT_TRUE(a.ok() && b.ok());
  const auto older = batch("older", "running", "2024-05-01T09:00:00.000Z");
  const auto started = batch("fleet", "running", "2024-05-01T10:00:00.000Z");
  EXPECT_TRUE(await(io, (*b)->async_save_batch(older)));
  EXPECT_TRUE(await(io, (*a)->async_save_batch(started)));
  auto from_b = await(io, (*b)->async_batches("fleet", 1));
  ASSERT_EQ(from_b.size(), 1u);
  EXPECT_EQ(from_b.front(), started);

  auto ended = started;
  ended.state = "failed";
  ended.ended_at = "2024-05-01T10:00:05.000Z";
  ended.executions[0].state = "exited";
  ended.executions[0].exit_code = 0;
  ended.executions[1].state = "exited";
  ended.executions[1].exit_code = 3;
  ended.counts = {0, 0, 1, 1, 0};
  EXPECT_TRUE(await(io, (*a)->async_save_batch(ended)));
  from_b = await(io, (*b)->async_batches("fleet", 1));
  ASSERT_EQ(from_b.size(), 1u);
  EXPECT_EQ(from_b.front(), ended) << "the end replaces the start";
  const auto list = await(io, (*b)->async_batches("", 10));
  ASSERT_EQ(list.size(), 2u);
  EXPECT_EQ(list[0], ended) << "newest first";
  EXPECT_EQ(list[1], older);
  EXPECT_EQ(await(io, (*a)->async_batches("", 1)), std::vector<common::batch_record>{ended});
  EXPECT_TRUE(await(io, (*a)->async_batches("none", 1)).empty());
  EXPECT_EQ(pg.query("SELECT id, server_id, state FROM batches ORDER BY id"),
            (std::vector<std::string>{"fleet|a|failed", "older|b|running"}));

  // Server a restarts with a batch of its own running: that one is lost, b's is not.
  EXPECT_TRUE(await(io, (*a)->async_save_batch(batch("left", "running", "2024-05-01T11:00:00.000Z"))));
  (*a).reset();
  auto again = audit_store::open_postgres(pg.conninfo(), "a", io.get_executor());
  ASSERT_TRUE(again.ok());
  const auto left = await(io, (*again)->async_batches("left", 1));
  ASSERT_EQ(left.size(), 1u);
  EXPECT_EQ(left.front().state, "lost");
  EXPECT_TRUE(left.front().ended_at);
  EXPECT_EQ(await(io, (*again)->async_batches("older", 1)).at(0).state, "running");
  EXPECT_EQ(await(io, (*again)->async_batches("fleet", 1)).at(0), ended);
}

TEST(PostgresAudit, AFleetRunsBatchIsReadFromASecondServerSharingTheDatabase) {
  postgres_server pg;
  loopback_sshd sshd_one, sshd_two;
  server_process one(sshd_one, "", {},
                     pg.audit_toml() + "[cluster]\nserver_id = \"one\"\n" + sshd_one.machine_toml("m2") +
                         "[groups]\npair = [\"box\", \"m2\"]\n");
  server_process two(sshd_two, "", {}, pg.audit_toml() + "[cluster]\nserver_id = \"two\"\n");
  const auto answer = http_request(one.port(), http::verb::post, "/groups/pair/commands", operator_token, run_request("fail"));
  ASSERT_EQ(answer.status, 202u) << answer.body;
  const auto started = common::decode_batch_record(answer.body);
  ASSERT_TRUE(started.ok()) << answer.body;
  const std::string id = started->batch_id;
  // Written at its start: the other server has it while it runs or once it ended.
  ASSERT_TRUE(eventually([&] { return http_request(two.port(), http::verb::get, "/batches/" + id, viewer_token).status == 200; }));
  ws_client(one.port(), "/batches/" + id + "/stream", ws_options{viewer_token}).all();
  common::batch_record on_one, on_two;
  ASSERT_TRUE(eventually([&] {
    const auto mine = common::decode_batch_record(http_request(one.port(), http::verb::get, "/batches/" + id, viewer_token).body);
    if (mine.ok()) on_one = *mine;
    const auto got = common::decode_batch_record(http_request(two.port(), http::verb::get, "/batches/" + id, viewer_token).body);
    if (!got.ok()) return false;
    on_two = *got;
    return on_two.state != "running";
  }));
  EXPECT_EQ(on_two.state, "failed");
  EXPECT_EQ(on_two.counts.failed, 2);
  ASSERT_EQ(on_two.executions.size(), 2u);
  EXPECT_EQ(on_two.executions[0].machine_id, "box");
  EXPECT_EQ(on_two.executions[1].machine_id, "m2");
  for (const auto& m : on_two.executions) {
    EXPECT_EQ(m.state, "exited") << m.machine_id;
    EXPECT_EQ(m.exit_code, 3) << m.machine_id;
    EXPECT_EQ(record_of(two.port(), m.execution_id).exit_code, 3) << m.machine_id;
  }
  EXPECT_EQ(on_two, on_one);
  const auto list = http_request(two.port(), http::verb::get, "/batches", viewer_token);
  EXPECT_EQ(list.status, 200u);
  EXPECT_NE(list.body.find(id), std::string::npos) << list.body;
  EXPECT_EQ(pg.query("SELECT server_id, state FROM batches WHERE id = $1", {id}), std::vector<std::string>{"one|failed"});
}

TEST(PostgresAudit, ExecutionsPastTheRetentionArePrunedFromPostgresAtStartUp) {
  postgres_server pg;
  loopback_sshd sshd;
  const std::string retention = "audit_retention_days = 7\n";
  std::string old_id, new_id;
  {
    server_process first(sshd, retention, {}, pg.audit_toml());
    old_id = post_run(first.port(), run_request("lines"));
    new_id = post_run(first.port(), run_request("lines"));
    wait_until_finished(first.port(), old_id);
    wait_until_finished(first.port(), new_id);
    ASSERT_TRUE(eventually([&] { return stored_state(pg, old_id) == "exited" && stored_state(pg, new_id) == "exited"; }));
    EXPECT_EQ(first.terminate(), 0);
  }
  // Aged by hand: one finished run started eight days ago, and another server's run of long
  // ago still running (never pruned: it has not ended).
  const auto eight_days_ago = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now() - std::chrono::hours(24 * 8));
  char started[32];
  std::strftime(started, sizeof started, "%Y-%m-%dT%H:%M:%S.000Z", std::gmtime(&eight_days_ago));
  pg.query("UPDATE executions SET started_at = $1 WHERE id = $2", {started, old_id});
  pg.query("INSERT INTO executions (id, server_id, machine_id, action_type, user_name, state, started_at, record) "
           "SELECT 'old-running', 'elsewhere', machine_id, action_type, user_name, 'running', $1, record "
           "FROM executions WHERE id = $2",
           {started, new_id});
  ASSERT_FALSE(stored_events(pg, old_id).empty());

  server_process second(sshd, retention, {}, pg.audit_toml());
  ASSERT_TRUE(eventually([&] { return count_events(second.log(), "audit_pruned") == 1; })) << second.log();
  EXPECT_NE(second.log().find(R"("event":"audit_pruned","executions":"1")"), std::string::npos) << second.log();
  EXPECT_TRUE(rows_of(pg, "SELECT id FROM executions WHERE id = $1", {old_id}).empty());
  EXPECT_TRUE(stored_events(pg, old_id).empty()) << "its output goes with it";
  EXPECT_EQ(http_request(second.port(), http::verb::get, "/executions/" + old_id, viewer_token).status, 404u);
  EXPECT_EQ(stored_state(pg, "old-running"), "running");
  EXPECT_EQ(record_of(second.port(), new_id).state, "exited");
  EXPECT_EQ(text_of(poll_to_the_end(second.port(), new_id), common::output_stream::out), "line 1\nline 2\nline 3\n");
}

TEST(PostgresAuditStore, AWriteALockHoldsIsCancelledAtTheTimeoutDegradedAndWrittenOnceReleased) {
  postgres_server pg;
  net::io_context io;
  server::postgres_limits limits;
  limits.statement_timeout = std::chrono::seconds(1);
  auto store = audit_store::open_postgres(pg.conninfo(), "", io.get_executor(), limits);
  ASSERT_TRUE(store.ok());
  ASSERT_TRUE(save(io, **store, {running_record("before"), {{0, output_frame(0, "before\n")}}, {}}));

  table_lock lock(pg);
  std::optional<bool> written;
  server::audit_save s{running_record("held"), {}, {}};
  for (common::seq_t seq = 0; seq < 3; ++seq) s.add.push_back({seq, output_frame(seq, "held " + std::to_string(seq) + "\n")});
  (*store)->async_save(s, server::save_retry::until_written, io.get_executor(), [&written](bool w) { written = w; });
  ASSERT_TRUE(run_until(io, [&] { return (*store)->degraded(); }, std::chrono::seconds(5)))
      << "a write with no answer degrades the store";
  // Several timeouts later: each was cancelled, so only the retry under way waits on the lock
  // (not one abandoned backend per timeout, each holding a connection slot).
  run_until(io, [] { return false; }, std::chrono::seconds(4));
  EXPECT_FALSE(written);
  EXPECT_TRUE((*store)->degraded());
  EXPECT_TRUE(eventually([&] { return store_sessions_waiting_on_a_lock(pg) <= 1; }, std::chrono::seconds(3)))
      << store_sessions_waiting_on_a_lock(pg);
  // Degraded, reads answer at once (empty) instead of waiting behind the write.
  const auto asked = clock_type::now();
  EXPECT_TRUE(await(io, (*store)->async_list("all", "", 10)).empty());
  EXPECT_LT(clock_type::now() - asked, std::chrono::milliseconds(500));

  lock.release();
  ASSERT_TRUE(run_until(io, [&] { return written.has_value(); }));
  EXPECT_TRUE(*written);
  EXPECT_FALSE((*store)->degraded());
  EXPECT_EQ(text_of(stored_events(pg, "held"), common::output_stream::out), "held 0\nheld 1\nheld 2\n");
  EXPECT_EQ(await(io, (*store)->async_list("all", "", 10)).size(), 2u);
  EXPECT_TRUE(eventually([&] { return store_sessions_waiting_on_a_lock(pg) == 0; }));
  EXPECT_EQ(pg.query("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'cmdcast-server'"),
            std::vector<std::string>{"1"})
      << "the connections given up on are gone";
}

TEST(PostgresAudit, ATableLockedElsewhereDegradesHealthzStreamsGoOnAndItRecoversOnRelease) {
  postgres_server pg;
  loopback_sshd sshd;
  server_process srv(sshd, "", {}, pg.audit_toml() + count_slowly_action(20));
  ASSERT_TRUE(eventually([&] { return healthz(srv.port()) == "ok"; }));
  const std::string id = post_run(srv.port(), run_request("count_slowly"));
  ASSERT_TRUE(eventually([&] { return !stored_events(pg, id).empty(); }));
  table_lock lock(pg);
  // The stream does not wait for the audit.
  const auto live = poll_to_the_end(srv.port(), id);
  const std::string expected = counted(20);
  EXPECT_EQ(text_of(live, common::output_stream::out), expected);
  // After the statement timeout (30 s) the store says it cannot write.
  ASSERT_TRUE(eventually([&] { return healthz(srv.port()) != "ok"; }, std::chrono::seconds(45)));
  EXPECT_EQ(healthz(srv.port()), "degraded: postgres unreachable");
  EXPECT_EQ(count_events(srv.log(), "audit_degraded"), 1u) << srv.log();
  EXPECT_NE(srv.log().find("no answer within 30000 ms"), std::string::npos) << srv.log();
  const auto asked = clock_type::now();
  EXPECT_EQ(http_request(srv.port(), http::verb::get, "/executions?state=all", viewer_token).status, 200u);
  EXPECT_LT(clock_type::now() - asked, std::chrono::seconds(1)) << "degraded, reads do not wait";
  // The live run is still there for watchers.
  EXPECT_EQ(record_of(srv.port(), id).state, "exited");

  lock.release();
  ASSERT_TRUE(eventually([&] { return healthz(srv.port()) == "ok"; }, std::chrono::seconds(10)));
  ASSERT_TRUE(eventually([&] { return stored_state(pg, id) == "exited"; }));
  EXPECT_EQ(count_events(srv.log(), "audit_recovered"), 1u);
  const auto stored = stored_events(pg, id);
  EXPECT_EQ(text_of(stored, common::output_stream::out), expected);
  EXPECT_EQ(sequenced(stored), sequenced(live));
  EXPECT_EQ(pg.query("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'cmdcast-server'"),
            std::vector<std::string>{"1"});
}

TEST(PostgresAudit, AServerStoppedWhileATableIsLockedExitsWithinTheDrainTime) {
  postgres_server pg;
  loopback_sshd sshd;
  server_process srv(sshd, "", {}, pg.audit_toml());
  // Once it has made its tables.
  ASSERT_TRUE(eventually([&] { return !rows_of(pg, "SELECT count(*) FROM executions", {}).empty(); }));
  table_lock lock(pg);
  const std::string id = post_run(srv.port(), run_request("lines"));
  wait_until_finished(srv.port(), id);
  const auto asked = clock_type::now();
  EXPECT_EQ(srv.terminate(), 0);
  EXPECT_LT(clock_type::now() - asked, std::chrono::seconds(15)) << "not held by a statement waiting on a lock";
  EXPECT_EQ(count_events(srv.log(), "audit_unwritten"), 1u) << srv.log();
  lock.release();
}

}  // namespace
}  // namespace cmdcast::testing
