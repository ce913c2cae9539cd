// The browser's transport: WebSocket through Emscripten's websocket API (the token as the
// cmdcast.bearer.TOKEN subprotocol, since a browser cannot set headers on an upgrade) and
// HTTP through emscripten_fetch (Authorization: Bearer), both to the page's own server.
#pragma once

#include "app/transport.hpp"

namespace cmdcast::client {

class web_transport : public transport {
 public:
  web_transport();
  void set_token(std::string token) override { token_ = std::move(token); }
  void request(std::string method, std::string path, std::string body, std::function<void(http_answer)> done) override;
  std::unique_ptr<socket_handle> open_socket(std::string path, socket_callbacks callbacks) override;

 private:
  std::string token_;
  std::string ws_base_;  // ws://host:port or wss://...
};

}  // namespace cmdcast::client
