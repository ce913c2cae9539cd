#include "cluster/redis_client.hpp"

#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <hiredis/sds.h>

#include <boost/asio/async_result.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

namespace cmdcast::server::cluster {
namespace {

constexpr auto connect_timeout = std::chrono::milliseconds(2000);

redis_reply copy_reply(const redisReply* r) {
  redis_reply out;
  if (!r) {
    out.type = redis_reply::kind::error;
    out.str = "disconnected";
    return out;
  }
  switch (r->type) {
    case REDIS_REPLY_STRING: out.type = redis_reply::kind::string; break;
    case REDIS_REPLY_STATUS: out.type = redis_reply::kind::status; break;
    case REDIS_REPLY_ERROR: out.type = redis_reply::kind::error; break;
    case REDIS_REPLY_INTEGER: out.type = redis_reply::kind::integer; break;
    case REDIS_REPLY_ARRAY: out.type = redis_reply::kind::array; break;
    default: out.type = redis_reply::kind::nil; break;
  }
  if (r->str) out.str.assign(r->str, r->len);
  out.integer = r->integer;
  if (r->type == REDIS_REPLY_ARRAY) {
    out.elements.reserve(r->elements);
    for (std::size_t i = 0; i < r->elements; ++i) out.elements.push_back(copy_reply(r->element[i]));
  }
  return out;
}

}  // namespace

/// The socket as Asio sees it, and what hiredis wants of it. Owned by the connection; its
/// waits keep it alive. The descriptor is hiredis': released, never closed, here.
struct redis_connection::io : std::enable_shared_from_this<io> {
  io(net::any_io_executor executor, int fd, redis_connection* owning, redisAsyncContext* ctx)
      : socket(executor, fd), owner(owning), context(ctx) {}
  net::posix::stream_descriptor socket;
  redis_connection* owner;
  redisAsyncContext* context;
  bool reading = false, writing = false;
  bool read_waiting = false, write_waiting = false;

  void arm_read() {
    if (read_waiting || !context) return;
    read_waiting = true;
    socket.async_wait(net::posix::stream_descriptor::wait_read, [self = shared_from_this()](boost::system::error_code ec) {
      self->read_waiting = false;
      if (ec || !self->context || !self->reading) return;
      redisAsyncHandleRead(self->context);  // may end the context (cleanup below)
      if (self->context && self->reading) self->arm_read();
    });
  }
  void arm_write() {
    if (write_waiting || !context) return;
    write_waiting = true;
    socket.async_wait(net::posix::stream_descriptor::wait_write, [self = shared_from_this()](boost::system::error_code ec) {
      self->write_waiting = false;
      if (ec || !self->context || !self->writing) return;
      redisAsyncHandleWrite(self->context);
      if (self->context && self->writing) self->arm_write();
    });
  }

