// cmdcast-server's configuration (TOML, `cmdcast-server --config FILE`, docs/config.md), and
// the whitelist check that turns a run request into the command line to execute.
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "cmdcast/common/protocol.hpp"
#include "cmdcast/common/result.hpp"
#include "ssh/ssh_types.hpp"

namespace re2 {
class RE2;
}

namespace cmdcast::server {

enum class role : std::uint8_t { viewer, operator_ };

/// Which header the trusted proxies write (http/client_address). Only that one is read: a
/// proxy passes the other on as the client sent it (nginx and Apache append to
/// X-Forwarded-For and leave a client's own Forwarded untouched), so reading both would let a
/// client name itself.
enum class forwarding_header : std::uint8_t { x_forwarded_for, forwarded };

struct token_entry {
  std::string name;
  std::array<std::uint8_t, 32> sha256{};
  role granted = role::viewer;
};

/// A piece of an action's command template: text as written, or a {param} placeholder.
struct command_piece {
  bool is_param = false;
  std::string text;  // the text, or the param's name
};

struct action_entry {
  std::string name;
  std::string command;                        // may hold {param} placeholders
  std::vector<command_piece> pieces;          // the command, split once at load
  std::map<std::string, std::string> params;  // name -> pattern the whole value must match
  std::map<std::string, std::shared_ptr<const re2::RE2>> matchers;  // the patterns, compiled once
  std::optional<std::string> progress;        // parser family
  std::chrono::seconds timeout{3600};
  std::optional<std::vector<std::string>> machines;  // ids or names; empty: every machine
  bool line_buffered = true;  // run under stdbuf -oL -eL with PYTHONUNBUFFERED=1
  std::set<std::string> secret_params;  // values masked everywhere (records, logs, output)
  bool exclusive = false;         // at most one exclusive run per machine at a time
  bool refuse_when_busy = false;  // exclusive and busy: 429 instead of queueing
  bool approval = false;          // another operator approves each run before it starts
  std::chrono::seconds approval_timeout{3600};
};

struct machine_entry {
  std::string id;
  std::string name;
  ssh::machine_endpoint endpoint;
};

struct server_settings {
  std::string listen_host = "127.0.0.1";
  std::uint16_t listen_port = 8080;
  std::optional<std::string> web_root;
  std::vector<std::string> allowed_origins;
  std::vector<std::string> allowed_hosts;  // Host names served besides the listen address, localhost, the origins' hosts
  std::optional<role> anonymous;           // without [[tokens]], on loopback only: everyone's role
  std::optional<std::string> tls_cert, tls_key;  // PEM (the certificate with its chain); HTTPS and WSS only
  std::vector<std::string> trusted_proxies;  // addresses or CIDR blocks whose forwarded_header is believed
  forwarding_header forwarded_header = forwarding_header::x_forwarded_for;  // the one header they write
  bool insecure_plaintext = false;         // a non-loopback listen without TLS: a proxy terminates it
  std::size_t max_connections = 10000;     // past it a new connection is closed at once
  std::string audit_db = "cmdcast.db";  // empty: no audit (`audit = false`, for benchmarks)
  std::size_t replay_bytes = 4u << 20;
  std::size_t audit_head_bytes = 512u << 10;
  std::size_t audit_tail_bytes = 512u << 10;
  int audit_retention_days = 0;  // executions started longer ago are deleted; 0: keep all
  std::chrono::seconds idle_timeout{30};
  std::size_t max_message_bytes = 64u << 10;          // inbound WebSocket message / HTTP body
  std::size_t max_executions_per_machine = 8;
  std::size_t max_subscribers_per_execution = 10000;
  std::size_t subscriber_queue_bytes = 8u << 20;      // past this a watcher catches up from the replay buffer
  std::size_t max_lag_bytes = 64u << 20;              // the replay buffer keeps what a watcher this far behind needs
  std::chrono::milliseconds kill_grace{5000};
};

/// [cluster]: several servers share every execution through Redis (docs/cluster.md).
struct cluster_settings {
  std::string redis;      // "host:port", or a unix socket path (starts with /); empty: no cluster
  std::string server_id;  // this server's name among them (leases, the shared audit's records)
  std::chrono::milliseconds lease{5000};  // an owner silent this long has lost its runs
};

struct config {
  server_settings server;
  cluster_settings cluster;
  std::string audit_postgres;  // [audit] postgres: a libpq conninfo, in place of server.audit_db
  std::vector<token_entry> tokens;  // empty: server.anonymous says everyone's role
  std::vector<machine_entry> machines;
  std::map<std::string, action_entry> actions;
  std::map<std::string, std::vector<std::string>> groups;  // [groups]: group id -> machine ids, in order

  const machine_entry* find_machine(std::string_view id) const;
  /// The actions that apply to a machine, by name (an action's `machines` may name groups).
  std::vector<const action_entry*> actions_for(const machine_entry& m) const;
  /// The groups a machine is in.
  std::vector<std::string> groups_of(const machine_entry& m) const;
};

/// Reads and checks a config file. The error holds every problem found, one per line, each
/// as `file:line:column: key: what is wrong`. `check_files`: also that the files it names are
/// there and usable (identity keys, known_hosts, web_root, TLS files); nothing is connected to.
common::result<config> load_config(const std::string& path, bool check_files = true);
/// The same from text (`origin` names it in errors).
common::result<config> parse_config(std::string_view text, const std::string& origin, bool check_files = false);

/// A run request checked against the whitelist.
/// What stands in for a secret param's value wherever it would be shown.
inline constexpr std::string_view secret_mark = "***";

struct resolved_command {
  const machine_entry* machine = nullptr;
  const action_entry* action = nullptr;
  std::string command;   // params substituted, each shell-quoted
  std::string run_line;  // what runs: command_line(action, command)
  std::string shown_command;                         // command with secret_mark for each secret value
  std::map<std::string, std::string> shown_params;   // the params, secret values as secret_mark
  std::vector<std::string> secret_values;            // masked in the output
};

struct request_error {
  common::error_code code;
  std::string message;
};

/// Checks `request` for machine `machine_id`: the action exists and applies to the machine,
/// every param is known, present, free of NUL and matches its pattern (RE2, linear time), and
/// a `command` field, if sent, equals the resolved command. Values are substituted in one pass
/// over the template, each shell-quoted: a value is never searched for placeholders.
std::variant<resolved_command, request_error> resolve(const config& c, std::string_view machine_id,
                                                      const common::run_request& request);

/// The line actually run for an action: under stdbuf and PYTHONUNBUFFERED when line_buffered.
std::string command_line(const action_entry& action, const std::string& resolved);

/// hex SHA-256 (lowercase) of a token, as the config stores it.
std::string sha256_hex(std::string_view text);

}  // namespace cmdcast::server
