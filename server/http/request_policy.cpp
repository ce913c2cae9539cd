#include "http/request_policy.hpp"

#include <openssl/crypto.h>

#include <boost/asio/ip/address.hpp>
#include <boost/url/parse.hpp>

#include <algorithm>
#include <cctype>

namespace cmdcast::server {
namespace {

std::string lowercase(std::string_view s) {
  std::string out(s);
  std::transform(out.begin(), out.end(), out.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return out;
}

/// The name of a Host header value ("name", "name:port", "[v6]:port"), lowercase.
std::string host_name(std::string_view host) {
  if (host.starts_with('[')) {
    const auto close = host.find(']');
    return lowercase(host.substr(0, close == std::string_view::npos ? host.size() : close + 1));
  }
  return lowercase(host.substr(0, host.find(':')));
}

bool is_ip_literal(const std::string& name) {
  std::string_view bare = name;
  if (bare.starts_with('[') && bare.ends_with(']')) bare = bare.substr(1, bare.size() - 2);
  boost::system::error_code ec;
  boost::asio::ip::make_address(std::string(bare), ec);
  return !ec;
}

}  // namespace

request_policy::request_policy(const server_settings& settings, const std::vector<token_entry>& tokens)
    : tokens_(tokens), anonymous_(settings.anonymous),
      trusted_proxies_(settings.trusted_proxies),
      forwarded_header_(settings.forwarded_header) {
  hosts_.insert("localhost");
  hosts_.insert(host_name(settings.listen_host));
  for (const auto& o : settings.allowed_origins) {
    origins_.insert(o);
    if (const auto url = boost::urls::parse_absolute_uri(o)) hosts_.insert(lowercase(url->host()));
  }
  for (const auto& h : settings.allowed_hosts) hosts_.insert(host_name(h));
}

bool request_policy::host_allowed(std::string_view host) const {
  if (host.empty()) return true;  // HTTP/1.0 without Host: no browser sends that
  const std::string name = host_name(host);
  // A rebinding page's requests carry the attacker's domain name; an address typed as such
  // cannot be rebound.
  return hosts_.count(name) > 0 || is_ip_literal(name);
}

bool request_policy::origin_allowed(const request_facts& r) const {
  if (r.origin.empty()) return true;  // not a browser: the token is what counts
  if (origins_.count(std::string(r.origin))) return true;
  // The server's own pages (same origin), once the Host has been found to be ours.
  const std::string own = std::string(r.secure ? "https://" : "http://") + std::string(r.host);
  return !r.host.empty() && lowercase(r.origin) == lowercase(own);
}

std::optional<std::string> request_policy::refusal(const request_facts& r) const {
  if (!host_allowed(r.host)) {
    return "host \"" + std::string(r.host) + "\" is not served here (add it to allowed_hosts)";
  }
  if (r.changes_state && !origin_allowed(r)) {
    return "origin \"" + std::string(r.origin) + "\" is not allowed";
  }
  return std::nullopt;
}

client_address request_policy::locate(const boost::asio::ip::address& peer, std::string_view forwarded,
                                      std::string_view x_forwarded_for) const {
  return locate_client(peer, forwarded, x_forwarded_for, trusted_proxies_, forwarded_header_);
}

std::string request_policy::unauthenticated_reason(const request_facts& r) const {
  if (anonymous_ && (r.from.forwarded || !r.from.loopback)) {
    return "a valid token is required: anonymous access is for clients on this machine, not through a proxy";
  }
  return "a valid token is required";
}

bool request_policy::still_valid(const principal& p) const {
  if (p.token == std::array<std::uint8_t, 32>{}) return anonymous_ && *anonymous_ == p.granted;
  return std::any_of(tokens_.begin(), tokens_.end(), [&](const token_entry& t) {
    return t.sha256 == p.token && t.granted == p.granted && t.name == p.name;
  });
}

std::optional<principal> request_policy::authenticate(const request_facts& r) const {
  // A proxy on this machine would make every client of the world a loopback one: anonymous
  // access ends where Forwarded or X-Forwarded-For begins (a direct client has no reason to
  // send them).
  if (anonymous_) {
    if (r.from.forwarded || !r.from.loopback) return std::nullopt;
    return principal{"anonymous", *anonymous_, {}, r.from};
  }
  std::string token;
  if (r.authorization.starts_with("Bearer ")) token = std::string(r.authorization.substr(7));
  for (std::size_t at = 0; token.empty() && at < r.subprotocols.size();) {
    auto end = r.subprotocols.find(',', at);
    if (end == std::string_view::npos) end = r.subprotocols.size();
    std::string_view p = r.subprotocols.substr(at, end - at);
    while (!p.empty() && p.front() == ' ') p.remove_prefix(1);
    while (!p.empty() && p.back() == ' ') p.remove_suffix(1);
    if (p.starts_with("cmdcast.bearer.")) token = std::string(p.substr(15));
    at = end + 1;
  }
  if (token.empty()) return std::nullopt;
  const std::string hex = sha256_hex(token);
  for (const auto& t : tokens_) {
    std::string expected;
    for (auto b : t.sha256) {
      static constexpr char digits[] = "0123456789abcdef";
      expected.push_back(digits[b >> 4]);
      expected.push_back(digits[b & 15]);
    }
    if (CRYPTO_memcmp(expected.data(), hex.data(), 64) == 0) return principal{t.name, t.granted, t.sha256, r.from};
  }
  return std::nullopt;
}

}  // namespace cmdcast::server
