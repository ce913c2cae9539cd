#include "http/ws_connection.hpp"

#include <linux/sockios.h>
#include <sys/ioctl.h>
#include <sys/socket.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "cmdcast/common/random.hpp"

#include <array>
#include <cerrno>

namespace cmdcast::server {
namespace {

constexpr auto use_tuple = net::as_tuple(net::use_awaitable);
constexpr auto close_wait = std::chrono::seconds(5);  // for the peer's answer to our close
constexpr std::size_t max_parts = 32;                 // frames per writev (two parts each)
constexpr std::size_t min_backlog = 64 * 1024;       // unacknowledged bytes a ping may wait behind

}  // namespace

ws_connection::ws_connection(std::unique_ptr<transport> connection, std::size_t max_message_bytes,
                             std::chrono::seconds idle_timeout, traffic& counters, bool deflate)
    : transport_(std::move(connection)),
      socket_(transport_->socket()),
      idle_timeout_(idle_timeout),
      traffic_(counters),
      deflate_(deflate),
      reader_(max_message_bytes, deflate),
      idle_timer_(socket_.get_executor()),
      last_sign_of_life_(std::chrono::steady_clock::now()) {}

ws_connection::~ws_connection() = default;

void ws_connection::start(std::string_view already_read) {
  reader_.feed(already_read);
  check_idle();
}

bool ws_connection::peer_took_more() {
  // Bytes the peer's side has acknowledged: written, less what the send queue still holds.
  // Progress counts while a backlog waited there (a ping behind it may take long to be read,
  // and the backlog shrinking shows a peer that reads), or when more than pings went: a
  // watcher in step with the output has no backlog here, yet its ping may wait behind
  // megabytes in its own receive buffer for longer than the idle timeout. A peer whose
  // program stopped reading stops acknowledging once that buffer is full, and is closed an
  // idle timeout later; its kernel acknowledging our pings alone proves nothing of it.
  int unacknowledged = 0;
  if (::ioctl(socket_.native_handle(), SIOCOUTQ, &unacknowledged) != 0) return false;
  unacknowledged = std::max(unacknowledged, 0);
  const std::uint64_t acknowledged = written_ - static_cast<std::uint64_t>(unacknowledged);
  const bool more = acknowledged > acknowledged_ && (backlog_ >= min_backlog || acknowledged - acknowledged_ >= min_backlog);
  acknowledged_ = acknowledged;
  backlog_ = static_cast<std::size_t>(unacknowledged);
  return more;
}

void ws_connection::check_idle() {
  if (dead_) return;
  const auto now = std::chrono::steady_clock::now();
  // A peer taking what was sent is alive, though the ping may be megabytes behind in the
  // kernel's buffers, which need not fill for that (so no "room again" would tell it).
  if (peer_took_more()) last_sign_of_life_ = last_write_progress_ = now;
  const auto half = std::chrono::duration_cast<std::chrono::steady_clock::duration>(idle_timeout_) / 2;
  if (close_sent_) {
    if (now - close_sent_at_ >= close_wait) return close_socket();  // no answer to our close
  } else if (close_queued_) {
    // The close is queued behind what the peer has still to read: it has as long as it reads.
    // What it sends no longer counts, or a peer could hold the connection by sending junk.
    if (now - last_write_progress_ >= idle_timeout_) return close_socket();
  } else {
    const auto quiet = now - last_sign_of_life_;
    if (quiet >= idle_timeout_) return close_socket();
    if (quiet >= half) enqueue(ws::opcode::ping, std::make_shared<const std::string>(), -1, false);
  }
  if (closing()) return schedule_idle_check(std::chrono::seconds(1));
  // Each check comes after a random 50-100% of half the timeout: watchers that connected
  // together (a dashboard wall, everyone back after a restart) would otherwise be pinged
  // together, every 15 s by default, and 10,000 pings and their pongs at once hold up the
  // output to every other watcher for tens of milliseconds.
  schedule_idle_check(std::chrono::duration_cast<std::chrono::steady_clock::duration>(
      half * (0.5 + 0.5 * common::random_unit())));
}

void ws_connection::schedule_idle_check(std::chrono::steady_clock::duration after) {
  idle_timer_.expires_after(after);  // cancels a check already scheduled
  idle_timer_.async_wait([self = shared_from_this()](boost::system::error_code ec) {
    if (!ec) self->check_idle();
  });
}

net::awaitable<std::optional<std::string>> ws_connection::read() {
  for (;;) {
    if (dead_) co_return std::nullopt;
    if (!violated_) {
      auto item = reader_.next();
      if (auto* m = std::get_if<ws::text_message>(&item)) {
        if (closing()) continue;  // too late: the connection is closing
        co_return std::move(m->text);
      }
      if (auto* p = std::get_if<ws::ping>(&item)) {
        answer_ping(std::move(p->payload));
        continue;
      }
      if (std::holds_alternative<ws::pong>(item)) continue;
      if (auto* c = std::get_if<ws::close_received>(&item)) {
        close_received_ = true;
        if (!closing()) {
          close(c->code ? c->code : std::uint16_t{ws::normal}, "", true);  // the answer; the socket closes once it is out
        } else if (close_sent_) {
          close_socket();
        }
        continue;
      }
      if (auto* v = std::get_if<ws::violation>(&item)) {
        // Fail the connection: the close, then only draining what the peer still sends.
        violated_ = true;
        close(v->code, v->reason, true);
        continue;
      }
    }
    // Read into a buffer shared by every connection of the thread: an idle watcher holds no
    // read buffer of its own. (On TLS the transport may hold bytes already: read first.)
    thread_local std::array<char, 16 * 1024> shared_buffer;
    const ssize_t n = transport_->read_now(shared_buffer.data(), shared_buffer.size());
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
      if (transport_->pending_output()) write_now();  // what reading produced (TLS)
      auto [ec] = co_await socket_.async_wait(net::socket_base::wait_read, use_tuple);
      if (dead_) co_return std::nullopt;
      if (ec) {
        close_socket();
        co_return std::nullopt;
      }
      continue;
    }
    if (n <= 0) {  // the end of the stream, or a failure
      close_socket();
      co_return std::nullopt;
    }
    last_sign_of_life_ = std::chrono::steady_clock::now();
    traffic_.in += static_cast<std::size_t>(n);
    if (!violated_) reader_.feed(std::string_view(shared_buffer.data(), static_cast<std::size_t>(n)));
  }
}

