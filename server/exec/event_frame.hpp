// An event as its watchers get it: serialised once for all of them, compressed once
// (permessage-deflate, support/deflate.hpp) by the first watcher that negotiated compression,
// and tagged once with its execution by the first batch watcher.
// Used on the server's single-threaded executor only.
#pragma once

#include <memory>
#include <string>
#include <string_view>

namespace cmdcast::server {

class event_frame {
 public:
  explicit event_frame(std::string json) : text_(std::make_shared<const std::string>(std::move(json))) {}
  /// The JSON text, shareable into write queues.
  const std::shared_ptr<const std::string>& text() const { return text_; }
  std::size_t size() const { return text_->size(); }
  /// The text compressed, made on the first call.
  const std::shared_ptr<const std::string>& deflated() const;
  /// The text with its execution and machine added, as a batch stream sends it; made on the
  /// first call (a frame is one execution's: the ids are always the same).
  const std::shared_ptr<const std::string>& tagged(std::string_view execution_id, std::string_view machine_id) const;

 private:
  std::shared_ptr<const std::string> text_;
  mutable std::shared_ptr<const std::string> deflated_;
  mutable std::shared_ptr<const std::string> tagged_;
};

using frame = std::shared_ptr<const event_frame>;
inline frame make_frame(std::string json) { return std::make_shared<const event_frame>(std::move(json)); }

}  // namespace cmdcast::server
