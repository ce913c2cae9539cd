// Output the benchmarks feed through cmdcast, the same for every benchmark that uses it.
#pragma once

#include <string>

namespace cmdcast::bench {

/// About 4 MiB of what builds and package managers print: plain lines, coloured words,
/// \r progress lines, erase-in-line, tabs and some UTF-8.
std::string mixed_ansi_output();

}  // namespace cmdcast::bench
