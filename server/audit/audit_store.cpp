#include "audit/audit_store.hpp"

#include <sqlite3.h>

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
)sql";

/// A prepared statement, finalised on scope exit.
class statement {
 public:
  statement(sqlite3* db, const char* sql) { sqlite3_prepare_v2(db, sql, -1, &s_, nullptr); }
  ~statement() { sqlite3_finalize(s_); }
  statement(const statement&) = delete;
  statement& operator=(const statement&) = delete;

  bool ok() const { return s_ != nullptr; }
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

std::optional<common::execution_record> decode_record(const std::string& json) {
  auto r = common::decode_execution_record(json);
  if (!r) return std::nullopt;
  return std::move(*r);
}

}  // namespace

common::result<std::unique_ptr<audit_store>> audit_store::open(const std::string& path) {
  sqlite3* db = nullptr;
  if (sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE,
                      nullptr) != SQLITE_OK) {
    std::string message = "cannot open audit database " + path + ": " + (db ? sqlite3_errmsg(db) : "out of memory");
    sqlite3_close(db);
    return common::failure{std::move(message)};
  }
  std::unique_ptr<audit_store> store(new audit_store(db));
  sqlite3_busy_timeout(db, 2000);
  // WAL with synchronous=NORMAL: a commit is an append to the log, cheap enough to make every
  // second while a command runs; a power cut may lose the last commits, a crash does not.
  if (!store->exec("PRAGMA journal_mode=WAL") || !store->exec("PRAGMA synchronous=NORMAL") || !store->exec(schema)) {
    return common::failure{"audit database " + path + ": " + sqlite3_errmsg(db)};
  }
  store->mark_lost();
  return store;
}

audit_store::~audit_store() { sqlite3_close(db_); }

bool audit_store::exec(const char* sql) {
  char* error = nullptr;
  if (sqlite3_exec(db_, sql, nullptr, nullptr, &error) == SQLITE_OK) return true;
  log_event("audit_error", {{"sql", std::string_view(sql).substr(0, 40)}, {"error", error ? error : "?"}});
  sqlite3_free(error);
  return false;
}

void audit_store::mark_lost() {
  std::vector<common::execution_record> running;
  {
    statement q(db_, "SELECT record FROM executions WHERE state = 'running'");
    while (q.step() == SQLITE_ROW) {
      if (auto r = decode_record(q.text(0))) running.push_back(std::move(*r));
    }
  }
  for (auto& r : running) {
    const common::seq_t last = last_seq(r.execution_id);
    r.state = std::string(common::to_string(common::exit_state::lost));
    r.ended_at = rfc3339_now();
    r.watchers = 0;
    // Its watchers learn how it ended like for any other execution: from an exit event.
    common::exit_event exit;
    exit.seq = last + 1;
    exit.state = common::exit_state::lost;
    const std::string frame = common::encode(common::event{exit});
    save(r, {{exit.seq, frame}});
    log_event("lost", {{"execution_id", r.execution_id}, {"machine", r.machine_id}});
  }
  lost_at_open_ = running.size();
}

