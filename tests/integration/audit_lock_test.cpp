// The audit store against a database another process holds locked (a backup, an admin's
// sqlite3 shell): streams go on, writes wait and are retried, nothing unwritten counts as
// written. First the store and output_audit on their own with a real SQLite file, then
// cmdcast-server as a process.
#include <gtest/gtest.h>
#include <sqlite3.h>
#include <stdlib.h>

#include <boost/asio/co_spawn.hpp>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <thread>

#include "audit/audit_store.hpp"
#include "audit/output_audit.hpp"
#include "server_harness.hpp"
#include "support/log.hpp"

namespace cmdcast::testing {
namespace {

using clock_type = std::chrono::steady_clock;
using server::audit_store;
using server::output_audit;

/// A fresh folder, removed afterwards.
struct temp_dir {
  temp_dir() {
    char name[] = "/tmp/cmdcast-audit-XXXXXX";
    path = ::mkdtemp(name);
  }
  ~temp_dir() { std::filesystem::remove_all(path); }
  std::string path;
};

/// A connection of its own to the database, as another process would have.
class other_connection {
 public:
  explicit other_connection(const std::string& path) {
    EXPECT_EQ(sqlite3_open(path.c_str(), &db_), SQLITE_OK);
    sqlite3_busy_timeout(db_, 5000);  // the server may be writing just then
  }
  ~other_connection() { sqlite3_close(db_); }
  other_connection(const other_connection&) = delete;
  other_connection& operator=(const other_connection&) = delete;

  void exec(const std::string& sql) {
    ASSERT_EQ(sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, nullptr), SQLITE_OK) << sql << ": " << sqlite3_errmsg(db_);
  }
  /// The stored seqs of an execution, in order.
  std::vector<common::seq_t> seqs(const std::string& id) {
    std::vector<common::seq_t> out;
    sqlite3_stmt* q = nullptr;
    sqlite3_prepare_v2(db_, "SELECT seq FROM events WHERE execution_id = ? ORDER BY seq", -1, &q, nullptr);
    sqlite3_bind_text(q, 1, id.c_str(), -1, SQLITE_TRANSIENT);
    while (sqlite3_step(q) == SQLITE_ROW) out.push_back(sqlite3_column_int64(q, 0));
    sqlite3_finalize(q);
    return out;
  }
  /// The stored state of an execution ("" when it has no record).
  std::string state(const std::string& id) {
    std::string out;
    sqlite3_stmt* q = nullptr;
    sqlite3_prepare_v2(db_, "SELECT state FROM executions WHERE id = ?", -1, &q, nullptr);
    sqlite3_bind_text(q, 1, id.c_str(), -1, SQLITE_TRANSIENT);
    if (sqlite3_step(q) == SQLITE_ROW) out = reinterpret_cast<const char*>(sqlite3_column_text(q, 0));
    sqlite3_finalize(q);
    return out;
  }

 private:
  sqlite3* db_ = nullptr;
};

std::vector<common::seq_t> range(common::seq_t from, common::seq_t to) {
  std::vector<common::seq_t> out;
  for (auto s = from; s <= to; ++s) out.push_back(s);
  return out;
}

TEST(AuditStore, ASaveThatMeetsALockStaysPendingAndALaterFlushWritesIt) {
  temp_dir dir;
  const std::string path = dir.path + "/audit.db";
  net::io_context io;
  auto store = audit_store::open(path);
  ASSERT_TRUE(store.ok()) << store.error();
  auto audit = std::make_shared<output_audit>(**store, io.get_executor(), 1 << 20, 1 << 20);
  other_connection other(path);
  auto record = running_record("e1");
  for (common::seq_t s = 0; s < 3; ++s) audit->add(s, output_frame(s, "line\n"), 5);

  // Locked: the save fails, and the data stays pending.
  other.exec("BEGIN EXCLUSIVE");
  audit->flush(record, false);
  io.run();
  io.restart();
  EXPECT_TRUE(audit->dirty());
  other.exec("COMMIT");
  EXPECT_EQ(other.state("e1"), "");

  // Free again: the next flush writes what the failed one carried, and what came since.
  audit->add(3, output_frame(3, "line\n"), 5);
  audit->flush(record, false);
  io.run();
  io.restart();
  EXPECT_FALSE(audit->dirty());
  EXPECT_EQ(other.seqs("e1"), range(0, 3));
  EXPECT_EQ(other.state("e1"), "running");

  // The last save is retried on the audit thread until the lock is gone.
  other.exec("BEGIN EXCLUSIVE");
  audit->add(4, std::make_shared<const std::string>(common::encode(event{common::exit_event{4, 0, {}, common::exit_state::exited, 10}})), 0);
  record.state = "exited";
  audit->flush(record, true);
  const auto asked = clock_type::now();
  std::thread release([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(700));
    other.exec("COMMIT");
  });
  io.run();  // until the save has completed
  const auto waited = clock_type::now() - asked;
  release.join();
  EXPECT_GE(waited, std::chrono::milliseconds(600));
  EXPECT_FALSE(audit->dirty());
  EXPECT_EQ(other.seqs("e1"), range(0, 4));
  EXPECT_EQ(other.state("e1"), "exited");
}

