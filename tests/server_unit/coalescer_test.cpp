// When coalesced output goes out: at once after a quiet spell, else at the end of the window
// that the last send opened, or at once when enough waits.
#include <gtest/gtest.h>

#include "exec/coalescer.hpp"

using cmdcast::server::coalescer;
using namespace std::chrono_literals;

TEST(Coalescer, ALoneLineGoesAtOnceAndAChattyStreamWaitsForTheWindow) {
  coalescer c(16 * 1024, 3ms);
  const auto t0 = coalescer::clock::now();
  EXPECT_TRUE(c.send_now(10, t0));  // nothing sent before: a quiet spell
  c.sent(t0);
  EXPECT_FALSE(c.send_now(10, t0 + 1ms));  // right behind a send: wait
  EXPECT_EQ(c.send_at(), t0 + 3ms);
  EXPECT_TRUE(c.send_now(16 * 1024, t0 + 1ms));  // unless enough waits
  EXPECT_TRUE(c.send_now(10, t0 + 3ms));  // the window is over
  c.sent(t0 + 3ms);
  EXPECT_FALSE(c.send_now(10, t0 + 4ms));
  EXPECT_TRUE(c.send_now(10, t0 + 50ms));  // a ticker's next line, 50 ms on
}