void ws_connection::send(const frame& text, std::int64_t seq, bool compressed) {
  enqueue(ws::opcode::text, text, seq, false, compressed && deflate_);
}

void ws_connection::answer_ping(std::string payload) {
  if (closing()) return;
  auto data = std::make_shared<const std::string>(std::move(payload));
  // A pong still waiting in the queue answers the newest ping instead (RFC 6455 5.5.3): a
  // peer that pings without reading cannot grow the queue.
  if (waiting_pong_ && waiting_pong_->offset == 0 && !(in_batch_ && waiting_pong_ == &queue_.front())) {
    queued_bytes_ -= waiting_pong_->size();
    waiting_pong_->header = ws::make_header(ws::opcode::pong, data->size());
    waiting_pong_->payload = std::move(data);
    queued_bytes_ += waiting_pong_->size();
    return;
  }
  enqueue(ws::opcode::pong, std::move(data), -1, false);
  if (!queue_.empty() && queue_.back().header.bytes[0] == (0x80 | static_cast<std::uint8_t>(ws::opcode::pong))) {
    waiting_pong_ = &queue_.back();  // a deque keeps its elements in place as it grows and shrinks at the ends
  }
}

void ws_connection::enqueue(ws::opcode op, frame payload, std::int64_t seq, bool is_close, bool compressed) {
  if (closing()) return;
  outgoing o{ws::make_header(op, payload->size(), compressed), std::move(payload), seq};
  o.is_close = is_close;
  queued_bytes_ += o.size();
  queue_.push_back(std::move(o));
  if (queue_.size() > 1 || in_batch_ || waiting_writable_) return;  // behind what is being written
  if (auto* batch = send_batch::open()) {
    const auto& front = queue_.front();
    const iovec parts[2] = {{const_cast<std::uint8_t*>(front.header.bytes.data()), front.header.size},
                            {const_cast<char*>(front.payload->data()), front.payload->size()}};
    in_batch_ = true;
    batch->add(shared_from_this(), parts, 2);
    return;
  }
  write_now();
}

ssize_t ws_connection::write_some(const iovec* parts, std::size_t count) {
  // (On a helper thread of the batch: the transport's state is this connection's alone, and
  // the server's thread, the only other user, waits for the batch.)
  return transport_->write_some_now(parts, count);
}

void ws_connection::sent(std::size_t written, int error) {
  in_batch_ = false;
  if (dead_) return close_socket();  // closed while the batch was sending
  if (error) return close_socket();
  advance(written);
  write_now();
}

