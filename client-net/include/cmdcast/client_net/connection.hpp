// Connections from a native client to cmdcast-server, plain or TLS as the server's URL says.
// For https: TLS 1.2 or newer, the chain checked against the system's CAs (or only the CA file
// the user gave with --cacert), the certificate checked for the host name or address.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/system/error_code.hpp>

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include "cmdcast/client_net/server_url.hpp"
#include "cmdcast/common/result.hpp"

namespace cmdcast::client_net {

/// Why a connection failed, as one line for the user (without the program's name).
struct connect_error {
  /// The server's certificate was refused (its chain, name or dates): no retry can help, and
  /// the clients exit with 2.
  bool certificate_rejected = false;
  std::string message;
  /// A WebSocket upgrade answered with this HTTP status instead of 101 Switching Protocols:
  /// the server was reached, but the upgrade did not get through (most often a reverse proxy
  /// that does not pass the Upgrade and Connection headers; with a 5xx, rather a proxy whose
  /// upstream is down). 0 otherwise.
  int upgrade_refused_status = 0;
};

/// One server and how to reach it; cheap to copy (copies share the TLS context). Any thread.
class connector {
 public:
  /// For https, trusts the CAs in `ca_file` (PEM), or the system's when it is empty; fails when
  /// the file cannot be read. For http there is no TLS and `ca_file` is not looked at.
  static common::result<connector> make(server_url url, const std::string& ca_file);

  const server_url& url() const { return url_; }

  /// For https, connects once and completes the TLS handshake, blocking up to `timeout`: what
  /// stopped it, or nullopt when the server is accepted. For http, nullopt without connecting.
  std::optional<connect_error> check_tls(std::chrono::seconds timeout) const;

  struct tls_context;  // connection.cpp
  /// The TLS context every connection to this server shares; null for http.
  const std::shared_ptr<tls_context>& tls() const { return tls_; }

 private:
  connector(server_url url, std::shared_ptr<tls_context> tls) : url_(std::move(url)), tls_(std::move(tls)) {}

  server_url url_;
  std::shared_ptr<tls_context> tls_;
};

/// A WebSocket to cmdcast-server, with the token as a Bearer header. Runs on the executor it is
/// made with; one coroutine may read while another writes or closes.
class websocket_client {
 public:
  websocket_client(boost::asio::any_io_executor executor, const connector& server);
  ~websocket_client();
  websocket_client(const websocket_client&) = delete;
  websocket_client& operator=(const websocket_client&) = delete;

  /// Resolves, connects and shakes hands (TCP and TLS within `timeout`), then upgrades `target`.
  boost::asio::awaitable<std::optional<connect_error>> connect(std::string target, std::string token,
                                                               std::chrono::seconds timeout);
  /// Reads the next message into `message`. websocket::error::closed once the server closed
  /// with a close frame (see close_code()); another error when the connection broke.
  boost::asio::awaitable<boost::system::error_code> read(std::string& message);
  /// Whether the message read last was text.
  bool got_text() const;
  /// Sends one text message.
  boost::asio::awaitable<boost::system::error_code> write(std::string_view text);
  /// Says goodbye with a normal closure and waits for the server's answer.
  boost::asio::awaitable<boost::system::error_code> close();
  /// Stops whatever is under way (connect included): it ends with operation_aborted.
  void cancel();

  /// The server's close frame: its code (0 when it sent none) and reason.
  unsigned close_code() const;
  std::string close_reason() const;

  struct impl;  // connection.cpp

 private:
  std::unique_ptr<impl> impl_;
};

struct http_request {
  std::string method;
  std::string target;
  std::string token;  // sent as a Bearer header unless empty
  std::string body;   // sent as application/json unless empty
};

struct http_reply {
  int status = 0;  // 0: no answer; `error` says why
  std::string body;
  std::optional<connect_error> error;
};

/// One HTTP exchange on a connection of its own, within `timeout` in all.
boost::asio::awaitable<http_reply> http_exchange(connector server, http_request request,
                                                 std::chrono::seconds timeout);

/// A GET whose answer may be long or endless (a followed download): connects within
/// `connect_timeout`, then hands each piece of a 2xx answer's body to `sink` as it arrives, with
/// no time limit. Any other answer's body (an error object) is returned in the reply instead,
/// up to 64 KiB. `status` is the answer's; `error` is set when connecting failed or the
/// connection broke before the body's end.
boost::asio::awaitable<http_reply> http_download(connector server, http_request request,
                                                 std::chrono::seconds connect_timeout,
                                                 std::function<void(std::string_view)> sink);

}  // namespace cmdcast::client_net
