// Fleet runs against the real server and a loopback sshd: one action on every machine of a
// group (several machine entries on the one sshd, and one whose port nobody listens on), each
// an ordinary execution, watched together on one batch stream or by polling, with `parallel`,
// `stop_on_failure`, cancel and resume.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "config/config.hpp"
#include "server_harness.hpp"

namespace cmdcast::testing {
namespace {

class Fleet : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    sshd_ = std::make_unique<loopback_sshd>();
    std::string down = sshd_->machine_toml("down");
    const auto at = down.find("port = ");
    down.replace(at, down.find('\n', at) - at, "port = 1");  // nobody listens there
    server_ = std::make_unique<server_process>(
        *sshd_, "", std::vector<std::string>{},
        sshd_->machine_toml("m2") + sshd_->machine_toml("m3") + sshd_->machine_toml("m4") + down +
            "[groups]\nfour = [\"box\", \"m2\", \"m3\", \"m4\"]\nfive = [\"box\", \"m2\", \"down\", \"m3\", \"m4\"]\n");
  }
  static void TearDownTestSuite() {
    server_.reset();
    sshd_.reset();
  }
  static std::uint16_t port() { return server_->port(); }

  /// POST /groups/{group}/commands as `token`: the answer.
  static http_answer start(const std::string& group, const std::string& body, const std::string& token = operator_token) {
    return http_request(port(), http::verb::post, "/groups/" + group + "/commands", token, body);
  }
  static common::batch_record started(const std::string& group, const std::string& body) {
    const auto answer = start(group, body);
    EXPECT_EQ(answer.status, 202u) << answer.body;
    auto b = common::decode_batch_record(answer.body);
    EXPECT_TRUE(b.ok()) << answer.body;
    return b.ok() ? *b : common::batch_record{};
  }
  static common::batch_record batch_of(const std::string& id) {
    const auto answer = http_request(port(), http::verb::get, "/batches/" + id, viewer_token);
    EXPECT_EQ(answer.status, 200u) << answer.body;
    auto b = common::decode_batch_record(answer.body);
    EXPECT_TRUE(b.ok()) << answer.body;
    return b.ok() ? *b : common::batch_record{};
  }
  /// Watches a batch over its stream to the end.
  static batch_view watch(const std::string& id, const std::string& token = viewer_token, const std::string& after = "") {
    ws_client c(port(), "/batches/" + id + "/stream" + (after.empty() ? "" : "?after=" + after), ws_options{token});
    batch_view v;
    while (auto m = c.next()) v.add(*m);
    EXPECT_EQ(c.reason().code, 1000) << c.reason().reason;
    return v;
  }

  static inline std::unique_ptr<loopback_sshd> sshd_;
  static inline std::unique_ptr<server_process> server_;
};

TEST_F(Fleet, MachinesListTheirGroups) {
  auto machines = common::decode_machines(http_request(port(), http::verb::get, "/machines", viewer_token).body);
  ASSERT_TRUE(machines.ok()) << machines.error();
  std::map<std::string, std::vector<std::string>> groups;
  for (const auto& m : *machines) groups[m.id] = m.groups;
  EXPECT_EQ(groups["box"], (std::vector<std::string>{"five", "four"}));
  EXPECT_EQ(groups["down"], std::vector<std::string>{"five"});
}

TEST_F(Fleet, AMachineThatIsDownFailsWhileTheOthersCompleteWithTheirWholeOutput) {
  const auto b = started("five", run_request("lines"));
  ASSERT_EQ(b.executions.size(), 5u);
  EXPECT_EQ(b.group, "five");
  const auto v = watch(b.batch_id);
  ASSERT_EQ(v.by_execution.size(), 5u);
  for (const auto& m : b.executions) {
    const auto& events = v.by_execution.at(m.execution_id);
    EXPECT_EQ(v.machine_of.at(m.execution_id), m.machine_id);
    EXPECT_EQ(sequenced(events).size(), of_type<common::output_event>(events).size() +
                                             of_type<common::started_event>(events).size() +
                                             of_type<common::exit_event>(events).size() +
                                             of_type<common::progress_event>(events).size())
        << "from seq 0, no hole";
    const auto exits = of_type<common::exit_event>(events);
    ASSERT_EQ(exits.size(), 1u) << m.machine_id;
    if (m.machine_id == "down") {
      EXPECT_EQ(exits[0].state, common::exit_state::failed);
      EXPECT_NE(text_of(events, common::output_stream::err).find("cmdcast: "), std::string::npos);
    } else {
      EXPECT_EQ(exits[0].code, 0) << m.machine_id;
      EXPECT_EQ(text_of(events, common::output_stream::out), "line 1\nline 2\nline 3\n") << m.machine_id;
    }
  }
  ASSERT_FALSE(v.summaries.empty());
  EXPECT_EQ(v.summaries.back().state, "failed");
  EXPECT_EQ(v.summaries.back().counts, (common::batch_counts{0, 0, 4, 1, 0}));
  const auto record = batch_of(b.batch_id);
  EXPECT_EQ(record.state, "failed");
  EXPECT_TRUE(record.ended_at);
  for (const auto& m : record.executions) {
    EXPECT_EQ(record_of(port(), m.execution_id).machine_id, m.machine_id) << "an ordinary execution";
  }
}

