#include "exec/registry.hpp"

#include <algorithm>

#include "ssh/machine_connection.hpp"
#include "support/log.hpp"

namespace cmdcast::server {
namespace {

// Finished executions stay in memory for fast attaches within these bounds; older ones are
// served from the audit store.
constexpr std::size_t max_finished_kept = 1000;
constexpr std::size_t max_finished_replay_bytes = 64u << 20;
// Executions queued or awaiting approval, per machine: past it a run request is refused busy.
constexpr std::size_t max_waiting_per_machine = 64;
// Batches kept in memory (their executions are kept and audited as any other).
constexpr std::size_t max_batches_kept = 1000;

}  // namespace

execution_registry::execution_registry(net::any_io_executor executor, const server_settings& settings)
    : executor_(std::move(executor)), settings_(settings) {}

void execution_registry::reconfigure(const server_settings& settings, const std::vector<machine_entry>& machines) {
  settings_ = settings;
  for (auto it = connections_.begin(); it != connections_.end();) {
    const auto m = std::find_if(machines.begin(), machines.end(), [&](const machine_entry& x) { return x.id == it->first; });
    // The old connection lives on with the runs that hold it, and closes after the last.
    if (m == machines.end() || !(m->endpoint == it->second->endpoint())) {
      it = connections_.erase(it);
    } else {
      ++it;
    }
  }
}

std::shared_ptr<execution> execution_registry::find(const std::string& id) const {
  const auto it = executions_.find(id);
  return it == executions_.end() ? nullptr : it->second;
}

std::size_t execution_registry::running_on(const std::string& machine_id) const {
  const auto it = running_per_machine_.find(machine_id);
  return it == running_per_machine_.end() ? 0 : it->second;
}

bool execution_registry::all_finished() const {
  for (const auto& [id, e] : executions_) {
    if (!e->finished()) return false;
  }
  return true;
}

std::shared_ptr<ssh::machine_connection> execution_registry::connection_for(const machine_entry& m) {
  auto& c = connections_[m.id];
  if (!c) {
    ssh::connection_options options;
    options.max_channels = settings_.max_executions_per_machine;
    c = std::make_shared<ssh::machine_connection>(executor_, m.endpoint, options);
  }
  return c;
}

std::size_t execution_registry::waiting_on(const std::string& machine_id) const {
  std::size_t n = 0;
  for (const auto& [id, w] : waiting_) n += w.machine.id == machine_id;
  return n;
}

std::variant<std::shared_ptr<execution>, request_error> execution_registry::submit(const resolved_command& r,
                                                                                   const std::string& user,
                                                                                   audit_store* audit,
                                                                                   std::function<void()> on_end) {
  const std::string& machine = r.machine->id;
  const auto busy_with = exclusive_running_.find(machine);
  if (r.action->exclusive && r.action->refuse_when_busy && busy_with != exclusive_running_.end()) {
    const auto other = find(busy_with->second);
    return request_error{common::error_code::busy,
                         "machine "" + machine + "" is running an exclusive action (" + (other ? other->action_type() : "") +
                             ", execution " + busy_with->second + ")"};
  }
  if (waiting_on(machine) >= max_waiting_per_machine) {
    return request_error{common::error_code::busy, "machine "" + machine + "" already has " +
                                                       std::to_string(max_waiting_per_machine) +
                                                       " executions queued or awaiting approval"};
  }
  const std::string id = random_uuid();
  auto e = std::make_shared<execution>(executor_, id, r, user, settings_, audit);
  executions_.emplace(id, e);
  if (on_new_execution) on_new_execution(e);
  waiting w{e, *r.machine, r.action->exclusive, std::move(on_end), nullptr};
  if (!r.action->approval) {
    proceed(std::move(w));
    return e;
  }
  const auto timeout = r.action->approval_timeout;
  e->set_awaiting_approval(rfc3339(std::chrono::system_clock::now() + timeout));
  log_event("awaiting_approval", {{"execution_id", id}, {"machine", machine}, {"action", r.action->name}, {"user", user}});
  w.expiry = std::make_shared<net::steady_timer>(executor_, timeout);
  w.expiry->async_wait([this, id, timeout](boost::system::error_code ec) {
    if (ec) return;  // decided, or cancelled
    end_waiting(id, common::exit_state::expired,
                "no other operator approved it within " + std::to_string(timeout.count()) + " s");
  });
  waiting_.emplace(id, std::move(w));
  return e;
}

std::optional<request_error> execution_registry::approve(const std::shared_ptr<execution>& e, const std::string& user) {
  const auto it = waiting_.find(e->id());
  if (it == waiting_.end() || e->pending() != pending_state::awaiting_approval) {
    return request_error{common::error_code::bad_request, "execution "" + e->id() + "" is not awaiting approval"};
  }
  waiting w = std::move(it->second);
  waiting_.erase(it);
  w.expiry->cancel();
  w.expiry.reset();
  e->set_decided_by(user);
  log_event("approved", {{"execution_id", e->id()}, {"user", user}});
  proceed(std::move(w));
  return std::nullopt;
}

std::optional<request_error> execution_registry::reject(const std::shared_ptr<execution>& e, const std::string& user) {
  if (!waiting_.count(e->id()) || e->pending() != pending_state::awaiting_approval) {
    return request_error{common::error_code::bad_request, "execution "" + e->id() + "" is not awaiting approval"};
  }
  e->set_decided_by(user);
  log_event("rejected_run", {{"execution_id", e->id()}, {"user", user}});
  end_waiting(e->id(), common::exit_state::rejected, "rejected by " + user);
  return std::nullopt;
}

void execution_registry::cancel(const std::shared_ptr<execution>& e) {
  if (waiting_.count(e->id())) {
    end_waiting(e->id(), common::exit_state::cancelled, "cancelled before it ran");
  } else {
    e->cancel();
  }
}

void execution_registry::proceed(waiting w) {
  const std::string machine = w.machine.id;  // (a copy: w is moved)
  if (w.exclusive && exclusive_running_.count(machine)) {
    const std::string id = w.e->id();
    queues_[machine].push_back(id);
    log_event("queued", {{"execution_id", id}, {"machine", machine}});
    waiting_.emplace(id, std::move(w));
    renumber(machine);
    return;
  }
  launch(std::move(w));
}

void execution_registry::launch(waiting w) {
  const std::string machine = w.machine.id;
  auto e = w.e;
  ++running_per_machine_[machine];
  if (w.exclusive) exclusive_running_[machine] = e->id();
  auto in_batch = w.in_batch;
  // (on_end holds the server, and so this registry, until the end.)
  e->start(connection_for(w.machine), [this, e, machine, exclusive = w.exclusive, in_batch,
                                       on_end = std::move(w.on_end)] {
    --running_per_machine_[machine];
    const auto rec = e->record();
    ssh_bytes_in_ended_ += static_cast<std::uint64_t>(rec.bytes_stdout + rec.bytes_stderr);
    log_event("exit", {{"execution_id", e->id()}, {"state", rec.state},
                       {"exit_code", rec.exit_code ? std::to_string(*rec.exit_code) : ""},
                       {"signal", rec.signal.value_or("")}});
    file_finished(e);
    if (exclusive) {
      exclusive_running_.erase(machine);
      // The next one queued for the machine runs now.
      auto& queue = queues_[machine];
      if (!queue.empty()) {
        const std::string next = queue.front();
        queue.pop_front();
        auto next_run = std::move(waiting_.at(next));
        waiting_.erase(next);
        launch(std::move(next_run));
        renumber(machine);
      }
    }
    if (in_batch) schedule(in_batch);
    on_end();
  });
  if (in_batch) in_batch->changed();
}

void execution_registry::end_waiting(const std::string& id, common::exit_state state, const std::string& why) {
  const auto it = waiting_.find(id);
  if (it == waiting_.end()) return;
  waiting w = std::move(it->second);
  waiting_.erase(it);
  if (w.expiry) w.expiry->cancel();
  auto& queue = queues_[w.machine.id];
  const bool was_queued = std::erase(queue, id) > 0;
  w.e->end_unstarted(state, why);
  log_event("exit", {{"execution_id", id}, {"state", std::string(common::to_string(state))}});
  file_finished(w.e);
  if (was_queued) renumber(w.machine.id);
  if (w.in_batch) schedule(w.in_batch);
  if (w.on_end) w.on_end();
}

std::variant<std::shared_ptr<batch>, request_error> execution_registry::submit_batch(
    const std::string& group, const std::vector<resolved_command>& runs, const common::group_run_request& request,
    const std::string& user, audit_store* audit, std::function<void()> on_end) {
  for (const auto& r : runs) {
    if (r.action->approval) {
      return request_error{common::error_code::bad_request,
                           "action \"" + r.action->name + "\" needs approval, which a fleet run cannot have yet: run it "
                           "machine by machine"};
    }
    if (waiting_on(r.machine->id) >= max_waiting_per_machine) {
      return request_error{common::error_code::busy, "machine \"" + r.machine->id + "\" already has " +
                                                         std::to_string(max_waiting_per_machine) +
                                                         " executions queued or awaiting approval"};
    }
  }
  const auto& first = runs.front();
  auto b = std::make_shared<batch>(executor_, audit, random_uuid(), group, first.action->name, first.shown_params, user,
                                   request.parallel, request.stop_on_failure);
  std::int64_t position = 0;
  for (const auto& r : runs) {
    const std::string id = random_uuid();
    auto e = std::make_shared<execution>(executor_, id, r, user, settings_, audit);
    executions_.emplace(id, e);
    if (on_new_execution) on_new_execution(e);
    b->members().push_back({r.machine->id, e, false});
    e->set_queued(++position);
    waiting_.emplace(id, waiting{e, *r.machine, r.action->exclusive, on_end, nullptr, b, true});
  }
  batches_.push_back(b);
  while (batches_.size() > max_batches_kept) batches_.pop_front();
  if (on_new_batch) on_new_batch(b);
  log_event("batch", {{"batch_id", b->id()}, {"group", group}, {"action", first.action->name}, {"user", user},
                      {"machines", std::to_string(runs.size())}});
  schedule(b);
  b->save();
  return b;
}

void execution_registry::schedule(const std::shared_ptr<batch>& b) {
  auto& members = b->members();
  if (b->stop_on_failure() && !b->stopping) {
    for (const auto& m : members) {
      if (!m.e->finished() || b->counts().failed == 0) continue;
      const auto r = m.e->record();
      if (r.state == "cancelled" || (r.state == "exited" && r.exit_code == 0)) continue;
      b->stopping = true;
      for (auto& other : members) {
        if (other.released) continue;
        other.released = true;
        end_waiting(other.e->id(), common::exit_state::cancelled,
                    "skipped: the fleet run stops on failure, and \"" + m.machine_id + "\" failed");
      }
      break;
    }
  }
  if (!b->stopping) {
    std::int64_t active = 0;
    for (const auto& m : members) active += m.released && !m.e->finished();
    const std::int64_t bound = b->parallel().value_or(static_cast<std::int64_t>(members.size()));
    for (auto& m : members) {
      if (active >= bound) break;
      if (m.released) continue;
      m.released = true;
      ++active;
      const auto it = waiting_.find(m.e->id());
      if (it == waiting_.end()) continue;
      waiting w = std::move(it->second);
      waiting_.erase(it);
      w.held = false;
      proceed(std::move(w));
    }
    // The ones still held learn where they are.
    std::int64_t position = 0;
    for (auto& m : members) {
      if (!m.released) m.e->set_queued(++position);
    }
  }
  b->changed();
}

void execution_registry::cancel_batch(const std::shared_ptr<batch>& b) {
  b->stopping = b->cancelled = true;
  for (auto& m : b->members()) {
    m.released = true;
    if (!m.e->finished()) cancel(m.e);
  }
  b->changed();
}

std::shared_ptr<batch> execution_registry::find_batch(const std::string& id) const {
  for (const auto& b : batches_) {
    if (b->id() == id) return b;
  }
  return nullptr;
}

std::vector<std::shared_ptr<batch>> execution_registry::batches() const {
  return {batches_.rbegin(), batches_.rend()};
}

void execution_registry::renumber(const std::string& machine_id) {
  const auto& queue = queues_[machine_id];
  for (std::size_t i = 0; i < queue.size(); ++i) {
    waiting_.at(queue[i]).e->set_queued(static_cast<std::int64_t>(i + 1));
  }
}

void execution_registry::file_finished(const std::shared_ptr<execution>& e) {
  finished_order_.push_back(e->id());
  finished_replay_bytes_ += e->replay_bytes();
  while (finished_order_.size() > max_finished_kept ||
         (finished_replay_bytes_ > max_finished_replay_bytes && finished_order_.size() > 1)) {
    const auto oldest = executions_.find(finished_order_.front());
    finished_replay_bytes_ -= oldest->second->replay_bytes();
    executions_.erase(oldest);
    finished_order_.pop_front();
  }
}

void execution_registry::cancel_all() {
  std::vector<std::string> waiting_ids;
  for (const auto& [id, w] : waiting_) waiting_ids.push_back(id);
  for (const auto& id : waiting_ids) end_waiting(id, common::exit_state::cancelled, "cancelled: the server is shutting down");
  for (auto& [id, e] : executions_) e->cancel();
}

void execution_registry::disconnect_all() {
  for (auto& [id, c] : connections_) c->disconnect();
}

std::uint64_t execution_registry::ssh_bytes_in() const {
  std::uint64_t total = ssh_bytes_in_ended_;
  for (const auto& [id, e] : executions_) {
    if (e->finished()) continue;
    const auto r = e->record();
    total += static_cast<std::uint64_t>(r.bytes_stdout + r.bytes_stderr);
  }
  return total;
}

}  // namespace cmdcast::server
