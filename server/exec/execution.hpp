// One run of an action on a machine, and everyone watching it. The execution numbers its
// events (seq), serialises each once into a shared frame, keeps the newest in a bounded replay
// buffer for late joiners and resumes, and pushes every frame to its live subscribers. One
// without room for the next frame falls back to catching up from the replay buffer at its own
// pace (a gap event for what the buffer no longer holds), so a slow watcher slows nobody; when
// no watcher has room, reading the command's output is held (run_control::hold), so the
// fastest watcher paces the command and nobody who keeps reading loses a byte.
// Used on the server's single-threaded executor only.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/steady_timer.hpp>

#include <chrono>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "cmdcast/common/progress.hpp"
#include "cmdcast/common/protocol.hpp"
#include "audit/output_audit.hpp"
#include "cmdcast/common/utf8.hpp"
#include "config/config.hpp"
#include "exec/coalescer.hpp"
#include "exec/event_frame.hpp"
#include "exec/secret_masker.hpp"
#include "ssh/machine_connection.hpp"

namespace cmdcast::server {

namespace net = boost::asio;

/// A watcher of an execution (a WebSocket, a long-poll).
class subscriber {
 public:
  virtual ~subscriber() = default;
  /// Queues one serialised event (seq -1: not sequenced). Returns false, queueing nothing,
  /// when the subscriber is over its bound: it then catches up from the replay buffer.
  virtual bool push(const frame& f, common::seq_t seq) = 0;
  /// Bytes it can still queue (catching up from the replay buffer is paced by this).
  virtual std::size_t room() const = 0;
  /// Catching up, it has no room for the next held event: once it has, it calls feed().
  virtual void wants_more() = 0;
  /// Every event has been pushed: the execution is over.
  virtual void ended() = 0;
};

class execution;

/// Where an execution's events and record go besides its watchers: the cluster's stream
/// (cluster/cluster_node.hpp), for watchers on other servers.
class event_relay {
 public:
  virtual ~event_relay() = default;
  /// A sequenced event; `oldest_held` is the oldest seq the replay buffer still holds.
  virtual void append(const execution& e, common::seq_t seq, const frame& f, common::seq_t oldest_held, bool is_exit) = 0;
  /// Its record changed (waiting, started, approved, ended).
  virtual void record_changed(const execution& e) = 0;
};

/// Before an execution runs: nothing to wait for, waiting for the machine's running exclusive
/// action, or for another operator's approval.
enum class pending_state : std::uint8_t { none, queued, awaiting_approval };

class execution : public std::enable_shared_from_this<execution> {
 public:
  /// An execution of `r` asked for by `user`. It runs once start() is called; until then it is
  /// a record (and watchers may attach). Secret params are shown as secret_mark everywhere,
  /// and masked in the output.
  execution(net::any_io_executor executor, std::string id, const resolved_command& r, std::string user,
            const server_settings& settings, audit_store* audit);

  /// A copy of an execution another server of the cluster holds, as its `record` says: it
  /// runs nothing, and its events come through take(). Watchers use it like any other.
  execution(net::any_io_executor executor, common::execution_record record, const server_settings& settings);
  bool is_copy() const { return copy_of_.has_value(); }
  /// A copy's next event, as its owner sent it. A seq past the next one expected first puts
  /// a gap event in the stream for what is missing; an older one is ignored.
  void take(common::seq_t seq, std::string json, bool is_exit);
  /// A copy whose owner is gone: ends it `lost`, as the owner's store does at its restart.
  void end_copy_lost();
  /// A copy's record as its owner changed it (queued, its position, awaiting approval, who
  /// decided), with the owner's queued or awaiting_approval event while it waits (else empty):
  /// its watchers get that event as the owner's do. Its state moves only with its events.
  void take_record(common::execution_record r, const std::string& pending_event);
  /// A copy: called when its record changes (a fleet run's copy counts its members again).
  std::function<void()> on_copy_changed;

  /// Also sends its events and record to `relay` (set before it starts).
  void relay_to(std::shared_ptr<event_relay> relay) { relay_ = std::move(relay); }
  /// The events the replay buffer holds, oldest first.
  void for_each_held(const std::function<void(common::seq_t, const frame&)>& fn) const;

  /// Runs the command on `connection`; `on_end` runs once the exit event is out.
  void start(std::shared_ptr<ssh::machine_connection> connection, std::function<void()> on_end);
  /// Cancels it while it runs (execution_registry::cancel also ends one that waits).
  void cancel();

  /// While it waits to run: tells its watchers (a queued or awaiting_approval event, which a
  /// newcomer also gets) and puts it in its record.
  /// The queued or awaiting_approval event it is waiting with (pending() is not none).
  frame pending_frame() const;
  void set_queued(std::int64_t position);
  void set_awaiting_approval(std::string expires_at);
  /// Records who approved or rejected it, and when.
  void set_decided_by(const std::string& user);
  pending_state pending() const { return pending_; }
  bool started() const { return launched_; }
  /// Ends it before it ran (rejected, expired, cancelled while waiting), with a stderr line
  /// saying why, then the exit event.
  void end_unstarted(common::exit_state state, std::string why);
  const std::string& user() const { return user_; }
  /// The progress percent last reported, if its action has a parser and it said one.
  std::optional<double> progress() const;
  const std::string& action_type() const { return action_type_; }

  /// Sends `s` the held events with seq > after (a gap event first when some of them are no
  /// longer held), as fast as it takes them, then everything live. Returns false when the
  /// execution has its maximum of subscribers.
  bool subscribe(const std::shared_ptr<subscriber>& s, common::seq_t after);
  /// Sends a subscriber that is catching up what it now has room for.
  void feed(subscriber* s);
  void unsubscribe(const subscriber* s);

