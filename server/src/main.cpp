// cmdcast-server --config FILE | --check-config FILE | --help | --version
#include <sys/resource.h>
#include <systemd/sd-daemon.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>

#include <cstdio>
#include <cstring>
#include <functional>
#include <string>
#include <string_view>

#include "config/config.hpp"
#include "http/server.hpp"

namespace {

constexpr const char* usage =
    "usage: cmdcast-server --config FILE        run the server\n"
    "       cmdcast-server --check-config FILE  check FILE and the files it names, connect nowhere;\n"
    "                                           print every problem as FILE:LINE:COLUMN: KEY: WHAT, exit 1\n"
    "       cmdcast-server --help | --version\n"
    "Signals: SIGHUP reloads the config, SIGINT or SIGTERM stops gracefully (twice: at once).\n"
    "See man cmdcast-server and docs/config.md.\n";

int usage_error(const char* problem) {
  std::fprintf(stderr, "cmdcast-server: %s\n%s", problem, usage);
  return 2;
}

/// Each connection is a descriptor: take what the system allows (max_connections is the bound
/// that counts; the soft limit is often 1024).
void raise_file_limit() {
  rlimit files{};
  if (::getrlimit(RLIMIT_NOFILE, &files) == 0 && files.rlim_cur < files.rlim_max) {
    files.rlim_cur = files.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &files);
  }
}

}  // namespace

int main(int argc, char** argv) {
  std::string path;
  bool check_only = false;
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      std::fputs(usage, stdout);
      return 0;
    }
    if (arg == "--version") {
      std::printf("cmdcast-server %s\n", CMDCAST_VERSION);
      return 0;
    }
    if ((arg == "--config" || arg == "--check-config") && i + 1 < argc && path.empty()) {
      check_only = arg == "--check-config";
      path = argv[++i];
    } else {
      return usage_error(("unexpected argument \"" + std::string(arg) + "\"").c_str());
    }
  }
  if (path.empty()) return usage_error("--config FILE is required");

  auto cfg = cmdcast::server::load_config(path);
  if (check_only) {
    if (!cfg) {
      std::fprintf(stderr, "%s\n", cfg.error().c_str());
      return 1;
    }
    std::printf("%s: ok\n", path.c_str());
    return 0;
  }
  if (!cfg) {
    std::fprintf(stderr, "%s\ncmdcast-server: the config has problems (above); nothing was started\n", cfg.error().c_str());
    return 2;
  }
  raise_file_limit();
  boost::asio::io_context io(1);
  cmdcast::server::server srv(io, std::move(*cfg));
  try {
    srv.start();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "cmdcast-server: %s\n", e.what());
    return 1;
  }
  // systemd (Type=notify) starts what depends on us once the listener is bound. Outside
  // systemd NOTIFY_SOCKET is unset and this does nothing.
  sd_notify(0, "READY=1");

  // SIGHUP: read the config again; one that fails the check is refused and the old one stays.
  boost::asio::signal_set hangup(io, SIGHUP);
  std::function<void()> await_hangup = [&] {
    hangup.async_wait([&](boost::system::error_code ec, int) {
      if (ec) return;
      sd_notify(0, "RELOADING=1");
      srv.reload(cmdcast::server::load_config(path), path);
      sd_notify(0, "READY=1");
      await_hangup();
    });
  };
  await_hangup();

  // SIGINT/SIGTERM: stop accepting, cancel running commands, let watchers get their exit
  // events, close the rest with 1001. A second signal stops at once.
  boost::asio::signal_set signals(io, SIGINT, SIGTERM);
  signals.async_wait([&](boost::system::error_code ec, int) {
    if (ec) return;
    sd_notify(0, "STOPPING=1");
    hangup.cancel();
    srv.shut_down([&] { io.stop(); });
    signals.async_wait([&](boost::system::error_code ec2, int) {
      if (!ec2) io.stop();
    });
  });
  io.run();
  return 0;
}
