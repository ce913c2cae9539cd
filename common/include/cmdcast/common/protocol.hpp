// The wire protocol of cmdcast (docs/protocol.md): requests, events, errors and records.
// Plain value types with no I/O; the JSON codec is in codec.hpp. Safe to use from any thread.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace cmdcast::common {

inline constexpr std::string_view protocol_version = "cmdcast.v1";

// --- Client to server ---------------------------------------------------------------------

/// The first WebSocket message of a run, or the body of POST /machines/{id}/commands.
struct run_request {
  std::string action_type;
  std::map<std::string, std::string> params;
  /// Accepted for compatibility: must equal the action's resolved command.
  std::optional<std::string> command;
  bool operator==(const run_request&) const = default;
};

/// `{"type":"cancel"}` sent while streaming.
struct cancel_request {
  bool operator==(const cancel_request&) const = default;
};

using client_message = std::variant<run_request, cancel_request>;

/// The body of POST /groups/{group}/commands: a run request for every machine of the group.
struct group_run_request {
  run_request run;
  std::optional<std::int64_t> parallel;  // at most this many at once; empty: all (each machine's own limits apply)
  bool stop_on_failure = false;          // one failed: the ones not started yet are skipped (cancelled)
  std::vector<std::string> machines;     // only these of the group (a re-run on the failed ones); empty: all
  bool operator==(const group_run_request&) const = default;
};

// --- Server to client: events ---------------------------------------------------------------

using seq_t = std::int64_t;

enum class output_stream : std::uint8_t { out, err };

/// How an execution ended. `rejected` and `expired`: an action needing approval was refused,
/// or nobody approved it within approval_timeout_s; it never ran.
enum class exit_state : std::uint8_t { exited, cancelled, timed_out, failed, lost, rejected, expired };

enum class error_code : std::uint8_t {
  bad_request,
  unauthorized,
  forbidden,
  unknown_machine,
  unknown_action,
  bad_params,
  not_whitelisted,
  unknown_execution,
  busy,
  ssh_connect_failed,
  ssh_auth_failed,
  host_key_mismatch,
  ssh_disconnected,
};

struct started_event {
  seq_t seq = 0;
  std::string execution_id;
  std::string machine_id;
  std::string action_type;
  std::string command;
  std::string started_at;  // RFC 3339
  bool operator==(const started_event&) const = default;
};

/// stdout or stderr text; `data` is valid UTF-8. `t`: milliseconds since the execution's
/// started_at, when the bytes were read from SSH.
struct output_event {
  seq_t seq = 0;
  output_stream stream = output_stream::out;
  std::string data;
  std::int64_t t = 0;
  bool operator==(const output_event&) const = default;
};

struct progress_event {
  seq_t seq = 0;
  std::optional<double> percent;  // empty: busy, no measure
  std::string phase;
  std::int64_t t = 0;  // as in output_event
  bool operator==(const progress_event&) const = default;
};

struct exit_event {
  seq_t seq = 0;
  std::optional<int> code;            // empty when a signal ended the command
  std::optional<std::string> signal;  // e.g. "TERM"
  exit_state state = exit_state::exited;
  std::int64_t duration_ms = 0;
  bool operator==(const exit_event&) const = default;
};

/// Events [missed_from, missed_to] that the replay window no longer holds.
struct gap_event {
  seq_t seq = 0;
  seq_t missed_from = 0;
  seq_t missed_to = 0;
  bool operator==(const gap_event&) const = default;
};

/// Before it runs: an exclusive action waits for the machine's running one (live only, no seq;
/// a newcomer gets the current one). `position`: 1 is next.
struct queued_event {
  std::int64_t position = 0;
  bool operator==(const queued_event&) const = default;
};

/// Before it runs: an action that needs another operator's approval (live only, no seq; a
/// newcomer gets it). `expires_at`: RFC 3339, when it ends `expired` unless approved.
struct awaiting_approval_event {
  std::string requested_by;
  std::string expires_at;
  bool operator==(const awaiting_approval_event&) const = default;
};

/// Live only, carries no seq.
struct watchers_event {
  std::int64_t count = 0;
  bool operator==(const watchers_event&) const = default;
};

struct error_event {
  error_code code = error_code::bad_request;
  std::string message;
  bool operator==(const error_event&) const = default;
};

