// The ImGui UI over client_app, the same in the browser and on the desktop: machines and their
// actions (params checked against the server's patterns, Run for operators), running and
// recent executions, and the watched one: its live output (ANSI colours, \r lines, stderr in
// its own colour) with follow-tail, find and copy, its progress, state, exit and cancel.
// Keyboard: Ctrl/Cmd+F find (Enter, Shift+Enter, Esc), Ctrl/Cmd+C copy the selection, PgUp,
// PgDn, Home, End. Selection: drag, double-click a word, triple-click a line, shift-click.
// A time column (off, elapsed since the start, wall clock); line links (#/executions/ID/L5-L9)
// scroll to and highlight their lines, and a line's context menu (right-click, or a long press
// on a phone) copies a link to it. Download .log (plain text or with colours). Queued and
// awaiting-approval executions say so, with Approve and Reject for the operators who may.
// Fleet runs: GROUPS under the machines run an action on a group (parallel, stop on failure);
// a batch shows a grid (a row per machine: state, progress, exit, duration, last line) with
// filters, Cancel batch and Re-run on failed machines, and a machine's output beside it.
// Under about 700 CSS px the layout is one column: the lists, or the output with a way back.
#pragma once

#include <functional>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <imgui.h>

#include "app/client_app.hpp"

namespace cmdcast::client {

class ui {
 public:
  explicit ui(client_app& app) : app_(app) {}
  /// Draws one frame over the whole display.
  void draw();
  /// Where "Copy output" puts text (the web shell uses the browser's clipboard).
  std::function<void(const std::string&)> copy_text;
  /// The full URL of a route ("#/executions/ID/L5"), for "Copy link to this line".
  std::function<std::string(const std::string& route)> link_for;
  /// Downloads the watched execution's output: "text" or "ansi".
  std::function<void(const std::string& format)> download;
  /// The user started watching something (Run, or a pick from the list): a user gesture, when
  /// the browser may ask for the notification permission.
  std::function<void()> on_user_watch;
  /// A message for the status bar (a download saved), shown for a few seconds.
  void flash(std::string message) {
    flash_ = std::move(message);
    flash_until_ = ImGui::GetTime() + 6.0;
  }
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
  /// Whether the find field has the keyboard.
  bool find_focused() const { return find_focused_; }
  /// The selected output as plain text (what Copy puts on the clipboard); empty when nothing
  /// is selected. Costs the size of the selection, and nothing when none.
  std::string selection_text() const;
  /// The output lines on screen in the last frame, [first, end), for the page's mirror of them.
  std::pair<std::size_t, std::size_t> visible_lines() const { return visible_; }
  /// Light colours (the browser's prefers-color-scheme), or dark.
  void set_light(bool light);
  bool light() const { return light_; }
  /// Whether the last frame was laid out in one column (a narrow screen).
  bool narrow() const { return narrow_; }
  /// Scrolls the output by `pixels` (down when positive) at the next frame: a finger's swipe
  /// and its momentum, which the shell measures itself.
  void scroll_output(float pixels) { pending_scroll_ += pixels; }
  /// The time column: none, the time since the start (+MM:SS.mmm), or the wall clock.
  enum class time_column { off, elapsed, clock };
  time_column time_mode() const { return time_mode_; }
  void set_time_mode(time_column m) { time_mode_ = m; }
  /// The time column's text for a line's `t` (empty when the column is off).
  std::string time_label(std::int64_t t) const;
  /// What the UI (beyond client_app) shows, as JSON fields to add to client_app::state_json():
  /// ",\"follow_tail\":...,\"items\":{...}" (items in pixels / pixel_ratio).
  std::string state_fields(float pixel_ratio) const;

 private:
  void draw_status_bar();
  void draw_token_prompt();
  void draw_machines();
  /// The right side: the shown batch's grid (with a machine's output), or the watched execution.
  void draw_main();
  void draw_groups();
  void draw_group_action(const std::string& group, const common::action_info& a);
  void draw_batch();
  void draw_batch_grid(const std::vector<batch_row>& rows);
  void draw_action(const common::machine_info& m, const common::action_info& a);
  void draw_executions();
  void draw_execution();
  void draw_output(const common::execution_view& v);
  void find_next(const common::execution_view& v, int direction);
  /// Keys that act on the output from anywhere but a text field: copy, scrolling, find.
  void handle_keys();
  /// Mouse selection in the output: `origin` is where line 0 starts on screen.
  void handle_selection(const common::execution_view& v, ImVec2 origin, float line_height);
  /// Remembers the last item's rectangle under `name` (see items_json).
  void remember_item(const std::string& name);
  void draw_execution_state(const common::execution_view& v);
  void draw_line_menu(const common::execution_view& v);

  client_app& app_;
  std::map<std::string, std::string> param_values_;  // "machine/action/param" -> value ("@group/...")
  std::string selected_group_;
  struct group_options {
    int parallel = 0;  // 0: all at once
    bool stop_on_failure = false;
  };
  std::map<std::string, group_options> group_options_;  // "group/action" ->
  char token_buffer_[256] = {};
  char find_buffer_[256] = {};
  std::string shown_execution_;
  bool follow_tail_ = true;
  std::vector<std::size_t> find_matches_;
  std::string find_for_;       // what find_matches_ are for
  std::uint64_t find_version_ = 0;  // the transcript version they were found in
  int find_current_ = -1;
  long scroll_to_line_ = -1;
  bool focus_find_ = false, find_focused_ = false;
  /// A place in the output: a line and a byte offset in its text.
  struct text_position {
    std::size_t line = 0, column = 0;
    auto operator<=>(const text_position&) const = default;
  };
  std::optional<text_position> anchor_, cursor_;  // the selection, when both are set
  bool selecting_ = false;                        // the mouse is dragging a selection
  enum class scroll_key { none, page_up, page_down, home, end };
  scroll_key scroll_key_ = scroll_key::none;
  float pending_scroll_ = 0;
  std::pair<std::size_t, std::size_t> visible_{0, 0};
  bool light_ = false, narrow_ = false;
  bool narrow_shows_output_ = false;  // in one column: the output (else the lists)
  std::string narrow_opened_;         // the execution last opened
  struct rect {
    float x, y, w, h;
  };
  std::map<std::string, rect> items_;
  time_column time_mode_ = time_column::off;
  float gutter_ = 0;                  // the time column's width, this frame
  std::size_t menu_line_ = 0;         // the line the context menu is for (a transcript index)
  std::uint64_t link_scrolls_done_ = 0;  // client_app::line_link_scrolls() already acted on
  std::string flash_;
  double flash_until_ = 0;
};

}  // namespace cmdcast::client
