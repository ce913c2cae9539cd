// A fleet run: one action on every machine of a group, each machine an ordinary execution (its
// own seq, replay, audit, attach, poll and cancel). The batch knows its executions in the
// group's order, which of them it has let start (execution_registry schedules them: parallel,
// stop_on_failure), counts them, and tells its listeners (batch streams) when the counts change.
// Used on the server's single-threaded executor only.
#pragma once

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <boost/asio/any_io_executor.hpp>

#include "cmdcast/common/protocol.hpp"
#include "exec/event_frame.hpp"

namespace cmdcast::server {

namespace net = boost::asio;
class audit_store;
class execution;

/// A batch stream: told of every new summary.
class batch_listener {
 public:
  virtual ~batch_listener() = default;
  virtual void batch_changed(const frame& summary) = 0;
};

class batch {
 public:
  struct member {
    std::string machine_id;
    std::shared_ptr<execution> e;
    bool released = false;  // let start (it may still wait for an exclusive lock)
  };

  /// `audit` (may be null) gets the record when the batch starts and when it ends.
  batch(net::any_io_executor executor, audit_store* audit, std::string id, std::string group, std::string action_type,
        std::map<std::string, std::string> params, std::string user, std::optional<std::int64_t> parallel,
        bool stop_on_failure);

  /// A fleet run another server of the cluster holds, as its record says, with copies of its
  /// executions as `members`: its counts follow theirs, and it schedules nothing.
  batch(net::any_io_executor executor, const common::batch_record& r, std::vector<member> members);
  bool is_copy() const { return copy_; }

  const std::string& id() const { return id_; }
  std::vector<member>& members() { return members_; }
  const std::vector<member>& members() const { return members_; }
  std::optional<std::int64_t> parallel() const { return parallel_; }
  bool stop_on_failure() const { return stop_on_failure_; }
  bool finished() const;
  common::batch_counts counts() const;
  /// "running" until every execution has ended, then "succeeded", "failed" or "cancelled".
  std::string state() const;
  common::batch_record record() const;
  frame summary_frame() const;

  /// A member started or ended: the listeners get the new summary if the counts changed.
  void changed();
  void listen(batch_listener* l) { listeners_.push_back(l); }
  void unlisten(batch_listener* l) { std::erase(listeners_, l); }
  /// Writes the record to the audit store (in the background).
  void save() const;

  // Scheduling state (execution_registry).
  bool stopping = false;    // stop_on_failure fired, or the batch is being cancelled: start no more
  bool cancelled = false;   // cancelled as a whole

 private:
  net::any_io_executor executor_;
  audit_store* audit_;
  std::string id_, group_, action_type_;
  std::map<std::string, std::string> params_;
  std::string user_, started_at_;
  std::optional<std::string> ended_at_;
  std::optional<std::int64_t> parallel_;
  bool stop_on_failure_;
  bool copy_ = false;
  std::vector<member> members_;
  std::vector<batch_listener*> listeners_;
  common::batch_counts announced_;
};

}  // namespace cmdcast::server
