// cmdcast: the terminal client.
//   cmdcast run SERVER MACHINE ACTION [name=value ...]   run an action and stream its output
//   cmdcast run SERVER @GROUP ACTION [name=value ...] [--parallel N] [--stop-on-failure]
//                                                        a fleet run (fleet_follow.cpp)
//   cmdcast watch SERVER EXECUTION_ID|BATCH_ID           attach to a running (or finished) one
//   cmdcast machines SERVER                              the machines and their actions
//   cmdcast ls SERVER [--machine M] [--state S] [--limit N]   executions, as a table
//   cmdcast logs SERVER ID [--follow] [--format F] [--timestamps]   the whole output
//   cmdcast approve|reject SERVER ID                     decide another operator's run
// SERVER is https://host[:port] (TLS), or http://host[:port] or host[:port] (plain). Over TLS the
// server's certificate must verify against the system's CAs, or those of --cacert FILE. The
// token comes from $CMDCAST_TOKEN or --token. The command line and the tables are cli.cpp's.
// run starts the execution with a POST (so it knows the id before the run starts: a run that
// waits for approval names it for the approver), then streams it like watch: stdout and stderr
// go to stdout and stderr as they arrive; on a terminal a progress line is kept on stderr;
// while the run is queued behind the machine's exclusive action or awaits approval it says so
// on stderr and waits. Exits with the remote exit code (128+N for a signal, 1 when cancelled,
// failed, rejected or expired, 2 for a usage or request error or a refused certificate). Ctrl-C
// while running cancels the command (a second Ctrl-C leaves it running and detaches).
// A WebSocket upgrade answered without 101 (a proxy that drops the Upgrade headers) is said in
// one line, and the run is then followed by long-polling (docs/proxy.md).
// --help prints the usage to stdout and exits 0; --version prints "cmdcast VERSION".
#include <unistd.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <algorithm>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "cli.hpp"
#include "fleet.hpp"
#include "fleet_follow.hpp"
#include "cmdcast/client_net/connection.hpp"
#include "cmdcast/common/codec.hpp"
#include "cmdcast/common/reconnect.hpp"

namespace net = boost::asio;
using namespace cmdcast::common;
using cmdcast::client_net::connector;
constexpr auto use_tuple = net::as_tuple(net::use_awaitable);
constexpr auto connect_timeout = std::chrono::seconds(10);
// A long-poll's wait: below the 60 s most proxies allow an answer by default.
constexpr int poll_wait_s = 25;