TEST(AuditStore, WhatLeftTheTailWhileTheDatabaseWasLockedIsNotWrittenAndTheRestIs) {
  temp_dir dir;
  const std::string path = dir.path + "/audit.db";
  net::io_context io;
  auto store = audit_store::open(path);
  ASSERT_TRUE(store.ok()) << store.error();
  // 10 bytes of head and of tail: two events of 5 bytes each.
  auto audit = std::make_shared<output_audit>(**store, io.get_executor(), 10, 10);
  other_connection other(path);
  const auto record = running_record("e2");
  for (common::seq_t s = 0; s < 4; ++s) audit->add(s, output_frame(s, "line\n"), 5);
  audit->flush(record, false);
  io.run();
  io.restart();
  EXPECT_EQ(other.seqs("e2"), range(0, 3));

  other.exec("BEGIN EXCLUSIVE");
  for (common::seq_t s = 4; s < 8; ++s) audit->add(s, output_frame(s, "line\n"), 5);
  audit->flush(record, false);
  io.run();
  io.restart();
  EXPECT_TRUE(audit->dirty());
  other.exec("COMMIT");
  EXPECT_EQ(other.seqs("e2"), range(0, 3));

  // The tail window moved on while the save waited: the store gets the head and the window.
  for (common::seq_t s = 8; s < 12; ++s) audit->add(s, output_frame(s, "line\n"), 5);
  audit->flush(record, false);
  io.run();
  io.restart();
  EXPECT_FALSE(audit->dirty());
  EXPECT_TRUE(audit->truncated());
  EXPECT_EQ(other.seqs("e2"), (std::vector<common::seq_t>{0, 1, 10, 11}));
}

TEST(AuditStore, ReadsGoOnWhileAWriterHoldsTheLockAndResumeOnTheCallersThread) {
  temp_dir dir;
  const std::string path = dir.path + "/audit.db";
  net::io_context io;
  auto store = audit_store::open(path);
  ASSERT_TRUE(store.ok()) << store.error();
  server::audit_save save;
  save.record = running_record("e3");
  save.record.state = "exited";
  for (common::seq_t s = 0; s < 3; ++s) save.add.push_back({s, output_frame(s, "line\n")});
  bool written = false;
  (*store)->async_save(std::move(save), server::save_retry::once, io.get_executor(), [&](bool w) { written = w; });
  io.run();
  io.restart();
  ASSERT_TRUE(written);

  other_connection other(path);
  other.exec("BEGIN EXCLUSIVE");
  const auto caller = std::this_thread::get_id();
  bool done = false;
  net::co_spawn(
      io,
      [&]() -> net::awaitable<void> {
        auto& s = **store;
        const auto r = co_await s.async_record("e3");
        EXPECT_EQ(std::this_thread::get_id(), caller);
        EXPECT_EQ(r ? r->user : "", "olivia");
        EXPECT_FALSE(co_await s.async_record("nope"));
        const auto list = co_await s.async_list("exited", "", 10);
        EXPECT_EQ(list.size(), 1u);
        EXPECT_EQ(list.empty() ? "" : list[0].execution_id, "e3");
        EXPECT_EQ(co_await s.async_last_seq("e3"), 2);
        EXPECT_EQ(co_await s.async_last_seq("nope"), -1);
        const auto events = co_await s.async_events_after("e3", 0, 1 << 20);
        EXPECT_EQ(events.size(), 2u);
        EXPECT_EQ(events.empty() ? -1 : events[0].seq, 1);
        // A write cannot take the lock: nothing is pruned until it is gone.
        const std::string after_all = "9999-01-01T00:00:00.000Z";
        EXPECT_EQ(co_await s.async_prune(after_all), 0u);
        EXPECT_EQ(std::this_thread::get_id(), caller);
        other.exec("COMMIT");
        EXPECT_EQ(co_await s.async_prune(after_all), 1u);
        EXPECT_FALSE(co_await s.async_record("e3"));
        done = true;
      },
      [](std::exception_ptr e) {
        if (e) std::rethrow_exception(e);
      });
  io.run();
  EXPECT_TRUE(done);
}

