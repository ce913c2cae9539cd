// What audit_store asks of a database (SQLite on a thread of its own, or a PostgreSQL
// connection on the server's executor), and the pieces both share so that they store and
// replay output alike. Internal to server/audit.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "audit/audit_store.hpp"

namespace cmdcast::server {

/// What must stop before an I/O context it uses is torn down: a database socket on it, or an
/// audit thread completing operations on it (a context being torn down may receive none).
class stops_with_context {
 public:
  virtual ~stops_with_context() = default;
  /// Idempotent.
  virtual void stop() = 0;
};

/// Stops `s` (if it still lives) when the context of `executor` shuts down.
void stop_with_context(const net::any_io_executor& executor, const std::shared_ptr<stops_with_context>& s);

/// One database behind audit_store; each method has the meaning of the audit_store method of
/// the same name. Called from any thread; completions run on the caller's executor.
class audit_backend : public stops_with_context {
 public:
  virtual ~audit_backend() = default;
  virtual void save(audit_save s, save_retry retry, net::any_io_executor executor, std::function<void(bool)> done) = 0;
  virtual net::awaitable<std::size_t> prune(std::string cutoff) = 0;
  virtual net::awaitable<std::optional<common::execution_record>> record(std::string id) = 0;
  virtual net::awaitable<std::vector<common::execution_record>> list(std::string state, std::string machine,
                                                                     std::size_t limit) = 0;
  virtual net::awaitable<bool> save_batch(common::batch_record b) = 0;
  virtual net::awaitable<std::vector<common::batch_record>> batches(std::string id, std::size_t limit) = 0;
  virtual net::awaitable<common::seq_t> last_seq(std::string id) = 0;
  virtual net::awaitable<std::vector<stored_event>> events_after(std::string id, common::seq_t after,
                                                                 std::size_t max_bytes) = 0;
  virtual std::size_t lost_at_open() const = 0;
  virtual bool degraded() const = 0;
  /// Writes what is queued (a bounded time), then lets go of the database. Idempotent.
  void stop() override = 0;
};

/// Reading stored events in seq order: appends the event `seq` to `out`, after a gap event for
/// the seqs from `expected` that the store does not have (it cut them, or lost them); then
/// `expected` is the seq after it.
void append_stored(std::vector<stored_event>& out, common::seq_t& expected, common::seq_t seq, std::string frame);

/// The save that closes an execution a previous process left unfinished: its record marked
/// `lost` and an exit event after `last_seq` saying so.
audit_save lost_save(common::execution_record r, common::seq_t last_seq);

/// Marks a batch left running as lost; `record_of` gives its executions' stored records.
void mark_batch_lost(common::batch_record& b,
                     const std::function<std::optional<common::execution_record>(const std::string&)>& record_of);

/// The record as stored (live-only fields cleared), as JSON.
std::string stored_record_json(const common::execution_record& r);

}  // namespace cmdcast::server
