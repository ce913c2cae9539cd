#include "cmdcast/client_net/connection.hpp"

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509_vfy.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/address.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/ssl/error.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <boost/beast/websocket.hpp>

#include <exception>
#include <type_traits>
#include <vector>

namespace cmdcast::client_net {

namespace net = boost::asio;
namespace ssl = net::ssl;
namespace beast = boost::beast;
namespace http = beast::http;
namespace websocket = beast::websocket;
using tcp = net::ip::tcp;
using error_code = boost::system::error_code;
using tls_stream = beast::ssl_stream<beast::tcp_stream>;

struct connector::tls_context {
  ssl::context context{ssl::context::tls_client};
};

namespace {

constexpr auto use_tuple = net::as_tuple(net::use_awaitable);
constexpr std::uint64_t message_limit = 64u << 20;
constexpr auto shutdown_timeout = std::chrono::seconds(2);

/// Sets what the server's certificate must name: the host name (also sent as SNI) or the
/// address (which SNI may not carry).
bool expect_name(SSL* ssl, const std::string& host) {
  error_code not_an_address;
  net::ip::make_address(host, not_an_address);
  if (!not_an_address) return X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), host.c_str()) == 1;
  return SSL_set_tlsext_host_name(ssl, host.c_str()) == 1 && SSL_set1_host(ssl, host.c_str()) == 1;
}

/// A failed TLS handshake as the user needs to read it: a refused certificate says why and,
/// where a private CA is the likely cause, what to do about it.
connect_error tls_failure(SSL* ssl, const server_url& url, const error_code& ec) {
  const long verdict = SSL_get_verify_result(ssl);
  if (verdict == X509_V_OK) {
    // What a plain HTTP server answers to a TLS hello.
    if (ec.category() == net::error::get_ssl_category() && ERR_GET_REASON(ec.value()) == SSL_R_WRONG_VERSION_NUMBER) {
      return {false, "TLS: " + url.authority() + " does not speak TLS (an http:// server?)"};
    }
    return {false, "TLS: handshake with " + url.authority() + " failed: " + ec.message()};
  }
  std::string line = "TLS: certificate verify failed for " + url.authority() + " (" + X509_verify_cert_error_string(verdict);
  switch (verdict) {
    case X509_V_ERR_HOSTNAME_MISMATCH:
    case X509_V_ERR_IP_ADDRESS_MISMATCH:
      line += ": the certificate is not for " + url.host + ")";
      break;
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
    case X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE:
    case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
    case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
      line += "); use --cacert FILE for a private CA";
      break;
    default:
      line += ")";
  }
  return {true, line};
}

/// What every connection starts with: resolve, TCP connect and, on a TLS stream, the handshake.
/// The caller sets the deadline on the TCP layer; `cancelled` is looked at between the steps,
/// where cancelling the socket has nothing to stop.
template <class Stream>
net::awaitable<std::optional<connect_error>> open_stream(Stream& stream, const server_url& url, tcp::resolver& resolver,
                                                         const bool& cancelled) {
  const connect_error aborted{false, "connection cancelled"};
  auto [resolve_ec, endpoints] = co_await resolver.async_resolve(url.host, url.port, use_tuple);
  if (cancelled) co_return aborted;
  if (resolve_ec) co_return connect_error{false, "cannot resolve " + url.host + ": " + resolve_ec.message()};
  auto [connect_ec, endpoint] = co_await beast::get_lowest_layer(stream).async_connect(endpoints, use_tuple);
  if (cancelled) co_return aborted;
  if (connect_ec) co_return connect_error{false, "cannot connect to " + url.authority() + ": " + connect_ec.message()};
  if constexpr (std::is_same_v<Stream, tls_stream>) {
    if (!expect_name(stream.native_handle(), url.host)) {
      co_return connect_error{false, "TLS: cannot check the certificate for \"" + url.host + "\""};
    }
    auto [handshake_ec] = co_await stream.async_handshake(ssl::stream_base::client, use_tuple);
    if (cancelled) co_return aborted;
    if (handshake_ec) co_return tls_failure(stream.native_handle(), url, handshake_ec);
  }
  co_return std::nullopt;
}

/// Says goodbye to a TLS peer, briefly: what the peer answers (or whether) changes nothing.
net::awaitable<void> shut_down(tls_stream& stream) {
  beast::get_lowest_layer(stream).expires_after(shutdown_timeout);
  co_await stream.async_shutdown(use_tuple);
}

