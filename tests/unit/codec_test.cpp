#include "cmdcast/common/codec.hpp"

#include <gtest/gtest.h>

namespace cmdcast::common {
namespace {

template <class T>
T decoded_event(std::string_view json) {
  auto e = decode_event(json);
  EXPECT_TRUE(e.ok()) << e.error();
  return std::get<T>(*e);
}

std::string event_error(std::string_view json) {
  auto e = decode_event(json);
  EXPECT_FALSE(e.ok()) << json;
  return e.ok() ? "" : e.error();
}

std::string request_error(std::string_view json) {
  auto m = decode_client_message(json);
  EXPECT_FALSE(m.ok()) << json;
  return m.ok() ? "" : m.error();
}

TEST(Codec, EncodesEventsAsDocumented) {
  EXPECT_EQ(encode(event{output_event{1, output_stream::out, "text\n", 12}}),
            R"({"type":"stdout","seq":1,"data":"text\n","t":12})");
  EXPECT_EQ(encode(event{output_event{2, output_stream::err, "oops"}}),
            R"({"type":"stderr","seq":2,"data":"oops","t":0})");
  // The server's encoding of output in place of the read is the same text.
  EXPECT_EQ(encode_output(output_stream::out, 1, std::string_view("text\ntail").substr(0, 5), 12),
            R"({"type":"stdout","seq":1,"data":"text\n","t":12})");
  EXPECT_EQ(encode(event{progress_event{7, 42.5, "Unpacking tmux", 950}}),
            R"({"type":"progress","seq":7,"percent":42.5,"phase":"Unpacking tmux","t":950})");
  EXPECT_EQ(encode(event{progress_event{8, std::nullopt, "Reading package lists"}}),
            R"({"type":"progress","seq":8,"percent":null,"phase":"Reading package lists","t":0})");
  EXPECT_EQ(encode(event{progress_event{9, 100.0, "Done"}}),
            R"({"type":"progress","seq":9,"percent":100,"phase":"Done","t":0})");
  EXPECT_EQ(encode(event{queued_event{2}}), R"({"type":"queued","position":2})");
  EXPECT_EQ(encode(event{awaiting_approval_event{"olivia", "2026-12-02T15:00:00.000Z"}}),
            R"({"type":"awaiting_approval","requested_by":"olivia","expires_at":"2026-12-02T15:00:00.000Z"})");
  EXPECT_EQ(encode(event{batch_event{"b1", "running", {1, 2, 3, 4, 5}}}),
            R"({"type":"batch","batch_id":"b1","state":"running",)"
            R"("counts":{"queued":1,"running":2,"succeeded":3,"failed":4,"cancelled":5}})");
  EXPECT_EQ(encode(event{exit_event{4, std::nullopt, std::nullopt, exit_state::rejected, 0}}),
            R"({"type":"exit","seq":4,"data":null,"signal":null,"state":"rejected","duration_ms":0})");
  EXPECT_EQ(encode(event{exit_event{9, 0, std::nullopt, exit_state::exited, 1234}}),
            R"({"type":"exit","seq":9,"data":0,"signal":null,"state":"exited","duration_ms":1234})");
  EXPECT_EQ(encode(event{exit_event{3, std::nullopt, "TERM", exit_state::cancelled, 5}}),
            R"({"type":"exit","seq":3,"data":null,"signal":"TERM","state":"cancelled","duration_ms":5})");
  EXPECT_EQ(encode(event{gap_event{10, 3, 8}}),
            R"({"type":"gap","seq":10,"missed_from":3,"missed_to":8})");
  EXPECT_EQ(encode(event{watchers_event{3}}), R"({"type":"watchers","count":3})");
  EXPECT_EQ(encode(event{error_event{error_code::not_whitelisted, "Command not whitelisted"}}),
            R"({"type":"error","code":"not_whitelisted","error":"Command not whitelisted"})");
  EXPECT_EQ(encode(event{started_event{0, "e1", "m1", "apt_upgrade", "apt-get update",
                                       "2026-11-24T06:00:00Z"}}),
            R"({"type":"started","seq":0,"execution_id":"e1","machine_id":"m1",)"
            R"("action_type":"apt_upgrade","command":"apt-get update",)"
            R"("started_at":"2026-11-24T06:00:00Z"})");
}

TEST(Codec, EscapesEveryCharacterJsonRequires) {
  std::string all_controls;
  for (int c = 0; c < 0x20; ++c) all_controls.push_back(static_cast<char>(c));
  std::string out;
  append_json_string(out, all_controls + "\"\\/\x7f" "é✓");
  EXPECT_EQ(out,
            "\"\\u0000\\u0001\\u0002\\u0003\\u0004\\u0005\\u0006\\u0007\\b\\t\\n\\u000b\\f\\r"
            "\\u000e\\u000f\\u0010\\u0011\\u0012\\u0013\\u0014\\u0015\\u0016\\u0017\\u0018"
            "\\u0019\\u001a\\u001b\\u001c\\u001d\\u001e\\u001f\\\"\\\\/\x7f" "é✓\"");
}

TEST(Codec, EscapesAtEveryPositionOfALongString) {
  // The encoder scans 16 or 8 bytes a step: a byte to escape must be found at any offset, and
  // the bytes that look close to one (space, DEL, bytes over 0x7F) must go through as they are.
  for (const int c : {0x00, 0x1B, 0x1F, 0x20, int{'"'}, int{'\\'}, 0x7F, 0x80, 0xFF}) {
    for (std::size_t at = 0; at < 70; ++at) {
      std::string s(70, 'a');
      s[at] = static_cast<char>(c);
      s[69 - at / 2] = '\n';  // and a second one, before, on or after the first
      std::string expected = "\"";
      for (const char b : s) {
        if (b == '\n') {
          expected += "\\n";
        } else if (b == '"' || b == '\\') {
          expected += {'\\', b};
        } else if (static_cast<unsigned char>(b) < 0x20) {
          expected += b == 0 ? "\\u0000" : b == 0x1B ? "\\u001b" : "\\u001f";
        } else {
          expected += b;
        }
      }
      expected += '"';
      std::string out = "x";
      append_json_string(out, s);
      EXPECT_EQ(out, "x" + expected) << "byte " << c << " at " << at;
    }
  }
}

TEST(Codec, EveryEventRoundTrips) {
  const std::vector<event> events = {
      started_event{0, "exec-1", "pi-hole", "apt_upgrade", "apt-get -y upgrade", "2026-11-24T06:00:00Z"},
      output_event{1, output_stream::out, "line 1\r\nprogress 50%\r\x1b[31mred\x1b[0m\tü\n"},
      output_event{2, output_stream::err, std::string(100000, 'x')},
      progress_event{3, 12.3, "Unpacking tmux"},
      progress_event{4, std::nullopt, ""},
      exit_event{5, 137, std::nullopt, exit_state::failed, 99},
      exit_event{6, std::nullopt, "KILL", exit_state::timed_out, 3600000},
      gap_event{7, 2, 5},
      watchers_event{200},
      error_event{error_code::host_key_mismatch, "host key changed: ED25519 SHA256:abc"},
      output_event{8, output_stream::out, "timed", 123456},
      queued_event{3},
      awaiting_approval_event{"olivia", "2026-12-02T15:00:00.000Z"},
      batch_event{"b1", "succeeded", {0, 0, 5, 0, 0}},
      exit_event{9, std::nullopt, std::nullopt, exit_state::expired, 0},
  };
  for (const event& e : events) {
    auto back = decode_event(encode(e));
    ASSERT_TRUE(back.ok()) << back.error();
    EXPECT_EQ(*back, e) << encode(e);
  }
}

TEST(Codec, PollResponseAndRecordsRoundTrip) {
  poll_response p;
  p.events = {output_event{4, output_stream::out, "a"}, exit_event{5, 0, std::nullopt, exit_state::exited, 10}};
  p.next = 5;
  p.done = true;
  EXPECT_EQ(encode(p), R"({"events":[{"type":"stdout","seq":4,"data":"a","t":0},)"
                       R"({"type":"exit","seq":5,"data":0,"signal":null,"state":"exited","duration_ms":10}],)"
                       R"("next":5,"done":true})");
  auto pb = decode_poll_response(encode(p));
  ASSERT_TRUE(pb.ok()) << pb.error();
  EXPECT_EQ(*pb, p);

  execution_record r{"e1", "m1", "restart_service", "systemctl restart 'nginx'", {{"service", "nginx"}},
                     "alice", "exited", 0, std::nullopt, "2026-11-24T06:00:00Z", "2026-11-24T06:00:01Z",
                     120, 4, false, 2};
  auto rb = decode_execution_record(encode(r));
  ASSERT_TRUE(rb.ok()) << rb.error();
  EXPECT_EQ(*rb, r);
  auto list = decode_execution_records(encode(std::vector<execution_record>{r, r}));
  ASSERT_TRUE(list.ok()) << list.error();
  EXPECT_EQ(list->size(), 2u);

  std::vector<machine_info> machines = {
      {"pi-hole", "Pi-hole", {{"apt_upgrade", {}, "apt"}, {"restart_service", {{"service", "^[a-z]+$"}}, std::nullopt}}}};
  auto mb = decode_machines(encode(machines));
  ASSERT_TRUE(mb.ok()) << mb.error();
  EXPECT_EQ(*mb, machines);

  auto ab = decode_run_accepted(encode(run_accepted{"e42"}));
  ASSERT_TRUE(ab.ok());
  EXPECT_EQ(ab->execution_id, "e42");
}

TEST(Codec, DecodesRunAndCancelRequests) {
  auto m = decode_client_message(R"({"action_type":"restart_service","params":{"service":"nginx"}})");
  ASSERT_TRUE(m.ok()) << m.error();
  const auto& r = std::get<run_request>(*m);
  EXPECT_EQ(r.action_type, "restart_service");
  EXPECT_EQ(r.params.at("service"), "nginx");
  EXPECT_FALSE(r.command);

  auto with_command = decode_run_request(
      R"({"type":"run","action_type":"apt_upgrade","command":"apt-get -y upgrade"})");
  ASSERT_TRUE(with_command.ok()) << with_command.error();
  EXPECT_EQ(with_command->command, "apt-get -y upgrade");
  EXPECT_TRUE(with_command->params.empty());

  auto cancel = decode_client_message(R"({"type":"cancel"})");
  ASSERT_TRUE(cancel.ok());
  EXPECT_TRUE(std::holds_alternative<cancel_request>(*cancel));
  EXPECT_EQ(encode(client_message{cancel_request{}}), R"({"type":"cancel"})");

  // Param names are the user's: they are escaped like values.
  run_request tricky{"x", {{"na\"me\n", "v\"al"}}, std::nullopt};
  EXPECT_EQ(encode(tricky), R"({"action_type":"x","params":{"na\"me\n":"v\"al"}})");
  auto tricky_back = decode_run_request(encode(tricky));
  ASSERT_TRUE(tricky_back.ok()) << tricky_back.error();
  EXPECT_EQ(*tricky_back, tricky);