  static void add_read(void* p) {
    auto* s = static_cast<io*>(p);
    s->reading = true;
    s->arm_read();
  }
  static void del_read(void* p) { static_cast<io*>(p)->reading = false; }
  static void add_write(void* p) {
    auto* s = static_cast<io*>(p);
    s->writing = true;
    s->arm_write();
  }
  static void del_write(void* p) { static_cast<io*>(p)->writing = false; }
  static void cleanup(void* p) {
    auto* s = static_cast<io*>(p);
    s->reading = s->writing = false;
    s->context = nullptr;
    boost::system::error_code ignored;
    s->socket.cancel(ignored);
    s->socket.release();
    if (s->owner) s->owner->context_gone();
  }
};

std::shared_ptr<redis_connection> redis_connection::create(net::any_io_executor executor, std::string address,
                                                           std::size_t max_unsent_bytes) {
  return std::shared_ptr<redis_connection>(new redis_connection(std::move(executor), std::move(address), max_unsent_bytes));
}

redis_connection::redis_connection(net::any_io_executor executor, std::string address, std::size_t max_unsent_bytes)
    : executor_(std::move(executor)), address_(std::move(address)), max_unsent_bytes_(max_unsent_bytes) {}

redis_connection::~redis_connection() { close(); }

void redis_connection::close() {
  closing_ = true;
  on_lost = nullptr;
  connect_done_ = nullptr;
  if (context_) {
    redisAsyncContext* c = std::exchange(context_, nullptr);
    redisAsyncFree(c);  // pending callbacks see closing_ and drop their reply
  }
  if (io_) io_->owner = nullptr;
}

std::size_t redis_connection::unsent_bytes() const { return context_ ? sdslen(context_->c.obuf) : 0; }

void redis_connection::context_gone() {
  const std::string why = !lost_why_.empty()                ? std::exchange(lost_why_, std::string())
                          : context_ && context_->errstr[0] ? context_->errstr
                                                            : "connection closed";
  const bool was_connected = connected_;
  context_ = nullptr;
  connected_ = false;
  if (io_) io_->owner = nullptr;
  if (closing_) return;
  auto self = weak_from_this();
  if (auto done = std::exchange(connect_done_, nullptr)) {
    net::post(executor_, [done = std::move(done), why] { done(why); });
  } else if (was_connected) {
    net::post(executor_, [self, why] {
      auto s = self.lock();
      if (s && s->on_lost && !s->closing_) s->on_lost(why);
    });
  }
}

void redis_connection::on_connect(const redisAsyncContext* c, int status) {
  auto* self = static_cast<redis_connection*>(c->data);
  if (!self || self->closing_) return;
  if (status == REDIS_OK) self->connected_ = true;
  if (auto done = std::exchange(self->connect_done_, nullptr)) {
    std::string why = status == REDIS_OK ? "" : (c->errstr[0] ? c->errstr : "cannot connect");
    net::post(self->executor_, [done = std::move(done), why = std::move(why)] { done(why); });
  }
}

void redis_connection::on_disconnect(const redisAsyncContext*, int) {}  // context_gone() has told

net::awaitable<std::string> redis_connection::connect() {
  if (context_) {
    closing_ = true;  // the old context's callbacks are dropped
    redisAsyncFree(std::exchange(context_, nullptr));
  }
  closing_ = false;
  if (!address_.empty() && address_.front() == '/') {
    context_ = redisAsyncConnectUnix(address_.c_str());
  } else {
    const auto colon = address_.rfind(':');
    const std::string host = address_.substr(0, colon);
    const int port = std::atoi(address_.c_str() + colon + 1);
    context_ = redisAsyncConnect(host.c_str(), port);
  }
  if (!context_) co_return "out of memory";
  if (context_->err) {
    std::string why = context_->errstr;
    redisAsyncFree(std::exchange(context_, nullptr));
    co_return why;
  }
  context_->data = this;
  io_ = std::make_shared<io>(executor_, context_->c.fd, this, context_);
  context_->ev.data = io_.get();
  context_->ev.addRead = &io::add_read;
  context_->ev.delRead = &io::del_read;
  context_->ev.addWrite = &io::add_write;
  context_->ev.delWrite = &io::del_write;
  context_->ev.cleanup = &io::cleanup;
  redisAsyncSetConnectCallback(context_, &redis_connection::on_connect);
  redisAsyncSetDisconnectCallback(context_, &redis_connection::on_disconnect);
  io::add_write(io_.get());  // the connect completes when the socket is writable
  // A host that drops the SYN would keep a connect waiting for minutes: give up sooner.
  auto deadline = std::make_shared<net::steady_timer>(executor_, connect_timeout);
  deadline->async_wait([weak = weak_from_this()](boost::system::error_code ec) {
    auto self = weak.lock();
    if (ec || !self || self->connected_ || !self->connect_done_) return;
    auto done = std::exchange(self->connect_done_, nullptr);
    self->closing_ = true;  // nothing of this attempt is reported but the timeout
    if (self->context_) redisAsyncFree(std::exchange(self->context_, nullptr));
    self->closing_ = false;
    done("no answer within " + std::to_string(connect_timeout.count()) + " ms");
  });
  // A named initiation, not a lambda temporary in the co_await: GCC 12 destroys such a
  // temporary twice, which would release `deadline` once too often.
  const auto initiation = [this, deadline](auto handler) {
    auto h = std::make_shared<decltype(handler)>(std::move(handler));
    connect_done_ = [h, deadline](std::string why) {
      deadline->cancel();
      (*h)(std::move(why));
    };
  };
  co_return co_await net::async_initiate<const net::use_awaitable_t<>&, void(std::string)>(initiation, net::use_awaitable);
}

void redis_connection::on_reply(redisAsyncContext* c, void* reply, void* privdata) {
  std::unique_ptr<std::function<void(redis_reply)>> done(static_cast<std::function<void(redis_reply)>*>(privdata));
  auto* self = static_cast<redis_connection*>(c->data);
  if (!self || self->closing_ || !*done) return;
  // Run it outside hiredis' own call: the callback may send, or close.
  net::post(self->executor_, [weak = self->weak_from_this(), done = std::move(*done),
                              r = copy_reply(static_cast<redisReply*>(reply))]() mutable {
    auto s = weak.lock();
    if (s && !s->closing_) done(std::move(r));
  });
}

void redis_connection::command(std::vector<std::string> args, std::function<void(redis_reply)> done) {
  auto fail = [&](std::string why) {
    if (!done) return;
    redis_reply r;
    r.type = redis_reply::kind::error;
    r.str = std::move(why);
    net::post(executor_, [done = std::move(done), r = std::move(r)] { done(r); });
  };
  if (!context_ || !connected_) return fail("disconnected");
  std::vector<const char*> argv;
  std::vector<std::size_t> lengths;
  argv.reserve(args.size());
  lengths.reserve(args.size());
  for (const auto& a : args) {
    argv.push_back(a.data());
    lengths.push_back(a.size());
  }
  auto* fn = new std::function<void(redis_reply)>(std::move(done));
  if (redisAsyncCommandArgv(context_, &redis_connection::on_reply, fn, static_cast<int>(argv.size()), argv.data(),
                            lengths.data()) != REDIS_OK) {
    done = std::move(*fn);
    delete fn;
    return fail("the command could not be sent");
  }
  flush_soon();
}

void redis_connection::flush_soon() {
  // Written by the handler that runs next, not after the reactor's next round: the commands a
  // handler sends still go out together, and an event reaches other servers without waiting
  // for this one's fan-out. hiredis keeps waiting for writability for what does not fit.
  if (flush_posted_) return;
  flush_posted_ = true;
  net::post(executor_, [weak = weak_from_this()] {
    auto self = weak.lock();
    if (!self) return;
    self->flush_posted_ = false;
    if (!self->context_ || !self->connected_ || self->closing_) return;
    redisAsyncHandleWrite(self->context_);
    if (!self->context_) return;  // the write found the connection gone
    if (const auto unsent = sdslen(self->context_->c.obuf); unsent > self->max_unsent_bytes_) {
      // Redis takes the connection but not what is sent: rather than grow without bound, the
      // connection is lost (its commands fail, on_lost runs), as if Redis had gone.
      self->lost_why_ = "Redis is not reading: " + std::to_string(unsent) + " bytes unsent";
      redisAsyncFree(self->context_);  // context_gone() through hiredis' cleanup
    }
  });
}

net::awaitable<redis_reply> redis_connection::call(std::vector<std::string> args) {
  co_return co_await net::async_initiate<const net::use_awaitable_t<>&, void(redis_reply)>(
      [this, &args](auto handler) {
        auto h = std::make_shared<decltype(handler)>(std::move(handler));
        command(std::move(args), [h](redis_reply r) { (*h)(std::move(r)); });
      },
      net::use_awaitable);
}

void redis_connection::on_message(redisAsyncContext* c, void* reply, void* privdata) {
  auto* self = static_cast<redis_connection*>(c->data);
  if (!reply || !self || self->closing_) return;
  const auto it = self->subscriptions_.find(privdata);
  if (it == self->subscriptions_.end()) return;  // unsubscribed
  net::post(self->executor_, [weak = self->weak_from_this(), fn = it->second, r = copy_reply(static_cast<redisReply*>(reply))] {
    auto s = weak.lock();
    if (s && !s->closing_) (*fn)(r);
  });
}

void redis_connection::subscribe(std::vector<std::string> args, std::function<void(const redis_reply&)> on_message_fn) {
  if (!context_ || !connected_) return;
  auto fn = std::make_shared<std::function<void(const redis_reply&)>>(std::move(on_message_fn));
  subscriptions_[fn.get()] = fn;
  if (args.size() == 2) channels_[args[1]] = fn.get();
  std::vector<const char*> argv;
  std::vector<std::size_t> lengths;
  for (const auto& a : args) {
    argv.push_back(a.data());
    lengths.push_back(a.size());
  }
  redisAsyncCommandArgv(context_, &redis_connection::on_message, fn.get(), static_cast<int>(argv.size()), argv.data(),
                        lengths.data());
}

void redis_connection::unsubscribe(const std::string& channel) {
  const auto it = channels_.find(channel);
  if (it == channels_.end()) return;
  subscriptions_.erase(it->second);
  channels_.erase(it);
  if (!context_ || !connected_) return;
  const char* argv[] = {"UNSUBSCRIBE", channel.c_str()};
  const std::size_t lengths[] = {11, channel.size()};
  redisAsyncCommandArgv(context_, &redis_connection::on_message, nullptr, 2, argv, lengths);
}

}  // namespace cmdcast::server::cluster