net::awaitable<void> shut_down_and_drop(tls_stream stream) { co_await shut_down(stream); }

net::awaitable<std::optional<connect_error>> shake_hands(connector server, std::chrono::seconds timeout) {
  const auto executor = co_await net::this_coro::executor;
  tcp::resolver resolver(executor);
  tls_stream stream(executor, server.tls()->context);
  beast::get_lowest_layer(stream).expires_after(timeout);
  const bool never_cancelled = false;
  auto failed = co_await open_stream(stream, server.url(), resolver, never_cancelled);
  if (!failed) co_await shut_down(stream);
  co_return failed;
}

template <class Stream>
net::awaitable<http_reply> exchange_on(Stream& stream, const server_url& url, http::request<http::string_body> req,
                                       std::chrono::seconds timeout) {
  tcp::resolver resolver(stream.get_executor());
  beast::get_lowest_layer(stream).expires_after(timeout);
  const bool never_cancelled = false;
  if (auto failed = co_await open_stream(stream, url, resolver, never_cancelled)) co_return http_reply{.error = failed};
  auto [write_ec, bytes_written] = co_await http::async_write(stream, req, use_tuple);
  if (write_ec) co_return http_reply{.error = connect_error{false, "sending to " + url.authority() + ": " + write_ec.message()}};
  beast::flat_buffer buffer;
  http::response_parser<http::string_body> parser;
  parser.body_limit(message_limit);
  auto [read_ec, bytes_read] = co_await http::async_read(stream, buffer, parser, use_tuple);
  if (read_ec) co_return http_reply{.error = connect_error{false, "reading from " + url.authority() + ": " + read_ec.message()}};
  if constexpr (std::is_same_v<Stream, tls_stream>) {
    // The answer is in hand: the goodbye need not delay it.
    const auto executor = stream.get_executor();
    net::co_spawn(executor, shut_down_and_drop(std::move(stream)), net::detached);
  }
  co_return http_reply{static_cast<int>(parser.get().result_int()), std::move(parser.get().body())};
}

/// http_download on an open stream kind: the head within the timeout, then the body as it comes.
template <class Stream>
net::awaitable<http_reply> download_on(Stream& stream, const server_url& url, http::request<http::string_body> req,
                                       std::chrono::seconds timeout, const std::function<void(std::string_view)>& sink) {
  tcp::resolver resolver(stream.get_executor());
  beast::get_lowest_layer(stream).expires_after(timeout);
  const bool never_cancelled = false;
  if (auto failed = co_await open_stream(stream, url, resolver, never_cancelled)) co_return http_reply{.error = failed};
  auto [write_ec, bytes_written] = co_await http::async_write(stream, req, use_tuple);
  if (write_ec) co_return http_reply{.error = connect_error{false, "sending to " + url.authority() + ": " + write_ec.message()}};
  beast::flat_buffer buffer;
  http::response_parser<http::buffer_body> parser;
  parser.body_limit(boost::none);  // a followed run has no end known in advance
  auto [head_ec, head_bytes] = co_await http::async_read_header(stream, buffer, parser, use_tuple);
  if (head_ec) co_return http_reply{.error = connect_error{false, "reading from " + url.authority() + ": " + head_ec.message()}};
  http_reply reply{static_cast<int>(parser.get().result_int())};
  const bool success = reply.status / 100 == 2;
  beast::get_lowest_layer(stream).expires_never();
  if (!success) beast::get_lowest_layer(stream).expires_after(timeout);
  std::vector<char> piece(64 * 1024);
  while (!parser.is_done()) {
    parser.get().body().data = piece.data();
    parser.get().body().size = piece.size();
    auto [ec, n] = co_await http::async_read_some(stream, buffer, parser, use_tuple);
    const std::size_t got = piece.size() - parser.get().body().size;
    if (success) {
      if (got) sink(std::string_view(piece.data(), got));
    } else if (reply.body.size() < 64 * 1024) {
      reply.body.append(piece.data(), got);
    }
    if (ec == http::error::need_buffer) continue;
    if (ec) {
      reply.error = connect_error{false, "reading from " + url.authority() + ": " + ec.message()};
      co_return reply;
    }
  }
  if constexpr (std::is_same_v<Stream, tls_stream>) {
    const auto executor = stream.get_executor();
    net::co_spawn(executor, shut_down_and_drop(std::move(stream)), net::detached);
  }
  co_return reply;
}

}  // namespace