namespace {

int usage(std::FILE* to = stderr, int status = 2) {
  std::fputs(cmdcast::cli::usage_text, to);
  return status;
}

int usage_error(const std::string& problem) {
  std::fprintf(stderr, "cmdcast: %s\n", problem.c_str());
  return usage();
}

struct session_state {
  std::string token;
  bool certificate_rejected = false;  // no retry helps: exit 2
  bool progress_shown = false;
  bool tty = ::isatty(2) != 0;
  seq_t last_seq = -1;
  std::optional<exit_event> exit;
  std::optional<error_event> error;
  int cancels = 0;
  std::string execution_id;
  bool polling = false;  // WebSocket upgrades do not get through: follow by long-polling
  std::string server_text;                 // SERVER as typed, for the commands it suggests
  std::optional<std::int64_t> queued_at;   // the queue position said last
  bool approval_said = false;
};

void clear_progress(session_state& s) {
  if (s.progress_shown) std::fputs("\r\x1b[K", stderr);
  s.progress_shown = false;
}

/// Shows one event as a terminal user expects it.
void show(session_state& s, const event& e) {
  if (auto q = event_seq(e)) s.last_seq = *q;
  if (const auto* o = std::get_if<output_event>(&e)) {
    clear_progress(s);
    std::FILE* f = o->stream == output_stream::out ? stdout : stderr;
    std::fwrite(o->data.data(), 1, o->data.size(), f);
    std::fflush(f);
  } else if (const auto* p = std::get_if<progress_event>(&e)) {
    if (!s.tty) return;
    char line[160];
    if (p->percent) {
      std::snprintf(line, sizeof line, "\r\x1b[K[%5.1f%%] %.120s", *p->percent, p->phase.c_str());
    } else {
      std::snprintf(line, sizeof line, "\r\x1b[K[ busy ] %.120s", p->phase.c_str());
    }
    std::fputs(line, stderr);
    s.progress_shown = true;
  } else if (const auto* x = std::get_if<exit_event>(&e)) {
    clear_progress(s);
    s.exit = *x;
  } else if (const auto* err = std::get_if<error_event>(&e)) {
    clear_progress(s);
    s.error = *err;
  } else if (const auto* g = std::get_if<gap_event>(&e)) {
    clear_progress(s);
    std::fprintf(stderr, "cmdcast: events %lld to %lld are no longer held by the server\n",
                 static_cast<long long>(g->missed_from), static_cast<long long>(g->missed_to));
  } else if (const auto* q = std::get_if<queued_event>(&e)) {
    if (s.queued_at != q->position) {
      clear_progress(s);
      std::fputs(cmdcast::cli::queued_message(q->position).c_str(), stderr);
      s.queued_at = q->position;
    }
  } else if (const auto* a = std::get_if<awaiting_approval_event>(&e)) {
    if (!s.approval_said) {
      clear_progress(s);
      std::fputs(cmdcast::cli::awaiting_approval_message(*a, s.server_text, s.execution_id).c_str(), stderr);
      s.approval_said = true;
    }
  } else if (const auto* st = std::get_if<started_event>(&e)) {
    s.execution_id = st->execution_id;
    if (s.tty) std::fprintf(stderr, "cmdcast: execution %s on %s: %s\n", st->execution_id.c_str(), st->machine_id.c_str(), st->command.c_str());
  }
}

/// Streams one WebSocket connection. Returns the close code (0 when the connection failed).
net::awaitable<unsigned> stream_once(session_state& s, const connector& server, std::string target,
                                     std::optional<std::string> first_message, net::signal_set& interrupts) {
  cmdcast::client_net::websocket_client ws(co_await net::this_coro::executor, server);
  if (auto failed = co_await ws.connect(std::move(target), s.token, connect_timeout)) {
    if (failed->upgrade_refused_status != 0 && failed->upgrade_refused_status < 500) {
      // The server is there but the upgrade is not: a proxy that drops the Upgrade headers.
      std::fprintf(stderr,
                   "cmdcast: the WebSocket upgrade to %s was answered with HTTP %d, not 101: a proxy in between "
                   "most likely does not pass WebSocket upgrades (the Upgrade and Connection headers; see "
                   "deploy/nginx/cmdcast.conf and docs/proxy.md); following by polling instead\n",
                   server.url().authority().c_str(), failed->upgrade_refused_status);
      s.polling = true;
      co_return 0;
    }
    std::fprintf(stderr, "cmdcast: %s\n", failed->message.c_str());
    s.certificate_rejected = failed->certificate_rejected;
    co_return 0;
  }
  if (first_message) co_await ws.write(*first_message);

  // Ctrl-C: the first asks the server to cancel, the second detaches.
  bool detached = false;
  std::function<void()> arm;
  arm = [&] {
    interrupts.async_wait([&](boost::system::error_code ec, int) {
      if (ec) return;
      if (++s.cancels == 1) {
        std::fputs("\ncmdcast: cancelling (Ctrl-C again to leave it running and detach)\n", stderr);
        net::co_spawn(interrupts.get_executor(), [&]() -> net::awaitable<void> {
          co_await ws.write(R"({"type":"cancel"})");
        }, net::detached);
        arm();
      } else {
        detached = true;
        ws.cancel();
      }
    });
  };
  arm();
  std::string message;
  while (!co_await ws.read(message)) {
    auto e = decode_event(message);
    if (!e) {
      std::fprintf(stderr, "cmdcast: bad event from the server: %s\n", e.error().c_str());
      continue;
    }
    show(s, *e);
  }
  interrupts.cancel();
  if (detached) co_return 1000;
  co_return ws.close_code();
}

/// An HTTP answer that is not the one asked for, as the user needs to read it: the server's
/// error event becomes the session's error; anything else is said here.
void take_refusal(session_state& s, const connector& server, const cmdcast::client_net::http_reply& reply) {
  if (reply.status == 0) {
    std::fprintf(stderr, "cmdcast: %s\n", reply.error ? reply.error->message.c_str() : "no answer");
    return;
  }
  auto e = decode_event(reply.body);
  if (e && std::holds_alternative<error_event>(*e)) {
    s.error = std::get<error_event>(*e);
    return;
  }
  // Not cmdcast's answer (a proxy's error page, say): its status, and its first line unless HTML.
  if (reply.status >= 500) {
    // Most often a proxy whose cmdcast-server is down (502, 503, 504).
    std::fprintf(stderr, "cmdcast: the request to %s was answered with HTTP %d (is cmdcast-server behind a proxy down or unreachable?)\n",
                 server.url().authority().c_str(), reply.status);
    return;
  }
  const std::string first_line = reply.body.substr(0, std::min(reply.body.find('\n'), std::size_t{200}));
  const bool html = reply.body.starts_with('<');
  std::fprintf(stderr, "cmdcast: %s answered HTTP %d%s%s\n", server.url().authority().c_str(), reply.status,
               html || first_line.empty() ? "" : ": ", html ? "" : first_line.c_str());
}

/// Without WebSockets: starts the run with a POST (unless it started already) and follows it by
/// long-polling GET /executions/{id}/events, showing each event as a stream would. Ctrl-C
/// cancels, a second one detaches, as on a WebSocket.
net::awaitable<void> follow_by_polling(session_state& s, const connector& server, const std::string& run_target,
                                       const std::optional<std::string>& request, net::signal_set& interrupts) {
  using namespace net::experimental::awaitable_operators;
  const auto exchange = [&](std::string method, std::string target, std::string body, int wait_s) {
    return cmdcast::client_net::http_exchange(server, {std::move(method), std::move(target), s.token, std::move(body)},
                                              connect_timeout + std::chrono::seconds(wait_s));
  };
  if (s.execution_id.empty()) {
    if (!request) co_return;
    const auto reply = co_await exchange("POST", run_target, *request, 0);
    auto accepted = decode_run_accepted(reply.body);
    if (reply.status != 202 || !accepted) {
      take_refusal(s, server, reply);
      co_return;
    }
    s.execution_id = accepted->execution_id;
  }
  const auto executor = co_await net::this_coro::executor;
  for (int failures = 0; !s.exit && !s.error;) {
    const std::string target = "/executions/" + s.execution_id + "/events?after=" + std::to_string(s.last_seq) +
                               "&wait=" + std::to_string(poll_wait_s);
    auto outcome = co_await (exchange("GET", target, "", poll_wait_s) || interrupts.async_wait(net::use_awaitable));
    if (outcome.index() == 1) {  // Ctrl-C
      if (++s.cancels > 1) co_return;  // detached
      std::fputs("\ncmdcast: cancelling (Ctrl-C again to leave it running and detach)\n", stderr);
      const auto reply = co_await exchange("POST", "/executions/" + s.execution_id + "/cancel", "", 0);
      if (reply.status != 202) take_refusal(s, server, reply);
      continue;
    }
    const auto& reply = std::get<0>(outcome);
    if (reply.status == 0 || reply.status >= 500) {
      // Down, restarting, or a proxy that gave up waiting: try again, a few times.
      if (++failures > 5) {
        take_refusal(s, server, reply);
        co_return;
      }
      net::steady_timer pause(executor, std::chrono::milliseconds(200 << failures));
      co_await pause.async_wait(use_tuple);
      continue;
    }
    auto answer = decode_poll_response(reply.body);
    if (reply.status != 200 || !answer) {
      take_refusal(s, server, reply);
      co_return;
    }
    failures = 0;
    for (const auto& e : answer->events) show(s, e);
    if (answer->done) co_return;
    s.last_seq = answer->next;
  }
}

/// Runs one coroutine to its end on an io_context of its own.
template <class T>
T run_to_end(std::function<net::awaitable<T>()> work) {
  net::io_context io;
  std::optional<T> out;
  net::co_spawn(io, work(), [&](std::exception_ptr failed, T value) {
    if (failed) std::rethrow_exception(failed);
    out = std::move(value);
  });
  io.run();
  return std::move(*out);
}

cmdcast::client_net::http_reply exchange(const connector& server, std::string method, std::string target,
                                         const std::string& token, std::string body = "") {
  return run_to_end<cmdcast::client_net::http_reply>([&]() {
    return cmdcast::client_net::http_exchange(server, {std::move(method), std::move(target), token, std::move(body)},
                                              connect_timeout);
  });
}

/// An answer that is not the one asked for, said in one line; returns the exit status: 2 for the
/// server's error (printed "cmdcast: CODE: message") or a refused certificate, 1 when no answer
/// came.
int refused(const connector& server, const cmdcast::client_net::http_reply& reply) {
  session_state s;
  take_refusal(s, server, reply);
  if (s.error) {
    std::fprintf(stderr, "cmdcast: %s: %s\n", std::string(to_string(s.error->code)).c_str(), s.error->message.c_str());
    return 2;
  }
  if (reply.status == 0) return reply.error && reply.error->certificate_rejected ? 2 : 1;
  return 2;
}

int machines_command(const connector& server, const cmdcast::cli::invocation& inv) {
  const auto reply = exchange(server, "GET", "/machines", inv.token);
  if (reply.status != 200) return refused(server, reply);
  const auto machines = decode_machines(reply.body);
  if (!machines) {
    std::fprintf(stderr, "cmdcast: bad answer from the server: %s\n", machines.error().c_str());
    return 1;
  }
  std::fputs(cmdcast::cli::format_machines(*machines).c_str(), stdout);
  return 0;
}

int ls_command(const connector& server, const cmdcast::cli::invocation& inv) {
  const auto reply = exchange(server, "GET", cmdcast::cli::list_target(inv), inv.token);
  if (reply.status != 200) return refused(server, reply);
  const auto records = decode_execution_records(reply.body);
  if (!records) {
    std::fprintf(stderr, "cmdcast: bad answer from the server: %s\n", records.error().c_str());
    return 1;
  }
  if (records->empty()) {
    std::fputs("cmdcast: no executions\n", stderr);
    return 0;
  }
  std::fputs(cmdcast::cli::format_executions(*records, std::chrono::system_clock::now()).c_str(), stdout);
  return 0;
}

int logs_command(const connector& server, const cmdcast::cli::invocation& inv) {
  const std::string format = inv.format ? *inv.format : (::isatty(1) ? "ansi" : "text");
  const auto reply = run_to_end<cmdcast::client_net::http_reply>([&]() {
    return cmdcast::client_net::http_download(server, {"GET", cmdcast::cli::output_target(inv, format), inv.token, ""},
                                              connect_timeout, [](std::string_view piece) {
                                                std::fwrite(piece.data(), 1, piece.size(), stdout);
                                                std::fflush(stdout);
                                              });
  });
  if (reply.status / 100 != 2) return refused(server, reply);
  if (reply.error) {
    std::fprintf(stderr, "cmdcast: the download broke off: %s\n", reply.error->message.c_str());
    return 1;
  }
  return 0;
}

int decide_command(const connector& server, const cmdcast::cli::invocation& inv) {
  const auto reply = exchange(server, "POST", "/executions/" + cmdcast::cli::path_segment(inv.execution_id) + "/" + inv.command,
                              inv.token);
  // 202: another server of a cluster runs it, and its decision had not come back yet.
  if (reply.status != 200 && reply.status != 202) return refused(server, reply);
  const auto record = decode_execution_record(reply.body);
  if (!record) {
    std::fprintf(stderr, "cmdcast: bad answer from the server: %s\n", record.error().c_str());
    return 1;
  }
  if (reply.status == 202) {
    std::printf("%s: %s sent to the server that runs it\n", record->execution_id.c_str(), inv.command.c_str());
    return 0;
  }
  std::string by;
  if (record->approved_by) by = inv.command == "approve" ? " (approved by " + *record->approved_by + ")" : " (by " + *record->approved_by + ")";
  std::printf("%s: %s%s\n", record->execution_id.c_str(), record->state.c_str(), by.c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::optional<std::string> env_token;
  if (const char* t = std::getenv("CMDCAST_TOKEN")) env_token = t;
  auto parsed = cmdcast::cli::parse_args(std::vector<std::string>(argv + 1, argv + argc), env_token);
  if (!parsed) return usage_error(parsed.error());
  const auto& inv = *parsed;
  if (inv.help) return usage(stdout, 0);
  if (inv.version) {
    std::printf("cmdcast %s\n", CMDCAST_VERSION);
    return 0;
  }
  auto url = cmdcast::client_net::parse_server_url(inv.server);
  if (!url) {
    std::fprintf(stderr, "cmdcast: %s\n", url.error().c_str());
    return usage();
  }
  auto server = connector::make(std::move(*url), inv.ca_file);
  if (!server) {
    std::fprintf(stderr, "cmdcast: %s\n", server.error().c_str());
    return 2;
  }
  if (inv.command == "machines") return machines_command(*server, inv);
  if (inv.command == "ls") return ls_command(*server, inv);
  if (inv.command == "logs") return logs_command(*server, inv);
  if (inv.command == "approve" || inv.command == "reject") return decide_command(*server, inv);

  session_state s;
  s.token = inv.token;
  s.server_text = inv.server;
  std::string target;
  std::optional<std::string> request;
  if (inv.command == "run" && !inv.group.empty()) {
    // A fleet run: started with a POST, whose answer is the batch record, then followed.
    group_run_request g;
    g.run.action_type = inv.action;
    g.run.params = inv.params;
    g.parallel = inv.parallel;
    g.stop_on_failure = inv.stop_on_failure;
    const auto reply = exchange(*server, "POST", "/groups/" + cmdcast::cli::path_segment(inv.group) + "/commands",
                                s.token, encode(g));
    const auto batch = decode_batch_record(reply.body);
    if (reply.status != 202 || !batch) return refused(*server, reply);
    if (::isatty(2)) {
      std::fprintf(stderr, "cmdcast: fleet run %s: %s on %zu machines of @%s\n", batch->batch_id.c_str(),
                   batch->action_type.c_str(), batch->executions.size(), batch->group.c_str());
    }
    return cmdcast::cli::follow_batch(*server, inv, *batch);
  }
  if (inv.command == "watch") {
    // A batch's id or an execution's: asked of /batches first (404: an execution).
    const auto reply = exchange(*server, "GET", "/batches/" + cmdcast::cli::path_segment(inv.execution_id), s.token);
    if (reply.status == 200) {
      const auto batch = decode_batch_record(reply.body);
      if (!batch) {
        std::fprintf(stderr, "cmdcast: bad answer from the server: %s\n", batch.error().c_str());
        return 1;
      }
      return cmdcast::cli::follow_batch(*server, inv, *batch);
    }
    if (reply.status != 404) return refused(*server, reply);
  }
  if (inv.command == "run") {
    run_request r;
    r.action_type = inv.action;
    r.params = inv.params;
    request = encode(r);
    // Started with a POST: the id is known before it runs (a run awaiting approval names it).
    const auto reply = exchange(*server, "POST", "/machines/" + cmdcast::cli::path_segment(inv.machine) + "/commands",
                                s.token, *request);
    const auto accepted = decode_run_accepted(reply.body);
    if (reply.status != 202 || !accepted) return refused(*server, reply);
    s.execution_id = accepted->execution_id;
  } else {
    s.execution_id = inv.execution_id;
  }
  target = "/executions/" + cmdcast::cli::path_segment(s.execution_id) + "/stream";
  std::vector<std::string> args = {inv.command, inv.server};

  net::io_context io;
  net::signal_set interrupts(io, SIGINT);
  int status = 1;
  net::co_spawn(io, [&]() -> net::awaitable<void> {
    unsigned code = co_await stream_once(s, *server, target, std::nullopt, interrupts);
    // Closed as idle (1013) or dropped: resume where the stream stopped.
    for (int attempt = 0; attempt < 5 && !s.exit && !s.error && !s.certificate_rejected && !s.polling && s.cancels < 2 &&
                          (code == 1013 || code == 0 || code == 1006);
         ++attempt) {
      if (s.execution_id.empty()) break;  // a run that never started has nothing to resume
      net::steady_timer pause(io,
                              cmdcast::common::reconnect_delay(attempt, cmdcast::cli::resume_first, cmdcast::cli::resume_most));
      co_await pause.async_wait(use_tuple);
      const std::string resume =
          "/executions/" + cmdcast::cli::path_segment(s.execution_id) + "/stream?after=" + std::to_string(s.last_seq);
      code = co_await stream_once(s, *server, resume, std::nullopt, interrupts);
    }
    if (s.polling) co_await follow_by_polling(s, *server, target.substr(0, target.rfind("/stream")), request, interrupts);
    if (s.certificate_rejected) {
      status = 2;  // stream_once said why
    } else if (s.error) {
      std::fprintf(stderr, "cmdcast: %s: %s\n", std::string(to_string(s.error->code)).c_str(), s.error->message.c_str());
      status = 2;
    } else if (s.exit) {
      const auto& x = *s.exit;
      if (x.code) {
        status = *x.code;
      } else if (x.signal) {
        status = 128 + cmdcast::cli::signal_number(*x.signal);
        std::fprintf(stderr, "cmdcast: ended by signal %s (%s)\n", x.signal->c_str(), std::string(to_string(x.state)).c_str());
      } else {
        status = 1;
        const char* why = x.state == exit_state::rejected  ? " (another operator refused it; it never ran)"
                          : x.state == exit_state::expired ? " (no other operator approved it in time; it never ran)"
                                                           : "";
        std::fprintf(stderr, "cmdcast: %s%s\n", std::string(to_string(x.state)).c_str(), why);
      }
    } else if (s.cancels >= 2) {
      std::fprintf(stderr, "cmdcast: detached; the command goes on (cmdcast watch %s %s)\n", args[1].c_str(),
                   s.execution_id.empty() ? "EXECUTION_ID" : s.execution_id.c_str());
      status = 130;
    } else {
      std::fprintf(stderr, "cmdcast: the stream ended before the command did\n");
    }
  }, net::detached);
  io.run();
  return status;
}
