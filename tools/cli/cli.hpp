// The cmdcast CLI's pure parts (no I/O, unit-tested): the command line as parsed, and the tables
// and messages it prints.
#pragma once

#include <chrono>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "cmdcast/common/protocol.hpp"
#include "cmdcast/common/result.hpp"

namespace cmdcast::cli {

/// A dropped stream is resumed up to five times, the waits doubling from the first (with
/// common::reconnect_delay's spread).
constexpr std::chrono::milliseconds resume_first{200}, resume_most{3200};

/// The usage text (--help prints it to stdout; a usage error to stderr).
extern const char* const usage_text;

/// What the command line asks for.
struct invocation {
  std::string command;  // run, watch, machines, ls, logs, approve, reject; empty with help/version
  bool help = false;
  bool version = false;
  std::string server;  // as typed
  std::string token;   // --token, else $CMDCAST_TOKEN
  std::string ca_file;

  // run: a machine, or a group ("@GROUP" on the command line, stored without the '@')
  std::string machine;
  std::string group;
  std::optional<long long> parallel;  // fleet runs only
  bool stop_on_failure = false;       // fleet runs only
  std::string action;
  std::map<std::string, std::string> params;
  // watch, logs, approve, reject
  std::string execution_id;
  // ls: filters sent only when given (the server's defaults: every state, 100 records)
  std::optional<std::string> machine_filter;
  std::optional<std::string> state;
  std::optional<long long> limit;
  // logs
  bool follow = false;
  bool timestamps = false;
  std::optional<std::string> format;  // text, ansi or ndjson; unset: ansi on a terminal, else text
};

/// Parses argv[1..] (`env_token`: $CMDCAST_TOKEN, if set). A failure says what is wrong, for a
/// "cmdcast: ..." line before the usage (exit status 2).
common::result<invocation> parse_args(const std::vector<std::string>& args, std::optional<std::string> env_token);

/// "/executions?state=...&machine=...&limit=..." for `ls`, "/executions/ID/output?..." for
/// `logs` (format: the one chosen), values percent-encoded.
std::string list_target(const invocation& inv);
std::string output_target(const invocation& inv, std::string_view format);
/// An execution id as a path segment.
std::string path_segment(std::string_view s);

/// `cmdcast machines`: each machine, then its actions with their params (secret ones marked)
/// and what is special about them (exclusive, approval, progress parser).
std::string format_machines(const std::vector<common::machine_info>& machines);

/// `cmdcast ls`: a table of executions, columns as wide as their widest cell. `now` gives the
/// duration of those not ended yet.
std::string format_executions(const std::vector<common::execution_record>& records,
                              std::chrono::system_clock::time_point now);

/// A duration as a person reads it: "850ms", "12.3s", "4m05s", "2h03m", "3d04h".
std::string format_duration(std::chrono::milliseconds d);

/// An RFC 3339 time as the server writes it ("2026-12-02T13:44:26.123Z"); nullopt otherwise.
std::optional<std::chrono::system_clock::time_point> parse_time(std::string_view rfc3339);

/// What `run` says on stderr while it waits before running.
std::string queued_message(std::int64_t position);
std::string awaiting_approval_message(const common::awaiting_approval_event& e, std::string_view server,
                                      std::string_view execution_id);

}  // namespace cmdcast::cli
