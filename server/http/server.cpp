#include "http/server.hpp"

#include <openssl/evp.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/websocket/rfc6455.hpp>
#include <boost/url/parse.hpp>

#include <algorithm>
#include <array>
#include <charconv>
#include <sstream>

#include "cmdcast/common/codec.hpp"
#include "http/server_impl.hpp"
#include "support/deflate.hpp"
#include "support/log.hpp"

namespace cmdcast::server {
namespace {

namespace websocket = beast::websocket;
constexpr auto use_tuple = net::as_tuple(net::use_awaitable);
constexpr auto request_deadline = std::chrono::seconds(10);  // the TLS handshake and a whole request
constexpr std::size_t max_header_bytes = 16 * 1024;

std::optional<target> parse_target(std::string_view t) {
  const auto url = boost::urls::parse_origin_form(t);
  if (!url) return std::nullopt;
  target out;
  for (const auto& segment : url->segments()) {
    if (!segment.empty()) out.parts.push_back(segment);
  }
  for (const auto& param : url->params()) out.query[param.key] = param.value;
  return out;
}

/// Every value of a header that may come more than once (Sec-WebSocket-Extensions, Forwarded,
/// X-Forwarded-For), as one list.
template <typename Name>  // a known field, or the name of one Beast has no enum for
std::string all_values(const request& req, Name name) {
  std::string values;
  for (auto [it, end] = req.equal_range(name); it != end; ++it) {
    if (!values.empty()) values += ',';
    values += it->value();
  }
  return values;
}

/// Sec-WebSocket-Accept for a client's key (RFC 6455 4.2.2), or nullopt for a key that is not
/// 16 bytes in base64.
std::optional<std::string> websocket_accept(std::string_view key) {
  if (key.size() != 24 || !key.ends_with("==")) return std::nullopt;
  const std::string text = std::string(key) + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
  unsigned char digest[20];
  unsigned int n = 0;
  EVP_Digest(text.data(), text.size(), digest, &n, EVP_sha1(), nullptr);
  unsigned char encoded[32];
  const int len = EVP_EncodeBlock(encoded, digest, 20);
  return std::string(reinterpret_cast<char*>(encoded), static_cast<std::size_t>(len));
}

}  // namespace

void server::impl::log_denied(const request& req, const request_facts& facts, error_code code, std::string_view reason) {
  // The path only: a query may carry anything. One line per refusal, for fail2ban and the like.
  ++requests_denied;
  const std::string_view target = req.target();
  log_event("denied", {{"client", facts.from.client}, {"proxy", facts.from.proxy},
                       {"status", code == error_code::unauthorized ? "401" : "403"},
                       {"method", req.method_string()}, {"path", target.substr(0, target.find('?'))},
                       {"reason", reason}});
}

std::string error_json(error_code code, std::string_view message) {
  return common::encode(common::event{common::error_event{code, std::string(message)}});
}

/// A query number such as `after`: absent gives `fallback`, anything but a decimal fails.
std::optional<std::int64_t> query_number(const target& t, const std::string& key, std::int64_t fallback, std::int64_t min) {
  const auto it = t.query.find(key);
  if (it == t.query.end()) return fallback;
  std::int64_t v = 0;
  const auto& s = it->second;
  const auto r = std::from_chars(s.data(), s.data() + s.size(), v);
  if (r.ec != std::errc() || r.ptr != s.data() + s.size() || v < min) return std::nullopt;
  return v;
}

/// Deletes audit records past audit_retention_days, now and then every hour, until shutdown.
net::awaitable<void> server::impl::prune_audit() {
  const int days = cfg->server.audit_retention_days;
  if (!audit || days <= 0) co_return;
  prune_timer = std::make_unique<net::steady_timer>(io);
  while (!stopping) {
    const auto cutoff = rfc3339(std::chrono::system_clock::now() - std::chrono::hours(24 * days));
    if (const auto removed = co_await audit->async_prune(cutoff)) {
      log_event("audit_pruned", {{"executions", std::to_string(removed)}, {"before", cutoff}});
    }
    prune_timer->expires_after(std::chrono::hours(1));
    auto [ec] = co_await prune_timer->async_wait(use_tuple);
    if (ec) co_return;
  }
}

/// The answer to a WebSocket upgrade, or an HTTP error for an upgrade that is not one.
std::variant<std::string, response> server::impl::upgrade_answer(const request& req, std::string_view deflate) {
  if (req[http::field::sec_websocket_version] != "13") {
    auto res = error_response(req, error_code::bad_request, "Sec-WebSocket-Version must be 13");
    res.result(http::status::upgrade_required);
    res.set(http::field::sec_websocket_version, "13");
    return res;
  }
  const auto accept = websocket_accept(req[http::field::sec_websocket_key]);
  if (!accept || req.method() != http::verb::get) {
    return error_response(req, error_code::bad_request, "not a valid WebSocket upgrade");
  }
  std::string head = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     "Server: cmdcast\r\nSec-WebSocket-Accept: " + *accept + "\r\n";
  if (req[http::field::sec_websocket_protocol].find("cmdcast.v1") != std::string_view::npos) {
    head += "Sec-WebSocket-Protocol: cmdcast.v1\r\n";
  }
  if (!deflate.empty()) head += "Sec-WebSocket-Extensions: " + std::string(deflate) + "\r\n";
  return head + "\r\n";
}

/// Reads one request into `parser`, from `pending` (bytes already read) and then the
/// connection. An error, or end_of_stream when the peer left (or the deadline closed it).
net::awaitable<beast::error_code> server::impl::read_request(transport& conn, std::string& pending,
                                                      http::request_parser<http::string_body>& parser) {
  beast::error_code ec;
  std::array<char, 16 * 1024> chunk;
  for (;;) {
    if (!pending.empty()) {
      const auto used = parser.put(net::buffer(pending), ec);
      pending.erase(0, used);
      if (ec && ec != http::error::need_more) co_return ec;
      ec = {};
      if (parser.is_done()) co_return ec;
      if (used > 0) continue;
    }
    const auto n = co_await conn.read_some(chunk.data(), chunk.size());
    if (n == 0) co_return http::error::end_of_stream;
    pending.append(chunk.data(), n);
  }
}

/// One connection: TLS handshake, then requests until it closes or upgrades to a WebSocket.
net::awaitable<void> server::impl::session(tcp::socket socket) {
  struct counter {  // (counted in by serve())
    std::uint64_t& n;
    ~counter() { --n; }
  } open{connections_open};
  // Events are small and must go out at once: no Nagle delay waiting for the peer's ACK.
  boost::system::error_code ignored;
  socket.set_option(tcp::no_delay(true), ignored);
  const auto peer = socket.remote_endpoint(ignored).address();
  auto conn = std::make_unique<transport>(std::move(socket), tls);
  // A peer gets request_deadline for the handshake and for each whole request: one that
  // trickles bytes or sends nothing holds no connection longer.
  net::steady_timer deadline(io);
  auto arm = [&deadline, &s = conn->socket()] {
    deadline.expires_after(request_deadline);
    deadline.async_wait([&deadline, &s](boost::system::error_code ec) {
      // (A wait that completed just before it was disarmed finds the expiry moved.)
      if (!ec && deadline.expiry() <= net::steady_timer::clock_type::now()) s.cancel();
    });
  };
  arm();
  if (!co_await conn->handshake()) co_return;
  deadline.expires_at(net::steady_timer::time_point::max());
  std::string pending;
  for (;;) {
    http::request_parser<http::string_body> parser;
    parser.body_limit(cfg->server.max_message_bytes);
    parser.header_limit(max_header_bytes);
    parser.eager(true);
    arm();
    const auto ec = co_await read_request(*conn, pending, parser);
    deadline.expires_at(net::steady_timer::time_point::max());  // disarmed: handling may take long (long-polls)
    if (ec == http::error::end_of_stream) co_return;
    if (ec) {
      request req;
      req.version(11);
      auto res = error_response(req, error_code::bad_request,
                                ec == http::error::body_limit     ? "request body too large"
                                : ec == http::error::header_limit ? "request header too large"
                                                                  : "malformed HTTP request: " + ec.message());
      res.keep_alive(false);
      std::ostringstream out;
      out << res;
      co_await conn->write_all(out.str());
      conn->close();
      co_return;
    }
    request req = parser.release();
    const auto t = parse_target(req.target());
    const bool upgrade = websocket::is_upgrade(req);
    const request_facts facts{req[http::field::host], req[http::field::origin], req[http::field::authorization],
                              req[http::field::sec_websocket_protocol],
                              upgrade || (req.method() != http::verb::get && req.method() != http::verb::head),
                              conn->secure(),
                              policy.locate(peer, all_values(req, http::field::forwarded),
                                            all_values(req, "X-Forwarded-For"))};
    const bool health = t && req.method() == http::verb::get && t->parts.size() == 1 && t->parts[0] == "healthz";
    const auto refusal = health ? std::nullopt : policy.refusal(facts);
    const auto who = policy.authenticate(facts);

    if (upgrade && t) {
      const std::string deflate = negotiate_deflate(all_values(req, http::field::sec_websocket_extensions));
      auto answer = upgrade_answer(req, deflate);
      if (auto* res = std::get_if<response>(&answer)) {
        res->keep_alive(false);
        std::ostringstream out;
        out << *res;
        co_await conn->write_all(out.str());
        conn->close();
        co_return;
      }
      if (!co_await conn->write_all(std::get<std::string>(answer))) co_return;
      // From here the connection is cmdcast's WebSocket (ws_connection).
      websockets_compressed += !deflate.empty();
      auto ws = std::make_shared<ws_connection>(std::move(conn), cfg->server.max_message_bytes,
                                                cfg->server.idle_timeout, ws_traffic, !deflate.empty());
      ws->start(pending);
      if (refusal) {
        log_denied(req, facts, error_code::forbidden, *refusal);
        co_await refuse(*ws, error_code::forbidden, *refusal);
      } else if (!who) {
        const auto reason = policy.unauthenticated_reason(facts);
        log_denied(req, facts, error_code::unauthorized, reason);
        co_await refuse(*ws, error_code::unauthorized, reason);
      } else if (stopping) {
        co_await refuse(*ws, error_code::busy, "the server is shutting down");
      } else {
        co_await run_websocket(*ws, *t, *who);
      }
      co_return;
    }

    response res;
    if (refusal) {
      log_denied(req, facts, error_code::forbidden, *refusal);
      res = error_response(req, error_code::forbidden, *refusal);
    } else if (!t) {
      res = error_response(req, error_code::bad_request, "malformed request target");
    } else if (who && req.method() == http::verb::get && t->parts.size() == 3 && t->parts[0] == "executions" &&
               t->parts[2] == "output") {
      auto answer = co_await download(req, *t, *who, *conn);
      if (auto* keep = std::get_if<bool>(&answer)) {
        if (*keep) continue;
        conn->close();
        co_return;
      }
      res = std::get<response>(std::move(answer));
    } else if (who && req.method() == http::verb::get && t->parts.size() == 3 && t->parts[0] == "batches" &&
               t->parts[2] == "events") {
      res = co_await batch_poll(req, *t, *who);
    } else if (who && req.method() == http::verb::get && t->parts.size() == 3 && t->parts[0] == "executions" &&
               t->parts[2] == "events") {
      // Not a ?: around the co_await: GCC 12 miscompiles that (the response came out corrupt).
      res = co_await long_poll(req, *t, *who);
    } else {
      res = co_await handle_http(req, *t, who, policy.unauthenticated_reason(facts));
      if (res.result() == http::status::unauthorized || res.result() == http::status::forbidden) {
        log_denied(req, facts, res.result() == http::status::unauthorized ? error_code::unauthorized : error_code::forbidden,
                   who ? "the role does not allow it" : "no valid token");
      }
    }
    std::ostringstream out;
    out << res;
    if (!co_await conn->write_all(out.str()) || !res.keep_alive()) {
      conn->close();
      co_return;
    }
  }
}

net::awaitable<void> server::impl::accept_loop() {
  auto backoff = std::chrono::milliseconds(0);
  for (;;) {
    auto [ec, socket] = co_await acceptor.async_accept(use_tuple);
    if (ec) {
      if (!acceptor.is_open()) co_return;
      // Out of descriptors (or memory): retrying at once would spin. Wait, longer each time,
      // until connections close and accepting works again.
      ++accept_errors;
      backoff = std::clamp(backoff * 2, std::chrono::milliseconds(10), std::chrono::milliseconds(1000));
      if (backoff == std::chrono::milliseconds(10) || backoff == std::chrono::milliseconds(1000)) {
        log_event("accept_failed", {{"error", ec.message()}, {"retry_in_ms", std::to_string(backoff.count())}});
      }
      net::steady_timer pause(io, backoff);
      co_await pause.async_wait(use_tuple);
      continue;
    }
    backoff = std::chrono::milliseconds(0);
    serve(std::move(socket));
    // A burst of connects (watchers coming back after a restart) is taken from the listen
    // queue now, not one per turn of the loop behind every handler already waiting: the queue
    // holds 4096, and a connection it overflows waits 1 s or more for its SYN to go again.
    for (int more = 0; more < 256; ++more) {
      tcp::socket next(io);
      boost::system::error_code aec;
      acceptor.accept(next, aec);  // the acceptor does not block: would_block once it is empty
      if (aec) break;              // (any other error comes back to async_accept, which backs off)
      serve(std::move(next));
    }
  }
}

void server::impl::serve(tcp::socket socket) {
  if (connections_open >= cfg->server.max_connections) {
    ++connections_refused;  // closed at once: the connections already open are served as before
    boost::system::error_code ignored;
    socket.close(ignored);
    return;
  }
  // Counted now, not once the session starts: a burst of accepts comes before any of them.
  ++connections_open;
  ++connections_total;
  net::co_spawn(io, [self = shared_from_this(), s = std::move(socket)]() mutable {
    return self->session(std::move(s));
  }, net::detached);
}

/// During shutdown: once every execution has ended and every watcher has been sent what it
/// had queued and closed (or a few seconds have passed), report the server stopped.
void server::impl::maybe_stopped(bool force) {
  if (!stopping || !on_stopped) return;
  if (!force) {
    if (!registry.all_finished()) return;
    if (!watchers.empty()) {
      for (auto& [w, who] : watchers) w->shut_down();
      if (!drain_deadline) {
        drain_deadline = std::make_unique<net::steady_timer>(io, std::chrono::seconds(3));
        drain_deadline->async_wait([self = shared_from_this()](boost::system::error_code ec) {
          if (!ec) self->maybe_stopped(true);
        });
      }
      return;
    }
  }
  registry.disconnect_all();
  if (drain_deadline) drain_deadline->cancel();
  auto done = std::move(on_stopped);
  on_stopped = nullptr;
  if (cluster) cluster->stop();
  done();
}

server::server(net::io_context& io, config c) : impl_(std::make_shared<impl>(io, std::move(c))) {}
server::~server() = default;

void server::start() {
  auto& s = impl_->cfg->server;
  if (s.tls_cert) {
    auto tls = tls_context::load(*s.tls_cert, *s.tls_key);
    if (!tls) throw std::runtime_error(tls.error());
    impl_->tls = std::move(*tls);
  }
  if (const auto& pg = impl_->cfg->audit_postgres; !pg.empty() || !s.audit_db.empty()) {
    // PostgreSQL connects in the background: unreachable, the server starts degraded.
    auto store = pg.empty() ? audit_store::open(s.audit_db)
                            : audit_store::open_postgres(pg, impl_->cfg->cluster.server_id, impl_->io.get_executor());
    if (!store) throw std::runtime_error(store.error());
    impl_->audit = std::move(*store);
    net::co_spawn(impl_->io, [i = impl_] { return i->prune_audit(); }, net::detached);
  }
  if (const auto& c = impl_->cfg->cluster; !c.redis.empty()) {
    auto node = std::make_shared<cluster::cluster_node>(impl_->io.get_executor(), c, s);
    impl_->registry.on_new_execution = [node](const std::shared_ptr<execution>& e) { node->adopt(e); };
    impl_->registry.on_new_batch = [node](const std::shared_ptr<batch>& b) { node->adopt_batch(b); };
    node->on_batch_control = [i = impl_.get()](const std::string& id, const std::string& verb, const std::string& user) {
      const auto b = i->registry.find_batch(id);
      if (!b || verb != "cancel") return;
      log_event("cancel_batch", {{"batch_id", id}, {"user", user}, {"via", "cluster"}});
      i->registry.cancel_batch(b);
    };
    node->on_control = [i = impl_.get()](const std::string& id, const std::string& verb, const std::string& user) {
      const auto e = i->registry.find(id);
      if (!e) return;
      log_event(verb, {{"execution_id", id}, {"user", user}, {"via", "cluster"}});
      if (verb == "cancel") {
        i->registry.cancel(e);
      } else if (verb == "approve" || verb == "reject") {
        // Checked by the server asked too; its copy's record may have been a moment old.
        if (auto err = i->decide(e, verb == "approve", user)) log_event("decision_refused", {{"execution_id", id}, {"why", err->message}});
      }
    };
    node->start();
    impl_->cluster = std::move(node);
  }
  const tcp::endpoint ep(net::ip::make_address(s.listen_host), s.listen_port);
  impl_->acceptor.open(ep.protocol());
  impl_->acceptor.set_option(tcp::acceptor::reuse_address(true));
  impl_->acceptor.bind(ep);
  impl_->acceptor.listen();
  impl_->acceptor.non_blocking(true);
  log_event("listening", {{"address", s.listen_host + ":" + std::to_string(port())}, {"tls", impl_->tls ? "yes" : "no"}});
  net::co_spawn(impl_->io, [i = impl_] { return i->accept_loop(); }, net::detached);
}

net::awaitable<std::shared_ptr<execution>> server::impl::find_execution(const std::string& id) {
  if (auto e = registry.find(id)) co_return e;
  if (!cluster) co_return nullptr;
  co_return co_await cluster->copy_of(id);
}

net::awaitable<std::shared_ptr<batch>> server::impl::find_batch(const std::string& id) {
  if (auto b = registry.find_batch(id)) co_return b;
  if (!cluster) co_return nullptr;
  co_return co_await cluster->batch_copy_of(id);
}

net::awaitable<void> server::impl::cancel_execution(const std::shared_ptr<execution>& e, const principal& who) {
  log_event("cancel", {{"execution_id", e->id()}, {"user", who.name}, {"client", who.from.client}, {"proxy", who.from.proxy}});
  if (!e->is_copy()) {
    registry.cancel(e);
  } else if (!e->finished()) {
    // Another server of the cluster runs it: it is asked, and its exit confirms (an owner
    // gone: the copy ends lost, for every server).
    co_await cluster->send_control(e->id(), "cancel", who.name);
  }
}

net::awaitable<void> server::impl::cancel_batch(const std::shared_ptr<batch>& b, const principal& who) {
  log_event("cancel_batch", {{"batch_id", b->id()}, {"user", who.name}, {"client", who.from.client}, {"proxy", who.from.proxy}});
  if (b->is_copy()) {
    co_await cluster->cancel_batch(b, who.name);
  } else {
    registry.cancel_batch(b);
  }
}

std::optional<request_error> server::impl::check_decision(const execution& e, const std::string& user) const {
  if (e.pending() != pending_state::awaiting_approval) {
    return request_error{error_code::bad_request,
                         "execution \"" + e.id() + "\" is not awaiting approval (" + e.record().state + ")"};
  }
  if (e.user() == user) {
    return request_error{error_code::forbidden, "only another operator can decide a run; \"" + user + "\" asked for it"};
  }
  return std::nullopt;
}

std::optional<request_error> server::impl::decide(const std::shared_ptr<execution>& e, bool approving,
                                                  const std::string& user) {
  if (auto err = check_decision(*e, user)) return err;
  return approving ? registry.approve(e, user) : registry.reject(e, user);
}

void server::impl::reconfigure(config next) {
  cfg = std::make_shared<const config>(std::move(next));
  policy = request_policy(cfg->server, cfg->tokens);
  registry.reconfigure(cfg->server, cfg->machines);
  // Who was let in with a token that is gone now is let go (revoke() closes later, from the
  // connection's own flow: collect first).
  std::vector<live_subscriber*> revoked;
  for (auto& [w, who] : watchers) {
    if (!policy.still_valid(who)) revoked.push_back(w);
  }
  for (auto* w : revoked) w->revoke();
  std::size_t parked_revoked = 0;
  for (auto it = parked_polls.begin(); it != parked_polls.end();) {
    if (policy.still_valid(it->second->who)) {
      ++it;
      continue;
    }
    it->second->expiry.cancel();
    it->second->e->unsubscribe(it->second->collector.get());
    it = parked_polls.erase(it);
    ++parked_revoked;
  }
  log_event("reloaded", {{"machines", std::to_string(cfg->machines.size())},
                         {"actions", std::to_string(cfg->actions.size())},
                         {"tokens", std::to_string(cfg->tokens.size())},
                         {"watchers_revoked", std::to_string(revoked.size() + parked_revoked)}});
}

bool server::reload(common::result<config> loaded, const std::string& origin) {
  auto& i = *impl_;
  auto refuse = [&](const std::string& problems) {
    ++i.reloads_refused;
    log_event("reload_refused", {{"config", origin}, {"problems", problems}});
    return false;
  };
  if (!loaded) return refuse(loaded.error());
  config next = std::move(*loaded);
  const auto& now = i.cfg->server;
  std::string restart;  // what needs a restart to change
  auto keep = [&](bool changed, std::string_view key) {
    if (changed) restart += (restart.empty() ? "" : ", ") + std::string(key);
    return changed;
  };
  if (keep(next.server.listen_host != now.listen_host || next.server.listen_port != now.listen_port, "listen")) {
    next.server.listen_host = now.listen_host;
    next.server.listen_port = now.listen_port;
  }
  if (keep(next.server.audit_db != now.audit_db, "audit_db")) next.server.audit_db = now.audit_db;
  if (keep(next.audit_postgres != i.cfg->audit_postgres, "audit.postgres")) next.audit_postgres = i.cfg->audit_postgres;
  const auto& cluster_now = i.cfg->cluster;
  if (keep(next.cluster.redis != cluster_now.redis || next.cluster.server_id != cluster_now.server_id ||
               next.cluster.lease != cluster_now.lease,
           "cluster")) {
    next.cluster = cluster_now;
  }
  if (keep(next.server.tls_cert.has_value() != now.tls_cert.has_value(), "tls_cert")) {
    next.server.tls_cert = now.tls_cert;
    next.server.tls_key = now.tls_key;
    next.server.insecure_plaintext = now.insecure_plaintext;
  }
  // A renewed certificate: new connections get it, open ones keep theirs.
  auto tls = i.tls;
  if (next.server.tls_cert) {
    auto renewed = tls_context::load(*next.server.tls_cert, *next.server.tls_key);
    if (!renewed) return refuse(renewed.error());
    tls = std::move(*renewed);
  }
  if (!restart.empty()) log_event("reload_needs_restart", {{"keys", restart}});
  ++i.reloads;
  i.tls = std::move(tls);
  i.reconfigure(std::move(next));
  return true;
}

std::uint16_t server::port() const { return impl_->acceptor.local_endpoint().port(); }

void server::shut_down(std::function<void()> done) {
  auto& i = *impl_;
  if (i.stopping) return;
  i.stopping = true;
  log_event("shutdown", {});
  boost::system::error_code ignored;
  i.acceptor.close(ignored);
  if (i.prune_timer) i.prune_timer->cancel();
  i.on_stopped = std::move(done);
  i.unpark_all();
  // Running commands are cancelled: their watchers get the exit event, then 1000.
  i.registry.cancel_all();
  i.maybe_stopped();
}

}  // namespace cmdcast::server
