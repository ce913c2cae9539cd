#include "desktop/beast_transport.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/post.hpp>
#include <boost/beast/websocket/error.hpp>

#include <chrono>
#include <cstdio>
#include <deque>
#include <exception>

namespace cmdcast::client {
namespace {

namespace net = boost::asio;
namespace websocket = boost::beast::websocket;

constexpr auto request_timeout = std::chrono::seconds(40);  // above the longest long-poll (30 s)
constexpr auto connect_timeout = std::chrono::seconds(10);

/// A WebSocket, shared by its handle on the UI thread and its coroutines on the network thread;
/// each side touches only its own members.
struct socket_link {
  socket_link(net::io_context& io, const client_net::connector& server, socket_callbacks cb)
      : callbacks(std::move(cb)), executor(io.get_executor()), ws(executor, server) {}

  // UI thread.
  socket_callbacks callbacks;
  bool alive = true;  // the handle exists: callbacks may run

  // Network thread.
  net::any_io_executor executor;
  client_net::websocket_client ws;
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
    if (co_await link->ws.write(link->outbox.front())) {
      link->outbox.clear();  // the read side reports the close
      break;
    }
    link->outbox.pop_front();
  }
  link->writing = false;
}

void start_writing(const std::shared_ptr<socket_link>& link) {
  if (link->open && !link->writing && !link->outbox.empty()) {
    net::co_spawn(link->executor, write_outbox(link), net::detached);
  }
}

net::awaitable<void> close_gracefully(std::shared_ptr<socket_link> link) {
  co_await link->ws.close();
}

/// On the network thread, once the handle is gone: an open socket says goodbye, a connecting
/// one gives up.
void close_socket(const std::shared_ptr<socket_link>& link) {
  link->close_requested = true;
  if (link->open) {
    net::co_spawn(link->executor, close_gracefully(link), net::detached);
  } else {
    link->ws.cancel();
  }
}

/// Connects, upgrades, then hands every text message to the UI until the socket closes.
net::awaitable<close_info> run_socket(beast_transport& transport, std::shared_ptr<socket_link> link, std::string path,
                                      std::string token) {
  const auto failed = co_await link->ws.connect(std::move(path), std::move(token), connect_timeout);
  if (failed) {
    transport.report(failed);
    co_return close_info{};
  }
  link->open = true;
  if (link->close_requested) {
    // The handle went while the upgrade completed: nothing was left for cancel() to stop.
    net::co_spawn(link->executor, close_gracefully(link), net::detached);
  }
  transport.post_to_ui([link] {
    if (link->alive && link->callbacks.on_open) link->callbacks.on_open();
  });
  start_writing(link);

  std::string message;
  for (;;) {
    const auto read_ec = co_await link->ws.read(message);
    if (read_ec == websocket::error::closed) {
      // A close frame without a code is 1005 ("no status received"), as browsers report it.
      const unsigned code = link->ws.close_code();
      co_return close_info{code == 0 ? 1005 : static_cast<int>(code), link->ws.close_reason()};
    }
    if (read_ec) co_return close_info{};
    if (link->ws.got_text()) {
      transport.post_to_ui([link, text = std::move(message)]() mutable {
        if (link->alive && link->callbacks.on_message) link->callbacks.on_message(std::move(text));
      });
    }
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

beast_transport::beast_transport(client_net::connector server, std::function<void()> wake)
    : server_(std::move(server)), wake_(std::move(wake)), work_(io_.get_executor()) {
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

void beast_transport::report(const std::optional<client_net::connect_error>& failure) {
  if (!failure || !failure->certificate_rejected || certificate_reported_) return;
  certificate_reported_ = true;
  std::fprintf(stderr, "cmdcast-desktop: %s\n", failure->message.c_str());
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
  client_net::http_request req{std::move(method), std::move(path), token_, std::move(body)};
  net::co_spawn(io_, client_net::http_exchange(server_, std::move(req), request_timeout),
                [this, done = std::move(done)](std::exception_ptr, client_net::http_reply reply) mutable {
                  report(reply.error);
                  post_to_ui([done = std::move(done), answer = http_answer{reply.status, std::move(reply.body)}]() mutable {
                    done(std::move(answer));
                  });
                });
}

std::unique_ptr<socket_handle> beast_transport::open_socket(std::string path, socket_callbacks callbacks) {
  auto link = std::make_shared<socket_link>(io_, server_, std::move(callbacks));
  net::co_spawn(io_, run_socket(*this, link, std::move(path), token_),
                [this, link](std::exception_ptr, close_info closed) {
                  link->open = false;
                  post_to_ui([link, closed = std::move(closed)] {
                    if (link->alive && link->callbacks.on_close) link->callbacks.on_close(closed.code, closed.reason);
                  });
                });
  return std::make_unique<beast_socket>(io_, std::move(link));
}

}  // namespace cmdcast::client
