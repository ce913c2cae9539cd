#include "cmdcast/common/random.hpp"

#include <random>

namespace cmdcast::common {

double random_unit() {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  return std::uniform_real_distribution<double>(0.0, 1.0)(rng);
}

}  // namespace cmdcast::common
