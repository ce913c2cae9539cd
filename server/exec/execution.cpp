#include "exec/execution.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/post.hpp>

#include <algorithm>
#include <cstdio>
#include <random>

#include "cmdcast/common/codec.hpp"
#include "support/log.hpp"
#include "support/send_batch.hpp"

namespace cmdcast::server {
namespace {

constexpr auto progress_interval = std::chrono::milliseconds(100);
constexpr auto audit_interval = std::chrono::seconds(1);
// The watcher count goes out at most once per 100 ms per 1,000 watchers (up to 1 s), and to
// 1,000 watchers per turn of the loop: telling 10,000 costs 60-90 ms, which would otherwise
// hold up everything else at once, and as often as every 100 ms while they join.
constexpr auto watchers_settle = std::chrono::milliseconds(100);
constexpr std::size_t watchers_slice = 1000;

std::chrono::milliseconds watchers_settle_for(std::size_t watchers) {
  return watchers_settle * static_cast<long>(std::clamp<std::size_t>(watchers / watchers_slice, 1, 10));
}

}  // namespace

std::string random_uuid() {
  static std::random_device rd;
  static std::mt19937_64 rng(rd());
  std::uint64_t a = rng(), b = rng();
  a = (a & 0xFFFFFFFFFFFF0FFFull) | 0x0000000000004000ull;  // version 4
  b = (b & 0x3FFFFFFFFFFFFFFFull) | 0x8000000000000000ull;  // variant 1
  char buf[40];
  std::snprintf(buf, sizeof buf, "%08x-%04x-%04x-%04x-%012llx", static_cast<unsigned>(a >> 32),
                static_cast<unsigned>((a >> 16) & 0xFFFF), static_cast<unsigned>(a & 0xFFFF),
                static_cast<unsigned>(b >> 48), static_cast<unsigned long long>(b & 0xFFFFFFFFFFFFull));
  return buf;
}

execution::execution(net::any_io_executor executor, std::string id, const resolved_command& r, std::string user,
                     const server_settings& settings, audit_store* audit)
    : executor_(executor),
      id_(std::move(id)),
      machine_id_(r.machine->id),
      action_type_(r.action->name),
      command_(r.shown_command),
      run_line_(r.run_line),
      params_(r.shown_params),
      user_(std::move(user)),
      settings_(settings),
      timeout_(r.action->timeout),
      started_at_(rfc3339_now()),
      started_(std::chrono::steady_clock::now()),
      watchers_timer_(executor),
      maskers_{secret_masker(r.secret_values), secret_masker(r.secret_values)},
      flush_timer_(executor),
      progress_timer_(executor),
      audit_timer_(executor) {
  if (r.action->progress) progress_ = common::make_progress_parser(*r.action->progress);
  if (audit) audit_ = std::make_shared<output_audit>(*audit, executor, settings.audit_head_bytes, settings.audit_tail_bytes);
}

execution::execution(net::any_io_executor executor, common::execution_record record, const server_settings& settings)
    : executor_(executor),
      id_(record.execution_id),
      machine_id_(record.machine_id),
      action_type_(record.action_type),
      command_(record.command),
      params_(record.params),
      user_(record.user),
      launched_(record.state != "queued" && record.state != "awaiting_approval"),
      settings_(settings),
      started_at_(record.started_at),
      started_(std::chrono::steady_clock::now()),
      watchers_timer_(executor),
      maskers_{secret_masker({}), secret_masker({})},  // the owner masked the output
      flush_timer_(executor),
      progress_timer_(executor),
      audit_timer_(executor),
      copy_of_(std::move(record)) {
  if (copy_of_->state == "queued") pending_ = pending_state::queued;
  if (copy_of_->state == "awaiting_approval") pending_ = pending_state::awaiting_approval;
}

void execution::take(common::seq_t seq, std::string json, bool is_exit) {
  if (finished() || seq < next_seq_) return;
  if (replay_.empty() && next_seq_ == 0) next_seq_ = seq;  // a copy begins where the stream does
  if (seq > next_seq_) {
    common::gap_event gap{seq - 1, next_seq_, seq - 1};
    next_seq_ = seq;
    hold_and_publish(gap.seq, make_frame(common::encode(common::event{gap})), false);
  }
  next_seq_ = seq + 1;
  if (is_exit) {
    if (auto e = common::decode_event(json)) {
      if (const auto* x = std::get_if<common::exit_event>(&*e)) {
        exit_ = *x;
        ended_at_ = rfc3339_now();
      }
    }
    if (!exit_) exit_ = common::exit_event{};
  }
  const bool changed = is_exit || (!launched_ && !is_exit);
  if (!launched_ && !is_exit) {
    launched_ = true;
    pending_ = pending_state::none;
  }
  hold_and_publish(seq, make_frame(std::move(json)), is_exit);
  if (is_exit) {
    auto subscribers = std::move(subscribers_);
    subscribers_.clear();
    for (auto& s : subscribers) s->ended();
  }
  if (changed && on_copy_changed) on_copy_changed();
}

void execution::take_record(common::execution_record r, const std::string& pending_event) {
  if (!copy_of_ || finished()) return;
  // The state follows the events taken: a record that says it ended before its exit came
  // through the stream does not end the copy early.
  if (common::parse_exit_state(r.state) || launched_) {
    r.state = copy_of_->state == "queued" || copy_of_->state == "awaiting_approval" ? "running" : copy_of_->state;
    r.exit_code.reset();
    r.signal.reset();
    r.ended_at.reset();
  }
  const auto before = pending_ == pending_state::none ? std::string() : *pending_frame()->text();
  pending_ = launched_                         ? pending_state::none
             : r.state == "queued"             ? pending_state::queued
             : r.state == "awaiting_approval"  ? pending_state::awaiting_approval
                                               : pending_state::none;
  copy_of_ = std::move(r);
  if (pending_ != pending_state::none) {
    if (const auto e = common::decode_event(pending_event)) {
      if (const auto* q = std::get_if<common::queued_event>(&*e)) queue_position_ = q->position;
      if (const auto* a = std::get_if<common::awaiting_approval_event>(&*e)) approval_expires_at_ = a->expires_at;
    }
    if (*pending_frame()->text() != before) publish(pending_frame(), -1);
  }
  if (on_copy_changed) on_copy_changed();
}

void execution::end_copy_lost() {
  if (finished()) return;
  common::exit_event e;
  e.state = common::exit_state::lost;
  e.seq = next_seq_;
  take(next_seq_, common::encode(common::event{e}), true);
}

void execution::for_each_held(const std::function<void(common::seq_t, const frame&)>& fn) const {
  for (const auto& h : replay_) fn(h.seq, h.data);
}

void execution::start(std::shared_ptr<ssh::machine_connection> connection, std::function<void()> on_end) {
  launched_ = true;
  pending_ = pending_state::none;
  // Its time counts from here: waiting in a queue or for an approval is not part of the run.
  started_at_ = rfc3339_now();
  started_ = std::chrono::steady_clock::now();
  emit(common::started_event{0, id_, machine_id_, action_type_, command_, started_at_});
  flush_audit();  // the record exists from the start
  if (relay_) relay_->record_changed(*this);
  ssh::run_options options;
  options.timeout = timeout_;
  options.kill_grace = settings_.kill_grace;
  net::co_spawn(
      executor_,
      [self = shared_from_this(), connection, options, line = std::exchange(run_line_, std::string()),
       on_end = std::move(on_end)]() -> net::awaitable<void> {
        // A named handler, not a lambda temporary in the co_await: GCC 12 destroys such a
        // temporary twice, which here released `self` once too often.
        const ssh::output_handler handler = [self](common::output_stream s, std::string_view data) {
          self->on_output(s, data);
        };
        const auto result = co_await connection->run(line, handler, self->control_, options);
        self->finish(result);
        if (on_end) on_end();
      },
      net::detached);
}

void execution::cancel() {
  if (!finished()) control_->cancel();
}

frame execution::pending_frame() const {
  if (pending_ == pending_state::queued) return make_frame(common::encode(common::event{common::queued_event{queue_position_}}));
  return make_frame(common::encode(common::event{common::awaiting_approval_event{user_, approval_expires_at_}}));
}

void execution::set_queued(std::int64_t position) {
  if (pending_ == pending_state::queued && queue_position_ == position) return;
  const bool state_changed = pending_ != pending_state::queued;
  pending_ = pending_state::queued;
  queue_position_ = position;
  if (state_changed) {
    flush_audit_record();
  } else if (relay_) {
    relay_->record_changed(*this);  // copies on other servers show the new position
  }
  publish(pending_frame(), -1);
}

void execution::set_awaiting_approval(std::string expires_at) {
  pending_ = pending_state::awaiting_approval;
  approval_expires_at_ = std::move(expires_at);
  flush_audit_record();
  publish(pending_frame(), -1);
}

void execution::set_decided_by(const std::string& user) {
  decided_by_ = user;
  decided_at_ = rfc3339_now();
}

void execution::end_unstarted(common::exit_state state, std::string why) {
  if (finished()) return;
  pending_ = pending_state::none;
  run_line_.clear();
  emit(common::output_event{0, common::output_stream::err, "cmdcast: " + why + "\n", 0});
  common::exit_event e;
  e.state = state;
  conclude(e);
}

std::optional<double> execution::progress() const {
  return progress_ ? progress_->current().percent : std::nullopt;
}

std::int64_t execution::elapsed_ms() const {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - started_).count();
}

