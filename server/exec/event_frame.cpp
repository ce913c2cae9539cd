#include "exec/event_frame.hpp"

#include "support/deflate.hpp"

namespace cmdcast::server {

const std::shared_ptr<const std::string>& event_frame::deflated() const {
  if (!deflated_) deflated_ = std::make_shared<const std::string>(deflate_message(*text_));
  return deflated_;
}

}  // namespace cmdcast::server