TEST_F(Fleet, ParallelBoundsHowManyRunAtOnceOnTheRemote) {
  const std::string dir = "/tmp/cmdcast-par-" + std::to_string(::getpid());
  std::filesystem::remove(dir + ".log");
  const auto b = started("four", "{\"action_type\":\"concurrency\",\"params\":{\"dir\":\"" + dir + "\"},\"parallel\":2}");
  EXPECT_EQ(b.parallel, 2);
  EXPECT_EQ(b.counts.queued, 2) << "two wait for a slot";
  const auto v = watch(b.batch_id);
  EXPECT_EQ(v.summaries.back().counts.succeeded, 4);
  std::ifstream log(dir + ".log");
  std::vector<int> seen;
  for (int n; log >> n;) seen.push_back(n);
  ASSERT_EQ(seen.size(), 4u) << "each ran once";
  EXPECT_LE(*std::max_element(seen.begin(), seen.end()), 2) << "never more than two at once";
  std::filesystem::remove(dir + ".log");
  std::filesystem::remove_all(dir);
}

TEST_F(Fleet, StopOnFailureSkipsTheMachinesNotStartedYet) {
  const auto b = started("four", "{\"action_type\":\"fail\",\"parallel\":1,\"stop_on_failure\":true}");
  const auto v = watch(b.batch_id);
  EXPECT_EQ(v.summaries.back().counts, (common::batch_counts{0, 0, 0, 1, 3}));
  EXPECT_EQ(v.summaries.back().state, "failed");
  const auto first = v.by_execution.at(b.executions[0].execution_id);
  EXPECT_EQ(of_type<common::exit_event>(first).at(0).code, 3);
  for (std::size_t i = 1; i < 4; ++i) {
    const auto& events = v.by_execution.at(b.executions[i].execution_id);
    EXPECT_TRUE(of_type<common::started_event>(events).empty()) << "it never ran";
    EXPECT_EQ(text_of(events, common::output_stream::err),
              "cmdcast: skipped: the fleet run stops on failure, and \"box\" failed\n");
    EXPECT_EQ(of_type<common::exit_event>(events).at(0).state, common::exit_state::cancelled);
  }
}

TEST_F(Fleet, CancellingTheBatchCancelsEveryExecutionNotEnded) {
  const auto b = started("four", "{\"action_type\":\"forever\",\"parallel\":2}");
  ws_client c(port(), "/batches/" + b.batch_id + "/stream", ws_options{viewer_token});
  EXPECT_EQ(http_request(port(), http::verb::post, "/batches/" + b.batch_id + "/cancel", viewer_token).status, 403u);
  EXPECT_EQ(http_request(port(), http::verb::post, "/batches/" + b.batch_id + "/cancel", operator_token).status, 202u);
  batch_view v;
  while (auto m = c.next()) v.add(*m);
  EXPECT_EQ(v.summaries.back().state, "cancelled");
  EXPECT_EQ(v.summaries.back().counts.cancelled, 4);
  for (const auto& m : b.executions) EXPECT_EQ(record_of(port(), m.execution_id).state, "cancelled");
}

TEST_F(Fleet, AWatcherResumesWithEachExecutionsOwnAfterGapFree) {
  const auto b = started("four", run_request("lines"));
  batch_view first;
  {
    ws_client c(port(), "/batches/" + b.batch_id + "/stream", ws_options{viewer_token});
    std::size_t outputs = 0;
    while (outputs < 6) {
      auto m = c.next();
      ASSERT_TRUE(m);
      first.add(*m);
      outputs += m->find("\"type\":\"stdout\"") != std::string::npos;
    }
  }  // the connection drops mid-run
  const auto rest = watch(b.batch_id, viewer_token, first.after());
  for (const auto& m : b.executions) {
    std::vector<event> all;
    if (first.by_execution.count(m.execution_id)) all = first.by_execution.at(m.execution_id);
    const auto& more = rest.by_execution.at(m.execution_id);
    all.insert(all.end(), more.begin(), more.end());
    const auto seqs = sequenced(all);
    for (std::size_t i = 0; i < seqs.size(); ++i) EXPECT_EQ(common::event_seq(seqs[i]), static_cast<common::seq_t>(i));
    EXPECT_EQ(text_of(all, common::output_stream::out), "line 1\nline 2\nline 3\n") << m.machine_id;
  }
}

