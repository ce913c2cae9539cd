// SHA-256 of what a test received, to compare with its source (OpenSSL's EVP).
#pragma once

#include <string>
#include <string_view>

struct evp_md_ctx_st;

namespace cmdcast::testing {

class sha256 {
 public:
  sha256();
  ~sha256();
  sha256(const sha256&) = delete;
  sha256& operator=(const sha256&) = delete;
  void add(std::string_view data);
  /// The digest in lowercase hex, as sha256sum prints it. Call once.
  std::string hex();

 private:
  evp_md_ctx_st* ctx_;
};

}  // namespace cmdcast::testing
