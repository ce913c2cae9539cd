// GET /executions/{id}/output?format=text|ansi|ndjson&timestamps=1&follow=1: an execution's
// whole output as a file (exec/output_export), from the replay buffer or the audit store, sent
// chunked as it is rendered; with follow=1 it goes on with the live output until the exit.
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/http/write.hpp>

#include <deque>
#include <limits>
#include <sstream>

#include "cmdcast/common/codec.hpp"
#include "exec/output_export.hpp"
#include "http/server_impl.hpp"
#include "support/log.hpp"

namespace cmdcast::server {
namespace {

constexpr auto use_tuple = net::as_tuple(net::use_awaitable);
constexpr std::size_t page_bytes = 1u << 20;     // frames read from the audit store at a time
constexpr std::size_t queue_bytes = 1u << 20;    // frames queued for the writer, from the execution
constexpr std::size_t chunk_bytes = 256u << 10;  // rendered bytes sent as one chunk

/// The download as a watcher of a live execution: frames queue up to a bound, the writer takes
/// them; past the bound it catches up from the replay buffer (execution::feed) like any watcher.
class download_subscriber : public live_subscriber {
 public:
  explicit download_subscriber(net::any_io_executor ex) : wake_(ex, net::steady_timer::time_point::max()) {}

  bool push(const frame& f, common::seq_t seq) override {
    if (seq < 0) return true;  // watchers and pending events are not output
    if (bytes_ + f->size() > queue_bytes && !frames_.empty()) return false;
    frames_.push_back({seq, f});
    bytes_ += f->size();
    wake_.cancel();
    return true;
  }
  std::size_t room() const override {
    return frames_.empty() ? std::numeric_limits<std::size_t>::max() : queue_bytes - std::min(queue_bytes, bytes_);
  }
  void wants_more() override {
    wants_more_ = true;
    wake_.cancel();
  }
  void ended() override {
    ended_ = true;
    wake_.cancel();
  }
  void shut_down() override {
    stopped_ = true;
    wake_.cancel();
  }
  void revoke() override { shut_down(); }

  /// Until there is something to do.
  net::awaitable<void> wait() {
    if (!frames_.empty() || wants_more_ || ended_ || stopped_) co_return;
    wake_.expires_at(net::steady_timer::time_point::max());
    co_await wake_.async_wait(use_tuple);
  }

  std::deque<std::pair<common::seq_t, frame>> frames_;
  std::size_t bytes_ = 0;
  bool wants_more_ = false, ended_ = false, stopped_ = false;

 private:
  net::steady_timer wake_;
};

/// What a file name may hold: the rest becomes '_'.
std::string file_name_part(std::string_view s) {
  std::string out;
  for (const char c : s) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '.';
    if (c == '-' || c == ':') continue;  // (dates: 20261202T140301.123Z)
    out += ok ? c : '_';
  }
  return out;
}

/// The output bytes that the stored events hold (to say how many a gap stands for).
std::uint64_t output_bytes(std::string_view frame) {
  const auto e = common::decode_event(frame);
  const auto* o = e ? std::get_if<common::output_event>(&*e) : nullptr;
  return o ? o->data.size() : 0;
}

}  // namespace

