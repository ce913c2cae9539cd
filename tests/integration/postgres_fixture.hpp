// A PostgreSQL 15 of a test's own on loopback, made as TOOLCHAIN.md says: initdb in a fresh
// folder (as the `postgres` user: the server refuses to run as root), pg_ctl on a free port
// with its unix socket in that folder and fsync off, and a database `cmdcast` owned by user
// `cmdcast` (trust). Stopped at once and removed by the destructor. Shared by the audit and
// the cluster tests.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace cmdcast::testing {

class postgres_server {
 public:
  /// Starts it (throws when it cannot).
  postgres_server();
  ~postgres_server();
  postgres_server(const postgres_server&) = delete;
  postgres_server& operator=(const postgres_server&) = delete;

  /// libpq's conninfo for cmdcast: "host=DIR port=P dbname=cmdcast user=cmdcast".
  std::string conninfo() const;
  /// `[audit] postgres = "..."`, for a server's config.
  std::string audit_toml() const;
  const std::string& dir() const { return dir_; }
  std::uint16_t port() const { return port_; }

  /// pg_ctl stop -m immediate: the crash of the database (connections drop at once).
  void stop();
  /// Starts it again on the same data and port.
  void start();
  bool running() const { return running_; }

  /// Runs `sql` with `params` bound ($1, ...) over a connection of its own: the rows, each
  /// row's columns joined by '|'. Throws when it fails.
  std::vector<std::string> query(const std::string& sql, const std::vector<std::string>& params = {}) const;

 private:
  std::string dir_;
  std::uint16_t port_ = 0;
  bool running_ = false;
};

}  // namespace cmdcast::testing
