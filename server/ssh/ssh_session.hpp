// One SSH connection: a TCP socket and a non-blocking libssh2 session driven by Asio
// coroutines. Every libssh2 call is retried on EAGAIN after awaiting the socket in the
// direction libssh2 reports, so no thread ever blocks and nothing polls.
//
// Several coroutines (one per channel) may use one session. They must all run on the same
// single-threaded executor (or strand): libssh2 is not thread-safe, and cooperative scheduling
// is what keeps its calls from overlapping.
#pragma once

#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "ssh/ssh_types.hpp"

struct _LIBSSH2_SESSION;
struct _LIBSSH2_CHANNEL;

namespace cmdcast::server::ssh {

namespace net = boost::asio;

class ssh_session : public std::enable_shared_from_this<ssh_session> {
 public:
  ssh_session(net::any_io_executor executor, machine_endpoint endpoint, connection_options options);
  ~ssh_session();
  ssh_session(const ssh_session&) = delete;
  ssh_session& operator=(const ssh_session&) = delete;

  /// Resolves, connects, handshakes, checks the host key and authenticates.
  net::awaitable<std::optional<failure>> establish();

  /// Opens a session channel and executes `command` on it, then sends EOF (stdin closed).
  /// Returns null and sets `error` when the channel cannot be opened.
  net::awaitable<_LIBSSH2_CHANNEL*> exec(const std::string& command, failure& error);

  /// Runs a libssh2 call until it stops answering EAGAIN. `fn` returns a libssh2 result code.
  net::awaitable<int> call(const std::function<int()>& fn);
  /// Tries a libssh2 call once; EAGAIN means wait_io() and try again. `owner` identifies the
  /// caller (the same for each retry of one operation).
  int attempt(const void* owner, const std::function<int()>& fn);

  /// Waits until the socket is ready in the direction libssh2 is blocked on, or until another
  /// coroutine on this session received data (which may be for the caller's channel).
  net::awaitable<void> wait_io(std::uint64_t seen);
  /// Wakes every coroutine in wait_io or wait_wake (used to deliver cancel, timeouts, resumes).
  void wake_all();
  /// Waits for the next wake_all() only (which comes, among others, whenever data arrives).
  net::awaitable<void> wait_wake();

  /// Counts receive calls that returned data; compare before and after a call.
  std::uint64_t receive_generation() const { return receive_generation_; }
  bool alive() const { return alive_; }
  /// Marks the session dead and closes the socket: every pending operation fails.
  void shut_down(std::string reason);
  const std::string& shutdown_reason() const { return shutdown_reason_; }
  std::string last_error() const;
  _LIBSSH2_SESSION* raw() const { return session_; }
  const machine_endpoint& endpoint() const { return endpoint_; }
  const connection_options& options() const { return options_; }
  std::uint64_t bytes_received() const { return bytes_in_; }

 private:
  net::awaitable<std::optional<failure>> connect_socket();
  std::optional<failure> verify_host_key();
  net::awaitable<void> keepalive_loop();
  static ssize_t receive_callback(int socket, void* buffer, std::size_t length, int flags,
                               void** abstract);

  net::any_io_executor executor_;
  machine_endpoint endpoint_;
  connection_options options_;
  net::ip::tcp::socket socket_;
  _LIBSSH2_SESSION* session_ = nullptr;
  bool alive_ = false;
  std::string shutdown_reason_;

  // Signals progress to coroutines waiting in wait_io: cancelled (and replaced) on every wake.
  std::shared_ptr<net::steady_timer> wake_;
  std::uint64_t receive_generation_ = 0;
  std::uint64_t bytes_in_ = 0;
  // A call that left a packet half-sent: until it completes, no other call may send.
  const void* half_sent_owner_ = nullptr;
};

/// "SHA256:..." as OpenSSH prints fingerprints, and the key type name, of the host key the
/// session was offered.
std::string host_key_description(_LIBSSH2_SESSION* session);

}  // namespace cmdcast::server::ssh
