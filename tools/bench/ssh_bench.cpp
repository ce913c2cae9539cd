// The SSH executor's throughput and latency against a private loopback sshd, in one run:
//  1. 1 GB of `head -c 1000000000 /dev/zero` through the executor, through a plain blocking
//     libssh2 read loop, and through the OpenSSH client, all with the same cipher and MAC;
//  2. 100 concurrent short commands on one connection: wall time, per-command p50/p99.
// Usage: ssh_bench [BYTES]
#include <arpa/inet.h>
#include <libssh2.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "loopback_sshd.hpp"
#include "ssh/machine_connection.hpp"

namespace net = boost::asio;
using namespace cmdcast::server::ssh;
using clock_type = std::chrono::steady_clock;

namespace {

double seconds_since(clock_type::time_point t0) {
  return std::chrono::duration<double>(clock_type::now() - t0).count();
}

struct blocking_result {
  double seconds = 0;
  std::uint64_t bytes = 0;
  std::string cipher, mac;
};

/// The reference: libssh2 in blocking mode, one read loop, no event loop.
blocking_result blocking_libssh2_read(const machine_endpoint& e, const std::string& command) {
  blocking_result r;
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(e.port);
  ::inet_pton(AF_INET, e.host.c_str(), &addr.sin_addr);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) std::exit(1);
  LIBSSH2_SESSION* s = libssh2_session_init();
  if (libssh2_session_handshake(s, fd) != 0) std::exit(1);
  r.cipher = libssh2_session_methods(s, LIBSSH2_METHOD_CRYPT_SC);
  r.mac = libssh2_session_methods(s, LIBSSH2_METHOD_MAC_SC);
  if (libssh2_userauth_publickey_fromfile(s, e.user.c_str(), nullptr, e.identity.c_str(), "") != 0) std::exit(1);
  LIBSSH2_CHANNEL* ch = libssh2_channel_open_ex(s, "session", 7, 16u << 20, LIBSSH2_CHANNEL_PACKET_DEFAULT, nullptr, 0);
  const auto t0 = clock_type::now();
  libssh2_channel_exec(ch, command.c_str());
  std::vector<char> buf(256 << 10);
  for (;;) {
    const ssize_t n = libssh2_channel_read(ch, buf.data(), buf.size());
    if (n <= 0) break;
    r.bytes += static_cast<std::uint64_t>(n);
  }
  r.seconds = seconds_since(t0);
  libssh2_channel_free(ch);
  libssh2_session_disconnect(s, "done");
  libssh2_session_free(s);
  ::close(fd);
  return r;
}

void run_until(net::io_context& io, const bool& done) {
  while (!done) io.run_one();
}

constexpr int rounds = 3;

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

double percentile(std::vector<double> v, double p) {
  std::sort(v.begin(), v.end());
  return v[static_cast<std::size_t>(p * static_cast<double>(v.size() - 1))];
}

}  // namespace