void execution::on_output(common::output_stream stream, std::string_view bytes) {
  const auto index = static_cast<std::size_t>(stream);
  bytes_[index] += bytes.size();
  if (maskers_[index].active()) {
    masked_.clear();
    maskers_[index].feed(bytes, masked_);
    bytes = masked_;
  }
  if (stream != pending_stream_ && !pending_text_.empty()) flush_output();
  pending_stream_ = stream;
  const std::size_t before = pending_text_.size();
  if (before == 0) pending_t_ = elapsed_ms();
  std::string_view text;  // what this read adds, decoded
  bool sent = false;
  if (before == 0 && decoders_[index].decode_unchanged(bytes, text)) {
    // Nothing waits and the bytes are their own text: when due at once, it goes out from the
    // read itself, copied only into its frame (a fast stream's reads are up to 1 MiB each).
    if (text.empty()) return;
    const auto now = coalescer::clock::now();
    sent = coalescer_.send_now(text.size(), now);
    if (sent) {
      coalescer_.sent(now);
      emit_output(stream, text, pending_t_);
    } else {
      pending_text_.assign(text);
    }
  } else {
    decoders_[index].decode(bytes, pending_text_);
    text = std::string_view(pending_text_).substr(before);
  }
  if (progress_ && progress_->feed(text)) report_progress(false);
  if (sent || pending_text_.empty()) return;
  if (coalescer_.send_now(pending_text_.size(), coalescer::clock::now())) {
    flush_output();  // an armed timer then finds nothing waiting
  } else if (!flush_armed_) {
    flush_armed_ = true;
    flush_timer_.expires_at(coalescer_.send_at());
    flush_timer_.async_wait([self = shared_from_this()](boost::system::error_code) {
      self->flush_armed_ = false;
      self->flush_output();
    });
  }
}

