// Who a request comes from and whether it may be served at all: tokens and roles, the Origin
// of browsers, and the Host a request names (DNS rebinding). Every route asks this one piece.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <set>
#include <string>
#include <string_view>

#include "config/config.hpp"
#include "http/client_address.hpp"

namespace cmdcast::server {

struct principal {
  std::string name;
  role granted = role::viewer;
  std::array<std::uint8_t, 32> token{};  // the token's SHA-256; zero for anonymous
  client_address from;                   // for the log
};

/// The request headers the policy reads.
struct request_facts {
  std::string_view host;            // Host
  std::string_view origin;          // Origin (browsers only)
  std::string_view authorization;   // Authorization
  std::string_view subprotocols;    // Sec-WebSocket-Protocol
  bool changes_state = false;       // not GET or HEAD, or a WebSocket upgrade
  bool secure = false;              // the listener speaks TLS
  client_address from;              // locate_client() of the request
};

class request_policy {
 public:
  request_policy(const server_settings& settings, const std::vector<token_entry>& tokens);

  /// Why the request must not be served (403 forbidden), or nullopt. A Host the server does not
  /// answer to is a page of another site reaching it through DNS rebinding; an Origin present
  /// and not allowed is another site's page (a browser says where a request comes from).
  std::optional<std::string> refusal(const request_facts& r) const;
  /// The caller, from `Authorization: Bearer` or the `cmdcast.bearer.TOKEN` subprotocol; the
  /// `anonymous` principal when the config grants one and the request comes straight from a
  /// loopback client (not through a proxy); nullopt when unauthenticated.
  std::optional<principal> authenticate(const request_facts& r) const;
  /// Why authenticate() found nobody, for the 401.
  std::string unauthenticated_reason(const request_facts& r) const;
  /// Whether `p` would still be let in: its token is configured with the same role.
  bool still_valid(const principal& p) const;
  /// Where the request comes from: the peer, or the client a trusted proxy names.
  client_address locate(const boost::asio::ip::address& peer, std::string_view forwarded,
                        std::string_view x_forwarded_for) const;

  bool host_allowed(std::string_view host) const;
  bool origin_allowed(const request_facts& r) const;

 private:
  std::set<std::string> origins_;    // as configured
  std::set<std::string> hosts_;      // lowercase names, no port
  std::vector<token_entry> tokens_;
  std::optional<role> anonymous_;
  proxy_list trusted_proxies_;
  forwarding_header forwarded_header_;
};

}  // namespace cmdcast::server
