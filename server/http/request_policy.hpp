// Who a request comes from and whether it may be served at all: tokens and roles, the Origin
// of browsers, and the Host a request names (DNS rebinding). Every route asks this one piece.
#pragma once

#include <optional>
#include <set>
#include <string>
#include <string_view>

#include "config/config.hpp"

namespace cmdcast::server {

struct principal {
  std::string name;
  role granted = role::viewer;
};

/// The request headers the policy reads.
struct request_facts {
  std::string_view host;            // Host
  std::string_view origin;          // Origin (browsers only)
  std::string_view authorization;   // Authorization
  std::string_view subprotocols;    // Sec-WebSocket-Protocol
  bool changes_state = false;       // not GET or HEAD, or a WebSocket upgrade
  bool secure = false;              // the listener speaks TLS
};

class request_policy {
 public:
  request_policy(const server_settings& settings, const std::vector<token_entry>& tokens);

  /// Why the request must not be served (403 forbidden), or nullopt. A Host the server does not
  /// answer to is a page of another site reaching it through DNS rebinding; an Origin present
  /// and not allowed is another site's page (a browser says where a request comes from).
  std::optional<std::string> refusal(const request_facts& r) const;
  /// The caller, from `Authorization: Bearer` or the `cmdcast.bearer.TOKEN` subprotocol; the
  /// `anonymous` principal when the config grants one; nullopt when unauthenticated.
  std::optional<principal> authenticate(const request_facts& r) const;

  bool host_allowed(std::string_view host) const;
  bool origin_allowed(const request_facts& r) const;

 private:
  std::set<std::string> origins_;    // as configured
  std::set<std::string> hosts_;      // lowercase names, no port
  const std::vector<token_entry>& tokens_;
  std::optional<role> anonymous_;
};

}  // namespace cmdcast::server
