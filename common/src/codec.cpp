#include "cmdcast/common/codec.hpp"

#include "byte_scan.hpp"

#include <boost/json/monotonic_resource.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/value.hpp>

#include <array>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

namespace cmdcast::common {
namespace json = boost::json;

// ============================================================================================
// Encoding
// ============================================================================================
namespace {

/// Each byte as it appears inside a JSON string: its escape (up to 6 bytes) and that escape's
/// length.
struct escaped_byte {
  char text[8];
  std::uint8_t size;
};

constexpr std::array<escaped_byte, 256> escape_table = [] {
  std::array<escaped_byte, 256> t{};
  constexpr char hex[] = "0123456789abcdef";
  for (int c = 0; c < 256; ++c) {
    if (c < 0x20) {
      t[c] = {{'\\', 'u', '0', '0', hex[c >> 4], hex[c & 0xf]}, 6};
    } else {
      t[c] = {{static_cast<char>(c)}, 1};
    }
  }
  const std::pair<char, char> short_forms[] = {{'\b', 'b'}, {'\t', 't'}, {'\n', 'n'}, {'\f', 'f'},
                                               {'\r', 'r'}, {'"', '"'},  {'\\', '\\'}};
  for (auto [c, letter] : short_forms) t[static_cast<unsigned char>(c)] = {{'\\', letter}, 2};
  return t;
}();

void append_int(std::string& out, std::int64_t v) {
  char buf[24];
  auto r = std::to_chars(buf, buf + sizeof buf, v);
  out.append(buf, r.ptr);
}

// Percent with at most one decimal: progress needs no more, and integer formatting keeps the
// encoder identical on every platform.
void append_percent(std::string& out, double p) {
  const auto tenths = static_cast<std::int64_t>(std::llround(p * 10.0));
  append_int(out, tenths / 10);
  if (tenths % 10 != 0) {
    out.push_back('.');
    out.push_back(static_cast<char>('0' + tenths % 10));
  }
}

/// Writes one JSON object's members; key() takes plain ASCII literals only.
class object_writer {
 public:
  explicit object_writer(std::string& out) : out_(out) { out_.push_back('{'); }
  ~object_writer() { out_.push_back('}'); }
  object_writer(const object_writer&) = delete;
  object_writer& operator=(const object_writer&) = delete;

  std::string& key(std::string_view k) {
    if (!first_) out_.push_back(',');
    first_ = false;
    out_.push_back('"');
    out_.append(k);
    out_.append("\":");
    return out_;
  }
  void string(std::string_view k, std::string_view v) { append_json_string(key(k), v); }
  void integer(std::string_view k, std::int64_t v) { append_int(key(k), v); }
  void boolean(std::string_view k, bool v) { key(k).append(v ? "true" : "false"); }
  void null(std::string_view k) { key(k).append("null"); }
  void optional_string(std::string_view k, const std::optional<std::string>& v) {
    v ? string(k, *v) : null(k);
  }
  void optional_integer(std::string_view k, const std::optional<int>& v) {
    v ? integer(k, *v) : null(k);
  }
  void string_map(std::string_view k, const std::map<std::string, std::string>& m) {
    object_writer inner(key(k));
    for (const auto& [name, value] : m) {
      // Names here come from users (param names): escape them like any string.
      if (!inner.first_) inner.out_.push_back(',');
      inner.first_ = false;
      append_json_string(inner.out_, name);
      inner.out_.push_back(':');
      append_json_string(inner.out_, value);
    }
  }

 private:
  std::string& out_;
  bool first_ = true;
};

void write_counts(std::string& out, const batch_counts& c) {
  object_writer w(out);
  w.integer("queued", c.queued);
  w.integer("running", c.running);
  w.integer("succeeded", c.succeeded);
  w.integer("failed", c.failed);
  w.integer("cancelled", c.cancelled);
}

void write_output(std::string& out, output_stream stream, seq_t seq, std::string_view data, std::int64_t t) {
  out.reserve(out.size() + data.size() + 64);  // the members after the data need no second copy
  object_writer w(out);
  w.string("type", to_string(stream));
  w.integer("seq", seq);
  w.string("data", data);
  w.integer("t", t);
}

struct event_encoder {
  std::string& out;