/// A batch's executions by what they are doing or how they ended.
struct batch_counts {
  std::int64_t queued = 0;  // not started yet (waiting for a parallel slot, a lock, an approval)
  std::int64_t running = 0;
  std::int64_t succeeded = 0;  // exited 0
  std::int64_t failed = 0;     // any other end but cancelled
  std::int64_t cancelled = 0;
  bool operator==(const batch_counts&) const = default;
};

/// A batch stream's summary, sent when its counts change (live only, no seq). `state`:
/// "running", or once every execution has ended "succeeded", "failed" or "cancelled".
struct batch_event {
  std::string batch_id;
  std::string state;
  batch_counts counts;
  bool operator==(const batch_event&) const = default;
};

using event = std::variant<started_event, output_event, progress_event, exit_event, gap_event,
                           watchers_event, error_event, queued_event, awaiting_approval_event, batch_event>;

/// The seq of a sequenced event; empty for watchers and error events.
std::optional<seq_t> event_seq(const event& e);

// --- HTTP answers ---------------------------------------------------------------------------

/// GET /executions/{id}/events
struct poll_response {
  std::vector<event> events;
  seq_t next = -1;  // the `after` of the next call
  bool done = false;
  bool operator==(const poll_response&) const = default;
};

/// 202 answer of POST /machines/{id}/commands
struct run_accepted {
  std::string execution_id;
  bool operator==(const run_accepted&) const = default;
};

struct action_info {
  std::string name;
  std::map<std::string, std::string> params;  // name -> regex pattern
  std::optional<std::string> progress;        // parser family, e.g. "apt"
  std::vector<std::string> secret_params;     // params whose values are masked everywhere
  bool exclusive = false;                     // one exclusive run per machine at a time
  bool approval = false;                      // another operator must approve each run
  bool operator==(const action_info&) const = default;
};

/// One item of GET /machines
struct machine_info {
  std::string id;
  std::string name;
  std::vector<action_info> actions;
  std::vector<std::string> groups;  // the [groups] it is in (fleet runs: POST /groups/{id}/commands)
  bool operator==(const machine_info&) const = default;
};

/// GET /executions/{id}, and each item of GET /executions
struct execution_record {
  std::string execution_id;
  std::string machine_id;
  std::string action_type;
  std::string command;
  std::map<std::string, std::string> params;
  std::string user;   // who asked for it
  std::string state;  // "queued", "awaiting_approval", "running" or an exit_state name
  std::optional<int> exit_code;
  std::optional<std::string> signal;
  std::string started_at;
  std::optional<std::string> ended_at;
  std::int64_t bytes_stdout = 0;
  std::int64_t bytes_stderr = 0;
  bool output_truncated = false;
  std::int64_t watchers = 0;
  std::optional<std::string> approved_by;  // approval actions: who approved (or rejected) it
  std::optional<std::string> approved_at;  // and when (RFC 3339)
  bool operator==(const execution_record&) const = default;
};

/// One execution of a batch, in GET /batches/{id} and the 202 of a group run.
struct batch_member {
  std::string machine_id;
  std::string execution_id;
  std::string state;  // as in its record
  std::optional<int> exit_code;
  std::optional<double> progress;  // percent, when its action has a progress parser and it said
  bool operator==(const batch_member&) const = default;
};

/// GET /batches/{id}, each item of GET /batches; the 202 answer of a group run holds the same.
struct batch_record {
  std::string batch_id;
  std::string group;
  std::string action_type;
  std::map<std::string, std::string> params;  // secret values as ***
  std::string user;
  std::string started_at;
  std::optional<std::string> ended_at;
  std::string state;  // as in batch_event
  std::optional<std::int64_t> parallel;
  bool stop_on_failure = false;
  batch_counts counts;
  std::vector<batch_member> executions;  // in the group's order
  bool operator==(const batch_record&) const = default;
};

// --- Names ----------------------------------------------------------------------------------

std::string_view to_string(output_stream s);
std::string_view to_string(exit_state s);
std::string_view to_string(error_code c);
std::optional<exit_state> parse_exit_state(std::string_view s);
std::optional<error_code> parse_error_code(std::string_view s);

/// The HTTP status an error is answered with (400, 401, 403, 404, 429 or 502).
int http_status(error_code c);

}  // namespace cmdcast::common
