#include "cluster/cluster_node.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <charconv>

#include "cluster/redis_client.hpp"
#include "cmdcast/common/codec.hpp"
#include "support/log.hpp"

namespace cmdcast::server::cluster {
namespace {

// An ended execution's stream and hash stay this long (later readers use the audit).
constexpr auto kept_after_exit_s = 600;
// A finished copy stays this long for late watchers, then goes (they then read the audit).
constexpr auto copy_kept = std::chrono::seconds(60);
// Entries per XRANGE or XREAD reply: 128 frames of at most 16 KiB, 2 MiB, well under a
// watcher's queue (8 MiB), so a copy's watchers take each reply live instead of falling back to
// catching up (in the bench, 300 watchers on a copy ran at 0.8-1.1x of 300 on the owner with
// 512 entries, 0.9-1.0x with 128).
constexpr std::size_t read_count = 128;

std::string out_key(const std::string& id) { return "cmdcast:x:" + id + ":out"; }
std::string meta_key(const std::string& id) { return "cmdcast:x:" + id + ":meta"; }
std::string control_channel(const std::string& id) { return "cmdcast:x:" + id + ":ctl"; }
// The owner's record changes, to the copies (apart from :ctl, whose receivers count as owners).
std::string record_channel(const std::string& id) { return "cmdcast:x:" + id + ":rec"; }
std::string lease_key(const std::string& server) { return "cmdcast:server:" + server; }
std::string batch_key(const std::string& id) { return "cmdcast:b:" + id + ":meta"; }
std::string batch_control_channel(const std::string& id) { return "cmdcast:b:" + id + ":ctl"; }

// Stream IDs are "SEQ-1": the seq is the ID's first part, and "0-0" (which Redis never
// stores) is the cursor before seq 0.
std::string entry_id(common::seq_t seq) { return std::to_string(seq) + "-1"; }
std::string cursor_after(common::seq_t seq) { return seq < 0 ? "0-0" : entry_id(seq); }

std::optional<common::seq_t> seq_of(const std::string& id) {
  common::seq_t seq = 0;
  const auto [end, ec] = std::from_chars(id.data(), id.data() + id.size(), seq);
  if (ec != std::errc() || end == id.data() + id.size() || *end != '-') return std::nullopt;
  return seq;
}

/// Takes an XRANGE or XREAD entry list ([[id, [field, value, ...]], ...]) into a copy; the
/// last seq taken, or nullopt.
void take_entries(execution& e, const redis_reply& entries) {
  for (const auto& entry : entries.elements) {
    if (entry.elements.size() != 2) continue;
    const auto seq = seq_of(entry.elements[0].str);
    if (!seq) continue;
    std::string frame_text;
    bool is_exit = false;
    const auto& fields = entry.elements[1].elements;
    for (std::size_t i = 0; i + 1 < fields.size(); i += 2) {
      if (fields[i].str == "f") frame_text = fields[i + 1].str;
      if (fields[i].str == "end") is_exit = true;
    }
    e.take(*seq, std::move(frame_text), is_exit);
  }
}

std::string random_epoch() { return random_uuid().substr(0, 8); }

}  // namespace

/// Listens to an owned fleet run: its record in Redis follows its counts, and expires once it
/// has ended.
class cluster_node::batch_writer : public batch_listener {
 public:
  batch_writer(cluster_node& node, std::shared_ptr<batch> b) : node_(node), batch_(std::move(b)) { batch_->listen(this); }
  ~batch_writer() override { batch_->unlisten(this); }
  void batch_changed(const frame&) override {
    node_.write_batch(*batch_);
    if (!batch_->finished()) return;
    // Not from inside the batch's own call: this writer goes with the entry.
    net::post(node_.executor_, [self = node_.shared_from_this(), id = batch_->id()] {
      self->owned_batches_.erase(id);
      if (self->control_) self->control_->unsubscribe(batch_control_channel(id));
    });
  }
  const std::shared_ptr<batch>& of() const { return batch_; }

