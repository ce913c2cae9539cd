#include "tls_fixture.hpp"

#include <stdlib.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>

#include <chrono>
#include <exception>
#include <filesystem>
#include <fstream>

#include "cmdcast/client_net/connection.hpp"

namespace cmdcast::testing {

namespace {

/// A self-signed CA certificate DIR/NAME.pem with its key DIR/NAME.key.
std::string make_ca(const std::string& dir, const std::string& name, const std::string& common_name) {
  const std::string base = dir + "/" + name;
  shell("openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 -subj '/CN=" + common_name +
        "' -keyout '" + base + ".key' -out '" + base + ".pem' 2>>'" + dir + "/openssl.log'");
  return base + ".pem";
}

}  // namespace

tls_fixture::tls_fixture() {
  char pattern[] = "/tmp/cmdcast-tls-XXXXXX";
  dir_ = ::mkdtemp(pattern);
  ca_ = make_ca(dir_, "ca", "cmdcast test CA");
  unrelated_ca_ = make_ca(dir_, "unrelated-ca", "cmdcast unrelated test CA");
  loopback_ = issue("loopback", "IP:127.0.0.1,DNS:localhost");
  other_name_ = issue("other-name", "DNS:other.example");
}

tls_fixture::~tls_fixture() {
  std::error_code ignored;
  std::filesystem::remove_all(dir_, ignored);
}

tls_files tls_fixture::issue(const std::string& name, const std::string& alt_names) {
  const std::string base = dir_ + "/" + name;
  const std::string log = " 2>>'" + dir_ + "/openssl.log'";
  std::ofstream(base + ".ext") << "subjectAltName = " << alt_names << "\n"
                               << "basicConstraints = CA:FALSE\n"
                               << "keyUsage = digitalSignature\n"
                               << "extendedKeyUsage = serverAuth\n";
  shell("openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj '/CN=" + name + "' -keyout '" +
        base + ".key' -out '" + base + ".csr'" + log);
  shell("openssl x509 -req -in '" + base + ".csr' -CA '" + ca_ + "' -CAkey '" + dir_ + "/ca.key' -set_serial " +
        std::to_string(++serial_) + " -days 2 -extfile '" + base + ".ext' -out '" + base + ".pem'" + log);
  return {base + ".pem", base + ".key"};
}

std::string tls_fixture::server_config(const tls_files& files) {
  return "tls_cert = \"" + files.cert + "\"\ntls_key = \"" + files.key + "\"";
}

http_answer https_request(std::uint16_t port, const std::string& ca_file, const std::string& method,
                          const std::string& target, const std::string& token, const std::string& body) {
  auto server = client_net::connector::make({.tls = true, .host = "127.0.0.1", .port = std::to_string(port)}, ca_file);
  if (!server) return {0, server.error()};
  net::io_context io;
  http_answer answer;
  net::co_spawn(io, client_net::http_exchange(*server, {method, target, token, body}, std::chrono::seconds(30)),
                [&answer](std::exception_ptr, client_net::http_reply reply) {
                  if (reply.status != 0) {
                    answer = {static_cast<unsigned>(reply.status), std::move(reply.body)};
                  } else {
                    answer.body = reply.error ? reply.error->message : "no answer";
                  }
                });
  io.run();
  return answer;
}

}  // namespace cmdcast::testing