  void operator()(const started_event& e) {
    object_writer w(out);
    w.string("type", "started");
    w.integer("seq", e.seq);
    w.string("execution_id", e.execution_id);
    w.string("machine_id", e.machine_id);
    w.string("action_type", e.action_type);
    w.string("command", e.command);
    w.string("started_at", e.started_at);
  }
  void operator()(const output_event& e) { write_output(out, e.stream, e.seq, e.data, e.t); }
  void operator()(const progress_event& e) {
    object_writer w(out);
    w.string("type", "progress");
    w.integer("seq", e.seq);
    if (e.percent) {
      append_percent(w.key("percent"), *e.percent);
    } else {
      w.null("percent");
    }
    w.string("phase", e.phase);
    w.integer("t", e.t);
  }
  void operator()(const exit_event& e) {
    object_writer w(out);
    w.string("type", "exit");
    w.integer("seq", e.seq);
    w.optional_integer("data", e.code);
    w.optional_string("signal", e.signal);
    w.string("state", to_string(e.state));
    w.integer("duration_ms", e.duration_ms);
  }
  void operator()(const gap_event& e) {
    object_writer w(out);
    w.string("type", "gap");
    w.integer("seq", e.seq);
    w.integer("missed_from", e.missed_from);
    w.integer("missed_to", e.missed_to);
  }
  void operator()(const watchers_event& e) {
    object_writer w(out);
    w.string("type", "watchers");
    w.integer("count", e.count);
  }
  void operator()(const queued_event& e) {
    object_writer w(out);
    w.string("type", "queued");
    w.integer("position", e.position);
  }
  void operator()(const awaiting_approval_event& e) {
    object_writer w(out);
    w.string("type", "awaiting_approval");
    w.string("requested_by", e.requested_by);
    w.string("expires_at", e.expires_at);
  }
  void operator()(const batch_event& e) {
    object_writer w(out);
    w.string("type", "batch");
    w.string("batch_id", e.batch_id);
    w.string("state", e.state);
    write_counts(w.key("counts"), e.counts);
  }
  void operator()(const error_event& e) {
    object_writer w(out);
    w.string("type", "error");
    w.string("code", to_string(e.code));
    w.string("error", e.message);
  }
};

void encode_record(const execution_record& r, std::string& out) {
  object_writer w(out);
  w.string("execution_id", r.execution_id);
  w.string("machine_id", r.machine_id);
  w.string("action_type", r.action_type);
  w.string("command", r.command);
  w.string_map("params", r.params);
  w.string("user", r.user);
  w.string("state", r.state);
  w.optional_integer("exit_code", r.exit_code);
  w.optional_string("signal", r.signal);
  w.string("started_at", r.started_at);
  w.optional_string("ended_at", r.ended_at);
  w.integer("bytes_stdout", r.bytes_stdout);
  w.integer("bytes_stderr", r.bytes_stderr);
  w.boolean("output_truncated", r.output_truncated);
  w.integer("watchers", r.watchers);
  if (r.approved_by) w.string("approved_by", *r.approved_by);
  if (r.approved_at) w.string("approved_at", *r.approved_at);
}

}  // namespace

// Clean stretches, found 16 bytes a step, are copied whole; each byte to escape goes through
// the escape table.
void append_json_string(std::string& out, std::string_view s) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const std::size_t n = s.size();
  out.reserve(out.size() + n + 2);
  out.push_back('"');
  for (std::size_t i = 0;;) {
    const std::size_t clean_end = i + detail::json_clean_prefix(p + i, n - i);
    out.append(s.data() + i, clean_end - i);
    if (clean_end == n) break;
    const auto& escaped = escape_table[p[clean_end]];
    out.append(escaped.text, escaped.size);
    i = clean_end + 1;
  }
  out.push_back('"');
}

void encode(const event& e, std::string& out) { std::visit(event_encoder{out}, e); }

std::string encode(const event& e) {
  std::string out;
  encode(e, out);
  return out;
}

std::string encode_output(output_stream stream, seq_t seq, std::string_view data, std::int64_t t) {
  std::string out;
  write_output(out, stream, seq, data, t);
  return out;
}

std::string encode(const run_request& r) {
  std::string out;
  object_writer w(out);
  w.string("action_type", r.action_type);
  w.string_map("params", r.params);
  if (r.command) w.string("command", *r.command);
  return out;
}

std::string encode(const client_message& m) {
  if (const auto* r = std::get_if<run_request>(&m)) return encode(*r);
  return R"({"type":"cancel"})";
}

std::string encode(const poll_response& p) {
  std::string out;
  object_writer w(out);
  auto& events = w.key("events");
  events.push_back('[');
  for (std::size_t i = 0; i < p.events.size(); ++i) {
    if (i) events.push_back(',');
    encode(p.events[i], events);
  }
  events.push_back(']');
  w.integer("next", p.next);
  w.boolean("done", p.done);
  return out;
}

