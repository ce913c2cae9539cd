// The desktop's transport: HTTP/1.1 and WebSockets, plain or TLS (client_net), on one network
// thread, the token as an Authorization header on both (a desktop app is no browser: no
// subprotocol, no Origin). Results and socket events are queued for the UI thread, which runs
// them in pump().
#pragma once

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>

#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "app/transport.hpp"
#include "cmdcast/client_net/connection.hpp"

namespace cmdcast::client {

class beast_transport : public transport {
 public:
  /// `wake` is called on the network thread whenever something is queued for pump(), so that a
  /// UI sleeping until its next event wakes up (the desktop passes glfwPostEmptyEvent).
  beast_transport(client_net::connector server, std::function<void()> wake);
  /// Stops the network thread; no callback runs afterwards. Sockets must be gone by then.
  ~beast_transport() override;
  beast_transport(const beast_transport&) = delete;
  beast_transport& operator=(const beast_transport&) = delete;

  void set_token(std::string token) override { token_ = std::move(token); }
  void request(std::string method, std::string path, std::string body, std::function<void(http_answer)> done) override;
  std::unique_ptr<socket_handle> open_socket(std::string path, socket_callbacks callbacks) override;
  void pump() override;

  /// Queues `f` for the next pump() (called on the network thread).
  void post_to_ui(std::function<void()> f);
  /// Says on stderr, once, why a connection failed when the server's certificate was refused
  /// (called on the network thread; the UI only sees the server unreachable).
  void report(const std::optional<client_net::connect_error>& failure);

 private:
  client_net::connector server_;
  std::string token_;
  bool certificate_reported_ = false;  // network thread
  std::function<void()> wake_;
  boost::asio::io_context io_;
  boost::asio::executor_work_guard<boost::asio::io_context::executor_type> work_;
  std::mutex due_mutex_;
  std::vector<std::function<void()>> due_;  // for the UI thread, in order
  std::thread network_;
};

}  // namespace cmdcast::client
