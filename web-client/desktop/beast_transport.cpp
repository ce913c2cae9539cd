#include "desktop/beast_transport.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/websocket.hpp>

#include <chrono>
#include <deque>
#include <exception>

namespace cmdcast::client {
namespace {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace websocket = beast::websocket;
using tcp = net::ip::tcp;
constexpr auto use_tuple = net::as_tuple(net::use_awaitable);

constexpr auto request_timeout = std::chrono::seconds(40);  // above the longest long-poll (30 s)
constexpr auto connect_timeout = std::chrono::seconds(10);
constexpr std::uint64_t message_limit = 64u << 20;

/// One HTTP exchange on its own connection: the answer, or status 0 when there is none.
net::awaitable<http_answer> exchange(std::string host, std::string port, http::request<http::string_body> req) {
  auto ex = co_await net::this_coro::executor;
  tcp::resolver resolver(ex);
  auto [resolve_ec, endpoints] = co_await resolver.async_resolve(host, port, use_tuple);
  if (resolve_ec) co_return http_answer{};
  beast::tcp_stream stream(ex);
  stream.expires_after(request_timeout);
  auto [connect_ec, endpoint] = co_await stream.async_connect(endpoints, use_tuple);
  if (connect_ec) co_return http_answer{};
  auto [write_ec, bytes_written] = co_await http::async_write(stream, req, use_tuple);
  if (write_ec) co_return http_answer{};
  beast::flat_buffer buffer;
  http::response_parser<http::string_body> parser;
  parser.body_limit(message_limit);
  auto [read_ec, bytes_read] = co_await http::async_read(stream, buffer, parser, use_tuple);
  if (read_ec) co_return http_answer{};
  co_return http_answer{static_cast<int>(parser.get().result_int()), std::move(parser.get().body())};
}

/// A WebSocket, shared by its handle on the UI thread and its coroutines on the network thread;
/// each side touches only its own members.
struct socket_link {
  socket_link(net::io_context& io, socket_callbacks cb) : callbacks(std::move(cb)), ws(io) {}

  // UI thread.
  socket_callbacks callbacks;
  bool alive = true;  // the handle exists: callbacks may run

  // Network thread.
  websocket::stream<beast::tcp_stream> ws;
  std::deque<std::string> outbox;
  bool open = false;             // the upgrade went through
  bool writing = false;          // write_outbox is running
  bool close_requested = false;  // the handle is gone
};

struct close_info {
  int code = 1006;  // abnormal closure: dropped, or never opened
  std::string reason;
};

net::awaitable<void> write_outbox(std::shared_ptr<socket_link> link) {
  link->writing = true;
  while (!link->outbox.empty()) {
    auto [ec, bytes_written] = co_await link->ws.async_write(net::buffer(link->outbox.front()), use_tuple);
    if (ec) {
      link->outbox.clear();  // the read side reports the close
      break;
    }
    link->outbox.pop_front();
  }
  link->writing = false;
}

void start_writing(const std::shared_ptr<socket_link>& link) {
  if (link->open && !link->writing && !link->outbox.empty()) {
    net::co_spawn(link->ws.get_executor(), write_outbox(link), net::detached);
  }
}

net::awaitable<void> close_gracefully(std::shared_ptr<socket_link> link) {
  co_await link->ws.async_close(websocket::close_code::normal, use_tuple);
}

/// On the network thread, once the handle is gone: an open socket says goodbye, a connecting
/// one gives up (the coroutine checks close_requested between steps that cancel() cannot stop).
void close_socket(const std::shared_ptr<socket_link>& link) {
  link->close_requested = true;
  if (link->open) {
    net::co_spawn(link->ws.get_executor(), close_gracefully(link), net::detached);
  } else {
    beast::get_lowest_layer(link->ws).cancel();
  }
}

/// Connects, upgrades, then hands every text message to the UI until the socket closes.
net::awaitable<close_info> run_socket(beast_transport& transport, std::shared_ptr<socket_link> link, std::string host,
                                      std::string port, std::string path, std::string token) {
  auto ex = co_await net::this_coro::executor;
  tcp::resolver resolver(ex);
  auto [resolve_ec, endpoints] = co_await resolver.async_resolve(host, port, use_tuple);
  if (resolve_ec || link->close_requested) co_return close_info{};
  auto& tcp_layer = beast::get_lowest_layer(link->ws);
  tcp_layer.expires_after(connect_timeout);
  auto [connect_ec, endpoint] = co_await tcp_layer.async_connect(endpoints, use_tuple);
  if (connect_ec || link->close_requested) co_return close_info{};
  tcp_layer.expires_never();
  link->ws.set_option(websocket::stream_base::timeout::suggested(beast::role_type::client));
  link->ws.set_option(websocket::stream_base::decorator([token](websocket::request_type& req) {
    if (!token.empty()) req.set(http::field::authorization, "Bearer " + token);
  }));
  link->ws.read_message_max(message_limit);
  link->ws.text(true);
  auto [handshake_ec] = co_await link->ws.async_handshake(host + ":" + port, path, use_tuple);
  if (handshake_ec) co_return close_info{};
  link->open = true;
  if (link->close_requested) {
    // The handle went while the upgrade completed: nothing was left for cancel() to stop.
    net::co_spawn(ex, close_gracefully(link), net::detached);
  }
  transport.post_to_ui([link] {
    if (link->alive && link->callbacks.on_open) link->callbacks.on_open();
  });
  start_writing(link);

  beast::flat_buffer buffer;
  for (;;) {
    auto [read_ec, bytes_read] = co_await link->ws.async_read(buffer, use_tuple);
    if (read_ec == websocket::error::closed) {
      const auto& why = link->ws.reason();
      // A close frame without a code is 1005 ("no status received"), as browsers report it.
      const int code = why.code == websocket::close_code::none ? 1005 : static_cast<int>(why.code);
      co_return close_info{code, std::string(why.reason.data(), why.reason.size())};
    }
    if (read_ec) co_return close_info{};
    if (link->ws.got_text()) {
      transport.post_to_ui([link, text = beast::buffers_to_string(buffer.data())]() mutable {
        if (link->alive && link->callbacks.on_message) link->callbacks.on_message(std::move(text));
      });
    }
    buffer.consume(buffer.size());
  }
}

class beast_socket : public socket_handle {
 public:
  beast_socket(net::io_context& io, std::shared_ptr<socket_link> link) : io_(io), link_(std::move(link)) {}
  ~beast_socket() override {
    link_->alive = false;
    net::post(io_, [link = link_] { close_socket(link); });
  }
  beast_socket(const beast_socket&) = delete;
  beast_socket& operator=(const beast_socket&) = delete;

