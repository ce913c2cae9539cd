#include "redis_fixture.hpp"

#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <stdexcept>
#include <thread>
#include <vector>

#include "loopback_sshd.hpp"

extern char** environ;

namespace cmdcast::testing {

redis_server::redis_server() {
  char pattern[] = "/tmp/cmdcast-redis-XXXXXX";
  if (!::mkdtemp(pattern)) throw std::runtime_error("mkdtemp failed");
  dir_ = pattern;
  port_ = free_loopback_port();
  start();
}

redis_server::~redis_server() {
  stop();
  std::error_code ignored;
  std::filesystem::remove_all(dir_, ignored);
}

void redis_server::start() {
  std::vector<std::string> args = {"/usr/bin/redis-server", "--bind", "127.0.0.1", "--port", std::to_string(port_),
                                   "--save", "", "--appendonly", "no", "--dir", dir_, "--logfile", dir_ + "/redis.log"};
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  if (::posix_spawn(&pid_, argv[0], nullptr, nullptr, argv.data(), environ) != 0) {
    throw std::runtime_error("cannot start redis-server");
  }
  // Ready when it answers PING.
  for (int i = 0; i < 200; ++i) {
    if (cli("PING") == "PONG") return;
    std::this_thread::sleep_for(std::chrono::milliseconds(25));
  }
  throw std::runtime_error("redis-server did not answer PING on port " + std::to_string(port_));
}

void redis_server::stop() {
  if (pid_ <= 0) return;
  ::kill(pid_, SIGKILL);  // as a crash: nothing kept (it has no persistence anyway)
  int status = 0;
  ::waitpid(pid_, &status, 0);
  pid_ = -1;
}

std::string redis_server::cli(const std::string& args) const {
  const std::string command = "redis-cli -h 127.0.0.1 -p " + std::to_string(port_) + " " + args + " 2>/dev/null";
  std::FILE* p = ::popen(command.c_str(), "r");
  if (!p) return "";
  std::string out;
  char buf[4096];
  std::size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  ::pclose(p);
  while (!out.empty() && (out.back() == '\n' || out.back() == '\r')) out.pop_back();
  return out;
}

}  // namespace cmdcast::testing
