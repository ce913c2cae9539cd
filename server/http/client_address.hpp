// Where a request comes from: the peer's address, or, when the peer is a trusted reverse proxy
// (`trusted_proxies`), the client it names in Forwarded or X-Forwarded-For. Only a proxy we
// trust may tell us who its client is; anyone else could put any address in those headers.
#pragma once

#include <boost/asio/ip/address.hpp>
#include <boost/asio/ip/network_v4.hpp>
#include <boost/asio/ip/network_v6.hpp>

#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "config/config.hpp"  // forwarding_header

namespace cmdcast::server {

/// An address or CIDR block ("10.0.0.0/8", "::1", "fd00::/8"), or nullopt when it is neither.
using address_block = std::variant<boost::asio::ip::network_v4, boost::asio::ip::network_v6>;
std::optional<address_block> parse_address_block(std::string_view text);

class proxy_list {
 public:
  proxy_list() = default;
  /// Every entry must parse (the config checked them).
  explicit proxy_list(const std::vector<std::string>& blocks);
  bool contains(const boost::asio::ip::address& a) const;
  bool empty() const { return blocks_.empty(); }

 private:
  std::vector<address_block> blocks_;
};

struct client_address {
  std::string client;  // the real client, as far as trusted proxies tell
  std::string proxy;   // the trusted proxy the request came through; empty when direct
  bool forwarded = false;     // the request carries Forwarded or X-Forwarded-For (from anyone)
  bool loopback = false;      // `client` is a loopback address
};

/// `forwarded` and `x_forwarded_for`: every such header of the request, joined with ",".
/// The hops of the one `use` names are walked from the nearest: the first one not trusted is
/// the client.
client_address locate_client(const boost::asio::ip::address& peer, std::string_view forwarded,
                             std::string_view x_forwarded_for, const proxy_list& trusted,
                             forwarding_header use = forwarding_header::x_forwarded_for);

}  // namespace cmdcast::server
