// Long-polling, POST runs, the audit store and progress, against cmdcast-server as a process
// and a loopback sshd.
#include <gtest/gtest.h>
#include <sqlite3.h>
#include <unistd.h>

#include <chrono>
#include <ctime>
#include <thread>

#include "server_harness.hpp"

namespace cmdcast::testing {
namespace {

using clock_type = std::chrono::steady_clock;
using common::error_code;

void wait_until_finished(std::uint16_t port, const std::string& id) {
  const auto deadline = clock_type::now() + std::chrono::seconds(60);
  while (record_of(port, id).state == "running" && clock_type::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
}

class Polling : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    shared_.start([](const std::string&) { return "audit_head_bytes = 65536\naudit_tail_bytes = 65536\n"; });
  }
  static void TearDownTestSuite() { shared_.stop(); }
  static std::uint16_t port() { return shared_.port(); }
  static inline shared_server shared_;
};

TEST_F(Polling, YieldsTheSameEventsAsAWebSocketSubscriber) {
  ws_client runner(port(), "/machines/box/commands/stream");
  runner.send(run_request("lines"));
  const auto first = runner.next();
  ASSERT_TRUE(first);
  const std::string id = std::get<common::started_event>(*common::decode_event(*first)).execution_id;
  // The poller starts while the command runs and follows it to the end.
  const auto polled = poll_to_the_end(port(), id);
  auto streamed = runner.all();
  streamed.insert(streamed.begin(), *common::decode_event(*first));
  EXPECT_EQ(sequenced(polled), sequenced(streamed));
  EXPECT_EQ(text_of(polled, common::output_stream::out), "line 1\nline 2\nline 3\n");
  EXPECT_EQ(of_type<common::exit_event>(polled).size(), 1u);
  // A poller counts as a watcher while it polls.
  EXPECT_FALSE(of_type<common::watchers_event>(polled).empty());
}

TEST_F(Polling, ALongPollIsAnsweredByTheNextEventNotByItsTimeout) {
  const std::string id = post_run(port(), run_request("slow"));
  // Wait for "started" to be out, then poll for what comes next: "finished", 1.5 s later.
  common::seq_t after = -1;
  std::string text;
  while (text.find("started") == std::string::npos) {
    auto p = poll(port(), id, after, 5);
    text += text_of(p.events, common::output_stream::out);
    after = p.next;
  }
  const auto asked = clock_type::now();
  auto p = poll(port(), id, after, 30);
  const auto waited = clock_type::now() - asked;
  EXPECT_NE(text_of(p.events, common::output_stream::out).find("finished"), std::string::npos);
  EXPECT_LT(waited, std::chrono::seconds(10)) << "answered by the 30 s timeout, not by the event";
  // Nothing new within `wait`: an empty answer with the same next.
  wait_until_finished(port(), id);
  const auto last = poll(port(), id, -1, 0).next;
  auto end = poll(port(), id, last, 1);
  EXPECT_TRUE(end.events.empty());
  EXPECT_EQ(end.next, last);
  EXPECT_TRUE(end.done);
}

TEST_F(Polling, BadPollsGetClearErrors) {
  const std::string id = post_run(port(), run_request("lines"));
  wait_until_finished(port(), id);
  for (const std::string query : {"after=abc", "after=-2", "after=1e3", "after=99999", "wait=-1", "wait=soon"}) {
    const auto answer = http_request(port(), http::verb::get, "/executions/" + id + "/events?" + query, viewer_token);
    EXPECT_EQ(answer.status, 400u) << query;
    auto e = common::decode_event(answer.body);
    ASSERT_TRUE(e.ok()) << answer.body;
    EXPECT_EQ(std::get<common::error_event>(*e).code, error_code::bad_request) << query;
  }
  EXPECT_NE(http_request(port(), http::verb::get, "/executions/" + id + "/events?after=99999", viewer_token)
                .body.find("past the last event"),
            std::string::npos);
  EXPECT_EQ(http_request(port(), http::verb::get, "/executions/nope/events", viewer_token).status, 404u);
  EXPECT_EQ(http_request(port(), http::verb::get, "/executions/" + id + "/events", "").status, 401u);
}

TEST_F(Polling, PostRunsAreCheckedLikeWebSocketRuns) {
  struct bad {
    std::string machine, body, token;
    unsigned status;
    error_code code;
  };
  for (const auto& b : std::vector<bad>{
           {"box", "{not json", operator_token, 400, error_code::bad_request},
           {"box", run_request("lines"), viewer_token, 403, error_code::forbidden},
           {"box", run_request("lines"), "", 401, error_code::unauthorized},
           {"nowhere", run_request("lines"), operator_token, 404, error_code::unknown_machine},
           {"box", run_request("rm_everything"), operator_token, 404, error_code::unknown_action},
           {"box", run_request("restart_service", R"({"service":"nginx; rm -rf /"})"), operator_token, 400,
            error_code::bad_params},
           {"box", R"({"action_type":"lines","params":{},"command":"reboot"})", operator_token, 403,
            error_code::not_whitelisted},
       }) {
    const auto answer = http_request(port(), http::verb::post, "/machines/" + b.machine + "/commands", b.token, b.body);
    EXPECT_EQ(answer.status, b.status) << b.body;
    auto e = common::decode_event(answer.body);
    ASSERT_TRUE(e.ok()) << answer.body;
    EXPECT_EQ(std::get<common::error_event>(*e).code, b.code) << b.body;
  }
}

TEST_F(Polling, TheAuditKeepsTheHeadAndTailOfALargeOutputWithTrueByteCounts) {
  // seq 1 7000000: 55 MB of numbered lines, so what is kept can be checked line by line.
  const int count = 7000000;
  std::string expected;
  expected.reserve(56u << 20);
  for (int i = 1; i <= count; ++i) expected += std::to_string(i) + "\n";
  const std::string id = post_run(port(), run_request("numbers", R"({"count":")" + std::to_string(count) + "\"}"));
  wait_until_finished(port(), id);
  const auto r = record_of(port(), id);
  EXPECT_EQ(r.state, "exited");
  EXPECT_EQ(r.bytes_stdout, static_cast<std::int64_t>(expected.size()));
  EXPECT_TRUE(r.output_truncated);
  // The replay buffer (1 MiB) no longer holds the start: this comes from the audit store.
  const auto events = poll_to_the_end(port(), id);
  const auto gaps = of_type<common::gap_event>(events);
  ASSERT_EQ(gaps.size(), 1u);
  std::string head, tail;
  bool after_gap = false;
  for (const auto& e : events) {
    if (std::holds_alternative<common::gap_event>(e)) after_gap = true;
    if (auto* o = std::get_if<common::output_event>(&e)) (after_gap ? tail : head) += o->data;
  }
  // At least the configured 64 KiB each, rounded up to whole events: at most one event more,
  // which is a read (up to 1 MiB) and what waited to be coalesced with it (under 16 KiB).
  constexpr std::size_t at_most = (64u << 10) + (1u << 20) + (16u << 10);
  EXPECT_GE(head.size(), 64u << 10);
  EXPECT_LE(head.size(), at_most);
  EXPECT_GE(tail.size(), 64u << 10);
  EXPECT_LE(tail.size(), at_most);
  EXPECT_EQ(head, expected.substr(0, head.size()));
  EXPECT_EQ(tail, expected.substr(expected.size() - tail.size()));
  EXPECT_EQ(of_type<common::exit_event>(events).size(), 1u);
  // Attaching over a WebSocket gives the same.
  ws_client attach(port(), "/executions/" + id + "/stream", ws_options{.token = viewer_token});
  EXPECT_EQ(sequenced(attach.all()), sequenced(events));
  EXPECT_EQ(attach.reason().code, websocket::close_code::normal);
}