// --- cmdcast-server as a process ----------------------------------------------------------------

/// Holds the write lock of the audit database from another connection, as `BEGIN EXCLUSIVE`
/// in the sqlite3 shell does, for `hold`, on a thread of its own.
class lock_holder {
 public:
  lock_holder(const std::string& path, std::chrono::milliseconds hold)
      : thread_([this, path, hold] {
          other_connection c(path);
          c.exec("BEGIN EXCLUSIVE");  // on failure the test fails, and holds nothing
          locked_at_ = clock_type::now();
          locked_ = true;
          std::this_thread::sleep_for(hold);
          c.exec("COMMIT");
          released_at_ = clock_type::now();
          released_ = true;
        }) {
    while (!locked_) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  ~lock_holder() { thread_.join(); }

  bool released() const { return released_; }
  bool held_at(clock_type::time_point t) const { return t >= locked_at_ && (!released_ || t < released_at_); }

 private:
  std::atomic<bool> locked_{false}, released_{false};
  clock_type::time_point locked_at_, released_at_;
  std::thread thread_;
};

void expect_numbered_from_0(const std::vector<event>& events) {
  const auto seqs = sequenced(events);
  for (std::size_t i = 0; i < seqs.size(); ++i) {
    EXPECT_EQ(*common::event_seq(seqs[i]), static_cast<common::seq_t>(i));
  }
}

TEST(AuditLock, StreamsGoOnWhileTheDatabaseIsLockedAndTheRecordIsCompleteAfterwards) {
  loopback_sshd sshd;
  const std::string db = sshd.dir() + "/cmdcast.db";
  std::string id;
  std::vector<event> streamed;
  {
    server_process srv(sshd);
    // ticks: a line every 0.2 s for 20 s.
    id = post_run(srv.port(), run_request("ticks"));
    ws_client watcher(srv.port(), "/executions/" + id + "/stream", ws_options{.token = viewer_token});
    const auto receive = [&] {
      auto m = watcher.next();
      if (!m) return false;
      auto e = common::decode_event(*m);
      EXPECT_TRUE(e.ok()) << *m;
      if (e.ok()) streamed.push_back(*e);
      return true;
    };
    while (text_of(streamed, common::output_stream::out).find("tick 3\n") == std::string::npos) {
      ASSERT_TRUE(receive()) << text_of(streamed, common::output_stream::err);
    }

    // Another process holds the database for 5 s: the watcher gets every tick meanwhile.
    std::vector<clock_type::time_point> during_lock;
    {
      lock_holder lock(db, std::chrono::seconds(5));
      bool listed = false;
      while (!lock.released()) {
        const auto before = streamed.size();
        ASSERT_TRUE(receive());
        const auto now = clock_type::now();
        if (std::holds_alternative<common::output_event>(streamed[before]) && lock.held_at(now)) during_lock.push_back(now);
        if (!listed && during_lock.size() == 5) {
          // Reading the audit is not held up by the writer's lock either (WAL).
          const auto asked = clock_type::now();
          const auto list = http_request(srv.port(), http::verb::get, "/executions?state=all", viewer_token);
          EXPECT_EQ(list.status, 200u);
          EXPECT_NE(list.body.find(id), std::string::npos);
          EXPECT_LT(clock_type::now() - asked, std::chrono::seconds(1));
          listed = true;
        }
      }
    }
    ASSERT_GE(during_lock.size(), 15u) << "about 25 ticks are printed in 5 s";
    for (std::size_t i = 1; i < during_lock.size(); ++i) {
      EXPECT_LT(during_lock[i] - during_lock[i - 1], std::chrono::milliseconds(1000)) << "the stream stalled at tick " << i;
    }

    // The periodic saves retry once the lock is gone; then the run is cancelled and ends.
    std::this_thread::sleep_for(std::chrono::milliseconds(1500));
    EXPECT_EQ(http_request(srv.port(), http::verb::post, "/executions/" + id + "/cancel", operator_token).status, 202u);
    while (receive()) {
    }
    ASSERT_EQ(of_type<common::exit_event>(streamed).size(), 1u);
    EXPECT_EQ(of_type<common::exit_event>(streamed)[0].state, common::exit_state::cancelled);
    EXPECT_EQ(srv.terminate(), 0);
    const auto log = srv.log();
    EXPECT_NE(log.find("\"event\":\"audit_write_failed\""), std::string::npos) << "the lock never stopped a write";
    EXPECT_EQ(log.find("\"event\":\"audit_unwritten\""), std::string::npos);
  }
  expect_numbered_from_0(streamed);

  // A new server knows the execution only from the audit: the whole record and every event.
  server_process again(sshd);
  const auto r = record_of(again.port(), id);
  EXPECT_EQ(r.state, "cancelled");
  EXPECT_TRUE(r.ended_at.has_value());
  EXPECT_EQ(r.bytes_stdout, static_cast<std::int64_t>(text_of(streamed, common::output_stream::out).size()));
  EXPECT_FALSE(r.output_truncated);
  ws_client attach(again.port(), "/executions/" + id + "/stream", ws_options{.token = viewer_token});
  EXPECT_EQ(sequenced(attach.all()), sequenced(streamed));
}

TEST(AuditLock, AServerStoppedWhileTheDatabaseIsLockedWritesTheLastSaveOnceItIsFree) {
  loopback_sshd sshd;
  const std::string db = sshd.dir() + "/cmdcast.db";
  std::string id;
  std::vector<event> streamed;
  {
    server_process srv(sshd);
    other_connection other(db);
    other.exec("BEGIN EXCLUSIVE");
    // Locked from before the run: it streams to the end all the same.
    ws_client c(srv.port(), "/machines/box/commands/stream");
    c.send(run_request("lines"));
    streamed = c.all();
    ASSERT_FALSE(streamed.empty());
    id = std::get<common::started_event>(streamed[0]).execution_id;
    EXPECT_EQ(text_of(streamed, common::output_stream::out), "line 1\nline 2\nline 3\n");
    ASSERT_EQ(of_type<common::exit_event>(streamed).size(), 1u);

    // Stopped while locked: the server waits for its last save, which the lock lets through
    // 1.5 s later.
    std::thread release([&] {
      std::this_thread::sleep_for(std::chrono::milliseconds(1500));
      other.exec("COMMIT");
    });
    const auto asked = clock_type::now();
    EXPECT_EQ(srv.terminate(), 0);
    const auto waited = clock_type::now() - asked;
    release.join();
    EXPECT_GE(waited, std::chrono::milliseconds(1400));
    EXPECT_LT(waited, std::chrono::seconds(8));
    const auto log = srv.log();
    EXPECT_NE(log.find("\"event\":\"audit_written\""), std::string::npos) << log;
    EXPECT_EQ(other.state(id), "exited");
  }
  server_process again(sshd);
  const auto r = record_of(again.port(), id);
  EXPECT_EQ(r.state, "exited");
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_EQ(r.bytes_stdout, 21);
  EXPECT_EQ(r.bytes_stderr, 5);
  ws_client attach(again.port(), "/executions/" + id + "/stream", ws_options{.token = viewer_token});
  EXPECT_EQ(sequenced(attach.all()), sequenced(streamed));
}

}  // namespace
}  // namespace cmdcast::testing
