// cmdcast-render [--progress FAMILY] [FILE]: reads command output (a file, or stdin as it
// arrives), prints each progress change to stderr as it happens, then the transcript's lines,
// as cmdcast's clients show them, to stdout.
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>

#include "cmdcast/common/progress.hpp"
#include "cmdcast/common/transcript.hpp"
#include "cmdcast/common/utf8.hpp"

using namespace cmdcast::common;

int main(int argc, char** argv) {
  std::unique_ptr<progress_parser> progress;
  const char* path = nullptr;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--progress") == 0 && i + 1 < argc) {
      progress = make_progress_parser(argv[++i]);
      if (!progress) {
        std::fprintf(stderr, "cmdcast-render: no progress parser for \"%s\"\n", argv[i]);
        return 2;
      }
    } else if (argv[i][0] == '-' && argv[i][1] != '\0') {
      std::fprintf(stderr, "usage: cmdcast-render [--progress FAMILY] [FILE]\n");
      return 2;
    } else {
      path = argv[i];
    }
  }
  std::FILE* in = path && std::strcmp(path, "-") != 0 ? std::fopen(path, "rb") : stdin;
  if (!in) {
    std::fprintf(stderr, "cmdcast-render: cannot open %s: %s\n", path, std::strerror(errno));
    return 1;
  }

  transcript lines;
  utf8_decoder decoder;
  std::string text;
  char buffer[65536];
  bool failed = false;
  auto show_progress = [&] {
    const auto& p = progress->current();
    if (p.percent) {
      std::fprintf(stderr, "progress %5.1f%%  %s\n", *p.percent, p.phase.c_str());
    } else {
      std::fprintf(stderr, "progress  busy   %s\n", p.phase.c_str());
    }
  };
  for (;;) {
    // read() rather than fread(): hand on what a pipe has as soon as it has it.
    const ssize_t got = ::read(fileno(in), buffer, sizeof buffer);
    if (got < 0 && errno == EINTR) continue;
    const std::size_t n = got > 0 ? static_cast<std::size_t>(got) : 0;
    if (got < 0) failed = true;
    text.clear();
    if (n == 0) {
      decoder.finish(text);
    } else {
      decoder.decode(std::string_view(buffer, n), text);
    }
    lines.append(output_stream::out, text);
    if (progress && progress->feed(text)) show_progress();
    if (n == 0) break;
  }
  const bool ok = !failed;
  if (progress && progress->finish(ok)) show_progress();
  for (std::size_t i = 0; i < lines.size(); ++i) {
    const auto l = lines.line(i);
    std::fwrite(l.text.data(), 1, l.text.size(), stdout);
    std::fputc('\n', stdout);
  }
  if (lines.dropped_lines()) std::fprintf(stderr, "(%llu older lines dropped)\n", static_cast<unsigned long long>(lines.dropped_lines()));
  return ok ? 0 : 1;
}
