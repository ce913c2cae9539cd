// An event as its watchers get it: serialised once for all of them, and compressed once
// (permessage-deflate, support/deflate.hpp) by the first watcher that negotiated compression.
// Used on the server's single-threaded executor only.
#pragma once

#include <memory>
#include <string>

namespace cmdcast::server {

class event_frame {
 public:
  explicit event_frame(std::string json) : text_(std::make_shared<const std::string>(std::move(json))) {}
  /// The JSON text, shareable into write queues.
  const std::shared_ptr<const std::string>& text() const { return text_; }
  std::size_t size() const { return text_->size(); }
  /// The text compressed, made on the first call.
  const std::shared_ptr<const std::string>& deflated() const;

 private:
  std::shared_ptr<const std::string> text_;
  mutable std::shared_ptr<const std::string> deflated_;
};

using frame = std::shared_ptr<const event_frame>;
inline frame make_frame(std::string json) { return std::make_shared<const event_frame>(std::move(json)); }

}  // namespace cmdcast::server
