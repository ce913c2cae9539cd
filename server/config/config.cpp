#include "config/config.hpp"

#include <openssl/evp.h>
#include <re2/re2.h>

#include <boost/asio/ip/address.hpp>

#include <cctype>
#include <fstream>
#include <set>
#include <sstream>

#include "cmdcast/common/progress.hpp"
#include "ssh/machine_connection.hpp"

#define TOML_EXCEPTIONS 1
#include <toml++/toml.h>

namespace cmdcast::server {
namespace {

/// A config problem, located: thrown inside the parser, turned into a failure at the top.
struct config_error {
  std::string message;
};

class reader {
 public:
  explicit reader(std::string origin) : origin_(std::move(origin)) {}

  [[noreturn]] void fail(const toml::node* at, std::string_view key, std::string_view problem) const {
    std::string where = origin_;
    if (at && at->source().begin.line) where += ":" + std::to_string(at->source().begin.line);
    throw config_error{where + ": " + std::string(key) + ": " + std::string(problem)};
  }

  /// Rejects keys the table should not have (typos would otherwise be silently ignored).
  void only_keys(const toml::table& t, std::string_view where, std::initializer_list<std::string_view> known) const {
    for (const auto& [k, v] : t) {
      bool ok = false;
      for (auto name : known) ok = ok || k.str() == name;
      if (!ok) fail(&v, std::string(where) + "." + std::string(k.str()), "unknown key");
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

void parse_server(const reader& r, const toml::table& t, server_settings& s) {
  r.only_keys(t, "server", {"listen", "web_root", "allowed_origins", "allowed_hosts", "anonymous", "tls_cert", "tls_key",
                            "insecure_plaintext", "max_connections", "audit_db", "replay_bytes",
                            "audit_head_bytes", "audit_tail_bytes", "audit_retention_days", "idle_timeout_s", "max_message_bytes",
                            "max_executions_per_machine", "max_subscribers_per_execution",
                            "subscriber_queue_bytes", "max_lag_bytes", "kill_grace_ms", "audit"});
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
  if (host.empty() || port < 1 || port > 65535) r.fail(t.get("listen"), "server.listen", "must be host:port");
  s.listen_host = host;
  s.listen_port = static_cast<std::uint16_t>(port);
  if (t.get("web_root")) s.web_root = r.string(t, "server", "web_root");
  s.allowed_origins = r.strings(t, "server", "allowed_origins");
  for (const auto& o : s.allowed_origins) {
    if (!o.starts_with("http://") && !o.starts_with("https://")) {
      r.fail(t.get("allowed_origins"), "server.allowed_origins", "\"" + o + "\" is not an origin (scheme://host[:port])");
    }
  }
  s.allowed_hosts = r.strings(t, "server", "allowed_hosts");
  if (t.get("anonymous")) {
    const std::string a = r.string(t, "server", "anonymous");
    if (a == "viewer") {
      s.anonymous = role::viewer;
    } else if (a == "operator") {
      s.anonymous = role::operator_;
    } else {
      r.fail(t.get("anonymous"), "server.anonymous", "must be \"viewer\" or \"operator\"");
    }
  }
  if (t.get("tls_cert")) s.tls_cert = r.string(t, "server", "tls_cert");
  if (t.get("tls_key")) s.tls_key = r.string(t, "server", "tls_key");
  if (s.tls_cert.has_value() != s.tls_key.has_value()) {
    r.fail(t.get(s.tls_cert ? "tls_cert" : "tls_key"), s.tls_cert ? "server.tls_key" : "server.tls_cert",
           "missing: tls_cert and tls_key go together");
  }
  for (const char* key : {"tls_cert", "tls_key"}) {
    const auto& file = std::string_view(key) == "tls_cert" ? s.tls_cert : s.tls_key;
    if (file && !std::ifstream(*file)) r.fail(t.get(key), std::string("server.") + key, "cannot read \"" + *file + "\"");
  }
  if (const toml::node* n = t.get("insecure_plaintext")) {
    if (!n->is_boolean()) r.fail(n, "server.insecure_plaintext", "must be true or false");
    s.insecure_plaintext = **n->as_boolean();
  }
  s.audit_db = r.string(t, "server", "audit_db", "cmdcast.db");
  if (const toml::node* audit = t.get("audit")) {
    if (!audit->is_boolean()) r.fail(audit, "server.audit", "must be true or false");
    if (!**audit->as_boolean()) s.audit_db.clear();
  }
  auto size = [&](std::string_view key, std::size_t fallback, std::int64_t min) {
    return static_cast<std::size_t>(r.integer(t, "server", key, static_cast<std::int64_t>(fallback), min, 1ll << 40));
  };
  s.replay_bytes = size("replay_bytes", s.replay_bytes, 4096);
  s.audit_head_bytes = size("audit_head_bytes", s.audit_head_bytes, 0);
  s.audit_tail_bytes = size("audit_tail_bytes", s.audit_tail_bytes, 0);
  s.max_message_bytes = size("max_message_bytes", s.max_message_bytes, 1024);
  s.max_executions_per_machine = size("max_executions_per_machine", s.max_executions_per_machine, 1);
  s.max_subscribers_per_execution = size("max_subscribers_per_execution", s.max_subscribers_per_execution, 1);
  s.subscriber_queue_bytes = size("subscriber_queue_bytes", s.subscriber_queue_bytes, 65536);
  s.max_lag_bytes = size("max_lag_bytes", s.max_lag_bytes, 65536);
  s.max_connections = size("max_connections", s.max_connections, 1);
  s.idle_timeout = std::chrono::seconds(r.integer(t, "server", "idle_timeout_s", 30, 1, 86400));
  s.audit_retention_days = static_cast<int>(r.integer(t, "server", "audit_retention_days", 0, 0, 36500));
  s.kill_grace = std::chrono::milliseconds(r.integer(t, "server", "kill_grace_ms", 5000, 0, 600000));
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
  for (const auto& [name, a] : actions) {
    if (!a.machines || std::find_if(a.machines->begin(), a.machines->end(), [&](const std::string& x) {
                         return x == m.id || x == m.name;
                       }) != a.machines->end()) {
      out.push_back(&a);
    }
  }
  return out;
}

common::result<config> parse_config(std::string_view text, const std::string& origin) {
  config c;
  reader r(origin);
  try {
    const toml::table root = toml::parse(text, origin);
    r.only_keys(root, "config", {"server", "tokens", "machines", "actions"});
    if (const auto* s = r.table(root, "server")) parse_server(r, *s, c.server);

    if (const toml::node* tokens = root.get("tokens")) {
      if (!tokens->is_array_of_tables()) r.fail(tokens, "tokens", "must be [[tokens]] tables");
      for (const auto& n : *tokens->as_array()) {
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
        c.tokens.push_back(std::move(e));
      }
    }

    if (const toml::node* machines = root.get("machines")) {
      if (!machines->is_array_of_tables()) r.fail(machines, "machines", "must be [[machines]] tables");
      for (const auto& n : *machines->as_array()) {
        const auto& t = *n.as_table();
        r.only_keys(t, "machines", {"id", "name", "host", "port", "user", "identity", "known_hosts"});
        machine_entry m;
        m.id = r.string(t, "machines", "id");
        if (!is_valid_machine_id(m.id)) {
          r.fail(t.get("id"), "machines.id", "must be a UUID or 1 to 64 of A-Z a-z 0-9 _ -");
        }
        if (c.find_machine(m.id)) r.fail(t.get("id"), "machines.id", "\"" + m.id + "\" is used twice");
        m.name = r.string(t, "machines", "name", m.id);
        m.endpoint.host = r.string(t, "machines", "host");
        m.endpoint.port = static_cast<std::uint16_t>(r.integer(t, "machines", "port", 22, 1, 65535));
        m.endpoint.user = r.string(t, "machines", "user");
        m.endpoint.identity = r.string(t, "machines", "identity");
        m.endpoint.known_hosts = r.string(t, "machines", "known_hosts");
        c.machines.push_back(std::move(m));
      }
    }

    if (const auto* actions = r.table(root, "actions")) {
      for (const auto& [key, node] : *actions) {
        const std::string where = "actions." + std::string(key.str());
        if (!node.is_table()) r.fail(&node, where, "must be a table");
        const auto& t = *node.as_table();
        r.only_keys(t, where, {"command", "params", "progress", "timeout_s", "machines", "line_buffered"});
        action_entry a;
        a.name = std::string(key.str());
        a.command = r.string(t, where, "command");
        if (const toml::node* p = t.get("params")) {
          if (!p->is_table()) r.fail(p, where + ".params", "must be a table of name = pattern");
          for (const auto& [pname, pattern] : *p->as_table()) {
            const std::string pwhere = where + ".params." + std::string(pname.str());
            if (!pattern.is_string()) r.fail(&pattern, pwhere, "must be a pattern string");
            RE2::Options options;
            options.set_log_errors(false);
            auto matcher = std::make_shared<const RE2>(**pattern.as_string(), options);
            if (!matcher->ok()) r.fail(&pattern, pwhere, "is not a valid RE2 pattern: " + matcher->error());
            a.params.emplace(std::string(pname.str()), **pattern.as_string());
            a.matchers.emplace(std::string(pname.str()), std::move(matcher));
          }
        }
        a.pieces = split_command(a.command);
        std::set<std::string> used;
        for (const auto& piece : a.pieces) {
          if (piece.is_param) used.insert(piece.text);
        }
        for (const auto& name : used) {
          if (!a.params.count(name)) r.fail(t.get("command"), where + ".command", "uses {" + name + "} but params has no pattern for it");
        }
        for (const auto& [name, pattern] : a.params) {
          if (!used.count(name)) r.fail(t.get("params"), where + ".params." + name, "is not used in the command");
        }
        if (t.get("progress")) {
          a.progress = r.string(t, where, "progress");
          if (!common::make_progress_parser(*a.progress)) {
            r.fail(t.get("progress"), where + ".progress", "unknown progress parser \"" + *a.progress + "\" (known: apt)");
          }
        }
        a.timeout = std::chrono::seconds(r.integer(t, where, "timeout_s", 3600, 1, 7 * 86400));
        if (t.get("machines")) {
          a.machines = r.strings(t, where, "machines");
          for (const auto& id : *a.machines) {
            bool known = false;
            for (const auto& m : c.machines) known = known || m.id == id || m.name == id;
            if (!known) r.fail(t.get("machines"), where + ".machines", "names an unknown machine \"" + id + "\"");
          }
        }
        if (const toml::node* lb = t.get("line_buffered")) {
          if (!lb->is_boolean()) r.fail(lb, where + ".line_buffered", "must be true or false");
          a.line_buffered = **lb->as_boolean();
        }
        c.actions.emplace(a.name, std::move(a));
      }
    }

    const toml::node* server_table = root.get("server");
    const toml::node* at = server_table && server_table->as_table() ? server_table->as_table()->get("anonymous") : nullptr;
    const bool loopback = is_loopback(c.server.listen_host);
    if (c.server.anonymous && !c.tokens.empty()) {
      r.fail(at, "server.anonymous", "applies only without [[tokens]]: remove one or the other");
    }
    if (c.server.anonymous && !loopback) {
      r.fail(at, "server.anonymous", "\"" + c.server.listen_host + "\" is not a loopback address: anonymous access is for a loopback listen only");
    }
    if (c.tokens.empty() && !c.server.anonymous) {
      r.fail(server_table, "tokens",
             "none configured: add [[tokens]] (name, sha256, role), or for a server on loopback only, say who "
             "everyone is with anonymous = \"operator\" (or \"viewer\") under [server]");
    }
    if (!loopback && !c.server.tls_cert && !c.server.insecure_plaintext) {
      r.fail(server_table, "server.listen",
             "\"" + c.server.listen_host + "\" is not a loopback address and no TLS is configured: set tls_cert and tls_key, "
             "or insecure_plaintext = true when a proxy in front terminates TLS");
    }
  } catch (const toml::parse_error& e) {
    return common::failure{origin + ":" + std::to_string(e.source().begin.line) + ": " + std::string(e.description())};
  } catch (const config_error& e) {
    return common::failure{e.message};
  }
  return c;
}

common::result<config> load_config(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return common::failure{path + ": cannot read the config file"};
  std::stringstream ss;
  ss << in.rdbuf();
  return parse_config(ss.str(), path);
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
  std::string command;
  for (const auto& piece : a.pieces) {
    command += piece.is_param ? ssh::shell_quote(request.params.at(piece.text)) : piece.text;
  }
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
  return resolved_command{m, &a, std::move(command), std::move(run_line)};
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