void execution::flush_output() {
  if (pending_text_.empty()) return;
  coalescer_.sent(coalescer::clock::now());
  emit_output(pending_stream_, pending_text_, pending_t_);
  pending_text_.clear();  // (its room serves the next reads)
}

void execution::report_progress(bool force) {
  const auto now = std::chrono::steady_clock::now();
  if (!force && now - last_progress_ < progress_interval) {
    // At most about ten a second: the newest state goes out when the interval is over.
    if (!progress_pending_) {
      progress_pending_ = true;
      progress_timer_.expires_at(last_progress_ + progress_interval);
      progress_timer_.async_wait([self = shared_from_this()](boost::system::error_code ec) {
        if (ec || !self->progress_pending_) return;
        self->report_progress(true);
      });
    }
    return;
  }
  progress_pending_ = false;
  last_progress_ = now;
  flush_output();  // progress refers to output already sent
  const auto& p = progress_->current();
  emit(common::progress_event{0, p.percent, p.phase, elapsed_ms()});
}

void execution::finish(const ssh::run_result& r) {
  for (std::size_t i = 0; i < 2; ++i) {
    std::string rest;
    if (maskers_[i].active()) {
      // What was held as the possible start of a secret was not one.
      std::string tail;
      maskers_[i].finish(tail);
      decoders_[i].decode(tail, rest);
    }
    decoders_[i].finish(rest);  // an incomplete character at the very end becomes U+FFFD
    if (rest.empty()) continue;
    const auto stream = static_cast<common::output_stream>(i);
    if (stream != pending_stream_) flush_output();
    pending_stream_ = stream;
    pending_text_ += rest;
  }
  flush_timer_.cancel();
  watchers_timer_.cancel();
  flush_output();
  pending_text_.shrink_to_fit();
  if (r.error) {
    // The failure is output too: a watcher should read why the command did not run or end.
    std::string text = "cmdcast: " + r.error->message + "\n";
    emit(common::output_event{0, common::output_stream::err, std::move(text)});
  }
  if (progress_) {
    progress_pending_ = false;
    progress_timer_.cancel();
    const bool success = r.state == common::exit_state::exited && r.exit_code == 0;
    if (progress_->finish(success) || progress_->current().percent) report_progress(true);
  }
  common::exit_event e;
  e.code = r.exit_code;
  e.signal = r.signal;
  e.state = r.state;
  e.duration_ms = elapsed_ms();
  conclude(e);
}

