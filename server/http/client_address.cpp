#include "http/client_address.hpp"

#include <algorithm>
#include <cctype>

namespace cmdcast::server {
namespace ip = boost::asio::ip;
namespace {

/// IPv4 clients of a dual-stack listener arrive as ::ffff:a.b.c.d: compare them as IPv4.
ip::address plain(const ip::address& a) {
  if (a.is_v6() && a.to_v6().is_v4_mapped()) return ip::make_address_v4(ip::v4_mapped, a.to_v6());
  return a;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

/// "192.0.2.1", "192.0.2.1:4711", "[2001:db8::1]", "[2001:db8::1]:4711", "2001:db8::1".
std::optional<ip::address> parse_node(std::string_view node) {
  if (node.size() >= 2 && node.front() == '"' && node.back() == '"') node = node.substr(1, node.size() - 2);
  std::string text;
  if (node.starts_with('[')) {
    const auto close = node.find(']');
    if (close == std::string_view::npos) return std::nullopt;
    text = std::string(node.substr(1, close - 1));
  } else if (std::count(node.begin(), node.end(), ':') == 1) {
    text = std::string(node.substr(0, node.find(':')));  // IPv4 with a port
  } else {
    text = std::string(node);
  }
  boost::system::error_code ec;
  const auto a = ip::make_address(text, ec);
  if (ec) return std::nullopt;
  return plain(a);
}

/// Splits at commas outside quotes.
std::vector<std::string_view> split_list(std::string_view s) {
  std::vector<std::string_view> out;
  bool quoted = false;
  std::size_t start = 0;
  for (std::size_t i = 0; i <= s.size(); ++i) {
    if (i < s.size() && s[i] == '"') quoted = !quoted;
    if (i == s.size() || (s[i] == ',' && !quoted)) {
      if (const auto item = trim(s.substr(start, i - start)); !item.empty()) out.push_back(item);
      start = i + 1;
    }
  }
  return out;
}

/// The for= of each element of a Forwarded header (RFC 7239), nearest hop last; an element
/// without one is an empty entry (an unknown hop).
std::vector<std::string_view> forwarded_for(std::string_view header) {
  std::vector<std::string_view> hops;
  for (auto element : split_list(header)) {
    std::string_view found;
    while (!element.empty()) {
      const auto semi = element.find(';');
      const auto pair = trim(element.substr(0, semi));
      if (pair.size() > 4 && std::tolower(static_cast<unsigned char>(pair[0])) == 'f' &&
          std::tolower(static_cast<unsigned char>(pair[1])) == 'o' &&
          std::tolower(static_cast<unsigned char>(pair[2])) == 'r' && pair[3] == '=') {
        found = pair.substr(4);
      }
      if (semi == std::string_view::npos) break;
      element.remove_prefix(semi + 1);
    }
    hops.push_back(found);
  }
  return hops;
}

}  // namespace

std::optional<address_block> parse_address_block(std::string_view text) {
  boost::system::error_code ec;
  const std::string s(text);
  if (s.find('/') != std::string::npos) {
    if (s.find(':') != std::string::npos) {
      const auto n = ip::make_network_v6(s, ec);
      if (!ec) return n.canonical();
    } else {
      const auto n = ip::make_network_v4(s, ec);
      if (!ec) return n.canonical();
    }
    return std::nullopt;
  }
  const auto a = ip::make_address(s, ec);
  if (ec) return std::nullopt;
  if (a.is_v4()) return ip::network_v4(a.to_v4(), 32);
  return ip::network_v6(a.to_v6(), 128);
}

proxy_list::proxy_list(const std::vector<std::string>& blocks) {
  for (const auto& b : blocks) {
    if (auto parsed = parse_address_block(b)) blocks_.push_back(*parsed);
  }
}

bool proxy_list::contains(const ip::address& address) const {
  const auto a = plain(address);
  for (const auto& block : blocks_) {
    if (const auto* v4 = std::get_if<ip::network_v4>(&block)) {
      if (a.is_v4() && ip::network_v4(a.to_v4(), v4->prefix_length()).canonical() == *v4) return true;
    } else {
      const auto& v6 = std::get<ip::network_v6>(block);
      if (a.is_v6() && ip::network_v6(a.to_v6(), v6.prefix_length()).canonical() == v6) return true;
    }
  }
  return false;
}

client_address locate_client(const ip::address& peer_address, std::string_view forwarded,
                             std::string_view x_forwarded_for, const proxy_list& trusted, forwarding_header use) {
  const auto peer = plain(peer_address);
  client_address out;
  out.forwarded = !forwarded.empty() || !x_forwarded_for.empty();
  out.client = peer.to_string();
  out.loopback = peer.is_loopback();
  if (!out.forwarded || !trusted.contains(peer)) return out;
  const auto hops = use == forwarding_header::forwarded ? forwarded_for(forwarded) : split_list(x_forwarded_for);
  out.proxy = out.client;
  for (auto hop = hops.rbegin(); hop != hops.rend(); ++hop) {
    const auto a = parse_node(*hop);
    if (!a) break;  // "unknown", obfuscated or broken: the nearest hop known is the answer
    out.client = a->to_string();
    out.loopback = a->is_loopback();
    if (!trusted.contains(*a)) break;
  }
  return out;
}

}  // namespace cmdcast::server
