// RFC 3339 times as the protocol carries them (started_at, ended_at, expires_at), read the
// same way by the server, the CLI and both clients. Pure arithmetic: no time zone database,
// the same natively and in WebAssembly.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

namespace cmdcast::common {

/// Milliseconds since the Unix epoch of an RFC 3339 time ("2026-12-02T13:30:21.123Z", or
/// with an offset such as +02:00); empty when it is not one.
std::optional<std::int64_t> parse_rfc3339_ms(std::string_view text);

}  // namespace cmdcast::common
