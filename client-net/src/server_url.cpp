#include "cmdcast/client_net/server_url.hpp"

#include <charconv>

namespace cmdcast::client_net {

std::string server_url::authority() const {
  if (host.find(':') != std::string::npos) return "[" + host + "]:" + port;
  return host + ":" + port;
}

common::result<server_url> parse_server_url(std::string_view text) {
  const std::string given(text);
  server_url url;
  std::string_view rest = text;
  std::string_view default_port = "8080";
  const auto scheme_end = rest.find("://");
  if (scheme_end != std::string_view::npos) {
    const std::string_view scheme = rest.substr(0, scheme_end);
    url.tls = scheme == "https" || scheme == "wss";
    if (!url.tls && scheme != "http" && scheme != "ws") {
      return common::failure{"\"" + given + "\" is not an http:// or https:// server"};
    }
    default_port = url.tls ? "443" : "80";
    rest.remove_prefix(scheme_end + 3);
  }
  while (rest.ends_with('/')) rest.remove_suffix(1);
  if (rest.find('/') != std::string_view::npos) return common::failure{"\"" + given + "\" has a path: give the server only"};

  std::string_view port;
  if (rest.starts_with('[')) {
    // An IPv6 address: "[::1]" or "[::1]:8443".
    const auto close = rest.find(']');
    if (close == std::string_view::npos) return common::failure{"\"" + given + "\" lacks the \"]\" after its address"};
    url.host = rest.substr(1, close - 1);
    const std::string_view after = rest.substr(close + 1);
    if (!after.empty() && !after.starts_with(':')) return common::failure{"\"" + given + "\" is not HOST:PORT"};
    port = after.empty() ? default_port : after.substr(1);
  } else {
    const auto colon = rest.rfind(':');
    url.host = rest.substr(0, colon);
    if (url.host.find(':') != std::string::npos) return common::failure{"\"" + given + "\": write an IPv6 address as [ADDRESS]"};
    port = colon == std::string_view::npos ? default_port : rest.substr(colon + 1);
  }
  if (url.host.empty()) return common::failure{"\"" + given + "\" names no host"};
  unsigned number = 0;
  const auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), number);
  if (port.empty() || ec != std::errc{} || end != port.data() + port.size() || number == 0 || number > 65535) {
    return common::failure{"bad port \"" + std::string(port) + "\" in \"" + given + "\""};
  }
  url.port = port;
  return url;
}

}  // namespace cmdcast::client_net
