// The audit log: every execution's record and its output, in SQLite (WAL) or in PostgreSQL
// (postgres_audit.hpp), so that what ran, who ran it and what it printed outlives the process. Output is kept as the serialised events
// themselves (the frames watchers got), so a finished execution is replayed from here exactly
// as it streamed, with a `gap` where the store cut it (docs/protocol.md, "Audit").
//
// The SQLite connection belongs to a thread of its own: the server's I/O thread never waits on
// the disk or on a lock another process holds. Writes are queued to that thread and complete
// (written or not) on the caller's executor; reads are awaited and resume on the caller's
// executor. A locked or failing database delays writes, which are retried and logged, never
// a stream. The store must outlive the operations it has started.
//
// With PostgreSQL the connection lives on the server's executor instead (libpq's asynchronous
// API), and an unreachable database makes the store `degraded()`: writes queue in memory
// (bounded) until it is back, reads answer empty at once.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>

#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "cmdcast/common/protocol.hpp"
#include "cmdcast/common/result.hpp"

namespace cmdcast::server {

namespace net = boost::asio;

/// One sequenced event as stored: its seq and its frame (the event's JSON).
struct stored_event {
  common::seq_t seq = 0;
  std::string frame;
};

/// One write for the audit thread, in one transaction: the record, the events in `add` (their
/// frames shared with the stream, not copied), and dropping the stored events with
/// drop->first <= seq <= drop->second (the part of the output the store no longer keeps).
struct audit_save {
  struct event {
    common::seq_t seq = 0;
    std::shared_ptr<const std::string> frame;
  };
  common::execution_record record;
  std::vector<event> add;
  std::optional<std::pair<common::seq_t, common::seq_t>> drop;
};

class audit_backend;

/// The PostgreSQL store's bounds; the defaults are the server's (tests pass smaller ones).
struct postgres_limits {
  /// Output waiting in memory while PostgreSQL cannot be written; past it the oldest goes.
  std::size_t queue_bytes = std::size_t{64} << 20;
  /// A pipeline with no answer for this long is cancelled, the connection made again and the
  /// store degraded until a write gets through.
  std::chrono::milliseconds statement_timeout{30000};
};

/// How hard a save tries: `once` (the caller keeps the data and saves it again later), or
/// `until_written`, with backoff, for as long as the store runs (an execution's last save).
enum class save_retry { once, until_written };

class audit_store {
 public:
  /// Opens (creating if needed) the database at `path`, marks executions that a previous
  /// process left running as `lost` (closing their output with an exit event saying so), and
  /// starts the audit thread.
  static common::result<std::unique_ptr<audit_store>> open(const std::string& path);
  /// The audit in PostgreSQL (`conninfo`, libpq's syntax; an error only when it does not
  /// parse). Connects in the background on `executor` (whose I/O context must be running
  /// single-threaded or be the one the server runs): creates the schema if missing and marks
  /// the executions and batches that a previous process of server `server_id` left
  /// unfinished as lost (never another server's). Unreachable, the store starts degraded and
  /// keeps trying.
  static common::result<std::unique_ptr<audit_store>> open_postgres(const std::string& conninfo,
                                                                    const std::string& server_id,
                                                                    net::any_io_executor executor,
                                                                    postgres_limits limits = {});
  /// Waits a bounded time for the queued writes, then stops the audit thread. The same
  /// happens when an I/O context that gets the store's completions is destroyed first.
  ~audit_store();
  audit_store(const audit_store&) = delete;
  audit_store& operator=(const audit_store&) = delete;

  /// How many executions open() found left running and marked lost (PostgreSQL: once the
  /// first connection has done so; 0 before).
  std::size_t lost_at_open() const;
  /// True while the database cannot be written (PostgreSQL unreachable): writes are queued,
  /// reads answer empty. Always false for SQLite.
  bool degraded() const;

  /// Queues `save` for the audit thread; `done(written)` then runs on `executor`. A failure
  /// (a lock held too long, a full disk) is logged, and `written` is false only when nothing
  /// of the save was written.
  void async_save(audit_save save, save_retry retry, net::any_io_executor executor,
                  std::function<void(bool written)> done);

  /// Deletes the executions (and their output) that started before `cutoff` (RFC 3339, UTC)
  /// and have ended. Returns how many (0 when the database refused).
  net::awaitable<std::size_t> async_prune(std::string cutoff);
  net::awaitable<std::optional<common::execution_record>> async_record(std::string id);
  /// Newest first; `state` "all", "running", "queued", "awaiting_approval" or an exit state;
  /// `machine` a machine id, or empty for all.
  net::awaitable<std::vector<common::execution_record>> async_list(std::string state, std::string machine,
                                                                   std::size_t limit);
  /// Writes a batch's record (a fleet run), in place of the one before; false when it failed
  /// (logged). A batch left running by a previous process is marked lost by open().
  net::awaitable<bool> async_save_batch(common::batch_record b);
  /// The batch `id`, or (`id` empty) the newest `limit` batches.
  net::awaitable<std::vector<common::batch_record>> async_batches(std::string id, std::size_t limit);
  /// The seq of the last stored event (-1: none).
  net::awaitable<common::seq_t> async_last_seq(std::string id);
  /// Stored events with seq > after, in order, up to about `max_bytes` of frames (at least one
  /// event). Where the store cut the output, a gap event stands for what it no longer has.
  net::awaitable<std::vector<stored_event>> async_events_after(std::string id, common::seq_t after,
                                                               std::size_t max_bytes);

 private:
  explicit audit_store(std::shared_ptr<audit_backend> backend) : backend_(std::move(backend)) {}

  std::shared_ptr<audit_backend> backend_;
};

}  // namespace cmdcast::server