 private:
  cluster_node& node_;
  std::shared_ptr<batch> batch_;
};

cluster_node::cluster_node(net::any_io_executor executor, cluster_settings settings, server_settings server)
    : executor_(executor),
      settings_(std::move(settings)),
      server_(std::move(server)),
      lease_timer_(executor),
      reader_wake_(executor) {}

cluster_node::~cluster_node() { stop(); }

void cluster_node::start() {
  net::co_spawn(executor_, [self = shared_from_this()] { return self->keep_connected(); }, net::detached);
  net::co_spawn(executor_, [self = shared_from_this()] { return self->read_copies(); }, net::detached);
}

void cluster_node::stop() {
  if (stopped_) return;
  stopped_ = true;
  lease_timer_.cancel();
  reader_wake_.cancel();
  // The lease goes now: copies elsewhere end this server's runs lost at once.
  for (auto* c : {&commands_, &reader_, &control_}) {
    if (*c) (*c)->close();
  }
}

std::size_t cluster_node::unsent_bytes() const {
  std::size_t n = 0;
  for (const auto* c : {&commands_, &reader_, &control_}) {
    if (*c) n += (*c)->unsent_bytes();
  }
  return n;
}

bool cluster_node::healthy() const { return commands_ && commands_->connected() && reader_ && reader_->connected(); }

net::awaitable<void> cluster_node::keep_connected() {
  auto self = shared_from_this();
  auto backoff = std::chrono::milliseconds(100);
  bool said_unreachable = false;
  while (!stopped_) {
    lost_ = false;
    std::string why = co_await connect_link(commands_);
    if (why.empty()) why = co_await connect_link(reader_);
    if (why.empty()) why = co_await connect_link(control_);
    if (!why.empty()) {
      if (!said_unreachable) log_event("cluster_redis_unreachable", {{"redis", settings_.redis}, {"why", why}});
      said_unreachable = true;
      lease_timer_.expires_after(backoff);
      boost::system::error_code ec;
      co_await lease_timer_.async_wait(net::redirect_error(net::use_awaitable, ec));
      backoff = std::min(backoff * 2, std::chrono::milliseconds(2000));
      continue;
    }
    said_unreachable = false;
    backoff = std::chrono::milliseconds(100);
    std::vector<std::string> client_id{"CLIENT", "ID"};
    const auto id_reply = co_await reader_->call(std::move(client_id));
    reader_client_id_ = id_reply.type == redis_reply::kind::integer ? id_reply.integer : -1;
    on_connected();
    wake_reader();
    // The lease, renewed three times in its time; a flushed Redis is noticed here too.
    while (!stopped_ && !lost_ && commands_->connected()) {
      commands_->command({"SET", lease_key(settings_.server_id), "1", "PX", std::to_string(settings_.lease.count())});
      for (const auto& [id, run] : owned_) {
        commands_->command({"EXISTS", meta_key(id)}, [this, id = id](const redis_reply& r) {
          if (r.type != redis_reply::kind::integer || r.integer != 0) return;
          const auto it = owned_.find(id);
          if (it == owned_.end()) return;
          if (auto e = it->second.e.lock()) reseed(e);
        });
      }
      drop_finished_copies();
      lease_timer_.expires_after(settings_.lease / 3);
      boost::system::error_code ec;
      co_await lease_timer_.async_wait(net::redirect_error(net::use_awaitable, ec));
    }
  }
}

net::awaitable<std::string> cluster_node::connect_link(std::shared_ptr<redis_connection>& link) {
  // A copy may be max_lag_bytes behind; more than that waiting to be written means Redis is
  // not reading, and the link is dropped rather than grown (written back on reconnecting).
  if (!link) link = redis_connection::create(executor_, settings_.redis, std::max(server_.max_lag_bytes, server_.replay_bytes));
  if (link->connected()) co_return "";
  link->on_lost = [this](const std::string& why) {
    ++disconnects_;
    if (!lost_) log_event("cluster_redis_lost", {{"redis", settings_.redis}, {"why", why}});
    lost_ = true;
    lease_timer_.cancel();
  };
  co_return co_await link->connect();
}

void cluster_node::on_connected() {
  log_event("cluster_connected", {{"redis", settings_.redis}, {"server_id", settings_.server_id}});
  commands_->command({"SET", lease_key(settings_.server_id), "1", "PX", std::to_string(settings_.lease.count())});
  // Redis may have restarted: every run held here is written back from its replay buffer.
  for (auto it = owned_.begin(); it != owned_.end();) {
    auto e = it->second.e.lock();
    if (!e) {
      it = owned_.erase(it);
      continue;
    }
    listen_control(control_channel(e->id()), e->id(), &cluster_node::on_control);
    reseed(e);
    ++it;
  }
  for (const auto& [id, c] : copies_) {
    if (!c.e->finished()) follow_record(id);
  }
  // The fleet runs held here, written back and listened for.
  std::vector<std::shared_ptr<batch>> batches;
  for (const auto& [id, writer] : owned_batches_) batches.push_back(writer->of());
  for (const auto& b : batches) adopt_batch(b);
}

void cluster_node::reseed(const std::shared_ptr<execution>& e) {
  if (!commands_ || !commands_->connected()) return;
  const std::string id = e->id();
  auto& run = owned_[id];
  run.epoch = random_epoch();
  log_event("cluster_reseed", {{"execution_id", id}, {"epoch", run.epoch}});
  commands_->command({"DEL", out_key(id)});
  // Only the replay buffer is left to write back: a copy further behind gets a gap.
  run.window.clear();
  run.window_bytes = 0;
  e->for_each_held([&](common::seq_t seq, const frame& f) {
    commands_->command({"XADD", out_key(id), entry_id(seq), "f", *f->text()});
    run.window.emplace_back(seq, f->size());
    run.window_bytes += f->size();
  });
  write_meta(*e);
}

void cluster_node::listen_control(const std::string& channel, const std::string& id, control_handler cluster_node::*to) {
  if (!control_ || !control_->connected()) return;
  control_->subscribe({"SUBSCRIBE", channel}, [this, id, to](const redis_reply& r) {
    // ["message", channel, "<verb> <user>"]
    if (r.elements.size() != 3 || r.elements[0].str != "message" || !(this->*to)) return;
    const std::string& text = r.elements[2].str;
    const auto space = text.find(' ');
    if (space != std::string::npos) (this->*to)(id, text.substr(0, space), text.substr(space + 1));
  });
}

void cluster_node::follow_record(const std::string& id) {
  if (!control_ || !control_->connected()) return;
  control_->subscribe({"SUBSCRIBE", record_channel(id)}, [this, id](const redis_reply& r) {
    // ["message", channel, "<record JSON>\n<pending event JSON or nothing>"]
    if (r.elements.size() != 3 || r.elements[0].str != "message") return;
    const auto it = copies_.find(id);
    if (it == copies_.end()) return;
    const std::string& text = r.elements[2].str;
    const auto newline = text.find('\n');
    auto decoded = common::decode_execution_record(text.substr(0, newline));
    if (!decoded) return;
    it->second.e->take_record(std::move(*decoded), newline == std::string::npos ? "" : text.substr(newline + 1));
  });
  // What changed while it was not followed (a copy just made, a Redis reconnected).
  commands_->command({"HMGET", meta_key(id), "record", "pending"}, [this, id](const redis_reply& r) {
    const auto it = copies_.find(id);
    if (it == copies_.end() || r.elements.size() != 2 || r.elements[0].type != redis_reply::kind::string) return;
    auto decoded = common::decode_execution_record(r.elements[0].str);
    if (decoded) it->second.e->take_record(std::move(*decoded), r.elements[1].str);
  });
}

void cluster_node::adopt_batch(const std::shared_ptr<batch>& b) {
  owned_batches_[b->id()] = std::make_shared<batch_writer>(*this, b);
  write_batch(*b);
  listen_control(batch_control_channel(b->id()), b->id(), &cluster_node::on_batch_control);
}

void cluster_node::write_batch(const batch& b) {
  if (!commands_ || !commands_->connected()) return;
  commands_->command({"HSET", batch_key(b.id()), "record", common::encode(b.record()), "owner", settings_.server_id});
  if (b.finished()) commands_->command({"EXPIRE", batch_key(b.id()), std::to_string(kept_after_exit_s)});
}

net::awaitable<std::shared_ptr<batch>> cluster_node::batch_copy_of(std::string id) {
  if (const auto it = batch_copies_.find(id); it != batch_copies_.end()) co_return it->second.b;
  if (!commands_ || !commands_->connected()) co_return nullptr;
  std::vector<std::string> get_record{"HGET", batch_key(id), "record"};
  const auto stored = co_await commands_->call(std::move(get_record));
  if (stored.type != redis_reply::kind::string) co_return nullptr;
  auto record = common::decode_batch_record(stored.str);
  if (!record) co_return nullptr;
  std::vector<batch::member> members;
  for (const auto& m : record->executions) {
    auto e = co_await copy_of(m.execution_id);
    if (!e) co_return nullptr;  // its streams are gone: the audit serves the fleet run
    members.push_back({m.machine_id, std::move(e), true});
  }
  if (const auto it = batch_copies_.find(id); it != batch_copies_.end()) co_return it->second.b;  // made meanwhile
  auto b = std::make_shared<batch>(executor_, *record, std::move(members));
  for (auto& m : b->members()) {
    m.e->on_copy_changed = [weak = std::weak_ptr<batch>(b)] {
      if (auto held = weak.lock()) held->changed();
    };
  }
  batch_copies_[id] = batch_copy{b, {}};
  co_return b;
}

net::awaitable<void> cluster_node::cancel_batch(std::shared_ptr<batch> b, std::string user) {
  if (!commands_ || !commands_->connected()) co_return;
  std::vector<std::string> publish{"PUBLISH", batch_control_channel(b->id()), "cancel " + user};
  const auto sent = co_await commands_->call(std::move(publish));
  if (sent.type == redis_reply::kind::integer && sent.integer > 0) co_return;
  // Nobody holds it now: each execution is asked on its own (an owner gone ends it lost).
  for (const auto& m : b->members()) {
    if (!m.e->finished()) co_await send_control(m.e->id(), "cancel", user);
  }
}

void cluster_node::adopt(const std::shared_ptr<execution>& e) {
  e->relay_to(shared_from_this());
  owned_[e->id()] = owned_run{e, random_epoch(), {}, 0, 0};
  listen_control(control_channel(e->id()), e->id(), &cluster_node::on_control);
  write_meta(*e);
}

void cluster_node::write_meta(const execution& e) {
  if (!commands_ || !commands_->connected()) return;
  const auto r = e.record();
  const std::string id = e.id();
  const auto run = owned_.find(id);
  const std::string record_json = common::encode(r);
  const std::string pending = e.pending() == pending_state::none ? "" : *e.pending_frame()->text();
  commands_->command({"HSET", meta_key(id), "record", record_json, "state", r.state, "owner", settings_.server_id, "epoch",
                      run == owned_.end() ? "" : run->second.epoch, "last_seq", std::to_string(e.last_seq()), "pending",
                      pending});
  commands_->command({"PUBLISH", record_channel(id), record_json + "\n" + pending});
  if (!e.finished()) return;
  for (const auto& key : {meta_key(id), out_key(id)}) {
    commands_->command({"EXPIRE", key, std::to_string(kept_after_exit_s)});
  }
}

void cluster_node::append(const execution& e, common::seq_t seq, const frame& f, common::seq_t oldest_held, bool is_exit) {
  if (!commands_ || !commands_->connected()) return;  // written back from the replay buffer on reconnecting
  const auto it = owned_.find(e.id());
  if (it == owned_.end()) return;
  auto& run = it->second;
  run.replay_front = oldest_held;
  run.window.emplace_back(seq, f->size());
  run.window_bytes += f->size();
  const std::size_t keep = std::max(server_.max_lag_bytes, server_.replay_bytes);
  while (run.window.size() > 1 && run.window_bytes > keep) {
    run.window_bytes -= run.window.front().second;
    run.window.pop_front();
  }
  std::vector<std::string> args{"XADD", out_key(e.id()), "MINID", "~", std::to_string(run.window.front().first) + "-0",
                                entry_id(seq), "f", *f->text()};
  if (is_exit) {
    args.emplace_back("end");
    args.emplace_back("1");
  }
  commands_->command(std::move(args));
}

void cluster_node::record_changed(const execution& e) {
  write_meta(e);
  if (!e.finished()) return;
  const auto it = owned_.find(e.id());
  if (it == owned_.end()) return;
  // A minute on, what the copies needed to catch up is theirs: the stream keeps what the replay
  // buffer does, until it expires.
  auto trim = std::make_shared<net::steady_timer>(executor_, copy_kept);
  trim->async_wait([self = shared_from_this(), trim, key = out_key(e.id()),
                    front = std::to_string(it->second.replay_front) + "-0"](boost::system::error_code ec) {
    if (!ec && self->commands_ && self->commands_->connected()) self->commands_->command({"XTRIM", key, "MINID", "~", front});
  });
  owned_.erase(it);
  if (control_) control_->unsubscribe(control_channel(e.id()));
}

net::awaitable<void> cluster_node::written() {
  if (!commands_ || !commands_->connected()) co_return;
  std::vector<std::string> ping{"PING"};
  co_await commands_->call(std::move(ping));  // answered after every command sent before it
}

net::awaitable<bool> cluster_node::owner_alive(const std::string& owner) {
  if (owner == settings_.server_id && !stopped_) co_return true;
  std::vector<std::string> lease_exists{"EXISTS", lease_key(owner)};
  const auto r = co_await commands_->call(std::move(lease_exists));
  co_return r.is_error() || r.integer != 0;  // in doubt (Redis unreachable), alive
}

net::awaitable<std::optional<common::execution_record>> cluster_node::record(std::string id) {
  if (!commands_ || !commands_->connected()) co_return std::nullopt;
  std::vector<std::string> get_record{"HGET", meta_key(id), "record"};
  const auto r = co_await commands_->call(std::move(get_record));
  if (r.type != redis_reply::kind::string) co_return std::nullopt;
  auto decoded = common::decode_execution_record(r.str);
  if (!decoded) co_return std::nullopt;
  co_return std::move(*decoded);
}

std::shared_ptr<execution> cluster_node::find_copy(const std::string& id) const {
  const auto it = copies_.find(id);
  return it == copies_.end() ? nullptr : it->second.e;
}

void cluster_node::end_lost(const std::string& id, copy& c) {
  log_event("cluster_owner_gone", {{"execution_id", id}, {"owner", c.owner}});
  c.e->end_copy_lost();
  if (!commands_ || !commands_->connected()) return;
  c.e->for_each_held([&](common::seq_t seq, const frame& f) {
    if (seq == c.e->last_seq()) commands_->command({"XADD", out_key(id), "NOMKSTREAM", entry_id(seq), "f", *f->text(), "end", "1"});
  });
  const auto r = c.e->record();
  commands_->command({"HSET", meta_key(id), "record", common::encode(r), "state", r.state});
  for (const auto& key : {meta_key(id), out_key(id)}) commands_->command({"EXPIRE", key, std::to_string(kept_after_exit_s)});
}

net::awaitable<std::shared_ptr<execution>> cluster_node::copy_of(std::string id) {
  if (const auto it = copies_.find(id); it != copies_.end()) co_return it->second.e;
  if (!commands_ || !commands_->connected()) co_return nullptr;
  std::vector<std::string> get_meta{"HMGET", meta_key(id), "record", "owner", "pending"};
  const auto meta = co_await commands_->call(std::move(get_meta));
  if (meta.elements.size() != 3 || meta.elements[0].type != redis_reply::kind::string) co_return nullptr;
  auto record = common::decode_execution_record(meta.elements[0].str);
  if (!record) co_return nullptr;
  const bool ended = common::parse_exit_state(record->state).has_value();
  auto e = std::make_shared<execution>(executor_, *record, server_);
  e->take_record(std::move(*record), meta.elements[2].str);  // a waiting run's position or expiry
  // What the stream holds now, then (below) what comes: the reader continues from here.
  std::string from = "-";
  for (;;) {
    std::vector<std::string> next_page{"XRANGE", out_key(id), from, "+", "COUNT", std::to_string(read_count)};
    const auto page = co_await commands_->call(std::move(next_page));
    if (page.type != redis_reply::kind::array || page.elements.empty()) break;
    take_entries(*e, page);
    from = "(" + page.elements.back().elements[0].str;
    if (page.elements.size() < read_count) break;
  }
  // Ended, and its stream gone: its output is the audit's to serve.
  if (ended && !e->finished()) co_return nullptr;
  // Another watcher may have made the copy meanwhile: there is one per server.
  if (const auto it = copies_.find(id); it != copies_.end()) co_return it->second.e;
  // (A copy of a run whose owner is gone ends lost at the reader's next lease checks.)
  copies_[id] = copy{e, meta.elements[1].str, {}, 0};
  if (!e->finished()) follow_record(id);
  wake_reader();
  co_return e;
}

net::awaitable<cluster_node::control_outcome> cluster_node::send_control(std::string id, std::string verb,
                                                                          std::string user) {
  if (!commands_ || !commands_->connected()) co_return control_outcome::unknown;
  std::vector<std::string> get_owner{"HGET", meta_key(id), "owner"};
  const auto owner = co_await commands_->call(std::move(get_owner));
  if (owner.type != redis_reply::kind::string) co_return control_outcome::unknown;
  std::vector<std::string> publish{"PUBLISH", control_channel(id), verb + " " + user};
  const auto sent = co_await commands_->call(std::move(publish));
  if (sent.type == redis_reply::kind::integer && sent.integer > 0) co_return control_outcome::sent;
  if (!co_await owner_alive(owner.str)) {
    if (const auto it = copies_.find(id); it != copies_.end() && !it->second.e->finished()) end_lost(id, it->second);
    co_return control_outcome::owner_gone;
  }
  co_return control_outcome::sent;  // the owner lives but no longer listens: it has ended it
}

void cluster_node::wake_reader() {
  reader_wake_.cancel();
  if (reader_blocked_ && reader_client_id_ >= 0 && commands_ && commands_->connected()) {
    commands_->command({"CLIENT", "UNBLOCK", std::to_string(reader_client_id_)});
  }
}

void cluster_node::drop_finished_copies() {
  const auto now = std::chrono::steady_clock::now();
  for (auto it = copies_.begin(); it != copies_.end();) {
    auto& c = it->second;
    if (c.e->finished() && c.ended == std::chrono::steady_clock::time_point{}) c.ended = now;
    if (c.e->finished() && now - c.ended > copy_kept && c.e->watchers() == 0) {
      if (control_) control_->unsubscribe(record_channel(it->first));
      it = copies_.erase(it);
    } else {
      ++it;
    }
  }
  for (auto it = batch_copies_.begin(); it != batch_copies_.end();) {
    auto& c = it->second;
    if (c.b->finished() && c.ended == std::chrono::steady_clock::time_point{}) c.ended = now;
    if (c.b->finished() && now - c.ended > copy_kept) {
      it = batch_copies_.erase(it);  // a stream still on it holds it
    } else {
      ++it;
    }
  }
}

net::awaitable<void> cluster_node::read_copies() {
  auto self = shared_from_this();
  auto last_lease_check = std::chrono::steady_clock::now();
  while (!stopped_) {
    std::vector<std::string> args{"XREAD", "COUNT", std::to_string(read_count), "BLOCK", "1000", "STREAMS"};
    std::vector<std::string> ids;
    for (const auto& [id, c] : copies_) {
      if (!c.e->finished()) ids.push_back(id);
    }
    if (ids.empty() || !reader_ || !reader_->connected()) {
      reader_wake_.expires_after(std::chrono::milliseconds(ids.empty() ? 1000 : 100));
      boost::system::error_code ec;
      co_await reader_wake_.async_wait(net::redirect_error(net::use_awaitable, ec));
      continue;
    }
    for (const auto& id : ids) args.push_back(out_key(id));
    for (const auto& id : ids) args.push_back(cursor_after(copies_[id].e->last_seq()));
    reader_blocked_ = true;
    const auto reply = co_await reader_->call(std::move(args));
    reader_blocked_ = false;
    if (reply.type == redis_reply::kind::array) {
      for (const auto& stream : reply.elements) {
        if (stream.elements.size() != 2) continue;
        const std::string& key = stream.elements[0].str;  // cmdcast:x:{ID}:out
        const std::string id = key.substr(10, key.size() - 14);
        const auto it = copies_.find(id);
        if (it != copies_.end()) take_entries(*it->second.e, stream.elements[1]);
      }
    }
    // A copy whose owner's lease is gone will get no more: it ends lost. Gone twice in a row,
    // half a lease apart: a Redis just restarted or flushed has no leases until the owners
    // renew theirs, within a third of a lease.
    const auto now = std::chrono::steady_clock::now();
    if (now - last_lease_check < settings_.lease / 2) continue;
    last_lease_check = now;
    std::map<std::string, bool> alive;
    std::vector<std::string> owners;
    for (const auto& [id, c] : copies_) {
      if (!c.e->finished() && !alive.contains(c.owner)) {
        alive[c.owner] = true;
        owners.push_back(c.owner);
      }
    }
    for (const auto& owner : owners) alive[owner] = co_await owner_alive(owner);
    for (auto& [id, c] : copies_) {
      if (c.e->finished()) continue;
      c.lease_misses = alive[c.owner] ? 0 : c.lease_misses + 1;
      if (c.lease_misses >= 2) end_lost(id, c);
    }
  }
}

}  // namespace cmdcast::server::cluster
