#include "cmdcast/common/protocol.hpp"

#include <array>
#include <utility>

namespace cmdcast::common {
namespace {

constexpr std::array<std::string_view, 7> exit_state_names = {"exited", "cancelled", "timed_out", "failed",
                                                              "lost",   "rejected",  "expired"};

constexpr std::array<std::pair<std::string_view, int>, 13> error_code_table = {{
    {"bad_request", 400},
    {"unauthorized", 401},
    {"forbidden", 403},
    {"unknown_machine", 404},
    {"unknown_action", 404},
    {"bad_params", 400},
    {"not_whitelisted", 403},
    {"unknown_execution", 404},
    {"busy", 429},
    {"ssh_connect_failed", 502},
    {"ssh_auth_failed", 502},
    {"host_key_mismatch", 502},
    {"ssh_disconnected", 502},
}};

}  // namespace

std::optional<seq_t> event_seq(const event& e) {
  return std::visit(
      [](const auto& ev) -> std::optional<seq_t> {
        if constexpr (requires { ev.seq; }) {
          return ev.seq;
        } else {
          return std::nullopt;
        }
      },
      e);
}

std::string_view to_string(output_stream s) { return s == output_stream::out ? "stdout" : "stderr"; }

std::string_view to_string(exit_state s) { return exit_state_names[static_cast<std::size_t>(s)]; }

std::string_view to_string(error_code c) {
  return error_code_table[static_cast<std::size_t>(c)].first;
}

int http_status(error_code c) { return error_code_table[static_cast<std::size_t>(c)].second; }

std::optional<exit_state> parse_exit_state(std::string_view s) {
  for (std::size_t i = 0; i < exit_state_names.size(); ++i) {
    if (exit_state_names[i] == s) return static_cast<exit_state>(i);
  }
  return std::nullopt;
}

std::optional<error_code> parse_error_code(std::string_view s) {
  for (std::size_t i = 0; i < error_code_table.size(); ++i) {
    if (error_code_table[i].first == s) return static_cast<error_code>(i);
  }
  return std::nullopt;
}

}  // namespace cmdcast::common