std::string encode(const run_accepted& a) {
  std::string out;
  object_writer w(out);
  w.string("execution_id", a.execution_id);
  return out;
}

std::string encode(const std::vector<machine_info>& machines) {
  std::string out = "[";
  for (std::size_t i = 0; i < machines.size(); ++i) {
    if (i) out.push_back(',');
    object_writer m(out);
    m.string("id", machines[i].id);
    m.string("name", machines[i].name);
    auto& actions = m.key("actions");
    actions.push_back('[');
    for (std::size_t j = 0; j < machines[i].actions.size(); ++j) {
      const auto& a = machines[i].actions[j];
      if (j) actions.push_back(',');
      object_writer aw(actions);
      aw.string("name", a.name);
      aw.string_map("params", a.params);
      aw.optional_string("progress", a.progress);
      if (!a.secret_params.empty()) {
        auto& secret = aw.key("secret_params");
        secret.push_back('[');
        for (std::size_t k = 0; k < a.secret_params.size(); ++k) {
          if (k) secret.push_back(',');
          append_json_string(secret, a.secret_params[k]);
        }
        secret.push_back(']');
      }
      if (a.exclusive) aw.boolean("exclusive", true);
      if (a.approval) aw.boolean("approval", true);
    }
    actions.push_back(']');
    if (!machines[i].groups.empty()) {
      auto& groups = m.key("groups");
      groups.push_back('[');
      for (std::size_t j = 0; j < machines[i].groups.size(); ++j) {
        if (j) groups.push_back(',');
        append_json_string(groups, machines[i].groups[j]);
      }
      groups.push_back(']');
    }
  }
  out.push_back(']');
  return out;
}

std::string encode(const execution_record& r) {
  std::string out;
  encode_record(r, out);
  return out;
}

void encode_batch(const batch_record& b, std::string& out) {
  object_writer w(out);
  w.string("batch_id", b.batch_id);
  w.string("group", b.group);
  w.string("action_type", b.action_type);
  w.string_map("params", b.params);
  w.string("user", b.user);
  w.string("started_at", b.started_at);
  w.optional_string("ended_at", b.ended_at);
  w.string("state", b.state);
  if (b.parallel) {
    w.integer("parallel", *b.parallel);
  } else {
    w.null("parallel");
  }
  w.boolean("stop_on_failure", b.stop_on_failure);
  write_counts(w.key("counts"), b.counts);
  auto& list = w.key("executions");
  list.push_back('[');
  for (std::size_t i = 0; i < b.executions.size(); ++i) {
    const auto& m = b.executions[i];
    if (i) list.push_back(',');
    object_writer mw(list);
    mw.string("machine_id", m.machine_id);
    mw.string("execution_id", m.execution_id);
    mw.string("state", m.state);
    mw.optional_integer("exit_code", m.exit_code);
    if (m.progress) {
      append_percent(mw.key("progress"), *m.progress);
    } else {
      mw.null("progress");
    }
  }
  list.push_back(']');
}

std::string encode(const batch_record& b) {
  std::string out;
  encode_batch(b, out);
  return out;
}

std::string encode(const std::vector<batch_record>& batches) {
  std::string out = "[";
  for (std::size_t i = 0; i < batches.size(); ++i) {
    if (i) out.push_back(',');
    encode_batch(batches[i], out);
  }
  out.push_back(']');
  return out;
}

std::string encode(const group_run_request& r) {
  std::string out = encode(r.run);
  out.pop_back();  // (the run request's closing brace)
  if (r.parallel) {
    out += ",\"parallel\":";
    append_int(out, *r.parallel);
  }
  if (r.stop_on_failure) out += ",\"stop_on_failure\":true";
  if (!r.machines.empty()) {
    out += ",\"machines\":[";
    for (std::size_t i = 0; i < r.machines.size(); ++i) {
      if (i) out.push_back(',');
      append_json_string(out, r.machines[i]);
    }
    out.push_back(']');
  }
  out.push_back('}');
  return out;
}

std::string tag_event(std::string_view event_json, std::string_view execution_id, std::string_view machine_id) {
  std::string out(event_json.substr(0, event_json.size() - 1));  // without its closing brace
  out += ",\"execution_id\":";
  append_json_string(out, execution_id);
  out += ",\"machine_id\":";
  append_json_string(out, machine_id);
  out.push_back('}');
  return out;
}

