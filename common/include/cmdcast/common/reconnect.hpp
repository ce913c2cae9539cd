// When a client tries again after its connection dropped: the web and desktop client, the CLI
// and its fleet view share one rule.
#pragma once

#include "cmdcast/common/random.hpp"

#include <chrono>

namespace cmdcast::common {

/// The wait before reconnect attempt `attempt` (0 for the first): doubling from `first` up to
/// `most`, each drawn from the upper half of its step by `unit` (in [0, 1)). Watchers that one
/// server restart dropped all at once then come back spread out, not in lock-step rounds:
/// 10,000 at once overflowed a server's listen queue by up to 2,400 connections here, each
/// of which then waited 1 s or 3 s more for its SYN to be sent again.
std::chrono::milliseconds reconnect_delay(int attempt, std::chrono::milliseconds first, std::chrono::milliseconds most,
                                          double unit = random_unit());

}  // namespace cmdcast::common