bool audit_store::save(const common::execution_record& r, const std::vector<event_ref>& add,
                       std::optional<std::pair<common::seq_t, common::seq_t>> drop) {
  if (!exec("BEGIN")) return false;
  bool ok = true;
  {
    statement upsert(db_,
                     "INSERT INTO executions (id, machine_id, action_type, user, state, started_at, record) "
                     "VALUES (?, ?, ?, ?, ?, ?, ?) "
                     "ON CONFLICT (id) DO UPDATE SET state = excluded.state, record = excluded.record");
    auto stored = r;
    stored.watchers = 0;  // live only
    upsert.bind(1, r.execution_id).bind(2, r.machine_id).bind(3, r.action_type).bind(4, r.user);
    upsert.bind(5, r.state).bind(6, r.started_at).bind(7, common::encode(stored));
    ok = upsert.step() == SQLITE_DONE;
  }
  if (ok && drop) {
    statement del(db_, "DELETE FROM events WHERE execution_id = ? AND seq BETWEEN ? AND ?");
    del.bind(1, r.execution_id).bind(2, drop->first).bind(3, drop->second);
    ok = del.step() == SQLITE_DONE;
  }
  if (ok && !add.empty()) {
    statement insert(db_, "INSERT OR REPLACE INTO events (execution_id, seq, frame) VALUES (?, ?, ?)");
    for (const auto& e : add) {
      insert.bind(1, r.execution_id).bind(2, e.seq).bind(3, e.frame);
      if (insert.step() != SQLITE_DONE) {
        ok = false;
        break;
      }
      insert.reset();
    }
  }
  if (!ok) {
    log_event("audit_error", {{"execution_id", r.execution_id}, {"error", sqlite3_errmsg(db_)}});
    exec("ROLLBACK");
    return false;
  }
  return exec("COMMIT");
}

std::size_t audit_store::prune(const std::string& cutoff) {
  if (!exec("BEGIN")) return 0;
  // RFC 3339 in UTC with fixed width sorts as text does.
  statement events(db_, "DELETE FROM events WHERE execution_id IN "
                        "(SELECT id FROM executions WHERE started_at < ? AND state != 'running')");
  events.bind(1, cutoff);
  statement records(db_, "DELETE FROM executions WHERE started_at < ? AND state != 'running'");
  records.bind(1, cutoff);
  if (events.step() != SQLITE_DONE || records.step() != SQLITE_DONE) {
    log_event("audit_error", {{"error", sqlite3_errmsg(db_)}});
    exec("ROLLBACK");
    return 0;
  }
  const auto removed = static_cast<std::size_t>(sqlite3_changes(db_));
  exec("COMMIT");
  return removed;
}

std::optional<common::execution_record> audit_store::record(std::string_view id) {
  statement q(db_, "SELECT record FROM executions WHERE id = ?");
  q.bind(1, id);
  if (q.step() != SQLITE_ROW) return std::nullopt;
  return decode_record(q.text(0));
}

std::vector<common::execution_record> audit_store::list(std::string_view state, std::size_t limit) {
  const bool all = state == "all";
  statement q(db_, all ? "SELECT record FROM executions ORDER BY started_at DESC LIMIT ?"
                       : "SELECT record FROM executions WHERE state = ? ORDER BY started_at DESC LIMIT ?");
  if (all) {
    q.bind(1, static_cast<std::int64_t>(limit));
  } else {
    q.bind(1, state).bind(2, static_cast<std::int64_t>(limit));
  }
  std::vector<common::execution_record> out;
  while (q.step() == SQLITE_ROW) {
    if (auto r = decode_record(q.text(0))) out.push_back(std::move(*r));
  }
  return out;
}

common::seq_t audit_store::last_seq(std::string_view id) {
  statement q(db_, "SELECT COALESCE(MAX(seq), -1) FROM events WHERE execution_id = ?");
  q.bind(1, id);
  return q.step() == SQLITE_ROW ? q.integer(0) : -1;
}

std::vector<stored_event> audit_store::events_after(std::string_view id, common::seq_t after, std::size_t max_bytes) {
  statement q(db_, "SELECT seq, frame FROM events WHERE execution_id = ? AND seq > ? ORDER BY seq");
  q.bind(1, id).bind(2, after);
  std::vector<stored_event> out;
  std::size_t bytes = 0;
  common::seq_t expected = after + 1;
  while (bytes < max_bytes && q.step() == SQLITE_ROW) {
    const common::seq_t seq = q.integer(0);
    if (seq > expected) {
      const common::gap_event gap{seq - 1, expected, seq - 1};
      out.push_back({gap.seq, common::encode(common::event{gap})});
    }
    out.push_back({seq, q.text(1)});
    bytes += out.back().frame.size();
    expected = seq + 1;
  }
  return out;
}

}  // namespace cmdcast::server