std::string encode(const std::vector<execution_record>& records) {
  std::string out = "[";
  for (std::size_t i = 0; i < records.size(); ++i) {
    if (i) out.push_back(',');
    encode_record(records[i], out);
  }
  out.push_back(']');
  return out;
}

// ============================================================================================
// Decoding
// ============================================================================================
namespace {

std::string_view kind_name(const json::value& v) {
  switch (v.kind()) {
    case json::kind::null: return "null";
    case json::kind::bool_: return "a boolean";
    case json::kind::int64:
    case json::kind::uint64: return "an integer";
    case json::kind::double_: return "a number";
    case json::kind::string: return "a string";
    case json::kind::array: return "an array";
    case json::kind::object: return "an object";
  }
  return "a value";
}

/// Reads the members of one JSON object, recording the first problem with its field name.
/// Strict objects (what clients send) also reject members they do not know.
class object_reader {
 public:
  object_reader(const json::object& o, std::string_view where, const decode_limits& limits,
                std::string& error)
      : o_(o), where_(where), limits_(limits), error_(error) {}

  bool ok() const { return error_.empty(); }

  const json::value* find(std::string_view key) { return o_.if_contains(key); }

  bool fail(std::string_view key, std::string_view problem) {
    if (error_.empty()) {
      error_.append(where_);
      if (!key.empty()) error_.append(": field \"").append(key).append("\"");
      error_.append(": ").append(problem);
    }
    return false;
  }

  bool wrong_type(std::string_view key, const json::value& v, std::string_view expected) {
    return fail(key, std::string("expected ").append(expected).append(", got ").append(
                         kind_name(v)));
  }

  bool string(std::string_view key, std::string& out, std::size_t max_bytes, bool required = true) {
    const json::value* v = find(key);
    if (!v) return required ? fail(key, "missing") : true;
    if (!v->is_string()) return wrong_type(key, *v, "a string");
    const auto& s = v->get_string();
    if (s.size() > max_bytes) {
      return fail(key, "too long (" + std::to_string(s.size()) + " bytes, at most " +
                           std::to_string(max_bytes) + ")");
    }
    out.assign(s.data(), s.size());
    return true;
  }

  bool text(std::string_view key, std::string& out, bool required = true) {
    return string(key, out, limits_.max_string_bytes, required);
  }
  bool name(std::string_view key, std::string& out, bool required = true) {
    return string(key, out, limits_.max_name_bytes, required);
  }

  bool optional_string(std::string_view key, std::optional<std::string>& out,
                       std::size_t max_bytes) {
    const json::value* v = find(key);
    if (!v || v->is_null()) {
      out.reset();
      return true;
    }
    out.emplace();
    return string(key, *out, max_bytes);
  }

  bool integer(std::string_view key, std::int64_t& out, std::int64_t min, std::int64_t max,
               bool required = true) {
    const json::value* v = find(key);
    if (!v) return required ? fail(key, "missing") : true;
    std::int64_t x;
    if (v->is_int64()) {
      x = v->get_int64();
    } else if (v->is_uint64()) {
      if (v->get_uint64() > static_cast<std::uint64_t>(max)) return fail(key, "out of range");
      x = static_cast<std::int64_t>(v->get_uint64());
    } else {
      return wrong_type(key, *v, "an integer");
    }
    if (x < min || x > max) return fail(key, "out of range");
    out = x;
    return true;
  }

  bool optional_int(std::string_view key, std::optional<int>& out) {
    const json::value* v = find(key);
    if (!v || v->is_null()) {
      out.reset();
      return true;
    }
    std::int64_t x = 0;
    if (!integer(key, x, std::numeric_limits<int>::min(), std::numeric_limits<int>::max())) {
      return false;
    }
    out = static_cast<int>(x);
    return true;
  }

  bool boolean(std::string_view key, bool& out, bool required = true) {
    const json::value* v = find(key);
    if (!v) return required ? fail(key, "missing") : true;
    if (!v->is_bool()) return wrong_type(key, *v, "a boolean");
    out = v->get_bool();
    return true;
  }

