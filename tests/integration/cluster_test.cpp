// Three cmdcast-server processes sharing executions through a real redis-server on loopback:
// a run on one is watched, resumed and cancelled through the others, and the faults (its
// owner killed, Redis restarted) end in an explicit exit or gap, never a silent hole.
#include <gtest/gtest.h>

#include <algorithm>
#include <csignal>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <future>
#include <thread>

#include "cmdcast/common/codec.hpp"
#include "config/config.hpp"
#include "digest.hpp"
#include "postgres_fixture.hpp"
#include "redis_fixture.hpp"
#include "server_harness.hpp"

namespace cmdcast::testing {
namespace {

using namespace std::chrono_literals;

/// Until /healthz says ok: connected to Redis (and PostgreSQL), as a load balancer's health
/// check would wait before sending it anyone.
/// What /healthz answers once it answers `wanted`, or after 10 s what it answers then: a
/// server notices a lost connection when the socket says so, not at a set time.
std::string healthz_once(std::uint16_t port, const std::string& wanted) {
  std::string body;
  for (int i = 0; i < 200 && (body = http_request(port, http::verb::get, "/healthz", "").body) != wanted; ++i) {
    std::this_thread::sleep_for(50ms);
  }
  return body;
}

void wait_healthy(std::uint16_t port) { ASSERT_EQ(healthz_once(port, "ok"), "ok"); }

class Cluster : public ::testing::Test {
 protected:
  void SetUp() override { start_servers(""); }
  /// Servers a, b and c on the one Redis, each ready; `audit_toml` empty: a SQLite file each.
  void start_servers(const std::string& audit_toml) {
    sshd = std::make_unique<loopback_sshd>();
    // Fleet runs: a group of three machine entries on the sshd, and one nobody listens for.
    std::string down = sshd->machine_toml("down");
    const auto at = down.find("port = ");
    down.replace(at, down.find('\n', at) - at, "port = 1");
    const std::string fleet = sshd->machine_toml("m2") + sshd->machine_toml("m3") + down +
                              "[groups]\nup = [\"box\", \"m2\", \"m3\"]\nmixed = [\"box\", \"m2\", \"down\", \"m3\"]\n";
    for (const std::string name : {"a", "b", "c"}) {
      const std::string own_audit = audit_toml.empty() ? "audit_db = \"" + sshd->dir() + "/" + name + ".db\"" : "";
      servers.push_back(std::make_unique<server_process>(
          *sshd, own_audit, std::vector<std::string>{},
          "[cluster]\nredis = \"" + redis.address() + "\"\nserver_id = \"" + name + "\"\nlease_ms = 1000\n" + audit_toml +
              fleet));
      wait_healthy(servers.back()->port());
    }
  }
  std::uint16_t port(std::size_t i) const { return servers[i]->port(); }

