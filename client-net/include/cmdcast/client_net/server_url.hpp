// Where a client finds cmdcast-server: "https://HOST[:PORT]" speaks TLS, "http://HOST[:PORT]"
// and a bare "HOST[:PORT]" plain TCP. Parsing only, no I/O.
#pragma once

#include <string>
#include <string_view>

#include "cmdcast/common/result.hpp"

namespace cmdcast::client_net {

struct server_url {
  bool tls = false;
  std::string host;  // a name or an address (IPv6 without its brackets)
  std::string port;

  /// "host:port" ("[::1]:port" for IPv6): the Host header, and how messages name the server.
  std::string authority() const;
};

/// Parses a server as users type it. Without a port: 443 for https, 80 for http, and
/// cmdcast-server's own 8080 for a bare host. ws:// and wss:// are taken for http:// and
/// https://; a trailing "/" is fine, any other path is not.
common::result<server_url> parse_server_url(std::string_view text);

}  // namespace cmdcast::client_net
