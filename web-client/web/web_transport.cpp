#include "web/web_transport.hpp"

#include <emscripten.h>
#include <emscripten/fetch.h>
#include <emscripten/websocket.h>

#include <cstdlib>
#include <cstring>
#include <vector>

namespace cmdcast::client {
namespace {

EM_JS(char*, page_ws_base, (), {
  const base = (location.protocol === "https:" ? "wss://" : "ws://") + location.host;
  const size = lengthBytesUTF8(base) + 1;
  const p = _malloc(size);
  stringToUTF8(base, p, size);
  return p;
});

/// One request in flight: its callback and the strings fetch points into.
struct fetch_call {
  std::function<void(http_answer)> done;
  std::string method, path, body, auth;
  std::vector<const char*> headers;
};

void fetch_finished(emscripten_fetch_t* f) {
  auto* call = static_cast<fetch_call*>(f->userData);
  http_answer a;
  a.status = f->status;
  if (f->data && f->numBytes > 0) a.body.assign(f->data, static_cast<std::size_t>(f->numBytes));
  emscripten_fetch_close(f);
  auto done = std::move(call->done);
  delete call;
  done(std::move(a));
}

/// A WebSocket and its callbacks. It lives until both the handle is gone and the browser has
/// reported the close, so no callback ever reaches a destroyed owner.
struct socket_state {
  EMSCRIPTEN_WEBSOCKET_T ws = 0;
  socket_callbacks callbacks;
  bool owned = true;    // the handle still exists
  bool closed = false;  // the browser reported the close
  int depth = 0;        // inside one of our callbacks
};

void release(socket_state* s) {
  if (s->owned || !s->closed || s->depth > 0) return;
  emscripten_websocket_delete(s->ws);
  delete s;
}

EM_BOOL on_open(int, const EmscriptenWebSocketOpenEvent*, void* user) {
  auto* s = static_cast<socket_state*>(user);
  if (s->owned && s->callbacks.on_open) {
    ++s->depth;
    s->callbacks.on_open();
    --s->depth;
  }
  release(s);
  return EM_TRUE;
}

EM_BOOL on_message(int, const EmscriptenWebSocketMessageEvent* e, void* user) {
  auto* s = static_cast<socket_state*>(user);
  if (s->owned && e->isText && s->callbacks.on_message) {
    // Text arrives NUL-terminated; numBytes counts the NUL.
    std::string text(reinterpret_cast<const char*>(e->data), e->numBytes > 0 ? e->numBytes - 1 : 0);
    ++s->depth;
    s->callbacks.on_message(std::move(text));
    --s->depth;
  }
  release(s);
  return EM_TRUE;
}

EM_BOOL on_close(int, const EmscriptenWebSocketCloseEvent* e, void* user) {
  auto* s = static_cast<socket_state*>(user);
  if (s->closed) return EM_TRUE;
  s->closed = true;
  if (s->owned && s->callbacks.on_close) {
    ++s->depth;
    s->callbacks.on_close(static_cast<int>(e->code), e->reason);
    --s->depth;
  }
  release(s);
  return EM_TRUE;
}

class web_socket : public socket_handle {
 public:
  explicit web_socket(socket_state* s) : s_(s) {}
  ~web_socket() override {
    s_->owned = false;
    if (!s_->closed) emscripten_websocket_close(s_->ws, 1000, "leaving");
    release(s_);
  }
  void send(std::string text) override {
    if (!s_->closed) emscripten_websocket_send_utf8_text(s_->ws, text.c_str());
  }

 private:
  socket_state* s_;
};

}  // namespace

web_transport::web_transport() {
  char* base = page_ws_base();
  ws_base_ = base;
  std::free(base);
}

void web_transport::request(std::string method, std::string path, std::string body,
                            std::function<void(http_answer)> done) {
  auto* call = new fetch_call{std::move(done), std::move(method), std::move(path), std::move(body), {}, {}};
  if (!token_.empty()) {
    call->auth = "Bearer " + token_;
    call->headers = {"Authorization", call->auth.c_str()};
  }
  if (!call->body.empty()) {
    call->headers.push_back("Content-Type");
    call->headers.push_back("application/json");
  }
  call->headers.push_back(nullptr);
  emscripten_fetch_attr_t attr;
  emscripten_fetch_attr_init(&attr);
  std::strncpy(attr.requestMethod, call->method.c_str(), sizeof attr.requestMethod - 1);
  attr.attributes = EMSCRIPTEN_FETCH_LOAD_TO_MEMORY;
  attr.requestHeaders = call->headers.data();
  if (!call->body.empty()) {
    attr.requestData = call->body.data();
    attr.requestDataSize = call->body.size();
  }
  attr.timeoutMSecs = 40000;  // above the longest long-poll
  attr.userData = call;
  attr.onsuccess = fetch_finished;
  attr.onerror = fetch_finished;
  emscripten_fetch(&attr, call->path.c_str());
}

std::unique_ptr<socket_handle> web_transport::open_socket(std::string path, socket_callbacks callbacks) {
  if (!emscripten_websocket_is_supported()) return nullptr;
  const std::string url = ws_base_ + path;
  const std::string protocols = token_.empty() ? "cmdcast.v1" : "cmdcast.v1,cmdcast.bearer." + token_;
  EmscriptenWebSocketCreateAttributes attr;
  emscripten_websocket_init_create_attributes(&attr);
  attr.url = url.c_str();
  attr.protocols = protocols.c_str();
  attr.createOnMainThread = EM_TRUE;
  const EMSCRIPTEN_WEBSOCKET_T ws = emscripten_websocket_new(&attr);
  if (ws <= 0) return nullptr;
  auto* s = new socket_state{ws, std::move(callbacks)};
  emscripten_websocket_set_onopen_callback(ws, s, on_open);
  emscripten_websocket_set_onmessage_callback(ws, s, on_message);
  emscripten_websocket_set_onclose_callback(ws, s, on_close);
  return std::make_unique<web_socket>(s);
}

}  // namespace cmdcast::client
