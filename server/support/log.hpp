// Structured logging and time stamps shared by the server's parts.
#pragma once

#include <chrono>
#include <initializer_list>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

namespace cmdcast::server {

/// Writes one line of JSON to stderr: {"ts":..,"event":..,fields...}; empty fields are left
/// out. Never pass a secret.
void log_event(std::string_view event,
               std::initializer_list<std::pair<std::string_view, std::string_view>> fields);

/// "2026-11-24T06:00:00.123Z"
std::string rfc3339(std::chrono::system_clock::time_point t);
inline std::string rfc3339_now() { return rfc3339(std::chrono::system_clock::now()); }
/// An RFC 3339 time (common::parse_rfc3339_ms); nullopt for anything else.
std::optional<std::chrono::system_clock::time_point> parse_rfc3339(std::string_view text);

}  // namespace cmdcast::server
