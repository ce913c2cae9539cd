#include "audit/postgres_audit.hpp"

#include <libpq-fe.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/execution_context.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <deque>
#include <exception>
#include <limits>
#include <map>
#include <mutex>
#include <set>
#include <system_error>
#include <thread>
#include <variant>

#include "cmdcast/common/codec.hpp"
#include "support/log.hpp"

namespace cmdcast::server {
namespace {

using namespace std::chrono_literals;

// (How much output queued writes hold while PostgreSQL is away, and how long a pipeline may go
// unanswered: postgres_limits.)
// libpq's connect_timeout does not apply to PQconnectPoll: this does.
constexpr auto connect_timeout = 5s;
// A read (a list, a record) waits this long at most, then answers empty.
constexpr auto read_timeout = 5s;
constexpr auto first_backoff = 100ms;
constexpr auto max_backoff = 2s;
// Stopping writes what is still queued over a connection of its own, for this long at most.
constexpr auto drain_timeout = 10s;
// Stored events read at most per page (a page also stops at its byte budget).
constexpr int events_page_rows = 4096;

// The record whole as JSON beside the columns filtered and sorted on, as in SQLite; `server_id`
// says which server wrote a run (several share the database), `user_name` because `user` is
// reserved here. One statement each: pipeline mode runs one statement per query.
const std::vector<std::string> schema = {
    // Servers starting together: one creates, the others wait and find it made.
    "SELECT pg_advisory_xact_lock(7206151)",
    "CREATE TABLE IF NOT EXISTS executions ("
    " id TEXT PRIMARY KEY, server_id TEXT NOT NULL DEFAULT '', machine_id TEXT NOT NULL,"
    " action_type TEXT NOT NULL, user_name TEXT NOT NULL, state TEXT NOT NULL, started_at TEXT NOT NULL,"
    " record TEXT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS executions_by_start ON executions (started_at)",
    "CREATE INDEX IF NOT EXISTS executions_by_server_state ON executions (server_id, state)",
    "CREATE TABLE IF NOT EXISTS events ("
    " execution_id TEXT NOT NULL, seq BIGINT NOT NULL, frame TEXT NOT NULL, PRIMARY KEY (execution_id, seq))",
    "CREATE TABLE IF NOT EXISTS batches ("
    " id TEXT PRIMARY KEY, server_id TEXT NOT NULL DEFAULT '', group_id TEXT NOT NULL, action_type TEXT NOT NULL,"
    " user_name TEXT NOT NULL, state TEXT NOT NULL, started_at TEXT NOT NULL, record TEXT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS batches_by_start ON batches (started_at)",
};

constexpr const char* upsert_execution =
    "INSERT INTO executions (id, server_id, machine_id, action_type, user_name, state, started_at, record) "
    "VALUES ($1, $2, $3, $4, $5, $6, $7, $8) "
    "ON CONFLICT (id) DO UPDATE SET state = excluded.state, record = excluded.record";
constexpr const char* insert_event =
    "INSERT INTO events (execution_id, seq, frame) VALUES ($1, $2::bigint, $3) "
    "ON CONFLICT (execution_id, seq) DO UPDATE SET frame = excluded.frame";
constexpr const char* delete_events = "DELETE FROM events WHERE execution_id = $1 AND seq BETWEEN $2::bigint AND $3::bigint";
constexpr const char* upsert_batch =
    "INSERT INTO batches (id, server_id, group_id, action_type, user_name, state, started_at, record) "
    "VALUES ($1, $2, $3, $4, $5, $6, $7, $8) "
    "ON CONFLICT (id) DO UPDATE SET state = excluded.state, record = excluded.record";
constexpr const char* select_record = "SELECT record FROM executions WHERE id = $1";
constexpr const char* select_last_seq = "SELECT COALESCE(MAX(seq), -1) FROM events WHERE execution_id = $1";

/// One statement parameter, always bound (text format), never spliced into SQL: a string of
/// its own or a frame shared with the stream.
class pg_param {
 public:
  pg_param(std::string s) : owned_(std::move(s)) {}  // NOLINT(google-explicit-constructor)
  pg_param(std::shared_ptr<const std::string> s) : shared_(std::move(s)) {}  // NOLINT(google-explicit-constructor)
  const char* c_str() const { return shared_ ? shared_->c_str() : owned_.c_str(); }