  bool string_map(std::string_view key, std::map<std::string, std::string>& out,
                  bool required = true) {
    const json::value* v = find(key);
    if (!v) return required ? fail(key, "missing") : true;
    if (!v->is_object()) return wrong_type(key, *v, "an object");
    const auto& o = v->get_object();
    if (o.size() > limits_.max_items) return fail(key, "too many members");
    out.clear();
    for (const auto& member : o) {
      if (member.key().size() > limits_.max_name_bytes) return fail(key, "a name is too long");
      if (!member.value().is_string()) {
        return fail(key, std::string("\"") + std::string(member.key()) +
                             "\" must be a string, got " + std::string(kind_name(member.value())));
      }
      const auto& s = member.value().get_string();
      if (s.size() > limits_.max_string_bytes) {
        return fail(key, std::string("\"") + std::string(member.key()) + "\" is too long");
      }
      out.emplace(std::string(member.key()), std::string(s.data(), s.size()));
    }
    return true;
  }

  /// For strict objects: every member must have been looked up.
  bool no_unknown_fields(std::initializer_list<std::string_view> known) {
    for (const auto& member : o_) {
      bool found = false;
      for (auto k : known) found = found || member.key() == k;
      if (!found) return fail("", "unknown field \"" + std::string(member.key()) + "\"");
    }
    return true;
  }

