#include "loopback_sshd.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pwd.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <stdexcept>
#include <thread>
#include <vector>

extern char** environ;

namespace cmdcast::testing {
namespace fs = std::filesystem;

std::string shell(const std::string& command) {
  std::FILE* p = ::popen(command.c_str(), "r");
  if (!p) throw std::runtime_error("popen failed: " + command);
  std::string out;
  char buf[4096];
  std::size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  const int status = ::pclose(p);
  if (status != 0) throw std::runtime_error("command failed (" + std::to_string(status) + "): " + command);
  return out;
}

double process_cpu_seconds(pid_t pid) {
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  std::getline(stat, line);
  // "pid (comm) state ppid ...": comm may hold spaces, so read after the last ')'.
  std::istringstream fields(line.substr(line.rfind(')') + 2));
  std::string skip;
  for (int i = 3; i < 14; ++i) fields >> skip;  // state .. cmajflt
  double utime = 0, stime = 0;
  fields >> utime >> stime;
  return (utime + stime) / static_cast<double>(::sysconf(_SC_CLK_TCK));
}

std::uint16_t free_loopback_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  socklen_t len = sizeof addr;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  ::close(fd);
  return ntohs(addr.sin_port);
}

const std::string& test_user() {
  static const std::string name = [] {
    if (!::getpwnam("cmdcast-test")) throw std::runtime_error("no user cmdcast-test: run tools/setup");
    return std::string("cmdcast-test");
  }();
  return name;
}

namespace {

bool accepts_connections(std::uint16_t port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(port);
  const bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
  ::close(fd);
  return ok;
}

// Every process below `root` in the process tree (from /proc).
std::vector<pid_t> descendants(pid_t root) {
  std::multimap<pid_t, pid_t> children;
  for (const auto& entry : fs::directory_iterator("/proc")) {
    const std::string name = entry.path().filename();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::ifstream stat(entry.path() / "stat");
    std::string line;
    if (!std::getline(stat, line)) continue;
    // "pid (comm) state ppid ...": comm may hold spaces, so read after the last ')'.
    const auto close = line.rfind(')');
    if (close == std::string::npos) continue;
    char state = 0;
    int ppid = 0;
    if (std::sscanf(line.c_str() + close + 1, " %c %d", &state, &ppid) == 2) {
      children.emplace(ppid, std::stoi(name));
    }
  }
  std::vector<pid_t> out;
  std::vector<pid_t> todo = {root};
  while (!todo.empty()) {
    const pid_t p = todo.back();
    todo.pop_back();
    auto [a, b] = children.equal_range(p);
    for (auto it = a; it != b; ++it) {
      out.push_back(it->second);
      todo.push_back(it->second);
    }
  }
  return out;
}

}  // namespace

loopback_sshd::loopback_sshd(bool accept_ssh_rsa, const std::string& extra_config) {
  char tmpl[] = "/tmp/cmdcast-sshd-XXXXXX";
  dir_ = ::mkdtemp(tmpl);
  // sshd reads the authorized keys as the user logging in (test_user).
  ::chmod(dir_.c_str(), 0755);
  shell("ssh-keygen -q -t ed25519 -N '' -f " + dir_ + "/hostkey");
  make_client_key("client", "ed25519", true);
  port_ = free_loopback_port();
  std::ofstream(dir_ + "/sshd_config") << "Port " << port_ << "\n"
                                       << "ListenAddress 127.0.0.1\n"
                                       << "HostKey " << dir_ << "/hostkey\n"
                                       << "AuthorizedKeysFile " << dir_ << "/authorized_keys\n"
                                       << "PasswordAuthentication no\n"
                                       << "KbdInteractiveAuthentication no\n"
                                       << "UsePAM no\n"
                                       << "StrictModes no\n"
                                       << "PermitRootLogin prohibit-password\n"
                                       << "PidFile " << dir_ << "/sshd.pid\n"
                                       // sshd takes a keyword's first value: extra_config may set its own.
                                       << (extra_config.find("MaxSessions") == std::string::npos ? "MaxSessions 64\n" : "")
                                       << "MaxStartups 100\n"
                                       << "LogLevel VERBOSE\n"
                                       << (accept_ssh_rsa ? "PubkeyAcceptedAlgorithms +ssh-rsa\n" : "")
                                       << extra_config;
  write_known_hosts("known_hosts", dir_ + "/hostkey.pub");
  start();
}

loopback_sshd::~loopback_sshd() {
  kill_all();
  std::error_code ignored;
  fs::remove_all(dir_, ignored);
}

void loopback_sshd::start() {
  ::mkdir("/run/sshd", 0755);
  const std::string config = dir_ + "/sshd_config";
  const std::string log = dir_ + "/sshd.log";
  std::vector<std::string> args = {"/usr/sbin/sshd", "-D", "-f", config, "-E", log};
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  if (::posix_spawn(&pid_, argv[0], nullptr, nullptr, argv.data(), environ) != 0) {
    throw std::runtime_error("cannot start sshd");
  }
  for (int i = 0; i < 200; ++i) {
    if (accepts_connections(port_)) return;
    int status = 0;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      throw std::runtime_error("sshd exited at start; see " + log);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(25));
  }
  throw std::runtime_error("sshd does not accept connections on port " + std::to_string(port_));
}

void loopback_sshd::kill_all() {
  if (pid_ <= 0) return;
  // Stop the listener first so nothing new starts, then everything it had started.
  ::kill(pid_, SIGSTOP);
  for (pid_t p : descendants(pid_)) ::kill(p, SIGKILL);
  ::kill(pid_, SIGKILL);
  ::waitpid(pid_, nullptr, 0);
  pid_ = -1;
}

server::ssh::machine_endpoint loopback_sshd::endpoint() const {
  server::ssh::machine_endpoint e;
  e.host = "127.0.0.1";
  e.port = port_;
  e.user = test_user();
  e.identity = dir_ + "/client";
  e.known_hosts = dir_ + "/known_hosts";
  return e;
}

std::string loopback_sshd::make_client_key(const std::string& name, const std::string& type,
                                           bool authorize) {
  const std::string path = dir_ + "/" + name;
  shell("ssh-keygen -q -t " + type + (type == "rsa" ? " -b 3072" : "") + " -N '' -f " + path);
  if (authorize) shell("cat " + path + ".pub >> " + dir_ + "/authorized_keys && chmod 644 " + dir_ + "/authorized_keys");
  return path;
}

std::string loopback_sshd::write_known_hosts(const std::string& name,
                                             const std::string& public_key_file) {
  const std::string path = dir_ + "/" + name;
  std::ifstream in(public_key_file);
  std::string type, key;
  in >> type >> key;
  std::ofstream(path) << "[127.0.0.1]:" << port_ << " " << type << " " << key << "\n";
  return path;
}

std::string loopback_sshd::machine_toml(const std::string& id) const {
  const auto e = endpoint();
  return "[[machines]]\nid = \"" + id + "\"\nhost = \"" + e.host + "\"\nport = " + std::to_string(e.port) +
         "\nuser = \"" + e.user + "\"\nidentity = \"" + e.identity + "\"\nknown_hosts = \"" + e.known_hosts + "\"\n";
}

std::string loopback_sshd::host_key_fingerprint() const {
  // "256 SHA256:abc... comment (ED25519)"
  const std::string line = shell("ssh-keygen -l -E sha256 -f " + dir_ + "/hostkey.pub");
  const auto start = line.find("SHA256:");
  return line.substr(start, line.find(' ', start) - start);
}

}  // namespace cmdcast::testing