TEST_F(Fleet, PollingFollowsEveryExecutionToTheEnd) {
  const auto b = started("four", run_request("lines"));
  batch_view v;
  std::string after, last_answer;
  // (Each poll waits for news: a run of a few seconds takes a few dozen polls at most.)
  for (int polls = 0; polls < 60; ++polls) {
    const auto answer = http_request(port(), http::verb::get,
                                     "/batches/" + b.batch_id + "/events?wait=5" + (after.empty() ? "" : "&after=" + after),
                                     viewer_token);
    ASSERT_EQ(answer.status, 200u) << answer.body;
    const auto json_start = answer.body.find('[');
    const auto json_end = answer.body.rfind("],\"next\":");
    ASSERT_NE(json_end, std::string::npos) << answer.body;
    const auto next_at = json_end + 9;  // "next" is "EXEC:SEQ,..."
    after = answer.body.substr(next_at + 1, answer.body.find('"', next_at + 1) - next_at - 1);
    // Each event of the array, with its tags.
    std::size_t depth = 0, start = 0;
    for (std::size_t i = json_start + 1; i < json_end; ++i) {
      const char ch = answer.body[i];
      if (ch == '"') {
        for (++i; answer.body[i] != '"'; ++i) i += answer.body[i] == '\\';
      } else if (ch == '{') {
        if (depth++ == 0) start = i;
      } else if (ch == '}' && --depth == 0) {
        v.add(answer.body.substr(start, i + 1 - start));
      }
    }
    last_answer = answer.body;
    if (answer.body.find("\"done\":true") != std::string::npos) break;
  }
  SCOPED_TRACE(last_answer);
  for (const auto& m : b.executions) {
    EXPECT_EQ(text_of(v.by_execution.at(m.execution_id), common::output_stream::out), "line 1\nline 2\nline 3\n");
  }
  EXPECT_EQ(v.summaries.back().state, "succeeded");
}

TEST_F(Fleet, ARunOnSomeMachinesOfTheGroupReRunsJustThose) {
  const auto b = started("five", "{\"action_type\":\"lines\",\"machines\":[\"m3\",\"box\"]}");
  ASSERT_EQ(b.executions.size(), 2u);
  EXPECT_EQ(b.executions[0].machine_id, "box") << "in the group's order";
  EXPECT_EQ(b.executions[1].machine_id, "m3");
  EXPECT_EQ(watch(b.batch_id).summaries.back().counts.succeeded, 2);
  const auto outside = start("four", "{\"action_type\":\"lines\",\"machines\":[\"down\"]}");
  EXPECT_EQ(outside.status, 404u);
  EXPECT_NE(outside.body.find("not in group"), std::string::npos) << outside.body;
  EXPECT_EQ(start("four", "{\"action_type\":\"lines\",\"machines\":[]}").status, 400u);
}

TEST_F(Fleet, AViewerCanWatchABatchButNotStartOne) {
  const auto refused = start("four", run_request("lines"), viewer_token);
  EXPECT_EQ(refused.status, 403u);
  const auto b = started("four", run_request("fail"));
  const auto v = watch(b.batch_id, viewer_token);
  EXPECT_EQ(v.summaries.back().counts.failed, 4);
  const auto list = http_request(port(), http::verb::get, "/batches", viewer_token);
  EXPECT_EQ(list.status, 200u);
  EXPECT_NE(list.body.find(b.batch_id), std::string::npos);
}

TEST_F(Fleet, WrongFleetRequestsAreRefusedClearly) {
  EXPECT_EQ(start("nope", run_request("lines")).status, 404u);
  EXPECT_EQ(start("four", "{\"action_type\":\"lines\",\"parallel\":0}").status, 400u);
  EXPECT_EQ(start("four", "{\"action_type\":\"lines\",\"parallel\":\"2\"}").status, 400u);
  EXPECT_EQ(start("four", "{\"action_type\":\"lines\",\"colour\":\"red\"}").status, 400u);
  EXPECT_EQ(start("four", "not json").status, 400u);
  const auto approval = start("four", run_request("approved_echo", R"({"word":"x"})"));
  EXPECT_EQ(approval.status, 400u);
  EXPECT_NE(approval.body.find("needs approval"), std::string::npos) << approval.body;
  const auto bad_param = start("four", run_request("restart_service", R"({"service":"a b"})"));
  EXPECT_EQ(bad_param.status, 400u);
  EXPECT_NE(bad_param.body.find("machine \\\"box\\\""), std::string::npos) << bad_param.body;
  EXPECT_EQ(http_request(port(), http::verb::get, "/batches/nope", viewer_token).status, 404u);
  const auto b = started("four", run_request("fail"));
  ws_client bad_after(port(), "/batches/" + b.batch_id + "/stream?after=someone:3", ws_options{viewer_token});
  const auto events = bad_after.all();
  EXPECT_EQ(of_type<common::error_event>(events).at(0).code, common::error_code::bad_request);
  EXPECT_EQ(bad_after.reason().code, 1008);
  watch(b.batch_id);
}