 private:
  const json::object& o_;
  std::string_view where_;
  const decode_limits& limits_;
  std::string& error_;
};

/// Parses `text` into a value held by `resource`, enforcing the size and depth limits.
bool parse_json(std::string_view text, const decode_limits& limits, json::value& out,
                json::monotonic_resource& resource, std::string& error) {
  if (text.size() > limits.max_message_bytes) {
    error = "message too large (" + std::to_string(text.size()) + " bytes, at most " +
            std::to_string(limits.max_message_bytes) + ")";
    return false;
  }
  json::parse_options opts;
  opts.max_depth = limits.max_depth;
  boost::system::error_code ec;
  out = json::parse(text, ec, &resource, opts);
  if (ec) {
    error = "malformed JSON: " + ec.message();
    return false;
  }
  return true;
}

/// Parses `text`, checks it is an object and hands it to `read`, which fills a T.
template <class T, class Read>
result<T> decode_object(std::string_view text, const decode_limits& limits, std::string_view what,
                        Read&& read) {
  unsigned char buffer[4096];
  json::monotonic_resource resource(buffer, sizeof buffer);
  json::value v;
  std::string error;
  if (!parse_json(text, limits, v, resource, error)) return failure{std::move(error)};
  if (!v.is_object()) return failure{std::string(what) + ": expected a JSON object"};
  T out{};
  object_reader r(v.get_object(), what, limits, error);
  if (!read(r, out) || !r.ok()) return failure{std::move(error)};
  return out;
}

template <class T, class Read>
result<std::vector<T>> decode_array(std::string_view text, const decode_limits& limits,
                                    std::string_view what, Read&& read) {
  unsigned char buffer[4096];
  json::monotonic_resource resource(buffer, sizeof buffer);
  json::value v;
  std::string error;
  if (!parse_json(text, limits, v, resource, error)) return failure{std::move(error)};
  if (!v.is_array()) return failure{std::string(what) + ": expected a JSON array"};
  const auto& items = v.get_array();
  if (items.size() > limits.max_items) return failure{std::string(what) + ": too many items"};
  std::vector<T> out;
  out.reserve(items.size());
  for (std::size_t i = 0; i < items.size(); ++i) {
    const std::string where = std::string(what) + "[" + std::to_string(i) + "]";
    if (!items[i].is_object()) return failure{where + ": expected a JSON object"};
    object_reader r(items[i].get_object(), where, limits, error);
    T item{};
    if (!read(r, item) || !r.ok()) return failure{std::move(error)};
    out.push_back(std::move(item));
  }
  return out;
}

constexpr std::int64_t max_seq = std::numeric_limits<std::int64_t>::max();

bool read_run_request(object_reader& r, run_request& out) {
  return r.name("action_type", out.action_type) && r.string_map("params", out.params, false) &&
         r.optional_string("command", out.command, 65536);
}

bool read_counts(object_reader& r, batch_counts& out) {
  const json::value* c = r.find("counts");
  if (!c) return r.fail("counts", "missing");
  if (!c->is_object()) return r.wrong_type("counts", *c, "an object");
  for (const auto& [name, field] : {std::pair{"queued", &out.queued}, std::pair{"running", &out.running},
                                    std::pair{"succeeded", &out.succeeded}, std::pair{"failed", &out.failed},
                                    std::pair{"cancelled", &out.cancelled}}) {
    const json::value* v = c->get_object().if_contains(name);
    if (!v || !v->is_int64() || v->get_int64() < 0) return r.fail("counts", std::string(name) + " must be a count");
    *field = v->get_int64();
  }
  return true;
}

bool read_event(object_reader& r, event& out) {
  std::string type;
  if (!r.name("type", type)) return false;
  if (type == "stdout" || type == "stderr") {
    output_event e;
    e.stream = type == "stdout" ? output_stream::out : output_stream::err;
    if (!r.integer("seq", e.seq, 0, max_seq) || !r.text("data", e.data) || !r.integer("t", e.t, 0, max_seq, false)) {
      return false;
    }
    out = std::move(e);
    return true;
  }
  if (type == "started") {
    started_event e;
    if (!r.integer("seq", e.seq, 0, max_seq) || !r.name("execution_id", e.execution_id) ||
        !r.name("machine_id", e.machine_id) || !r.name("action_type", e.action_type) ||
        !r.text("command", e.command) || !r.name("started_at", e.started_at)) {
      return false;
    }
    out = std::move(e);
    return true;
  }
  if (type == "progress") {
    progress_event e;
    if (!r.integer("seq", e.seq, 0, max_seq)) return false;
    const json::value* p = r.find("percent");
    if (!p) return r.fail("percent", "missing");
    if (!p->is_null()) {
      if (!p->is_number()) return r.wrong_type("percent", *p, "a number or null");
      const double x = p->to_number<double>();
      if (!(x >= 0.0 && x <= 100.0)) return r.fail("percent", "out of range");
      e.percent = x;
    }
    if (!r.text("phase", e.phase) || !r.integer("t", e.t, 0, max_seq, false)) return false;
    out = std::move(e);
    return true;
  }
  if (type == "exit") {
    exit_event e;
    std::string state;
    if (!r.integer("seq", e.seq, 0, max_seq) || !r.optional_int("data", e.code) ||
        !r.optional_string("signal", e.signal, 64) || !r.name("state", state) ||
        !r.integer("duration_ms", e.duration_ms, 0, max_seq)) {
      return false;
    }
    const auto s = parse_exit_state(state);
    if (!s) return r.fail("state", "unknown exit state \"" + state + "\"");
    e.state = *s;
    out = std::move(e);
    return true;
  }
  if (type == "gap") {
    gap_event e;
    if (!r.integer("seq", e.seq, 0, max_seq) || !r.integer("missed_from", e.missed_from, 0, max_seq) ||
        !r.integer("missed_to", e.missed_to, 0, max_seq)) {
      return false;
    }
    if (e.missed_to < e.missed_from) return r.fail("missed_to", "before missed_from");
    out = e;
    return true;
  }
  if (type == "watchers") {
    watchers_event e;
    if (!r.integer("count", e.count, 0, max_seq)) return false;
    out = e;
    return true;
  }
  if (type == "queued") {
    queued_event e;
    if (!r.integer("position", e.position, 1, max_seq)) return false;
    out = e;
    return true;
  }
  if (type == "awaiting_approval") {
    awaiting_approval_event e;
    if (!r.name("requested_by", e.requested_by) || !r.name("expires_at", e.expires_at)) return false;
    out = std::move(e);
    return true;
  }
  if (type == "batch") {
    batch_event e;
    if (!r.name("batch_id", e.batch_id) || !r.name("state", e.state) || !read_counts(r, e.counts)) return false;
    out = std::move(e);
    return true;
  }
  if (type == "error") {
    error_event e;
    std::string code;
    if (!r.name("code", code) || !r.text("error", e.message)) return false;
    const auto c = parse_error_code(code);
    if (!c) return r.fail("code", "unknown error code \"" + code + "\"");
    e.code = *c;
    out = std::move(e);
    return true;
  }
  return r.fail("type", "unknown event type \"" + type + "\"");
}

bool read_record(object_reader& r, execution_record& out) {
  return r.name("execution_id", out.execution_id) && r.name("machine_id", out.machine_id) &&
         r.name("action_type", out.action_type) && r.text("command", out.command) &&
         r.string_map("params", out.params) && r.name("user", out.user) &&
         r.name("state", out.state) && r.optional_int("exit_code", out.exit_code) &&
         r.optional_string("signal", out.signal, 64) && r.name("started_at", out.started_at) &&
         r.optional_string("ended_at", out.ended_at, 64) &&
         r.integer("bytes_stdout", out.bytes_stdout, 0, max_seq) &&
         r.integer("bytes_stderr", out.bytes_stderr, 0, max_seq) &&
         r.boolean("output_truncated", out.output_truncated) &&
         r.integer("watchers", out.watchers, 0, max_seq) &&
         r.optional_string("approved_by", out.approved_by, 256) &&
         r.optional_string("approved_at", out.approved_at, 64);
}

}  // namespace

