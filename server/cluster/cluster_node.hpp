// This server as one of several sharing every execution through Redis (docs/cluster.md).
//
// Owner: the server that holds an execution's SSH channel appends each of its events to the
// stream cmdcast:x:{ID}:out with the ID "SEQ-0" (Redis refuses a retried append as not
// greater, so nothing is doubled), trimmed with MINID to what its replay buffer holds. The
// hash cmdcast:x:{ID}:meta has the record, the owner, the stream's epoch and state; both
// expire a while after the exit. The owner renews its lease cmdcast:server:{SERVER_ID}
// (SET PX), and listens on cmdcast:x:{ID}:ctl for a cancel.
//
// Any other server: a watcher of an execution it does not hold gets a copy (execution's copy
// mode), filled from XRANGE, then kept current by one XREAD BLOCK loop over every copy this
// server has: one Redis cursor per execution, however many watchers. A copy whose owner's
// lease is gone ends `lost`.
//
// Redis lost, restarted or flushed: commands fail fast and the local streams go on; on
// reconnecting, the owner writes its runs back from its replay buffers under a new epoch, and
// a copy either carries on at the same seq or puts a gap in its stream.
// Used on the server's thread only.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/steady_timer.hpp>

#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>

#include "config/config.hpp"
#include "exec/batch.hpp"
#include "exec/execution.hpp"

namespace cmdcast::server::cluster {

class redis_connection;
struct redis_reply;

class cluster_node : public event_relay, public std::enable_shared_from_this<cluster_node> {
 public:
  cluster_node(net::any_io_executor executor, cluster_settings settings, server_settings server);
  ~cluster_node() override;

  /// Connects and starts the lease, control and reader loops (reconnecting as needed).
  void start();
  void stop();
  /// Connected to Redis now.
  bool healthy() const;
  const std::string& server_id() const { return settings_.server_id; }

  /// An execution this server runs: its events and record go to Redis from now on.
  void adopt(const std::shared_ptr<execution>& e);
  /// Once Redis has what this server sent so far (a new run's record): a 202 answered after
  /// it lets the client watch the run through any server at once.
  net::awaitable<void> written();
  /// A request from another server for an execution this server holds ("cancel", "approve"
  /// or "reject", by `user`): the owner acts, and the events or the record it then sends say
  /// what became of it.
  using control_handler = std::function<void(const std::string& id, const std::string& verb, const std::string& user)>;
  control_handler on_control;

  /// A fleet run this server runs: its record goes to Redis, where any server finds it.
  void adopt_batch(const std::shared_ptr<batch>& b);
  /// A request from another server for a fleet run this server holds ("cancel", by `user`).
  control_handler on_batch_control;
  /// A copy of fleet run `id`, held by another server, its members copies of its executions;
  /// null when Redis knows none (or no longer has its executions' streams).
  net::awaitable<std::shared_ptr<batch>> batch_copy_of(std::string id);
  /// Asks the owner of fleet run `b` (a copy) to cancel it; its members are cancelled one by
  /// one (or end lost) when the owner is gone.
  net::awaitable<void> cancel_batch(std::shared_ptr<batch> b, std::string user);

  /// The copy of `id` this server already has, if any (no Redis round trip).
  std::shared_ptr<execution> find_copy(const std::string& id) const;
  /// A copy of execution `id`, held by another server; null when Redis knows none.
  net::awaitable<std::shared_ptr<execution>> copy_of(std::string id);
  /// What Redis knows of execution `id`'s record.
  net::awaitable<std::optional<common::execution_record>> record(std::string id);
  enum class control_outcome { sent, owner_gone, unknown };
  /// Asks the owner of `id` to `verb` it ("cancel", "approve", "reject"): `owner_gone` when
  /// nobody listens and its lease has expired (this server's copy then ends it lost, for every
  /// server).
  net::awaitable<control_outcome> send_control(std::string id, std::string verb, std::string user);

  // event_relay
  void append(const execution& e, common::seq_t seq, const frame& f, common::seq_t oldest_held, bool is_exit) override;
  void record_changed(const execution& e) override;

  /// For /metrics: copies held now; bytes of commands not yet written to Redis (bounded: see
  /// redis_connection); connections to Redis lost so far.
  std::size_t copies() const { return copies_.size(); }
  std::size_t unsent_bytes() const;
  std::uint64_t disconnects() const { return disconnects_; }

 private:
  net::awaitable<void> keep_connected();
  /// Connects one of the three links (or finds it connected); an empty string, or why not.
  net::awaitable<std::string> connect_link(std::shared_ptr<redis_connection>& link);
  net::awaitable<void> read_copies();
  void on_connected();
  void write_meta(const execution& e);
  void reseed(const std::shared_ptr<execution>& e);
  /// Subscribes to `channel`, whose messages "<verb> <user>" about `id` go to this->*to.
  void listen_control(const std::string& channel, const std::string& id, control_handler cluster_node::*to);
  /// A copy follows its owner's record changes (published with each, see write_meta).
  void follow_record(const std::string& id);
  /// Wakes the reader from its XREAD BLOCK: the set of copies changed.
  void wake_reader();
  net::awaitable<bool> owner_alive(const std::string& owner);
  void drop_finished_copies();

  net::any_io_executor executor_;
  cluster_settings settings_;
  server_settings server_;
  std::shared_ptr<redis_connection> commands_, reader_, control_;
  std::int64_t reader_client_id_ = -1;
  bool reader_blocked_ = false;
  bool stopped_ = false;
  bool lost_ = false;  // a link went down: reconnect
  std::uint64_t disconnects_ = 0;
  net::steady_timer lease_timer_, reader_wake_;
  /// A run held here, as its stream in Redis stands.
  struct owned_run {
    std::weak_ptr<execution> e;
    std::string epoch;
    // What the stream keeps: the newest events up to max_lag_bytes (a copy elsewhere may be
    // that far behind, as a local watcher may), by seq and size.
    std::deque<std::pair<common::seq_t, std::size_t>> window;
    std::size_t window_bytes = 0;
    common::seq_t replay_front = 0;  // the oldest seq the replay buffer held at the last append
  };
  std::map<std::string, owned_run> owned_;  // running (or waiting) here, by id
  struct copy {
    std::shared_ptr<execution> e;
    std::string owner;
    std::chrono::steady_clock::time_point ended{};
    int lease_misses = 0;  // checks in a row that found its owner's lease gone
  };
  /// Ends a copy whose owner is gone, for every server: the lost exit goes into its stream
  /// (refused if the owner wrote that seq after all) and its record says lost.
  void end_lost(const std::string& id, copy& c);
  std::map<std::string, copy> copies_;  // by id
  class batch_writer;  // writes an owned fleet run's record as its counts change
  void write_batch(const batch& b);
  std::map<std::string, std::shared_ptr<batch_writer>> owned_batches_;  // by id
  struct batch_copy {
    std::shared_ptr<batch> b;
    std::chrono::steady_clock::time_point ended{};
  };
  std::map<std::string, batch_copy> batch_copies_;  // by id
};

}  // namespace cmdcast::server::cluster