  common::execution_record record() const;
  const std::string& id() const { return id_; }
  const std::string& machine_id() const { return machine_id_; }
  bool finished() const { return exit_.has_value(); }
  /// Whether the replay buffer holds every event after `after` (a finished execution that
  /// no longer does is served from the audit store).
  bool holds_after(common::seq_t after) const;
  std::size_t watchers() const { return subscribers_.size() + catching_up_.size(); }
  common::seq_t last_seq() const { return next_seq_ - 1; }
  /// Times a watcher was sent a gap because it fell behind (not for asking what was gone).
  std::uint64_t gaps() const { return gaps_; }
  /// Times reading the command's output was held because no watcher had room.
  std::uint64_t holds() const { return holds_; }
  /// Bytes of frames the replay buffer holds.
  std::size_t replay_bytes() const { return replay_size_; }

 private:
  void emit(common::event e);
  /// emit() for output text where it lies (a read, or pending_text_).
  void emit_output(common::output_stream stream, std::string_view text, std::int64_t t);
  /// Hands a sequenced event to the audit, then to hold_and_publish().
  void audit_and_publish(common::seq_t seq, const frame& f, std::size_t output_bytes, bool is_exit);
  /// Holds and sends a sequenced frame (the one path for events made here and taken).
  void hold_and_publish(common::seq_t seq, const frame& f, bool is_exit);
  void publish(const frame& f, common::seq_t seq);
  /// Holds reading the output while every watcher is behind (none live), resumes otherwise.
  void pace();
  /// Drops the oldest events past replay_bytes, except what a watcher catching up still
  /// needs, as long as the buffer stays within max_lag_bytes.
  void trim_replay();
  void on_output(common::output_stream stream, std::string_view bytes);
  void flush_output();
  void report_progress(bool force);
  /// Tells everyone the watcher count soon, once joins and leaves have settled (longer, the
  /// more watchers): a poller that leaves and comes back between two polls, or 10,000
  /// watchers joining, does not make a storm of watchers events.
  void announce_watchers();
  /// Sends count frame `f` to the live watchers from index `from` on, a slice per turn.
  void send_watchers(const frame& f, std::uint64_t sending, std::size_t from);
  frame watchers_frame() const;
  void finish(const ssh::run_result& r);
  /// Sends the exit event and lets the watchers go.
  void conclude(common::exit_event e);
  /// Milliseconds since it started (the `t` of events).
  std::int64_t elapsed_ms() const;
  void arm_audit();
  void flush_audit();
  /// Writes the record now, output or not (a state change before it runs).
  void flush_audit_record();

  net::any_io_executor executor_;
  std::string id_;
  std::string machine_id_;
  std::string action_type_;
  std::string command_;  // as shown: secret values are secret_mark
  std::string run_line_;
  std::map<std::string, std::string> params_;
  std::string user_;
  pending_state pending_ = pending_state::none;
  std::int64_t queue_position_ = 0;
  std::string approval_expires_at_;
  std::optional<std::string> decided_by_, decided_at_;
  bool launched_ = false;
  const server_settings settings_;  // as when it started: a reload does not change a run
  std::chrono::seconds timeout_;
  std::string started_at_;
  std::chrono::steady_clock::time_point started_;
  std::optional<std::string> ended_at_;

  common::seq_t next_seq_ = 0;
  struct held {
    common::seq_t seq;
    frame data;
  };
  std::deque<held> replay_;
  std::size_t replay_size_ = 0;
  std::vector<std::shared_ptr<subscriber>> subscribers_;  // live
  struct catching_up {
    std::shared_ptr<subscriber> s;
    common::seq_t after;  // the last seq it was given
    bool fell_behind;     // (not a newcomer): a gap for it counts in gaps()
  };
  std::vector<catching_up> catching_up_;  // reading the replay buffer at their own pace
  std::uint64_t gaps_ = 0, holds_ = 0;
  net::steady_timer watchers_timer_;
  bool watchers_armed_ = false;
  std::size_t watchers_announced_ = 0;
  std::uint64_t watchers_sending_ = 0;  // the count being sent, slice by slice

  // Output is decoded to UTF-8 per stream and coalesced (coalescer.hpp).
  secret_masker maskers_[2];
  std::string masked_;  // scratch for the masked bytes of one read
  common::utf8_decoder decoders_[2];
  std::string pending_text_;
  std::int64_t pending_t_ = 0;  // when the first bytes of pending_text_ were read
  common::output_stream pending_stream_ = common::output_stream::out;
  coalescer coalescer_{16 * 1024, std::chrono::milliseconds(3)};
  net::steady_timer flush_timer_;
  bool flush_armed_ = false;
  std::uint64_t bytes_[2] = {0, 0};

  std::unique_ptr<common::progress_parser> progress_;
  std::chrono::steady_clock::time_point last_progress_{};
  bool progress_pending_ = false;
  net::steady_timer progress_timer_;

  // The audit store gets the record and output about once a second while the command runs,
  // and again a second later while some of it is not written yet.
  std::shared_ptr<output_audit> audit_;
  net::steady_timer audit_timer_;
  bool audit_armed_ = false;

  std::shared_ptr<event_relay> relay_;
  std::optional<common::execution_record> copy_of_;  // a copy: the owner's record

  std::shared_ptr<ssh::run_control> control_ = std::make_shared<ssh::run_control>();
  std::optional<common::exit_event> exit_;
};

/// A random version-4 UUID.
std::string random_uuid();

}  // namespace cmdcast::server
