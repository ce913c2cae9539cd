// When waiting output goes out as an event. A lone line after a quiet spell goes at once (a
// watcher should see it without delay); output that follows within `delay` of the last send
// waits for the rest of that window, or until `max_bytes` wait, so a chatty command becomes
// about one event per window rather than a storm of tiny frames.
#pragma once

#include <chrono>
#include <cstddef>

namespace cmdcast::server {

class coalescer {
 public:
  using clock = std::chrono::steady_clock;

  coalescer(std::size_t max_bytes, clock::duration delay) : max_bytes_(max_bytes), delay_(delay) {}

  /// With `waiting` bytes now waiting: send them at once (true), or wait for send_at().
  bool send_now(std::size_t waiting, clock::time_point now) const {
    return waiting >= max_bytes_ || now - last_sent_ >= delay_;
  }
  /// When the waiting output is due when send_now() said wait.
  clock::time_point send_at() const { return last_sent_ + delay_; }
  /// Output went out at `now`.
  void sent(clock::time_point now) { last_sent_ = now; }

 private:
  std::size_t max_bytes_;
  clock::duration delay_;
  clock::time_point last_sent_{};
};

}  // namespace cmdcast::server
