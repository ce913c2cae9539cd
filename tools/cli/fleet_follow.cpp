#include "fleet_follow.hpp"

#include <sys/ioctl.h>
#include <unistd.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/json.hpp>

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <map>

#include "cmdcast/common/codec.hpp"
#include "cmdcast/common/reconnect.hpp"
#include "fleet.hpp"

namespace cmdcast::cli {
namespace {

namespace net = boost::asio;
using namespace common;
using client_net::connector;
constexpr auto use_tuple = net::as_tuple(net::use_awaitable);
constexpr auto connect_timeout = std::chrono::seconds(10);
constexpr int poll_wait_s = 25;  // below the 60 s most proxies allow an answer
// On a terminal, output is gathered this long before it is written with the progress lines
// redrawn under it: one redraw per burst, not one per line.
constexpr auto redraw_every = std::chrono::milliseconds(50);

struct member {
  std::string machine_id;
  std::string execution_id;
  std::string state;  // queued, running, or how it ended
  seq_t last_seq = -1;
  bool started = false;
  std::optional<std::chrono::system_clock::time_point> started_at;
  std::optional<exit_event> exit;
  std::optional<int> recorded_code;  // from the batch record, when its events are no longer held
  bool has_progress = false;
  std::optional<double> percent;
  std::string phase;
  line_splitter out, err;
  std::string out_prefix, err_prefix;
  std::string colour;  // for its progress line
};

/// Where the lines go. Without a terminal on stdout: straight out, a line at a time. With one:
/// gathered for a moment, then written above the progress lines, which are redrawn under them.
class screen {
 public:
  explicit screen(bool block) : block_(block) {}
  bool block() const { return block_; }

  void write(std::FILE* to, std::string text) {
    if (text.empty()) return;
    if (!block_) {
      std::fwrite(text.data(), 1, text.size(), to);
      std::fflush(to);
      return;
    }
    if (!pending_.empty() && pending_.back().first == to) {
      pending_.back().second += text;
    } else {
      pending_.emplace_back(to, std::move(text));
    }
    dirty_ = true;
  }
  void touch() { dirty_ = true; }
  bool dirty() const { return dirty_; }

  /// Erases the progress lines, writes what is pending, draws `lines` (none: leaves them off).
  void draw(const std::vector<std::string>& lines) {
    if (!block_) return;
    std::string erase;
    if (shown_ > 0) {
      erase = "\r";
      if (shown_ > 1) erase += "\x1b[" + std::to_string(shown_ - 1) + "A";
      erase += "\x1b[J";
    }
    std::fputs(erase.c_str(), stdout);
    for (auto& [to, text] : pending_) {
      if (to == stderr) std::fflush(stdout);
      std::fwrite(text.data(), 1, text.size(), to);
      std::fflush(to);
    }
    pending_.clear();
    std::string block;
    for (std::size_t i = 0; i < lines.size(); ++i) block += (i ? "\n" : "") + lines[i];
    std::fputs(block.c_str(), stdout);
    std::fflush(stdout);
    shown_ = lines.size();
    dirty_ = false;
  }

