// Runs commands on one machine over one shared SSH connection: connected on first use,
// reconnected after it drops, with a bound on concurrent channels. Cancelling or timing out a
// command really stops the remote process and its children.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/steady_timer.hpp>

#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "ssh/ssh_types.hpp"

namespace cmdcast::server::ssh {

namespace net = boost::asio;
class ssh_session;

/// Lets one run be cancelled, and its reading held, from elsewhere. Use on the connection's
/// executor.
class run_control {
 public:
  void cancel();
  bool cancel_requested() const { return cancel_requested_; }
  /// Holds (or resumes) reading the command's output: while held, SSH's channel window fills
  /// and then blocks the remote command on its writes. A stop (cancel, timeout) reads on.
  void hold(bool held);
  bool held() const { return held_; }

 private:
  friend class machine_connection;
  bool cancel_requested_ = false;
  bool held_ = false;
  std::function<void()> wake_;  // set while the run is active
};

/// All members are called on one single-threaded executor (or strand), the one given here.
class machine_connection : public std::enable_shared_from_this<machine_connection> {
 public:
  machine_connection(net::any_io_executor executor, machine_endpoint endpoint,
                     connection_options options = {});
  ~machine_connection();

  /// Runs `command` (a shell command line) and hands its stdout and stderr to `on_output` as
  /// they arrive. Stdin is closed. Waits for a free channel when max_channels are busy.
  net::awaitable<run_result> run(std::string command, output_handler on_output,
                                 std::shared_ptr<run_control> control = nullptr,
                                 run_options options = {});

  /// Connects now if not connected (a health check); returns why it could not.
  net::awaitable<std::optional<failure>> connect();

  /// Drops the connection; running commands end as failed.
  void disconnect();

  std::size_t running() const { return running_; }
  std::size_t waiting() const { return waiters_.size(); }
  /// Times a new SSH connection was established (1 after the first, more after drops).
  std::size_t connections_made() const { return connections_made_; }
  const machine_endpoint& endpoint() const { return endpoint_; }

 private:
  struct slot_waiter;
  net::awaitable<std::shared_ptr<ssh_session>> session(failure& error);
  net::awaitable<bool> acquire_slot(run_control* control);
  void release_slot();
  net::awaitable<run_result> run_on(std::shared_ptr<ssh_session> s, const std::string& command,
                                    const output_handler& on_output, run_control& control,
                                    const run_options& options, bool& retry);
  struct run_state;
  net::awaitable<void> stop_remote(std::shared_ptr<ssh_session> s, std::shared_ptr<run_state> state,
                                   std::chrono::milliseconds grace);

  net::any_io_executor executor_;
  machine_endpoint endpoint_;
  connection_options options_;
  std::shared_ptr<ssh_session> session_;
  bool connecting_ = false;
  std::shared_ptr<net::steady_timer> connect_done_;  // cancelled when a connect attempt ends
  failure last_connect_failure_;
  std::size_t running_ = 0;
  std::deque<std::shared_ptr<slot_waiter>> waiters_;
  std::size_t connections_made_ = 0;
};

/// Quotes `s` for a POSIX shell: the result is one word with exactly the bytes of `s`.
std::string shell_quote(std::string_view s);

/// The command line actually executed: it reports the shell's process group (to stderr, which
/// run() strips) so that cancel can signal the whole group, then runs `command` with sh.
std::string wrap_for_process_group(std::string_view command);

/// Why host keys could not be checked against `known_hosts` (unreadable, a line libssh2
/// cannot parse, no key at all), or nullopt. Reads the file as a connection would; connects
/// nowhere.
std::optional<std::string> check_known_hosts_file(const std::string& known_hosts);

}  // namespace cmdcast::server::ssh
