#include "cmdcast/common/progress.hpp"

#include <gtest/gtest.h>

#include <fstream>
#include <random>
#include <sstream>

namespace cmdcast::common {
namespace {

std::string read_transcript(std::string_view name, std::string_view family = "apt") {
  std::ifstream f(std::string(CMDCAST_TEST_DATA "/") + std::string(family) + "/" + std::string(name) + ".txt",
                  std::ios::binary);
  EXPECT_TRUE(f) << "missing test data " << name;
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

/// What a watcher sees: every distinct progress state, in order.
struct run_result {
  std::vector<progress_state> states;
  progress_state before_exit;
  progress_state after_exit;
};

run_result replay(std::string_view output, bool success, std::size_t chunk_max, unsigned seed,
                  std::string_view family = "apt") {
  auto parser = make_progress_parser(family);
  run_result r;
  std::mt19937 rng(seed);
  for (std::size_t i = 0; i < output.size();) {
    const std::size_t n = 1 + rng() % chunk_max;
    if (parser->feed(output.substr(i, n))) r.states.push_back(parser->current());
    i += n;
  }
  r.before_exit = parser->current();
  if (parser->finish(success)) r.states.push_back(parser->current());
  r.after_exit = parser->current();
  return r;
}

void expect_monotone(const run_result& r, std::string_view name) {
  double last = 0;
  bool numeric = false;
  for (const auto& s : r.states) {
    if (numeric) {
      EXPECT_TRUE(s.percent.has_value()) << name << ": went back to busy at " << s.phase;
    }
    if (s.percent) {
      EXPECT_GE(*s.percent, last) << name << ": went backwards at " << s.phase;
      EXPECT_LE(*s.percent, 100.0) << name;
      last = *s.percent;
      numeric = true;
    }
  }
}

const std::vector<std::string_view> successful_runs = {
    "update-plain",      "update-status-fd",      "update-and-upgrade-dry-run", "reinstall-plain",
    "reinstall-status-fd", "upgrade-plain",       "remove-plain",               "install-new-plain",
    "remove-status-fd",  "install-new-status-fd", "install-new-tty",
};

TEST(AptProgress, RealRunsAreMonotoneAndReach100OnSuccess) {
  for (auto name : successful_runs) {
    const std::string output = read_transcript(name);
    for (unsigned seed = 0; seed < 5; ++seed) {
      const auto r = replay(output, true, seed == 0 ? output.size() : 1 + seed * 37, seed);
      expect_monotone(r, name);
      EXPECT_EQ(r.after_exit.percent, 100.0) << name;
    }
  }
}

TEST(AptProgress, ChunkingDoesNotChangeTheResult) {
  for (auto name : successful_runs) {
    const std::string output = read_transcript(name);
    const auto whole = replay(output, true, output.size(), 0);
    for (unsigned seed = 1; seed < 4; ++seed) {
      const auto r = replay(output, true, 1 + seed * 5, seed);
      EXPECT_EQ(r.before_exit, whole.before_exit) << name << " seed " << seed;
    }
  }
}

TEST(AptProgress, InstallsShowMeasuredStepsAndReach100BeforeExit) {
  for (auto name : {"reinstall-plain", "reinstall-status-fd", "install-new-plain", "install-new-status-fd",
                    "install-new-tty", "remove-plain", "remove-status-fd"}) {
    const auto r = replay(read_transcript(name), true, 16, 1);
    std::vector<double> values;
    for (const auto& s : r.states) {
      if (s.percent && (values.empty() || values.back() != *s.percent)) values.push_back(*s.percent);
    }
    EXPECT_GE(values.size(), 4u) << name << ": too few steps to be a useful bar";
    // The last "Setting up" or "Removing" completes the measure before apt exits.
    EXPECT_EQ(r.before_exit.percent, 100.0) << name;
  }
}

TEST(AptProgress, PhasesNameWhatAptIsDoing) {
  auto phases_of = [](std::string_view name) {
    std::vector<std::string> phases;
    for (const auto& s : replay(read_transcript(name), true, 16, 2).states) phases.push_back(s.phase);
    return phases;
  };
  auto contains = [](const std::vector<std::string>& v, std::string_view s) {
    return std::find(v.begin(), v.end(), s) != v.end();
  };
  const auto plain = phases_of("install-new-plain");
  EXPECT_TRUE(contains(plain, "Downloading tmux")) << ::testing::PrintToString(plain);
  EXPECT_TRUE(contains(plain, "Unpacking libutempter0"));
  EXPECT_TRUE(contains(plain, "Setting up tmux"));
  const auto status = phases_of("install-new-status-fd");
  EXPECT_TRUE(contains(status, "Configuring tmux (amd64)")) << ::testing::PrintToString(status);
  const auto update = phases_of("update-plain");
  EXPECT_TRUE(contains(update, "Updating package lists"));
  EXPECT_TRUE(contains(update, "Reading package lists"));
}

TEST(AptProgress, UpdateAloneIsBusyUntilItEnds) {
  const auto r = replay(read_transcript("update-status-fd"), true, 64, 3);
  EXPECT_FALSE(r.before_exit.percent.has_value());
  EXPECT_EQ(r.after_exit.percent, 100.0);
}

TEST(AptProgress, AFailedRunNeverClaimsCompletion) {
  const auto r = replay(read_transcript("install-missing-package"), false, 4096, 4);
  EXPECT_FALSE(r.after_exit.percent.has_value());
  EXPECT_EQ(r.after_exit.phase, "E: Unable to locate package cmdcast-no-such-package");
}

TEST(AptProgress, StatusFdLinesGiveExactValues) {
  auto p = make_progress_parser("apt");
  p->feed("2 upgraded, 0 newly installed, 0 to remove and 0 not upgraded.\n");
  EXPECT_EQ(p->current().percent, 0.0);
  p->feed("dlstatus:1:50.0000:Retrieving file 1 of 2\n");
  EXPECT_EQ(p->current().percent, 16.7);
  EXPECT_EQ(p->current().phase, "Retrieving file 1 of 2");
  p->feed("pmstatus:jq:50.0000:Unpacking jq (amd64)\n");
  EXPECT_EQ(p->current().percent, 66.7);
  p->feed("pmstatus:jq:10.0000:Preparing jq (amd64)\n");  // never backwards
  EXPECT_EQ(p->current().percent, 66.7);
  p->feed("\x1b" "7\x1b[24;0f\x1b[42m\x1b[30mProgress: [ 80%]\x1b[49m\x1b[39m [####....] \x1b" "8Setting up jq (1.6) ...\r\n");
  EXPECT_EQ(p->current().percent, 86.7);
  EXPECT_EQ(p->current().phase, "Setting up jq");
}

TEST(AptProgress, NothingToDoIsComplete) {
  auto p = make_progress_parser("apt");
  EXPECT_TRUE(p->feed("0 upgraded, 0 newly installed, 0 to remove and 3 not upgraded.\n"));
  EXPECT_EQ(p->current().percent, 100.0);
  EXPECT_EQ(p->current().phase, "Nothing to do");
}

TEST(AptProgress, FeedReportsChangesOnlyAndHalfLinesWait) {
  auto p = make_progress_parser("apt");
  EXPECT_FALSE(p->feed("1 upgraded, 0 newly installed, 0 to rem"));
  EXPECT_TRUE(p->feed("ove and 0 not upgraded.\n"));
  EXPECT_FALSE(p->feed("some unrelated line\n"));
  EXPECT_TRUE(p->feed("Unpacking jq (1.6) over (1.5) ...\n"));
  EXPECT_EQ(p->current().percent, 66.7);  // the download is done once dpkg unpacks
  EXPECT_TRUE(p->feed("Setting up jq (1.6) ...\n"));
  EXPECT_EQ(p->current().percent, 100.0);
  EXPECT_TRUE(p->finish(true));
  EXPECT_EQ(p->current(), (progress_state{100.0, "Done"}));
  EXPECT_FALSE(p->finish(true));
}

TEST(AptProgress, UnknownFamilyHasNoParser) {
  EXPECT_EQ(make_progress_parser("nonesuch"), nullptr);
  EXPECT_NE(make_progress_parser("apt"), nullptr);
  EXPECT_EQ(progress_families(), (std::vector<std::string_view>{"apt", "percent"}));
}

// --- percent: any "NN%" on a line --------------------------------------------------------------

TEST(PercentProgress, RealDownloadsAreMonotoneAndReach100) {
  for (const auto name : {"wget-dot", "wget-bar", "curl-bar"}) {
    const auto r = replay(read_transcript(name, "percent"), true, 40, 11, "percent");
    expect_monotone(r, name);
    EXPECT_GE(r.states.size(), 5u) << name << ": a few dozen updates are in the transcript";
    ASSERT_TRUE(r.before_exit.percent) << name;
    EXPECT_EQ(*r.before_exit.percent, 100.0) << name << ": the tool itself said 100%";
    EXPECT_EQ(r.after_exit.percent, 100.0) << name;
  }
}

TEST(PercentProgress, PhasesKeepTheFiguresAndDropTheBarDrawing) {
  auto p = make_progress_parser("percent");
  p->feed("/dev/null            63%[===========>        ]  18.27M  10.0MB/s               \r");
  EXPECT_EQ(p->current(), (progress_state{63.0, "/dev/null 63% 18.27M 10.0MB/s"}));
  p->feed("   150K .......... .......... .......... .......... ..........  71% 551M 0s\n");
  EXPECT_EQ(p->current(), (progress_state{71.0, "150K 71% 551M 0s"}));
  p->feed("##########                                                                74.6%\r");
  EXPECT_EQ(p->current().percent, 74.6);
}

TEST(PercentProgress, IgnoresWhatIsNotAPercentOfProgress) {
  auto p = make_progress_parser("percent");
  EXPECT_FALSE(p->feed("disk usage is at 250% of quota\n"));  // not a progress figure
  EXPECT_FALSE(p->feed("no figure here, only a % sign\n"));
  EXPECT_FALSE(p->current().percent);
  EXPECT_TRUE(p->feed("copying 12% done\n"));
  EXPECT_FALSE(p->feed("copying 8% done\n"));  // never backwards
  EXPECT_EQ(p->current().percent, 12.0);
  EXPECT_TRUE(p->finish(true));
  EXPECT_EQ(p->current().percent, 100.0);
}

}  // namespace
}  // namespace cmdcast::common
