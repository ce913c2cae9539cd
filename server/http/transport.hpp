// One accepted connection's bytes: plaintext TCP, or TLS (OpenSSL over memory buffers, so
// the socket stays ours and non-blocking). The HTTP phase reads and writes through it with
// coroutines; the WebSocket phase (ws_connection) writes through it without waiting, as the
// socket takes bytes. On TLS only encryption is per connection: a WebSocket frame is still
// built once for every watcher. Used on the server's thread only.
#pragma once

#include <sys/uio.h>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>

#include <memory>
#include <string>
#include <string_view>

#include "cmdcast/common/result.hpp"

struct ssl_ctx_st;
struct ssl_st;

namespace cmdcast::server {

namespace net = boost::asio;

/// The server's certificate and key, loaded once (TLS 1.2 and up).
class tls_context {
 public:
  /// Reads the PEM certificate chain and private key; the error says which file and why.
  static common::result<std::shared_ptr<tls_context>> load(const std::string& cert_file, const std::string& key_file);
  ~tls_context();
  ssl_ctx_st* native() const { return ctx_; }

 private:
  explicit tls_context(ssl_ctx_st* ctx) : ctx_(ctx) {}
  ssl_ctx_st* ctx_;
};

class transport {
 public:
  /// `tls` null: plaintext.
  transport(net::ip::tcp::socket socket, std::shared_ptr<tls_context> tls);
  ~transport();
  transport(const transport&) = delete;
  transport& operator=(const transport&) = delete;

  bool secure() const { return ssl_ != nullptr; }
  net::ip::tcp::socket& socket() { return socket_; }

  /// The TLS handshake (nothing for plaintext). False when it failed or the peer left.
  net::awaitable<bool> handshake();
  /// Waits for bytes and returns them (plaintext), or 0 at the end of the stream or a failure.
  net::awaitable<std::size_t> read_some(char* data, std::size_t size);
  /// Writes all of `data`; false when the connection failed.
  net::awaitable<bool> write_all(std::string_view data);

  /// Without waiting: takes what it can of `parts` (encrypting it on TLS) and returns how many
  /// bytes of them it took; -1 with errno EAGAIN when the socket is full, another errno on
  /// failure. On TLS, bytes taken may still wait in the transport (pending_output()).
  ssize_t write_some_now(const iovec* parts, std::size_t count);
  /// Bytes taken and not yet on the socket (TLS records that did not fit).
  bool pending_output() const;
  /// Without waiting: the bytes there are (plaintext); 0 at the end of the stream, -1 with
  /// errno EAGAIN when there is nothing yet, another errno on failure.
  ssize_t read_now(char* data, std::size_t size);

  /// Says goodbye (TLS close_notify, as far as the socket takes it) and closes the socket.
  void close();

 private:
  /// Moves what OpenSSL produced to cipher_, then as much of cipher_ to the socket as it takes.
  /// False on a socket failure (errno set).
  bool flush_cipher();
  void collect_cipher();

  net::ip::tcp::socket socket_;
  std::shared_ptr<tls_context> tls_;
  ssl_st* ssl_ = nullptr;
  std::string cipher_;            // encrypted bytes for the socket
  std::size_t cipher_sent_ = 0;   // of cipher_, already written
};

}  // namespace cmdcast::server