TEST(Audit, AServerKilledMidCommandFindsItLostAfterARestartWithItsOutput) {
  loopback_sshd sshd;
  std::string id;
  {
    server_process first(sshd);
    id = post_run(first.port(), run_request("ticks"));
    // Watch until tick 8 has been printed (1.6 s in), give the store its second, then crash.
    ws_client watcher(first.port(), "/executions/" + id + "/stream", ws_options{.token = viewer_token});
    std::string seen;
    while (seen.find("tick 8\n") == std::string::npos) {
      const auto m = watcher.next();
      ASSERT_TRUE(m);
      auto e = common::decode_event(*m);
      if (auto* o = std::get_if<common::output_event>(&*e)) seen += o->data;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1200));
    first.kill_hard();
  }
  server_process second(sshd);
  const auto r = record_of(second.port(), id);
  EXPECT_EQ(r.state, "lost");
  EXPECT_TRUE(r.ended_at.has_value());
  EXPECT_EQ(r.action_type, "ticks");
  EXPECT_EQ(r.user, "olivia");
  const auto events = poll_to_the_end(second.port(), id);
  const std::string out = text_of(events, common::output_stream::out);
  EXPECT_EQ(out.substr(0, 14), "tick 1\ntick 2\n");
  EXPECT_NE(out.find("tick 8\n"), std::string::npos) << out;
  const auto exits = of_type<common::exit_event>(events);
  ASSERT_EQ(exits.size(), 1u);
  EXPECT_EQ(exits[0].state, common::exit_state::lost);
  // Listed as lost, and a WebSocket attach ends with the same exit event.
  const auto lost = http_request(second.port(), http::verb::get, "/executions?state=lost", viewer_token);
  EXPECT_NE(lost.body.find(id), std::string::npos);
  ws_client attach(second.port(), "/executions/" + id + "/stream", ws_options{.token = viewer_token});
  EXPECT_EQ(sequenced(attach.all()), sequenced(events));
}

