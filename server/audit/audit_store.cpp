#include "audit/audit_store.hpp"

#include <sqlite3.h>

#include <boost/asio/async_result.hpp>
#include <boost/asio/execution_context.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <chrono>
#include <condition_variable>
#include <limits>
#include <map>
#include <mutex>
#include <thread>

#include "audit/audit_backend.hpp"
#include "audit/postgres_audit.hpp"
#include "cmdcast/common/codec.hpp"
#include "support/log.hpp"

namespace cmdcast::server {
namespace {

// The record is kept whole as JSON (the API's own format); the columns beside it are what the
// store filters and sorts on, and what an admin with the sqlite3 shell looks at first.
constexpr const char* schema = R"sql(
CREATE TABLE IF NOT EXISTS executions (
  id TEXT PRIMARY KEY,
  machine_id TEXT NOT NULL,
  action_type TEXT NOT NULL,
  user TEXT NOT NULL,
  state TEXT NOT NULL,
  started_at TEXT NOT NULL,
  record TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS executions_by_start ON executions (started_at);
CREATE INDEX IF NOT EXISTS executions_by_state ON executions (state);
CREATE TABLE IF NOT EXISTS events (
  execution_id TEXT NOT NULL,
  seq INTEGER NOT NULL,
  frame TEXT NOT NULL,
  PRIMARY KEY (execution_id, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS batches (
  id TEXT PRIMARY KEY,
  group_id TEXT NOT NULL,
  action_type TEXT NOT NULL,
  user TEXT NOT NULL,
  state TEXT NOT NULL,
  started_at TEXT NOT NULL,
  record TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS batches_by_start ON batches (started_at);
)sql";

// The audit thread waits this long for a lock, then gives the thread to the next job; a save
// that did not get the lock is tried again later.
constexpr int busy_timeout_ms = 100;
// Opening waits longer: nothing streams yet.
constexpr int open_busy_timeout_ms = 2000;
// An execution's last save is retried this often at most.
constexpr auto max_backoff = std::chrono::seconds(1);
// How long stopping waits for the queued writes.
constexpr auto drain_timeout = std::chrono::seconds(10);

/// A prepared statement, finalised on scope exit.
class statement {
 public:
  statement(sqlite3* db, const char* sql) { sqlite3_prepare_v2(db, sql, -1, &s_, nullptr); }
  ~statement() { sqlite3_finalize(s_); }
  statement(const statement&) = delete;
  statement& operator=(const statement&) = delete;

  statement& bind(int i, std::string_view text) {
    sqlite3_bind_text(s_, i, text.data(), static_cast<int>(text.size()), SQLITE_TRANSIENT);
    return *this;
  }
  statement& bind(int i, std::int64_t v) {
    sqlite3_bind_int64(s_, i, v);
    return *this;
  }
  /// SQLITE_ROW, SQLITE_DONE or an error.
  int step() { return s_ ? sqlite3_step(s_) : SQLITE_MISUSE; }
  void reset() {
    sqlite3_reset(s_);
    sqlite3_clear_bindings(s_);
  }
  std::int64_t integer(int col) { return sqlite3_column_int64(s_, col); }
  std::string text(int col) {
    const auto* p = reinterpret_cast<const char*>(sqlite3_column_text(s_, col));
    return p ? std::string(p, static_cast<std::size_t>(sqlite3_column_bytes(s_, col))) : std::string();
  }

 private:
  sqlite3_stmt* s_ = nullptr;
};

/// Runs `sql`; the error when it failed.
std::optional<std::string> run_sql(sqlite3* db, const char* sql) {
  char* error = nullptr;
  if (sqlite3_exec(db, sql, nullptr, nullptr, &error) == SQLITE_OK) return std::nullopt;
  std::string message = error ? error : sqlite3_errmsg(db);
  sqlite3_free(error);
  return message;
}

/// A read that ended on an error rather than on its last row: logged, and what was read is
/// the answer.
void check_read(sqlite3* db, int rc) {
  if (rc != SQLITE_DONE && rc != SQLITE_ROW) log_event("audit_read_failed", {{"error", sqlite3_errmsg(db)}});
}

std::optional<common::execution_record> decode_record(const std::string& json) {
  auto r = common::decode_execution_record(json);
  if (!r) return std::nullopt;
  return std::move(*r);
}

/// Writes `s` in one transaction; the error when it failed (and nothing was written).
std::optional<std::string> write(sqlite3* db, const audit_save& s) {
  // IMMEDIATE: the write lock is taken (or given up on) first, not half-way through.
  if (auto error = run_sql(db, "BEGIN IMMEDIATE")) return error;
  bool ok = true;
  {
    statement upsert(db,
                     "INSERT INTO executions (id, machine_id, action_type, user, state, started_at, record) "
                     "VALUES (?, ?, ?, ?, ?, ?, ?) "
                     "ON CONFLICT (id) DO UPDATE SET state = excluded.state, record = excluded.record");
    const auto& r = s.record;
    upsert.bind(1, r.execution_id).bind(2, r.machine_id).bind(3, r.action_type).bind(4, r.user);
    upsert.bind(5, r.state).bind(6, r.started_at).bind(7, stored_record_json(r));
    ok = upsert.step() == SQLITE_DONE;
  }
  if (ok && s.drop) {
    statement del(db, "DELETE FROM events WHERE execution_id = ? AND seq BETWEEN ? AND ?");
    del.bind(1, s.record.execution_id).bind(2, s.drop->first).bind(3, s.drop->second);
    ok = del.step() == SQLITE_DONE;
  }
  if (ok && !s.add.empty()) {
    statement insert(db, "INSERT OR REPLACE INTO events (execution_id, seq, frame) VALUES (?, ?, ?)");
    for (const auto& e : s.add) {
      insert.bind(1, s.record.execution_id).bind(2, e.seq).bind(3, *e.frame);
      if (insert.step() != SQLITE_DONE) {
        ok = false;
        break;
      }
      insert.reset();
    }
  }
  std::optional<std::string> error;
  if (ok) {
    error = run_sql(db, "COMMIT");
    if (!error) return std::nullopt;
  } else {
    error = sqlite3_errmsg(db);
  }
  run_sql(db, "ROLLBACK");
  return error;
}

std::size_t delete_before(sqlite3* db, const std::string& cutoff) {
  std::optional<std::string> error = run_sql(db, "BEGIN IMMEDIATE");
  std::size_t removed = 0;
  if (!error) {
    // RFC 3339 in UTC with fixed width sorts as text does.
    statement events(db, "DELETE FROM events WHERE execution_id IN "
                         "(SELECT id FROM executions WHERE started_at < ? AND state != 'running')");
    events.bind(1, cutoff);
    statement records(db, "DELETE FROM executions WHERE started_at < ? AND state != 'running'");
    records.bind(1, cutoff);
    if (events.step() != SQLITE_DONE || records.step() != SQLITE_DONE) {
      error = sqlite3_errmsg(db);
    } else {
      removed = static_cast<std::size_t>(sqlite3_changes(db));
      error = run_sql(db, "COMMIT");
    }
    if (error) run_sql(db, "ROLLBACK");
  }
  if (!error) return removed;
  log_event("audit_prune_failed", {{"error", *error}});
  return 0;
}

std::optional<common::execution_record> read_record(sqlite3* db, std::string_view id) {
  statement q(db, "SELECT record FROM executions WHERE id = ?");
  q.bind(1, id);
  const int rc = q.step();
  check_read(db, rc);
  if (rc != SQLITE_ROW) return std::nullopt;
  return decode_record(q.text(0));
}

std::vector<common::execution_record> read_list(sqlite3* db, std::string_view state, std::string_view machine,
                                                std::size_t limit) {
  // (?1 = 'all' and ?2 = '' switch a filter off.)
  statement q(db,
              "SELECT record FROM executions WHERE (?1 = 'all' OR state = ?1) AND (?2 = '' OR machine_id = ?2) "
              "ORDER BY started_at DESC LIMIT ?3");
  q.bind(1, state).bind(2, machine).bind(3, static_cast<std::int64_t>(limit));
  std::vector<common::execution_record> out;
  int rc = 0;
  while ((rc = q.step()) == SQLITE_ROW) {
    if (auto r = decode_record(q.text(0))) out.push_back(std::move(*r));
  }
  check_read(db, rc);
  return out;
}

common::seq_t read_last_seq(sqlite3* db, std::string_view id) {
  statement q(db, "SELECT COALESCE(MAX(seq), -1) FROM events WHERE execution_id = ?");
  q.bind(1, id);
  const int rc = q.step();
  check_read(db, rc);
  return rc == SQLITE_ROW ? q.integer(0) : -1;
}

std::vector<stored_event> read_events_after(sqlite3* db, std::string_view id, common::seq_t after,
                                            std::size_t max_bytes) {
  statement q(db, "SELECT seq, frame FROM events WHERE execution_id = ? AND seq > ? ORDER BY seq");
  q.bind(1, id).bind(2, after);
  std::vector<stored_event> out;
  std::size_t bytes = 0;
  common::seq_t expected = after + 1;
  int rc = SQLITE_DONE;
  while (bytes < max_bytes && (rc = q.step()) == SQLITE_ROW) {
    append_stored(out, expected, q.integer(0), q.text(1));
    bytes += out.back().frame.size();
  }
  check_read(db, rc);
  return out;
}

bool write_batch(sqlite3* db, const common::batch_record& b) {
  statement upsert(db,
                   "INSERT INTO batches (id, group_id, action_type, user, state, started_at, record) "
                   "VALUES (?, ?, ?, ?, ?, ?, ?) "
                   "ON CONFLICT (id) DO UPDATE SET state = excluded.state, record = excluded.record");
  upsert.bind(1, b.batch_id).bind(2, b.group).bind(3, b.action_type).bind(4, b.user).bind(5, b.state);
  upsert.bind(6, b.started_at).bind(7, common::encode(b));
  if (upsert.step() == SQLITE_DONE) return true;
  log_event("audit_write_failed", {{"batch_id", b.batch_id}, {"error", sqlite3_errmsg(db)}});
  return false;
}

std::vector<common::batch_record> read_batches(sqlite3* db, std::string_view id, std::size_t limit) {
  statement q(db, "SELECT record FROM batches WHERE (?1 = '' OR id = ?1) ORDER BY started_at DESC LIMIT ?2");
  q.bind(1, id).bind(2, static_cast<std::int64_t>(limit));
  std::vector<common::batch_record> out;
  int rc = 0;
  while ((rc = q.step()) == SQLITE_ROW) {
    if (auto b = common::decode_batch_record(q.text(0))) out.push_back(std::move(*b));
  }
  check_read(db, rc);
  return out;
}

/// Marks the executions a previous process left running as lost; how many.
std::size_t mark_lost(sqlite3* db) {
  // Queued and awaiting approval too: the queue and the approvals lived in that process.
  std::vector<common::execution_record> running;
  for (const char* state : {"running", "queued", "awaiting_approval"}) {
    auto some = read_list(db, state, "", std::numeric_limits<std::int64_t>::max());
    running.insert(running.end(), std::make_move_iterator(some.begin()), std::make_move_iterator(some.end()));
  }
  for (auto& r : running) {
    const audit_save s = lost_save(r, read_last_seq(db, r.execution_id));
    if (auto error = write(db, s)) {
      log_event("audit_write_failed", {{"execution_id", r.execution_id}, {"error", *error}});
    }
    log_event("lost", {{"execution_id", r.execution_id}, {"machine", r.machine_id}});
  }
  // The batches that were running: their executions are lost (above), and so is the batch.
  for (auto& b : read_batches(db, "", std::numeric_limits<std::int64_t>::max())) {
    if (b.state != "running") continue;
    mark_batch_lost(b, [db](const std::string& id) { return read_record(db, id); });
    write_batch(db, b);
  }
  return running.size();
}

}  // namespace

/// The service behind stop_with_context: one per I/O context.
class context_stopper : public net::execution_context::service {
 public:
  static inline net::execution_context::id id;
  explicit context_stopper(net::execution_context& context) : service(context) {}
  void add(const std::shared_ptr<stops_with_context>& s) {
    const std::lock_guard lock(mutex_);
    registered_[s.get()] = s;
  }

 private:
  void shutdown() override {
    std::map<const stops_with_context*, std::weak_ptr<stops_with_context>> registered;
    {
      const std::lock_guard lock(mutex_);
      registered.swap(registered_);
    }
    for (auto& entry : registered) {
      if (auto s = entry.second.lock()) s->stop();
    }
  }
  std::mutex mutex_;
  std::map<const stops_with_context*, std::weak_ptr<stops_with_context>> registered_;
};

void stop_with_context(const net::any_io_executor& executor, const std::shared_ptr<stops_with_context>& s) {
  net::use_service<context_stopper>(net::query(executor, net::execution::context)).add(s);
}

/// The audit thread: it alone uses the SQLite connection, running the jobs posted to its own
/// io_context one at a time, in order.
class audit_worker : public stops_with_context, public std::enable_shared_from_this<audit_worker> {
 public:
  explicit audit_worker(sqlite3* db) : db_(db), work_(context_.get_executor()), thread_([this] { context_.run(); }) {}
  ~audit_worker() override {
    audit_worker::stop();
    sqlite3_close(db_);
  }
  audit_worker(const audit_worker&) = delete;
  audit_worker& operator=(const audit_worker&) = delete;

  /// Runs query(db) on the audit thread and completes `handler` with its result on the
  /// handler's executor.
  template <class Query, class Handler>
  void run(Query query, Handler handler) {
    auto executor = net::get_associated_executor(handler);
    stop_with(executor);
    auto work = net::make_work_guard(executor);
    net::post(context_, [this, query = std::move(query), handler = std::move(handler), work = std::move(work)]() mutable {
      auto result = query(db_);
      const auto target = work.get_executor();
      net::post(target, [handler = std::move(handler), result = std::move(result), work = std::move(work)]() mutable {
        std::move(handler)(std::move(result));
      });
    });
  }

  void save(audit_save s, save_retry retry, net::any_io_executor executor, std::function<void(bool)> done) {
    stop_with(executor);
    {
      const std::lock_guard lock(mutex_);
      ++writes_pending_;
    }
    auto p = std::make_shared<pending_save>(std::move(s), retry, net::make_work_guard(executor), std::move(done),
                                            context_.get_executor());
    net::post(context_, [this, p] { attempt(p); });
  }

  /// Waits up to drain_timeout for the queued writes, then ends the thread; jobs still queued
  /// are dropped (their completions never run). Idempotent.
  void stop() override {
    std::unique_lock lock(mutex_);
    if (stopped_) return;
    if (!writes_done_.wait_for(lock, drain_timeout, [this] { return writes_pending_ == 0; })) {
      log_event("audit_unwritten", {{"saves", std::to_string(writes_pending_)}});
    }
    stopped_ = true;
    lock.unlock();
    context_.stop();
    thread_.join();
  }

 private:
  struct pending_save {
    pending_save(audit_save s, save_retry r, net::executor_work_guard<net::any_io_executor> w,
                 std::function<void(bool)> d, net::io_context::executor_type audit_executor)
        : save(std::move(s)), retry(r), work(std::move(w)), done(std::move(d)), backoff(audit_executor) {}
    audit_save save;
    save_retry retry;
    net::executor_work_guard<net::any_io_executor> work;
    std::function<void(bool)> done;
    net::steady_timer backoff;
    int attempts = 0;
  };


  /// This thread ends before the context of `executor` is torn down.
  void stop_with(const net::any_io_executor& executor) {
    stop_with_context(executor, shared_from_this());
  }

  bool stopped() {
    const std::lock_guard lock(mutex_);
    return stopped_;
  }

  void attempt(const std::shared_ptr<pending_save>& p) {
    ++p->attempts;
    const auto error = write(db_, p->save);
    const std::string& id = p->save.record.execution_id;
    if (!error) {
      if (p->attempts > 1) log_event("audit_written", {{"execution_id", id}, {"attempts", std::to_string(p->attempts)}});
      complete(p, true);
      return;
    }
    if (p->retry == save_retry::once) {
      log_event("audit_write_failed", {{"execution_id", id}, {"error", *error}, {"retry", "at the next flush"}});
      complete(p, false);
      return;
    }
    // An execution's last save: nothing else will carry its data, so it is tried again, less
    // and less often, and the thread serves other jobs in between.
    const auto delay = std::min<std::chrono::milliseconds>(std::chrono::milliseconds(100 << std::min(p->attempts - 1, 4)),
                                                           max_backoff);
    log_event("audit_write_failed", {{"execution_id", id}, {"error", *error}, {"attempt", std::to_string(p->attempts)},
                                     {"retry", "in " + std::to_string(delay.count()) + " ms"}});
    p->backoff.expires_after(delay);
    p->backoff.async_wait([this, p](boost::system::error_code ec) {
      if (!ec) attempt(p);
    });
  }

  void complete(const std::shared_ptr<pending_save>& p, bool written) {
    auto executor = p->work.get_executor();
    net::post(executor, [done = std::move(p->done), work = std::move(p->work), written] { done(written); });
    const std::lock_guard lock(mutex_);
    if (--writes_pending_ == 0) writes_done_.notify_all();
  }

  sqlite3* db_;
  net::io_context context_{1};
  net::executor_work_guard<net::io_context::executor_type> work_;
  std::mutex mutex_;
  std::condition_variable writes_done_;
  std::size_t writes_pending_ = 0;
  bool stopped_ = false;
  std::thread thread_;  // last: it starts once the rest is ready
};

namespace {

/// Runs query(db) on the audit thread; resumes on the awaiting coroutine's executor.
template <class T, class Query>
net::awaitable<T> ask(audit_worker& worker, Query query) {
  co_return co_await net::async_initiate<decltype(net::use_awaitable), void(T)>(
      [&worker](auto handler, Query q) { worker.run(std::move(q), std::move(handler)); }, net::use_awaitable,
      std::move(query));
}

/// The SQLite store: every call is a job for the audit thread.
class sqlite_backend final : public audit_backend {
 public:
  sqlite_backend(std::shared_ptr<audit_worker> worker, std::size_t lost) : worker_(std::move(worker)), lost_(lost) {}
  ~sqlite_backend() override { worker_->stop(); }
  sqlite_backend(const sqlite_backend&) = delete;
  sqlite_backend& operator=(const sqlite_backend&) = delete;

  void save(audit_save s, save_retry retry, net::any_io_executor executor, std::function<void(bool)> done) override {
    worker_->save(std::move(s), retry, std::move(executor), std::move(done));
  }
  net::awaitable<std::size_t> prune(std::string cutoff) override {
    return ask<std::size_t>(*worker_, [cutoff = std::move(cutoff)](sqlite3* db) { return delete_before(db, cutoff); });
  }
  net::awaitable<std::optional<common::execution_record>> record(std::string id) override {
    return ask<std::optional<common::execution_record>>(*worker_,
                                                         [id = std::move(id)](sqlite3* db) { return read_record(db, id); });
  }
  net::awaitable<std::vector<common::execution_record>> list(std::string state, std::string machine,
                                                             std::size_t limit) override {
    return ask<std::vector<common::execution_record>>(
        *worker_, [state = std::move(state), machine = std::move(machine), limit](sqlite3* db) {
          return read_list(db, state, machine, limit);
        });
  }
  net::awaitable<bool> save_batch(common::batch_record b) override {
    return ask<bool>(*worker_, [b = std::move(b)](sqlite3* db) { return write_batch(db, b); });
  }
  net::awaitable<std::vector<common::batch_record>> batches(std::string id, std::size_t limit) override {
    return ask<std::vector<common::batch_record>>(*worker_, [id = std::move(id), limit](sqlite3* db) {
      return read_batches(db, id, limit);
    });
  }
  net::awaitable<common::seq_t> last_seq(std::string id) override {
    return ask<common::seq_t>(*worker_, [id = std::move(id)](sqlite3* db) { return read_last_seq(db, id); });
  }
  net::awaitable<std::vector<stored_event>> events_after(std::string id, common::seq_t after,
                                                         std::size_t max_bytes) override {
    return ask<std::vector<stored_event>>(*worker_, [id = std::move(id), after, max_bytes](sqlite3* db) {
      return read_events_after(db, id, after, max_bytes);
    });
  }
  std::size_t lost_at_open() const override { return lost_; }
  bool degraded() const override { return false; }
  void stop() override { worker_->stop(); }

 private:
  std::shared_ptr<audit_worker> worker_;
  std::size_t lost_;
};

}  // namespace

void append_stored(std::vector<stored_event>& out, common::seq_t& expected, common::seq_t seq, std::string frame) {
  if (seq > expected) {
    const common::gap_event gap{seq - 1, expected, seq - 1};
    out.push_back({gap.seq, common::encode(common::event{gap})});
  }
  out.push_back({seq, std::move(frame)});
  expected = seq + 1;
}

audit_save lost_save(common::execution_record r, common::seq_t last_seq) {
  r.state = std::string(common::to_string(common::exit_state::lost));
  r.ended_at = rfc3339_now();
  r.watchers = 0;
  // Its watchers learn how it ended like for any other execution: from an exit event.
  common::exit_event exit;
  exit.seq = last_seq + 1;
  exit.state = common::exit_state::lost;
  return audit_save{std::move(r), {{exit.seq, std::make_shared<const std::string>(common::encode(common::event{exit}))}}, {}};
}

void mark_batch_lost(common::batch_record& b,
                     const std::function<std::optional<common::execution_record>(const std::string&)>& record_of) {
  b.state = std::string(common::to_string(common::exit_state::lost));
  b.ended_at = rfc3339_now();
  for (auto& m : b.executions) {
    if (const auto r = record_of(m.execution_id)) {
      m.state = r->state;
      m.exit_code = r->exit_code;
    }
  }
}

std::string stored_record_json(const common::execution_record& r) {
  auto stored = r;
  stored.watchers = 0;  // live only
  return common::encode(stored);
}

common::result<std::unique_ptr<audit_store>> audit_store::open(const std::string& path) {
  sqlite3* db = nullptr;
  if (sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                      nullptr) != SQLITE_OK) {
    std::string message = "cannot open audit database " + path + ": " + (db ? sqlite3_errmsg(db) : "out of memory");
    sqlite3_close(db);
    return common::failure{std::move(message)};
  }
  sqlite3_busy_timeout(db, open_busy_timeout_ms);
  // WAL with synchronous=NORMAL: a commit is an append to the log, cheap enough to make every
  // second while a command runs; a power cut may lose the last commits, a crash does not.
  // WAL also lets readers read while another connection writes.
  for (const char* sql : {"PRAGMA journal_mode=WAL", "PRAGMA synchronous=NORMAL", schema}) {
    if (auto error = run_sql(db, sql)) {
      sqlite3_close(db);
      return common::failure{"audit database " + path + ": " + *error};
    }
  }
  const std::size_t lost = mark_lost(db);
  sqlite3_busy_timeout(db, busy_timeout_ms);
  return std::unique_ptr<audit_store>(new audit_store(std::make_shared<sqlite_backend>(std::make_shared<audit_worker>(db), lost)));
}

common::result<std::unique_ptr<audit_store>> audit_store::open_postgres(const std::string& conninfo,
                                                                         const std::string& server_id,
                                                                         net::any_io_executor executor,
                                                                         postgres_limits limits) {
  auto backend = open_postgres_backend(conninfo, server_id, std::move(executor), limits);
  if (!backend) return common::failure{backend.error()};
  return std::unique_ptr<audit_store>(new audit_store(std::move(*backend)));
}

audit_store::~audit_store() { backend_->stop(); }

std::size_t audit_store::lost_at_open() const { return backend_->lost_at_open(); }
bool audit_store::degraded() const { return backend_->degraded(); }

void audit_store::async_save(audit_save save, save_retry retry, net::any_io_executor executor,
                             std::function<void(bool written)> done) {
  backend_->save(std::move(save), retry, std::move(executor), std::move(done));
}

net::awaitable<std::size_t> audit_store::async_prune(std::string cutoff) { return backend_->prune(std::move(cutoff)); }

net::awaitable<std::optional<common::execution_record>> audit_store::async_record(std::string id) {
  return backend_->record(std::move(id));
}

net::awaitable<std::vector<common::execution_record>> audit_store::async_list(std::string state, std::string machine,
                                                                             std::size_t limit) {
  return backend_->list(std::move(state), std::move(machine), limit);
}

net::awaitable<bool> audit_store::async_save_batch(common::batch_record b) { return backend_->save_batch(std::move(b)); }

net::awaitable<std::vector<common::batch_record>> audit_store::async_batches(std::string id, std::size_t limit) {
  return backend_->batches(std::move(id), limit);
}

net::awaitable<common::seq_t> audit_store::async_last_seq(std::string id) { return backend_->last_seq(std::move(id)); }

net::awaitable<std::vector<stored_event>> audit_store::async_events_after(std::string id, common::seq_t after,
                                                                          std::size_t max_bytes) {
  return backend_->events_after(std::move(id), after, max_bytes);
}

}  // namespace cmdcast::server