  run_request req{"x", {{"a", "b"}}, "cmd"};
  auto back = decode_run_request(encode(req));
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(*back, req);
}

TEST(Codec, RejectsMalformedJson) {
  EXPECT_NE(request_error("").find("malformed JSON"), std::string::npos);
  EXPECT_NE(request_error("{").find("malformed JSON"), std::string::npos);
  EXPECT_NE(request_error(R"({"action_type":"a",})").find("malformed JSON"), std::string::npos);
  EXPECT_NE(request_error("not json").find("malformed JSON"), std::string::npos);
  // Trailing garbage after a valid object.
  EXPECT_NE(request_error(R"({"action_type":"a"} x)").find("malformed JSON"), std::string::npos);
  EXPECT_NE(request_error(R"({"action_type":"a"}{})").find("malformed JSON"), std::string::npos);
  // Invalid UTF-8 inside a string.
  EXPECT_NE(request_error("{\"action_type\":\"\xff\"}").find("malformed JSON"), std::string::npos);
  EXPECT_NE(request_error("[1,2]").find("expected a JSON object"), std::string::npos);
  EXPECT_NE(request_error("\"run\"").find("expected a JSON object"), std::string::npos);
}

TEST(Codec, RejectsWrongTypesAndMissingFieldsByName) {
  EXPECT_EQ(request_error(R"({"params":{}})"), R"(request: field "action_type": missing)");
  EXPECT_EQ(request_error(R"({"action_type":5})"),
            R"(request: field "action_type": expected a string, got an integer)");
  EXPECT_EQ(request_error(R"({"action_type":"a","params":[]})"),
            R"(request: field "params": expected an object, got an array)");
  EXPECT_EQ(request_error(R"({"action_type":"a","params":{"service":1}})"),
            R"(request: field "params": "service" must be a string, got an integer)");
  EXPECT_EQ(request_error(R"({"action_type":"a","extra":true})"),
            R"(request: unknown field "extra")");
  EXPECT_EQ(request_error(R"({"type":"launch"})"),
            R"(request: field "type": unknown message type "launch" (expected "run" or "cancel"))");
  EXPECT_EQ(request_error(R"({"type":7})"), R"(request: field "type": expected a string, got an integer)");

  EXPECT_EQ(event_error(R"({"type":"stdout","data":"x"})"), R"(event: field "seq": missing)");
  EXPECT_EQ(event_error(R"({"type":"stdout","seq":"1","data":"x"})"),
            R"(event: field "seq": expected an integer, got a string)");
  EXPECT_EQ(event_error(R"({"type":"stdout","seq":-1,"data":"x"})"), R"(event: field "seq": out of range)");
  EXPECT_EQ(event_error(R"({"type":"stdout","seq":1.5,"data":"x"})"),
            R"(event: field "seq": expected an integer, got a number)");
  EXPECT_EQ(event_error(R"({"type":"telepathy","seq":1})"), R"(event: field "type": unknown event type "telepathy")");
  EXPECT_EQ(event_error(R"({"seq":1})"), R"(event: field "type": missing)");
  EXPECT_EQ(event_error(R"({"type":"progress","seq":1,"percent":101,"phase":""})"),
            R"(event: field "percent": out of range)");
  EXPECT_EQ(event_error(R"({"type":"exit","seq":1,"data":0,"signal":null,"state":"vanished","duration_ms":1})"),
            R"(event: field "state": unknown exit state "vanished")");
  EXPECT_EQ(event_error(R"({"type":"error","code":"oops","error":"x"})"),
            R"(event: field "code": unknown error code "oops")");
  EXPECT_EQ(event_error(R"({"type":"gap","seq":5,"missed_from":4,"missed_to":2})"),
            R"(event: field "missed_to": before missed_from)");
}

