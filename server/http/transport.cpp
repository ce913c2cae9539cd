#include "http/transport.hpp"

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <sys/socket.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <algorithm>
#include <array>
#include <cerrno>

namespace cmdcast::server {
namespace {

constexpr auto use_tuple = net::as_tuple(net::use_awaitable);
constexpr std::size_t record_bytes = 16 * 1024;          // TLS's largest record
constexpr std::size_t encrypt_per_call = 4 * record_bytes;  // then the socket gets a turn

std::string openssl_error() {
  char text[256] = "unknown error";
  if (const auto e = ERR_get_error()) ERR_error_string_n(e, text, sizeof text);
  ERR_clear_error();
  return text;
}

}  // namespace

common::result<std::shared_ptr<tls_context>> tls_context::load(const std::string& cert_file, const std::string& key_file) {
  SSL_CTX* ctx = SSL_CTX_new(TLS_server_method());
  if (!ctx) return common::failure{"TLS: " + openssl_error()};
  std::shared_ptr<tls_context> out(new tls_context(ctx));
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE);
  // An idle connection (most watchers, most of the time) keeps no record buffers.
  SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
  if (SSL_CTX_use_certificate_chain_file(ctx, cert_file.c_str()) != 1) {
    return common::failure{cert_file + ": not a usable PEM certificate chain: " + openssl_error()};
  }
  if (SSL_CTX_use_PrivateKey_file(ctx, key_file.c_str(), SSL_FILETYPE_PEM) != 1) {
    // OpenSSL checks the key against the certificate here already.
    if (ERR_GET_REASON(ERR_peek_last_error()) == X509_R_KEY_VALUES_MISMATCH) {
      ERR_clear_error();
      return common::failure{key_file + ": does not match the certificate in " + cert_file};
    }
    return common::failure{key_file + ": not a usable PEM private key: " + openssl_error()};
  }
  if (SSL_CTX_check_private_key(ctx) != 1) {
    return common::failure{key_file + ": does not match the certificate in " + cert_file};
  }
  return out;
}

tls_context::~tls_context() { SSL_CTX_free(ctx_); }

transport::transport(net::ip::tcp::socket socket, std::shared_ptr<tls_context> tls)
    : socket_(std::move(socket)), tls_(std::move(tls)) {
  if (!tls_) return;
  ssl_ = SSL_new(tls_->native());
  SSL_set_bio(ssl_, BIO_new(BIO_s_mem()), BIO_new(BIO_s_mem()));
  SSL_set_accept_state(ssl_);
}

transport::~transport() {
  if (ssl_) SSL_free(ssl_);
}

bool transport::pending_output() const {
  return cipher_sent_ < cipher_.size() || (ssl_ && BIO_ctrl_pending(SSL_get_wbio(ssl_)) > 0);
}

void transport::collect_cipher() {
  BIO* out = SSL_get_wbio(ssl_);
  char* data = nullptr;
  const long n = BIO_get_mem_data(out, &data);
  if (n <= 0) return;
  if (cipher_sent_ == cipher_.size()) {
    cipher_.clear();
    cipher_sent_ = 0;
  }
  cipher_.append(data, static_cast<std::size_t>(n));
  (void)BIO_reset(out);
}

bool transport::flush_cipher() {
  collect_cipher();
  while (cipher_sent_ < cipher_.size()) {
    const ssize_t n = ::send(socket_.native_handle(), cipher_.data() + cipher_sent_, cipher_.size() - cipher_sent_,
                             MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0) {
      if (errno == EINTR) continue;
      return errno == EAGAIN || errno == EWOULDBLOCK;
    }
    cipher_sent_ += static_cast<std::size_t>(n);
  }
  cipher_.clear();
  cipher_sent_ = 0;
  return true;
}

