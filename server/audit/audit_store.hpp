// The audit log: every execution's record and its output, in SQLite (WAL), so that what ran,
// who ran it and what it printed outlives the process. Output is kept as the serialised events
// themselves (the frames watchers got), so a finished execution is replayed from here exactly
// as it streamed, with a `gap` where the store cut it (docs/protocol.md, "Audit").
// Synchronous and single-threaded: used on the server's executor only.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "cmdcast/common/protocol.hpp"
#include "cmdcast/common/result.hpp"

struct sqlite3;

namespace cmdcast::server {

/// One sequenced event as stored: its seq and its frame (the event's JSON).
struct stored_event {
  common::seq_t seq = 0;
  std::string frame;
};

/// An event to store, not copied.
struct event_ref {
  common::seq_t seq = 0;
  std::string_view frame;
};

class audit_store {
 public:
  /// Opens (creating if needed) the database at `path`, and marks executions that a previous
  /// process left running as `lost`, closing their output with an exit event saying so.
  static common::result<std::unique_ptr<audit_store>> open(const std::string& path);
  ~audit_store();
  audit_store(const audit_store&) = delete;
  audit_store& operator=(const audit_store&) = delete;

  /// How many executions open() found left running and marked lost.
  std::size_t lost_at_open() const { return lost_at_open_; }

  /// Writes in one transaction: the record, the events in `add`, and drops the stored events
  /// with drop_from <= seq <= drop_to (the part of the output the store no longer keeps).
  /// Returns false (and logs) when SQLite fails: the audit is best effort, never in the way of
  /// the stream.
  bool save(const common::execution_record& record, const std::vector<event_ref>& add,
            std::optional<std::pair<common::seq_t, common::seq_t>> drop = std::nullopt);

  /// Deletes the executions (and their output) that started before `cutoff` (RFC 3339, UTC)
  /// and have ended. Returns how many.
  std::size_t prune(const std::string& cutoff);

  std::optional<common::execution_record> record(std::string_view id);
  /// Newest first; `state` "all", "running" or an exit state.
  std::vector<common::execution_record> list(std::string_view state, std::size_t limit);

  /// Stored events with seq > after, in order, up to about `max_bytes` of frames (at least one
  /// event). Where the store cut the output, a gap event stands for what it no longer has.
  /// The seq of the last stored event (-1: none).
  common::seq_t last_seq(std::string_view id);
  std::vector<stored_event> events_after(std::string_view id, common::seq_t after, std::size_t max_bytes);

 private:
  explicit audit_store(sqlite3* db) : db_(db) {}
  bool exec(const char* sql);
  void mark_lost();

  sqlite3* db_;
  std::size_t lost_at_open_ = 0;
};

}  // namespace cmdcast::server