void execution::conclude(common::exit_event e) {
  ended_at_ = rfc3339_now();
  exit_ = e;
  emit(e);
  audit_timer_.cancel();
  flush_audit();
  if (relay_) relay_->record_changed(*this);
  auto subscribers = std::move(subscribers_);
  subscribers_.clear();
  for (auto& s : subscribers) s->ended();
}

void execution::arm_audit() {
  if (audit_armed_ || finished()) return;
  audit_armed_ = true;
  audit_timer_.expires_after(audit_interval);
  audit_timer_.async_wait([self = shared_from_this()](boost::system::error_code ec) {
    self->audit_armed_ = false;
    if (ec || self->finished()) return;  // finish() makes the last flush
    self->flush_audit();
    if (self->audit_->dirty()) self->arm_audit();
  });
}

void execution::flush_audit() {
  if (audit_ && audit_->dirty()) audit_->flush(record(), finished());
}

void execution::flush_audit_record() {
  if (relay_) relay_->record_changed(*this);
  if (audit_) audit_->flush(record(), finished());
}

void execution::emit(common::event e) {
  const common::seq_t seq = next_seq_++;
  std::visit([seq](auto& ev) {
    if constexpr (requires { ev.seq; }) ev.seq = seq;
  }, e);
  const auto* output = std::get_if<common::output_event>(&e);
  audit_and_publish(seq, make_frame(common::encode(e)), output ? output->data.size() : 0,
                    std::holds_alternative<common::exit_event>(e));
}

void execution::emit_output(common::output_stream stream, std::string_view text, std::int64_t t) {
  const common::seq_t seq = next_seq_++;
  audit_and_publish(seq, make_frame(common::encode_output(stream, seq, text, t)), text.size(), false);
}

void execution::audit_and_publish(common::seq_t seq, const frame& f, std::size_t output_bytes, bool is_exit) {
  if (audit_) {
    audit_->add(seq, f->text(), output_bytes);
    arm_audit();
  }
  hold_and_publish(seq, f, is_exit);
}

void execution::hold_and_publish(common::seq_t seq, const frame& f, bool is_exit) {
  replay_.push_back({seq, f});
  replay_size_ += f->size();
  trim_replay();
  if (relay_) relay_->append(*this, seq, f, replay_.front().seq, is_exit);
  publish(f, seq);
}

void execution::trim_replay() {
  // The fastest watcher sets the pace; one reading at about the same speed may still be some
  // queues' worth behind it at times. What it needs is kept (frames are shared: this is the
  // one copy), up to max_lag_bytes: a watcher further behind than that gets a gap.
  common::seq_t needed = next_seq_;
  for (const auto& c : catching_up_) needed = std::min(needed, c.after + 1);
  while (replay_.size() > 1 && replay_size_ > settings_.replay_bytes) {
    if (replay_.front().seq >= needed && replay_size_ <= std::max(settings_.max_lag_bytes, settings_.replay_bytes)) break;
    replay_size_ -= replay_.front().data->size();
    replay_.pop_front();
  }
}

void execution::publish(const frame& f, common::seq_t seq) {
  const send_batch batch;  // the sends to subscribers with room are made together, at the end
  bool fell_back = false;
  for (auto& s : subscribers_) {
    if (s->push(f, seq) || seq < 0) continue;  // (a watchers count is only ever the newest)
    // No room: it takes the rest from the replay buffer when it has (feed()).
    catching_up_.push_back({std::move(s), seq - 1, true});
    catching_up_.back().s->wants_more();
    fell_back = true;
  }
  if (fell_back) {
    std::erase(subscribers_, nullptr);
    pace();
  }
}

void execution::pace() {
  const bool hold = subscribers_.empty() && !catching_up_.empty() && !finished();
  if (hold && !control_->held()) ++holds_;
  control_->hold(hold);
}

frame execution::watchers_frame() const {
  return make_frame(common::encode(common::event{common::watchers_event{static_cast<std::int64_t>(watchers())}}));
}

void execution::announce_watchers() {
  if (finished() || watchers_armed_) return;
  watchers_armed_ = true;
  watchers_timer_.expires_after(watchers_settle_for(watchers()));
  watchers_timer_.async_wait([self = shared_from_this()](boost::system::error_code) {
    self->watchers_armed_ = false;
    if (self->finished() || self->watchers() == self->watchers_announced_) return;
    self->watchers_announced_ = self->watchers();
    self->send_watchers(self->watchers_frame(), ++self->watchers_sending_, 0);
  });
}

