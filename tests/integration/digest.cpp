#include "digest.hpp"

#include <openssl/evp.h>

#include <cstdio>

namespace cmdcast::testing {

sha256::sha256() : ctx_(EVP_MD_CTX_new()) { EVP_DigestInit_ex(ctx_, EVP_sha256(), nullptr); }
sha256::~sha256() { EVP_MD_CTX_free(ctx_); }
void sha256::add(std::string_view data) { EVP_DigestUpdate(ctx_, data.data(), data.size()); }

std::string sha256::hex() {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned length = 0;
  EVP_DigestFinal_ex(ctx_, digest, &length);
  std::string out;
  char byte[3];
  for (unsigned i = 0; i < length; ++i) {
    std::snprintf(byte, sizeof byte, "%02x", digest[i]);
    out += byte;
  }
  return out;
}

}  // namespace cmdcast::testing
