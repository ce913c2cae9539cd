#include "exec/event_frame.hpp"

#include "cmdcast/common/codec.hpp"
#include "support/deflate.hpp"

namespace cmdcast::server {

const std::shared_ptr<const std::string>& event_frame::deflated() const {
  if (!deflated_) deflated_ = std::make_shared<const std::string>(deflate_message(*text_));
  return deflated_;
}

const std::shared_ptr<const std::string>& event_frame::tagged(std::string_view execution_id,
                                                             std::string_view machine_id) const {
  if (!tagged_) tagged_ = std::make_shared<const std::string>(common::tag_event(*text_, execution_id, machine_id));
  return tagged_;
}

}  // namespace cmdcast::server
