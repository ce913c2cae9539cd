// JSON encoding and strict decoding of the protocol (protocol.hpp, docs/protocol.md).
// Encoders append compact JSON to a string; events are written by hand for speed (the server
// serialises every output chunk once per execution). Decoders reject malformed input with a
// message that says what is wrong and where. All functions are thread-safe.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

#include "cmdcast/common/protocol.hpp"
#include "cmdcast/common/result.hpp"

namespace cmdcast::common {

/// Bounds on what a decoder accepts; past them the input is rejected, never truncated.
struct decode_limits {
  std::size_t max_message_bytes = 16u << 20;
  std::size_t max_depth = 8;
  std::size_t max_string_bytes = 8u << 20;  // any one string value
  std::size_t max_name_bytes = 256;         // identifiers, param names
  std::size_t max_items = 100000;           // array items or object members
};

/// Limits for what a client may send the server: small, since a request is a few names.
decode_limits client_message_limits();

void encode(const event& e, std::string& out);
std::string encode(const event& e);
/// An output event's JSON, its text taken where it lies (the server's read buffer): the same
/// as encode() of an output_event, without first copying the text into one.
std::string encode_output(output_stream stream, seq_t seq, std::string_view data, std::int64_t t);
std::string encode(const client_message& m);
std::string encode(const run_request& r);
std::string encode(const poll_response& p);
std::string encode(const run_accepted& a);
std::string encode(const std::vector<machine_info>& machines);
std::string encode(const execution_record& r);
std::string encode(const std::vector<execution_record>& records);
std::string encode(const group_run_request& r);
std::string encode(const batch_record& b);
std::string encode(const std::vector<batch_record>& batches);
/// An event's JSON with `"execution_id"` and `"machine_id"` added, as a batch stream sends it.
std::string tag_event(std::string_view event_json, std::string_view execution_id, std::string_view machine_id);

/// Appends `s` as a JSON string literal (quoted, escaped). `s` must be valid UTF-8.
void append_json_string(std::string& out, std::string_view s);

result<client_message> decode_client_message(std::string_view json,
                                             const decode_limits& limits = client_message_limits());
/// A run request on its own (the POST body); a `type` field, if present, must be "run".
result<run_request> decode_run_request(std::string_view json,
                                       const decode_limits& limits = client_message_limits());
result<group_run_request> decode_group_run_request(std::string_view json,
                                                   const decode_limits& limits = client_message_limits());
result<event> decode_event(std::string_view json, const decode_limits& limits = {});
/// A batch stream's event: the event, and the execution and machine it is of (empty for a
/// batch summary).
struct tagged_event {
  event e;
  std::string execution_id;
  std::string machine_id;
};
result<tagged_event> decode_tagged_event(std::string_view json, const decode_limits& limits = {});
result<batch_record> decode_batch_record(std::string_view json, const decode_limits& limits = {});
result<std::vector<batch_record>> decode_batch_records(std::string_view json, const decode_limits& limits = {});
result<poll_response> decode_poll_response(std::string_view json, const decode_limits& limits = {});
result<run_accepted> decode_run_accepted(std::string_view json, const decode_limits& limits = {});
result<std::vector<machine_info>> decode_machines(std::string_view json,
                                                  const decode_limits& limits = {});
result<execution_record> decode_execution_record(std::string_view json,
                                                 const decode_limits& limits = {});
result<std::vector<execution_record>> decode_execution_records(std::string_view json,
                                                               const decode_limits& limits = {});

}  // namespace cmdcast::common