TEST(Codec, EventsIgnoreFieldsTheyDoNotKnow) {
  // Servers may add fields; clients built earlier keep working.
  auto e = decoded_event<watchers_event>(R"({"type":"watchers","count":2,"since":"later"})");
  EXPECT_EQ(e.count, 2);
}

TEST(Codec, EnforcesLimits) {
  // Nesting too deep.
  EXPECT_NE(request_error(R"({"action_type":"a","params":{"x":{"y":{"z":{"w":{}}}}}})").find("malformed JSON"),
            std::string::npos);
  std::string deep(100, '[');
  EXPECT_NE(event_error(deep + std::string(100, ']')).find("malformed JSON"), std::string::npos);
  // Strings too long.
  const std::string long_name(200, 'a');
  EXPECT_EQ(request_error(R"({"action_type":")" + long_name + R"("})"),
            R"(request: field "action_type": too long (200 bytes, at most 128))");
  const std::string long_value(5000, 'v');
  EXPECT_EQ(request_error(R"({"action_type":"a","params":{"p":")" + long_value + R"("}})"),
            R"(request: field "params": "p" is too long)");
  // The whole message too large.
  const std::string huge = R"({"action_type":"a","command":")" + std::string(70000, 'c') + R"("})";
  EXPECT_EQ(request_error(huge),
            "message too large (" + std::to_string(huge.size()) + " bytes, at most 65536)");
  decode_limits small;
  small.max_string_bytes = 10;
  auto e = decode_event(R"({"type":"stdout","seq":1,"data":"01234567890"})", small);
  ASSERT_FALSE(e.ok());
  EXPECT_EQ(e.error(), R"(event: field "data": too long (11 bytes, at most 10))");
  // Too many params.
  std::string many = R"({"action_type":"a","params":{)";
  for (int i = 0; i < 65; ++i) {
    if (i) many += ',';
    many.append("\"p").append(std::to_string(i)).append("\":\"v\"");
  }
  EXPECT_EQ(request_error(many + "}}"), R"(request: field "params": too many members)");
}

