#include "cmdcast/common/reconnect.hpp"

#include <gtest/gtest.h>

#include <limits>
#include <set>

namespace cmdcast::common {
namespace {

using std::chrono::milliseconds;

TEST(ReconnectDelay, DoublesFromTheFirstUpToTheMostEachInTheUpperHalfOfItsStep) {
  const milliseconds first(250), most(4000);
  const milliseconds steps[] = {milliseconds(250), milliseconds(500), milliseconds(1000), milliseconds(2000),
                                milliseconds(4000), milliseconds(4000)};
  for (int attempt = 0; attempt < 6; ++attempt) {
    const auto step = steps[attempt];
    EXPECT_EQ(reconnect_delay(attempt, first, most, 0.0), step / 2) << attempt;
    EXPECT_EQ(reconnect_delay(attempt, first, most, 0.5), step * 3 / 4) << attempt;
    EXPECT_LE(reconnect_delay(attempt, first, most, 0.999999), step) << attempt;
    EXPECT_GE(reconnect_delay(attempt, first, most, 0.999999), step - milliseconds(1)) << attempt;
  }
}

TEST(ReconnectDelay, HostileAttemptsAndDrawsStayWithinTheBounds) {
  const milliseconds first(200), most(3200);
  for (const int attempt : {-5, 63, 1000, std::numeric_limits<int>::max()}) {
    const auto d = reconnect_delay(attempt, first, most, 0.5);
    EXPECT_GE(d, attempt < 0 ? first / 2 : most / 2) << attempt;
    EXPECT_LE(d, attempt < 0 ? first : most) << attempt;
  }
  EXPECT_EQ(reconnect_delay(0, first, most, -3.0), first / 2);
  EXPECT_EQ(reconnect_delay(0, first, most, 7.0), first);
}

TEST(ReconnectDelay, ClientsDroppedTogetherComeBackSpreadOut) {
  // 1,000 clients' first attempts: spread over the upper half of the step, not all at once.
  std::set<milliseconds::rep> distinct;
  for (int i = 0; i < 1000; ++i) {
    const auto d = reconnect_delay(0, milliseconds(1000), milliseconds(4000));
    ASSERT_GE(d, milliseconds(500));
    ASSERT_LE(d, milliseconds(1000));
    distinct.insert(d.count());
  }
  EXPECT_GT(distinct.size(), 300u);  // of 500 possible values
}

}  // namespace
}  // namespace cmdcast::common
