// Socket writes gathered during one fan-out and made together, part of them on helper
// threads. On loopback (and much the same on a NIC) a small send costs the sender most of a
// line's delivery, so one line to 1000 watchers is mostly kernel time in sendmsg (and on TLS,
// encryption); spread over the cores it takes a fraction of it. Only each writer's
// write_some() runs on the helpers, while the opening thread waits for the batch: what was
// written is handed back to each writer on the opening thread once all of them are done.
#pragma once

#include <sys/types.h>
#include <sys/uio.h>

#include <cstddef>
#include <memory>
#include <vector>

namespace cmdcast::server {

class send_batch {
 public:
  /// A writer whose sends can be batched: told on the opening thread what one send did.
  class writer {
   public:
    virtual ~writer() = default;
    /// Writes what it can of `parts` without waiting: bytes taken, or -1 with errno. Called on
    /// any thread of the batch, while the opening thread waits for it: it must touch only this
    /// writer's own state.
    virtual ssize_t write_some(const iovec* parts, std::size_t count) = 0;
    /// `written` bytes went out (possibly fewer than asked), `error` is errno or 0.
    virtual void sent(std::size_t written, int error) = 0;
  };

  /// Opens the batch on this thread: until it closes, writers add their sends to it.
  send_batch();
  /// Makes the sends (in parallel when there are many) and reports each to its writer.
  ~send_batch();
  send_batch(const send_batch&) = delete;
  send_batch& operator=(const send_batch&) = delete;

  /// The batch open on this thread, or null.
  static send_batch* open();

  /// One write_some of `parts` by `w`; the buffers must stay valid until `w` is told.
  void add(std::shared_ptr<writer> w, const iovec* parts, std::size_t count);

  struct job {
    std::shared_ptr<writer> owner;
    iovec parts[2]{};
    std::size_t count = 0;
    ssize_t result = 0;
    int error = 0;
  };

 private:
  std::vector<job> jobs_;
  send_batch* outer_;
};

}  // namespace cmdcast::server
