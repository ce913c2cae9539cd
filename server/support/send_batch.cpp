#include "support/send_batch.hpp"


#include <algorithm>
#include <cerrno>
#include <condition_variable>
#include <mutex>
#include <thread>

namespace cmdcast::server {
namespace {

// Fewer sends than this are made at once on the opening thread: handing them over would cost
// more than it saves.
constexpr std::size_t parallel_from = 64;

thread_local send_batch* current = nullptr;

void make(send_batch::job* begin, send_batch::job* end) {
  for (auto* j = begin; j != end; ++j) {
    j->result = j->owner->write_some(j->parts, j->count);
    j->error = j->result < 0 ? errno : 0;
  }
}

/// Helper threads (one fewer than the cores, at most 3), each given a share of a batch.
class helpers {
 public:
  static helpers& get() {
    static helpers h;
    return h;
  }
  std::size_t count() const { return threads_.size(); }

  /// Makes the sends of [begin, end): a share on each helper, the rest on this thread.
  void run(send_batch::job* begin, send_batch::job* end) {
    const auto n = static_cast<std::size_t>(end - begin);
    const std::size_t shares = threads_.size() + 1;
    const std::size_t each = (n + shares - 1) / shares;
    {
      std::lock_guard lock(mutex_);
      for (std::size_t i = 0; i < threads_.size(); ++i) {
        work_[i] = {begin + std::min(n, (i + 1) * each), begin + std::min(n, (i + 2) * each)};
      }
      pending_ = threads_.size();
      ++generation_;
    }
    wake_.notify_all();
    make(begin, begin + std::min(n, each));
    std::unique_lock lock(mutex_);
    done_.wait(lock, [this] { return pending_ == 0; });
  }

 private:
  helpers() {
    const unsigned cores = std::max(1u, std::thread::hardware_concurrency());
    const std::size_t n = std::min(3u, cores - 1);
    work_.resize(n);
    for (std::size_t i = 0; i < n; ++i) threads_.emplace_back([this, i] { loop(i); });
  }
  ~helpers() {
    {
      std::lock_guard lock(mutex_);
      stopping_ = true;
    }
    wake_.notify_all();
    for (auto& t : threads_) t.join();
  }

  void loop(std::size_t index) {
    std::uint64_t seen = 0;
    for (;;) {
      std::pair<send_batch::job*, send_batch::job*> share;
      {
        std::unique_lock lock(mutex_);
        wake_.wait(lock, [&] { return stopping_ || generation_ != seen; });
        if (stopping_) return;
        seen = generation_;
        share = work_[index];
      }
      make(share.first, share.second);
      {
        std::lock_guard lock(mutex_);
        --pending_;
      }
      done_.notify_one();
    }
  }

  std::vector<std::thread> threads_;
  std::vector<std::pair<send_batch::job*, send_batch::job*>> work_;
  std::mutex mutex_;
  std::condition_variable wake_, done_;
  std::size_t pending_ = 0;
  std::uint64_t generation_ = 0;
  bool stopping_ = false;
};

}  // namespace

send_batch::send_batch() : outer_(current) { current = this; }

send_batch* send_batch::open() { return current; }

void send_batch::add(std::shared_ptr<writer> w, const iovec* parts, std::size_t count) {
  job j;
  j.owner = std::move(w);
  j.count = std::min<std::size_t>(count, 2);
  std::copy_n(parts, j.count, j.parts);
  jobs_.push_back(std::move(j));
}

send_batch::~send_batch() {
  current = outer_;  // what the writers do next is not part of this batch
  if (jobs_.empty()) return;
  auto* begin = jobs_.data();
  auto* end = begin + jobs_.size();
  if (jobs_.size() >= parallel_from && helpers::get().count() > 0) {
    helpers::get().run(begin, end);
  } else {
    make(begin, end);
  }
  for (auto& j : jobs_) {
    const bool would_block = j.result < 0 && (j.error == EAGAIN || j.error == EWOULDBLOCK);
    j.owner->sent(j.result < 0 ? 0 : static_cast<std::size_t>(j.result), would_block ? 0 : j.error);
  }
}

}  // namespace cmdcast::server
