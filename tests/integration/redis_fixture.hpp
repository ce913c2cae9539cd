// A private redis-server on a free loopback port, for the cluster tests: no persistence, its
// folder removed at the end. It can be stopped and started again on the same port (a Redis
// restart mid-run).
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>

namespace cmdcast::testing {

class redis_server {
 public:
  redis_server();
  ~redis_server();
  redis_server(const redis_server&) = delete;
  redis_server& operator=(const redis_server&) = delete;

  std::uint16_t port() const { return port_; }
  pid_t pid() const { return pid_; }
  std::string address() const { return "127.0.0.1:" + std::to_string(port_); }
  /// Runs redis-cli against it: its output, trimmed.
  std::string cli(const std::string& args) const;
  void stop();
  void start();

 private:
  std::string dir_;
  std::uint16_t port_ = 0;
  pid_t pid_ = -1;
};

}  // namespace cmdcast::testing
