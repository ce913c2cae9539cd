// How the UI reaches cmdcast-server: HTTP requests and WebSockets, each shell bringing its own
// (the browser's fetch and WebSocket in the web build, Beast on a network thread on the
// desktop). Every callback runs on the UI thread, from pump() or the browser's event loop.
#pragma once

#include <functional>
#include <memory>
#include <string>

namespace cmdcast::client {

struct http_answer {
  int status = 0;  // 0: no answer at all (the server is unreachable)
  std::string body;
};

struct socket_callbacks {
  std::function<void()> on_open;
  std::function<void(std::string)> on_message;
  /// Once, last: the close code (1006 when the connection dropped or never opened).
  std::function<void(int code, std::string reason)> on_close;
};

/// An open WebSocket. Destroying it closes it; no callback runs after that.
class socket_handle {
 public:
  virtual ~socket_handle() = default;
  virtual void send(std::string text) = 0;
};

class transport {
 public:
  virtual ~transport() = default;
  /// Sent with every request from now on (Bearer header, or the WebSocket subprotocol).
  virtual void set_token(std::string token) = 0;
  virtual void request(std::string method, std::string path, std::string body,
                       std::function<void(http_answer)> done) = 0;
  /// Opens a WebSocket to `path`; null when this client has no WebSocket at all.
  virtual std::unique_ptr<socket_handle> open_socket(std::string path, socket_callbacks callbacks) = 0;
  /// Runs the callbacks that are due (the desktop hands them over from its network thread).
  virtual void pump() {}
};

}  // namespace cmdcast::client
