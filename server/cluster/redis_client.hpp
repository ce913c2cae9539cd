// One connection to Redis, asynchronous on the server's executor: hiredis' async context,
// whose read and write interest is mapped onto async_wait of the socket. Commands are sent
// as argument vectors (never formatted into a command string) and pipelined: each call
// writes at once, and its reply comes back in order. Used on the server's thread only.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

struct redisAsyncContext;

namespace cmdcast::server::cluster {

namespace net = boost::asio;

/// A reply, copied out of hiredis. A command the connection lost on the way is an error
/// reply "disconnected".
struct redis_reply {
  enum class kind : std::uint8_t { nil, status, error, integer, string, array };
  kind type = kind::nil;
  std::string str;  // status, error, string
  std::int64_t integer = 0;
  std::vector<redis_reply> elements;

  bool is_error() const { return type == kind::error; }
  bool is_nil() const { return type == kind::nil; }
};

class redis_connection : public std::enable_shared_from_this<redis_connection> {
 public:
  /// `address`: "host:port", or the path of a unix socket. More than `max_unsent_bytes` of
  /// commands waiting to be written (a Redis that accepts the connection but does not read)
  /// ends the connection as lost: memory stays bounded, and the caller writes back later.
  static std::shared_ptr<redis_connection> create(net::any_io_executor executor, std::string address,
                                                  std::size_t max_unsent_bytes = 64 << 20);
  ~redis_connection();
  redis_connection(const redis_connection&) = delete;
  redis_connection& operator=(const redis_connection&) = delete;

  /// Connects; an empty string on success, else why not.
  net::awaitable<std::string> connect();
  bool connected() const { return context_ != nullptr && connected_; }
  /// Bytes of commands waiting to be written.
  std::size_t unsent_bytes() const;
  /// Runs once when an established connection is lost (its pending commands then get
  /// "disconnected" errors). connect() may be called again afterwards.
  std::function<void(std::string why)> on_lost;

  /// Sends a command; `done` gets its reply on the executor (never called after close()).
  void command(std::vector<std::string> args, std::function<void(redis_reply)> done = {});
  net::awaitable<redis_reply> call(std::vector<std::string> args);

  /// SUBSCRIBE or PSUBSCRIBE: `on_message` gets each message's reply array for as long as the
  /// connection lasts. A connection that subscribed can only subscribe further.
  void subscribe(std::vector<std::string> args, std::function<void(const redis_reply&)> on_message);
  /// Ends a SUBSCRIBE of one channel: its function is not called again.
  void unsubscribe(const std::string& channel);

  /// Closes the connection; pending callbacks are dropped.
  void close();

 private:
  redis_connection(net::any_io_executor executor, std::string address, std::size_t max_unsent_bytes);
  struct io;
  static void on_connect(const redisAsyncContext* c, int status);
  static void on_disconnect(const redisAsyncContext* c, int status);
  static void on_reply(redisAsyncContext* c, void* reply, void* privdata);
  static void on_message(redisAsyncContext* c, void* reply, void* privdata);
  void context_gone();
  /// Writes what is queued soon (see the .cpp).
  void flush_soon();

  net::any_io_executor executor_;
  std::string address_;
  std::size_t max_unsent_bytes_;
  std::string lost_why_;  // why this side ended the connection, if it did
  redisAsyncContext* context_ = nullptr;
  bool connected_ = false;
  bool closing_ = false;
  bool flush_posted_ = false;
  std::shared_ptr<io> io_;
  std::function<void(std::string)> connect_done_;
  // Subscriptions' functions by the pointer hiredis hands back, and by channel.
  std::map<const void*, std::shared_ptr<std::function<void(const redis_reply&)>>> subscriptions_;
  std::map<std::string, const void*> channels_;
};

}  // namespace cmdcast::server::cluster
