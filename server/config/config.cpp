#include "config/config.hpp"

#include <openssl/evp.h>
#include <re2/re2.h>

#include <boost/asio/ip/address.hpp>

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "cmdcast/common/progress.hpp"
#include "http/client_address.hpp"
#include "ssh/machine_connection.hpp"

#define TOML_EXCEPTIONS 1
#include <toml++/toml.h>

namespace cmdcast::server {
namespace {

/// A config problem, located: thrown inside the parser, recorded by the nearest attempt().
struct config_error {
  toml::source_position at;
  std::string message;
};

/// Reads the TOML tree and collects every problem: each key (or entry) is read in an
/// attempt(), so one mistake does not hide the next, as `nginx -t` and `sshd -t` report.
class reader {
 public:
  explicit reader(std::string origin) : origin_(std::move(origin)) {}

  [[noreturn]] void fail(const toml::node* at, std::string_view key, std::string_view problem) const {
    fail_at(at ? at->source().begin : toml::source_position{}, key, problem);
  }
  /// `at` line 0: no place in the file to point at.
  [[noreturn]] void fail_at(toml::source_position at, std::string_view key, std::string_view problem) const {
    std::string where = origin_;
    if (at.line) where += ":" + std::to_string(at.line) + ":" + std::to_string(at.column);
    throw config_error{at, where + ": " + std::string(key) + ": " + std::string(problem)};
  }

  /// Runs `read`; a problem it finds is recorded and reading goes on with the next attempt.
  template <typename F>
  void attempt(F&& read) {
    try {
      read();
    } catch (const config_error& e) {
      problems_.push_back(e);
    }
  }
  bool failed() const { return !problems_.empty(); }
  /// Every problem, one per line, in the order of the file.
  std::string report() {
    std::stable_sort(problems_.begin(), problems_.end(), [](const config_error& a, const config_error& b) {
      return a.at.line != b.at.line ? a.at.line < b.at.line : a.at.column < b.at.column;
    });
    std::string out;
    for (const auto& p : problems_) out += (out.empty() ? "" : "\n") + p.message;
    return out;
  }

  /// Rejects keys the table should not have (typos would otherwise be silently ignored).
  void only_keys(const toml::table& t, std::string_view where, std::initializer_list<std::string_view> known) const {
    for (const auto& [k, v] : t) {
      bool ok = false;
      for (auto name : known) ok = ok || k.str() == name;
      if (!ok) fail_at(k.source().begin, std::string(where) + "." + std::string(k.str()), "unknown key");
    }
  }

  std::string string(const toml::table& t, std::string_view where, std::string_view key,
                     std::optional<std::string> fallback = std::nullopt) const {
    const toml::node* n = t.get(key);
    const std::string name = std::string(where) + "." + std::string(key);
    if (!n) {
      if (fallback) return *fallback;
      fail(&t, name, "missing");
    }
    if (!n->is_string()) fail(n, name, "must be a string");
    const std::string value = **n->as_string();
    if (value.empty()) fail(n, name, "must not be empty");
    return value;
  }

  std::int64_t integer(const toml::table& t, std::string_view where, std::string_view key, std::int64_t fallback,
                       std::int64_t min, std::int64_t max) const {
    const toml::node* n = t.get(key);
    const std::string name = std::string(where) + "." + std::string(key);
    if (!n) return fallback;
    if (!n->is_integer()) fail(n, name, "must be an integer");
    const std::int64_t v = **n->as_integer();
    if (v < min || v > max) {
      fail(n, name, "must be between " + std::to_string(min) + " and " + std::to_string(max));
    }
    return v;
  }

  std::vector<std::string> strings(const toml::table& t, std::string_view where, std::string_view key) const {
    std::vector<std::string> out;
    const toml::node* n = t.get(key);
    if (!n) return out;
    const std::string name = std::string(where) + "." + std::string(key);
    if (!n->is_array()) fail(n, name, "must be an array of strings");
    for (const auto& item : *n->as_array()) {
      if (!item.is_string()) fail(&item, name, "must be an array of strings");
      out.push_back(**item.as_string());
    }
    return out;
  }

  const toml::table* table(const toml::table& t, std::string_view key) const {
    const toml::node* n = t.get(key);
    if (!n) return nullptr;
    if (!n->is_table()) fail(n, key, "must be a table");
    return n->as_table();
  }

