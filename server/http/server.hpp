// cmdcast-server's HTTP and WebSocket front (docs/protocol.md): run and attach over
// WebSocket, the JSON endpoints, auth, and graceful shutdown. One io_context, one thread.
#pragma once

#include <boost/asio/io_context.hpp>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "config/config.hpp"

namespace cmdcast::server {

class server {
 public:
  server(boost::asio::io_context& io, config c);
  ~server();

  /// Opens the audit store, binds the listen address and starts accepting. Throws when it
  /// cannot do either.
  void start();
  /// Stops accepting, cancels running commands, lets watchers receive their exit events, then
  /// closes what is left with 1001 and calls `done`.
  void shut_down(std::function<void()> done);
  /// Puts a new config in force (SIGHUP): new machines, actions, tokens and limits apply to new
  /// requests; running executions and their watchers go on as they were; watchers whose token
  /// is gone (or whose role changed) are closed. `listen`, `audit_db` and turning TLS on or
  /// off need a restart: those keep their values, and the log says so. The TLS certificate
  /// and key are read again. A config that failed its check (`loaded` holds the problems), or
  /// a certificate that cannot be loaded, is refused with one log line and changes nothing.
  /// `origin` names the config in the log. Returns whether the new config is in force.
  bool reload(common::result<config> loaded, const std::string& origin);
  std::uint16_t port() const;

 private:
  struct impl;
  std::shared_ptr<impl> impl_;
};

}  // namespace cmdcast::server