void execution::send_watchers(const frame& f, std::uint64_t sending, std::size_t from) {
  // A newer count supersedes this one: the rest get that. (Between two slices the live list
  // may change: one that joined gets the count anyway, one that left changes it again.)
  if (sending != watchers_sending_ || finished()) return;
  const std::size_t end = std::min(subscribers_.size(), from + watchers_slice);
  {
    const send_batch batch;
    for (std::size_t i = from; i < end; ++i) subscribers_[i]->push(f, -1);
  }
  if (end < subscribers_.size()) {
    net::post(executor_, [self = shared_from_this(), f, sending, end] { self->send_watchers(f, sending, end); });
  }
}

bool execution::holds_after(common::seq_t after) const {
  return replay_.empty() ? after + 1 >= next_seq_ : replay_.front().seq <= after + 1;
}

bool execution::subscribe(const std::shared_ptr<subscriber>& s, common::seq_t after) {
  if (watchers() >= settings_.max_subscribers_per_execution) return false;
  catching_up_.push_back({s, after, false});
  announce_watchers();
  pace();
  feed(s.get());
  return true;
}

void execution::feed(subscriber* s) {
  const auto it = std::find_if(catching_up_.begin(), catching_up_.end(), [s](const auto& c) { return c.s.get() == s; });
  if (it == catching_up_.end()) return;
  auto& cursor = it->after;
  // Say so when part of what is asked for is no longer held.
  const common::seq_t first_held = replay_.empty() ? next_seq_ : replay_.front().seq;
  if (cursor + 1 < first_held) {
    common::gap_event gap{first_held - 1, cursor + 1, first_held - 1};
    if (!s->push(make_frame(common::encode(common::event{gap})), gap.seq)) {
      s->wants_more();
      return;
    }
    if (it->fell_behind) ++gaps_;
    cursor = gap.seq;
  }
  // The replay buffer holds consecutive seqs: the next one to send is at cursor + 1.
  for (auto i = static_cast<std::size_t>(cursor + 1 - first_held); i < replay_.size(); ++i) {
    const auto& h = replay_[i];
    if (h.data->size() > s->room() || !s->push(h.data, h.seq)) {
      s->wants_more();  // it calls feed() again once it has written some of what it has
      return;
    }
    cursor = h.seq;
  }
  // Caught up: from now on it gets events as they come.
  auto caught_up = std::move(it->s);
  const bool newcomer = !it->fell_behind;
  catching_up_.erase(it);
  if (finished()) {
    caught_up->ended();
    return;
  }
  subscribers_.push_back(caught_up);
  pace();
  // The newcomer learns the count at once; the others when it has settled (subscribe()).
  if (newcomer) caught_up->push(watchers_frame(), -1);
  if (newcomer && pending_ != pending_state::none) caught_up->push(pending_frame(), -1);
}

void execution::unsubscribe(const subscriber* s) {
  const auto before = watchers();
  std::erase_if(catching_up_, [s](const auto& c) { return c.s.get() == s; });
  std::erase_if(subscribers_, [s](const auto& p) { return p.get() == s; });
  if (watchers() != before) announce_watchers();
  pace();
}

common::execution_record execution::record() const {
  if (copy_of_) {
    common::execution_record r = *copy_of_;
    if (exit_) {
      r.state = std::string(common::to_string(exit_->state));
      r.exit_code = exit_->code;
      r.signal = exit_->signal;
      if (!r.ended_at) r.ended_at = ended_at_;
    } else if (launched_ && (r.state == "queued" || r.state == "awaiting_approval")) {
      r.state = "running";
    }
    r.watchers = static_cast<std::int64_t>(watchers());
    return r;
  }
  common::execution_record r;
  r.execution_id = id_;
  r.machine_id = machine_id_;
  r.action_type = action_type_;
  r.command = command_;
  r.params = params_;
  r.user = user_;
  r.state = exit_                                        ? std::string(common::to_string(exit_->state))
            : pending_ == pending_state::queued            ? "queued"
            : pending_ == pending_state::awaiting_approval ? "awaiting_approval"
                                                           : "running";
  r.approved_by = decided_by_;
  r.approved_at = decided_at_;
  if (exit_) {
    r.exit_code = exit_->code;
    r.signal = exit_->signal;
  }
  r.started_at = started_at_;
  r.ended_at = ended_at_;
  r.bytes_stdout = static_cast<std::int64_t>(bytes_[0]);
  r.bytes_stderr = static_cast<std::int64_t>(bytes_[1]);
  r.output_truncated = audit_ && audit_->truncated();
  r.watchers = static_cast<std::int64_t>(watchers());
  return r;
}

}  // namespace cmdcast::server
