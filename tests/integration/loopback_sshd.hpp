// A private OpenSSH sshd on a free loopback port, for integration tests: generated host and
// client keys, a known_hosts file that trusts the host key, logins as test_user().
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>

#include "ssh/ssh_types.hpp"

namespace cmdcast::testing {

class loopback_sshd {
 public:
  /// accept_ssh_rsa: also accept RSA keys signing with SHA-1 (OpenSSH refuses them by default).
  /// extra_config: more sshd_config lines.
  explicit loopback_sshd(bool accept_ssh_rsa = false, const std::string& extra_config = "");
  ~loopback_sshd();
  loopback_sshd(const loopback_sshd&) = delete;
  loopback_sshd& operator=(const loopback_sshd&) = delete;

  /// Starts sshd (again, on the same port and with the same host key).
  void start();
  /// Kills sshd and everything it started (open sessions, their commands), as a crash would.
  void kill_all();

  std::uint16_t port() const { return port_; }
  const std::string& dir() const { return dir_; }
  /// An endpoint that connects, with the client key and a matching known_hosts.
  server::ssh::machine_endpoint endpoint() const;
  /// Generates a new key pair DIR/NAME (type "ed25519" or "rsa"); authorizes it if asked.
  std::string make_client_key(const std::string& name, const std::string& type, bool authorize);
  /// Writes a known_hosts file naming this server with the given public key file.
  std::string write_known_hosts(const std::string& name, const std::string& public_key_file);
  /// A cmdcast-server [[machines]] entry that reaches this sshd.
  std::string machine_toml(const std::string& id) const;
  /// The host key's fingerprint as ssh-keygen prints it ("SHA256:...").
  std::string host_key_fingerprint() const;

 private:
  std::string dir_;
  std::uint16_t port_ = 0;
  pid_t pid_ = -1;
};

/// Runs a shell command on this machine and returns its stdout (throws on failure).
std::string shell(const std::string& command);

/// The user the tests log in as: cmdcast-test (made by tools/setup), whose /bin/sh runs no
/// login script, so nothing of the machine's own shell set-up can slow or hang a login.
const std::string& test_user();

/// User plus system CPU seconds a process has used so far (from /proc).
double process_cpu_seconds(pid_t pid);

/// A loopback TCP port nothing listens on.
std::uint16_t free_loopback_port();

}  // namespace cmdcast::testing