common::result<connector> connector::make(server_url url, const std::string& ca_file) {
  if (!url.tls) return connector(std::move(url), nullptr);
  auto tls = std::make_shared<tls_context>();
  SSL_CTX_set_min_proto_version(tls->context.native_handle(), TLS1_2_VERSION);
  tls->context.set_verify_mode(ssl::verify_peer);
  error_code ec;
  // The file given replaces the system's CAs: a private CA is trusted for this server alone.
  if (ca_file.empty()) {
    tls->context.set_default_verify_paths(ec);
    if (ec) return common::failure{"cannot load the system's CA certificates: " + ec.message()};
  } else {
    tls->context.load_verify_file(ca_file, ec);
    if (ec) return common::failure{"cannot load CA certificates from " + ca_file + ": " + ec.message()};
  }
  return connector(std::move(url), std::move(tls));
}

std::optional<connect_error> connector::check_tls(std::chrono::seconds timeout) const {
  if (!tls_) return std::nullopt;
  net::io_context io;
  std::optional<connect_error> outcome;
  net::co_spawn(io, shake_hands(*this, timeout), [&outcome](std::exception_ptr, std::optional<connect_error> failed) {
    outcome = std::move(failed);
  });
  io.run();
  return outcome;
}

/// The WebSocket over either stream; websocket_impl below is the one for each.
struct websocket_client::impl {
  virtual ~impl() = default;
  virtual net::awaitable<std::optional<connect_error>> connect(std::string target, std::string token,
                                                               std::chrono::seconds timeout) = 0;
  virtual net::awaitable<error_code> read(std::string& message) = 0;
  virtual bool got_text() const = 0;
  virtual net::awaitable<error_code> write(std::string_view text) = 0;
  virtual net::awaitable<error_code> close() = 0;
  virtual void cancel() = 0;
  virtual const websocket::close_reason& reason() const = 0;
};

namespace {

template <class Stream>
struct websocket_impl final : websocket_client::impl {
  websocket_impl(net::any_io_executor executor, const connector& server)
      : url(server.url()), tls(server.tls()), resolver(executor), ws(make_stream(executor, tls)) {}

  static websocket::stream<Stream> make_stream(net::any_io_executor executor,
                                               const std::shared_ptr<connector::tls_context>& tls) {
    if constexpr (std::is_same_v<Stream, tls_stream>) {
      return websocket::stream<Stream>(executor, tls->context);
    } else {
      return websocket::stream<Stream>(executor);
    }
  }

  net::awaitable<std::optional<connect_error>> connect(std::string target, std::string token,
                                                       std::chrono::seconds timeout) override {
    beast::get_lowest_layer(ws).expires_after(timeout);
    if (auto failed = co_await open_stream(ws.next_layer(), url, resolver, cancelled)) co_return failed;
    // From here on the WebSocket's own timeouts (and its pings) watch the connection.
    beast::get_lowest_layer(ws).expires_never();
    ws.set_option(websocket::stream_base::timeout::suggested(beast::role_type::client));
    // Offer permessage-deflate: the server compresses each event once for every watcher.
    websocket::permessage_deflate deflate;
    deflate.client_enable = true;
    ws.set_option(deflate);
    ws.set_option(websocket::stream_base::decorator([token = std::move(token)](websocket::request_type& req) {
      if (!token.empty()) req.set(http::field::authorization, "Bearer " + token);
    }));
    ws.read_message_max(message_limit);
    ws.text(true);
    // Not cancelled once it went through: the caller then closes it politely.
    websocket::response_type answer;
    auto [ec] = co_await ws.async_handshake(answer, url.authority(), target, use_tuple);
    if (ec == websocket::error::upgrade_declined && answer.result_int() != 101) {
      const int status = static_cast<int>(answer.result_int());
      // 5xx: most often a proxy whose upstream is down (502, 503, 504), not a lost upgrade.
      co_return connect_error{false,
                              "the WebSocket upgrade to " + url.authority() + " was answered with HTTP " +
                                  std::to_string(status) +
                                  (status >= 500 ? " (is cmdcast-server behind a proxy down or unreachable?)" : ", not 101"),
                              status};
    }
    if (ec) co_return connect_error{false, "WebSocket handshake failed: " + ec.message()};
    co_return std::nullopt;
  }

