// The executions this server holds, by id: the running ones, and the finished ones kept in
// memory (replay buffer and all) for fast attaches, within bounds; older ones live in the audit
// store only. With them, each machine's shared SSH connection. The one place that knows where
// an execution lives. Used on the server's thread only.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/steady_timer.hpp>

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <variant>

#include "config/config.hpp"
#include "exec/batch.hpp"
#include "exec/execution.hpp"

namespace cmdcast::server {

namespace ssh {
class machine_connection;
}

class execution_registry {
 public:
  execution_registry(net::any_io_executor executor, const server_settings& settings);

  /// The execution, if this server holds it.
  std::shared_ptr<execution> find(const std::string& id) const;
  const std::map<std::string, std::shared_ptr<execution>>& all() const { return executions_; }
  /// How many run on `machine_id` now.
  std::size_t running_on(const std::string& machine_id) const;
  bool all_finished() const;

  /// Makes an execution of `r` for `user`, audited in `audit` (may be null), and starts it, or
  /// has it wait: for another operator's approval (an approval action), then for the machine's
  /// running exclusive action (an exclusive one). `on_end` runs once it has ended and been
  /// filed. A `busy` error when an exclusive action with on_busy = "refuse" finds the machine
  /// busy, or too many wait on the machine.
  std::variant<std::shared_ptr<execution>, request_error> submit(const resolved_command& r, const std::string& user,
                                                                 audit_store* audit, std::function<void()> on_end);
  /// Approves or rejects an execution awaiting approval (the caller checked who may); an error
  /// when it is not awaiting one.
  std::optional<request_error> approve(const std::shared_ptr<execution>& e, const std::string& user);
  std::optional<request_error> reject(const std::shared_ptr<execution>& e, const std::string& user);
  /// Cancels a running execution, or ends a waiting one `cancelled`.
  void cancel(const std::shared_ptr<execution>& e);

  /// A fleet run of `group`: an execution per machine (`runs`, in the group's order), started
  /// `parallel` at a time (all when empty), the ones not started yet skipped once one failed
  /// with `stop_on_failure`. `on_end` runs as each execution ends. A `busy` error when a
  /// machine has too many waiting.
  std::variant<std::shared_ptr<batch>, request_error> submit_batch(const std::string& group,
                                                                   const std::vector<resolved_command>& runs,
                                                                   const common::group_run_request& request,
                                                                   const std::string& user, audit_store* audit,
                                                                   std::function<void()> on_end);
  /// Cancels every execution of `b` that has not ended.
  void cancel_batch(const std::shared_ptr<batch>& b);
  std::shared_ptr<batch> find_batch(const std::string& id) const;
  /// Newest first.
  std::vector<std::shared_ptr<batch>> batches() const;
  void cancel_all();
  void disconnect_all();
  /// A reload: new runs use `settings`; a machine removed or reached differently from now on
  /// gets a new connection for new runs, while its running commands finish on the old one.
  void reconfigure(const server_settings& settings, const std::vector<machine_entry>& machines);

  /// Told of each execution made here, before it starts or waits (the cluster relays it).
  std::function<void(const std::shared_ptr<execution>&)> on_new_execution;
  /// Told of each new fleet run, its members made (after on_new_execution for each).
  std::function<void(const std::shared_ptr<batch>&)> on_new_batch;

  /// Output bytes read over SSH, of every execution so far (for /metrics).
  std::uint64_t ssh_bytes_in() const;

 private:
  /// An execution that has not started yet, with what starting it takes (copies: a reload
  /// may replace the config meanwhile).
  struct waiting {
    std::shared_ptr<execution> e;
    machine_entry machine;
    bool exclusive = false;
    std::function<void()> on_end;
    std::shared_ptr<net::steady_timer> expiry;  // approval_timeout_s, while awaiting approval
    std::shared_ptr<batch> in_batch;            // a fleet run's member
    bool held = false;                          // the batch has not let it start yet
  };
  std::shared_ptr<ssh::machine_connection> connection_for(const machine_entry& m);
  /// After its approval (if any): starts it, or queues it behind the machine's exclusive run.
  void proceed(waiting w);
  void launch(waiting w);
  /// Ends a waiting execution that never ran.
  void end_waiting(const std::string& id, common::exit_state state, const std::string& why);
  /// Tells each queued execution of `machine_id` its position.
  void renumber(const std::string& machine_id);
  std::size_t waiting_on(const std::string& machine_id) const;
  /// Lets a batch's next members start, up to its parallel bound; ends the ones stop_on_failure
  /// skips; tells its listeners.
  void schedule(const std::shared_ptr<batch>& b);
  void file_finished(const std::shared_ptr<execution>& e);

  net::any_io_executor executor_;
  server_settings settings_;
  std::map<std::string, std::shared_ptr<ssh::machine_connection>> connections_;  // by machine id
  std::map<std::string, std::shared_ptr<execution>> executions_;                 // by id
  std::deque<std::string> finished_order_;
  std::size_t finished_replay_bytes_ = 0;
  std::map<std::string, std::size_t> running_per_machine_;
  std::map<std::string, waiting> waiting_;                      // by execution id: queued or awaiting approval
  std::map<std::string, std::deque<std::string>> queues_;       // by machine id: queued execution ids, in order
  std::map<std::string, std::string> exclusive_running_;        // by machine id: its running exclusive execution
  std::deque<std::shared_ptr<batch>> batches_;                  // oldest first, the last max_batches_kept
  std::uint64_t ssh_bytes_in_ended_ = 0;  // output bytes of the executions that have ended
};

}  // namespace cmdcast::server