TEST(Audit, ExecutionsPastTheRetentionAreDeletedAtStartUp) {
  loopback_sshd sshd;
  const std::string retention = "audit_retention_days = 7\n";
  std::string old_id, new_id;
  {
    server_process first(sshd, retention);
    old_id = post_run(first.port(), run_request("lines"));
    new_id = post_run(first.port(), run_request("lines"));
    wait_until_finished(first.port(), old_id);
    wait_until_finished(first.port(), new_id);
    EXPECT_EQ(first.terminate(), 0);
  }
  // Age one of them by hand: started eight days ago.
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open((sshd.dir() + "/cmdcast.db").c_str(), &db), SQLITE_OK);
  const auto eight_days_ago = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now() - std::chrono::hours(24 * 8));
  char started[32];
  std::strftime(started, sizeof started, "%Y-%m-%dT%H:%M:%S.000Z", std::gmtime(&eight_days_ago));
  const std::string sql = "UPDATE executions SET started_at = '" + std::string(started) + "' WHERE id = '" + old_id + "'";
  ASSERT_EQ(sqlite3_exec(db, sql.c_str(), nullptr, nullptr, nullptr), SQLITE_OK);
  sqlite3_close(db);

  server_process second(sshd, retention);
  EXPECT_EQ(http_request(second.port(), http::verb::get, "/executions/" + old_id, viewer_token).status, 404u);
  EXPECT_EQ(http_request(second.port(), http::verb::get, "/executions/" + old_id + "/events", viewer_token).status, 404u);
  EXPECT_EQ(record_of(second.port(), new_id).state, "exited");
  EXPECT_EQ(text_of(poll_to_the_end(second.port(), new_id), common::output_stream::out), "line 1\nline 2\nline 3\n");
  EXPECT_NE(second.log().find("\"event\":\"audit_pruned\""), std::string::npos);
}

TEST(Progress, ARealAptReinstallReportsProgressUpTo100) {
  ASSERT_EQ(::geteuid(), 0u) << "apt-get install --reinstall needs root (CI runs as root)";
  loopback_sshd sshd;
  server_process srv(sshd);
  ws_client c(srv.port(), "/machines/box/commands/stream");
  c.send(run_request("apt_reinstall", R"({"package":"hostname"})"));
  const auto events = c.all();
  const auto exits = of_type<common::exit_event>(events);
  ASSERT_EQ(exits.size(), 1u);
  ASSERT_EQ(exits[0].code, 0) << text_of(events, common::output_stream::out) << text_of(events, common::output_stream::err);
  const auto progress = of_type<common::progress_event>(events);
  ASSERT_GE(progress.size(), 3u);
  double last = 0;
  bool unpacking = false;
  for (const auto& p : progress) {
    if (!p.percent) continue;
    EXPECT_GE(*p.percent, last) << p.phase;  // never backwards
    last = *p.percent;
    unpacking = unpacking || p.phase.find("hostname") != std::string::npos;
  }
  EXPECT_EQ(last, 100.0);
  EXPECT_TRUE(unpacking) << "a phase names the package";
  // Only changes are sent: no two progress events in a row say the same.
  for (std::size_t i = 1; i < progress.size(); ++i) {
    EXPECT_FALSE(progress[i].percent == progress[i - 1].percent && progress[i].phase == progress[i - 1].phase);
  }
}

}  // namespace
}  // namespace cmdcast::testing