decode_limits client_message_limits() {
  decode_limits l;
  l.max_message_bytes = 64u << 10;
  l.max_depth = 4;
  l.max_string_bytes = 4096;
  l.max_name_bytes = 128;
  l.max_items = 64;
  return l;
}

result<client_message> decode_client_message(std::string_view text, const decode_limits& limits) {
  return decode_object<client_message>(
      text, limits, "request", [](object_reader& r, client_message& out) {
        const json::value* t = r.find("type");
        if (t && !t->is_string()) return r.wrong_type("type", *t, "a string");
        const std::string_view type = t ? std::string_view(t->get_string()) : "run";
        if (type == "cancel") {
          out = cancel_request{};
          return r.no_unknown_fields({"type"});
        }
        if (type != "run") {
          return r.fail("type", "unknown message type \"" + std::string(type) +
                                    "\" (expected \"run\" or \"cancel\")");
        }
        run_request req;
        if (!read_run_request(r, req)) return false;
        out = std::move(req);
        return r.no_unknown_fields({"type", "action_type", "params", "command"});
      });
}

result<group_run_request> decode_group_run_request(std::string_view text, const decode_limits& limits) {
  return decode_object<group_run_request>(text, limits, "request", [](object_reader& r, group_run_request& out) {
    const json::value* t = r.find("type");
    if (t && (!t->is_string() || t->get_string() != "run")) return r.fail("type", "must be \"run\" when present");
    std::int64_t parallel = 0;
    if (!read_run_request(r, out.run) || !r.integer("parallel", parallel, 1, 100000, false) ||
        !r.boolean("stop_on_failure", out.stop_on_failure, false)) {
      return false;
    }
    if (r.find("parallel") && !r.find("parallel")->is_null()) out.parallel = parallel;
    if (const json::value* m = r.find("machines")) {
      if (!m->is_array()) return r.wrong_type("machines", *m, "an array of machine ids");
      if (m->get_array().empty()) return r.fail("machines", "names no machine (leave it out for all of the group)");
      for (const auto& id : m->get_array()) {
        if (!id.is_string() || id.get_string().empty() || id.get_string().size() > 128) {
          return r.fail("machines", "expected machine ids");
        }
        out.machines.emplace_back(id.get_string());
      }
    }
    return r.no_unknown_fields({"type", "action_type", "params", "command", "parallel", "stop_on_failure", "machines"});
  });
}

result<tagged_event> decode_tagged_event(std::string_view text, const decode_limits& limits) {
  return decode_object<tagged_event>(text, limits, "event", [](object_reader& r, tagged_event& out) {
    return read_event(r, out.e) && r.name("execution_id", out.execution_id, false) &&
           r.name("machine_id", out.machine_id, false);
  });
}

static bool read_batch(object_reader& r, batch_record& out, const decode_limits& limits) {
  std::int64_t parallel = 0;
  if (!r.name("batch_id", out.batch_id) || !r.name("group", out.group) || !r.name("action_type", out.action_type) ||
      !r.string_map("params", out.params) || !r.name("user", out.user) || !r.name("started_at", out.started_at) ||
      !r.optional_string("ended_at", out.ended_at, 64) || !r.name("state", out.state) ||
      !r.boolean("stop_on_failure", out.stop_on_failure) || !read_counts(r, out.counts)) {
    return false;
  }
  if (const json::value* p = r.find("parallel"); p && !p->is_null()) {
    if (!r.integer("parallel", parallel, 1, 100000)) return false;
    out.parallel = parallel;
  }
  const json::value* list = r.find("executions");
  if (!list) return r.fail("executions", "missing");
  if (!list->is_array()) return r.wrong_type("executions", *list, "an array");
  std::string error;
  for (const auto& item : list->get_array()) {
    if (!item.is_object()) return r.fail("executions", "expected objects");
    object_reader mr(item.get_object(), "batch execution", limits, error);
    batch_member m;
    if (!mr.name("machine_id", m.machine_id) || !mr.name("execution_id", m.execution_id) || !mr.name("state", m.state) ||
        !mr.optional_int("exit_code", m.exit_code)) {
      return r.fail("executions", error);
    }
    if (const json::value* p = mr.find("progress"); p && p->is_number()) m.progress = p->to_number<double>();
    out.executions.push_back(std::move(m));
  }
  return true;
}

