#include "exec/batch.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>

#include "audit/audit_store.hpp"

#include "cmdcast/common/codec.hpp"
#include "exec/execution.hpp"
#include "support/log.hpp"

namespace cmdcast::server {

batch::batch(net::any_io_executor executor, audit_store* audit, std::string id, std::string group,
             std::string action_type, std::map<std::string, std::string> params, std::string user,
             std::optional<std::int64_t> parallel, bool stop_on_failure)
    : executor_(std::move(executor)),
      audit_(audit),
      id_(std::move(id)),
      group_(std::move(group)),
      action_type_(std::move(action_type)),
      params_(std::move(params)),
      user_(std::move(user)),
      started_at_(rfc3339_now()),
      parallel_(parallel),
      stop_on_failure_(stop_on_failure) {}

batch::batch(net::any_io_executor executor, const common::batch_record& r, std::vector<member> members)
    : executor_(std::move(executor)),
      audit_(nullptr),
      id_(r.batch_id),
      group_(r.group),
      action_type_(r.action_type),
      params_(r.params),
      user_(r.user),
      started_at_(r.started_at),
      ended_at_(r.ended_at),
      parallel_(r.parallel),
      stop_on_failure_(r.stop_on_failure),
      copy_(true),
      members_(std::move(members)),
      announced_(counts()) {}

bool batch::finished() const {
  for (const auto& m : members_) {
    if (!m.e->finished()) return false;
  }
  return true;
}

common::batch_counts batch::counts() const {
  common::batch_counts c;
  for (const auto& m : members_) {
    const auto r = m.e->record();
    if (r.state == "queued" || r.state == "awaiting_approval") {
      ++c.queued;
    } else if (r.state == "running") {
      ++c.running;
    } else if (r.state == "exited" && r.exit_code == 0) {
      ++c.succeeded;
    } else if (r.state == "cancelled") {
      ++c.cancelled;
    } else {
      ++c.failed;
    }
  }
  return c;
}

std::string batch::state() const {
  if (!finished()) return "running";
  const auto c = counts();
  if (c.failed > 0) return "failed";
  if (c.cancelled > 0) return "cancelled";
  return "succeeded";
}

common::batch_record batch::record() const {
  common::batch_record r;
  r.batch_id = id_;
  r.group = group_;
  r.action_type = action_type_;
  r.params = params_;
  r.user = user_;
  r.started_at = started_at_;
  r.ended_at = ended_at_;
  r.state = state();
  r.parallel = parallel_;
  r.stop_on_failure = stop_on_failure_;
  r.counts = counts();
  for (const auto& m : members_) {
    const auto rec = m.e->record();
    r.executions.push_back({m.machine_id, rec.execution_id, rec.state, rec.exit_code, m.e->progress()});
  }
  return r;
}

void batch::save() const {
  if (!audit_) return;
  net::co_spawn(
      executor_,
      [audit = audit_, record = record()]() -> net::awaitable<void> { co_await audit->async_save_batch(record); },
      net::detached);
}

frame batch::summary_frame() const {
  return make_frame(common::encode(common::event{common::batch_event{id_, state(), counts()}}));
}

void batch::changed() {
  const auto now = counts();
  if (now == announced_ && !(finished() && !ended_at_)) return;
  announced_ = now;
  if (finished() && !ended_at_) {
    ended_at_ = rfc3339_now();
    if (!copy_) {  // its owner logs and stores it
      log_event("batch_end", {{"batch_id", id_}, {"state", state()}});
      save();
    }
  }
  const auto summary = summary_frame();
  for (auto* l : std::vector<batch_listener*>(listeners_)) l->batch_changed(summary);
}

}  // namespace cmdcast::server
