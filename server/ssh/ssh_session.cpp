#include "ssh/ssh_session.hpp"

#include <libssh2.h>
#include <sys/socket.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/connect.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <cerrno>
#include <fstream>
#include <mutex>

namespace cmdcast::server::ssh {
namespace {

using namespace net::experimental::awaitable_operators;
constexpr auto use_tuple = net::as_tuple(net::use_awaitable);

std::string seconds_text(std::chrono::milliseconds ms) {
  const auto tenths = ms.count() / 100;
  return std::to_string(tenths / 10) + (tenths % 10 ? "." + std::to_string(tenths % 10) : "") + " s";
}

std::string base64_unpadded(const unsigned char* data, std::size_t size) {
  static constexpr char alphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  std::uint32_t bits = 0;
  int count = 0;
  for (std::size_t i = 0; i < size; ++i) {
    bits = (bits << 8) | data[i];
    count += 8;
    while (count >= 6) {
      count -= 6;
      out.push_back(alphabet[(bits >> count) & 63]);
    }
  }
  if (count > 0) out.push_back(alphabet[(bits << (6 - count)) & 63]);
  return out;
}

std::string_view key_type_name(int type) {
  switch (type) {
    case LIBSSH2_HOSTKEY_TYPE_RSA: return "ssh-rsa";
    case LIBSSH2_HOSTKEY_TYPE_DSS: return "ssh-dss";
    case LIBSSH2_HOSTKEY_TYPE_ECDSA_256: return "ecdsa-sha2-nistp256";
    case LIBSSH2_HOSTKEY_TYPE_ECDSA_384: return "ecdsa-sha2-nistp384";
    case LIBSSH2_HOSTKEY_TYPE_ECDSA_521: return "ecdsa-sha2-nistp521";
    case LIBSSH2_HOSTKEY_TYPE_ED25519: return "ssh-ed25519";
    default: return "unknown";
  }
}

int known_host_key_bits(int type) {
  switch (type) {
    case LIBSSH2_HOSTKEY_TYPE_RSA: return LIBSSH2_KNOWNHOST_KEY_SSHRSA;
    case LIBSSH2_HOSTKEY_TYPE_DSS: return LIBSSH2_KNOWNHOST_KEY_SSHDSS;
    case LIBSSH2_HOSTKEY_TYPE_ECDSA_256: return LIBSSH2_KNOWNHOST_KEY_ECDSA_256;
    case LIBSSH2_HOSTKEY_TYPE_ECDSA_384: return LIBSSH2_KNOWNHOST_KEY_ECDSA_384;
    case LIBSSH2_HOSTKEY_TYPE_ECDSA_521: return LIBSSH2_KNOWNHOST_KEY_ECDSA_521;
    case LIBSSH2_HOSTKEY_TYPE_ED25519: return LIBSSH2_KNOWNHOST_KEY_ED25519;
    default: return LIBSSH2_KNOWNHOST_KEY_UNKNOWN;
  }
}

// libssh2 1.10 signs with RSA keys using SHA-1 ("ssh-rsa") only, which OpenSSH 8.8 and later
// refuse by default; say so when an RSA key fails.
std::string rsa_hint(const std::string& identity) {
  std::ifstream pub(identity + ".pub");
  std::string type;
  pub >> type;
  std::ifstream key(identity);
  std::string first_line;
  std::getline(key, first_line);
  if (type != "ssh-rsa" && first_line.find("RSA PRIVATE KEY") == std::string::npos) return "";
  return " (this is an RSA key: libssh2 1.10 signs with ssh-rsa/SHA-1 only, which OpenSSH 8.8 "
         "and later refuse unless PubkeyAcceptedAlgorithms allows it; use an ed25519 key)";
}

void init_libssh2_once() {
  static std::once_flag once;
  std::call_once(once, [] { libssh2_init(0); });
}

}  // namespace

std::string host_key_description(LIBSSH2_SESSION* session) {
  std::size_t length = 0;
  int type = 0;
  if (!libssh2_session_hostkey(session, &length, &type)) return "no host key";
  const char* hash = libssh2_hostkey_hash(session, LIBSSH2_HOSTKEY_HASH_SHA256);
  std::string text(key_type_name(type));
  if (hash) {
    text += " SHA256:" + base64_unpadded(reinterpret_cast<const unsigned char*>(hash), 32);
  }
  return text;
}

ssh_session::ssh_session(net::any_io_executor executor, machine_endpoint endpoint,
                         connection_options options)
    : executor_(std::move(executor)),
      endpoint_(std::move(endpoint)),
      options_(options),
      socket_(executor_),
      wake_(std::make_shared<net::steady_timer>(executor_, net::steady_timer::time_point::max())) {
  init_libssh2_once();
}

ssh_session::~ssh_session() {
  if (session_) libssh2_session_free(session_);  // socket closed: frees without network I/O
}

// libssh2 reads the socket through this, so the session learns when data arrived that any
// channel (not only the caller's) may be waiting for.
ssize_t ssh_session::receive_callback(int socket, void* buffer, std::size_t length, int flags,
                                   void** abstract) {
  auto* self = static_cast<ssh_session*>(*abstract);
  const ssize_t n = ::recv(socket, buffer, length, flags);
  if (n < 0) return -errno;
  if (n > 0) {
    self->bytes_in_ += static_cast<std::uint64_t>(n);
    ++self->receive_generation_;
  }
  return n;
}

std::string ssh_session::last_error() const {
  char* message = nullptr;
  int length = 0;
  libssh2_session_last_error(session_, &message, &length, 0);
  return message && length > 0 ? std::string(message, static_cast<std::size_t>(length)) : "unknown error";
}

void ssh_session::wake_all() {
  wake_->cancel();
  wake_ = std::make_shared<net::steady_timer>(executor_, net::steady_timer::time_point::max());
}

void ssh_session::shut_down(std::string reason) {
  if (alive_ || shutdown_reason_.empty()) shutdown_reason_ = std::move(reason);
  alive_ = false;
  boost::system::error_code ignored;
  socket_.shutdown(net::ip::tcp::socket::shutdown_both, ignored);
  socket_.close(ignored);
  wake_all();
}

net::awaitable<void> ssh_session::wait_io(std::uint64_t seen) {
  if (receive_generation_ != seen || !socket_.is_open()) co_return;
  const auto wake = wake_;  // keep the timer this wait uses alive
  const int directions = libssh2_session_block_directions(session_);
  const bool write = directions & LIBSSH2_SESSION_BLOCK_OUTBOUND;
  const bool read = (directions & LIBSSH2_SESSION_BLOCK_INBOUND) || !write;
  if (read && write) {
    co_await (socket_.async_wait(net::socket_base::wait_read, use_tuple) ||
              socket_.async_wait(net::socket_base::wait_write, use_tuple) ||
              wake->async_wait(use_tuple));
  } else {
    co_await (socket_.async_wait(write ? net::socket_base::wait_write : net::socket_base::wait_read,
                                 use_tuple) ||
              wake->async_wait(use_tuple));
  }
}

net::awaitable<void> ssh_session::wait_wake() {
  if (!socket_.is_open()) co_return;
  const auto wake = wake_;  // keep the timer this wait uses alive
  co_await wake->async_wait(use_tuple);
}

int ssh_session::attempt(const void* owner, const std::function<int()>& fn) {
  // libssh2 refuses a new packet while another call's packet is half-sent.
  if (half_sent_owner_ && half_sent_owner_ != owner) return LIBSSH2_ERROR_EAGAIN;
  const std::uint64_t before = receive_generation_;
  const int rc = fn();
  if (receive_generation_ != before) wake_all();  // the data read may be for other channels
  const bool sending = rc == LIBSSH2_ERROR_EAGAIN &&
                       (libssh2_session_block_directions(session_) & LIBSSH2_SESSION_BLOCK_OUTBOUND);
  if (sending) {
    half_sent_owner_ = owner;
  } else if (half_sent_owner_ == owner) {
    half_sent_owner_ = nullptr;
    wake_all();
  }
  return rc;
}

net::awaitable<int> ssh_session::call(const std::function<int()>& fn) {
  for (;;) {
    const std::uint64_t seen = receive_generation_;
    const int rc = attempt(&fn, fn);
    if (rc != LIBSSH2_ERROR_EAGAIN) co_return rc;
    if (!socket_.is_open()) co_return LIBSSH2_ERROR_SOCKET_DISCONNECT;
    co_await wait_io(seen);
  }
}

net::awaitable<std::optional<failure>> ssh_session::connect_socket() {
  const std::string where = endpoint_.host + ":" + std::to_string(endpoint_.port);
  net::ip::tcp::resolver resolver(executor_);
  auto [resolve_error, endpoints] =
      co_await resolver.async_resolve(endpoint_.host, std::to_string(endpoint_.port), use_tuple);
  if (resolve_error) {
    co_return failure{common::error_code::ssh_connect_failed,
                      "cannot resolve host \"" + endpoint_.host + "\": " + resolve_error.message()};
  }
  net::steady_timer deadline(executor_, options_.connect_timeout);
  auto result = co_await (net::async_connect(socket_, endpoints, use_tuple) || deadline.async_wait(use_tuple));
  if (result.index() == 1) {
    socket_.close();
    co_return failure{common::error_code::ssh_connect_failed,
                      "no answer from " + where + " within " + seconds_text(options_.connect_timeout)};
  }
  const auto connect_error = std::get<0>(std::get<0>(result));
  if (connect_error) {
    co_return failure{common::error_code::ssh_connect_failed,
                      "cannot connect to " + where + ": " + connect_error.message()};
  }
  socket_.set_option(net::socket_base::keep_alive(true));
  socket_.set_option(net::ip::tcp::no_delay(true));
  co_return std::nullopt;
}

std::optional<failure> ssh_session::verify_host_key() {
  std::size_t length = 0;
  int type = 0;
  const char* key = libssh2_session_hostkey(session_, &length, &type);
  const std::string offered = host_key_description(session_);
  const std::string host = endpoint_.port == 22
                               ? endpoint_.host
                               : "[" + endpoint_.host + "]:" + std::to_string(endpoint_.port);
  if (!key) return failure{common::error_code::host_key_mismatch, host + " sent no host key"};

  LIBSSH2_KNOWNHOSTS* known = libssh2_knownhost_init(session_);
  const int read = libssh2_knownhost_readfile(known, endpoint_.known_hosts.c_str(),
                                              LIBSSH2_KNOWNHOST_FILE_OPENSSH);
  int check = LIBSSH2_KNOWNHOST_CHECK_FAILURE;
  if (read >= 0) {
    check = libssh2_knownhost_checkp(known, endpoint_.host.c_str(), endpoint_.port, key, length,
                                     LIBSSH2_KNOWNHOST_TYPE_PLAIN | LIBSSH2_KNOWNHOST_KEYENC_RAW |
                                         known_host_key_bits(type),
                                     nullptr);
  }
  libssh2_knownhost_free(known);
  switch (check) {
    case LIBSSH2_KNOWNHOST_CHECK_MATCH: return std::nullopt;
    case LIBSSH2_KNOWNHOST_CHECK_MISMATCH:
      return failure{common::error_code::host_key_mismatch,
                     "host key of " + host + " does not match " + endpoint_.known_hosts +
                         ": it offers " + offered + "; refusing to connect (the key changed)"};
    case LIBSSH2_KNOWNHOST_CHECK_NOTFOUND:
      return failure{common::error_code::host_key_mismatch,
                     "host key of " + host + " is not in " + endpoint_.known_hosts + ": it offers " +
                         offered + "; check it and add it to known_hosts to accept it"};
    default:
      return failure{common::error_code::host_key_mismatch,
                     "cannot read known_hosts " + endpoint_.known_hosts + " to check the host key of " +
                         host + " (" + offered + ")"};
  }
}

net::awaitable<std::optional<failure>> ssh_session::establish() {
  if (auto f = co_await connect_socket()) co_return f;

  session_ = libssh2_session_init_ex(nullptr, nullptr, nullptr, this);
  if (!session_) co_return failure{common::error_code::ssh_connect_failed, "out of memory"};
  libssh2_session_callback_set(session_, LIBSSH2_CALLBACK_RECV,
                               reinterpret_cast<void*>(&ssh_session::receive_callback));
  libssh2_session_set_blocking(session_, 0);
  // Prefer the modern host key types; the key offered must be in known_hosts either way.
  libssh2_session_method_pref(session_, LIBSSH2_METHOD_HOSTKEY,
                              "ssh-ed25519,ecdsa-sha2-nistp256,ecdsa-sha2-nistp384,"
                              "ecdsa-sha2-nistp521,ssh-rsa");
  alive_ = true;

  // The handshake and authentication share one deadline: past it the socket is closed, which
  // ends whatever libssh2 call is waiting.
  bool timed_out = false;
  net::steady_timer deadline(executor_, options_.auth_timeout);
  deadline.async_wait([this, &timed_out, self = shared_from_this()](boost::system::error_code ec) {
    if (ec) return;
    timed_out = true;
    shut_down("timed out");
  });
  const std::string who = endpoint_.user + "@" + endpoint_.host + ":" + std::to_string(endpoint_.port);
  auto timeout_failure = [&](std::string_view phase) {
    return failure{phase == "authentication" ? common::error_code::ssh_auth_failed
                                             : common::error_code::ssh_connect_failed,
                   "no answer from " + who + " during " + std::string(phase) + " within " +
                       seconds_text(options_.auth_timeout)};
  };

  const int fd = socket_.native_handle();
  int rc = co_await call([this, fd] { return libssh2_session_handshake(session_, fd); });
  if (rc != 0) {
    deadline.cancel();
    if (timed_out) co_return timeout_failure("the SSH handshake");
    co_return failure{common::error_code::ssh_connect_failed,
                      "SSH handshake with " + who + " failed: " + last_error()};
  }
  if (auto f = verify_host_key()) {
    deadline.cancel();
    shut_down("host key refused");
    co_return f;
  }
  rc = co_await call([this] {
    return libssh2_userauth_publickey_fromfile_ex(
        session_, endpoint_.user.c_str(), static_cast<unsigned>(endpoint_.user.size()), nullptr,
        endpoint_.identity.c_str(), "");
  });
  deadline.cancel();
  if (rc != 0) {
    if (timed_out) co_return timeout_failure("authentication");
    const std::string reason = last_error();
    shut_down("authentication failed");
    co_return failure{common::error_code::ssh_auth_failed,
                      "public key authentication as " + who + " with " + endpoint_.identity +
                          " failed: " + reason + rsa_hint(endpoint_.identity)};
  }

  libssh2_keepalive_config(session_, 1, static_cast<unsigned>(options_.keepalive_interval.count()));
  net::co_spawn(executor_, [self = shared_from_this()] { return self->keepalive_loop(); },
                net::detached);
  co_return std::nullopt;
}

net::awaitable<void> ssh_session::keepalive_loop() {
  net::steady_timer timer(executor_);
  while (alive_) {
    int next = static_cast<int>(options_.keepalive_interval.count());
    const int rc = co_await call([this, &next] { return libssh2_keepalive_send(session_, &next); });
    if (rc != 0) {
      if (alive_) shut_down("keepalive failed: " + last_error());
      co_return;
    }
    timer.expires_after(std::chrono::seconds(std::max(next, 1)));
    // Ends early when the session is shut down (the wake timer is cancelled).
    const auto wake = wake_;
    co_await (timer.async_wait(use_tuple) || wake->async_wait(use_tuple));
  }
}

net::awaitable<LIBSSH2_CHANNEL*> ssh_session::exec(const std::string& command, failure& error) {
  LIBSSH2_CHANNEL* channel = nullptr;
  int rc = co_await call([&] {
    channel = libssh2_channel_open_ex(session_, "session", sizeof("session") - 1,
                                      options_.window_bytes, LIBSSH2_CHANNEL_PACKET_DEFAULT, nullptr, 0);
    return channel ? 0 : libssh2_session_last_errno(session_);
  });
  if (!channel) {
    error = {alive_ && rc != LIBSSH2_ERROR_SOCKET_DISCONNECT && rc != LIBSSH2_ERROR_SOCKET_RECV &&
                     rc != LIBSSH2_ERROR_SOCKET_SEND
                 ? common::error_code::ssh_connect_failed
                 : common::error_code::ssh_disconnected,
             "cannot open an SSH channel to " + endpoint_.host + ": " +
                 (alive_ ? last_error() : shutdown_reason_)};
    co_return nullptr;
  }
  rc = co_await call([&] {
    return libssh2_channel_process_startup(channel, "exec", sizeof("exec") - 1, command.data(),
                                           static_cast<unsigned>(command.size()));
  });
  if (rc == 0) rc = co_await call([&] { return libssh2_channel_send_eof(channel); });
  if (rc != 0) {
    error = {common::error_code::ssh_disconnected,
             "cannot start the command on " + endpoint_.host + ": " + last_error()};
    libssh2_channel_free(channel);
    co_return nullptr;
  }
  co_return channel;
}

}  // namespace cmdcast::server::ssh