 private:
  std::string owned_;
  std::shared_ptr<const std::string> shared_;
};

struct pg_query {
  std::string sql;
  std::vector<pg_param> params;
};

struct pg_result_free {
  void operator()(PGresult* r) const { PQclear(r); }
};
using pg_result = std::unique_ptr<PGresult, pg_result_free>;

/// How a pipeline (statements up to a sync: one implicit transaction) ended.
struct pipeline_outcome {
  bool connection_lost = false;      // nothing known: try it again on a new connection
  bool timed_out = false;            // ...because no answer came within the statement timeout
  std::optional<std::string> error;  // a statement failed; the whole pipeline was rolled back
  std::vector<pg_result> results;    // one per statement
};

/// A pipeline of one statement. (Built outside the coroutines: GCC 12 mishandles braced
/// lists of these inside them.)
template <class... Params>
std::vector<pg_query> one(std::string sql, Params&&... params) {
  std::vector<pg_query> q(1);
  q.front().sql = std::move(sql);
  (q.front().params.emplace_back(std::forward<Params>(params)), ...);
  return q;
}

std::string cell(const PGresult* r, int row, int col) {
  return std::string(PQgetvalue(r, row, col), static_cast<std::size_t>(PQgetlength(r, row, col)));
}

std::string trimmed(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

std::string limit_param(std::size_t limit) {
  return std::to_string(std::min<std::size_t>(limit, static_cast<std::size_t>(std::numeric_limits<std::int64_t>::max())));
}

std::vector<pg_query> save_queries(const audit_save& s, const std::string& server_id, bool cut) {
  std::vector<pg_query> q;
  const auto& r = s.record;
  auto stored = r;
  if (cut) stored.output_truncated = true;
  q.push_back({upsert_execution,
               {r.execution_id, server_id, r.machine_id, r.action_type, r.user, r.state, r.started_at,
                stored_record_json(stored)}});
  if (s.drop) {
    q.push_back({delete_events, {r.execution_id, std::to_string(s.drop->first), std::to_string(s.drop->second)}});
  }
  for (const auto& e : s.add) q.push_back({insert_event, {r.execution_id, std::to_string(e.seq), e.frame}});
  return q;
}

std::vector<pg_query> batch_queries(const common::batch_record& b, const std::string& server_id) {
  return {{upsert_batch, {b.batch_id, server_id, b.group, b.action_type, b.user, b.state, b.started_at, common::encode(b)}}};
}

std::vector<common::execution_record> records_of(const PGresult* r) {
  std::vector<common::execution_record> out;
  for (int row = 0; row < PQntuples(r); ++row) {
    if (auto rec = common::decode_execution_record(cell(r, row, 0))) out.push_back(std::move(*rec));
  }
  return out;
}

std::vector<common::batch_record> batch_records_of(const PGresult* r) {
  std::vector<common::batch_record> out;
  for (int row = 0; row < PQntuples(r); ++row) {
    if (auto b = common::decode_batch_record(cell(r, row, 0))) out.push_back(std::move(*b));
  }
  return out;
}

/// The connection's parameters: the configured conninfo, then what cmdcast always wants.
struct connect_params {
  explicit connect_params(const std::string& conninfo, const char* timeout = nullptr) {
    keys = {"dbname", "client_encoding", "fallback_application_name"};
    values = {conninfo.c_str(), "UTF8", "cmdcast-server"};
    if (timeout) {
      keys.push_back("connect_timeout");
      values.push_back(timeout);
    }
    keys.push_back(nullptr);
    values.push_back(nullptr);
  }
  std::vector<const char*> keys, values;
};

// libpq prints notices ("relation already exists, skipping") on stderr, which is our log.
void ignore_notice(void*, const char*) {}

/// The PostgreSQL store. Everything but stop(), degraded() and lost_at_open() runs on
/// `strand_`; stop() is called from that context's thread or once it no longer runs.
class postgres_backend final : public audit_backend, public std::enable_shared_from_this<postgres_backend> {
 public:
  postgres_backend(std::string conninfo, std::string server_id, const net::any_io_executor& executor,
                   postgres_limits limits)
      : conninfo_(std::move(conninfo)),
        server_id_(std::move(server_id)),
        limits_(limits),
        strand_(net::make_strand(executor)),
        socket_(strand_),
        wake_(strand_),
        retry_(strand_),
        deadline_(strand_) {}

  ~postgres_backend() override { close_connection(); }
  postgres_backend(const postgres_backend&) = delete;
  postgres_backend& operator=(const postgres_backend&) = delete;

  void start() {
    net::co_spawn(strand_, [self = shared_from_this()] { return self->drive(); }, [](const std::exception_ptr& e) {
      if (!e) return;
      try {
        std::rethrow_exception(e);
      } catch (const std::exception& ex) {
        log_event("audit_failed", {{"error", ex.what()}});
      }
    });
  }

  void save(audit_save s, save_retry retry, net::any_io_executor executor, std::function<void(bool)> done) override {
    write_job j;
    j.bytes = s.record.command.size() + 512;
    for (const auto& e : s.add) j.bytes += e.frame->size();
    j.what = std::move(s);
    j.retry = retry;
    j.work.emplace(executor);
    j.done = [executor, done = std::move(done)](bool written) {
      net::post(executor, [done, written] { done(written); });
    };
    net::dispatch(strand_, [self = shared_from_this(), j = std::move(j)]() mutable { self->enqueue(std::move(j)); });
  }

  net::awaitable<bool> save_batch(common::batch_record b) override {
    auto initiation = [this](auto handler, common::batch_record rec) {
          auto self = shared_from_this();
          auto h = std::make_shared<decltype(handler)>(std::move(handler));
          write_job j;
          j.bytes = 1024 + rec.executions.size() * 128;
          j.what = std::move(rec);
          j.retry = save_retry::until_written;
          j.done = [h](bool written) {
            auto ex = net::get_associated_executor(*h);
            net::post(ex, [h, written] { std::move (*h)(written); });
          };
          net::dispatch(self->strand_, [self, j = std::move(j)]() mutable { self->enqueue(std::move(j)); });
        };
    const bool written =
        co_await net::async_initiate<decltype(net::use_awaitable), void(bool)>(std::move(initiation), net::use_awaitable, std::move(b));
    co_return written;
  }

  net::awaitable<std::size_t> prune(std::string cutoff) override {
    // Finished executions only; RFC 3339 in UTC with fixed width sorts as text does.
    auto q = one("DELETE FROM events WHERE execution_id IN (SELECT id FROM executions WHERE started_at < $1 "
                 "AND state NOT IN ('running', 'queued', 'awaiting_approval'))",
                 cutoff);
    q.push_back(one("DELETE FROM executions WHERE started_at < $1 AND state NOT IN ('running', 'queued', 'awaiting_approval')",
                    cutoff).front());
    return ask<std::size_t>(std::move(q), std::size_t{0}, [](pipeline_outcome& o) {
      return static_cast<std::size_t>(std::strtoull(PQcmdTuples(o.results.at(1).get()), nullptr, 10));
    });
  }

  net::awaitable<std::optional<common::execution_record>> record(std::string id) override {
    return ask<std::optional<common::execution_record>>(
        one(select_record, std::move(id)), std::nullopt,
        [](pipeline_outcome& o) -> std::optional<common::execution_record> {
          auto all = records_of(o.results.at(0).get());
          if (all.empty()) return std::nullopt;
          return std::move(all.front());
        });
  }

  net::awaitable<std::vector<common::execution_record>> list(std::string state, std::string machine,
                                                             std::size_t limit) override {
    return ask<std::vector<common::execution_record>>(
        one("SELECT record FROM executions WHERE ($1::text = 'all' OR state = $1::text) "
            "AND ($2::text = '' OR machine_id = $2::text) ORDER BY started_at DESC, id DESC LIMIT $3::bigint",
            std::move(state), std::move(machine), limit_param(limit)),
        {}, [](pipeline_outcome& o) { return records_of(o.results.at(0).get()); });
  }

  net::awaitable<std::vector<common::batch_record>> batches(std::string id, std::size_t limit) override {
    return ask<std::vector<common::batch_record>>(
        one("SELECT record FROM batches WHERE ($1::text = '' OR id = $1::text) ORDER BY started_at DESC LIMIT $2::bigint",
            std::move(id), limit_param(limit)),
        {}, [](pipeline_outcome& o) { return batch_records_of(o.results.at(0).get()); });
  }

  net::awaitable<common::seq_t> last_seq(std::string id) override {
    return ask<common::seq_t>(one(select_last_seq, std::move(id)), common::seq_t{-1},
                                          [](pipeline_outcome& o) -> common::seq_t {
                                            const PGresult* r = o.results.at(0).get();
                                            return PQntuples(r) > 0 ? std::stoll(cell(r, 0, 0)) : -1;
                                          });
  }

  net::awaitable<std::vector<stored_event>> events_after(std::string id, common::seq_t after,
                                                         std::size_t max_bytes) override {
    return ask<std::vector<stored_event>>(
        one("SELECT seq, frame FROM events WHERE execution_id = $1 AND seq > $2::bigint ORDER BY seq LIMIT " +
                std::to_string(events_page_rows),
            std::move(id), std::to_string(after)),
        {}, [after, max_bytes](pipeline_outcome& o) {
          const PGresult* r = o.results.at(0).get();
          std::vector<stored_event> out;
          std::size_t bytes = 0;
          common::seq_t expected = after + 1;
          for (int row = 0; row < PQntuples(r) && bytes < max_bytes; ++row) {
            append_stored(out, expected, std::stoll(cell(r, row, 0)), cell(r, row, 1));
            bytes += out.back().frame.size();
          }
          return out;
        });
  }

  std::size_t lost_at_open() const override { return lost_.load(); }
  bool degraded() const override { return degraded_.load(); }

  void stop() override {
    if (stopped_.exchange(true)) return;
    wake_.cancel();
    retry_.cancel();
    deadline_.cancel();
    close_connection();
    drain();
    reads_.clear();
    writes_.clear();
  }

 private:
  struct write_job {
    std::variant<audit_save, common::batch_record> what;
    save_retry retry = save_retry::once;
    std::function<void(bool)> done;
    std::optional<net::executor_work_guard<net::any_io_executor>> work;  // the caller's context runs until done
    std::size_t bytes = 0;
    int attempts = 0;
    bool sent = false;  // in the pipeline under way: left alone by the queue's bound
  };
  struct read_job {
    std::vector<pg_query> queries;
    std::function<void(pipeline_outcome*)> answer;  // nullptr: no answer (PostgreSQL away)
  };

  /// A read's completion, given once: by its answer or by its deadline.
  template <class T, class Handler>
  struct read_state {
    read_state(Handler h, net::strand<net::any_io_executor> s) : handler(std::move(h)), timer(std::move(s)) {}
    void finish(T value) {
      if (done) return;
      done = true;
      timer.cancel();
      auto ex = net::get_associated_executor(handler);
      net::post(ex, [h = std::move(handler), v = std::move(value)]() mutable { std::move(h)(std::move(v)); });
    }
    Handler handler;
    net::steady_timer timer;
    bool done = false;
  };

  /// Runs `queries` as one pipeline when the database answers; `empty` when it is away, when
  /// it fails or when it takes longer than read_timeout.
  ///
  /// (No lambda or container temporaries inside a co_await expression in this file: GCC 12
  /// destroys some of them twice, a shared_ptr among them.)
  template <class T, class Parse>
  net::awaitable<T> ask(std::vector<pg_query> queries, T empty, Parse parse) {
    auto initiation = [this, &queries, &empty, &parse](auto handler) {
          auto self = shared_from_this();
          using state_type = read_state<T, decltype(handler)>;
          auto state = std::make_shared<state_type>(std::move(handler), self->strand_);
          net::dispatch(self->strand_, [self, state, queries = std::move(queries), empty = std::move(empty),
                                        parse = std::move(parse)]() mutable {
            if (self->degraded_ || self->stopped_) {
              state->finish(std::move(empty));
              return;
            }
            state->timer.expires_after(read_timeout);
            state->timer.async_wait([state, empty](boost::system::error_code ec) {
              if (!ec) state->finish(empty);
            });
            self->reads_.push_back({std::move(queries), [state, empty, parse](pipeline_outcome* o) {
                                      if (o && o->error) log_event("audit_read_failed", {{"error", *o->error}});
                                      state->finish(o && !o->error ? parse(*o) : empty);
                                    }});
            self->wake_.cancel();
          });
        };
    T result = co_await net::async_initiate<decltype(net::use_awaitable), void(T)>(std::move(initiation), net::use_awaitable);
    co_return result;
  }

  void enqueue(write_job j) {
    if (stopped_) return;
    // A batch's newer record replaces one still waiting: only the last one matters.
    if (const auto* b = std::get_if<common::batch_record>(&j.what)) {
      for (auto& w : writes_) {
        const auto* queued = std::get_if<common::batch_record>(&w.what);
        if (!w.sent && queued && queued->batch_id == b->batch_id) {
          queued_bytes_ -= w.bytes;
          queued_bytes_ += j.bytes;
          w.done(true);
          w.what = std::move(j.what);
          w.bytes = j.bytes;
          w.done = std::move(j.done);
          wake_.cancel();
          return;
        }
      }
    }
    queued_bytes_ += j.bytes;
    writes_.push_back(std::move(j));
    bound_queue();
    wake_.cancel();
  }

  /// Over the bound, the oldest queued output goes first (never an execution's last event:
  /// its exit); the record still comes, and reading back shows a gap where output went.
  void bound_queue() {
    const std::size_t queue_limit_bytes = limits_.queue_bytes;
    for (auto& w : writes_) {
      if (queued_bytes_ <= queue_limit_bytes) return;
      auto* s = std::get_if<audit_save>(&w.what);
      if (w.sent || !s) continue;
      const std::size_t keep = w.retry == save_retry::until_written ? 1 : 0;
      std::size_t n = 0;
      while (s->add.size() - n > keep && queued_bytes_ > queue_limit_bytes) {
        const std::size_t size = s->add[n].frame->size();
        queued_bytes_ -= size;
        w.bytes -= size;
        ++n;
      }
      if (n == 0) continue;
      const auto from = s->add.front().seq, to = s->add[n - 1].seq;
      s->add.erase(s->add.begin(), s->add.begin() + static_cast<std::ptrdiff_t>(n));
      s->record.output_truncated = true;
      if (cut_.insert(s->record.execution_id).second) {
        log_event("audit_queue_full", {{"execution_id", s->record.execution_id},
                                       {"dropped_from", std::to_string(from)},
                                       {"dropped_to", std::to_string(to)},
                                       {"limit_bytes", std::to_string(queue_limit_bytes)}});
      }
    }
  }

  std::vector<pg_query> queries_of(const write_job& j) const {
    if (const auto* s = std::get_if<audit_save>(&j.what)) {
      return save_queries(*s, server_id_, cut_.contains(s->record.execution_id));
    }
    return batch_queries(std::get<common::batch_record>(j.what), server_id_);
  }

  std::string name_of(const write_job& j) const {
    if (const auto* s = std::get_if<audit_save>(&j.what)) return s->record.execution_id;
    return std::get<common::batch_record>(j.what).batch_id;
  }

  void finish_front(bool written) {
    auto j = std::move(writes_.front());
    writes_.pop_front();
    queued_bytes_ -= j.bytes;
    if (const auto* s = std::get_if<audit_save>(&j.what); s && written && j.retry == save_retry::until_written) {
      cut_.erase(s->record.execution_id);
    }
    j.done(written);
  }

  void fail_reads() {
    auto reads = std::move(reads_);
    reads_.clear();
    for (auto& r : reads) r.answer(nullptr);
  }

  net::awaitable<void> drive() {
    auto backoff = std::chrono::milliseconds(first_backoff);
    bool first = true;
    while (!stopped_) {
      if (!conn_) {
        std::string error;
        bool up = co_await connect(error);
        if (up) up = co_await initialize(error);
        if (stopped_) co_return;
        if (!up) {
          close_connection();
          fail_reads();
          if (!degraded_.exchange(true)) {
            log_event("audit_degraded",
                      {{"backend", "postgres"},
                       {"error", trimmed(error)},
                       {"detail", first ? "PostgreSQL cannot be reached at start: serving anyway, audit writes wait in "
                                          "memory and the connection is tried again"
                                        : "PostgreSQL cannot be reached: audit writes wait in memory and the connection "
                                          "is tried again"}});
          }
          co_await sleep(backoff);
          backoff = std::min<std::chrono::milliseconds>(backoff * 2, max_backoff);
          continue;
        }
        backoff = first_backoff;
        if (first) {
          log_event("audit_connected", {{"backend", "postgres"}, {"server_id", server_id_}, {"lost", std::to_string(lost_.load())}});
        }
        // Degraded by a write that got no answer: until a write gets through, not merely a connection.
        if (!stuck_) recovered();
        first = false;
      }
      if (!reads_.empty()) {
        auto job = std::move(reads_.front());
        reads_.pop_front();
        auto out = co_await run(job.queries);
        if (stopped_) co_return;
        if (out.connection_lost) close_connection();
        job.answer(out.connection_lost ? nullptr : &out);
        continue;
      }
      if (!writes_.empty()) {
        co_await write_front();
        continue;
      }
      wake_.expires_at(net::steady_timer::time_point::max());
      co_await wake_.async_wait(net::as_tuple(net::use_awaitable));
    }
  }

  net::awaitable<void> write_front() {
    auto& job = writes_.front();
    job.sent = true;
    ++job.attempts;
    const auto queries = queries_of(job);
    auto out = co_await run(queries);
    if (stopped_) co_return;
    auto& j = writes_.front();  // the same job: only this coroutine pops
    j.sent = false;
    if (out.connection_lost) {
      // Kept at the front, sent again on the next connection.
      --j.attempts;
      close_connection();
      if (out.timed_out) {
        // A lock held elsewhere, a stopped backend: the database takes no writes, though it
        // accepts connections. Degraded (reads answer at once, /healthz says so) until a write
        // gets through; the statement was cancelled so that only the retry waits.
        stuck_ = true;
        if (!degraded_.exchange(true)) {
          log_event("audit_degraded", {{"backend", "postgres"},
                                       {"error", trimmed(out.error.value_or(""))},
                                       {"detail", "a write got no answer: it was cancelled and is sent again on a new "
                                                  "connection; audit writes wait in memory"}});
        }
      }
      co_return;
    }
    if (stuck_) {
      stuck_ = false;
      recovered();
    }
    const std::string id = name_of(j);
    if (!out.error) {
      if (j.attempts > 1) log_event("audit_written", {{"id", id}, {"attempts", std::to_string(j.attempts)}});
      finish_front(true);
      co_return;
    }
    if (j.retry == save_retry::once) {
      log_event("audit_write_failed", {{"id", id}, {"error", trimmed(*out.error)}, {"retry", "at the next flush"}});
      finish_front(false);
      co_return;
    }
    const auto delay = std::min<std::chrono::milliseconds>(first_backoff * (1 << std::min(j.attempts - 1, 5)), max_backoff);
    log_event("audit_write_failed", {{"id", id},
                                     {"error", trimmed(*out.error)},
                                     {"attempt", std::to_string(j.attempts)},
                                     {"retry", "in " + std::to_string(delay.count()) + " ms"}});
    co_await sleep(delay);
  }

  void recovered() {
    if (degraded_.exchange(false)) {
      log_event("audit_recovered", {{"backend", "postgres"}, {"queued_writes", std::to_string(writes_.size())}});
    }
  }

  /// Cancels the statement under way on `conn_`. Dropping the connection alone does not stop
  /// it: its backend goes on waiting (for a lock, say), holding a connection slot, one more at
  /// each timeout, and runs the stale pipeline whenever it can.
  void cancel_statement() {
    PGcancel* c = conn_ ? PQgetCancel(conn_) : nullptr;
    if (!c) return;
    // PQcancel connects to the server and blocks: not on this thread, which serves the streams.
    try {
      std::thread([c] {
        char error[256];
        PQcancel(c, error, sizeof error);
        PQfreeCancel(c);
      }).detach();
    } catch (const std::system_error&) {
      PQfreeCancel(c);
    }
  }

  /// Backoff: new work does not cut it short.
  net::awaitable<void> sleep(std::chrono::milliseconds d) {
    retry_.expires_after(d);
    co_await retry_.async_wait(net::as_tuple(net::use_awaitable));
  }

  /// Aborts what waits on the socket once `d` has passed (the operation under way fails).
  void arm_deadline(std::chrono::steady_clock::duration d) {
    timed_out_ = false;
    deadline_.expires_after(d);
    deadline_.async_wait([weak = weak_from_this()](boost::system::error_code ec) {
      auto self = weak.lock();
      if (ec || !self) return;
      self->timed_out_ = true;
      boost::system::error_code ignored;
      self->socket_.cancel(ignored);
    });
  }

  /// Follows the socket libpq uses (it may open another while connecting).
  void track_socket() {
    release_socket();
    const int fd = PQsocket(conn_);
    if (fd >= 0) socket_.assign(fd);
  }

  void release_socket() {
    if (socket_.is_open()) socket_.release();  // libpq owns the descriptor
  }

  void close_connection() {
    release_socket();
    if (conn_) PQfinish(conn_);
    conn_ = nullptr;
  }

  net::awaitable<bool> connect(std::string& error) {
    const connect_params p(conninfo_);
    conn_ = PQconnectStartParams(p.keys.data(), p.values.data(), 1);
    if (!conn_) {
      error = "out of memory";
      co_return false;
    }
    PQsetNoticeProcessor(conn_, ignore_notice, nullptr);
    if (PQstatus(conn_) == CONNECTION_BAD) {
      error = PQerrorMessage(conn_);
      co_return false;
    }
    arm_deadline(connect_timeout);
    auto status = PGRES_POLLING_WRITING;
    while (status != PGRES_POLLING_OK) {
      if (status == PGRES_POLLING_FAILED) {
        error = PQerrorMessage(conn_);
        deadline_.cancel();
        co_return false;
      }
      track_socket();
      const auto direction = status == PGRES_POLLING_READING ? net::posix::stream_descriptor::wait_read
                                                             : net::posix::stream_descriptor::wait_write;
      auto [ec] = co_await socket_.async_wait(direction, net::as_tuple(net::use_awaitable));
      if (stopped_) co_return false;
      if (ec) {
        error = timed_out_ ? "no answer within " + std::to_string(connect_timeout.count()) + " s" : ec.message();
        co_return false;
      }
      status = PQconnectPoll(conn_);
    }
    deadline_.cancel();
    track_socket();
    if (PQsetnonblocking(conn_, 1) != 0 || PQenterPipelineMode(conn_) != 1) {
      error = PQerrorMessage(conn_);
      co_return false;
    }
    co_return true;
  }

  /// Once per process, on its first connection: the schema, and this server's leftovers lost.
  net::awaitable<bool> initialize(std::string& error) {
    if (initialized_) co_return true;
    std::vector<pg_query> create;
    for (const auto& sql : schema) create.push_back(one(sql).front());
    if (!co_await run_checked(create, error)) co_return false;

    // Queued and awaiting approval too: the queue and the approvals lived in that process.
    const auto select_left = one("SELECT record FROM executions WHERE server_id = $1 "
                                 "AND state IN ('running', 'queued', 'awaiting_approval')",
                                 server_id_);
    auto left = co_await run_checked(select_left, error);
    if (!left) co_return false;
    const auto running = records_of(left->results.at(0).get());
    for (const auto& r : running) {
      const auto select_last = one(select_last_seq, r.execution_id);
      auto last = co_await run_checked(select_last, error);
      if (!last) co_return false;
      const audit_save s = lost_save(r, std::stoll(cell(last->results.at(0).get(), 0, 0)));
      const auto mark = save_queries(s, server_id_, false);
      if (!co_await run_checked(mark, error)) co_return false;
      log_event("lost", {{"execution_id", r.execution_id}, {"machine", r.machine_id}});
    }
    // The batches that were running: their executions are lost (above), and so is the batch.
    const auto select_batches = one("SELECT record FROM batches WHERE server_id = $1 AND state = 'running'", server_id_);
    auto open_batches = co_await run_checked(select_batches, error);
    if (!open_batches) co_return false;
    for (auto& b : batch_records_of(open_batches->results.at(0).get())) {
      std::map<std::string, common::execution_record> members;
      for (const auto& m : b.executions) {
        const auto select_member = one(select_record, m.execution_id);
        auto got = co_await run_checked(select_member, error);
        if (!got) co_return false;
        for (auto& rec : records_of(got->results.at(0).get())) members.emplace(rec.execution_id, std::move(rec));
      }
      mark_batch_lost(b, [&members](const std::string& id) -> std::optional<common::execution_record> {
        const auto it = members.find(id);
        if (it == members.end()) return std::nullopt;
        return it->second;
      });
      const auto mark_batch = batch_queries(b, server_id_);
      if (!co_await run_checked(mark_batch, error)) co_return false;
    }
    lost_ = running.size();
    initialized_ = true;
    co_return true;
  }

  /// run(), with any failure as `error`.
  net::awaitable<std::optional<pipeline_outcome>> run_checked(const std::vector<pg_query>& queries, std::string& error) {
    auto out = co_await run(queries);
    if (out.connection_lost || out.error) {
      error = out.error ? *out.error : "connection lost";
      co_return std::nullopt;
    }
    co_return std::move(out);
  }

  /// Sends `queries` as one pipeline (one transaction) and reads their results.
  net::awaitable<pipeline_outcome> run(const std::vector<pg_query>& queries) {
    using namespace net::experimental::awaitable_operators;
    pipeline_outcome out;
    auto lost = [&out, this](std::string why) {
      out.connection_lost = true;
      out.error = conn_ && !timed_out_ ? std::string(PQerrorMessage(conn_)) : std::move(why);
      deadline_.cancel();
      return std::move(out);
    };
    if (!conn_ || stopped_) co_return lost("not connected");
    std::vector<const char*> values;
    for (const auto& q : queries) {
      values.clear();
      for (const auto& p : q.params) values.push_back(p.c_str());
      if (!PQsendQueryParams(conn_, q.sql.c_str(), static_cast<int>(values.size()), nullptr, values.data(), nullptr,
                             nullptr, 0)) {
        co_return lost("send failed");
      }
    }
    if (!PQpipelineSync(conn_)) co_return lost("sync failed");
    arm_deadline(limits_.statement_timeout);
    auto no_answer = [&out, &lost, this] {
      cancel_statement();
      out.timed_out = true;
      return lost("no answer within " + std::to_string(limits_.statement_timeout.count()) + " ms");
    };

    // Out: a full socket may need the server's answers read first (libpq's advice).
    for (;;) {
      const int flushed = PQflush(conn_);
      if (flushed < 0) co_return lost("send failed");
      if (flushed == 0) break;
      const auto ready =
          co_await (socket_.async_wait(net::posix::stream_descriptor::wait_write, net::as_tuple(net::use_awaitable)) ||
                    socket_.async_wait(net::posix::stream_descriptor::wait_read, net::as_tuple(net::use_awaitable)));
      if (stopped_) co_return lost("stopped");
      const auto [ec] = std::visit([](const auto& t) { return t; }, ready);
      if (ec && timed_out_) co_return no_answer();
      if (ec) co_return lost(ec.message());
      if (ready.index() == 1 && !PQconsumeInput(conn_)) co_return lost("receive failed");
    }

    // In: one result per statement, each followed by a null, then the sync.
    std::size_t index = 0;
    for (;;) {
      while (PQisBusy(conn_)) {
        auto [ec] = co_await socket_.async_wait(net::posix::stream_descriptor::wait_read, net::as_tuple(net::use_awaitable));
        if (stopped_) co_return lost("stopped");
        if (ec && timed_out_) co_return no_answer();
        if (ec) co_return lost(ec.message());
        if (!PQconsumeInput(conn_)) co_return lost("receive failed");
      }
      pg_result r(PQgetResult(conn_));
      if (!r) {
        if (++index > queries.size()) co_return lost("out of step with the server");
        continue;
      }
      const auto status = PQresultStatus(r.get());
      if (status == PGRES_PIPELINE_SYNC) break;
      if (status == PGRES_FATAL_ERROR && !out.error) out.error = PQresultErrorMessage(r.get());
      if (out.results.size() == index) out.results.push_back(std::move(r));
    }
    deadline_.cancel();
    if (PQstatus(conn_) == CONNECTION_BAD) co_return lost("connection lost");
    if (!out.error && out.results.size() != queries.size()) out.error = "missing results";
    co_return std::move(out);
  }

  /// At stop: what is still queued, over a blocking connection of its own, for a bounded time.
  void drain() {
    if (writes_.empty()) return;
    const auto until = std::chrono::steady_clock::now() + drain_timeout;
    const connect_params p(conninfo_, "3");
    PGconn* c = PQconnectdbParams(p.keys.data(), p.values.data(), 1);
    std::size_t unwritten = 0;
    std::string error;
    if (!c || PQstatus(c) != CONNECTION_OK) {
      error = c ? trimmed(PQerrorMessage(c)) : "out of memory";
      unwritten = writes_.size();
    } else {
      PQsetNoticeProcessor(c, ignore_notice, nullptr);
      for (const auto& j : writes_) {
        // Blocking calls: a statement waiting on a lock would hold the shutdown forever, so
        // the server cuts it at what is left of the drain's time.
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - std::chrono::steady_clock::now());
        if (left.count() <= 0 || !write_blocking(c, queries_of(j), left, error)) ++unwritten;
      }
    }
    if (c) PQfinish(c);
    if (unwritten > 0) log_event("audit_unwritten", {{"saves", std::to_string(unwritten)}, {"error", error}});
  }

  static bool write_blocking(PGconn* c, const std::vector<pg_query>& queries, std::chrono::milliseconds timeout,
                             std::string& error) {
    auto exec = [c, &error](const pg_query& q) {
      std::vector<const char*> values;
      for (const auto& p : q.params) values.push_back(p.c_str());
      const pg_result r(PQexecParams(c, q.sql.c_str(), static_cast<int>(values.size()), nullptr, values.data(), nullptr,
                                     nullptr, 0));
      const auto status = r ? PQresultStatus(r.get()) : PGRES_FATAL_ERROR;
      if (status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK) return true;
      error = trimmed(PQerrorMessage(c));
      return false;
    };
    if (!exec({"SET statement_timeout = " + std::to_string(std::max<std::int64_t>(timeout.count(), 1)), {}})) return false;
    if (!exec({"BEGIN", {}})) return false;
    const bool ok = std::all_of(queries.begin(), queries.end(), exec);
    if (ok && exec({"COMMIT", {}})) return true;
    exec({"ROLLBACK", {}});
    return false;
  }

  const std::string conninfo_;
  const std::string server_id_;
  const postgres_limits limits_;
  net::strand<net::any_io_executor> strand_;
  net::posix::stream_descriptor socket_;
  net::steady_timer wake_;      // the idle driver's: new work cancels it
  net::steady_timer retry_;     // backoff
  net::steady_timer deadline_;  // the operation under way on the socket
  PGconn* conn_ = nullptr;
  bool timed_out_ = false;
  bool initialized_ = false;
  bool stuck_ = false;  // degraded by a write with no answer
  std::deque<read_job> reads_;
  std::deque<write_job> writes_;
  std::size_t queued_bytes_ = 0;
  std::set<std::string> cut_;  // executions whose queued output was dropped
  std::atomic<bool> degraded_{false}, stopped_{false};
  std::atomic<std::size_t> lost_{0};
};

}  // namespace

common::result<std::shared_ptr<audit_backend>> open_postgres_backend(const std::string& conninfo,
                                                                    const std::string& server_id,
                                                                    net::any_io_executor executor,
                                                                    postgres_limits limits) {
  char* message = nullptr;
  PQconninfoOption* parsed = PQconninfoParse(conninfo.c_str(), &message);
  if (!parsed) {
    std::string why = message ? trimmed(message) : "out of memory";
    PQfreemem(message);
    return common::failure{"[audit] postgres: not a libpq connection string (" + why + ")"};
  }
  PQconninfoFree(parsed);
  auto backend = std::make_shared<postgres_backend>(conninfo, server_id, executor, limits);
  stop_with_context(executor, backend);  // its socket is let go while the context still exists
  backend->start();
  return std::shared_ptr<audit_backend>(std::move(backend));
}

}  // namespace cmdcast::server
