// Randomness for spreading things out in time (reconnects, idle checks), not for secrets.
#pragma once

namespace cmdcast::common {

/// A number drawn uniformly from [0, 1).
double random_unit();

}  // namespace cmdcast::common
