// Fuzzes the strict decoders: no input may crash them, and whatever they accept must encode and
// decode back to the same value.
#include <cstdint>
#include <string_view>

#include "cmdcast/common/codec.hpp"

#include "fuzz_check.hpp"

using namespace cmdcast::common;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);

  if (auto e = decode_event(text); e.ok()) {
    auto back = decode_event(encode(*e));
    check(back.ok());
    // Percent is encoded with one decimal: compare what a client would see.
    if (auto* p = std::get_if<progress_event>(&*e)) {
      auto* q = std::get_if<progress_event>(&*back);
      check(q && q->phase == p->phase && q->percent.has_value() == p->percent.has_value());
    } else {
      check(*back == *e);
    }
  }
  if (auto m = decode_client_message(text); m.ok()) {
    auto back = decode_client_message(encode(*m));
    check(back.ok() && *back == *m);
  }
  if (auto p = decode_poll_response(text); p.ok()) check(decode_poll_response(encode(*p)).ok());
  if (auto r = decode_execution_record(text); r.ok()) {
    auto back = decode_execution_record(encode(*r));
    check(back.ok() && *back == *r);
  }
  if (auto ms = decode_machines(text); ms.ok()) {
    auto back = decode_machines(encode(*ms));
    check(back.ok() && *back == *ms);
  }
  return 0;
}
