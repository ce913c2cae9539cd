#include "support/deflate.hpp"

#include <zlib.h>

#include <memory>
#include <stdexcept>
#include <vector>

namespace cmdcast::server {
namespace {

constexpr unsigned char empty_block_tail[4] = {0x00, 0x00, 0xFF, 0xFF};

/// One raw-deflate stream per thread, reset for each message: no allocation per message.
struct compressor {
  z_stream z{};
  compressor() {
    if (deflateInit2(&z, Z_BEST_SPEED, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY) != Z_OK) throw std::bad_alloc();
  }
  ~compressor() { deflateEnd(&z); }
};

struct decompressor {
  z_stream z{};
  decompressor() {
    if (inflateInit2(&z, -15) != Z_OK) throw std::bad_alloc();
  }
  ~decompressor() { inflateEnd(&z); }
};

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

/// Whether one offer's parameters (after "permessage-deflate") can be honoured: the
/// server's window must be allowed its full 15 bits, and nothing unknown may be asked.
bool acceptable(std::string_view params) {
  while (!params.empty()) {
    const auto semicolon = params.find(';');
    const auto param = trim(params.substr(0, semicolon));
    params = semicolon == std::string_view::npos ? std::string_view() : params.substr(semicolon + 1);
    if (param.empty()) continue;
    const auto equals = param.find('=');
    const auto name = trim(param.substr(0, equals));
    auto value = equals == std::string_view::npos ? std::string_view() : trim(param.substr(equals + 1));
    if (value.size() >= 2 && value.front() == '"' && value.back() == '"') value = value.substr(1, value.size() - 2);
    if (name == "server_no_context_takeover" || name == "client_no_context_takeover") {
      if (!value.empty()) return false;
    } else if (name == "client_max_window_bits") {
      // The client's own window: any size inflates with a 15-bit window.
    } else if (name == "server_max_window_bits") {
      if (value != "15") return false;  // one compressed frame serves every watcher: one window size
    } else {
      return false;
    }
  }
  return true;
}

}  // namespace

std::string deflate_message(std::string_view message) {
  thread_local compressor c;
  deflateReset(&c.z);
  std::string out(deflateBound(&c.z, static_cast<uLong>(message.size())) + 16, '\0');
  c.z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(message.data()));
  c.z.avail_in = static_cast<uInt>(message.size());
  c.z.next_out = reinterpret_cast<Bytef*>(out.data());
  c.z.avail_out = static_cast<uInt>(out.size());
  deflate(&c.z, Z_SYNC_FLUSH);  // the bound leaves room for all of it and the flush
  out.resize(out.size() - c.z.avail_out);
  if (out.size() >= 4 && std::string_view(out).substr(out.size() - 4) ==
                             std::string_view(reinterpret_cast<const char*>(empty_block_tail), 4)) {
    out.resize(out.size() - 4);
  }
  return out;
}

inflated inflate_message(std::string_view compressed, std::size_t limit, std::string& out) {
  thread_local decompressor d;
  inflateReset(&d.z);
  std::string in(compressed);
  in.append(reinterpret_cast<const char*>(empty_block_tail), 4);
  d.z.next_in = reinterpret_cast<Bytef*>(in.data());
  d.z.avail_in = static_cast<uInt>(in.size());
  out.clear();
  char chunk[16 * 1024];
  for (;;) {
    d.z.next_out = reinterpret_cast<Bytef*>(chunk);
    d.z.avail_out = sizeof chunk;
    const int rc = inflate(&d.z, Z_SYNC_FLUSH);
    const std::size_t produced = sizeof chunk - d.z.avail_out;
    if (rc != Z_OK && rc != Z_STREAM_END && !(rc == Z_BUF_ERROR && produced > 0)) {
      return inflated::invalid;  // not deflate data, or cut short
    }
    if (produced > limit - out.size()) return inflated::too_long;
    out.append(chunk, produced);
    if (rc == Z_STREAM_END || (d.z.avail_in == 0 && d.z.avail_out > 0)) return inflated::ok;
  }
}

std::string negotiate_deflate(std::string_view offers) {
  while (!offers.empty()) {
    const auto comma = offers.find(',');
    const auto offer = trim(offers.substr(0, comma));
    offers = comma == std::string_view::npos ? std::string_view() : offers.substr(comma + 1);
    const auto semicolon = offer.find(';');
    if (trim(offer.substr(0, semicolon)) != "permessage-deflate") continue;
    if (!acceptable(semicolon == std::string_view::npos ? std::string_view() : offer.substr(semicolon + 1))) continue;
    return "permessage-deflate; server_no_context_takeover; client_no_context_takeover";
  }
  return {};
}

}  // namespace cmdcast::server
