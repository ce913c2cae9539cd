// The CLI's fleet runs, their pure parts: the command line, "machine | line" with a colour per
// machine, the progress lines kept at the bottom of a terminal, the summary table and the exit
// status.
#include <gtest/gtest.h>

#include <set>

#include "cli.hpp"
#include "fleet.hpp"

namespace cmdcast::cli {
namespace {

TEST(CliFleetArgs, AGroupIsAnAtAndTakesParallelAndStopOnFailure) {
  const auto r = parse_args({"run", "srv", "@web", "apt_upgrade", "--parallel", "2", "--stop-on-failure", "x=1"}, "tok");
  ASSERT_TRUE(r) << r.error();
  EXPECT_EQ(r->group, "web");
  EXPECT_EQ(r->machine, "");
  EXPECT_EQ(r->action, "apt_upgrade");
  EXPECT_EQ(r->parallel, 2);
  EXPECT_TRUE(r->stop_on_failure);
  EXPECT_EQ(r->params, (std::map<std::string, std::string>{{"x", "1"}}));
  const auto plain = parse_args({"run", "srv", "@web", "lines", "--parallel=3"}, std::nullopt);
  ASSERT_TRUE(plain);
  EXPECT_EQ(plain->parallel, 3);
  EXPECT_FALSE(plain->stop_on_failure);
  EXPECT_FALSE(parse_args({"run", "srv", "@web", "lines"}, std::nullopt)->parallel);
  const auto error_of = [](std::vector<std::string> args) {
    const auto p = parse_args(args, std::nullopt);
    return p ? std::string("(parsed)") : p.error();
  };
  EXPECT_EQ(error_of({"run", "srv", "box", "lines", "--parallel", "2"}),
            "--parallel is for a fleet run: run SERVER @GROUP ACTION");
  EXPECT_EQ(error_of({"run", "srv", "box", "lines", "--stop-on-failure"}),
            "--stop-on-failure is for a fleet run: run SERVER @GROUP ACTION");
  EXPECT_EQ(error_of({"run", "srv", "@", "lines"}), "@GROUP needs a group id after the @");
  EXPECT_EQ(error_of({"run", "srv", "@web", "lines", "--parallel", "0"}), "--parallel needs a positive number, not \"0\"");
  EXPECT_EQ(error_of({"run", "srv", "@web", "lines", "--parallel"}), "--parallel needs a value");
  EXPECT_EQ(error_of({"run", "srv", "@web", "lines", "--stop-on-failure=yes"}), "--stop-on-failure takes no value");
  EXPECT_EQ(error_of({"watch", "srv", "id", "--parallel", "2"}), "--parallel is an option of run, not of watch");
}

TEST(CliFleet, ColourOnlyOnATerminalWithoutNoColor) {
  EXPECT_TRUE(use_colour(true, nullptr, "xterm-256color"));
  EXPECT_TRUE(use_colour(true, "", nullptr)) << "an empty NO_COLOR is as unset";
  EXPECT_FALSE(use_colour(false, nullptr, "xterm"));
  EXPECT_FALSE(use_colour(true, "1", "xterm"));
  EXPECT_FALSE(use_colour(true, nullptr, "dumb"));
}

TEST(CliFleet, EachMachineHasItsColourAndNoneIsRed) {
  std::set<std::string> seen;
  for (std::size_t i = 0; i < palette_size(); ++i) {
    const auto c = machine_colour(i);
    EXPECT_TRUE(c.starts_with("\x1b[") && c.ends_with("m")) << c;
    EXPECT_NE(c, "\x1b[31m");
    EXPECT_NE(c, "\x1b[91m");
    seen.insert(c);
  }
  EXPECT_EQ(seen.size(), palette_size()) << "distinct";
  EXPECT_EQ(machine_colour(palette_size()), machine_colour(0)) << "then they repeat";
  EXPECT_NE(machine_colour(1), machine_colour(0));
}

TEST(CliFleet, PrefixesPlainPaddedAndColoured) {
  EXPECT_EQ(machine_prefix("box", 0, ""), "box | ");
  EXPECT_EQ(machine_prefix("box", 6, ""), "box    | ");
  EXPECT_EQ(machine_prefix("longer-name", 6, ""), "longer-name | ");
  EXPECT_EQ(machine_prefix("box", 0, "\x1b[36m"), "\x1b[36mbox |\x1b[0m ");
}

TEST(CliFleet, LinesAreWholeAndPartialOnesWaitForTheirEnd) {
  line_splitter s;
  std::string out;
  s.feed("line 1\nli", "box | ", out);
  EXPECT_EQ(out, "box | line 1\n");
  EXPECT_TRUE(s.holding());
  s.feed("ne", "box | ", out);
  EXPECT_EQ(out, "box | line 1\n") << "still partial";
  s.feed(" 2\nline 3\n\n", "box | ", out);
  EXPECT_EQ(out, "box | line 1\nbox | line 2\nbox | line 3\nbox | \n");
  EXPECT_FALSE(s.holding());
  out.clear();
  s.feed("no end", "m2 | ", out);
  s.flush("m2 | ", out);
  EXPECT_EQ(out, "m2 | no end\n") << "flushed with a newline at the end";
  out.clear();
  s.flush("m2 | ", out);
  EXPECT_EQ(out, "") << "nothing held, nothing flushed";
  // A partial line past the bound goes out on its own: memory stays bounded.
  s.feed("0123456789", "p | ", out, 8);
  EXPECT_EQ(out, "p | 0123456789\n");
  // \r stays inside its line.
  out.clear();
  s.feed("10%\r50%\r100%\n", "b | ", out);
  EXPECT_EQ(out, "b | 10%\r50%\r100%\n");
}

member_outcome ended(std::string machine, std::string state, std::optional<int> code, std::int64_t ms = 1200,
                     std::optional<std::string> signal = std::nullopt) {
  return {std::move(machine), std::move(state), true, code, std::move(signal), ms};
}

TEST(CliFleet, ExitStatusIsZeroOnlyWhenAllSucceededElseTheHighest) {
  EXPECT_EQ(batch_exit_status({ended("a", "exited", 0), ended("b", "exited", 0)}), 0);
  EXPECT_EQ(batch_exit_status({ended("a", "exited", 0), ended("b", "failed", std::nullopt)}), 1);
  EXPECT_EQ(batch_exit_status({ended("a", "exited", 3), ended("b", "failed", std::nullopt), ended("c", "exited", 0)}), 3);
  EXPECT_EQ(batch_exit_status({ended("a", "exited", 1), ended("b", "exited", 7)}), 7);
  EXPECT_EQ(batch_exit_status({ended("a", "cancelled", std::nullopt), ended("b", "exited", 0)}), 1);
  EXPECT_EQ(batch_exit_status({ended("a", "lost", std::nullopt)}), 1);
  EXPECT_EQ(batch_exit_status({ended("a", "exited", std::nullopt, 10, "KILL"), ended("b", "exited", 2)}), 137)
      << "a signal that ended the command: 128+N";
  EXPECT_EQ(batch_exit_status({ended("a", "timed_out", std::nullopt, 10, "TERM"), ended("b", "exited", 0)}), 1)
      << "the server's own TERM of a timeout or cancel is not the command's";
  EXPECT_EQ(batch_exit_status({ended("a", "cancelled", std::nullopt, 10, "TERM")}), 1);
  EXPECT_EQ(batch_exit_status({ended("a", "exited", 0), {"b", "running", false, {}, {}, {}}}), 1) << "not ended";
  EXPECT_EQ(batch_exit_status({}), 0);
  EXPECT_EQ(signal_number("KILL"), 9);
  EXPECT_EQ(signal_number("WHAT"), 0);
}

TEST(CliFleet, TheSummaryTableHasAMachinePerRowAndTheCounts) {
  const std::string table = format_batch_summary({ended("box", "exited", 0, 1234), ended("down", "failed", std::nullopt, 12),
                                                  ended("m3", "exited", 3, 65'000), ended("m4", "cancelled", std::nullopt, 0),
                                                  ended("m5", "timed_out", std::nullopt, 3'600'000, "TERM"),
                                                  {"m6", "running", false, {}, {}, {}}});
  EXPECT_EQ(table,
            "MACHINE  STATE      EXIT     DURATION\n"
            "box      exited     0        1.2s\n"
            "down     failed     -        12ms\n"
            "m3       exited     3        1m05s\n"
            "m4       cancelled  -        0ms\n"
            "m5       timed_out  SIGTERM  1h00m\n"
            "m6       running    -        -\n"
            "1 succeeded, 3 failed, 1 cancelled, 1 not ended\n");
  EXPECT_EQ(format_batch_summary({ended("a", "exited", 0, 5)}), "MACHINE  STATE   EXIT  DURATION\na        exited  0     5ms\n1 succeeded\n");
}

TEST(CliFleet, ProgressLinesOnePerRunningMachineAndTheCounts) {
  std::vector<running_member> running = {
      {"box", "", true, 42.0, "Unpacking tmux", std::chrono::milliseconds(4200)},
      {"m2", "", true, std::nullopt, "Reading package lists", std::chrono::milliseconds(800)},
      {"nas-01", "", false, std::nullopt, "", std::chrono::milliseconds(61'000)},
  };
  const common::batch_counts counts{2, 3, 1, 1, 0};
  const auto lines = format_progress_block(running, counts, 6, 200, 10);
  ASSERT_EQ(lines.size(), 4u);
  EXPECT_EQ(lines[0], "box     [########............]  42.0%  4.2s  Unpacking tmux");
  EXPECT_EQ(lines[1], "m2      [        busy        ]         800ms  Reading package lists");
  EXPECT_EQ(lines[2], "nas-01  [      running       ]         1m01s");
  EXPECT_EQ(lines[3], "fleet run: 3 running, 2 queued, 1 succeeded, 1 failed");
  // Cut to the terminal's width, escape sequences taking no column.
  running[0].colour = "\x1b[36m";
  const auto narrow = format_progress_block(running, counts, 6, 12, 10);
  EXPECT_EQ(narrow[0], "\x1b[36mbox\x1b[0m     [###\x1b[0m");
  EXPECT_EQ(narrow[3], "fleet run: 3");
  // More running than there is room for: the rest summed up.
  const auto few = format_progress_block(running, counts, 6, 200, 3);
  ASSERT_EQ(few.size(), 3u);
  EXPECT_TRUE(few[0].starts_with("\x1b[36mbox")) << few[0];
  EXPECT_EQ(few[1], "... and 2 more running");
  EXPECT_TRUE(few[2].starts_with("fleet run: ")) << few[2];
  EXPECT_EQ(format_progress_block({}, {}, 0, 80, 5), std::vector<std::string>{"fleet run: 0 running"});
}

TEST(CliFleet, ResumeAfterNamesEachExecutionWithASeqSeen) {
  EXPECT_EQ(batch_after({{"e1", 4}, {"e2", -1}, {"e3", 0}}), "e1:4,e3:0");
  EXPECT_EQ(batch_after({{"e1", -1}}), "");
}

TEST(CliFleet, MachinesListsTheGroups) {
  std::vector<common::machine_info> machines = {{"box", "box", {}, {"four", "web"}}, {"m2", "", {}, {"four"}},
                                                {"down", "", {}, {}}};
  const auto text = format_machines(machines);
  EXPECT_NE(text.find("\ngroups (run SERVER @GROUP ACTION)\n  @four  box m2\n  @web   box\n"), std::string::npos) << text;
  EXPECT_EQ(format_machines({{"solo", "", {}, {}}}).find("groups"), std::string::npos) << "none: not said";
}

}  // namespace
}  // namespace cmdcast::cli
