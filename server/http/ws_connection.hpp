// The server's side of a WebSocket once Beast has done the handshake. cmdcast frames and
// writes its own messages: a server frame is unmasked, so an event's shared frame goes to
// every watcher as it is, behind a header of a few bytes, in one non-blocking sendmsg made
// straight from the fan-out (send_batch) when the socket has room (on TLS, encrypted for this
// connection alone by its transport, in the same batch). Only a socket that is
// full waits, for writability, and then gets all it has queued in one writev. Reading takes
// the client's text messages, answers pings, keeps the close handshake, and closes peers
// that break the protocol, exceed the message limit or stay silent past the idle timeout.
#pragma once

#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "http/transport.hpp"
#include "http/ws_frame.hpp"
#include "support/send_batch.hpp"

namespace cmdcast::server {

namespace net = boost::asio;

class ws_connection : public send_batch::writer, public std::enable_shared_from_this<ws_connection> {
 public:
  using frame = std::shared_ptr<const std::string>;

  /// Bytes over all of the server's WebSockets, for /metrics.
  struct traffic {
    std::uint64_t in = 0, out = 0;
  };

  /// `deflate`: permessage-deflate was negotiated (support/deflate.hpp) in the upgrade.
  ws_connection(std::unique_ptr<transport> connection, std::size_t max_message_bytes, std::chrono::seconds idle_timeout,
                traffic& counters, bool deflate = false);
  ~ws_connection() override;

  /// Starts the idle check, with what was read already behind the upgrade request. A peer
  /// shows life by sending (pongs to the pings sent at half the idle timeout) or by reading
  /// (a backlog of ours shrinking, or a full socket taking more); one that does neither
  /// for the idle timeout is dropped.
  void start(std::string_view already_read);

  /// The next text message; nullopt once the connection is over: the close handshake done,
  /// the peer gone, or closed by us (a protocol violation, too long a message, silence past
  /// the idle timeout). Messages that arrive once a close is under way are dropped.
  net::awaitable<std::optional<std::string>> read();

  /// Queues a text message; `seq` >= 0 marks an execution's event (last_seq()). `compressed`:
  /// the payload is already deflated (only where compresses()).
  void send(const frame& text, std::int64_t seq = -1, bool compressed = false);
  /// Whether permessage-deflate was negotiated: events go out compressed.
  bool compresses() const { return deflate_; }
  /// Bytes of messages queued and not yet written.
  std::size_t queued_bytes() const { return queued_bytes_; }
  /// Whether anything is queued or being written.
  bool writing() const { return !queue_.empty(); }
  /// The seq of the last event written, or being written (a frame started is always finished).
  std::int64_t last_seq() const;
  /// Calls `f` (posted, once) when at most `bytes` are queued (0: everything has been
  /// written), or the connection is over.
  void when_queued_at_most(std::size_t bytes, std::function<void()> f);
  void when_drained(std::function<void()> f) { when_queued_at_most(0, std::move(f)); }

  /// Closes with `code`: after what is queued, or with `drop_queued` after the frame being
  /// written only. The connection is then over with the peer's close, or 5 s after ours went
  /// out, or when the peer has not read for the idle timeout while ours waits to go out.
  void close(std::uint16_t code, std::string reason, bool drop_queued = false);
  bool closing() const { return close_sent_ || close_queued_ || dead_; }

  /// A batched send (send_batch::writer).
  ssize_t write_some(const iovec* parts, std::size_t count) override;
  void sent(std::size_t written, int error) override;

 private:
  struct outgoing {
    ws::frame_header header;
    frame payload;
    std::int64_t seq;
    std::size_t offset = 0;  // of header + payload, already written
    bool is_close = false;
    std::size_t size() const { return header.size + payload->size(); }
  };
  void enqueue(ws::opcode op, frame payload, std::int64_t seq, bool is_close, bool compressed = false);
  void answer_ping(std::string payload);
  /// Writes what is queued now, as far as the socket takes it; waits for room otherwise.
  void write_now();
  void advance(std::size_t written);
  void wait_writable();
  /// Calls the when_queued_at_most() callback if the queue is down to its mark.
  void check_queue_mark();
  void close_socket();
  void check_idle();
  /// Whether the peer has taken bytes of a backlog since the last call.
  bool peer_took_more();
  void schedule_idle_check(std::chrono::steady_clock::duration after);

  std::unique_ptr<transport> transport_;
  net::ip::tcp::socket& socket_;  // transport_'s
  std::chrono::seconds idle_timeout_;
  traffic& traffic_;
  bool deflate_;
  ws::client_frame_reader reader_;
  std::deque<outgoing> queue_;
  std::size_t queued_bytes_ = 0;
  std::int64_t last_seq_ = -1;
  std::uint64_t written_ = 0, acknowledged_ = 0;  // bytes to the socket, and taken by the peer
  std::size_t backlog_ = 0;                       // unacknowledged at the last idle check
  bool in_batch_ = false, waiting_writable_ = false;
  bool close_queued_ = false, close_sent_ = false, close_received_ = false, violated_ = false, dead_ = false;
  outgoing* waiting_pong_ = nullptr;  // a pong queued and not yet started, if any
  std::function<void()> on_queue_mark_;
  std::size_t queue_mark_ = 0;
  net::steady_timer idle_timer_;
  std::chrono::steady_clock::time_point last_sign_of_life_;  // bytes received, or room after a full socket
  std::chrono::steady_clock::time_point last_write_progress_;  // room after a full socket (or the close queued)
  std::chrono::steady_clock::time_point close_sent_at_;
};

}  // namespace cmdcast::server
