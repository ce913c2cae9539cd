// The fuzz targets' assertion: a broken invariant aborts, which libFuzzer reports with the input.
#pragma once

#include <cstdlib>

inline void check(bool ok) {
  if (!ok) std::abort();
}