TEST(FleetConfig, GroupMistakesAreClearErrors) {
  loopback_sshd sshd;
  const std::string head = "[server]\nlisten = \"127.0.0.1:8080\"\nanonymous = \"operator\"\n" + sshd.machine_toml("box") +
                           sshd.machine_toml("m2");
  auto good = server::parse_config(head + "[groups]\npair = [\"m2\", \"box\"]\n[actions.a]\ncommand = \"x\"\nmachines = [\"pair\"]\n", "g.toml");
  ASSERT_TRUE(good.ok()) << good.error();
  EXPECT_EQ(good->groups.at("pair"), (std::vector<std::string>{"m2", "box"}));
  EXPECT_EQ(good->actions_for(*good->find_machine("box")).size(), 1u) << "an action may name a group";
  for (const auto& [groups, problem] : std::vector<std::pair<std::string, std::string>>{
           {"g = [\"nope\"]", "groups.g: names an unknown machine \"nope\""},
           {"g = [\"box\", \"box\"]", "groups.g: names machine \"box\" twice"},
           {"g = []", "groups.g: must name at least one machine"},
           {"box = [\"m2\"]", "groups.box: \"box\" is a machine's id"},
           {"\"bad id!\" = [\"m2\"]", "a group id must be 1 to 64 of"},
           {"g = \"box\"", "groups.g: must be an array of strings"},
       }) {
    auto bad = server::parse_config(head + "[groups]\n" + groups + "\n", "g.toml");
    ASSERT_FALSE(bad.ok()) << groups;
    EXPECT_NE(bad.error().find(problem), std::string::npos) << groups << "\n" << bad.error();
  }
  auto unknown = server::parse_config(head + "[actions.a]\ncommand = \"x\"\nmachines = [\"web\"]\n", "g.toml");
  ASSERT_FALSE(unknown.ok());
  EXPECT_NE(unknown.error().find("names an unknown machine or group \"web\""), std::string::npos) << unknown.error();
}

TEST(FleetAudit, BatchesAreInTheAuditAndOutliveTheServerARunningOneAsLost) {
  loopback_sshd sshd;
  const std::string extra = sshd.machine_toml("m2") + "[groups]\npair = [\"box\", \"m2\"]\n";
  std::string done_id, running_id;
  {
    server_process first(sshd, "", {}, extra);
    auto answer = http_request(first.port(), http::verb::post, "/groups/pair/commands", operator_token, run_request("fail"));
    ASSERT_EQ(answer.status, 202u) << answer.body;
    done_id = common::decode_batch_record(answer.body)->batch_id;
    ws_client(first.port(), "/batches/" + done_id + "/stream", ws_options{viewer_token}).all();
    answer = http_request(first.port(), http::verb::post, "/groups/pair/commands", operator_token, run_request("forever"));
    running_id = common::decode_batch_record(answer.body)->batch_id;
    std::this_thread::sleep_for(std::chrono::milliseconds(500));  // both running, and written
    first.kill_hard();
  }
  server_process second(sshd, "", {}, extra);
  const auto done = common::decode_batch_record(
      http_request(second.port(), http::verb::get, "/batches/" + done_id, viewer_token).body);
  ASSERT_TRUE(done.ok()) << done.error();
  EXPECT_EQ(done->state, "failed");
  EXPECT_EQ(done->counts.failed, 2);
  EXPECT_EQ(done->executions.size(), 2u);
  const auto lost = common::decode_batch_record(
      http_request(second.port(), http::verb::get, "/batches/" + running_id, viewer_token).body);
  ASSERT_TRUE(lost.ok()) << lost.error();
  EXPECT_EQ(lost->state, "lost");
  for (const auto& m : lost->executions) EXPECT_EQ(m.state, "lost") << m.machine_id;
  const auto list = http_request(second.port(), http::verb::get, "/batches", viewer_token).body;
  EXPECT_NE(list.find(done_id), std::string::npos);
  EXPECT_NE(list.find(running_id), std::string::npos);
}

}  // namespace
}  // namespace cmdcast::testing