TEST(Codec, ErrorCodesMapToHttpStatus) {
  EXPECT_EQ(http_status(error_code::bad_request), 400);
  EXPECT_EQ(http_status(error_code::bad_params), 400);
  EXPECT_EQ(http_status(error_code::unauthorized), 401);
  EXPECT_EQ(http_status(error_code::forbidden), 403);
  EXPECT_EQ(http_status(error_code::not_whitelisted), 403);
  EXPECT_EQ(http_status(error_code::unknown_machine), 404);
  EXPECT_EQ(http_status(error_code::unknown_action), 404);
  EXPECT_EQ(http_status(error_code::unknown_execution), 404);
  EXPECT_EQ(http_status(error_code::busy), 429);
  EXPECT_EQ(http_status(error_code::ssh_connect_failed), 502);
  EXPECT_EQ(http_status(error_code::host_key_mismatch), 502);
  for (auto c : {error_code::bad_request, error_code::ssh_disconnected, error_code::busy}) {
    EXPECT_EQ(parse_error_code(to_string(c)), c);
  }
  EXPECT_EQ(event_seq(event{watchers_event{1}}), std::nullopt);
  EXPECT_EQ(event_seq(event{gap_event{12, 1, 2}}), 12);
}

TEST(Codec, FleetRunsRoundTrip) {
  auto g = decode_group_run_request(R"({"action_type":"apt_upgrade","params":{"p":"v"},"parallel":2,"stop_on_failure":true})");
  ASSERT_TRUE(g.ok()) << g.error();
  EXPECT_EQ(g->run.action_type, "apt_upgrade");
  EXPECT_EQ(g->parallel, 2);
  EXPECT_TRUE(g->stop_on_failure);
  EXPECT_EQ(*decode_group_run_request(encode(*g)), *g);
  EXPECT_FALSE(decode_group_run_request(R"({"action_type":"a","parallel":0})").ok());
  EXPECT_FALSE(decode_group_run_request(R"({"action_type":"a","parallel":"2"})").ok());
  EXPECT_FALSE(decode_group_run_request(R"({"action_type":"a","colour":"red"})").ok());
  EXPECT_FALSE(decode_group_run_request(R"({"type":"cancel"})").ok());
  auto subset = decode_group_run_request(R"({"action_type":"a","machines":["m2","m1"]})");
  ASSERT_TRUE(subset.ok()) << subset.error();
  EXPECT_EQ(subset->machines, (std::vector<std::string>{"m2", "m1"}));
  EXPECT_EQ(*decode_group_run_request(encode(*subset)), *subset);
  EXPECT_FALSE(decode_group_run_request(R"({"action_type":"a","machines":[]})").ok());
  EXPECT_FALSE(decode_group_run_request(R"({"action_type":"a","machines":"m1"})").ok());

  batch_record b;
  b.batch_id = "b1";
  b.group = "web";
  b.action_type = "apt_upgrade";
  b.user = "olivia";
  b.started_at = "2026-12-02T14:00:00.000Z";
  b.state = "running";
  b.parallel = 2;
  b.counts = {1, 1, 0, 0, 0};
  b.executions = {{"pihole", "e1", "running", std::nullopt, 42.5}, {"nas", "e2", "queued", std::nullopt, std::nullopt}};
  auto back = decode_batch_record(encode(b));
  ASSERT_TRUE(back.ok()) << back.error();
  EXPECT_EQ(*back, b);
  auto list = decode_batch_records(encode(std::vector<batch_record>{b, b}));
  ASSERT_TRUE(list.ok()) << list.error();
  EXPECT_EQ(list->size(), 2u);

  const auto tagged = tag_event(encode(event{output_event{3, output_stream::out, "x", 5}}), "e1", "pihole");
  EXPECT_EQ(tagged, R"({"type":"stdout","seq":3,"data":"x","t":5,"execution_id":"e1","machine_id":"pihole"})");
  auto t = decode_tagged_event(tagged);
  ASSERT_TRUE(t.ok()) << t.error();
  EXPECT_EQ(t->execution_id, "e1");
  EXPECT_EQ(t->machine_id, "pihole");
  EXPECT_EQ(std::get<output_event>(t->e).data, "x");
  auto summary = decode_tagged_event(encode(event{batch_event{"b1", "failed", {0, 0, 3, 1, 0}}}));
  ASSERT_TRUE(summary.ok()) << summary.error();
  EXPECT_TRUE(summary->execution_id.empty());
  EXPECT_EQ(std::get<batch_event>(summary->e).counts.failed, 1);
}

}  // namespace
}  // namespace cmdcast::common
