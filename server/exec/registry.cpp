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

std::shared_ptr<execution> execution_registry::start(const resolved_command& r,
                                                     const std::map<std::string, std::string>& params,
                                                     const std::string& user, audit_store* audit,
                                                     std::function<void()> on_end) {
  const std::string id = random_uuid();
  auto e = std::make_shared<execution>(executor_, id, *r.machine, *r.action, r.command, params, user, settings_, audit);
  executions_.emplace(id, e);
  ++running_per_machine_[r.machine->id];
  const std::string machine = r.machine->id;
  // (on_end holds the server, and so this registry, until the end.)
  e->start(connection_for(*r.machine), r.run_line, [this, e, machine, on_end = std::move(on_end)] {
    --running_per_machine_[machine];
    const auto rec = e->record();
    ssh_bytes_in_ended_ += static_cast<std::uint64_t>(rec.bytes_stdout + rec.bytes_stderr);
    log_event("exit", {{"execution_id", e->id()}, {"state", rec.state},
                       {"exit_code", rec.exit_code ? std::to_string(*rec.exit_code) : ""},
                       {"signal", rec.signal.value_or("")}});
    file_finished(e);
    on_end();
  });
  return e;
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