  void send(std::string text) override {
    net::post(io_, [link = link_, text = std::move(text)]() mutable {
      link->outbox.push_back(std::move(text));
      start_writing(link);
    });
  }

 private:
  net::io_context& io_;
  std::shared_ptr<socket_link> link_;
};

}  // namespace

beast_transport::beast_transport(std::string host, std::string port, std::function<void()> wake)
    : host_(std::move(host)), port_(std::move(port)), wake_(std::move(wake)), work_(io_.get_executor()) {
  network_ = std::thread([this] { io_.run(); });
}

beast_transport::~beast_transport() {
  // Whatever is still in flight is dropped with the io_context: its callbacks never run.
  work_.reset();
  io_.stop();
  network_.join();
}

void beast_transport::post_to_ui(std::function<void()> f) {
  {
    std::lock_guard lock(due_mutex_);
    due_.push_back(std::move(f));
  }
  if (wake_) wake_();
}

void beast_transport::pump() {
  std::vector<std::function<void()>> due;
  {
    std::lock_guard lock(due_mutex_);
    due.swap(due_);
  }
  for (auto& f : due) f();
}

void beast_transport::request(std::string method, std::string path, std::string body,
                              std::function<void(http_answer)> done) {
  http::request<http::string_body> req;
  req.method_string(method);
  req.target(path);
  req.version(11);
  req.set(http::field::host, host_ + ":" + port_);
  if (!token_.empty()) req.set(http::field::authorization, "Bearer " + token_);
  if (!body.empty()) req.set(http::field::content_type, "application/json");
  req.body() = std::move(body);
  req.prepare_payload();
  net::co_spawn(io_, exchange(host_, port_, std::move(req)),
                [this, done = std::move(done)](std::exception_ptr, http_answer answer) mutable {
                  post_to_ui([done = std::move(done), answer = std::move(answer)]() mutable {
                    done(std::move(answer));
                  });
                });
}

std::unique_ptr<socket_handle> beast_transport::open_socket(std::string path, socket_callbacks callbacks) {
  auto link = std::make_shared<socket_link>(io_, std::move(callbacks));
  net::co_spawn(io_, run_socket(*this, link, host_, port_, std::move(path), token_),
                [this, link](std::exception_ptr, close_info closed) {
                  link->open = false;
                  post_to_ui([link, closed = std::move(closed)] {
                    if (link->alive && link->callbacks.on_close) link->callbacks.on_close(closed.code, closed.reason);
                  });
                });
  return std::make_unique<beast_socket>(io_, std::move(link));
}

}  // namespace cmdcast::client
