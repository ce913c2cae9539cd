// Debian's real nginx on loopback in front of cmdcast-server, running the site cmdcast ships
// (deploy/nginx/cmdcast.conf). The test copy is the shipped file with only the lines an admin
// edits substituted (ports, certificate, upstream), so a change to the site is what the tests
// run; a substitution that no longer finds its line fails the test instead of testing less.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "tls_fixture.hpp"

namespace cmdcast::testing {

/// The shipped site, as text.
std::string shipped_nginx_site();

/// Replaces each `from` in `text` (each must occur at least once) with its `to`; a `to` of
/// "\x7f" deletes the whole lines holding `from`.
std::string substitute(std::string text, const std::vector<std::pair<std::string, std::string>>& edits);
inline const std::string delete_line = "\x7f";

/// What the test copy of the site looks like.
struct nginx_site_options {
  std::uint16_t upstream_port = 0;  // cmdcast-server's port on 127.0.0.1
  tls_files certificate;            // nginx's certificate and key
  /// false: the site without its Upgrade and Connection lines, the usual misconfiguration.
  bool pass_upgrades = true;
};

/// nginx (master and one worker) in a folder of its own, with a wrapper nginx.conf that holds
/// the pid, logs and temp paths there and includes the test copy of the site.
class nginx_proxy {
 public:
  explicit nginx_proxy(const nginx_site_options& options);
  /// Stops nginx (and, should it not stop, kills its process group) and removes the folder.
  ~nginx_proxy();
  nginx_proxy(const nginx_proxy&) = delete;
  nginx_proxy& operator=(const nginx_proxy&) = delete;

  /// The HTTPS port (the site's "listen 443") and the plain one (its "listen 80").
  std::uint16_t port() const { return port_; }
  std::uint16_t plain_port() const { return plain_port_; }
  /// https://127.0.0.1:PORT
  std::string url() const { return "https://127.0.0.1:" + std::to_string(port_); }
  /// The site as this nginx runs it.
  const std::string& site() const { return site_; }
  std::string access_log() const;
  std::string error_log() const;

 private:
  std::string dir_, site_;
  std::uint16_t port_ = 0, plain_port_ = 0;
  pid_t pid_ = -1;
};

/// The wrapper nginx.conf for a site file in `dir` (what the tests and `nginx -t` run).
std::string nginx_main_config(const std::string& dir, const std::string& site_file);

/// `nginx -t` on `site_text` in a folder of its own: the exit status and what nginx said.
std::pair<int, std::string> nginx_check(const std::string& site_text);

}  // namespace cmdcast::testing