 private:
  bool block_;
  std::vector<std::pair<std::FILE*, std::string>> pending_;
  std::size_t shown_ = 0;
  bool dirty_ = false;
};

class follower {
 public:
  follower(const connector& server, const invocation& inv, const batch_record& b)
      : server_(server), inv_(inv), batch_id_(b.batch_id), screen_(::isatty(1) != 0) {
    const bool colour_out = use_colour(::isatty(1) != 0, std::getenv("NO_COLOR"), std::getenv("TERM"));
    const bool colour_err = use_colour(::isatty(2) != 0, std::getenv("NO_COLOR"), std::getenv("TERM"));
    // On a terminal the names are padded so the lines start in one column; piped, "box | line"
    // stays easy to cut.
    for (const auto& m : b.executions) width_ = std::max(width_, m.machine_id.size());
    for (std::size_t i = 0; i < b.executions.size(); ++i) {
      const auto& e = b.executions[i];
      member m;
      m.machine_id = e.machine_id;
      m.execution_id = e.execution_id;
      m.state = e.state;
      m.recorded_code = e.exit_code;
      m.colour = colour_out ? machine_colour(i) : "";
      m.out_prefix = machine_prefix(e.machine_id, ::isatty(1) ? width_ : 0, colour_out ? machine_colour(i) : "");
      m.err_prefix = machine_prefix(e.machine_id, ::isatty(2) ? width_ : 0, colour_err ? machine_colour(i) : "");
      by_execution_[e.execution_id] = members_.size();
      members_.push_back(std::move(m));
    }
    counts_ = b.counts;
    if (::isatty(1)) {
      winsize ws{};
      if (::ioctl(1, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0) {
        columns_ = ws.ws_col;
        max_lines_ = std::max<std::size_t>(3, ws.ws_row / 2);
      }
    }
  }

  int run() {
    net::io_context io;
    net::signal_set interrupts(io, SIGINT);
    net::co_spawn(io, follow(interrupts), net::detached);
    if (screen_.block()) net::co_spawn(io, redraw_loop(), net::detached);
    io.run();
    return finish();
  }

 private:
  bool all_ended() const {
    return std::all_of(members_.begin(), members_.end(), [](const member& m) { return m.exit.has_value(); });
  }

  std::string after() const {
    std::vector<std::pair<std::string, seq_t>> seqs;
    for (const auto& m : members_) seqs.emplace_back(m.execution_id, m.last_seq);
    return batch_after(seqs);
  }

  void say(const std::string& text) { screen_.write(stderr, text); }

  void show(const tagged_event& t) {
    if (const auto* b = std::get_if<batch_event>(&t.e)) {
      counts_ = b->counts;
      screen_.touch();
      return;
    }
    if (t.execution_id.empty()) {  // the batch stream's own: an error
      if (const auto* err = std::get_if<error_event>(&t.e)) {
        error_ = *err;
        say("cmdcast: " + std::string(to_string(err->code)) + ": " + err->message + "\n");
      }
      return;
    }
    const auto it = by_execution_.find(t.execution_id);
    if (it == by_execution_.end()) return;
    auto& m = members_[it->second];
    if (const auto q = event_seq(t.e)) m.last_seq = std::max(m.last_seq, *q);
    std::string text;
    if (const auto* o = std::get_if<output_event>(&t.e)) {
      if (o->stream == output_stream::out) {
        m.out.feed(o->data, m.out_prefix, text);
        screen_.write(stdout, std::move(text));
      } else {
        m.err.feed(o->data, m.err_prefix, text);
        screen_.write(stderr, std::move(text));
      }
    } else if (const auto* p = std::get_if<progress_event>(&t.e)) {
      m.has_progress = true;
      m.percent = p->percent;
      m.phase = p->phase;
      screen_.touch();
    } else if (const auto* x = std::get_if<exit_event>(&t.e)) {
      flush_lines(m);
      m.exit = *x;
      m.state = std::string(to_string(x->state));
      screen_.touch();
    } else if (const auto* s = std::get_if<started_event>(&t.e)) {
      m.started = true;
      m.state = "running";
      m.started_at = parse_time(s->started_at);
      screen_.touch();
    } else if (std::holds_alternative<queued_event>(t.e)) {
      m.state = "queued";
    } else if (const auto* g = std::get_if<gap_event>(&t.e)) {
      say(m.err_prefix + "cmdcast: events " + std::to_string(g->missed_from) + " to " + std::to_string(g->missed_to) +
          " are no longer held by the server\n");
    } else if (const auto* err = std::get_if<error_event>(&t.e)) {
      say(m.err_prefix + "cmdcast: " + std::string(to_string(err->code)) + ": " + err->message + "\n");
    } else if (std::holds_alternative<awaiting_approval_event>(t.e)) {
      say(m.err_prefix + "cmdcast: waiting for another operator to approve\n");
    }
  }

  void flush_lines(member& m) {
    std::string text;
    m.out.flush(m.out_prefix, text);
    screen_.write(stdout, std::move(text));
    text.clear();
    m.err.flush(m.err_prefix, text);
    screen_.write(stderr, std::move(text));
  }

  std::vector<std::string> progress_lines() const {
    if (done_) return {};
    std::vector<running_member> running;
    const auto now = std::chrono::system_clock::now();
    for (const auto& m : members_) {
      if (!m.started || m.exit) continue;
      running_member r{m.machine_id, m.colour, m.has_progress, m.percent, m.phase, {}};
      if (m.started_at) r.elapsed = std::chrono::duration_cast<std::chrono::milliseconds>(now - *m.started_at);
      running.push_back(std::move(r));
    }
    return format_progress_block(running, counts_, width_, columns_ > 1 ? columns_ - 1 : columns_, max_lines_);
  }

  net::awaitable<void> redraw_loop() {
    net::steady_timer timer(co_await net::this_coro::executor);
    auto last = std::chrono::steady_clock::now();
    while (!done_) {
      timer.expires_after(redraw_every);
      co_await timer.async_wait(use_tuple);
      const auto now = std::chrono::steady_clock::now();
      // Also once a second for the times the lines show.
      if (!done_ && (screen_.dirty() || now - last >= std::chrono::seconds(1))) {
        screen_.draw(progress_lines());
        last = now;
      }
    }
  }

  /// Ctrl-C: the first cancels the batch (`cancel` does it), the second detaches (`detach`).
  void arm(net::signal_set& interrupts, std::function<void()> cancel, std::function<void()> detach) {
    interrupts.async_wait([this, &interrupts, cancel, detach](boost::system::error_code ec, int) {
      if (ec) return;
      if (++cancels_ == 1) {
        say("\ncmdcast: cancelling the fleet run (Ctrl-C again to leave it running and detach)\n");
        cancel();
        arm(interrupts, cancel, detach);
      } else {
        detach();
      }
    });
  }

  /// One WebSocket connection; returns its close code (0 when it failed, 1000 when detached).
  net::awaitable<unsigned> stream_once(std::string target, net::signal_set& interrupts) {
    client_net::websocket_client ws(co_await net::this_coro::executor, server_);
    if (auto failed = co_await ws.connect(std::move(target), inv_.token, connect_timeout)) {
      if (failed->upgrade_refused_status != 0 && failed->upgrade_refused_status < 500) {
        say("cmdcast: the WebSocket upgrade to " + server_.url().authority() + " was answered with HTTP " +
            std::to_string(failed->upgrade_refused_status) +
            ", not 101: a proxy in between most likely does not pass WebSocket upgrades (docs/proxy.md); following "
            "by polling instead\n");
        polling_ = true;
        co_return 0;
      }
      say("cmdcast: " + failed->message + "\n");
      certificate_rejected_ = failed->certificate_rejected;
      co_return 0;
    }
    bool detached = false;
    arm(
        interrupts,
        [&] {
          net::co_spawn(interrupts.get_executor(), [&]() -> net::awaitable<void> {
            co_await ws.write(R"({"type":"cancel"})");
          }, net::detached);
        },
        [&] {
          detached = true;
          ws.cancel();
        });
    std::string message;
    while (!co_await ws.read(message)) {
      auto t = decode_tagged_event(message);
      if (!t) {
        say("cmdcast: bad event from the server: " + t.error() + "\n");
        continue;
      }
      show(*t);
    }
    interrupts.cancel();
    if (detached) co_return 1000;
    if (ws.close_code() == 1008) {  // auth or request: no retry helps
      fatal_ = true;
      if (!error_) say("cmdcast: the server closed the stream: " + ws.close_reason() + "\n");
    }
    co_return ws.close_code();
  }

  net::awaitable<client_net::http_reply> exchange(std::string method, std::string target, int wait_s) {
    return client_net::http_exchange(server_, {std::move(method), std::move(target), inv_.token, ""},
                                     connect_timeout + std::chrono::seconds(wait_s));
  }

  /// An answer that is not the one asked for, said in one line; `fatal`: the follow ends.
  void refusal(const client_net::http_reply& reply, bool fatal = true) {
    fatal_ = fatal_ || fatal;
    if (reply.status == 0) {
      say("cmdcast: " + (reply.error ? reply.error->message : std::string("no answer")) + "\n");
      certificate_rejected_ = reply.error && reply.error->certificate_rejected;
      return;
    }
    auto e = decode_event(reply.body);
    if (e && std::holds_alternative<error_event>(*e)) {
      show(tagged_event{*e, "", ""});
      return;
    }
    say("cmdcast: " + server_.url().authority() + " answered HTTP " + std::to_string(reply.status) + "\n");
  }

  /// Without WebSockets: GET /batches/{id}/events, long-polled, each execution from its own seq.
  net::awaitable<void> follow_by_polling(net::signal_set& interrupts) {
    using namespace net::experimental::awaitable_operators;
    const auto executor = co_await net::this_coro::executor;
    for (int failures = 0; !all_ended() && !fatal_;) {
      const std::string a = after();
      std::string target = "/batches/" + path_segment(batch_id_) + "/events?wait=" + std::to_string(poll_wait_s);
      if (!a.empty()) target += "&after=" + a;
      auto outcome = co_await (exchange("GET", target, poll_wait_s) || interrupts.async_wait(net::use_awaitable));
      if (outcome.index() == 1) {  // Ctrl-C
        if (++cancels_ > 1) co_return;  // detached
        say("\ncmdcast: cancelling the fleet run (Ctrl-C again to leave it running and detach)\n");
        std::string cancel_target = "/batches/" + path_segment(batch_id_) + "/cancel";
        const auto reply = co_await exchange("POST", std::move(cancel_target), 0);
        if (reply.status != 202) refusal(reply, false);  // a refused cancel does not end the watch
        continue;
      }
      const auto& reply = std::get<0>(outcome);
      if (reply.status == 0 || reply.status >= 500) {
        if (++failures > 5 || (reply.error && reply.error->certificate_rejected)) {
          refusal(reply);
          co_return;
        }
        net::steady_timer pause(executor, std::chrono::milliseconds(200 << failures));
        co_await pause.async_wait(use_tuple);
        continue;
      }
      if (reply.status != 200) {
        refusal(reply);
        co_return;
      }
      boost::system::error_code ec;
      const auto answer = boost::json::parse(reply.body, ec);
      if (ec || !answer.is_object() || !answer.as_object().if_contains("events") ||
          !answer.as_object().at("events").is_array()) {
        say("cmdcast: bad answer from the server to a poll\n");
        fatal_ = true;
        co_return;
      }
      failures = 0;
      for (const auto& item : answer.as_object().at("events").as_array()) {
        auto t = decode_tagged_event(boost::json::serialize(item));
        if (t) show(*t);
      }
      const auto* done = answer.as_object().if_contains("done");
      if (done && done->is_bool() && done->as_bool()) co_return;
    }
  }

  net::awaitable<void> follow(net::signal_set& interrupts) {
    const std::string base = "/batches/" + path_segment(batch_id_) + "/stream";
    unsigned code = co_await stream_once(base, interrupts);
    // Dropped or closed as idle: resume each execution after the last seq it showed.
    for (int attempt = 0; attempt < 5 && !all_ended() && !fatal_ && !certificate_rejected_ && !polling_ &&
                          cancels_ < 2 && (code == 1013 || code == 0 || code == 1006);
         ++attempt) {
      net::steady_timer pause(co_await net::this_coro::executor,
                              common::reconnect_delay(attempt, resume_first, resume_most));
      co_await pause.async_wait(use_tuple);
      // (The target made apart from the co_await: GCC mishandles temporaries of a conditional
      // expression inside one, freeing a string twice.)
      const std::string a = after();
      std::string target = base;
      if (!a.empty()) target += "?after=" + a;
      code = co_await stream_once(std::move(target), interrupts);
    }
    if (polling_) co_await follow_by_polling(interrupts);
    // Executions whose events the server no longer holds: their end from the batch record.
    if (!all_ended() && !fatal_ && !certificate_rejected_ && cancels_ < 2) {
      std::string record_target = "/batches/" + path_segment(batch_id_);
      const auto reply = co_await exchange("GET", std::move(record_target), 0);
      if (auto record = decode_batch_record(reply.body); reply.status == 200 && record) {
        for (const auto& e : record->executions) {
          const auto it = by_execution_.find(e.execution_id);
          if (it == by_execution_.end()) continue;
          auto& m = members_[it->second];
          m.state = e.state;
          m.recorded_code = e.exit_code;
        }
      }
    }
    done_ = true;
  }

  std::vector<member_outcome> outcomes() const {
    std::vector<member_outcome> out;
    for (const auto& m : members_) {
      member_outcome o{m.machine_id, m.state, false, std::nullopt, std::nullopt, std::nullopt};
      if (m.exit) {
        o.ended = true;
        o.code = m.exit->code;
        o.signal = m.exit->signal;
        o.duration_ms = m.exit->duration_ms;
      } else if (parse_exit_state(m.state)) {
        o.ended = true;  // as the record says
        o.code = m.recorded_code;
      }
      out.push_back(std::move(o));
    }
    return out;
  }

  int finish() {
    for (auto& m : members_) flush_lines(m);
    screen_.draw({});
    const auto results = outcomes();
    const bool ended = std::all_of(results.begin(), results.end(), [](const member_outcome& o) { return o.ended; });
    if (certificate_rejected_) return 2;  // said already
    if (cancels_ >= 2 && !ended) {
      std::fprintf(stderr, "cmdcast: detached; the fleet run goes on (cmdcast watch %s %s)\n", inv_.server.c_str(),
                   batch_id_.c_str());
      return 130;
    }
    if (fatal_ && !ended) return 2;  // the server's error, said already
    std::fputs(format_batch_summary(results).c_str(), stderr);
    if (!ended) {
      std::fprintf(stderr, "cmdcast: the stream ended before the fleet run did (cmdcast watch %s %s)\n",
                   inv_.server.c_str(), batch_id_.c_str());
      return 1;
    }
    return batch_exit_status(results);
  }

  const connector& server_;
  const invocation& inv_;
  std::string batch_id_;
  screen screen_;
  std::vector<member> members_;
  std::map<std::string, std::size_t> by_execution_;
  batch_counts counts_;
  std::size_t width_ = 0;
  std::size_t columns_ = 80;
  std::size_t max_lines_ = 12;
  std::optional<error_event> error_;  // the last of the server's errors that was not an execution's
  bool fatal_ = false;                 // one that ends the follow (a refusal, a 1008 close)
  bool polling_ = false;
  bool certificate_rejected_ = false;
  int cancels_ = 0;
  bool done_ = false;
};

}  // namespace

int follow_batch(const client_net::connector& server, const invocation& inv, const common::batch_record& batch) {
  follower f(server, inv, batch);
  return f.run();
}

}  // namespace cmdcast::cli
