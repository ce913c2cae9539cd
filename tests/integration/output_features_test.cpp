// What users of other run-it-remotely tools keep asking for, against the real server and a
// loopback sshd: a time on every event, the whole output as a download (text, ansi, ndjson,
// with times, following a run), secret params masked everywhere, exclusive actions queued one
// at a time per machine, and actions a second operator must approve.
#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "config/config.hpp"
#include "server_harness.hpp"

namespace cmdcast::testing {
namespace {

using clock_type = std::chrono::steady_clock;

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

/// A unique file name the exclusive_wait action waits for.
std::string go_file() {
  static int n = 0;
  return "/tmp/cmdcast-go-" + std::to_string(::getpid()) + "x" + std::to_string(++n);
}

void touch(const std::string& path) { std::ofstream(path) << "go"; }

class OutputFeatures : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { shared_.start(); }
  static void TearDownTestSuite() { shared_.stop(); }
  static std::uint16_t port() { return shared_.port(); }
  static std::string dir() { return shared_.sshd->dir(); }

  static http_answer get(const std::string& target, const std::string& token = viewer_token) {
    return http_request(port(), http::verb::get, target, token);
  }
  static http_answer post(const std::string& target, const std::string& token, const std::string& body = "") {
    return http_request(port(), http::verb::post, target, token, body);
  }
  /// Waits (up to 20 s) until the record of `id` is in `state`.
  static common::execution_record wait_for_state(const std::string& id, const std::string& state) {
    const auto deadline = clock_type::now() + std::chrono::seconds(20);
    common::execution_record r;
    while (clock_type::now() < deadline) {
      r = record_of(port(), id);
      if (r.state == state) return r;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    ADD_FAILURE() << id << " never reached " << state << " (it is " << r.state << ")";
    return r;
  }
  /// Watches `id` over a WebSocket to the end.
  static std::vector<event> watch(const std::string& id) {
    ws_client c(port(), "/executions/" + id + "/stream", ws_options{viewer_token});
    return c.all();
  }

  static inline shared_server shared_;
};

// --- Time -------------------------------------------------------------------------------

TEST_F(OutputFeatures, OutputEventsCarryTheirTimeSinceTheStart) {
  const auto id = post_run(port(), run_request("lines"));
  const auto events = watch(id);
  const auto out = of_type<common::output_event>(events);
  ASSERT_GE(out.size(), 3u);
  std::int64_t last = 0;
  std::int64_t line3 = -1;
  for (const auto& o : out) {
    EXPECT_GE(o.t, last) << "times never go back";
    last = o.t;
    if (o.data.find("line 3") != std::string::npos) line3 = o.t;
  }
  // "line 3" is printed after two sleeps of 0.3 s.
  EXPECT_GE(line3, 550);
  EXPECT_LT(line3, 10000);
  EXPECT_LE(last, of_type<common::exit_event>(events).at(0).duration_ms);
}

// --- Download ---------------------------------------------------------------------------

const std::string coloured = "a \x1b[31mred\x1b[0m word\nprogress 10%\rprogress 100%\nno newline at the end";

TEST_F(OutputFeatures, DownloadsTheOutputAsTextAnsiAndEvents) {
  std::string params = "{\"value\":";
  common::append_json_string(params, coloured);
  params += "}";
  const auto id = post_run(port(), run_request("echo_value", params));
  watch(id);

  const auto text = get("/executions/" + id + "/output?format=text");
  EXPECT_EQ(text.status, 200u) << text.body;
  EXPECT_EQ(text.body, "a red word\nprogress 100%\nno newline at the end\n");

  const auto ansi = get("/executions/" + id + "/output?format=ansi");
  EXPECT_EQ(ansi.status, 200u);
  EXPECT_EQ(ansi.body, coloured);

  const auto ndjson = get("/executions/" + id + "/output?format=ndjson");
  EXPECT_EQ(ndjson.status, 200u);
  std::istringstream lines(ndjson.body);
  std::vector<event> events;
  for (std::string line; std::getline(lines, line);) {
    auto e = common::decode_event(line);
    ASSERT_TRUE(e.ok()) << line;
    events.push_back(*e);
  }
  ASSERT_GE(events.size(), 3u);
  EXPECT_EQ(sequenced(events).size(), events.size()) << "every event, in order, from seq 0";
  EXPECT_TRUE(std::holds_alternative<common::started_event>(events.front()));
  EXPECT_TRUE(std::holds_alternative<common::exit_event>(events.back()));
  EXPECT_EQ(text_of(events, common::output_stream::out), coloured);

  const auto text_default = get("/executions/" + id + "/output");
  EXPECT_EQ(text_default.body, text.body) << "text is the default";
}

TEST_F(OutputFeatures, ADownloadIsAnAttachmentNamedForTheRun) {
  const auto id = post_run(port(), run_request("fail"));
  watch(id);
  net::io_context io;
  beast::tcp_stream stream(io);
  stream.connect(tcp::endpoint(net::ip::make_address("127.0.0.1"), port()));
  http::request<http::empty_body> req{http::verb::get, "/executions/" + id + "/output?format=ansi", 11};
  req.set(http::field::host, "127.0.0.1");
  req.set(http::field::authorization, "Bearer " + viewer_token);
  http::write(stream, req);
  beast::flat_buffer buffer;
  http::response<http::string_body> res;
  http::read(stream, buffer, res);
  EXPECT_EQ(res.result_int(), 200u);
  const auto record = record_of(port(), id);
  std::string started;
  for (char c : record.started_at) {
    if (c != '-' && c != ':') started += c;
  }
  EXPECT_EQ(res[http::field::content_disposition], "attachment; filename=\"fail-box-" + started + ".log\"");
  EXPECT_EQ(res[http::field::content_type], "text/plain; charset=utf-8");
  EXPECT_EQ(res.body(), "oops\n");
  // The connection serves the next request.
  http::write(stream, req);
  http::response<http::string_body> again;
  http::read(stream, buffer, again);
  EXPECT_EQ(again.body(), "oops\n");
}

TEST_F(OutputFeatures, TimestampsStampEveryLineWithTheWallClock) {
  const auto id = post_run(port(), run_request("lines"));
  watch(id);
  const auto record = record_of(port(), id);
  for (const std::string format : {"text", "ansi"}) {
    const auto answer = get("/executions/" + id + "/output?format=" + format + "&timestamps=1");
    ASSERT_EQ(answer.status, 200u);
    std::istringstream in(answer.body);
    std::vector<std::string> stamps, texts;
    for (std::string line; std::getline(in, line);) {
      ASSERT_GT(line.size(), 25u) << line;
      stamps.push_back(line.substr(0, 24));
      texts.push_back(line.substr(25));
    }
    EXPECT_EQ(texts, (std::vector<std::string>{"line 1", "line 2", "line 3", "done"})) << format;
    for (std::size_t i = 0; i < stamps.size(); ++i) {
      EXPECT_EQ(stamps[i].size(), 24u);
      EXPECT_EQ(stamps[i].back(), 'Z');
      EXPECT_GE(stamps[i], record.started_at.substr(0, 24)) << "after the start";
      if (i) {
        EXPECT_GE(stamps[i], stamps[i - 1]);
      }
    }
    EXPECT_GT(stamps[2], stamps[0]) << "line 3 came 0.6 s after line 1";
  }
}

TEST_F(OutputFeatures, FollowStreamsARunningExecutionUntilItsExit) {
  const auto id = post_run(port(), run_request("lines"));
  const auto followed = get("/executions/" + id + "/output?format=text&follow=1");
  EXPECT_EQ(followed.status, 200u);
  EXPECT_EQ(followed.body, "line 1\nline 2\nline 3\ndone\n");
  EXPECT_EQ(record_of(port(), id).state, "exited") << "it answered once the run had ended";
}

TEST_F(OutputFeatures, WithoutFollowARunningExecutionGivesWhatItHasSoFar) {
  const auto id = post_run(port(), run_request("forever"));
  ws_client c(port(), "/executions/" + id + "/stream", ws_options{viewer_token});
  while (auto m = c.next()) {
    if (m->find("started\\n") != std::string::npos) break;
  }
  const auto now = get("/executions/" + id + "/output?format=text");
  EXPECT_EQ(now.status, 200u);
  EXPECT_EQ(now.body, "started\n");
  EXPECT_EQ(post("/executions/" + id + "/cancel", operator_token).status, 202u);
  c.all();
}

TEST_F(OutputFeatures, DownloadRequestsThatAreWrongAreRefusedClearly) {
  const auto id = post_run(port(), run_request("fail"));
  watch(id);
  EXPECT_EQ(get("/executions/" + id + "/output?format=html").status, 400u);
  EXPECT_EQ(get("/executions/" + id + "/output?follow=yes").status, 400u);
  EXPECT_EQ(get("/executions/" + id + "/output?timestamps=2").status, 400u);
  EXPECT_EQ(get("/executions/00000000-0000-4000-8000-000000000000/output").status, 404u);
  EXPECT_EQ(get("/executions/" + id + "/output", "").status, 401u);
  EXPECT_EQ(get("/executions/" + id + "/output", "wrong-token").status, 401u);
}

TEST(OutputDownload, WhereTheAuditCutTheOutputALineSaysHowMuchIsMissing) {
  loopback_sshd sshd;
  server_process server(sshd, "replay_bytes = 4096\naudit_head_bytes = 4096\naudit_tail_bytes = 4096");
  // seq 1 1000000 prints 6,888,896 bytes: even in events of up to 1 MiB (a fast stream's
  // reads), the first and the last event the audit keeps leave a middle to cut.
  constexpr std::uint64_t total = 6888896;
  const auto id = post_run(server.port(), run_request("numbers", R"({"count":"1000000"})"));
  ws_client c(server.port(), "/executions/" + id + "/stream");
  c.all();
  // (The audit's last write is under way when the exit is out.)
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  const auto answer = http_request(server.port(), http::verb::get, "/executions/" + id + "/output", viewer_token);
  ASSERT_EQ(answer.status, 200u);
  const auto& body = answer.body;
  EXPECT_EQ(body.substr(0, 8), "1\n2\n3\n4\n");
  EXPECT_EQ(body.substr(body.size() - 15), "999999\n1000000\n");
  const auto at = body.find("[cmdcast: ");
  ASSERT_NE(at, std::string::npos) << "the cut is said";
  std::uint64_t missing = 0;
  ASSERT_EQ(std::sscanf(body.c_str() + at, "[cmdcast: %lu bytes not kept]", &missing), 1);
  // The audit's head and tail, and the replay buffer, hold some of it: at most an event each
  // past their 4 KiB.
  EXPECT_GT(missing, total - 4 * (1u << 20));
  EXPECT_LT(missing, total);
  // What is shown plus what is missing is the whole output (and the newline that ends the line
  // the cut went through, if it went through one).
  const auto whole = body.size() - (body.find('\n', at) + 1 - at) + missing;
  EXPECT_GE(whole, total);
  EXPECT_LE(whole, total + 1);
}

// --- Secrets ------------------------------------------------------------------------------

const std::string secret = "Zq7SecretValue0123456789XY";

TEST_F(OutputFeatures, ASecretParamIsMaskedInTheOutputEvenWhenSplitOrRewritten) {
  const auto id = post_run(port(), run_request("secret_echo", "{\"token\":\"" + secret + "\"}"));
  const auto events = watch(id);
  EXPECT_EQ(text_of(events, common::output_stream::out),
            "once ***\ntwice *** and ***\nsplit *** end\nprogress 10%\rkey=*** done\n");
  EXPECT_EQ(text_of(events, common::output_stream::err), "err ***\n");
  EXPECT_EQ(of_type<common::exit_event>(events).at(0).code, 0);
  // Split by the slow printf, the value came in two SSH reads, and two events.
  std::size_t split_events = 0;
  for (const auto& o : of_type<common::output_event>(events)) {
    if (o.data.find("split") != std::string::npos || o.data.find(" end") != std::string::npos) ++split_events;
    EXPECT_EQ(o.data.find(secret.substr(0, 10)), std::string::npos) << "no part of it, either: " << o.data;
  }
  EXPECT_GE(split_events, 2u);
}

TEST_F(OutputFeatures, ASecretParamNeverAppearsInRecordsListsLogsMetricsOrTheAudit) {
  const auto id = post_run(port(), run_request("secret_echo", "{\"token\":\"" + secret + "\"}"));
  const auto events = watch(id);
  const auto started = of_type<common::started_event>(events).at(0);
  EXPECT_NE(started.command.find("***"), std::string::npos) << started.command;
  const auto record = record_of(port(), id);
  EXPECT_NE(record.command.find("***"), std::string::npos);
  EXPECT_EQ(record.params.at("token"), "***");
  std::this_thread::sleep_for(std::chrono::milliseconds(500));  // the audit's last write
  const std::vector<std::pair<std::string, std::string>> places = {
      {"the record", get("/executions/" + id).body},
      {"the list", get("/executions?state=all").body},
      {"the metrics", get("/metrics").body},
      {"a poll", get("/executions/" + id + "/events?after=-1").body},
      {"the download", get("/executions/" + id + "/output?format=ndjson").body},
      {"the log", shared_.server->log()},
      {"the audit database", read_file(dir() + "/cmdcast.db") + read_file(dir() + "/cmdcast.db-wal")},
  };
  for (const auto& [where, text] : places) {
    EXPECT_FALSE(text.empty()) << where;
    EXPECT_EQ(text.find(secret), std::string::npos) << "the secret is in " << where;
  }
  EXPECT_NE(get("/executions/" + id + "/output").body.find("key=*** done"), std::string::npos);
}

TEST_F(OutputFeatures, MachinesSayWhichParamsAreSecretAndWhichActionsAreExclusiveOrApproved) {
  auto machines = common::decode_machines(get("/machines").body);
  ASSERT_TRUE(machines.ok()) << machines.error();
  std::map<std::string, common::action_info> actions;
  for (const auto& a : machines->at(0).actions) actions[a.name] = a;
  EXPECT_EQ(actions["secret_echo"].secret_params, std::vector<std::string>{"token"});
  EXPECT_TRUE(actions["exclusive_wait"].exclusive);
  EXPECT_TRUE(actions["approved_echo"].approval);
  EXPECT_FALSE(actions["lines"].exclusive || actions["lines"].approval);
}

// --- Exclusive actions --------------------------------------------------------------------

std::string exclusive_request(const std::string& tag, const std::string& go) {
  return run_request("exclusive_wait", "{\"tag\":\"" + tag + "\",\"go\":\"" + go + "\"}");
}

TEST_F(OutputFeatures, ExclusiveActionsRunOneAtATimePerMachineTheOthersQueue) {
  const auto go = go_file();
  const auto first = post_run(port(), exclusive_request("a", go));
  wait_for_state(first, "running");
  const auto second = post_run(port(), exclusive_request("b", go));
  const auto third = post_run(port(), exclusive_request("c", go));
  EXPECT_EQ(record_of(port(), second).state, "queued");
  EXPECT_EQ(record_of(port(), third).state, "queued");
  ws_client second_watcher(port(), "/executions/" + second + "/stream", ws_options{viewer_token});
  ws_client third_watcher(port(), "/executions/" + third + "/stream", ws_options{viewer_token});
  // An action that is not exclusive is not held up.
  ws_client other(port(), "/machines/box/commands/stream");
  other.send(run_request("fail"));
  EXPECT_EQ(of_type<common::exit_event>(other.all()).at(0).code, 3);
  EXPECT_EQ(record_of(port(), second).state, "queued");

  touch(go);
  const auto second_events = second_watcher.all();
  const auto third_events = third_watcher.all();
  std::filesystem::remove(go);
  const auto queued = of_type<common::queued_event>(second_events);
  ASSERT_FALSE(queued.empty());
  EXPECT_EQ(queued.front().position, 1);
  const auto third_queued = of_type<common::queued_event>(third_events);
  ASSERT_GE(third_queued.size(), 2u) << "its position moved up";
  EXPECT_EQ(third_queued.front().position, 2);
  EXPECT_EQ(third_queued.back().position, 1);
  EXPECT_EQ(text_of(second_events, common::output_stream::out), "start b\nend b\n");
  EXPECT_EQ(text_of(third_events, common::output_stream::out), "start c\nend c\n");
  // One after the other on the machine.
  const auto a = record_of(port(), first), b = record_of(port(), second), c = record_of(port(), third);
  EXPECT_EQ(a.state, "exited");
  EXPECT_EQ(b.state, "exited");
  EXPECT_EQ(c.state, "exited");
  EXPECT_GE(b.started_at, *a.ended_at);
  EXPECT_GE(c.started_at, *b.ended_at);
}

TEST_F(OutputFeatures, AQueuedRunCanBeCancelledAndNeverRuns) {
  const auto go = go_file();
  const auto first = post_run(port(), exclusive_request("a", go));
  wait_for_state(first, "running");
  const auto second = post_run(port(), exclusive_request("b", go));
  ws_client watcher(port(), "/executions/" + second + "/stream", ws_options{viewer_token});
  EXPECT_EQ(post("/executions/" + second + "/cancel", operator_token).status, 202u);
  const auto events = watcher.all();
  EXPECT_TRUE(of_type<common::started_event>(events).empty()) << "it never ran";
  EXPECT_EQ(text_of(events, common::output_stream::err), "cmdcast: cancelled before it ran\n");
  EXPECT_EQ(of_type<common::exit_event>(events).at(0).state, common::exit_state::cancelled);
  EXPECT_EQ(record_of(port(), second).state, "cancelled");
  EXPECT_EQ(record_of(port(), first).state, "running");
  touch(go);
  EXPECT_EQ(text_of(watch(first), common::output_stream::out), "start a\nend a\n");
  std::filesystem::remove(go);
}

TEST_F(OutputFeatures, OnBusyRefuseAnswersBusyNamingTheRunningExecution) {
  const auto go = go_file();
  const auto first = post_run(port(), exclusive_request("a", go));
  wait_for_state(first, "running");
  const auto refused = post("/machines/box/commands", operator_token, run_request("exclusive_refuse", R"({"tag":"x"})"));
  EXPECT_EQ(refused.status, 429u);
  EXPECT_NE(refused.body.find("\"busy\""), std::string::npos);
  EXPECT_NE(refused.body.find(first), std::string::npos) << refused.body;
  touch(go);
  watch(first);
  std::filesystem::remove(go);
  const auto later = post_run(port(), run_request("exclusive_refuse", R"({"tag":"y"})"));
  EXPECT_EQ(text_of(watch(later), common::output_stream::out), "refusing y\n");
}

// --- Approval -----------------------------------------------------------------------------

TEST_F(OutputFeatures, AnotherOperatorApprovesARunAndOnlyThenItRuns) {
  const auto id = post_run(port(), run_request("approved_echo", R"({"word":"hello"})"));
  EXPECT_EQ(record_of(port(), id).state, "awaiting_approval");
  EXPECT_NE(get("/executions?state=awaiting_approval").body.find(id), std::string::npos);
  ws_client watcher(port(), "/executions/" + id + "/stream", ws_options{viewer_token});
  const auto mine = post("/executions/" + id + "/approve", operator_token);
  EXPECT_EQ(mine.status, 403u) << "never the requester";
  EXPECT_NE(mine.body.find("another operator"), std::string::npos) << mine.body;
  EXPECT_EQ(post("/executions/" + id + "/approve", viewer_token).status, 403u) << "never a viewer";
  EXPECT_EQ(record_of(port(), id).state, "awaiting_approval");
  const auto approved = post("/executions/" + id + "/approve", second_operator_token);
  EXPECT_EQ(approved.status, 200u) << approved.body;
  const auto events = watcher.all();
  const auto waiting = of_type<common::awaiting_approval_event>(events);
  ASSERT_EQ(waiting.size(), 1u);
  EXPECT_EQ(waiting[0].requested_by, "olivia");
  EXPECT_EQ(text_of(events, common::output_stream::out), "approved run hello\n");
  EXPECT_EQ(of_type<common::exit_event>(events).at(0).code, 0);
  const auto record = record_of(port(), id);
  EXPECT_EQ(record.user, "olivia");
  EXPECT_EQ(record.approved_by, "oscar");
  ASSERT_TRUE(record.approved_at);
  EXPECT_LE(*record.approved_at, record.started_at);
  EXPECT_EQ(post("/executions/" + id + "/approve", second_operator_token).status, 400u) << "not twice";
  EXPECT_GE(count_events(shared_.server->log(), "approve"), 1u);
}

TEST_F(OutputFeatures, ARejectedRunNeverRuns) {
  const auto id = post_run(port(), run_request("approved_echo", R"({"word":"nope"})"));
  ws_client watcher(port(), "/executions/" + id + "/stream", ws_options{viewer_token});
  EXPECT_EQ(post("/executions/" + id + "/reject", operator_token).status, 403u) << "not the requester either";
  EXPECT_EQ(post("/executions/" + id + "/reject", second_operator_token).status, 200u);
  const auto events = watcher.all();
  EXPECT_TRUE(of_type<common::started_event>(events).empty());
  EXPECT_EQ(text_of(events, common::output_stream::err), "cmdcast: rejected by oscar\n");
  EXPECT_EQ(of_type<common::exit_event>(events).at(0).state, common::exit_state::rejected);
  const auto record = record_of(port(), id);
  EXPECT_EQ(record.state, "rejected");
  EXPECT_EQ(record.approved_by, "oscar");
  EXPECT_EQ(post("/executions/" + id + "/approve", second_operator_token).status, 400u);
}

TEST_F(OutputFeatures, ARunNobodyApprovesExpires) {
  const auto id = post_run(port(), run_request("approval_expires"));
  const auto events = watch(id);
  EXPECT_EQ(of_type<common::exit_event>(events).at(0).state, common::exit_state::expired);
  EXPECT_NE(text_of(events, common::output_stream::err).find("no other operator approved it within 1 s"), std::string::npos);
  EXPECT_EQ(record_of(port(), id).state, "expired");
}

TEST(OutputFeaturesConfig, SecretExclusiveAndApprovalKeysAreCheckedWithClearErrors) {
  const std::string anonymous_head = "[server]\nlisten = \"127.0.0.1:8080\"\nanonymous = \"operator\"\n";
  const std::string head = "[server]\nlisten = \"127.0.0.1:8080\"\n[[tokens]]\nname = \"olivia\"\nsha256 = \"" +
                           server::sha256_hex(operator_token) + "\"\nrole = \"operator\"\n";
  auto good = server::parse_config(head + "[actions.a]\ncommand = \"login {user} {tok}\"\n"
                                          "params = { user = \"^[a-z]+$\", tok = { pattern = \"^[A-Za-z0-9]{20,64}$\", secret = true } }\n"
                                          "exclusive = true\non_busy = \"refuse\"\napproval = true\napproval_timeout_s = 60\n",
                                   "good.toml");
  ASSERT_TRUE(good.ok()) << good.error();
  const auto& a = good->actions.at("a");
  EXPECT_EQ(a.secret_params, std::set<std::string>{"tok"});
  EXPECT_TRUE(a.exclusive && a.refuse_when_busy && a.approval);
  EXPECT_EQ(a.approval_timeout, std::chrono::seconds(60));

  auto bad = server::parse_config(head + "[actions.a]\ncommand = \"x {v} {w} {e}\"\n"
                                         "params = { v = { pattern = \"^a$\", secret = \"yes\" }, w = { secret = true }, e = { pattern = \"^a*$\", secret = true } }\n"
                                         "on_busy = \"wait\"\napproval_timeout_s = 60\nexclusive = 1\n",
                                  "bad.toml");
  ASSERT_FALSE(bad.ok());
  for (const std::string problem :
       {"actions.a.params.v.secret: must be true or false", "actions.a.params.w.pattern: is missing",
        "actions.a.params.e: is secret, so its pattern must not match an empty value",
        "actions.a.on_busy: must be \"queue\" or \"refuse\"", "actions.a.approval_timeout_s: applies only with approval = true",
        "actions.a.exclusive: must be true or false"}) {
    EXPECT_NE(bad.error().find(problem), std::string::npos) << problem << "\nin:\n" << bad.error();
  }
  auto anonymous = server::parse_config(anonymous_head + "[actions.a]\ncommand = \"x\"\napproval = true\n", "a.toml");
  ASSERT_FALSE(anonymous.ok());
  EXPECT_NE(anonymous.error().find("a.toml:6:12: actions.a.approval: needs [[tokens]]"), std::string::npos)
      << anonymous.error();
  auto stray = server::parse_config(head + "[actions.a]\ncommand = \"x {v}\"\nparams = { v = { pattern = \"^a$\", hidden = true } }\n", "s.toml");
  ASSERT_FALSE(stray.ok());
  EXPECT_NE(stray.error().find("actions.a.params.v.hidden: unknown key"), std::string::npos) << stray.error();
}

TEST_F(OutputFeatures, ListsFilterByMachineAndTheNewStates) {
  EXPECT_EQ(get("/executions?machine=box&state=all").status, 200u);
  EXPECT_EQ(get("/executions?machine=nope").status, 404u);
  EXPECT_EQ(get("/executions?state=queued").status, 200u);
  EXPECT_EQ(get("/executions?state=expired").status, 200u);
  EXPECT_EQ(get("/executions?state=sleeping").status, 400u);
}

}  // namespace
}  // namespace cmdcast::testing
