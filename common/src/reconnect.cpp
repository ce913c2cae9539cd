#include "cmdcast/common/reconnect.hpp"

#include <algorithm>
#include <cmath>

namespace cmdcast::common {

std::chrono::milliseconds reconnect_delay(int attempt, std::chrono::milliseconds first, std::chrono::milliseconds most,
                                          double unit) {
  // Doubling in milliseconds as a double: no shift overflows, whatever the attempt.
  const double step = std::min(static_cast<double>(most.count()),
                               static_cast<double>(first.count()) * std::pow(2.0, std::clamp(attempt, 0, 62)));
  const double drawn = step * (0.5 + 0.5 * std::clamp(unit, 0.0, 1.0));
  return std::chrono::milliseconds(static_cast<std::chrono::milliseconds::rep>(drawn));
}

}  // namespace cmdcast::common
