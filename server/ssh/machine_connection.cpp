#include "ssh/machine_connection.hpp"

#include <libssh2.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <sstream>
#include <vector>

#include "ssh/ssh_session.hpp"

namespace cmdcast::server::ssh {
namespace {

using namespace net::experimental::awaitable_operators;
constexpr auto use_tuple = net::as_tuple(net::use_awaitable);

// The first line the wrapper writes to stderr: ASCII RS, then the process group.
constexpr std::string_view group_marker = "\x1e" "cmdcast-pgid=";
constexpr std::size_t max_marker_search = 64 * 1024;

net::steady_timer forever_timer(const net::any_io_executor& ex) {
  return net::steady_timer(ex, net::steady_timer::time_point::max());
}

/// Executes a short helper command on its own channel and waits for it to finish.
/// Runs a short command on its own channel to the end; the reason when no channel opened.
net::awaitable<std::optional<std::string>> run_helper(std::shared_ptr<ssh_session> s, const std::string& command) {
  failure error;
  LIBSSH2_CHANNEL* channel = co_await s->exec(command, error);
  if (!channel) co_return error.message;
  char sink[4096];
  // Drain both streams (login scripts may write to stderr) until EOF, waiting when idle.
  while (s->alive() && !libssh2_channel_eof(channel)) {
    const auto seen = s->receive_generation();
    bool got = false;
    for (int stream = 0; stream < 2; ++stream) {
      ssize_t n = 0;
      const int rc = s->attempt(&sink, [&] {
        n = libssh2_channel_read_ex(channel, stream, sink, sizeof sink);
        return n < 0 ? static_cast<int>(n) : 0;
      });
      if (rc != LIBSSH2_ERROR_EAGAIN && rc < 0) co_return std::nullopt;
      got = got || n > 0;
    }
    if (!got) co_await s->wait_io(seen);
  }
  co_await s->call([&] { return libssh2_channel_close(channel); });
  co_await s->call([&] { return libssh2_channel_free(channel); });
  co_return std::nullopt;
}

}  // namespace

void run_control::cancel() {
  cancel_requested_ = true;
  if (wake_) wake_();
}

void run_control::hold(bool held) {
  if (held == held_) return;
  held_ = held;
  if (!held && wake_) wake_();
}

/// What a run and the coroutine stopping it share.
struct machine_connection::run_state {
  explicit run_state(const net::any_io_executor& ex) : ended(forever_timer(ex)), group_known(forever_timer(ex)) {}
  void finish() {
    finished = true;
    ended.cancel();
  }
  bool finished = false;   // the command's channel reached EOF
  bool abandoned = false;  // the stopper gave up on a clean end: close the channel
  bool timed_out = false;
  bool stopping = false;
  std::optional<std::string> kill_unreached;  // why no kill could be sent, when none could
  long process_group = 0;
  net::steady_timer ended;        // cancelled when finished
  net::steady_timer group_known;  // cancelled when the process group line arrived
};

struct machine_connection::slot_waiter {
  explicit slot_waiter(const net::any_io_executor& ex) : timer(forever_timer(ex)) {}
  net::steady_timer timer;
  bool granted = false;
};

std::optional<std::string> check_known_hosts_file(const std::string& known_hosts) {
  // libssh2 takes some broken lines without a word (and then never matches them): each line
  // must be HOSTS KEYTYPE BASE64 [COMMENT], as ssh-keyscan writes it.
  std::ifstream in(known_hosts);
  if (!in) return "cannot read \"" + known_hosts + "\"";
  static constexpr std::string_view key_types[] = {"ssh-ed25519", "ssh-rsa", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384",
                                                   "ecdsa-sha2-nistp521", "ssh-dss"};
  int number = 0;
  for (std::string line; std::getline(in, line);) {
    ++number;
    std::istringstream fields(line);
    std::string hosts, type, key;
    fields >> hosts;
    if (hosts.empty() || hosts.starts_with('#')) continue;
    if (hosts.starts_with('@')) fields >> hosts;  // @cert-authority, @revoked
    fields >> type >> key;
    const bool known_type = std::find(std::begin(key_types), std::end(key_types), type) != std::end(key_types);
    if (!known_type || key.empty() ||
        key.find_first_not_of("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=") != std::string::npos) {
      return "\"" + known_hosts + "\" line " + std::to_string(number) +
             " is not HOST KEYTYPE KEY (as ssh-keyscan writes it)";
    }
  }
  LIBSSH2_SESSION* session = libssh2_session_init();
  if (!session) return "cannot check it: libssh2 has no memory";
  LIBSSH2_KNOWNHOSTS* known = libssh2_knownhost_init(session);
  const int read = known ? libssh2_knownhost_readfile(known, known_hosts.c_str(), LIBSSH2_KNOWNHOST_FILE_OPENSSH) : -1;
  if (known) libssh2_knownhost_free(known);
  libssh2_session_free(session);
  if (read < 0) return "\"" + known_hosts + "\" cannot be read as an OpenSSH known_hosts file";
  if (read == 0) {
    return "\"" + known_hosts + "\" holds no host key: add each machine's (ssh-keyscan -p PORT HOST, checked "
           "against the machine's own /etc/ssh/ssh_host_*.pub)";
  }
  return std::nullopt;
}

std::string shell_quote(std::string_view s) {
  std::string out = "'";
  for (char c : s) {
    if (c == '\'') {
      out += "'\\''";
    } else {
      out += c;
    }
  }
  out += '\'';
  return out;
}

std::string wrap_for_process_group(std::string_view command) {
  // sshd makes the login shell of an exec request a session leader, so its pid is the process
  // group of everything the command starts; `exec` keeps that pid through both shells.
  return "exec /bin/sh -c 'printf \"\\036cmdcast-pgid=%s\\n\" \"$$\" >&2; exec /bin/sh -c \"$1\"' "
         "cmdcast " +
         shell_quote(command);
}

machine_connection::machine_connection(net::any_io_executor executor, machine_endpoint endpoint,
                                       connection_options options)
    : executor_(std::move(executor)), endpoint_(std::move(endpoint)), options_(options) {}

machine_connection::~machine_connection() {
  if (session_) session_->shut_down("connection closed");
}

void machine_connection::disconnect() {
  if (session_) session_->shut_down("disconnected");
  session_.reset();
}

net::awaitable<std::optional<failure>> machine_connection::connect() {
  failure error;
  auto s = co_await session(error);
  if (!s) co_return error;
  co_return std::nullopt;
}

net::awaitable<std::shared_ptr<ssh_session>> machine_connection::session(failure& error) {
  for (;;) {
    if (session_ && session_->alive()) co_return session_;
    if (!connecting_) break;
    // Another run is connecting: share its outcome.
    auto done = connect_done_;
    co_await done->async_wait(use_tuple);
    if (!(session_ && session_->alive())) {
      error = last_connect_failure_;
      co_return nullptr;
    }
  }
  connecting_ = true;
  auto done = std::make_shared<net::steady_timer>(forever_timer(executor_));
  connect_done_ = done;
  auto fresh = std::make_shared<ssh_session>(executor_, endpoint_, options_);
  auto f = co_await fresh->establish();
  connecting_ = false;
  if (f) {
    fresh->shut_down(f->message);
    last_connect_failure_ = *f;
    error = *f;
    session_.reset();
  } else {
    session_ = fresh;
    ++connections_made_;
  }
  done->cancel();
  co_return f ? nullptr : session_;
}

net::awaitable<bool> machine_connection::acquire_slot(run_control* control) {
  if (running_ < options_.max_channels) {
    ++running_;
    co_return true;
  }
  auto waiter = std::make_shared<slot_waiter>(executor_);
  waiters_.push_back(waiter);
  control->wake_ = [waiter] { waiter->timer.cancel(); };
  while (!waiter->granted && !control->cancel_requested_) co_await waiter->timer.async_wait(use_tuple);
  control->wake_ = nullptr;
  if (waiter->granted) co_return true;
  std::erase(waiters_, waiter);
  co_return false;
}

void machine_connection::release_slot() {
  if (waiters_.empty()) {
    --running_;
    return;
  }
  // Hand the slot straight to the longest waiter.
  auto next = waiters_.front();
  waiters_.pop_front();
  next->granted = true;
  next->timer.cancel();
}

net::awaitable<run_result> machine_connection::run(std::string command, output_handler on_output,
                                                   std::shared_ptr<run_control> control,
                                                   run_options options) {
  if (!control) control = std::make_shared<run_control>();
  run_result result;
  if (!co_await acquire_slot(control.get())) {
    result.state = common::exit_state::cancelled;
    co_return result;
  }
  struct slot_guard {
    machine_connection* self;
    ~slot_guard() { self->release_slot(); }
  } guard{this};
  auto keep_alive = shared_from_this();

  // A session that died while idle (sshd restarted, network dropped) is only noticed when
  // the next channel fails to open; nothing has run then, so one retry on a new connection.
  for (int attempt = 0; attempt < 2; ++attempt) {
    failure error;
    auto s = co_await session(error);
    if (!s) {
      result.state = common::exit_state::failed;
      result.error = error;
      co_return result;
    }
    bool retry = false;
    result = co_await run_on(s, command, on_output, *control, options, retry);
    if (!retry) break;
  }
  control->wake_ = nullptr;
  co_return result;
}

net::awaitable<run_result> machine_connection::run_on(std::shared_ptr<ssh_session> s,
                                                      const std::string& command,
                                                      const output_handler& on_output,
                                                      run_control& control,
                                                      const run_options& options, bool& retry) {
  run_result result;
  failure error;
  LIBSSH2_CHANNEL* channel = co_await s->exec(wrap_for_process_group(command), error);
  if (!channel) {
    if (error.code == common::error_code::ssh_disconnected || !s->alive()) {
      s->shut_down(error.message);
      retry = connections_made_ > 0 && !control.cancel_requested_;
    }
    result.state = common::exit_state::failed;
    result.error = error;
    co_return result;
  }

  auto state = std::make_shared<run_state>(executor_);
  control.wake_ = [s] { s->wake_all(); };
  net::steady_timer deadline(executor_);
  if (options.timeout.count() > 0) {
    deadline.expires_after(options.timeout);
    deadline.async_wait([state, s](boost::system::error_code ec) {
      if (ec || state->finished) return;
      state->timed_out = true;
      s->wake_all();
    });
  }

  std::vector<char> buffer(options_.read_buffer_bytes);
  std::string stderr_head;  // stderr until the process-group line has been taken off
  bool marker_done = false;
  auto hand_on = [&](int stream, std::string_view data) {
    if (data.empty()) return;
    (stream == 0 ? result.bytes_stdout : result.bytes_stderr) += data.size();
    on_output(stream == 0 ? common::output_stream::out : common::output_stream::err, data);
  };
  auto deliver = [&](int stream, std::string_view data) {
    if (stream == 0 || marker_done) return hand_on(stream, data);
    // The login shell's startup files may print first (a .bashrc complaining): pass that on,
    // take the marker line out.
    stderr_head.append(data);
    const auto at = stderr_head.find(group_marker);
    const auto newline = at == std::string::npos ? at : stderr_head.find('\n', at);
    if (newline != std::string::npos) {
      state->process_group = std::atol(stderr_head.c_str() + at + group_marker.size());
      state->group_known.cancel();
      stderr_head.erase(at, newline + 1 - at);
    } else if (stderr_head.size() < max_marker_search) {
      return;  // the marker may still be arriving
    }
    marker_done = true;
    hand_on(1, stderr_head);
    stderr_head = std::string();
  };

  bool lost = false;
  while (!state->abandoned) {
    if (control.held_ && !state->stopping && !control.cancel_requested_ && !state->timed_out && s->alive()) {
      // Nobody watching has room for more: read nothing until someone has (hold(false) wakes
      // this), or the run is to stop, which must read on to see the end.
      co_await s->wait_wake();
      continue;
    }
    const auto seen = s->receive_generation();
    bool got_data = false;
    // One read per stream per round, so that a stream that always has data cannot starve
    // the other one, nor (see the yield below) the rest of the executor.
    for (int stream = 0; stream < 2 && !lost; ++stream) {
      ssize_t n = 0;
      const int rc = s->attempt(&buffer, [&] {
        n = libssh2_channel_read_ex(channel, stream, buffer.data(), buffer.size());
        return n < 0 ? static_cast<int>(n) : 0;
      });
      if (rc == LIBSSH2_ERROR_EAGAIN || (rc == 0 && n == 0)) continue;
      if (rc < 0) {
        lost = true;
        break;
      }
      got_data = true;
      deliver(stream, std::string_view(buffer.data(), static_cast<std::size_t>(n)));
      if (static_cast<std::size_t>(n) == buffer.size() && buffer.size() < options_.max_read_buffer_bytes) {
        buffer.resize(std::min(buffer.size() * 2, options_.max_read_buffer_bytes));
      }
    }
    if (lost || !s->alive() || libssh2_channel_eof(channel)) break;
    if ((control.cancel_requested_ || state->timed_out) && !state->stopping) {
      state->stopping = true;
      net::co_spawn(executor_, stop_remote(s, state, options.kill_grace), net::detached);
    }
    if (got_data) {
      // A fast command always has more to read: let the rest of the executor run in between
      // (the writers that send this output to its watchers, other channels, timers).
      co_await net::post(executor_, net::use_awaitable);
    } else {
      co_await s->wait_io(seen);
    }
  }
  if (!marker_done) {
    marker_done = true;
    hand_on(1, stderr_head);
  }
  state->finish();
  deadline.cancel();

  if (lost || !s->alive()) {
    const std::string reason = s->alive() ? s->last_error() : s->shutdown_reason();
    s->shut_down("connection lost: " + reason);
    libssh2_channel_free(channel);  // the socket is closed: frees locally
    result.state = common::exit_state::failed;
    result.error = failure{common::error_code::ssh_disconnected,
                           "connection to " + endpoint_.host + " lost while the command ran (" +
                               reason + "); its outcome is unknown"};
    co_return result;
  }

  if (state->abandoned) {
    // sshd answers the close of a channel whose command still runs only once it ends, and
    // libssh2's close waits for the next packet of any kind (a keepalive's answer at the
    // latest): the channel is closed and freed in the background, the result does not wait.
    net::co_spawn(executor_, [s, channel]() -> net::awaitable<void> {
      co_await s->call([&] { return libssh2_channel_close(channel); });
      co_await s->call([&] { return libssh2_channel_free(channel); });
    }, net::detached);
  } else {
    co_await s->call([&] { return libssh2_channel_close(channel); });
    co_await s->call([&] { return libssh2_channel_wait_closed(channel); });
    char* signal_name = nullptr;
    std::size_t signal_length = 0;
    libssh2_channel_get_exit_signal(channel, &signal_name, &signal_length, nullptr, nullptr, nullptr, nullptr);
    if (signal_name && signal_length > 0) {
      result.signal = std::string(signal_name, signal_length);
      libssh2_free(s->raw(), signal_name);
    } else {
      result.exit_code = libssh2_channel_get_exit_status(channel);
    }
    co_await s->call([&] { return libssh2_channel_free(channel); });
  }

  if (state->kill_unreached && state->abandoned) {
    // Not cancelled: the command may well go on running there, and the record must say so.
    result.state = common::exit_state::failed;
    result.error = failure{common::error_code::ssh_disconnected,
                           std::string(state->timed_out ? "the timeout" : "cancel") + " could not reach the command on " +
                               endpoint_.host + " (" + *state->kill_unreached +
                               "); it may still be running there"};
  } else if (state->timed_out) {
    result.state = common::exit_state::timed_out;
  } else if (state->stopping) {
    result.state = common::exit_state::cancelled;
  } else {
    result.state = common::exit_state::exited;
  }
  co_return result;
}

net::awaitable<void> machine_connection::stop_remote(std::shared_ptr<ssh_session> s,
                                                     std::shared_ptr<run_state> state,
                                                     std::chrono::milliseconds grace) {
  net::steady_timer timer(executor_);
  auto wait_for_end = [&](std::chrono::milliseconds limit) -> net::awaitable<void> {
    if (state->finished) co_return;
    timer.expires_after(limit);
    co_await (timer.async_wait(use_tuple) || state->ended.async_wait(use_tuple));
  };
  if (state->process_group == 0 && !state->finished) {
    // Cancelled before the command reported its process group: it is about to.
    timer.expires_after(grace);
    co_await (timer.async_wait(use_tuple) || state->group_known.async_wait(use_tuple) ||
              state->ended.async_wait(use_tuple));
    if (state->finished) co_return;
  }
  if (state->process_group > 0) {
    const std::string group = std::to_string(state->process_group);
    // Sends a signal on a channel of its own, waiting at most `grace` for it to be sent: a
    // channel that does not open in time (sshd's MaxSessions reached) is not waited for, and
    // the send goes on by itself should it open later. The reason when it was not sent.
    auto signal = [&](const char* name) -> net::awaitable<std::optional<std::string>> {
      auto outcome = std::make_shared<std::optional<std::optional<std::string>>>();
      auto sent = std::make_shared<net::steady_timer>(forever_timer(executor_));
      // POSIX kill syntax: the login shell may be dash, whose kill takes no "-TERM --".
      const std::string command = std::string("kill -s ") + name + " -- -" + group + " 2>/dev/null";
      net::co_spawn(executor_, [s, command, outcome, sent]() -> net::awaitable<void> {
        *outcome = co_await run_helper(s, command);
        sent->cancel();
      }, net::detached);
      timer.expires_after(grace);
      co_await (timer.async_wait(use_tuple) || sent->async_wait(use_tuple));
      if (!*outcome) co_return "no SSH channel opened for the kill within " + std::to_string(grace.count()) + " ms";
      co_return **outcome;
    };
    const auto term = co_await signal("TERM");
    co_await wait_for_end(grace);
    if (state->finished) co_return;
    const auto kill = co_await signal("KILL");
    if (term && kill) state->kill_unreached = *kill;
    co_await wait_for_end(grace);
    if (state->finished) co_return;
  }
  // No process group to signal, or something outside it keeps the output open: stop waiting.
  state->abandoned = true;
  s->wake_all();
}

}  // namespace cmdcast::server::ssh