int main(int argc, char** argv) {
  const std::string bytes = argc > 1 ? argv[1] : "1000000000";
  const std::string command = "head -c " + bytes + " /dev/zero";
  cmdcast::testing::loopback_sshd sshd;
  const machine_endpoint endpoint = sshd.endpoint();
  net::io_context io;
  auto work = net::make_work_guard(io);

  std::printf("cmdcast ssh_bench: %s through a loopback sshd (OpenSSH %s)\n", command.c_str(),
              cmdcast::testing::shell("ssh -V 2>&1 | cut -d, -f1 | tr -d '\\n'").c_str());

  // 1. Throughput, the three ways, interleaved over a few rounds (this VM is noisy): medians.
  auto conn = std::make_shared<machine_connection>(io.get_executor(), endpoint);
  bool done = false;
  net::co_spawn(io, [&]() -> net::awaitable<void> {
    co_await conn->run("true", [](auto, auto) {});  // connect first: time the stream only
    done = true;
  }, net::detached);
  run_until(io, done);

  blocking_result blocking;
  const double n = std::stod(bytes);
  std::vector<double> executor_rate, blocking_rate, openssh_rate;
  for (int round = 0; round < rounds; ++round) {
    blocking = blocking_libssh2_read(endpoint, command);
    blocking_rate.push_back(n / blocking.seconds / 1e6);

    std::uint64_t got = 0;
    done = false;
    const auto t0 = clock_type::now();
    net::co_spawn(io, [&]() -> net::awaitable<void> {
      co_await conn->run(command, [&](auto, std::string_view d) { got += d.size(); });
      done = true;
    }, net::detached);
    run_until(io, done);
    executor_rate.push_back(n / seconds_since(t0) / 1e6);
    if (got != static_cast<std::uint64_t>(n) || blocking.bytes != static_cast<std::uint64_t>(n)) {
      std::printf("BYTE COUNT MISMATCH: executor %llu, blocking %llu\n", static_cast<unsigned long long>(got),
                  static_cast<unsigned long long>(blocking.bytes));
      return 1;
    }

    const std::string ssh_cmd = "ssh -q -c " + blocking.cipher + " -m " + blocking.mac + " -i " +
                                endpoint.identity + " -o UserKnownHostsFile=" + endpoint.known_hosts +
                                " -o BatchMode=yes -p " + std::to_string(endpoint.port) + " " + endpoint.user +
                                "@127.0.0.1 '" + command + "' > /dev/null";
    const auto t1 = clock_type::now();
    if (std::system(ssh_cmd.c_str()) != 0) std::fprintf(stderr, "ssh client failed\n");
    openssh_rate.push_back(n / seconds_since(t1) / 1e6);
  }
  const double base = median(blocking_rate);
  std::printf("\ncipher %s, MAC %s; median of %d rounds\n", blocking.cipher.c_str(), blocking.mac.c_str(), rounds);
  std::printf("%-38s %8s %12s\n", "reader", "MB/s", "vs blocking");
  std::printf("%-38s %8.0f %12.2f\n", "cmdcast executor (Asio, non-blocking)", median(executor_rate),
              median(executor_rate) / base);
  std::printf("%-38s %8.0f %12.2f\n", "libssh2 blocking read loop", base, 1.0);
  std::printf("%-38s %8.0f %12.2f\n", "OpenSSH client (incl. connect)", median(openssh_rate),
              median(openssh_rate) / base);

  // 2. 100 concurrent short commands on one (warm) connection.
  for (std::size_t channels : {std::size_t{8}, std::size_t{60}}) {
    connection_options options;
    options.max_channels = channels;
    auto shared = std::make_shared<machine_connection>(io.get_executor(), endpoint, options);
    done = false;
    net::co_spawn(io, [&]() -> net::awaitable<void> {
      co_await shared->run("true", [](auto, auto) {});
      done = true;
    }, net::detached);
    run_until(io, done);
    constexpr int count = 100;
    std::vector<double> latency_ms(count);
    int finished = 0;
    const auto start = clock_type::now();
    for (int i = 0; i < count; ++i) {
      net::co_spawn(io, [&, i]() -> net::awaitable<void> {
        const auto t = clock_type::now();
        const auto r = co_await shared->run("echo " + std::to_string(i), [](auto, auto) {});
        if (r.exit_code != 0) std::fprintf(stderr, "command %d failed\n", i);
        latency_ms[i] = seconds_since(t) * 1000;
        ++finished;
      }, net::detached);
    }
    while (finished < count) io.run_one();
    std::printf("\n100 concurrent `echo N`, max %zu channels: wall %.0f ms, latency p50 %.0f ms, p99 %.0f ms\n",
                channels, seconds_since(start) * 1000, percentile(latency_ms, 0.5), percentile(latency_ms, 0.99));
  }
  // The same 100 commands through OpenSSH's own multiplexing (one master connection, 8 at a
  // time): what sshd itself costs per command.
  const std::string control = sshd.dir() + "/cm.sock";
  const std::string ssh_opts = "-i " + endpoint.identity + " -o UserKnownHostsFile=" + endpoint.known_hosts +
                               " -o BatchMode=yes -o ControlPath=" + control + " -p " +
                               std::to_string(endpoint.port) + " " + endpoint.user + "@127.0.0.1";
  std::system(("ssh -q -o ControlMaster=yes -fN " + ssh_opts).c_str());
  const auto m0 = clock_type::now();
  std::system(("seq 100 | xargs -P 8 -I{} ssh -q " + ssh_opts + " echo {} > /dev/null").c_str());
  std::printf("\n100 `echo N` through OpenSSH ControlMaster, 8 at a time: wall %.0f ms\n",
              seconds_since(m0) * 1000);
  std::system(("ssh -q -O exit " + ssh_opts + " 2>/dev/null").c_str());
  return 0;
}
