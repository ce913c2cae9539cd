// The CLI's pure parts: its command line, the requests it makes of it, and its tables.
#include <gtest/gtest.h>

#include "cli.hpp"

namespace cmdcast::cli {
namespace {

using namespace std::chrono_literals;

common::result<invocation> parse(std::vector<std::string> args, std::optional<std::string> env = std::nullopt) {
  return parse_args(args, std::move(env));
}

std::string error_of(std::vector<std::string> args) {
  const auto r = parse(std::move(args));
  return r ? "(parsed)" : r.error();
}

TEST(CliArgs, RunAndWatchAsBefore) {
  const auto run = parse({"run", "127.0.0.1:8080", "box", "restart_service", "service=nginx", "x=a=b"}, "tok");
  ASSERT_TRUE(run) << run.error();
  EXPECT_EQ(run->command, "run");
  EXPECT_EQ(run->server, "127.0.0.1:8080");
  EXPECT_EQ(run->machine, "box");
  EXPECT_EQ(run->action, "restart_service");
  EXPECT_EQ(run->params, (std::map<std::string, std::string>{{"service", "nginx"}, {"x", "a=b"}}));
  EXPECT_EQ(run->token, "tok");
  const auto watch = parse({"--token", "t2", "watch", "srv", "abc", "--cacert", "ca.pem"}, "tok");
  ASSERT_TRUE(watch);
  EXPECT_EQ(watch->execution_id, "abc");
  EXPECT_EQ(watch->token, "t2") << "--token wins over $CMDCAST_TOKEN";
  EXPECT_EQ(watch->ca_file, "ca.pem");
  // After "--" a machine id may start with '-'.
  const auto dashed = parse({"run", "srv", "--", "-box", "lines"});
  ASSERT_TRUE(dashed);
  EXPECT_EQ(dashed->machine, "-box");
  EXPECT_TRUE(parse({"--help"})->help);
  EXPECT_TRUE(parse({"run", "--version"})->version);
}

TEST(CliArgs, TheNewCommandsAndTheirOptions) {
  const auto machines = parse({"machines", "https://cmdcast.example.org"});
  ASSERT_TRUE(machines);
  EXPECT_EQ(machines->command, "machines");

  const auto ls = parse({"ls", "srv", "--machine", "pi-hole", "--state=awaiting_approval", "--limit", "5"});
  ASSERT_TRUE(ls) << ls.error();
  EXPECT_EQ(ls->machine_filter, "pi-hole");
  EXPECT_EQ(ls->state, "awaiting_approval");
  EXPECT_EQ(ls->limit, 5);
  EXPECT_EQ(list_target(*ls), "/executions?state=awaiting_approval&machine=pi-hole&limit=5");
  EXPECT_EQ(list_target(*parse({"ls", "srv"})), "/executions");
  for (const char* state : {"all", "running", "queued", "exited", "rejected", "expired", "timed_out"}) {
    EXPECT_TRUE(parse({"ls", "srv", "--state", state})) << state;
  }

  const auto logs = parse({"logs", "srv", "e1", "-f", "--timestamps", "--format", "ndjson"});
  ASSERT_TRUE(logs) << logs.error();
  EXPECT_TRUE(logs->follow);
  EXPECT_TRUE(logs->timestamps);
  EXPECT_EQ(logs->format, "ndjson");
  EXPECT_EQ(output_target(*logs, "ndjson"), "/executions/e1/output?format=ndjson&timestamps=1&follow=1");
  const auto plain = parse({"logs", "srv", "e 1/x"});
  ASSERT_TRUE(plain);
  EXPECT_FALSE(plain->format) << "chosen by whether stdout is a terminal";
  EXPECT_EQ(output_target(*plain, "text"), "/executions/e%201%2Fx/output?format=text");

  const auto approve = parse({"approve", "srv", "e1"});
  ASSERT_TRUE(approve);
  EXPECT_EQ(approve->execution_id, "e1");
  EXPECT_TRUE(parse({"reject", "srv", "e1"}));
}

TEST(CliArgs, MistakesAreSaidPlainly) {
  EXPECT_EQ(error_of({}), "no command given");
  EXPECT_EQ(error_of({"frobnicate", "srv"}), "unknown command \"frobnicate\"");
  EXPECT_EQ(error_of({"ls"}), "ls needs the SERVER");
  EXPECT_EQ(error_of({"ls", "srv", "extra"}), "ls takes only the SERVER");
  EXPECT_EQ(error_of({"logs", "srv"}), "logs needs the SERVER and an EXECUTION_ID");
  EXPECT_EQ(error_of({"approve", "srv", "a", "b"}), "approve needs the SERVER and an EXECUTION_ID");
  EXPECT_EQ(error_of({"run", "srv", "box"}), "run needs the SERVER, a MACHINE (or @GROUP) and an ACTION");
  EXPECT_EQ(error_of({"run", "srv", "box", "a", "novalue"}), "a param is name=value, not \"novalue\"");
  EXPECT_EQ(error_of({"run", "srv", "box", "a", "=v"}), "a param is name=value, not \"=v\"");
  EXPECT_EQ(error_of({"ls", "srv", "--state", "sleeping"}).substr(0, 26), "unknown state \"sleeping\" (");
  EXPECT_EQ(error_of({"ls", "srv", "--limit", "0"}), "--limit needs a positive number, not \"0\"");
  EXPECT_EQ(error_of({"ls", "srv", "--limit", "5x"}), "--limit needs a positive number, not \"5x\"");
  EXPECT_EQ(error_of({"ls", "srv", "--limit"}), "--limit needs a value");
  EXPECT_EQ(error_of({"logs", "srv", "e1", "--format", "html"}), "unknown format \"html\" (text, ansi or ndjson)");
  EXPECT_EQ(error_of({"logs", "srv", "e1", "--follow=yes"}), "--follow takes no value");
  EXPECT_EQ(error_of({"ls", "srv", "--follow"}), "--follow is an option of logs, not of ls");
  EXPECT_EQ(error_of({"run", "srv", "box", "a", "--machine", "x"}), "--machine is an option of ls, not of run");
  EXPECT_EQ(error_of({"ls", "srv", "--bogus"}), "unknown option \"--bogus\"");
}

TEST(CliTables, MachinesWithTheirActionsAndMarks) {
  common::machine_info box{"box", "pi-hole", {}};
  box.actions.push_back({"lines", {}, std::nullopt, {}, false, false});
  box.actions.push_back({"apt_upgrade", {}, "apt", {}, true, true});
  box.actions.push_back(
      {"rotate", {{"host", "^[a-z]+$"}, {"token", "^[A-Za-z0-9]{20,64}$"}}, std::nullopt, {"token"}, false, false});
  common::machine_info bare{"bare", "bare", {}};
  EXPECT_EQ(format_machines({box, bare}),
            "box  (pi-hole)\n"
            "  lines\n"
            "  apt_upgrade  [exclusive, needs approval, progress: apt]\n"
            "  rotate       host=^[a-z]+$ token=^[A-Za-z0-9]{20,64}$ (secret)\n"
            "\n"
            "bare\n"
            "  no actions\n");
}

TEST(CliTables, ExecutionsAsAnAlignedTable) {
  common::execution_record done;
  done.execution_id = "e1";
  done.machine_id = "box";
  done.action_type = "fail";
  done.user = "olivia";
  done.state = "exited";
  done.exit_code = 3;
  done.started_at = "2026-12-02T13:00:00.000Z";
  done.ended_at = "2026-12-02T13:00:01.250Z";
  common::execution_record running = done;
  running.execution_id = "e2-longer";
  running.action_type = "apt_upgrade";
  running.state = "running";
  running.exit_code.reset();
  running.ended_at.reset();
  common::execution_record killed = done;
  killed.execution_id = "e3";
  killed.user = "oscar";
  killed.state = "cancelled";
  killed.exit_code.reset();
  killed.signal = "TERM";
  killed.ended_at = "2026-12-02T15:05:00.000Z";
  const auto now = *parse_time("2026-12-02T13:04:05.000Z");
  EXPECT_EQ(format_executions({done, running, killed}, now),
            "ID         MACHINE  ACTION       USER    STATE      EXIT     STARTED (UTC)        DURATION\n"
            "e1         box      fail         olivia  exited     3        2026-12-02 13:00:00  1.2s\n"
            "e2-longer  box      apt_upgrade  olivia  running    -        2026-12-02 13:00:00  4m05s\n"
            "e3         box      fail         oscar   cancelled  SIGTERM  2026-12-02 13:00:00  2h05m\n");
}

TEST(CliTables, DurationsAndTimes) {
  EXPECT_EQ(format_duration(0ms), "0ms");
  EXPECT_EQ(format_duration(850ms), "850ms");
  EXPECT_EQ(format_duration(12345ms), "12.3s");
  EXPECT_EQ(format_duration(245s), "4m05s");
  EXPECT_EQ(format_duration(2h + 3min + 59s), "2h03m");
  EXPECT_EQ(format_duration(76h), "3d04h");
  EXPECT_EQ(format_duration(-5ms), "0ms");
  const auto t = parse_time("2026-12-02T13:44:26.5Z");
  ASSERT_TRUE(t);
  EXPECT_EQ(*t - *parse_time("2026-12-02T13:44:26Z"), 500ms);
  EXPECT_FALSE(parse_time("2026-12-02 13:44:26"));
  EXPECT_FALSE(parse_time("yesterday"));
}

TEST(CliMessages, QueuedAndAwaitingApproval) {
  EXPECT_EQ(queued_message(2), "cmdcast: queued behind the machine's running exclusive action (position 2)\n");
  EXPECT_EQ(awaiting_approval_message({"olivia", "2026-12-02T14:00:00.000Z"}, "127.0.0.1:8080", "e1"),
            "cmdcast: waiting for another operator to approve (expires 2026-12-02T14:00:00.000Z); "
            "cmdcast approve 127.0.0.1:8080 e1\n");
}

}  // namespace
}  // namespace cmdcast::cli
