// Fuzzes cmdcast-server's HTTP front with arbitrary bytes: the real server (the request parser,
// the request policy, the router, target and query parsing, WebSocket upgrades) runs in this
// process on a loopback port; each input is sent on a connection of its own, whose write side
// is then shut. The server must neither crash nor stop serving: after every input it still
// answers /healthz.
#include <sys/socket.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/write.hpp>

#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>
#include <thread>

#include "config/config.hpp"
#include "http/server.hpp"

#include "fuzz_check.hpp"

namespace net = boost::asio;
using tcp = net::ip::tcp;

namespace {

struct running_server {
  running_server() {
    // A free loopback port for the server.
    net::io_context probe;
    tcp::acceptor free_port(probe, {net::ip::make_address("127.0.0.1"), 0});
    port = free_port.local_endpoint().port();
    free_port.close();
    // Anonymous operator, one machine nobody listens for (runs fail fast), actions with
    // params, no audit: every route is reachable without a token.
    auto cfg = cmdcast::server::parse_config(R"(
[server]
listen = "127.0.0.1:)" + std::to_string(port) + R"("
anonymous = "operator"
audit = false
allowed_origins = ["http://allowed.example"]
max_message_bytes = 4096
[[machines]]
id = "box"
host = "127.0.0.1"
port = 1
user = "nobody"
identity = "/nonexistent"
known_hosts = "/nonexistent"
[actions.echo]
command = "echo {value}"
params = { value = "^.{0,64}$" }
[actions.plain]
command = "true"
)", "fuzz.toml");
    check(cfg.ok());
    srv = std::make_unique<cmdcast::server::server>(io, std::move(*cfg));
    srv->start();
    thread = std::thread([this] { io.run(); });
  }

  /// Sends `bytes`, shuts the write side and reads what comes for a short while.
  std::string exchange(std::string_view bytes) const {
    net::io_context client;
    tcp::socket s(client);
    s.connect({net::ip::make_address("127.0.0.1"), port});
    // No TIME_WAIT left behind per input: a fuzz run makes tens of thousands of connections.
    s.set_option(net::socket_base::linger(true, 0));
    const timeval wait{0, 200000};
    ::setsockopt(s.native_handle(), SOL_SOCKET, SO_RCVTIMEO, &wait, sizeof wait);
    boost::system::error_code ec;
    net::write(s, net::buffer(bytes.data(), bytes.size()), ec);
    s.shutdown(tcp::socket::shutdown_send, ec);
    std::string answer;
    char buf[4096];
    while (!ec && answer.size() < (1u << 20)) {
      const auto n = s.read_some(net::buffer(buf), ec);
      answer.append(buf, n);
    }
    return answer;
  }

  net::io_context io{1};
  std::unique_ptr<cmdcast::server::server> srv;
  std::uint16_t port = 0;
  std::thread thread;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static running_server* server = new running_server;  // lives for the whole run
  server->exchange(std::string_view(reinterpret_cast<const char*>(data), size));
  const auto health = server->exchange("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
  check(health.starts_with("HTTP/1.1 200 OK") && health.ends_with("ok"));
  return 0;
}