 private:
  std::string origin_;
  std::vector<config_error> problems_;
};

bool is_valid_machine_id(std::string_view id) {
  return !id.empty() && id.size() <= 64 &&
         id.find_first_not_of("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-") == std::string_view::npos;
}

bool is_loopback(const std::string& host) {
  boost::system::error_code ec;
  const auto address = boost::asio::ip::make_address(host, ec);
  return host == "localhost" || (!ec && address.is_loopback());
}

/// A command template split into text and {name} placeholders (name: [A-Za-z_][A-Za-z0-9_]*).
/// Braces around anything else are text.
std::vector<command_piece> split_command(std::string_view command) {
  std::vector<command_piece> pieces;
  auto text = [&](std::string_view t) {
    if (t.empty()) return;
    if (pieces.empty() || pieces.back().is_param) pieces.push_back({false, ""});
    pieces.back().text += t;
  };
  while (!command.empty()) {
    const auto open = command.find('{');
    if (open == std::string_view::npos) break;
    const auto close = command.find('}', open);
    if (close == std::string_view::npos) break;
    const std::string_view name = command.substr(open + 1, close - open - 1);
    const bool is_name = !name.empty() && !std::isdigit(static_cast<unsigned char>(name[0])) &&
                         name.find_first_not_of("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_") ==
                             std::string_view::npos;
    if (!is_name) {  // not a placeholder: the brace is text, the search goes on after it
      text(command.substr(0, open + 1));
      command.remove_prefix(open + 1);
      continue;
    }
    text(command.substr(0, open));
    pieces.push_back({true, std::string(name)});
    command.remove_prefix(close + 1);
  }
  text(command);
  return pieces;
}

void parse_server(reader& r, const toml::table& t, server_settings& s, bool check_files) {
  r.attempt([&] {
    r.only_keys(t, "server", {"listen", "web_root", "allowed_origins", "allowed_hosts", "anonymous", "tls_cert", "tls_key",
                              "insecure_plaintext", "max_connections", "audit_db", "replay_bytes",
                              "audit_head_bytes", "audit_tail_bytes", "audit_retention_days", "idle_timeout_s",
                              "max_message_bytes", "max_executions_per_machine", "max_subscribers_per_execution",
                              "subscriber_queue_bytes", "max_lag_bytes", "kill_grace_ms", "audit", "trusted_proxies",
                              "forwarded_header"});
  });
  r.attempt([&] {
    const std::string listen = r.string(t, "server", "listen", "127.0.0.1:8080");
    const auto colon = listen.rfind(':');
    if (colon == std::string::npos) r.fail(t.get("listen"), "server.listen", "must be host:port");
    std::string host = listen.substr(0, colon);
    if (host.size() > 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
    int port = 0;
    try {
      port = std::stoi(listen.substr(colon + 1));
    } catch (...) {
    }
    boost::system::error_code ec;
    boost::asio::ip::make_address(host, ec);
    if (host.empty() || port < 1 || port > 65535) r.fail(t.get("listen"), "server.listen", "must be host:port");
    if (ec) r.fail(t.get("listen"), "server.listen", "\"" + host + "\" is not an IP address (listen takes an address, not a name)");
    s.listen_host = host;
    s.listen_port = static_cast<std::uint16_t>(port);
  });
  r.attempt([&] {
    if (!t.get("web_root")) return;
    s.web_root = r.string(t, "server", "web_root");
    if (!check_files) return;
    std::error_code ec;
    if (!std::filesystem::is_directory(*s.web_root, ec)) {
      r.fail(t.get("web_root"), "server.web_root", "\"" + *s.web_root + "\" is not a directory");
    }
    if (!std::ifstream(*s.web_root + "/index.html")) {
      r.fail(t.get("web_root"), "server.web_root", "\"" + *s.web_root + "\" holds no readable index.html (the web client's build)");
    }
  });
  r.attempt([&] {
    s.allowed_origins = r.strings(t, "server", "allowed_origins");
    for (const auto& o : s.allowed_origins) {
      if (!o.starts_with("http://") && !o.starts_with("https://")) {
        r.fail(t.get("allowed_origins"), "server.allowed_origins", "\"" + o + "\" is not an origin (scheme://host[:port])");
      }
    }
  });
  r.attempt([&] { s.allowed_hosts = r.strings(t, "server", "allowed_hosts"); });
  r.attempt([&] {
    s.trusted_proxies = r.strings(t, "server", "trusted_proxies");
    for (const auto& p : s.trusted_proxies) {
      if (!parse_address_block(p)) {
        r.fail(t.get("trusted_proxies"), "server.trusted_proxies", "\"" + p + "\" is not an address or CIDR block (10.0.0.0/8)");
      }
    }
  });
  r.attempt([&] {
    if (!t.get("forwarded_header")) return;
    const std::string h = r.string(t, "server", "forwarded_header");
    if (h == "X-Forwarded-For") {
      s.forwarded_header = forwarding_header::x_forwarded_for;
    } else if (h == "Forwarded") {
      s.forwarded_header = forwarding_header::forwarded;
    } else {
      r.fail(t.get("forwarded_header"), "server.forwarded_header", "must be \"X-Forwarded-For\" or \"Forwarded\"");
    }
  });
  r.attempt([&] {
    if (!t.get("anonymous")) return;
    const std::string a = r.string(t, "server", "anonymous");
    if (a == "viewer") {
      s.anonymous = role::viewer;
    } else if (a == "operator") {
      s.anonymous = role::operator_;
    } else {
      r.fail(t.get("anonymous"), "server.anonymous", "must be \"viewer\" or \"operator\"");
    }
  });
  r.attempt([&] {
    if (t.get("tls_cert")) s.tls_cert = r.string(t, "server", "tls_cert");
    if (t.get("tls_key")) s.tls_key = r.string(t, "server", "tls_key");
    if (s.tls_cert.has_value() != s.tls_key.has_value()) {
      r.fail(t.get(s.tls_cert ? "tls_cert" : "tls_key"), s.tls_cert ? "server.tls_key" : "server.tls_cert",
             "missing: tls_cert and tls_key go together");
    }
  });
  for (const char* key : {"tls_cert", "tls_key"}) {
    r.attempt([&] {
      const auto& file = std::string_view(key) == "tls_cert" ? s.tls_cert : s.tls_key;
      if (file && !std::ifstream(*file)) r.fail(t.get(key), std::string("server.") + key, "cannot read \"" + *file + "\"");
    });
  }
  r.attempt([&] {
    if (const toml::node* n = t.get("insecure_plaintext")) {
      if (!n->is_boolean()) r.fail(n, "server.insecure_plaintext", "must be true or false");
      s.insecure_plaintext = **n->as_boolean();
    }
  });
  r.attempt([&] {
    s.audit_db = r.string(t, "server", "audit_db", "cmdcast.db");
    if (const toml::node* audit = t.get("audit")) {
      if (!audit->is_boolean()) r.fail(audit, "server.audit", "must be true or false");
      if (!**audit->as_boolean()) s.audit_db.clear();
    }
  });
  auto size = [&](std::string_view key, std::size_t& value, std::int64_t min) {
    r.attempt([&] {
      value = static_cast<std::size_t>(r.integer(t, "server", key, static_cast<std::int64_t>(value), min, 1ll << 40));
    });
  };
  size("replay_bytes", s.replay_bytes, 4096);
  size("audit_head_bytes", s.audit_head_bytes, 0);
  size("audit_tail_bytes", s.audit_tail_bytes, 0);
  size("max_message_bytes", s.max_message_bytes, 1024);
  size("max_executions_per_machine", s.max_executions_per_machine, 1);
  size("max_subscribers_per_execution", s.max_subscribers_per_execution, 1);
  size("subscriber_queue_bytes", s.subscriber_queue_bytes, 65536);
  size("max_lag_bytes", s.max_lag_bytes, 65536);
  size("max_connections", s.max_connections, 1);
  r.attempt([&] { s.idle_timeout = std::chrono::seconds(r.integer(t, "server", "idle_timeout_s", 30, 1, 86400)); });
  r.attempt([&] { s.audit_retention_days = static_cast<int>(r.integer(t, "server", "audit_retention_days", 0, 0, 36500)); });
  r.attempt([&] { s.kill_grace = std::chrono::milliseconds(r.integer(t, "server", "kill_grace_ms", 5000, 0, 600000)); });
}

/// [cluster]: server_id, and redis to share executions; [audit] postgres replaces
/// server.audit_db.
void parse_cluster_and_audit(reader& r, const toml::table& root, config& c) {
  const toml::table* cluster = nullptr;
  r.attempt([&] { cluster = r.table(root, "cluster"); });
  if (cluster) {
    r.attempt([&] { r.only_keys(*cluster, "cluster", {"redis", "server_id", "lease_ms"}); });
    r.attempt([&] {
      if (!cluster->get("redis")) return;  // a server_id alone: this server's name in a shared audit
      c.cluster.redis = r.string(*cluster, "cluster", "redis");
      const auto colon = c.cluster.redis.rfind(':');
      if (c.cluster.redis.front() != '/' &&
          (colon == std::string::npos || colon == 0 || c.cluster.redis.find_first_not_of("0123456789", colon + 1) != std::string::npos ||
           colon + 1 == c.cluster.redis.size())) {
        r.fail(cluster->get("redis"), "cluster.redis", "must be host:port or the path of a unix socket");
      }
    });
    r.attempt([&] {
      c.cluster.server_id = r.string(*cluster, "cluster", "server_id");
      if (c.cluster.server_id.size() > 64 ||
          c.cluster.server_id.find_first_not_of("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-") !=
              std::string::npos) {
        r.fail(cluster->get("server_id"), "cluster.server_id", "must be 1 to 64 letters, digits, '_', '.' or '-'");
      }
    });
    r.attempt([&] { c.cluster.lease = std::chrono::milliseconds(r.integer(*cluster, "cluster", "lease_ms", 5000, 500, 60000)); });
  }
  const toml::table* audit = nullptr;
  r.attempt([&] { audit = r.table(root, "audit"); });
  if (!audit) return;
  r.attempt([&] { r.only_keys(*audit, "audit", {"postgres"}); });
  r.attempt([&] {
    c.audit_postgres = r.string(*audit, "audit", "postgres");
    const toml::table* server = root.get("server") ? root.get("server")->as_table() : nullptr;
    if (server && (server->get("audit_db") || server->get("audit"))) {
      r.fail(audit->get("postgres"), "audit.postgres", "replaces server.audit_db (and server.audit): keep one of them");
    }
    c.server.audit_db.clear();  // the audit is in PostgreSQL
  });
}

/// What the SSH connection will read: a private key, and a known_hosts file libssh2 parses.
void check_machine_files(reader& r, const toml::table& t, const machine_entry& m) {
  r.attempt([&] {
    const auto& identity = m.endpoint.identity;
    std::ifstream key(identity);
    if (!key) r.fail(t.get("identity"), "machines.identity", "cannot read \"" + identity + "\"");
    std::string first;
    std::getline(key, first);
    if (!first.starts_with("-----BEGIN ") || first.find("PRIVATE KEY-----") == std::string::npos) {
      r.fail(t.get("identity"), "machines.identity", "\"" + identity + "\" is not a private key (PEM or OpenSSH format)");
    }
  });
  r.attempt([&] {
    const auto& known_hosts = m.endpoint.known_hosts;
    if (!std::ifstream(known_hosts)) r.fail(t.get("known_hosts"), "machines.known_hosts", "cannot read \"" + known_hosts + "\"");
    if (const auto problem = ssh::check_known_hosts_file(known_hosts)) {
      r.fail(t.get("known_hosts"), "machines.known_hosts", *problem);
    }
  });
}

}  // namespace

const machine_entry* config::find_machine(std::string_view id) const {
  for (const auto& m : machines) {
    if (m.id == id) return &m;
  }
  return nullptr;
}

std::vector<const action_entry*> config::actions_for(const machine_entry& m) const {
  std::vector<const action_entry*> out;
  const auto names = [&](const std::string& x) {
    if (x == m.id || x == m.name) return true;
    const auto g = groups.find(x);  // a group holding it
    return g != groups.end() && std::find(g->second.begin(), g->second.end(), m.id) != g->second.end();
  };
  for (const auto& [name, a] : actions) {
    if (!a.machines || std::find_if(a.machines->begin(), a.machines->end(), names) != a.machines->end()) out.push_back(&a);
  }
  return out;
}

std::vector<std::string> config::groups_of(const machine_entry& m) const {
  std::vector<std::string> out;
  for (const auto& [id, members] : groups) {
    if (std::find(members.begin(), members.end(), m.id) != members.end()) out.push_back(id);
  }
  return out;
}

common::result<config> parse_config(std::string_view text, const std::string& origin, bool check_files) {
  config c;
  reader r(origin);
  toml::table root;
  try {
    root = toml::parse(text, origin);
  } catch (const toml::parse_error& e) {
    const auto& at = e.source().begin;
    return common::failure{origin + ":" + std::to_string(at.line) + ":" + std::to_string(at.column) + ": " +
                           std::string(e.description())};
  }
  r.attempt([&] { r.only_keys(root, "config", {"server", "tokens", "machines", "groups", "actions", "cluster", "audit"}); });
  const toml::table* server_table = nullptr;
  r.attempt([&] { server_table = r.table(root, "server"); });
  if (server_table) parse_server(r, *server_table, c.server, check_files);
  parse_cluster_and_audit(r, root, c);

  r.attempt([&] {
    const toml::node* tokens = root.get("tokens");
    if (!tokens) return;
    if (!tokens->is_array_of_tables()) r.fail(tokens, "tokens", "must be [[tokens]] tables");
    for (const auto& n : *tokens->as_array()) {
      r.attempt([&] {
        const auto& t = *n.as_table();
        r.only_keys(t, "tokens", {"name", "sha256", "role"});
        token_entry e;
        e.name = r.string(t, "tokens", "name");
        const std::string hex = r.string(t, "tokens", "sha256");
        if (hex.size() != 64 || hex.find_first_not_of("0123456789abcdefABCDEF") != std::string::npos) {
          r.fail(t.get("sha256"), "tokens.sha256", "must be 64 hex digits (sha256sum of the token)");
        }
        for (std::size_t i = 0; i < 32; ++i) e.sha256[i] = static_cast<std::uint8_t>(std::stoi(hex.substr(2 * i, 2), nullptr, 16));
        const std::string role_name = r.string(t, "tokens", "role");
        if (role_name == "viewer") {
          e.granted = role::viewer;
        } else if (role_name == "operator") {
          e.granted = role::operator_;
        } else {
          r.fail(t.get("role"), "tokens.role", "must be \"viewer\" or \"operator\"");
        }
        for (const auto& other : c.tokens) {
          if (other.name == e.name) r.fail(t.get("name"), "tokens.name", "\"" + e.name + "\" is used twice");
        }
        c.tokens.push_back(std::move(e));
      });
    }
  });

  r.attempt([&] {
    const toml::node* machines = root.get("machines");
    if (!machines) return;
    if (!machines->is_array_of_tables()) r.fail(machines, "machines", "must be [[machines]] tables");
    for (const auto& n : *machines->as_array()) {
      r.attempt([&] {
        const auto& t = *n.as_table();
        r.attempt([&] { r.only_keys(t, "machines", {"id", "name", "host", "port", "user", "identity", "known_hosts"}); });
        machine_entry m;
        m.id = r.string(t, "machines", "id");
        if (!is_valid_machine_id(m.id)) {
          r.fail(t.get("id"), "machines.id", "must be a UUID or 1 to 64 of A-Z a-z 0-9 _ -");
        }
        if (c.find_machine(m.id)) r.fail(t.get("id"), "machines.id", "\"" + m.id + "\" is used twice");
        bool readable = true;  // every field read: the files it names can be checked
        auto field = [&](auto read) {
          bool ok = false;
          r.attempt([&] {
            read();
            ok = true;
          });
          readable = readable && ok;
        };
        field([&] { m.name = r.string(t, "machines", "name", m.id); });
        field([&] { m.endpoint.host = r.string(t, "machines", "host"); });
        field([&] { m.endpoint.port = static_cast<std::uint16_t>(r.integer(t, "machines", "port", 22, 1, 65535)); });
        field([&] { m.endpoint.user = r.string(t, "machines", "user"); });
        field([&] { m.endpoint.identity = r.string(t, "machines", "identity"); });
        field([&] { m.endpoint.known_hosts = r.string(t, "machines", "known_hosts"); });
        if (readable && check_files) check_machine_files(r, t, m);
        c.machines.push_back(std::move(m));  // (kept when broken: actions naming it are not also wrong)
      });
    }
  });

  r.attempt([&] {
    const auto* groups = r.table(root, "groups");
    if (!groups) return;
    for (const auto& entry : *groups) {
      const std::string id(entry.first.str());
      r.attempt([&] {
        const std::string where = "groups." + id;
        if (!is_valid_machine_id(id)) r.fail(&entry.second, where, "a group id must be 1 to 64 of A-Z a-z 0-9 _ -");
        if (c.find_machine(id)) r.fail(&entry.second, where, "\"" + id + "\" is a machine's id: a group needs a name of its own");
        std::vector<std::string> members;
        for (const auto& name : r.strings(*groups, "groups", id)) {
          const machine_entry* m = nullptr;
          for (const auto& x : c.machines) {
            if (x.id == name || x.name == name) m = &x;
          }
          if (!m) r.fail(&entry.second, where, "names an unknown machine \"" + name + "\"");
          if (std::find(members.begin(), members.end(), m->id) != members.end()) {
            r.fail(&entry.second, where, "names machine \"" + m->id + "\" twice");
          }
          members.push_back(m->id);
        }
        if (members.empty()) r.fail(&entry.second, where, "must name at least one machine");
        c.groups.emplace(id, std::move(members));
      });
    }
  });

  r.attempt([&] {
    const auto* actions = r.table(root, "actions");
    if (!actions) return;
    // (Plain names, not structured bindings: clang 14, the fuzz build's, cannot capture those.)
    for (const auto& entry : *actions) {
      const auto& key = entry.first;
      const auto& node = entry.second;
      r.attempt([&] {
        const std::string where = "actions." + std::string(key.str());
        if (!node.is_table()) r.fail(&node, where, "must be a table");
        const auto& t = *node.as_table();
        r.attempt([&] {
          r.only_keys(t, where, {"command", "params", "progress", "timeout_s", "machines", "line_buffered", "exclusive",
                               "on_busy", "approval", "approval_timeout_s"});
        });
        action_entry a;
        a.name = std::string(key.str());
        a.command = r.string(t, where, "command");
        r.attempt([&] {
          const toml::node* p = t.get("params");
          if (!p) return;
          if (!p->is_table()) r.fail(p, where + ".params", "must be a table of name = pattern");
          for (const auto& param : *p->as_table()) {
            const auto& pname = param.first;
            const auto& pattern = param.second;
            r.attempt([&] {
              const std::string pwhere = where + ".params." + std::string(pname.str());
              // A pattern string, or { pattern = "...", secret = true }.
              const toml::node* pattern_node = &pattern;
              bool secret = false;
              if (const auto* spec = pattern.as_table()) {
                r.only_keys(*spec, pwhere, {"pattern", "secret"});
                pattern_node = spec->get("pattern");
                if (!pattern_node) r.fail(&pattern, pwhere + ".pattern", "is missing");
                if (const toml::node* sn = spec->get("secret")) {
                  if (!sn->is_boolean()) r.fail(sn, pwhere + ".secret", "must be true or false");
                  secret = **sn->as_boolean();
                }
              }
              if (!pattern_node->is_string()) {
                r.fail(pattern_node, pwhere, "must be a pattern string, or a table { pattern = \"...\", secret = true }");
              }
              const std::string& pattern_text = **pattern_node->as_string();
              RE2::Options options;
              options.set_log_errors(false);
              auto matcher = std::make_shared<const RE2>(pattern_text, options);
              if (!matcher->ok()) r.fail(pattern_node, pwhere, "is not a valid RE2 pattern: " + matcher->error());
              // An empty secret cannot be masked (it is everywhere): the pattern must refuse it.
              if (secret && RE2::FullMatch("", *matcher)) {
                r.fail(pattern_node, pwhere, "is secret, so its pattern must not match an empty value");
              }
              a.params.emplace(std::string(pname.str()), pattern_text);
              a.matchers.emplace(std::string(pname.str()), std::move(matcher));
              if (secret) a.secret_params.insert(std::string(pname.str()));
            });
          }
        });
        a.pieces = split_command(a.command);
        std::set<std::string> used;
        for (const auto& piece : a.pieces) {
          if (piece.is_param) used.insert(piece.text);
        }
        const toml::node* declared = t.get("params");
        for (const auto& name : used) {
          r.attempt([&] {
            const bool has = declared && declared->is_table() && declared->as_table()->get(name);
            if (!has) r.fail(t.get("command"), where + ".command", "uses {" + name + "} but params has no pattern for it");
          });
        }
        for (const auto& declared_param : a.params) {
          const std::string& name = declared_param.first;
          r.attempt([&] {
            if (!used.count(name)) r.fail(t.get("params"), where + ".params." + name, "is not used in the command");
          });
        }
        r.attempt([&] {
          if (!t.get("progress")) return;
          a.progress = r.string(t, where, "progress");
          if (!common::make_progress_parser(*a.progress)) {
            r.fail(t.get("progress"), where + ".progress", "unknown progress parser \"" + *a.progress + "\" (known: apt)");
          }
        });
        r.attempt([&] { a.timeout = std::chrono::seconds(r.integer(t, where, "timeout_s", 3600, 1, 7 * 86400)); });
        r.attempt([&] {
          if (!t.get("machines")) return;
          a.machines = r.strings(t, where, "machines");
          for (const auto& id : *a.machines) {
            bool known = c.groups.count(id) > 0;
            for (const auto& m : c.machines) known = known || m.id == id || m.name == id;
            if (!known) r.fail(t.get("machines"), where + ".machines", "names an unknown machine or group \"" + id + "\"");
          }
        });
        const auto flag = [&](std::string_view name, bool& out) {
          r.attempt([&] {
            if (const toml::node* n = t.get(name)) {
              if (!n->is_boolean()) r.fail(n, where + "." + std::string(name), "must be true or false");
              out = **n->as_boolean();
            }
          });
        };
        flag("line_buffered", a.line_buffered);
        flag("exclusive", a.exclusive);
        flag("approval", a.approval);
        r.attempt([&] {
          if (a.approval && c.server.anonymous) {
            r.fail(t.get("approval"), where + ".approval",
                   "needs [[tokens]]: with anonymous access everyone is the same user, so nobody could approve "
                   "another's run");
          }
        });
        r.attempt([&] {
          if (!t.get("on_busy")) return;
          const std::string on_busy = r.string(t, where, "on_busy");
          if (on_busy != "queue" && on_busy != "refuse") {
            r.fail(t.get("on_busy"), where + ".on_busy", "must be \"queue\" or \"refuse\"");
          }
          if (!a.exclusive) r.fail(t.get("on_busy"), where + ".on_busy", "applies only with exclusive = true");
          a.refuse_when_busy = on_busy == "refuse";
        });
        r.attempt([&] {
          if (!t.get("approval_timeout_s")) return;
          a.approval_timeout = std::chrono::seconds(r.integer(t, where, "approval_timeout_s", 3600, 1, 30 * 86400));
          if (!a.approval) r.fail(t.get("approval_timeout_s"), where + ".approval_timeout_s", "applies only with approval = true");
        });
        c.actions.emplace(a.name, std::move(a));
      });
    }
  });

  const toml::node* server_node = root.get("server");
  const toml::node* at = server_table ? server_table->get("anonymous") : nullptr;
  const bool loopback = is_loopback(c.server.listen_host);
  r.attempt([&] {
    if (c.server.anonymous && !c.tokens.empty()) {
      r.fail(at, "server.anonymous", "applies only without [[tokens]]: remove one or the other");
    }
  });
  r.attempt([&] {
    if (c.server.anonymous && !loopback) {
      r.fail(at, "server.anonymous", "\"" + c.server.listen_host + "\" is not a loopback address: anonymous access is for a loopback listen only");
    }
  });
  r.attempt([&] {
    if (c.tokens.empty() && !c.server.anonymous && !root.get("tokens")) {
      r.fail(server_node, "tokens",
             "none configured: add [[tokens]] (name, sha256, role), or for a server on loopback only, say who "
             "everyone is with anonymous = \"operator\" (or \"viewer\") under [server]");
    }
  });
  r.attempt([&] {
    if (!loopback && !c.server.tls_cert && !c.server.insecure_plaintext) {
      r.fail(server_node, "server.listen",
             "\"" + c.server.listen_host + "\" is not a loopback address and no TLS is configured: set tls_cert and tls_key, "
             "or insecure_plaintext = true when a proxy in front terminates TLS");
    }
  });
  if (r.failed()) return common::failure{r.report()};
  return c;
}

common::result<config> load_config(const std::string& path, bool check_files) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return common::failure{path + ": cannot read the config file"};
  std::stringstream ss;
  ss << in.rdbuf();
  return parse_config(ss.str(), path, check_files);
}

std::variant<resolved_command, request_error> resolve(const config& c, std::string_view machine_id,
                                                      const common::run_request& request) {
  using common::error_code;
  const machine_entry* m = c.find_machine(machine_id);
  if (!m) return request_error{error_code::unknown_machine, "unknown machine \"" + std::string(machine_id) + "\""};
  const auto it = c.actions.find(request.action_type);
  if (it == c.actions.end()) {
    return request_error{error_code::unknown_action, "unknown action \"" + request.action_type + "\""};
  }
  const action_entry& a = it->second;
  const auto applicable = c.actions_for(*m);
  if (std::find(applicable.begin(), applicable.end(), &a) == applicable.end()) {
    return request_error{error_code::not_whitelisted,
                         "action \"" + a.name + "\" is not whitelisted for machine \"" + m->id + "\""};
  }
  for (const auto& [name, value] : request.params) {
    if (!a.params.count(name)) {
      return request_error{error_code::bad_params, "action \"" + a.name + "\" has no param \"" + name + "\""};
    }
  }
  for (const auto& [name, pattern] : a.params) {
    const auto p = request.params.find(name);
    if (p == request.params.end()) {
      return request_error{error_code::bad_params, "param \"" + name + "\" is missing"};
    }
    // No shell argument can hold a NUL; sent on, it would break the SSH session itself.
    if (p->second.find('\0') != std::string::npos) {
      return request_error{error_code::bad_params, "param \"" + name + "\" contains a NUL byte"};
    }
    if (!RE2::FullMatch(p->second, *a.matchers.at(name))) {
      return request_error{error_code::bad_params, "param \"" + name + "\" does not match " + pattern};
    }
  }
  // One pass over the template: what a value holds is never looked at again.
  std::string command, shown;
  std::vector<std::string> secrets;
  for (const auto& piece : a.pieces) {
    if (!piece.is_param) {
      command += piece.text;
      shown += piece.text;
      continue;
    }
    const std::string& value = request.params.at(piece.text);
    command += ssh::shell_quote(value);
    shown += a.secret_params.count(piece.text) ? std::string(secret_mark) : ssh::shell_quote(value);
  }
  for (const auto& name : a.secret_params) secrets.push_back(request.params.at(name));
  // An SSH exec request carries at most about 32 KiB (libssh2's packet); quoting can make a
  // long value several times longer.
  constexpr std::size_t max_command_line = 30000;
  std::string run_line = command_line(a, command);
  if (const auto size = ssh::wrap_for_process_group(run_line).size(); size > max_command_line) {
    return request_error{error_code::bad_params, "the params make a command line of " + std::to_string(size) +
                                                     " bytes once quoted; SSH takes at most " +
                                                     std::to_string(max_command_line)};
  }
  if (request.command && *request.command != command) {
    return request_error{error_code::not_whitelisted, "Command not whitelisted"};
  }
  auto shown_params = request.params;
  for (const auto& name : a.secret_params) shown_params[name] = std::string(secret_mark);
  return resolved_command{m, &a, std::move(command), std::move(run_line), std::move(shown), std::move(shown_params),
                          std::move(secrets)};
}

std::string command_line(const action_entry& action, const std::string& resolved) {
  if (!action.line_buffered) return resolved;
  // Most programs block-buffer stdout when it is not a terminal: stdbuf makes stdio (C, and
  // what inherits it) flush each line, PYTHONUNBUFFERED does it for Python.
  return "PYTHONUNBUFFERED=1 exec stdbuf -oL -eL /bin/sh -c " + ssh::shell_quote(resolved);
}

std::string sha256_hex(std::string_view text) {
  unsigned char digest[32];
  unsigned int n = 0;
  EVP_Digest(text.data(), text.size(), digest, &n, EVP_sha256(), nullptr);
  static constexpr char hex[] = "0123456789abcdef";
  std::string out;
  for (unsigned i = 0; i < n; ++i) {
    out.push_back(hex[digest[i] >> 4]);
    out.push_back(hex[digest[i] & 15]);
  }
  return out;
}

}  // namespace cmdcast::server
