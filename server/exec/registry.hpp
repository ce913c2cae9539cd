// The executions this server holds, by id: the running ones, and the finished ones kept in
// memory (replay buffer and all) for fast attaches, within bounds; older ones live in the audit
// store only. With them, each machine's shared SSH connection. The one place that knows where
// an execution lives. Used on the server's thread only.
#pragma once

#include <boost/asio/any_io_executor.hpp>

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <string>

#include "config/config.hpp"
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

  /// Starts `r` for `user`, audited in `audit` (may be null); `on_end` runs once it has ended
  /// and been filed.
  std::shared_ptr<execution> start(const resolved_command& r, const std::map<std::string, std::string>& params,
                                   const std::string& user, audit_store* audit, std::function<void()> on_end);
  void cancel_all();
  void disconnect_all();
  /// A reload: new runs use `settings`; a machine removed or reached differently from now on
  /// gets a new connection for new runs, while its running commands finish on the old one.
  void reconfigure(const server_settings& settings, const std::vector<machine_entry>& machines);

  /// Output bytes read over SSH, of every execution so far (for /metrics).
  std::uint64_t ssh_bytes_in() const;

 private:
  std::shared_ptr<ssh::machine_connection> connection_for(const machine_entry& m);
  void file_finished(const std::shared_ptr<execution>& e);

  net::any_io_executor executor_;
  server_settings settings_;
  std::map<std::string, std::shared_ptr<ssh::machine_connection>> connections_;  // by machine id
  std::map<std::string, std::shared_ptr<execution>> executions_;                 // by id
  std::deque<std::string> finished_order_;
  std::size_t finished_replay_bytes_ = 0;
  std::map<std::string, std::size_t> running_per_machine_;
  std::uint64_t ssh_bytes_in_ended_ = 0;  // output bytes of the executions that have ended
};

}  // namespace cmdcast::server