  redis_server redis;
  std::unique_ptr<loopback_sshd> sshd;
  std::vector<std::unique_ptr<server_process>> servers;
};

/// What a watcher saw, checked as a user would: seqs 0, 1, 2, ... without a gap, one exit.
struct watched {
  std::string out;
  std::optional<common::exit_event> exit;
  std::size_t gaps = 0;
  bool consecutive = true;
};

watched look_at(const std::vector<event>& events, common::seq_t after = -1) {
  watched w;
  common::seq_t expected = after + 1;
  for (const auto& e : events) {
    std::visit([&](const auto& ev) {
      if constexpr (requires { ev.seq; }) {
        if (ev.seq != expected) w.consecutive = false;
        expected = ev.seq + 1;
      }
    }, e);
    if (const auto* o = std::get_if<common::output_event>(&e); o && o->stream == common::output_stream::out) w.out += o->data;
    if (std::holds_alternative<common::gap_event>(e)) ++w.gaps;
    if (const auto* x = std::get_if<common::exit_event>(&e)) w.exit = *x;
  }
  return w;
}

std::string sha_of(const std::string& text) {
  sha256 h;
  h.add(text);
  return h.hex();
}

TEST_F(Cluster, ARunOnAIsWatchedOnBOverWebSocketAndOnCByPollingByteForByte) {
  // 14.9 MB: far more than a replay buffer (4 MiB), as the copies on B and C may lag behind.
  const std::string id = post_run(port(0), run_request("numbers", R"({"count":"2000000"})"));
  // All three read at once: A's watcher, its only local one, paces the command.
  ws_client on_a(port(0), "/executions/" + id + "/stream?after=-1");
  ws_client on_b(port(1), "/executions/" + id + "/stream?after=-1");
  auto on_a_read = std::async(std::launch::async, [&] { return on_a.all(); });
  auto on_b_read = std::async(std::launch::async, [&] { return on_b.all(); });
  const auto polled = poll_to_the_end(port(2), id);
  const auto streamed = on_b_read.get();
  const auto local = look_at(on_a_read.get());

  std::string expected;
  for (int i = 1; i <= 2000000; ++i) expected += std::to_string(i) + "\n";
  ASSERT_TRUE(local.exit);
  EXPECT_EQ(local.exit->code, 0);
  EXPECT_EQ(sha_of(local.out), sha_of(expected));
  for (const auto& w : {look_at(streamed), look_at(polled)}) {
    ASSERT_TRUE(w.exit) << "every watcher sees the exit";
    EXPECT_EQ(w.exit->code, 0);
    EXPECT_EQ(w.gaps, 0u);
    EXPECT_TRUE(w.consecutive) << "seqs 0, 1, 2, ... as on the server that runs it";
    EXPECT_EQ(sha_of(w.out), sha_of(expected));
  }
  // Every server answers for its record.
  for (std::size_t i = 0; i < 3; ++i) EXPECT_EQ(record_of(port(i), id).state, "exited") << "server " << i;
}

TEST_F(Cluster, AWatcherOfBResumesOnCWithItsAfterAndMissesNothing) {
  const std::string id = post_run(port(0), run_request("ticks"));
  std::vector<event> first;
  {
    ws_client on_b(port(1), "/executions/" + id + "/stream?after=-1");
    while (first.size() < 8) {
      const auto m = on_b.next();
      ASSERT_TRUE(m);
      auto e = common::decode_event(*m);
      ASSERT_TRUE(e);
      if (!std::holds_alternative<common::watchers_event>(*e)) first.push_back(*e);
    }
    on_b.close();
  }
  const auto seen = look_at(first);
  ASSERT_TRUE(seen.consecutive);
  const common::seq_t after = static_cast<common::seq_t>(first.size()) - 1;
  // The rest from C, where this watcher never was; cancelled from C as well, to keep it short.
  ws_client on_c(port(2), "/executions/" + id + "/stream?after=" + std::to_string(after));
  std::this_thread::sleep_for(1s);
  const auto cancelled = http_request(port(2), http::verb::post, "/executions/" + id + "/cancel", operator_token);
  EXPECT_EQ(cancelled.status, 202u) << cancelled.body;
  const auto rest = look_at(on_c.all(), after);
  EXPECT_TRUE(rest.consecutive);
  EXPECT_EQ(rest.gaps, 0u);
  ASSERT_TRUE(rest.exit);
  EXPECT_EQ(rest.exit->state, common::exit_state::cancelled) << "the cancel from C reached A, which ran it";
  const std::string whole = seen.out + rest.out;
  ASSERT_FALSE(whole.empty());
  // tick 1, tick 2, ... each once, in order.
  std::string expected;
  for (int i = 1; expected.size() < whole.size(); ++i) expected += "tick " + std::to_string(i) + "\n";
  EXPECT_EQ(whole, expected);
  EXPECT_EQ(record_of(port(0), id).state, "cancelled");
  // C logs who asked (the request), A that it acted on it (the servers here share one log file).
  const std::string log = servers[0]->log();
  EXPECT_EQ(count_events(log, "cancel"), 2u) << log;
  EXPECT_NE(log.find("\"execution_id\":\"" + id + "\",\"user\":\"olivia\",\"via\":\"cluster\""), std::string::npos) << log;
}

TEST_F(Cluster, AViewerOnAnotherServerCannotCancel) {
  const std::string id = post_run(port(0), run_request("forever"));
  const auto refused = http_request(port(1), http::verb::post, "/executions/" + id + "/cancel", viewer_token);
  EXPECT_EQ(refused.status, 403u);
  EXPECT_EQ(record_of(port(1), id).state, "running");
  const auto cancelled = http_request(port(1), http::verb::post, "/executions/" + id + "/cancel", operator_token);
  EXPECT_EQ(cancelled.status, 202u);
  ws_client on_a(port(0), "/executions/" + id + "/stream?after=-1");
  const auto w = look_at(on_a.all());
  ASSERT_TRUE(w.exit);
  EXPECT_EQ(w.exit->state, common::exit_state::cancelled);
}

TEST_F(Cluster, AWatcherOnBCancelsOverItsWebSocketAndAActs) {
  const std::string id = post_run(port(0), run_request("forever"));
  ws_client on_b(port(1), "/executions/" + id + "/stream?after=-1");
  const auto first = on_b.next();  // its copy on B is made and followed
  ASSERT_TRUE(first);
  on_b.send(R"({"type":"cancel"})");
  const auto w = look_at(on_b.all());
  ASSERT_TRUE(w.exit);
  EXPECT_EQ(w.exit->state, common::exit_state::cancelled);
  EXPECT_EQ(record_of(port(0), id).state, "cancelled");
}

/// Until server `port`'s record of `id` says `state` (or 10 s): a record in Redis is written
/// after the server answers, as a load balancer may send the next request elsewhere at once.
common::execution_record wait_for_record(std::uint16_t port, const std::string& id, const std::string& state) {
  auto r = record_of(port, id);
  for (int i = 0; i < 200 && r.state != state; ++i) {
    std::this_thread::sleep_for(50ms);
    r = record_of(port, id);
  }
  return r;
}

TEST_F(Cluster, ARunAwaitingApprovalOnAIsSeenOnCAndApprovedThroughB) {
  const std::string id = post_run(port(0), run_request("approved_echo", R"({"word":"shared"})"));
  ws_client on_c(port(2), "/executions/" + id + "/stream", ws_options{viewer_token});
  EXPECT_EQ(record_of(port(1), id).state, "awaiting_approval");
  const auto mine = http_request(port(1), http::verb::post, "/executions/" + id + "/approve", operator_token);
  EXPECT_EQ(mine.status, 403u) << "never the requester, on any server: " << mine.body;
  EXPECT_EQ(http_request(port(1), http::verb::post, "/executions/" + id + "/approve", viewer_token).status, 403u);
  EXPECT_EQ(record_of(port(0), id).state, "awaiting_approval") << "nothing ran";

  const auto approved = http_request(port(1), http::verb::post, "/executions/" + id + "/approve", second_operator_token);
  EXPECT_EQ(approved.status, 200u) << "B waits for A's decision to come back: " << approved.body;
  const auto events = on_c.all();
  const auto waiting = of_type<common::awaiting_approval_event>(events);
  ASSERT_EQ(waiting.size(), 1u) << "C's watcher is told, live, that the run waits";
  EXPECT_EQ(waiting[0].requested_by, "olivia");
  EXPECT_FALSE(waiting[0].expires_at.empty());
  EXPECT_EQ(text_of(events, common::output_stream::out), "approved run shared\n");
  EXPECT_EQ(of_type<common::exit_event>(events).at(0).code, 0);
  for (std::size_t i = 0; i < 3; ++i) {
    const auto r = wait_for_record(port(i), id, "exited");
    EXPECT_EQ(r.state, "exited") << "server " << i;
    EXPECT_EQ(r.approved_by, "oscar") << "server " << i;
  }
  EXPECT_EQ(http_request(port(2), http::verb::post, "/executions/" + id + "/approve", second_operator_token).status, 400u)
      << "not twice";
  EXPECT_GE(count_events(servers[0]->log(), "approved"), 1u) << "A decided it";
}

TEST_F(Cluster, TheCliApprovesThroughAnotherServerThanTheOneRunningIt) {
  const std::string id = post_run(port(0), run_request("approved_echo", R"({"word":"cli"})"));
  const std::string via_b = std::string(CMDCAST_CLI_BINARY) + " approve 127.0.0.1:" + std::to_string(port(1)) + " " + id;
  const auto own = run_program(via_b);  // run_program's token is olivia's, who asked for it
  EXPECT_EQ(own.status, 2);
  EXPECT_TRUE(own.err.starts_with("cmdcast: forbidden: ")) << own.err;
  const auto approved = run_program(via_b + " --token " + second_operator_token);
  EXPECT_EQ(approved.status, 0) << approved.err;
  EXPECT_TRUE(approved.out.starts_with(id + ": ")) << approved.out;
  EXPECT_NE(approved.out.find(" (approved by oscar)\n"), std::string::npos) << approved.out;
  EXPECT_EQ(wait_for_record(port(2), id, "exited").approved_by, "oscar");
}

TEST_F(Cluster, ARunRejectedThroughCNeverRunsAndEndsRejectedEverywhere) {
  const std::string id = post_run(port(0), run_request("approved_echo", R"({"word":"no"})"));
  ws_client on_b(port(1), "/executions/" + id + "/stream", ws_options{viewer_token});
  const auto rejected = http_request(port(2), http::verb::post, "/executions/" + id + "/reject", second_operator_token);
  EXPECT_EQ(rejected.status, 200u) << rejected.body;
  const auto events = on_b.all();
  EXPECT_TRUE(of_type<common::started_event>(events).empty());
  EXPECT_EQ(text_of(events, common::output_stream::err), "cmdcast: rejected by oscar\n");
  EXPECT_EQ(of_type<common::exit_event>(events).at(0).state, common::exit_state::rejected);
  for (std::size_t i = 0; i < 3; ++i) EXPECT_EQ(wait_for_record(port(i), id, "rejected").state, "rejected") << "server " << i;
}

TEST_F(Cluster, AQueuedRunOnAShowsItsPositionOnBAsItMovesUp) {
  const std::string go = "/tmp/cmdcast-go-cluster" + std::to_string(::getpid());
  const auto request = [&](const std::string& tag) {
    return run_request("exclusive_wait", "{\"tag\":\"" + tag + "\",\"go\":\"" + go + "\"}");
  };
  const std::string first = post_run(port(0), request("a"));
  wait_for_record(port(0), first, "running");
  const std::string second = post_run(port(0), request("b"));
  const std::string third = post_run(port(0), request("c"));
  EXPECT_EQ(record_of(port(1), third).state, "queued");
  ws_client third_on_b(port(1), "/executions/" + third + "/stream", ws_options{viewer_token});
  // The first watcher event on B says where it stands, before anything moves.
  std::optional<common::queued_event> at_first;
  while (!at_first) {
    const auto m = third_on_b.next();
    ASSERT_TRUE(m);
    const auto e = common::decode_event(*m);
    ASSERT_TRUE(e) << *m;
    if (const auto* q = std::get_if<common::queued_event>(&*e)) at_first = *q;
  }
  EXPECT_EQ(at_first->position, 2);
  std::ofstream(go) << "go";
  const auto events = third_on_b.all();
  std::filesystem::remove(go);
  const auto queued = of_type<common::queued_event>(events);
  ASSERT_FALSE(queued.empty()) << "B's watcher is told its position moved up";
  EXPECT_EQ(queued.back().position, 1);
  EXPECT_EQ(text_of(events, common::output_stream::out), "start c\nend c\n");
  EXPECT_EQ(wait_for_record(port(1), second, "exited").state, "exited");
}

/// POST /groups/{group}/commands on server `port`: the fleet run's record.
common::batch_record start_fleet_run(std::uint16_t port, const std::string& group, const std::string& body) {
  const auto answer = http_request(port, http::verb::post, "/groups/" + group + "/commands", operator_token, body);
  EXPECT_EQ(answer.status, 202u) << answer.body;
  auto b = common::decode_batch_record(answer.body);
  EXPECT_TRUE(b.ok()) << answer.body;
  return b.ok() ? *b : common::batch_record{};
}

/// A fleet run's stream on server `port`, read to its close.
batch_view watch_fleet_run(std::uint16_t port, const std::string& id) {
  ws_client c(port, "/batches/" + id + "/stream", ws_options{viewer_token});
  batch_view v;
  while (auto m = c.next()) v.add(*m);
  EXPECT_EQ(c.reason().code, 1000) << c.reason().reason;
  return v;
}

TEST_F(Cluster, AFleetRunOnAIsWatchedWholeOnBAndCAndEveryServerHasItsRecord) {
  const auto b = start_fleet_run(port(0), "mixed", run_request("lines"));
  ASSERT_EQ(b.executions.size(), 4u);
  auto on_c_read = std::async(std::launch::async, [&] { return watch_fleet_run(port(2), b.batch_id); });
  const auto on_b = watch_fleet_run(port(1), b.batch_id);
  const auto on_c = on_c_read.get();
  for (const auto* v : {&on_b, &on_c}) {
    ASSERT_FALSE(v->summaries.empty());
    EXPECT_EQ(v->summaries.back().state, "failed");
    EXPECT_EQ(v->summaries.back().counts.succeeded, 3);
    EXPECT_EQ(v->summaries.back().counts.failed, 1);
    for (const auto& m : b.executions) {
      ASSERT_TRUE(v->by_execution.count(m.execution_id)) << m.machine_id;
      const auto& events = v->by_execution.at(m.execution_id);
      const auto seqs = sequenced(events);
      for (std::size_t i = 0; i < seqs.size(); ++i) EXPECT_EQ(common::event_seq(seqs[i]), static_cast<common::seq_t>(i));
      EXPECT_EQ(v->machine_of.at(m.execution_id), m.machine_id);
      if (m.machine_id == "down") {
        EXPECT_EQ(of_type<common::exit_event>(events).at(0).state, common::exit_state::failed);
      } else {
        EXPECT_EQ(text_of(events, common::output_stream::out), "line 1\nline 2\nline 3\n") << m.machine_id;
      }
    }
  }
  for (std::size_t i = 0; i < 3; ++i) {
    const auto answer = http_request(port(i), http::verb::get, "/batches/" + b.batch_id, viewer_token);
    ASSERT_EQ(answer.status, 200u) << "server " << i << ": " << answer.body;
    const auto r = common::decode_batch_record(answer.body);
    ASSERT_TRUE(r.ok());
    EXPECT_EQ(r->state, "failed") << "server " << i;
    EXPECT_EQ(r->counts.succeeded, 3) << "server " << i;
    EXPECT_EQ(r->group, "mixed");
    EXPECT_EQ(r->executions.size(), 4u);
  }
}

TEST_F(Cluster, AFleetRunOnAIsCancelledFromBWaitingMembersToo) {
  const auto b = start_fleet_run(port(0), "up", R"({"action_type":"forever","parallel":2})");
  ws_client on_c(port(2), "/batches/" + b.batch_id + "/stream", ws_options{viewer_token});
  for (const auto& m : b.executions) {
    if (m.machine_id != "m3") wait_for_record(port(0), m.execution_id, "running");
  }
  EXPECT_EQ(record_of(port(1), b.executions.back().execution_id).state, "queued") << "parallel 2: the third waits";
  EXPECT_EQ(http_request(port(1), http::verb::post, "/batches/" + b.batch_id + "/cancel", viewer_token).status, 403u);
  EXPECT_EQ(http_request(port(1), http::verb::post, "/batches/" + b.batch_id + "/cancel", operator_token).status, 202u);
  batch_view v;
  while (auto m = on_c.next()) v.add(*m);
  ASSERT_FALSE(v.summaries.empty());
  EXPECT_EQ(v.summaries.back().state, "cancelled");
  EXPECT_EQ(v.summaries.back().counts.cancelled, 3);
  for (const auto& m : b.executions) EXPECT_EQ(record_of(port(0), m.execution_id).state, "cancelled") << m.machine_id;
  EXPECT_GE(count_events(servers[0]->log(), "cancel_batch"), 1u) << "A, which holds it, cancelled it";
}

TEST_F(Cluster, AnUnknownFleetRunIsUnknownOnEveryServer) {
  for (std::size_t i = 0; i < 3; ++i) {
    for (const std::string id : {"00000000-0000-0000-0000-000000000000", "*", "a%3Ab"}) {
      EXPECT_EQ(http_request(port(i), http::verb::get, "/batches/" + id, viewer_token).status, 404u) << id;
      EXPECT_EQ(http_request(port(i), http::verb::post, "/batches/" + id + "/cancel", operator_token).status, 404u) << id;
      EXPECT_EQ(http_request(port(i), http::verb::get, "/batches/" + id + "/events?after=", viewer_token).status, 404u) << id;
    }
  }
}

TEST_F(Cluster, AnUnknownExecutionIsUnknownOnEveryServer) {
  for (std::size_t i = 0; i < 3; ++i) {
    // Ids that would be patterns or other keys if they were spliced into a Redis command.
    for (const std::string& hostile : std::vector<std::string>{"*", "x%3Aout", "a%20b%0D%0APING", std::string(300, 'k')}) {
      EXPECT_EQ(http_request(port(i), http::verb::get, "/executions/" + hostile, viewer_token).status, 404u) << hostile;
      EXPECT_EQ(http_request(port(i), http::verb::get, "/executions/" + hostile + "/events?after=-1", viewer_token).status, 404u)
          << hostile;
      EXPECT_EQ(http_request(port(i), http::verb::post, "/executions/" + hostile + "/cancel", operator_token).status, 404u)
          << hostile;
    }
    const auto r = http_request(port(i), http::verb::get, "/executions/00000000-0000-4000-8000-000000000000", viewer_token);
    EXPECT_EQ(r.status, 404u) << r.body;
    const auto c = http_request(port(i), http::verb::post, "/executions/00000000-0000-4000-8000-000000000000/cancel",
                                operator_token);
    EXPECT_EQ(c.status, 404u) << c.body;
  }
}

TEST_F(Cluster, WhenTheServerRunningItIsKilledItsWatchersElsewhereGetLost) {
  const std::string id = post_run(port(0), run_request("forever"));
  ws_client on_b(port(1), "/executions/" + id + "/stream?after=-1");
  // It has started, as B's watcher sees.
  bool started = false;
  while (!started) {
    const auto m = on_b.next();
    ASSERT_TRUE(m);
    started = m->find("\"started\"") != std::string::npos;
  }
  servers[0]->kill_hard();
  const auto rest = look_at(on_b.all());
  ASSERT_TRUE(rest.exit) << "the lease of the killed server expires, and its run is lost";
  EXPECT_EQ(rest.exit->state, common::exit_state::lost);
  // A watcher arriving later on C learns the same.
  ws_client on_c(port(2), "/executions/" + id + "/stream?after=-1");
  const auto late = look_at(on_c.all());
  ASSERT_TRUE(late.exit);
  EXPECT_EQ(late.exit->state, common::exit_state::lost);
  EXPECT_EQ(record_of(port(2), id).state, "lost");
}

TEST_F(Cluster, RedisRestartedMidRunTheWatcherElsewhereGoesOnOrIsToldOfAGap) {
  const std::string id = post_run(port(0), run_request("ticks"));
  ws_client on_b(port(1), "/executions/" + id + "/stream?after=-1");
  std::this_thread::sleep_for(1500ms);
  redis.stop();
  std::this_thread::sleep_for(1s);
  redis.start();  // empty: the owner writes the run back from its replay buffer
  std::this_thread::sleep_for(2s);
  const auto cancelled = http_request(port(0), http::verb::post, "/executions/" + id + "/cancel", operator_token);
  EXPECT_EQ(cancelled.status, 202u);
  const auto w = look_at(on_b.all());
  ASSERT_TRUE(w.exit);
  EXPECT_EQ(w.exit->state, common::exit_state::cancelled);
  EXPECT_TRUE(w.consecutive) << "no silent hole: the same seqs, or a gap event in their place";
  // What B shows is A's output, tick after tick (the replay buffer held it all).
  std::string expected;
  for (int i = 1; expected.size() < w.out.size(); ++i) expected += "tick " + std::to_string(i) + "\n";
  EXPECT_EQ(w.out, expected);
  EXPECT_EQ(w.gaps, 0u);
  EXPECT_GE(count_events(servers[0]->log(), "cluster_reseed"), 1u) << "A wrote its run back into the new Redis";
}

TEST_F(Cluster, RedisFlushedMidRunTheOwnerWritesItBackAndTheWatcherElsewhereGoesOn) {
  const std::string id = post_run(port(0), run_request("ticks"));
  ws_client on_b(port(1), "/executions/" + id + "/stream?after=-1");
  std::this_thread::sleep_for(1500ms);
  EXPECT_EQ(redis.cli("FLUSHALL"), "OK");
  std::this_thread::sleep_for(2s);  // the owner notices at its next lease renewal
  EXPECT_EQ(redis.cli("EXISTS cmdcast:x:" + id + ":meta"), "1") << "written back";
  const auto cancelled = http_request(port(2), http::verb::post, "/executions/" + id + "/cancel", operator_token);
  EXPECT_EQ(cancelled.status, 202u) << "C still finds it, and its owner: " << cancelled.body;
  const auto w = look_at(on_b.all());
  ASSERT_TRUE(w.exit);
  EXPECT_EQ(w.exit->state, common::exit_state::cancelled) << "not taken for lost while the leases were gone";
  EXPECT_TRUE(w.consecutive);
  EXPECT_EQ(w.gaps, 0u) << "the replay buffer held it all";
  std::string expected;
  for (int i = 1; expected.size() < w.out.size(); ++i) expected += "tick " + std::to_string(i) + "\n";
  EXPECT_EQ(w.out, expected);
  EXPECT_GE(count_events(servers[0]->log(), "cluster_reseed"), 1u);
}

TEST_F(Cluster, ARedisThatStopsReadingNeitherGrowsTheOwnersMemoryNorHoldsItsWatchers) {
  // 120 MB while Redis takes the connections but reads nothing (stopped, not dead: the
  // sockets stay open): the owner must not keep what it cannot send.
  const std::string go = "/tmp/cmdcast-go-stopped" + std::to_string(::getpid());
  const std::string id = post_run(port(0), run_request("burst", "{\"go\":\"" + go + "\",\"bytes\":\"120000000\"}"));
  ws_client on_a(port(0), "/executions/" + id + "/stream?after=-1");
  ASSERT_EQ(::kill(redis.pid(), SIGSTOP), 0);
  std::ofstream(go) << "go";
  const auto seen = look_at(on_a.all());
  const auto unsent = metric(port(0), "cmdcast_cluster_unsent_bytes");
  const auto disconnects = metric(port(0), "cmdcast_cluster_disconnects_total");
  ::kill(redis.pid(), SIGCONT);
  std::filesystem::remove(go);

  ASSERT_TRUE(seen.exit) << "the watcher on the owner is not held by Redis";
  EXPECT_EQ(seen.exit->code, 0);
  EXPECT_EQ(seen.out.size(), 120000000u);
  EXPECT_EQ(seen.gaps, 0u);
  // At most max_lag_bytes waits, and the one entry that went past it: an event of up to 1 MiB
  // of output and the under 16 KiB that waited to be coalesced with it, in its XADD.
  EXPECT_LE(unsent, (64u << 20) + (1u << 20) + (64u << 10))
      << "at most max_lag_bytes waits to be written, not the whole output";
  EXPECT_GE(disconnects, 1u);
  EXPECT_NE(servers[0]->log().find("Redis is not reading"), std::string::npos);
  // Redis reads again: the owner reconnects, and a new run is shared as before.
  wait_healthy(port(0));
  const std::string next = post_run(port(0), run_request("numbers", R"({"count":"1000"})"));
  const auto on_b = look_at(ws_client(port(1), "/executions/" + next + "/stream?after=-1").all());
  ASSERT_TRUE(on_b.exit);
  EXPECT_EQ(on_b.gaps, 0u);
  EXPECT_EQ(on_b.out.size(), 3893u);  // seq 1 1000
}

TEST_F(Cluster, HealthzSaysDegradedWhileRedisIsDownAndLocalRunsGoOn) {
  redis.stop();
  EXPECT_EQ(healthz_once(port(0), "degraded: redis unreachable"), "degraded: redis unreachable");
  EXPECT_EQ(http_request(port(0), http::verb::get, "/healthz", "").status, 200u) << "it still serves";
  const std::string id = post_run(port(0), run_request("numbers", R"({"count":"1000"})"));
  ws_client on_a(port(0), "/executions/" + id + "/stream?after=-1");
  const auto w = look_at(on_a.all());
  ASSERT_TRUE(w.exit);
  EXPECT_EQ(w.exit->code, 0);
  redis.start();
  EXPECT_EQ(healthz_once(port(0), "ok"), "ok");
}

/// The same three servers with the audit in one PostgreSQL instead of a SQLite file each.
class ClusterWithPostgres : public Cluster {
 protected:
  void SetUp() override { start_servers(postgres.audit_toml()); }
  void TearDown() override { servers.clear(); }  // before the database they write to