ssize_t transport::write_some_now(const iovec* parts, std::size_t count) {
  if (!ssl_) {
    msghdr m{};
    m.msg_iov = const_cast<iovec*>(parts);
    m.msg_iovlen = count;
    return ::sendmsg(socket_.native_handle(), &m, MSG_NOSIGNAL | MSG_DONTWAIT);
  }
  if (!flush_cipher()) return -1;
  if (pending_output()) {
    errno = EAGAIN;
    return -1;
  }
  // Frames are gathered into whole records: a header of a few bytes is no record of its own.
  thread_local std::string stage;
  std::size_t taken = 0;
  std::size_t part = 0, offset = 0;
  while (taken < encrypt_per_call && part < count) {
    stage.clear();
    while (stage.size() < record_bytes && part < count) {
      const auto* base = static_cast<const char*>(parts[part].iov_base);
      const std::size_t n = std::min(parts[part].iov_len - offset, record_bytes - stage.size());
      stage.append(base + offset, n);
      offset += n;
      if (offset == parts[part].iov_len) {
        ++part;
        offset = 0;
      }
    }
    if (stage.empty()) break;
    std::size_t written = 0;
    ERR_clear_error();
    // Memory buffers take everything: a failure here is OpenSSL's own.
    if (SSL_write_ex(ssl_, stage.data(), stage.size(), &written) != 1) {
      ERR_clear_error();
      errno = EPROTO;
      return -1;
    }
    taken += written;
  }
  if (!flush_cipher()) return -1;
  return static_cast<ssize_t>(taken);
}

ssize_t transport::read_now(char* data, std::size_t size) {
  if (!ssl_) return ::recv(socket_.native_handle(), data, size, MSG_DONTWAIT);
  for (;;) {
    // OpenSSL's error queue is the thread's: what libssh2's crypto or another connection left
    // there would make SSL_get_error report a failure of this one.
    ERR_clear_error();
    std::size_t n = 0;
    const int ok = SSL_read_ex(ssl_, data, size, &n);
    if (ok == 1) {
      flush_cipher();  // what reading produced (a key update's answer), as far as it goes now
      return static_cast<ssize_t>(n);
    }
    const int error = SSL_get_error(ssl_, ok);
    if (error == SSL_ERROR_ZERO_RETURN) return 0;  // the peer's close_notify
    if (error != SSL_ERROR_WANT_READ) {
      ERR_clear_error();
      errno = EPROTO;
      return -1;
    }
    std::array<char, record_bytes + 512> raw;
    const ssize_t got = ::recv(socket_.native_handle(), raw.data(), raw.size(), MSG_DONTWAIT);
    if (got <= 0) return got;
    BIO_write(SSL_get_rbio(ssl_), raw.data(), static_cast<int>(got));
  }
}

net::awaitable<bool> transport::handshake() {
  if (!ssl_) co_return true;
  for (;;) {
    ERR_clear_error();
    const int r = SSL_do_handshake(ssl_);
    const int error = r == 1 ? SSL_ERROR_NONE : SSL_get_error(ssl_, r);
    if (!co_await write_all({})) co_return false;  // what the handshake produced
    if (r == 1) co_return true;
    if (error != SSL_ERROR_WANT_READ) {
      ERR_clear_error();
      co_return false;
    }
    auto [ec] = co_await socket_.async_wait(net::socket_base::wait_read, use_tuple);
    if (ec) co_return false;
    std::array<char, record_bytes + 512> raw;
    const ssize_t got = ::recv(socket_.native_handle(), raw.data(), raw.size(), MSG_DONTWAIT);
    if (got == 0 || (got < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) co_return false;
    if (got > 0) BIO_write(SSL_get_rbio(ssl_), raw.data(), static_cast<int>(got));
  }
}

net::awaitable<std::size_t> transport::read_some(char* data, std::size_t size) {
  for (;;) {
    const ssize_t n = read_now(data, size);
    if (n > 0) co_return static_cast<std::size_t>(n);
    if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) co_return 0;
    auto [ec] = co_await socket_.async_wait(net::socket_base::wait_read, use_tuple);
    if (ec) co_return 0;
  }
}

net::awaitable<bool> transport::write_all(std::string_view data) {
  while (!data.empty() || pending_output()) {
    const iovec part{const_cast<char*>(data.data()), data.size()};
    const ssize_t n = data.empty() ? (flush_cipher() ? 0 : -1) : write_some_now(&part, 1);
    if (n > 0) {
      data.remove_prefix(static_cast<std::size_t>(n));
      continue;
    }
    if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) co_return false;
    if (n == 0 && !pending_output()) continue;
    auto [ec] = co_await socket_.async_wait(net::socket_base::wait_write, use_tuple);
    if (ec) co_return false;
  }
  co_return true;
}

void transport::close() {
  if (ssl_ && SSL_is_init_finished(ssl_)) {
    // What is still to go, then close_notify, as far as the socket takes them now; the peer's
    // answer is not awaited.
    ERR_clear_error();
    SSL_shutdown(ssl_);
    flush_cipher();
  }
  boost::system::error_code ignored;
  socket_.shutdown(net::socket_base::shutdown_both, ignored);
  socket_.close(ignored);
}

}  // namespace cmdcast::server