  net::awaitable<error_code> read(std::string& message) override {
    auto [ec, bytes_read] = co_await ws.async_read(buffer, use_tuple);
    if (!ec) message = beast::buffers_to_string(buffer.data());
    buffer.consume(buffer.size());
    co_return ec;
  }

  bool got_text() const override { return ws.got_text(); }

  net::awaitable<error_code> write(std::string_view text) override {
    auto [ec, bytes_written] = co_await ws.async_write(net::buffer(text.data(), text.size()), use_tuple);
    co_return ec;
  }

  net::awaitable<error_code> close() override {
    auto [ec] = co_await ws.async_close(websocket::close_code::normal, use_tuple);
    co_return ec;
  }

  void cancel() override {
    cancelled = true;
    resolver.cancel();
    beast::get_lowest_layer(ws).cancel();
  }

  const websocket::close_reason& reason() const override { return ws.reason(); }

  server_url url;
  std::shared_ptr<connector::tls_context> tls;  // outlives the stream that uses it
  tcp::resolver resolver;
  websocket::stream<Stream> ws;
  beast::flat_buffer buffer;
  bool cancelled = false;
};

}  // namespace

websocket_client::websocket_client(net::any_io_executor executor, const connector& server) {
  if (server.tls()) {
    impl_ = std::make_unique<websocket_impl<tls_stream>>(executor, server);
  } else {
    impl_ = std::make_unique<websocket_impl<beast::tcp_stream>>(executor, server);
  }
}

websocket_client::~websocket_client() = default;

net::awaitable<std::optional<connect_error>> websocket_client::connect(std::string target, std::string token,
                                                                       std::chrono::seconds timeout) {
  return impl_->connect(std::move(target), std::move(token), timeout);
}

net::awaitable<error_code> websocket_client::read(std::string& message) { return impl_->read(message); }

bool websocket_client::got_text() const { return impl_->got_text(); }

net::awaitable<error_code> websocket_client::write(std::string_view text) { return impl_->write(text); }

net::awaitable<error_code> websocket_client::close() { return impl_->close(); }

void websocket_client::cancel() { impl_->cancel(); }

unsigned websocket_client::close_code() const { return static_cast<unsigned>(impl_->reason().code); }

std::string websocket_client::close_reason() const {
  const auto& why = impl_->reason();
  return std::string(why.reason.data(), why.reason.size());
}

net::awaitable<http_reply> http_exchange(connector server, http_request request, std::chrono::seconds timeout) {
  http::request<http::string_body> req;
  req.method_string(request.method);
  req.target(request.target);
  req.version(11);
  req.set(http::field::host, server.url().authority());
  if (!request.token.empty()) req.set(http::field::authorization, "Bearer " + request.token);
  if (!request.body.empty()) req.set(http::field::content_type, "application/json");
  req.body() = std::move(request.body);
  req.prepare_payload();
  const auto executor = co_await net::this_coro::executor;
  if (!server.tls()) {
    beast::tcp_stream stream(executor);
    co_return co_await exchange_on(stream, server.url(), std::move(req), timeout);
  }
  tls_stream stream(executor, server.tls()->context);
  co_return co_await exchange_on(stream, server.url(), std::move(req), timeout);
}

net::awaitable<http_reply> http_download(connector server, http_request request, std::chrono::seconds connect_timeout,
                                         std::function<void(std::string_view)> sink) {
  http::request<http::string_body> req;
  req.method_string(request.method.empty() ? "GET" : request.method);
  req.target(request.target);
  req.version(11);
  req.set(http::field::host, server.url().authority());
  if (!request.token.empty()) req.set(http::field::authorization, "Bearer " + request.token);
  req.prepare_payload();
  const auto executor = co_await net::this_coro::executor;
  if (!server.tls()) {
    beast::tcp_stream stream(executor);
    co_return co_await download_on(stream, server.url(), std::move(req), connect_timeout, sink);
  }
  tls_stream stream(executor, server.tls()->context);
  co_return co_await download_on(stream, server.url(), std::move(req), connect_timeout, sink);
}

}  // namespace cmdcast::client_net
