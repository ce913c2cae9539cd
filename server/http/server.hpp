// cmdcast-server's HTTP and WebSocket front (docs/protocol.md): run and attach over
// WebSocket, the JSON endpoints, auth, and graceful shutdown. One io_context, one thread.
#pragma once

#include <boost/asio/io_context.hpp>

#include <cstdint>
#include <functional>
#include <memory>

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
  std::uint16_t port() const;

 private:
  struct impl;
  std::shared_ptr<impl> impl_;
};

}  // namespace cmdcast::server
