#include "corpus.hpp"

#include <random>

namespace cmdcast::bench {

std::string mixed_ansi_output() {
  std::mt19937 rng(7);
  std::string s;
  int line = 0;
  while (s.size() < (4u << 20)) {
    switch (rng() % 6) {
      case 0:
        s += "\x1b[1m\x1b[32m[" + std::to_string(line) + "/9999]\x1b[0m Building CXX object src/file_" +
             std::to_string(rng() % 1000) + ".cpp.o\n";
        break;
      case 1:
        s += "\x1b[31merror:\x1b[0m expected ';' after expression \x1b[38;5;208m(x)\x1b[39m at line " +
             std::to_string(rng() % 500) + "\n";
        break;
      case 2:
        for (int p = 0; p <= 100; p += 25) s += "\rDownloading 12.3 MB \x1b[K" + std::to_string(p) + "%";
        s += "\n";
        break;
      case 3: s += "Unpacking libfoo-dev:amd64 (1.2.3-4) over (1.2.3-3) ...\n"; break;
      case 4: s += "name\tsize\tstate\tdétails ✓\n"; break;
      default:
        s += "\x1b[38;2;200;100;50mtruecolor\x1b[0m plain text follows to fill the line with ordinary words\n";
        break;
    }
    ++line;
  }
  return s;
}

}  // namespace cmdcast::bench