  postgres_server postgres;
};

std::vector<std::string> listed_ids(std::uint16_t port) {
  const auto answer = http_request(port, http::verb::get, "/executions?limit=100", viewer_token);
  EXPECT_EQ(answer.status, 200u) << answer.body;
  auto records = common::decode_execution_records(answer.body);
  std::vector<std::string> ids;
  if (records) {
    for (const auto& r : *records) ids.push_back(r.execution_id + " " + r.state);
  }
  std::sort(ids.begin(), ids.end());
  return ids;
}

TEST_F(ClusterWithPostgres, EveryServerListsEveryExecutionTheSame) {
  std::vector<std::string> expected;
  for (const std::size_t on : {0u, 0u, 1u, 2u}) {
    const std::string id = post_run(port(on), run_request("numbers", R"({"count":"100"})"));
    ws_client(port(on), "/executions/" + id + "/stream?after=-1").all();
    expected.push_back(id + " exited");
  }
  std::sort(expected.begin(), expected.end());
  // Written within the audit's second; then all three list the same four, ended.
  for (int i = 0; i < 50 && listed_ids(port(2)) != expected; ++i) std::this_thread::sleep_for(100ms);
  for (std::size_t i = 0; i < 3; ++i) EXPECT_EQ(listed_ids(port(i)), expected) << "server " << i;
}

TEST_F(ClusterWithPostgres, PostgresStoppedMidRunTheStreamsGoOnAndTheStoredOutputIsWhole) {
  const std::string id = post_run(port(0), run_request("ticks"));
  ws_client on_b(port(1), "/executions/" + id + "/stream?after=-1");
  std::this_thread::sleep_for(1s);
  postgres.stop();
  EXPECT_EQ(healthz_once(port(0), "degraded: postgres unreachable"), "degraded: postgres unreachable");
  postgres.start();
  std::this_thread::sleep_for(2s);
  EXPECT_EQ(http_request(port(2), http::verb::post, "/executions/" + id + "/cancel", operator_token).status, 202u);
  const auto w = look_at(on_b.all());
  ASSERT_TRUE(w.exit) << "closed " << on_b.reason().code << " " << on_b.reason().reason << ", " << on_b.error().message()
                      << ", after " << w.out.size() << " bytes";
  EXPECT_TRUE(w.consecutive);
  EXPECT_EQ(w.gaps, 0u);
  ASSERT_GE(w.out.size(), 40u) << "ticks went on while the database was down";
  // C never held it nor watched it: its download comes from PostgreSQL, and has every line.
  std::string stored;
  for (int i = 0; i < 100 && stored != w.out; ++i) {
    std::this_thread::sleep_for(100ms);
    stored = http_request(port(2), http::verb::get, "/executions/" + id + "/output?format=text", viewer_token).body;
  }
  EXPECT_EQ(stored, w.out);
  EXPECT_EQ(healthz_once(port(0), "ok"), "ok");
}

TEST(ClusterConfig, MistakesInClusterAndAuditAreClearErrors) {
  loopback_sshd sshd;
  const std::string head = "[server]\nlisten = \"127.0.0.1:8080\"\nanonymous = \"operator\"\n" + sshd.machine_toml("box");
  auto good = server::parse_config(head + "[cluster]\nredis = \"127.0.0.1:6379\"\nserver_id = \"eu-1.a\"\nlease_ms = 2000\n"
                                          "[audit]\npostgres = \"host=/run/postgresql dbname=cmdcast\"\n",
                                   "c.toml");
  ASSERT_TRUE(good.ok()) << good.error();
  EXPECT_EQ(good->cluster.redis, "127.0.0.1:6379");
  EXPECT_EQ(good->cluster.server_id, "eu-1.a");
  EXPECT_EQ(good->cluster.lease, std::chrono::milliseconds(2000));
  EXPECT_EQ(good->audit_postgres, "host=/run/postgresql dbname=cmdcast");
  EXPECT_TRUE(good->server.audit_db.empty()) << "no SQLite file beside PostgreSQL";
  auto unix_socket = server::parse_config(head + "[cluster]\nredis = \"/run/redis/redis.sock\"\nserver_id = \"a\"\n", "c.toml");
  EXPECT_TRUE(unix_socket.ok()) << unix_socket.error();
  auto name_only = server::parse_config(head + "[cluster]\nserver_id = \"a\"\n[audit]\npostgres = \"dbname=x\"\n", "c.toml");
  ASSERT_TRUE(name_only.ok()) << "a server_id alone names this server in a shared audit: " << name_only.error();
  EXPECT_TRUE(name_only->cluster.redis.empty());
  for (const auto& [tables, problem] : std::vector<std::pair<std::string, std::string>>{
           {"[cluster]\nredis = \"127.0.0.1:6379\"\n", "cluster.server_id: missing"},
           {"[cluster]\nredis = \"localhost\"\nserver_id = \"a\"\n", "cluster.redis: must be host:port"},
           {"[cluster]\nredis = \"h:port\"\nserver_id = \"a\"\n", "cluster.redis: must be host:port"},
           {"[cluster]\nredis = \"h:1\"\nserver_id = \"a b\"\n", "cluster.server_id: must be 1 to 64"},
           {"[cluster]\nredis = \"h:1\"\nserver_id = \"a\"\nlease_ms = 10\n", "cluster.lease_ms: must be between"},
           {"[cluster]\nredis = \"h:1\"\nserver_id = \"a\"\nshards = 3\n", "cluster.shards: unknown key"},
           {"[audit]\npostgres = \"\"\n", "audit.postgres: must not be empty"},
           {"[audit]\npostgres = \"dbname=x\"\nsqlite = \"y\"\n", "audit.sqlite: unknown key"},
       }) {
    auto bad = server::parse_config(head + tables, "c.toml");
    ASSERT_FALSE(bad.ok()) << tables;
    EXPECT_NE(bad.error().find(problem), std::string::npos) << tables << "\n" << bad.error();
  }
  auto both = server::parse_config("[server]\nlisten = \"127.0.0.1:8080\"\nanonymous = \"operator\"\naudit_db = \"x.db\"\n" +
                                       sshd.machine_toml("box") + "[audit]\npostgres = \"dbname=x\"\n",
                                   "c.toml");
  ASSERT_FALSE(both.ok());
  EXPECT_NE(both.error().find("audit.postgres: replaces server.audit_db"), std::string::npos) << both.error();
}

}  // namespace
}  // namespace cmdcast::testing