result<batch_record> decode_batch_record(std::string_view text, const decode_limits& limits) {
  return decode_object<batch_record>(text, limits, "batch",
                                     [&limits](object_reader& r, batch_record& out) { return read_batch(r, out, limits); });
}

result<std::vector<batch_record>> decode_batch_records(std::string_view text, const decode_limits& limits) {
  return decode_array<batch_record>(text, limits, "batches",
                                    [&limits](object_reader& r, batch_record& out) { return read_batch(r, out, limits); });
}

result<run_request> decode_run_request(std::string_view text, const decode_limits& limits) {
  auto m = decode_client_message(text, limits);
  if (!m) return failure{m.error()};
  if (!std::holds_alternative<run_request>(*m)) {
    return failure{"request: expected a run request, got a cancel"};
  }
  return std::get<run_request>(std::move(*m));
}

result<event> decode_event(std::string_view text, const decode_limits& limits) {
  return decode_object<event>(text, limits, "event", read_event);
}

result<poll_response> decode_poll_response(std::string_view text, const decode_limits& limits) {
  return decode_object<poll_response>(
      text, limits, "poll response", [&limits](object_reader& r, poll_response& out) {
        const json::value* evs = r.find("events");
        if (!evs) return r.fail("events", "missing");
        if (!evs->is_array()) return r.wrong_type("events", *evs, "an array");
        if (evs->get_array().size() > limits.max_items) return r.fail("events", "too many items");
        std::string error;
        for (std::size_t i = 0; i < evs->get_array().size(); ++i) {
          const auto& item = evs->get_array()[i];
          const std::string where = "events[" + std::to_string(i) + "]";
          if (!item.is_object()) return r.fail("", where + ": expected a JSON object");
          object_reader er(item.get_object(), where, limits, error);
          event e;
          if (!read_event(er, e) || !er.ok()) return r.fail("", error);
          out.events.push_back(std::move(e));
        }
        return r.integer("next", out.next, -1, max_seq) && r.boolean("done", out.done);
      });
}

result<run_accepted> decode_run_accepted(std::string_view text, const decode_limits& limits) {
  return decode_object<run_accepted>(text, limits, "answer", [](object_reader& r, run_accepted& out) {
    return r.name("execution_id", out.execution_id);
  });
}

result<std::vector<machine_info>> decode_machines(std::string_view text,
                                                  const decode_limits& limits) {
  return decode_array<machine_info>(
      text, limits, "machines", [&limits](object_reader& r, machine_info& out) {
        if (!r.name("id", out.id) || !r.text("name", out.name)) return false;
        const json::value* actions = r.find("actions");
        if (!actions) return r.fail("actions", "missing");
        if (!actions->is_array()) return r.wrong_type("actions", *actions, "an array");
        std::string error;
        for (const auto& item : actions->get_array()) {
          if (!item.is_object()) return r.fail("actions", "expected objects");
          object_reader ar(item.get_object(), "action", limits, error);
          action_info a;
          if (!ar.name("name", a.name) || !ar.string_map("params", a.params) ||
              !ar.optional_string("progress", a.progress, limits.max_name_bytes) ||
              !ar.boolean("exclusive", a.exclusive, false) || !ar.boolean("approval", a.approval, false)) {
            return r.fail("actions", error);
          }
          if (const json::value* secret = ar.find("secret_params")) {
            if (!secret->is_array()) return r.fail("actions", "secret_params must be an array of names");
            for (const auto& name : secret->get_array()) {
              if (!name.is_string()) return r.fail("actions", "secret_params must be an array of names");
              a.secret_params.emplace_back(name.get_string());
            }
          }
          out.actions.push_back(std::move(a));
        }
        if (const json::value* groups = r.find("groups")) {
          if (!groups->is_array()) return r.wrong_type("groups", *groups, "an array");
          for (const auto& g : groups->get_array()) {
            if (!g.is_string()) return r.fail("groups", "expected group ids");
            out.groups.emplace_back(g.get_string());
          }
        }
        return true;
      });
}

result<execution_record> decode_execution_record(std::string_view text,
                                                 const decode_limits& limits) {
  return decode_object<execution_record>(text, limits, "execution", read_record);
}

result<std::vector<execution_record>> decode_execution_records(std::string_view text,
                                                               const decode_limits& limits) {
  return decode_array<execution_record>(text, limits, "executions", read_record);
}

}  // namespace cmdcast::common
