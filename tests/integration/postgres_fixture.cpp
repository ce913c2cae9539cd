#include "postgres_fixture.hpp"

#include <libpq-fe.h>
#include <stdlib.h>
#include <unistd.h>

#include <filesystem>
#include <memory>
#include <stdexcept>

#include "loopback_sshd.hpp"

namespace cmdcast::testing {
namespace {

const std::string bin = "/usr/lib/postgresql/15/bin/";

/// The command as the `postgres` user when we are root (PostgreSQL refuses root).
std::string as_postgres(const std::string& command) {
  return ::geteuid() == 0 ? "runuser -u postgres -- " + command : command;
}

}  // namespace

postgres_server::postgres_server() {
  char name[] = "/tmp/cmdcast-pg-XXXXXX";
  if (!::mkdtemp(name)) throw std::runtime_error("mkdtemp");
  dir_ = name;
  if (::geteuid() == 0) shell("chown postgres " + dir_);
  shell(as_postgres(bin + "initdb -D " + dir_ + "/data -A trust -U cmdcast --no-sync > " + dir_ + "/initdb.log 2>&1"));
  port_ = free_loopback_port();
  start();
  query("CREATE DATABASE cmdcast");
}

postgres_server::~postgres_server() {
  try {
    stop();
  } catch (...) {
  }
  std::error_code ignored;
  std::filesystem::remove_all(dir_, ignored);
}

std::string postgres_server::conninfo() const {
  return "host=" + dir_ + " port=" + std::to_string(port_) + " dbname=cmdcast user=cmdcast";
}

std::string postgres_server::audit_toml() const { return "\n[audit]\npostgres = \"" + conninfo() + "\"\n"; }

void postgres_server::start() {
  if (running_) return;
  shell(as_postgres(bin + "pg_ctl -D " + dir_ + "/data -w -l " + dir_ + "/log -o \"-c listen_addresses=127.0.0.1 -p " +
                    std::to_string(port_) + " -k " + dir_ + " -c fsync=off\" start > /dev/null"));
  running_ = true;
}

void postgres_server::stop() {
  if (!running_) return;
  running_ = false;
  shell(as_postgres(bin + "pg_ctl -D " + dir_ + "/data -m immediate stop > /dev/null"));
}

std::vector<std::string> postgres_server::query(const std::string& sql, const std::vector<std::string>& params) const {
  // CREATE DATABASE needs a database to connect to first: postgres.
  const std::string db = sql.starts_with("CREATE DATABASE") ? "postgres" : "cmdcast";
  const std::string info = "host=" + dir_ + " port=" + std::to_string(port_) + " dbname=" + db + " user=cmdcast";
  const std::unique_ptr<PGconn, decltype(&PQfinish)> c(PQconnectdb(info.c_str()), &PQfinish);
  if (PQstatus(c.get()) != CONNECTION_OK) throw std::runtime_error("postgres: " + std::string(PQerrorMessage(c.get())));
  std::vector<const char*> values;
  for (const auto& p : params) values.push_back(p.c_str());
  const std::unique_ptr<PGresult, decltype(&PQclear)> r(
      PQexecParams(c.get(), sql.c_str(), static_cast<int>(values.size()), nullptr, values.data(), nullptr, nullptr, 0),
      &PQclear);
  const auto status = PQresultStatus(r.get());
  if (status != PGRES_TUPLES_OK && status != PGRES_COMMAND_OK) {
    throw std::runtime_error(sql + ": " + PQerrorMessage(c.get()));
  }
  std::vector<std::string> rows;
  for (int row = 0; row < PQntuples(r.get()); ++row) {
    std::string line;
    for (int col = 0; col < PQnfields(r.get()); ++col) {
      if (col > 0) line += '|';
      line.append(PQgetvalue(r.get(), row, col), static_cast<std::size_t>(PQgetlength(r.get(), row, col)));
    }
    rows.push_back(std::move(line));
  }
  return rows;
}

}  // namespace cmdcast::testing
