#include "cli.hpp"

#include <algorithm>
#include <cstdio>
#include <ctime>
#include <set>

#include "cmdcast/common/rfc3339.hpp"

namespace cmdcast::cli {

const char* const usage_text =
    "usage: cmdcast run SERVER MACHINE ACTION [name=value ...]\n"
    "       cmdcast run SERVER @GROUP ACTION [name=value ...] [--parallel N] [--stop-on-failure]\n"
    "       cmdcast watch SERVER EXECUTION_ID|BATCH_ID\n"
    "       cmdcast machines SERVER\n"
    "       cmdcast ls SERVER [--machine MACHINE] [--state STATE] [--limit N]\n"
    "       cmdcast logs SERVER EXECUTION_ID [--follow] [--format text|ansi|ndjson] [--timestamps]\n"
    "       cmdcast approve SERVER EXECUTION_ID\n"
    "       cmdcast reject SERVER EXECUTION_ID\n"
    "commands: run       run an action and stream its output; says when it is queued behind the\n"
    "                    machine's exclusive action or waits for approval, and waits.\n"
    "                    @GROUP: on every machine of the group (a fleet run), each line as\n"
    "                    \"machine | line\", then a summary table on stderr; --parallel N runs\n"
    "                    at most N at once, --stop-on-failure skips the ones not started once\n"
    "                    one fails\n"
    "          watch     attach to a running (or finished) execution, or a fleet run's batch\n"
    "          machines  the machines and their actions: params (secret ones marked), exclusive,\n"
    "                    needs approval\n"
    "          ls        executions, newest first. STATE: all (default), running, queued,\n"
    "                    awaiting_approval, or an end: exited, cancelled, timed_out, failed, lost,\n"
    "                    rejected, expired. N: at most this many (default 100)\n"
    "          logs      an execution's whole output (default: ansi on a terminal, else text);\n"
    "                    --follow goes on until it ends, --timestamps puts each line's time first\n"
    "          approve   let another operator's run of an action that needs approval go ahead\n"
    "          reject    refuse it (it ends rejected)\n"
    "SERVER: https://HOST[:PORT] (TLS; port 443 unless given), or plain http://HOST[:PORT]\n"
    "        (port 80) or HOST[:PORT] (port 8080)\n"
    "options: --token TOKEN   the bearer token (default $CMDCAST_TOKEN)\n"
    "         --cacert FILE   verify the server's certificate with the CA certificates in\n"
    "                         FILE (PEM) instead of the system's: for a private CA\n"
    "         --help          this text\n"
    "         --version       print cmdcast's version\n"
    "exit status: run and watch: the remote command's (128+N for signal N), 1 when it was\n"
    "cancelled, failed, rejected or expired; a fleet run: 0 when every machine succeeded,\n"
    "else the highest of theirs; every command: 2 for a usage or request error\n"
    "(the server's error is printed as \"cmdcast: CODE: message\") or a refused certificate,\n"
    "1 when the server could not be reached\n";

namespace {

bool is_state(std::string_view s) {
  return s == "all" || s == "running" || s == "queued" || s == "awaiting_approval" || common::parse_exit_state(s);
}

// Which command each option belongs to (the global ones are everyone's).
const std::map<std::string_view, std::string_view> option_owner = {
    {"--machine", "ls"}, {"--state", "ls"},         {"--limit", "ls"},
    {"--follow", "logs"}, {"--format", "logs"}, {"--timestamps", "logs"},
    {"--parallel", "run"}, {"--stop-on-failure", "run"},
};

}  // namespace

common::result<invocation> parse_args(const std::vector<std::string>& args, std::optional<std::string> env_token) {
  invocation inv;
  if (env_token) inv.token = *env_token;
  std::vector<std::string> positional;
  std::set<std::string> given;  // command options given, to check they are the command's
  bool options_done = false;    // after "--" everything is an argument (a machine id may start with '-')
  for (std::size_t i = 0; i < args.size(); ++i) {
    std::string arg = args[i];
    if (options_done || arg.size() < 2 || arg[0] != '-') {
      positional.push_back(arg);
      continue;
    }
    if (arg == "--") {
      options_done = true;
      continue;
    }
    std::optional<std::string> inline_value;  // --opt=value
    if (const auto eq = arg.find('='); arg.starts_with("--") && eq != std::string::npos) {
      inline_value = arg.substr(eq + 1);
      arg.resize(eq);
    }
    const auto value = [&]() -> std::optional<std::string> {
      if (inline_value) return inline_value;
      if (i + 1 == args.size()) return std::nullopt;
      return args[++i];
    };
    if (arg == "-f") arg = "--follow";
    if (arg == "--help" || arg == "-h") {
      inv.help = true;
    } else if (arg == "--version") {
      inv.version = true;
    } else if (arg == "--follow" || arg == "--timestamps" || arg == "--stop-on-failure") {
      if (inline_value) return common::failure{arg + " takes no value"};
      (arg == "--follow" ? inv.follow : arg == "--timestamps" ? inv.timestamps : inv.stop_on_failure) = true;
      given.insert(arg);
    } else if (arg == "--token" || arg == "--cacert" || arg == "--machine" || arg == "--state" || arg == "--limit" ||
               arg == "--format" || arg == "--parallel") {
      const auto v = value();
      if (!v) return common::failure{arg + " needs a value"};
      if (arg == "--token") {
        inv.token = *v;
      } else if (arg == "--cacert") {
        inv.ca_file = *v;
      } else if (arg == "--machine") {
        if (v->empty()) return common::failure{"--machine needs a machine id"};
        inv.machine_filter = *v;
      } else if (arg == "--state") {
        if (!is_state(*v)) {
          return common::failure{"unknown state \"" + *v +
                                 "\" (all, running, queued, awaiting_approval, exited, cancelled, timed_out, failed, "
                                 "lost, rejected or expired)"};
        }
        inv.state = *v;
      } else if (arg == "--limit" || arg == "--parallel") {
        long long n = 0;
        std::size_t used = 0;
        try {
          n = std::stoll(*v, &used);
        } catch (...) {
          used = 0;
        }
        if (used != v->size() || v->empty() || n < 1 || (arg == "--parallel" && n > 100000)) {
          return common::failure{arg + " needs a positive number, not \"" + *v + "\""};
        }
        (arg == "--limit" ? inv.limit : inv.parallel) = n;
      } else {
        if (*v != "text" && *v != "ansi" && *v != "ndjson") {
          return common::failure{"unknown format \"" + *v + "\" (text, ansi or ndjson)"};
        }
        inv.format = *v;
      }
      if (arg != "--token" && arg != "--cacert") given.insert(arg);
    } else {
      return common::failure{"unknown option \"" + args[i] + "\""};
    }
  }
  if (inv.help || inv.version) return inv;
  if (positional.empty()) return common::failure{"no command given"};
  inv.command = positional[0];
  const auto& c = inv.command;
  const auto& p = positional;
  if (c != "run" && c != "watch" && c != "machines" && c != "ls" && c != "logs" && c != "approve" && c != "reject") {
    return common::failure{"unknown command \"" + c + "\""};
  }
  for (const auto& option : given) {
    if (option_owner.at(option) != c) {
      return common::failure{option + " is an option of " + std::string(option_owner.at(option)) + ", not of " + c};
    }
  }
  if (p.size() < 2) return common::failure{c + " needs the SERVER"};
  inv.server = p[1];
  if (c == "run") {
    if (p.size() < 4) return common::failure{"run needs the SERVER, a MACHINE (or @GROUP) and an ACTION"};
    if (p[2].starts_with('@')) {
      inv.group = p[2].substr(1);
      if (inv.group.empty()) return common::failure{"@GROUP needs a group id after the @"};
    } else {
      inv.machine = p[2];
    }
    if (inv.group.empty() && (inv.parallel || inv.stop_on_failure)) {
      return common::failure{std::string(inv.parallel ? "--parallel" : "--stop-on-failure") +
                             " is for a fleet run: run SERVER @GROUP ACTION"};
    }
    inv.action = p[3];
    for (std::size_t i = 4; i < p.size(); ++i) {
      const auto eq = p[i].find('=');
      if (eq == std::string::npos || eq == 0) return common::failure{"a param is name=value, not \"" + p[i] + "\""};
      inv.params[p[i].substr(0, eq)] = p[i].substr(eq + 1);
    }
  } else if (c == "machines" || c == "ls") {
    if (p.size() != 2) return common::failure{c + " takes only the SERVER"};
  } else {
    if (p.size() != 3) return common::failure{c + " needs the SERVER and an EXECUTION_ID"};
    inv.execution_id = p[2];
    if (inv.execution_id.empty()) return common::failure{"the EXECUTION_ID is empty"};
  }
  return inv;
}

std::string path_segment(std::string_view s) {
  std::string out;
  for (const char ch : s) {
    const auto u = static_cast<unsigned char>(ch);
    if ((u >= 'a' && u <= 'z') || (u >= 'A' && u <= 'Z') || (u >= '0' && u <= '9') || ch == '-' || ch == '_' ||
        ch == '.' || ch == '~') {
      out += ch;
    } else {
      char hex[4];
      std::snprintf(hex, sizeof hex, "%%%02X", u);
      out += hex;
    }
  }
  return out;
}

std::string list_target(const invocation& inv) {
  std::string query;
  const auto add = [&](std::string_view name, const std::string& value) {
    query += query.empty() ? '?' : '&';
    query += name;
    query += '=';
    query += path_segment(value);
  };
  if (inv.state) add("state", *inv.state);
  if (inv.machine_filter) add("machine", *inv.machine_filter);
  if (inv.limit) add("limit", std::to_string(*inv.limit));
  return "/executions" + query;
}

std::string output_target(const invocation& inv, std::string_view format) {
  std::string t = "/executions/" + path_segment(inv.execution_id) + "/output?format=" + path_segment(format);
  if (inv.timestamps) t += "&timestamps=1";
  if (inv.follow) t += "&follow=1";
  return t;
}

std::string format_machines(const std::vector<common::machine_info>& machines) {
  std::string out;
  for (std::size_t k = 0; k < machines.size(); ++k) {
    const auto& m = machines[k];
    if (k) out += '\n';
    out += m.id;
    if (!m.name.empty() && m.name != m.id) out += "  (" + m.name + ")";
    out += '\n';
    if (m.actions.empty()) out += "  no actions\n";
    std::size_t width = 0;
    for (const auto& a : m.actions) width = std::max(width, a.name.size());
    for (const auto& a : m.actions) {
      std::string line = "  " + a.name;
      std::string rest;
      for (const auto& [name, pattern] : a.params) {
        if (!rest.empty()) rest += ' ';
        rest += name + '=' + pattern;
        if (std::find(a.secret_params.begin(), a.secret_params.end(), name) != a.secret_params.end()) rest += " (secret)";
      }
      std::vector<std::string> marks;
      if (a.exclusive) marks.emplace_back("exclusive");
      if (a.approval) marks.emplace_back("needs approval");
      if (a.progress) marks.push_back("progress: " + *a.progress);
      if (!marks.empty()) {
        if (!rest.empty()) rest += "  ";
        rest += '[';
        for (std::size_t i = 0; i < marks.size(); ++i) rest += (i ? ", " : "") + marks[i];
        rest += ']';
      }
      if (!rest.empty()) line += std::string(width - a.name.size() + 2, ' ') + rest;
      out += line + '\n';
    }
  }
  // The groups (for `run SERVER @GROUP ...`), each with its machines, as the list orders them.
  std::map<std::string, std::vector<std::string>> groups;
  for (const auto& m : machines) {
    for (const auto& g : m.groups) groups[g].push_back(m.id);
  }
  if (!groups.empty()) {
    std::size_t width = 0;
    for (const auto& [g, ids] : groups) width = std::max(width, g.size() + 1);
    out += "\ngroups (run SERVER @GROUP ACTION)\n";
    for (const auto& [g, ids] : groups) {
      std::string line = "  @" + g + std::string(width - g.size() - 1 + 2, ' ');
      for (std::size_t i = 0; i < ids.size(); ++i) line += (i ? " " : "") + ids[i];
      out += line + '\n';
    }
  }
  return out;
}

std::optional<std::chrono::system_clock::time_point> parse_time(std::string_view rfc3339) {
  const auto ms = common::parse_rfc3339_ms(rfc3339);
  if (!ms) return std::nullopt;
  return std::chrono::system_clock::time_point(std::chrono::milliseconds(*ms));
}

std::string format_duration(std::chrono::milliseconds d) {
  const long long ms = std::max<long long>(0, d.count());
  char buf[32];
  if (ms < 1000) {
    std::snprintf(buf, sizeof buf, "%lldms", ms);
  } else if (ms < 60'000) {
    std::snprintf(buf, sizeof buf, "%lld.%llds", ms / 1000, ms % 1000 / 100);
  } else if (ms < 3'600'000) {
    std::snprintf(buf, sizeof buf, "%lldm%02llds", ms / 60'000, ms % 60'000 / 1000);
  } else if (ms < 86'400'000) {
    std::snprintf(buf, sizeof buf, "%lldh%02lldm", ms / 3'600'000, ms % 3'600'000 / 60'000);
  } else {
    std::snprintf(buf, sizeof buf, "%lldd%02lldh", ms / 86'400'000, ms % 86'400'000 / 3'600'000);
  }
  return buf;
}

std::string format_executions(const std::vector<common::execution_record>& records,
                              std::chrono::system_clock::time_point now) {
  std::vector<std::vector<std::string>> rows = {
      {"ID", "MACHINE", "ACTION", "USER", "STATE", "EXIT", "STARTED (UTC)", "DURATION"}};
  for (const auto& r : records) {
    std::string exit = "-";
    if (r.exit_code) {
      exit = std::to_string(*r.exit_code);
    } else if (r.signal) {
      exit = "SIG" + *r.signal;
    }
    const auto started = parse_time(r.started_at);
    std::string started_text = r.started_at;
    if (started && started_text.size() >= 19) {
      started_text = started_text.substr(0, 19);
      started_text[10] = ' ';
    }
    std::string duration = "-";
    if (started) {
      const auto ended = r.ended_at ? parse_time(*r.ended_at) : std::optional<std::chrono::system_clock::time_point>(now);
      if (ended) duration = format_duration(std::chrono::duration_cast<std::chrono::milliseconds>(*ended - *started));
    }
    rows.push_back({r.execution_id, r.machine_id, r.action_type, r.user, r.state, exit, started_text, duration});
  }
  std::vector<std::size_t> width(rows[0].size(), 0);
  for (const auto& row : rows) {
    for (std::size_t c = 0; c < row.size(); ++c) width[c] = std::max(width[c], row[c].size());
  }
  std::string out;
  for (const auto& row : rows) {
    for (std::size_t c = 0; c < row.size(); ++c) {
      out += row[c];
      if (c + 1 < row.size()) out += std::string(width[c] - row[c].size() + 2, ' ');
    }
    out += '\n';
  }
  return out;
}

std::string queued_message(std::int64_t position) {
  return "cmdcast: queued behind the machine's running exclusive action (position " + std::to_string(position) + ")\n";
}

std::string awaiting_approval_message(const common::awaiting_approval_event& e, std::string_view server,
                                      std::string_view execution_id) {
  return "cmdcast: waiting for another operator to approve (expires " + e.expires_at + "); cmdcast approve " +
         std::string(server) + " " + std::string(execution_id) + "\n";
}

}  // namespace cmdcast::cli
