#include "nginx_proxy.hpp"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <thread>

extern char** environ;

namespace cmdcast::testing {
namespace {

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

std::string make_dir() {
  char pattern[] = "/tmp/cmdcast-nginx-XXXXXX";
  if (!::mkdtemp(pattern)) throw std::runtime_error("mkdtemp failed");
  // nginx's worker runs as nobody and must reach its temp paths here.
  ::chmod(pattern, 0755);
  return pattern;
}

bool accepts(std::uint16_t port) {
  try {
    net::io_context io;
    tcp::socket s(io);
    s.connect({net::ip::make_address("127.0.0.1"), port});
    return true;
  } catch (...) {
    return false;
  }
}

}  // namespace

std::string shipped_nginx_site() {
  const std::string text = read_file(CMDCAST_NGINX_SITE);
  if (text.empty()) throw std::runtime_error("cannot read " CMDCAST_NGINX_SITE);
  return text;
}

std::string substitute(std::string text, const std::vector<std::pair<std::string, std::string>>& edits) {
  for (const auto& [from, to] : edits) {
    auto at = text.find(from);
    if (at == std::string::npos) throw std::runtime_error("the nginx site has no \"" + from + "\" any more: update the test");
    while (at != std::string::npos) {
      if (to == delete_line) {
        const auto begin = text.rfind('\n', at) + 1;  // npos + 1 == 0: the first line
        const auto end = text.find('\n', at);
        text.erase(begin, end == std::string::npos ? std::string::npos : end - begin + 1);
        at = text.find(from, begin);
      } else {
        text.replace(at, from.size(), to);
        at = text.find(from, at + to.size());
      }
    }
  }
  return text;
}

std::string nginx_main_config(const std::string& dir, const std::string& site_file) {
  std::string temp_paths;
  for (const char* kind : {"client_body", "proxy", "fastcgi", "uwsgi", "scgi"}) {
    temp_paths += std::string("    ") + kind + "_temp_path " + dir + "/" + kind + ";\n";
  }
  return "daemon off;\n"
         "worker_processes 1;\n"
         "pid " + dir + "/nginx.pid;\n"
         "error_log " + dir + "/error.log notice;\n"
         "events { worker_connections 1024; }\n"
         "http {\n"
         "    log_format cmdcast '$remote_addr \"$request\" $status $server_protocol';\n"
         "    access_log " + dir + "/access.log cmdcast;\n" +
         temp_paths +
         "    include " + site_file + ";\n"
         "}\n";
}

std::pair<int, std::string> nginx_check(const std::string& site_text) {
  const std::string dir = make_dir();
  std::ofstream(dir + "/cmdcast.conf") << site_text;
  std::ofstream(dir + "/nginx.conf") << nginx_main_config(dir, dir + "/cmdcast.conf");
  const std::string command = "/usr/sbin/nginx -t -p " + dir + " -c " + dir + "/nginx.conf 2>&1";
  std::FILE* p = ::popen(command.c_str(), "r");
  std::string out;
  char buf[4096];
  std::size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  const int status = ::pclose(p);
  std::error_code ignored;
  std::filesystem::remove_all(dir, ignored);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, out};
}

nginx_proxy::nginx_proxy(const nginx_site_options& o) : dir_(make_dir()) {
  port_ = free_loopback_port();
  do plain_port_ = free_loopback_port();
  while (plain_port_ == port_);
  const std::string https = "127.0.0.1:" + std::to_string(port_);
  std::vector<std::pair<std::string, std::string>> edits = {
      {"listen 443 ssl http2;", "listen " + https + " ssl http2;"},
      {"listen [::]:443 ssl http2;", delete_line},
      {"listen 80;", "listen 127.0.0.1:" + std::to_string(plain_port_) + ";"},
      {"listen [::]:80;", delete_line},
      {"/etc/ssl/certs/cmdcast.example.org.pem", o.certificate.cert},
      {"/etc/ssl/private/cmdcast.example.org.key", o.certificate.key},
      {"server 127.0.0.1:8080;", "server 127.0.0.1:" + std::to_string(o.upstream_port) + ";"},
  };
  if (!o.pass_upgrades) {
    edits.emplace_back("proxy_set_header Upgrade ", delete_line);
    edits.emplace_back("proxy_set_header Connection ", delete_line);
  }
  site_ = substitute(shipped_nginx_site(), edits);
  std::ofstream(dir_ + "/cmdcast.conf") << site_;
  std::ofstream(dir_ + "/nginx.conf") << nginx_main_config(dir_, dir_ + "/cmdcast.conf");

  std::vector<std::string> args = {"/usr/sbin/nginx", "-p", dir_, "-c", dir_ + "/nginx.conf"};
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 2, (dir_ + "/stderr.log").c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
  // A process group of its own: the master and its worker can be killed together.
  posix_spawnattr_t attributes;
  posix_spawnattr_init(&attributes);
  posix_spawnattr_setflags(&attributes, POSIX_SPAWN_SETPGROUP);
  posix_spawnattr_setpgroup(&attributes, 0);
  const int spawned = posix_spawn(&pid_, argv[0], &actions, &attributes, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attributes);
  if (spawned != 0) throw std::runtime_error("cannot start /usr/sbin/nginx");
  for (int i = 0; i < 400; ++i) {
    if (::waitpid(pid_, nullptr, WNOHANG) == pid_) {
      pid_ = -1;
      const std::string why = read_file(dir_ + "/stderr.log") + read_file(dir_ + "/error.log");
      std::error_code ignored;
      std::filesystem::remove_all(dir_, ignored);
      throw std::runtime_error("nginx did not start:\n" + why);
    }
    if (accepts(port_) && accepts(plain_port_)) return;
    std::this_thread::sleep_for(std::chrono::milliseconds(25));
  }
  ::kill(-pid_, SIGKILL);
  ::waitpid(pid_, nullptr, 0);
  throw std::runtime_error("nginx did not listen within 10 s:\n" + read_file(dir_ + "/error.log"));
}

nginx_proxy::~nginx_proxy() {
  if (pid_ > 0) {
    // Fast shutdown: the master stops its worker and exits.
    ::kill(pid_, SIGTERM);
    bool exited = false;
    for (int i = 0; i < 200 && !exited; ++i) {
      exited = ::waitpid(pid_, nullptr, WNOHANG) == pid_;
      if (!exited) std::this_thread::sleep_for(std::chrono::milliseconds(25));
    }
    if (!exited) {
      ::kill(-pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
  }
  if (::testing::UnitTest::GetInstance()->failed_test_count() > 0) {
    std::fprintf(stderr, "--- nginx error log ---\n%s--- nginx access log ---\n%s--- end of nginx logs ---\n",
                 error_log().c_str(), access_log().c_str());
  }
  std::error_code ignored;
  std::filesystem::remove_all(dir_, ignored);
}

std::string nginx_proxy::access_log() const { return read_file(dir_ + "/access.log"); }

std::string nginx_proxy::error_log() const { return read_file(dir_ + "/error.log"); }

}  // namespace cmdcast::testing
