// What the SSH executor is given and what it reports.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

#include "cmdcast/common/protocol.hpp"

namespace cmdcast::server::ssh {

/// Where and how to reach one machine (a [[machines]] entry of the config).
struct machine_endpoint {
  std::string host;
  std::uint16_t port = 22;
  std::string user;
  std::string identity;     // private key file (ed25519 or RSA, no passphrase)
  std::string known_hosts;  // OpenSSH known_hosts file the host key must match

  bool operator==(const machine_endpoint&) const = default;
};

struct connection_options {
  std::chrono::milliseconds connect_timeout{10000};  // TCP connect
  std::chrono::milliseconds auth_timeout{10000};     // handshake, host key check and auth
  std::chrono::seconds keepalive_interval{15};
  std::size_t max_channels = 8;        // concurrent commands on one connection (sshd allows 10)
  std::uint32_t window_bytes = 16u << 20;  // per channel: keeps a fast stream flowing
  // A command's output is read into a buffer of the first size; while reads fill it, it
  // doubles up to the second: each read costs a frame, a send and a wake-up of every
  // watcher, so a fast stream wants few large reads, and a quiet command keeps its 256 KiB.
  std::size_t read_buffer_bytes = 256u << 10;
  std::size_t max_read_buffer_bytes = 1u << 20;
};

/// Why an SSH operation failed, as a protocol error code and a message that says what happened.
struct failure {
  common::error_code code = common::error_code::ssh_connect_failed;
  std::string message;
};

struct run_options {
  std::chrono::milliseconds timeout{0};        // the command's maximum duration; 0: none
  std::chrono::milliseconds kill_grace{5000};  // TERM, then KILL after this long
};

/// How a command ended.
struct run_result {
  common::exit_state state = common::exit_state::exited;
  std::optional<int> exit_code;       // set when it exited
  std::optional<std::string> signal;  // set when a signal ended it ("TERM", "KILL", ...)
  std::optional<failure> error;       // set when state is failed
  std::uint64_t bytes_stdout = 0;
  std::uint64_t bytes_stderr = 0;
};

/// Receives output as it arrives. Called on the connection's executor; must not block.
using output_handler = std::function<void(common::output_stream, std::string_view)>;

}  // namespace cmdcast::server::ssh