net::awaitable<std::variant<response, bool>> server::impl::download(const request& req, const target& t,
                                                                   const principal& who, transport& conn) {
  const std::string& id = t.parts[1];
  const auto format_name = t.query.count("format") ? t.query.at("format") : "text";
  const auto format = parse_export_format(format_name);
  if (!format) co_return error_response(req, error_code::bad_request, "format must be text, ansi or ndjson");
  const auto timestamps = query_number(t, "timestamps", 0, 0);
  const auto follow = query_number(t, "follow", 0, 0);
  if (!timestamps || *timestamps > 1 || !follow || *follow > 1) {
    co_return error_response(req, error_code::bad_request, "timestamps and follow are 0 or 1");
  }
  std::optional<common::execution_record> stored;
  if (!registry.find(id) && audit) stored = co_await audit->async_record(id);
  const auto live = registry.find(id);  // (after the wait: it may have changed)
  if (!live && !stored) co_return error_response(req, error_code::unknown_execution, "unknown execution \"" + id + "\"");
  const auto record = live ? live->record() : *stored;

  // The header, then the file in chunks (HTTP/1.0 has none: the end of the connection ends it).
  const bool chunked = req.version() >= 11;
  http::response<http::empty_body> head{http::status::ok, req.version()};
  head.set(http::field::content_type, *format == export_format::ndjson ? "application/x-ndjson" : "text/plain; charset=utf-8");
  const std::string name = file_name_part(record.action_type) + "-" + file_name_part(record.machine_id) + "-" +
                           file_name_part(record.started_at) + (*format == export_format::ndjson ? ".ndjson" : ".log");
  head.set(http::field::content_disposition, "attachment; filename=\"" + name + "\"");
  head.set(http::field::cache_control, "no-store");
  head.set("X-Content-Type-Options", "nosniff");
  if (chunked) {
    head.chunked(true);
  } else {
    head.keep_alive(false);
  }
  std::ostringstream header;
  header << head.base();
  if (!co_await conn.write_all(header.str())) co_return false;

  output_export exporter(*format, *timestamps == 1, parse_rfc3339(record.started_at).value_or(std::chrono::system_clock::now()));
  std::string out;
  const auto send = [&](bool force) -> net::awaitable<bool> {
    if (out.empty() || (!force && out.size() < chunk_bytes)) co_return true;
    std::string chunk;
    if (chunked) {
      char size[20];
      std::snprintf(size, sizeof size, "%zx\r\n", out.size());
      chunk = size;
    }
    chunk += out;
    if (chunked) chunk += "\r\n";
    out.clear();
    co_return co_await conn.write_all(chunk);
  };
  const auto end = [&]() -> net::awaitable<bool> {
    exporter.finish(out);
    if (!co_await send(true)) co_return false;
    if (!chunked) co_return false;
    co_return co_await conn.write_all("0\r\n\r\n") && req.keep_alive();
  };

  common::seq_t after = -1;
  if (!live || !live->holds_after(after)) {
    // From the audit store: what it kept, and where it cut the output, how much it did not.
    std::optional<std::uint64_t> not_kept;
    if (audit && record.output_truncated && (!live || live->finished())) {
      std::uint64_t kept = 0;
      for (common::seq_t at = -1;;) {
        const auto page = co_await audit->async_events_after(id, at, page_bytes);
        if (page.empty()) break;
        for (const auto& e : page) kept += output_bytes(e.frame);
        at = page.back().seq;
      }
      const auto total = static_cast<std::uint64_t>(record.bytes_stdout + record.bytes_stderr);
      not_kept = total > kept ? total - kept : 0;
    }
    while (audit) {
      const auto page = co_await audit->async_events_after(id, after, page_bytes);
      if (page.empty()) break;
      bool to_replay = false;
      for (const auto& e : page) {
        // Where the store cut the output the replay buffer may still hold it: the rest from there.
        const bool gap = e.frame.find("\"type\":\"gap\"") != std::string::npos;
        if ((to_replay = gap && live && live->holds_after(after))) break;
        exporter.add(e.frame, out, gap ? not_kept : std::nullopt);
        after = e.seq;
      }
      if (!co_await send(false)) co_return false;
      if (to_replay || (live && live->holds_after(after))) break;
    }
    if (!live) co_return co_await end();
  }

  // From the execution: what it holds, then (follow) what comes until the exit.
  const common::seq_t last = *follow ? std::numeric_limits<common::seq_t>::max() : live->last_seq();
  auto watcher = std::make_shared<download_subscriber>(io.get_executor());
  if (after >= last || (!*follow && live->finished() && after >= live->last_seq())) co_return co_await end();
  if (!live->subscribe(watcher, after)) co_return false;  // (the header is out: nothing else to say)
  watchers.emplace(watcher.get(), who);
  bool ok = true;
  while (ok) {
    co_await watcher->wait();
    bool done = false;
    while (!watcher->frames_.empty()) {
      auto [seq, f] = std::move(watcher->frames_.front());
      watcher->frames_.pop_front();
      watcher->bytes_ -= f->size();
      if (seq > last) {
        done = true;
        break;
      }
      exporter.add(*f->text(), out);
      done = seq == last;
      if (!(ok = co_await send(false))) break;
      if (done) break;
    }
    if (!ok || done || watcher->stopped_ || (watcher->ended_ && watcher->frames_.empty())) break;
    if (watcher->wants_more_) {
      watcher->wants_more_ = false;
      live->feed(watcher.get());
    }
  }
  watchers.erase(watcher.get());
  live->unsubscribe(watcher.get());
  maybe_stopped();
  if (!ok) co_return false;
  co_return co_await end();
}

}  // namespace cmdcast::server
