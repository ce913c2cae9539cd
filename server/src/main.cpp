// cmdcast-server --config FILE
#include <sys/resource.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>

#include <cstdio>
#include <cstring>
#include <string>

#include "config/config.hpp"
#include "http/server.hpp"

int main(int argc, char** argv) {
  std::string path;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--config") == 0 && i + 1 < argc) {
      path = argv[++i];
    } else {
      std::fprintf(stderr, "usage: cmdcast-server --config FILE\n");
      return 2;
    }
  }
  if (path.empty()) {
    std::fprintf(stderr, "usage: cmdcast-server --config FILE\n");
    return 2;
  }
  auto cfg = cmdcast::server::load_config(path);
  if (!cfg) {
    std::fprintf(stderr, "cmdcast-server: %s\n", cfg.error().c_str());
    return 2;
  }
  // Each connection is a descriptor: take what the system allows (max_connections is the
  // bound that counts; the soft limit is often 1024).
  rlimit files{};
  if (::getrlimit(RLIMIT_NOFILE, &files) == 0 && files.rlim_cur < files.rlim_max) {
    files.rlim_cur = files.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &files);
  }
  boost::asio::io_context io(1);
  cmdcast::server::server srv(io, std::move(*cfg));
  try {
    srv.start();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "cmdcast-server: %s\n", e.what());
    return 1;
  }
  // SIGINT/SIGTERM: stop accepting, cancel running commands, let watchers get their exit
  // events, close the rest with 1001. A second signal stops at once.
  boost::asio::signal_set signals(io, SIGINT, SIGTERM);
  signals.async_wait([&](boost::system::error_code ec, int) {
    if (ec) return;
    srv.shut_down([&] { io.stop(); });
    signals.async_wait([&](boost::system::error_code ec2, int) {
      if (!ec2) io.stop();
    });
  });
  io.run();
  return 0;
}
