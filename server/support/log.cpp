#include "support/log.hpp"

#include <chrono>
#include <cstdio>
#include <ctime>

#include "cmdcast/common/codec.hpp"
#include "cmdcast/common/rfc3339.hpp"

namespace cmdcast::server {

void log_event(std::string_view event,
               std::initializer_list<std::pair<std::string_view, std::string_view>> fields) {
  std::string line = "{\"ts\":";
  common::append_json_string(line, rfc3339_now());
  line += ",\"event\":";
  common::append_json_string(line, event);
  for (const auto& [k, v] : fields) {
    if (v.empty()) continue;  // a field that does not apply (no proxy, no signal)
    line += ",\"";
    line += k;
    line += "\":";
    common::append_json_string(line, v);
  }
  line += "}\n";
  std::fputs(line.c_str(), stderr);
}

std::string rfc3339(std::chrono::system_clock::time_point now) {
  const std::time_t t = std::chrono::system_clock::to_time_t(now);
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count() % 1000;
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[80];
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
                tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, static_cast<int>(ms));
  return buf;
}

std::optional<std::chrono::system_clock::time_point> parse_rfc3339(std::string_view text) {
  const auto ms = common::parse_rfc3339_ms(text);
  if (!ms) return std::nullopt;
  return std::chrono::system_clock::time_point(std::chrono::milliseconds(*ms));
}

}  // namespace cmdcast::server
