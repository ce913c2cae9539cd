// The ImGui UI over client_app, the same in the browser and on the desktop: machines and their
// actions (params checked against the server's patterns, Run for operators), running and
// recent executions, and the watched one: its live output (ANSI colours, \r lines, stderr in
// its own colour) with follow-tail, find and copy, its progress, state, exit and cancel.
#pragma once

#include <functional>
#include <map>
#include <string>
#include <vector>

#include "app/client_app.hpp"

namespace cmdcast::client {

class ui {
 public:
  explicit ui(client_app& app) : app_(app) {}
  /// Draws one frame over the whole display.
  void draw();
  /// Where "Copy output" puts text (the web shell uses the browser's clipboard).
  std::function<void(const std::string&)> copy_text;
  /// UI scale (HiDPI): sizes in the layout are multiplied by it.
  float scale = 1.0f;
  /// Where the main controls were drawn in the last frame, as JSON {"name": [x, y, w, h]} in
  /// pixels of the display: tests click the real buttons through it.
  std::string items_json(float pixel_ratio) const;
  /// Whether the output follows its tail (the user has not scrolled up).
  bool following() const { return follow_tail_; }
  /// Find in output: how many lines match, and which one is shown (-1: none).
  std::size_t find_matches() const { return find_matches_.size(); }
  int find_current() const { return find_current_; }

 private:
  void draw_status_bar();
  void draw_token_prompt();
  void draw_machines();
  void draw_action(const common::machine_info& m, const common::action_info& a);
  void draw_executions();
  void draw_execution();
  void draw_output(const common::execution_view& v);
  void find_next(const common::execution_view& v, int direction);
  /// Remembers the last item's rectangle under `name` (see items_json).
  void remember_item(const std::string& name);

  client_app& app_;
  std::map<std::string, std::string> param_values_;  // "machine/action/param" -> value
  char token_buffer_[256] = {};
  char find_buffer_[256] = {};
  std::string shown_execution_;
  bool follow_tail_ = true;
  std::vector<std::size_t> find_matches_;
  std::string find_for_;       // what find_matches_ are for
  std::uint64_t find_version_ = 0;  // the transcript version they were found in
  int find_current_ = -1;
  long scroll_to_line_ = -1;
  struct rect {
    float x, y, w, h;
  };
  std::map<std::string, rect> items_;
};

}  // namespace cmdcast::client
