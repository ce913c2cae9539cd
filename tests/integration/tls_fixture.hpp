// Certificates for TLS tests, made at test time with the openssl command in a folder of their
// own: a private CA and server certificates it signed, and a second CA that signed none of them.
#pragma once

#include <cstdint>
#include <string>

#include "server_harness.hpp"

namespace cmdcast::testing {

struct tls_files {
  std::string cert, key;  // PEM files
};

class tls_fixture {
 public:
  tls_fixture();
  ~tls_fixture();
  tls_fixture(const tls_fixture&) = delete;
  tls_fixture& operator=(const tls_fixture&) = delete;

  /// The private CA's certificate: what --cacert takes.
  const std::string& ca() const { return ca_; }
  /// A CA that signed nothing here: trusting it alone must not let any of these through.
  const std::string& unrelated_ca() const { return unrelated_ca_; }
  /// A server certificate from the private CA for 127.0.0.1 and localhost.
  const tls_files& loopback() const { return loopback_; }
  /// A server certificate from the private CA for other.example only.
  const tls_files& other_name() const { return other_name_; }

  /// The [server] lines that make cmdcast-server serve HTTPS and WSS with `files`.
  static std::string server_config(const tls_files& files);

 private:
  /// A new key and a certificate for `alt_names` (subjectAltName syntax), signed by the private CA.
  tls_files issue(const std::string& name, const std::string& alt_names);

  std::string dir_, ca_, unrelated_ca_;
  int serial_ = 1;
  tls_files loopback_, other_name_;
};

/// An HTTP request over TLS trusting only `ca_file`: the answer (status 0 when there is none;
/// the body then says why).
http_answer https_request(std::uint16_t port, const std::string& ca_file, const std::string& method,
                          const std::string& target, const std::string& token, const std::string& body = "");

}  // namespace cmdcast::testing
