// permessage-deflate (RFC 7692) as cmdcast negotiates it: without context takeover in either
// direction, so that each message is compressed on its own. That lets the server compress an
// event once and send the same bytes to every watcher that negotiated compression.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

namespace cmdcast::server {

/// `message` compressed as one permessage-deflate message (the final empty block's
/// 00 00 FF FF taken off, RFC 7692 7.2.1). Fast rather than small: level 1.
std::string deflate_message(std::string_view message);

/// A compressed message of the client's, decompressed into `out`, unless it is not valid
/// deflate data or would be longer than `limit` bytes (a small message must not inflate to
/// gigabytes).
enum class inflated { ok, invalid, too_long };
inflated inflate_message(std::string_view compressed, std::size_t limit, std::string& out);

/// The Sec-WebSocket-Extensions answer to a client's offers (the header's value), or empty
/// when none is permessage-deflate with parameters cmdcast can honour.
std::string negotiate_deflate(std::string_view offers);

}  // namespace cmdcast::server