void ws_connection::write_now() {
  if (dead_ || in_batch_ || waiting_writable_) return;
  while (!queue_.empty() || transport_->pending_output()) {
    iovec parts[max_parts];
    std::size_t count = 0;
    for (const auto& o : queue_) {
      if (count + 2 > max_parts) break;
      std::size_t skip = o.offset;
      if (skip < o.header.size) {
        parts[count++] = {const_cast<std::uint8_t*>(o.header.bytes.data()) + skip, o.header.size - skip};
        skip = 0;
      } else {
        skip -= o.header.size;
      }
      if (skip < o.payload->size()) parts[count++] = {const_cast<char*>(o.payload->data()) + skip, o.payload->size() - skip};
    }
    const ssize_t n = transport_->write_some_now(parts, count);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return wait_writable();
      return close_socket();
    }
    advance(static_cast<std::size_t>(n));
    if (queue_.empty() && transport_->pending_output()) return wait_writable();
  }
  check_queue_mark();
}

void ws_connection::advance(std::size_t written) {
  traffic_.out += written;
  written_ += written;
  while (written > 0 && !queue_.empty()) {
    auto& o = queue_.front();
    const std::size_t take = std::min(written, o.size() - o.offset);
    o.offset += take;
    written -= take;
    queued_bytes_ -= take;
    if (o.offset < o.size()) break;
    if (&o == waiting_pong_) waiting_pong_ = nullptr;
    if (o.seq >= 0) last_seq_ = o.seq;
    if (o.is_close) {
      close_sent_ = true;
      close_sent_at_ = std::chrono::steady_clock::now();
      if (close_received_) {
        queue_.pop_front();
        return close_socket();
      }
      // After a violation no close handshake: the peer sees the close, then the end of the
      // stream, and what it still sends is read and dropped until it closes too.
      // (On TLS the close may still wait in the transport: the 5 s close wait ends it there.)
      boost::system::error_code ignored;
      if (violated_ && !transport_->secure()) socket_.shutdown(net::socket_base::shutdown_send, ignored);
    }
    queue_.pop_front();
  }
}

void ws_connection::wait_writable() {
  check_queue_mark();  // what was written may have brought the queue down to it
  waiting_writable_ = true;
  socket_.async_wait(net::socket_base::wait_write, [self = shared_from_this()](boost::system::error_code ec) {
    self->waiting_writable_ = false;
    if (ec) return self->close_socket();
    // Room again: the peer is reading. A watcher far behind may take longer than the idle
    // timeout to reach a ping (the kernel's buffers alone hold megabytes), and is alive all the same.
    self->last_sign_of_life_ = self->last_write_progress_ = std::chrono::steady_clock::now();
    self->write_now();
  });
}

void ws_connection::check_queue_mark() {
  if (!on_queue_mark_ || (queued_bytes_ > queue_mark_ && !dead_)) return;
  net::post(socket_.get_executor(), std::exchange(on_queue_mark_, nullptr));
}

void ws_connection::when_queued_at_most(std::size_t bytes, std::function<void()> f) {
  on_queue_mark_ = std::move(f);
  queue_mark_ = bytes;
  check_queue_mark();
}

std::int64_t ws_connection::last_seq() const {
  if (!queue_.empty() && queue_.front().offset > 0 && queue_.front().seq >= 0) return queue_.front().seq;
  return last_seq_;
}

void ws_connection::close(std::uint16_t code, std::string reason, bool drop_queued) {
  if (closing()) return;
  if (drop_queued) {
    // Keep a frame partly written: the peer would not understand what follows otherwise.
    const bool keep_front = !queue_.empty() && (queue_.front().offset > 0 || in_batch_ || waiting_writable_);
    while (queue_.size() > (keep_front ? 1u : 0u)) {
      if (&queue_.back() == waiting_pong_) waiting_pong_ = nullptr;
      queued_bytes_ -= queue_.back().size() - queue_.back().offset;
      queue_.pop_back();
    }
  }
  enqueue(ws::opcode::close, std::make_shared<const std::string>(ws::close_payload(code, reason)), -1, true);
  close_queued_ = true;
  last_write_progress_ = std::chrono::steady_clock::now();
  // The idle check now watches the close go out and the peer answer (check_idle).
  schedule_idle_check(std::chrono::seconds(1));
}

void ws_connection::close_socket() {
  dead_ = true;
  if (in_batch_) return;  // a batch still sends from the queue: finished in sent()
  idle_timer_.cancel();
  queue_.clear();
  waiting_pong_ = nullptr;
  queued_bytes_ = 0;
  check_queue_mark();  // whoever waits for the queue to drain goes on (and finds the connection over)
  if (!socket_.is_open()) return;
  transport_->close();
}

}  // namespace cmdcast::server
