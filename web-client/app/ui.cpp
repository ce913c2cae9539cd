#include "app/ui.hpp"

#include <imgui.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <regex>

#include "app/presentation.hpp"
#include "cmdcast/common/codec.hpp"

namespace cmdcast::client {
namespace {

/// The colours of one theme: the output's, and those of states and hints.
struct palette {
  std::uint32_t fg, stderr_fg, bg;  // the output's defaults (RGB)
  ImU32 output_bg, find_bg, selection_bg, link_bg, link_bar;
  ImVec4 green, yellow, red, grey;
};
const palette dark_palette{0xD8D8D8,
                               0xFF8A80,
                               0x000000,
                               IM_COL32(16, 16, 18, 255),
                               IM_COL32(90, 80, 20, 255),
                               IM_COL32(38, 79, 120, 255),
                               IM_COL32(58, 46, 18, 255),
                               IM_COL32(230, 170, 40, 255),
                               {0.35f, 0.85f, 0.45f, 1},
                               {0.95f, 0.8f, 0.3f, 1},
                               {1.0f, 0.45f, 0.4f, 1},
                               {0.6f, 0.6f, 0.6f, 1}};
const palette light_palette{0x1E1E1E,
                                0xB71C1C,
                                0xFFFFFF,
                                IM_COL32(252, 252, 252, 255),
                                IM_COL32(255, 226, 110, 255),
                                IM_COL32(173, 214, 255, 255),
                                IM_COL32(255, 244, 200, 255),
                                IM_COL32(200, 130, 0, 255),
                                {0.05f, 0.5f, 0.15f, 1},
                                {0.6f, 0.4f, 0.0f, 1},
                                {0.75f, 0.1f, 0.1f, 1},
                                {0.38f, 0.38f, 0.38f, 1}};
const palette* colours = &dark_palette;  // the theme in force (ui::set_light)

ImU32 to_imgui(std::uint32_t rgb) {
  return IM_COL32((rgb >> 16) & 0xFF, (rgb >> 8) & 0xFF, rgb & 0xFF, 0xFF);
}

/// Whether `value` matches the server's pattern for it (the server checks again).
bool matches(const std::string& pattern, const std::string& value) {
  static std::map<std::string, std::optional<std::regex>> compiled;
  auto it = compiled.find(pattern);
  if (it == compiled.end()) {
    std::optional<std::regex> re;
    try {
      re.emplace(pattern, std::regex::ECMAScript);
    } catch (const std::regex_error&) {
    }
    it = compiled.emplace(pattern, std::move(re)).first;
  }
  return it->second && std::regex_match(value, *it->second);
}

ImVec4 state_colour(std::string_view state) {
  if (state == "running") return colours->yellow;
  if (state == "queued" || state == "awaiting_approval") return colours->grey;
  if (state == "exited") return colours->green;
  return colours->red;
}

std::string duration_text(std::int64_t ms) {
  char buf[64];
  if (ms < 60000) {
    std::snprintf(buf, sizeof buf, "%.1f s", static_cast<double>(ms) / 1000.0);
  } else {
    std::snprintf(buf, sizeof buf, "%lld min %lld s", static_cast<long long>(ms / 60000),
                  static_cast<long long>(ms / 1000 % 60));
  }
  return buf;
}

/// "exit 0", "exit 3", "killed by TERM", with the state when it is not a plain exit.
std::string exit_text(const common::exit_event& e) {
  if (!e.code && !e.signal) return std::string(common::to_string(e.state));  // rejected, expired, ...
  std::string s = e.code ? "exit " + std::to_string(*e.code) : "killed by " + e.signal.value_or("a signal");
  if (e.state != common::exit_state::exited) s += " (" + std::string(common::to_string(e.state)) + ")";
  return s;
}

/// Case-insensitive search of `needle` in `hay`.
bool contains(std::string_view hay, std::string_view needle) {
  return std::search(hay.begin(), hay.end(), needle.begin(), needle.end(), [](char a, char b) {
           return std::tolower(static_cast<unsigned char>(a)) == std::tolower(static_cast<unsigned char>(b));
         }) != hay.end();
}

/// The byte length of the UTF-8 sequence starting with `c` (1 for a stray byte).
std::size_t utf8_length(unsigned char c) {
  return c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 1;
}

float text_width(std::string_view text) { return ImGui::CalcTextSize(text.data(), text.data() + text.size()).x; }

/// The byte offset in `text` nearest to `x` pixels from its start, on a character boundary.
std::size_t column_at(std::string_view text, float x) {
  float width = 0;
  for (std::size_t i = 0; i < text.size();) {
    const std::size_t n = std::min(utf8_length(static_cast<unsigned char>(text[i])), text.size() - i);
    const float w = text_width(text.substr(i, n));
    if (x < width + w / 2) return i;
    width += w;
    i += n;
  }
  return text.size();
}

/// Part of a word, for a double-click: anything but spaces and the brackets and quotes
/// around words in logs.
bool is_word_byte(char c) {
  return !std::isspace(static_cast<unsigned char>(c)) && std::string_view("\"'()[]{}<>,;").find(c) == std::string_view::npos;
}

/// One transcript line: each span in its colours and attributes, over a background (the find
/// highlight or a linked line; 0: none) and the selected part [select_from, select_to)
/// (select_to past the text: to the line's end).
void draw_line(const common::line_view& line, ImU32 background, std::size_t select_from, std::size_t select_to) {
  ImDrawList* draw = ImGui::GetWindowDrawList();
  const ImVec2 start = ImGui::GetCursorScreenPos();
  const float height = ImGui::GetTextLineHeight();
  if (background != 0) {
    const float width = std::max(ImGui::GetContentRegionAvail().x, text_width(line.text));
    draw->AddRectFilled(start, {start.x + width, start.y + height}, background);
  }
  if (select_from < select_to) {
    const float x0 = text_width(line.text.substr(0, std::min(select_from, line.text.size())));
    const float x1 = select_to > line.text.size() ? text_width(line.text) + ImGui::CalcTextSize(" ").x
                                                  : text_width(line.text.substr(0, select_to));
    draw->AddRectFilled({start.x + x0, start.y}, {start.x + x1, start.y + height}, colours->selection_bg);
  }
  if (line.spans.empty()) {
    ImGui::TextUnformatted("");
    return;
  }
  ImVec2 pos = start;
  for (const auto& span : line.spans) {
    const char* b = line.text.data() + span.begin;
    const char* e = line.text.data() + span.end;
    const bool from_stderr = (span.style.flags & common::style_flag::from_stderr) != 0;
    std::uint32_t fg = common::to_rgb(span.style.fg, from_stderr ? colours->stderr_fg : colours->fg);
    std::uint32_t bg = common::to_rgb(span.style.bg, colours->bg);
    const bool has_bg = span.style.bg != common::default_color || (span.style.flags & common::style_flag::inverse);
    if (span.style.flags & common::style_flag::inverse) std::swap(fg, bg);
    if (span.style.flags & common::style_flag::inverse && bg == colours->bg) bg = colours->fg;
    const ImVec2 size = ImGui::CalcTextSize(b, e);
    if (has_bg) draw->AddRectFilled(pos, {pos.x + size.x, pos.y + height}, to_imgui(bg));
    ImU32 colour = to_imgui(fg);
    if (span.style.flags & common::style_flag::dim) colour = (colour & 0x00FFFFFF) | 0x99000000;
    draw->AddText(pos, colour, b, e);
    if (span.style.flags & common::style_flag::bold) draw->AddText({pos.x + 1, pos.y}, colour, b, e);
    if (span.style.flags & common::style_flag::underline) {
      const float y = pos.y + height - 1;
      draw->AddLine({pos.x, y}, {pos.x + size.x, y}, colour);
    }
    pos.x += size.x;
  }
  // Reserve the line's space so scrolling and clipping know it.
  ImGui::Dummy({pos.x - start.x, height});
}

}  // namespace

void ui::remember_item(const std::string& name) {
  const ImVec2 min = ImGui::GetItemRectMin(), max = ImGui::GetItemRectMax();
  items_[name] = {min.x, min.y, max.x - min.x, max.y - min.y};
}

std::string ui::items_json(float pixel_ratio) const {
  std::string s = "{";
  char buf[128];
  for (const auto& [name, r] : items_) {
    if (s.size() > 1) s += ',';
    common::append_json_string(s, name);
    std::snprintf(buf, sizeof buf, ":[%.1f,%.1f,%.1f,%.1f]", r.x / pixel_ratio, r.y / pixel_ratio, r.w / pixel_ratio,
                  r.h / pixel_ratio);
    s += buf;
  }
  return s + "}";
}

void ui::set_light(bool light) {
  if (light == light_) return;
  light_ = light;
  colours = light ? &light_palette : &dark_palette;
  if (light) {
    ImGui::StyleColorsLight();
  } else {
    ImGui::StyleColorsDark();
  }
}

void ui::draw() {
  items_.clear();
  const ImGuiViewport* vp = ImGui::GetMainViewport();
  ImGui::SetNextWindowPos(vp->WorkPos);
  ImGui::SetNextWindowSize(vp->WorkSize);
  ImGui::Begin("cmdcast", nullptr,
               ImGuiWindowFlags_NoDecoration | ImGuiWindowFlags_NoMove | ImGuiWindowFlags_NoSavedSettings |
                   ImGuiWindowFlags_NoBringToFrontOnFocus);
  handle_keys();
  draw_status_bar();
  if (app_.needs_token()) draw_token_prompt();
  ImGui::Separator();
  // A phone: one column, the lists or the output (with a way back), full width.
  narrow_ = vp->WorkSize.x / scale < 700.0f;
  if (!app_.view() && !app_.batch()) narrow_shows_output_ = false;
  // A new execution or batch shown (a run, a deep link, a pick) is what the user wants to see.
  const std::string opened = app_.batch() ? app_.batch()->batch_id() : app_.view() ? app_.view()->execution_id() : "";
  if (!opened.empty() && opened != narrow_opened_) {
    narrow_opened_ = opened;
    narrow_shows_output_ = true;
  }
  if (narrow_ && narrow_shows_output_) {
    if (ImGui::Button("< Back")) narrow_shows_output_ = false;
    remember_item("back");
    ImGui::BeginChild("right", {0, 0}, false);
    draw_main();
    ImGui::EndChild();
  } else if (narrow_) {
    ImGui::BeginChild("left", {0, 0}, false);
    draw_machines();
    ImGui::Spacing();
    draw_executions();
    ImGui::EndChild();
  } else {
    ImGui::BeginChild("left", {340.0f * scale, 0}, false);
    draw_machines();
    ImGui::Spacing();
    draw_executions();
    ImGui::EndChild();
    ImGui::SameLine();
    ImGui::BeginChild("right", {0, 0}, false);
    draw_main();
    ImGui::EndChild();
  }
  ImGui::End();
}

void ui::handle_keys() {
  const ImGuiIO& io = ImGui::GetIO();
  const bool command = io.KeyCtrl || io.KeySuper;  // Ctrl, or Cmd on a Mac
  // Both shells' ImGui backend (GLFW) indexes keys by GLFW's codes, which are ASCII for letters.
  if (command && ImGui::IsKeyPressed('F', false) && app_.view()) {
    focus_find_ = true;
    narrow_shows_output_ = true;
  }
  // Esc leaves the find, even in the frames where it is about to take the keyboard back.
  if (ImGui::IsKeyPressed(ImGui::GetKeyIndex(ImGuiKey_Escape), false)) focus_find_ = false;
  if (io.WantTextInput) return;  // a text field has the keyboard
  if (command && ImGui::IsKeyPressed(ImGui::GetKeyIndex(ImGuiKey_C), false)) {
    if (const auto text = selection_text(); !text.empty()) {
      if (copy_text) {
        copy_text(text);
      } else {
        ImGui::SetClipboardText(text.c_str());
      }
    }
  }
  if (ImGui::IsKeyPressed(ImGui::GetKeyIndex(ImGuiKey_PageUp))) scroll_key_ = scroll_key::page_up;
  if (ImGui::IsKeyPressed(ImGui::GetKeyIndex(ImGuiKey_PageDown))) scroll_key_ = scroll_key::page_down;
  if (ImGui::IsKeyPressed(ImGui::GetKeyIndex(ImGuiKey_Home), false)) scroll_key_ = scroll_key::home;
  if (ImGui::IsKeyPressed(ImGui::GetKeyIndex(ImGuiKey_End), false)) scroll_key_ = scroll_key::end;
}

std::string ui::selection_text() const {
  const auto* v = app_.view();
  if (!v || v->execution_id() != shown_execution_ || !anchor_ || !cursor_ || *anchor_ == *cursor_) return "";
  const auto& out = v->output();
  if (out.size() == 0) return "";
  auto from = std::min(*anchor_, *cursor_), to = std::max(*anchor_, *cursor_);
  if (from.line >= out.size()) return "";
  to.line = std::min(to.line, out.size() - 1);
  std::string text;
  for (std::size_t i = from.line; i <= to.line; ++i) {
    const auto line = out.line(i);
    const std::size_t begin = i == from.line ? std::min(from.column, line.text.size()) : 0;
    const std::size_t end = i == to.line ? std::min(to.column, line.text.size()) : line.text.size();
    if (begin < end) text.append(line.text.substr(begin, end - begin));
    if (i != to.line && !line.wrapped) text += '\n';
  }
  return text;
}

void ui::draw_status_bar() {
  ImGui::TextUnformatted("cmdcast");
  ImGui::SameLine();
  if (!app_.user().empty()) {
    ImGui::TextColored(colours->grey, "%s (%s)", app_.user().c_str(), app_.can_run() ? "operator" : "viewer");
    ImGui::SameLine();
  }
  if (app_.view() && !app_.view()->finished()) {
    switch (app_.mode()) {
      case link_mode::websocket: ImGui::TextColored(colours->green, "live"); break;
      case link_mode::polling: ImGui::TextColored(colours->yellow, "polling (degraded)"); break;
      case link_mode::disconnected: ImGui::TextColored(colours->red, "disconnected: reconnecting..."); break;
    }
    ImGui::SameLine();
  }
  if (!flash_.empty() && ImGui::GetTime() < flash_until_) {
    ImGui::TextColored(colours->grey, "%s", flash_.c_str());
    ImGui::SameLine();
  }
  if (!app_.error().empty()) ImGui::TextColored(colours->red, "%s", app_.error().c_str());
  else ImGui::NewLine();
}

void ui::draw_token_prompt() {
  ImGui::TextUnformatted("Token:");
  ImGui::SameLine();
  ImGui::SetNextItemWidth(300 * scale);
  const bool enter = ImGui::InputText("##token", token_buffer_, sizeof token_buffer_,
                                      ImGuiInputTextFlags_Password | ImGuiInputTextFlags_EnterReturnsTrue);
  remember_item("token");
  ImGui::SameLine();
  const bool use = ImGui::Button("Use token");
  remember_item("use_token");
  if ((use || enter) && token_buffer_[0]) {
    app_.set_token(token_buffer_);
    std::fill(std::begin(token_buffer_), std::end(token_buffer_), '\0');
  }
}

void ui::draw_machines() {
  ImGui::TextColored(colours->grey, "MACHINES");
  for (const auto& m : app_.machines()) {
    const bool selected = m.id == app_.selected_machine();
    if (ImGui::Selectable((m.name + "##" + m.id).c_str(), selected)) app_.select_machine(m.id);
    remember_item("machine:" + m.id);
    if (!selected) continue;
    ImGui::Indent();
    for (const auto& a : m.actions) draw_action(m, a);
    ImGui::Unindent();
  }
  if (app_.machines().empty()) ImGui::TextColored(colours->grey, "(none yet)");
  draw_groups();
}

void ui::draw_main() {
  if (app_.batch()) {
    draw_batch();
  } else {
    draw_execution();
  }
}

void ui::draw_groups() {
  const auto groups = app_.groups();
  if (groups.empty()) return;
  ImGui::Spacing();
  ImGui::TextColored(colours->grey, "GROUPS");
  for (const auto& g : groups) {
    const auto members = app_.group_machines(g);
    const bool selected = g == selected_group_;
    const std::string label = g + "  (" + std::to_string(members.size()) + (members.size() == 1 ? " machine)" : " machines)");
    if (ImGui::Selectable((label + "##group:" + g).c_str(), selected)) selected_group_ = selected ? "" : g;
    remember_item("group:" + g);
    if (!selected) continue;
    ImGui::Indent();
    std::string names;
    for (const auto* m : members) names += (names.empty() ? "" : ", ") + m->name;
    ImGui::PushTextWrapPos(0);
    ImGui::TextColored(colours->grey, "%s", names.c_str());
    ImGui::PopTextWrapPos();
    for (const auto* a : app_.group_actions(g)) draw_group_action(g, *a);
    ImGui::Unindent();
  }
}

void ui::draw_group_action(const std::string& group, const common::action_info& a) {
  ImGui::PushID(("group/" + group + "/" + a.name).c_str());
  const bool open = ImGui::TreeNode(a.name.c_str());
  const std::string key = group + "/" + a.name;
  remember_item("group_action:" + key);
  if (open) {
    bool valid = true;
    std::map<std::string, std::string> params;
    for (const auto& [name, pattern] : a.params) {
      auto& value = param_values_["@" + key + "/" + name];
      char buf[256];
      std::snprintf(buf, sizeof buf, "%s", value.c_str());
      ImGui::SetNextItemWidth(200 * scale);
      if (ImGui::InputText(name.c_str(), buf, sizeof buf)) value = buf;
      remember_item("group_param:" + key + "/" + name);
      if (!matches(pattern, value)) {
        valid = false;
        ImGui::TextColored(value.empty() ? colours->grey : colours->red, "must match %s", pattern.c_str());
      }
      params[name] = value;
    }
    auto& options = group_options_[key];
    ImGui::SetNextItemWidth(100 * scale);
    ImGui::InputInt("parallel", &options.parallel);
    options.parallel = std::max(0, options.parallel);
    remember_item("group_parallel:" + key);
    if (ImGui::IsItemHovered()) ImGui::SetTooltip("at most this many machines at once (0: all)");
    ImGui::Checkbox("stop on failure", &options.stop_on_failure);
    remember_item("group_stop:" + key);
    if (ImGui::IsItemHovered()) ImGui::SetTooltip("once one fails, the machines not started yet are skipped");
    if (app_.can_run()) {
      ImGui::BeginDisabled(!valid);
      if (ImGui::Button(("Run on " + group).c_str())) {
        app_.run_group(group, a.name, params, options.parallel > 0 ? std::optional<std::int64_t>(options.parallel) : std::nullopt,
                       options.stop_on_failure);
        narrow_shows_output_ = true;
        if (on_user_watch) on_user_watch();
      }
      remember_item("group_run:" + key);
      ImGui::EndDisabled();
    } else {
      ImGui::TextColored(colours->grey, "running on a group needs the operator role");
    }
    ImGui::TreePop();
  }
  ImGui::PopID();
}

void ui::draw_batch() {
  const auto* b = app_.batch();
  const auto& record = b->record();
  const auto& c = b->counts();
  ImGui::Text("%s on group %s", record ? record->action_type.c_str() : "...", record ? record->group.c_str() : "...");
  ImGui::SameLine();
  const std::string& state = b->state();
  ImGui::TextColored(state == "succeeded" ? colours->green : state == "running" || state.empty() ? colours->yellow : colours->red,
                     "%s", state.empty() ? "loading" : state.c_str());
  ImGui::SameLine();
  ImGui::TextColored(colours->grey, "%lld/%zu ended: %lld succeeded, %lld failed, %lld cancelled, %lld running, %lld queued",
                     static_cast<long long>(b->ended()), b->size(), static_cast<long long>(c.succeeded),
                     static_cast<long long>(c.failed), static_cast<long long>(c.cancelled), static_cast<long long>(c.running),
                     static_cast<long long>(c.queued));
  ImGui::TextColored(colours->grey, "batch %s", b->batch_id().c_str());
  // Filters, then what may be done with the batch.
  const auto all = b->rows();
  std::size_t failed = 0, running = 0;
  for (const auto& r : all) {
    failed += r.failed;
    running += !r.ended;
  }
  const auto filter_button = [&](batch_filter f, const char* name, std::size_t n) {
    const bool on = app_.filter() == f;
    if (on) ImGui::PushStyleColor(ImGuiCol_Button, ImGui::GetStyleColorVec4(ImGuiCol_ButtonActive));
    const std::string label = std::string(name) + " (" + std::to_string(n) + ")###filter_" + std::string(to_string(f));
    if (ImGui::Button(label.c_str())) app_.set_batch_filter(f);
    if (on) ImGui::PopStyleColor();
    remember_item("filter:" + std::string(to_string(f)));
    ImGui::SameLine();
  };
  filter_button(batch_filter::all, "All", all.size());
  filter_button(batch_filter::failed, "Failed", failed);
  filter_button(batch_filter::running, "Running", running);
  if (app_.can_run() && !b->finished()) {
    if (ImGui::Button("Cancel batch")) app_.cancel_batch();
    remember_item("cancel_batch");
    ImGui::SameLine();
  }
  if (app_.can_run() && failed > 0) {
    ImGui::BeginDisabled(!app_.can_rerun_failed());
    if (ImGui::Button("Re-run on failed machines")) app_.rerun_failed();
    remember_item("rerun_failed");
    ImGui::EndDisabled();
    if (ImGui::IsItemHovered(ImGuiHoveredFlags_AllowWhenDisabled)) {
      ImGui::SetTooltip(app_.can_rerun_failed() ? "one run of the action on each failed machine"
                                                : "a secret value is masked: start it from the group again");
    }
    ImGui::SameLine();
  }
  ImGui::NewLine();
  for (const auto& r : app_.rerun()) {
    ImGui::PushID(("rerun/" + r.machine_id).c_str());
    if (!r.error.empty()) {
      ImGui::TextColored(colours->red, "re-run on %s: %s", r.machine_id.c_str(), r.error.c_str());
    } else if (r.execution_id.empty()) {
      ImGui::TextColored(colours->grey, "re-run on %s: starting...", r.machine_id.c_str());
    } else if (ImGui::Selectable(("re-run on " + r.machine_id + ": watch " + r.execution_id).c_str())) {
      app_.attach(r.execution_id);
      if (on_user_watch) on_user_watch();
    }
    remember_item("rerun:" + r.machine_id);
    ImGui::PopID();
  }
  // The grid, and the open machine's output beside it (below it on a narrow screen).
  const bool open = app_.view() != nullptr;
  const ImVec2 avail = ImGui::GetContentRegionAvail();
  const bool side_by_side = open && avail.x >= 900.0f * scale;
  const ImVec2 grid_size = !open ? ImVec2{0, 0} : side_by_side ? ImVec2{avail.x * 0.5f, 0} : ImVec2{0, avail.y * 0.4f};
  ImGui::BeginChild("batch_grid", grid_size, false);
  draw_batch_grid(app_.filter() == batch_filter::all ? all : b->rows(app_.filter()));
  ImGui::EndChild();
  if (!open) return;
  if (side_by_side) ImGui::SameLine();
  ImGui::BeginChild("batch_output", {0, 0}, false);
  if (ImGui::Button("Close output")) app_.open_batch_member("");
  remember_item("close_output");
  ImGui::SameLine();
  draw_execution();
  ImGui::EndChild();
}

void ui::draw_batch_grid(const std::vector<batch_row>& rows) {
  const auto flags = ImGuiTableFlags_RowBg | ImGuiTableFlags_ScrollY | ImGuiTableFlags_SizingFixedFit |
                     ImGuiTableFlags_BordersInnerV | ImGuiTableFlags_Resizable;
  if (!ImGui::BeginTable("batch", 6, flags)) return;
  ImGui::TableSetupScrollFreeze(0, 1);
  ImGui::TableSetupColumn("Machine");
  ImGui::TableSetupColumn("State");
  ImGui::TableSetupColumn("Progress", ImGuiTableColumnFlags_WidthFixed, 110.0f * scale);
  ImGui::TableSetupColumn("Exit");
  ImGui::TableSetupColumn("Duration");
  ImGui::TableSetupColumn("Last line", ImGuiTableColumnFlags_WidthStretch);
  ImGui::TableHeadersRow();
  const float height = ImGui::GetTextLineHeight();
  const float t = static_cast<float>(ImGui::GetTime());
  ImGuiListClipper clipper;
  clipper.Begin(static_cast<int>(rows.size()));
  while (clipper.Step()) {
    for (int i = clipper.DisplayStart; i < clipper.DisplayEnd; ++i) {
      const auto& r = rows[static_cast<std::size_t>(i)];
      ImGui::TableNextRow();
      ImGui::TableNextColumn();
      ImGui::PushID(r.execution_id.c_str());
      std::string name = r.machine_id;
      for (const auto& m : app_.machines()) {
        if (m.id == r.machine_id && !m.name.empty()) name = m.name;
      }
      const bool open = app_.batch_member() == r.execution_id;
      if (ImGui::Selectable(name.c_str(), open, ImGuiSelectableFlags_SpanAllColumns)) {
        app_.open_batch_member(open ? "" : r.execution_id);
      }
      remember_item("batch_row:" + r.machine_id);
      ImGui::PopID();
      ImGui::TableNextColumn();
      const bool ok = r.ended && r.state == "exited" && r.exit_code == 0;
      ImGui::TextColored(ok ? colours->green : r.failed ? colours->red : r.ended ? colours->grey : r.state == "running" ? colours->yellow : colours->grey,
                         "%s", r.state.c_str());
      ImGui::TableNextColumn();
      char label[32];
      if (r.progress) {
        std::snprintf(label, sizeof label, "%.0f%%", *r.progress);
        ImGui::ProgressBar(static_cast<float>(*r.progress / 100.0), {-1, height}, label);
      } else if (r.busy) {
        ImGui::ProgressBar(0.5f + 0.5f * std::sin(t * 3.0f), {-1, height}, "");
      } else {
        ImGui::ProgressBar(ok ? 1.0f : 0.0f, {-1, height}, r.ended || r.state == "queued" ? "" : "...");
      }
      ImGui::TableNextColumn();
      if (r.exit_code) {
        ImGui::TextColored(*r.exit_code == 0 ? colours->green : colours->red, "%d", *r.exit_code);
      } else {
        ImGui::TextColored(colours->grey, "-");
      }
      ImGui::TableNextColumn();
      ImGui::TextColored(colours->grey, "%s", r.duration_ms ? short_duration(*r.duration_ms).c_str() : "-");
      ImGui::TableNextColumn();
      ImGui::TextUnformatted(r.last_line.c_str());
    }
  }
  ImGui::EndTable();
}

void ui::draw_action(const common::machine_info& m, const common::action_info& a) {
  ImGui::PushID((m.id + "/" + a.name).c_str());
  const bool open = ImGui::TreeNode(a.name.c_str());
  remember_item("action:" + m.id + "/" + a.name);
  if (open) {
    bool valid = true;
    std::map<std::string, std::string> params;
    for (const auto& [name, pattern] : a.params) {
      auto& value = param_values_[m.id + "/" + a.name + "/" + name];
      char buf[256];
      std::snprintf(buf, sizeof buf, "%s", value.c_str());
      ImGui::SetNextItemWidth(200 * scale);
      if (ImGui::InputText(name.c_str(), buf, sizeof buf)) value = buf;
      remember_item("param:" + m.id + "/" + a.name + "/" + name);
      if (!matches(pattern, value)) {
        valid = false;
        ImGui::TextColored(value.empty() ? colours->grey : colours->red, "must match %s", pattern.c_str());
      }
      params[name] = value;
    }
    ImGui::BeginDisabled(!valid || !app_.can_run());
    if (ImGui::Button("Run")) {
      app_.run(m.id, a.name, params);
      narrow_shows_output_ = true;
      if (on_user_watch) on_user_watch();
    }
    remember_item("run:" + m.id + "/" + a.name);
    ImGui::EndDisabled();
    if (!app_.can_run() && ImGui::IsItemHovered(ImGuiHoveredFlags_AllowWhenDisabled)) {
      ImGui::SetTooltip("running needs the operator role");
    }
    if (a.progress) {
      ImGui::SameLine();
      ImGui::TextColored(colours->grey, "progress: %s", a.progress->c_str());
    }
    ImGui::TreePop();
  }
  ImGui::PopID();
}

void ui::draw_executions() {
  ImGui::TextColored(colours->grey, "EXECUTIONS");
  const auto flags = ImGuiTableFlags_RowBg | ImGuiTableFlags_SizingStretchProp | ImGuiTableFlags_ScrollY;
  if (!ImGui::BeginTable("executions", 3, flags)) return;
  for (const auto& r : app_.executions()) {
    ImGui::TableNextRow();
    ImGui::TableNextColumn();
    ImGui::PushID(r.execution_id.c_str());
    const bool current = app_.view() && app_.view()->execution_id() == r.execution_id;
    if (ImGui::Selectable(r.action_type.c_str(), current, ImGuiSelectableFlags_SpanAllColumns)) {
      app_.attach(r.execution_id);
      narrow_shows_output_ = true;
      if (on_user_watch) on_user_watch();
    }
    remember_item("execution:" + r.execution_id);
    ImGui::PopID();
    ImGui::TableNextColumn();
    ImGui::TextColored(colours->grey, "%s", r.machine_id.c_str());
    ImGui::TableNextColumn();
    ImGui::TextColored(state_colour(r.state), "%s", r.state == "awaiting_approval" ? "awaiting approval" : r.state.c_str());
    if (r.state == "running" && r.watchers > 0) {
      ImGui::SameLine();
      ImGui::TextColored(colours->grey, "%lld", static_cast<long long>(r.watchers));
    }
  }
  ImGui::EndTable();
}

void ui::draw_execution() {
  const auto* v = app_.view();
  if (!v) {
    ImGui::TextColored(colours->grey, "Run an action, or pick an execution to watch.");
    focus_find_ = find_focused_ = false;
    return;
  }
  if (v->execution_id() != shown_execution_) {
    shown_execution_ = v->execution_id();
    follow_tail_ = true;
    find_matches_.clear();
    find_for_.clear();
    find_current_ = -1;
    anchor_.reset();
    cursor_.reset();
    selecting_ = false;
  }
  // Header: what, where, state.
  const auto& s = v->started();
  const std::string action = app_.watched_action(), machine = app_.watched_machine();
  ImGui::Text("%s on %s", action.empty() ? "..." : action.c_str(), machine.empty() ? "..." : machine.c_str());
  ImGui::SameLine();
  draw_execution_state(*v);
  if (v->watchers() && !v->finished()) {
    ImGui::SameLine();
    ImGui::TextColored(colours->grey, "%lld watching", static_cast<long long>(*v->watchers()));
  }
  ImGui::TextColored(colours->grey, "%s", v->execution_id().c_str());
  if (s) {
    ImGui::SameLine();
    ImGui::TextColored(colours->grey, "  $ %s", s->command.c_str());
  }
  // Progress: a bar with the phase, or a busy bar when the output gives no measure.
  if (const auto& p = v->progress()) {
    char label[256];
    if (p->percent) {
      std::snprintf(label, sizeof label, "%.1f%%  %s", *p->percent, p->phase.c_str());
      ImGui::ProgressBar(static_cast<float>(*p->percent / 100.0), {-1, 0}, label);
    } else {
      std::snprintf(label, sizeof label, "working...  %s", p->phase.c_str());
      const float t = static_cast<float>(ImGui::GetTime());
      ImGui::ProgressBar(v->finished() ? 0.0f : 0.5f + 0.5f * std::sin(t * 3.0f), {-1, 0}, label);
    }
  }
  // Tools. Cancel comes last: when the run ends and it goes, nothing moves under the mouse.
  if (ImGui::Button("Copy output")) {
    const auto text = v->plain_text();
    if (copy_text) copy_text(text);
    else ImGui::SetClipboardText(text.c_str());
  }
  remember_item("copy");
  // The whole output as the server holds it (also while it runs), as a file.
  ImGui::SameLine();
  if (ImGui::Button("Download .log") && download) download("text");
  remember_item("download_text");
  if (ImGui::IsItemHovered()) ImGui::SetTooltip("the output as plain text");
  ImGui::SameLine();
  if (ImGui::Button("with colours") && download) download("ansi");
  remember_item("download_ansi");
  if (ImGui::IsItemHovered()) ImGui::SetTooltip("the output as received, with its escape sequences");
  ImGui::SameLine();
  const char* time_button = time_mode_ == time_column::off       ? "Time: off###time"
                            : time_mode_ == time_column::elapsed ? "Time: elapsed###time"
                                                                 : "Time: clock###time";
  if (ImGui::Button(time_button)) {
    time_mode_ = time_mode_ == time_column::off       ? time_column::elapsed
                 : time_mode_ == time_column::elapsed ? time_column::clock
                                                      : time_column::off;
  }
  remember_item("time_toggle");
  if (ImGui::IsItemHovered()) ImGui::SetTooltip("a time on each line: off, since the start, or the clock");
  if (!v->finished()) {
    ImGui::SameLine();
    ImGui::BeginDisabled(!app_.can_run());
    if (ImGui::Button("Cancel")) app_.cancel();
    remember_item("cancel");
    ImGui::EndDisabled();
  }
  ImGui::SetNextItemWidth((narrow_ ? 150.0f : 180.0f) * scale);
  if (focus_find_) {
    ImGui::SetKeyboardFocusHere();
    focus_find_ = false;
  }
  // Enter: the next match, Shift+Enter: the previous one; the field keeps the keyboard for
  // the next Enter (Esc leaves it).
  const char* hint = narrow_ ? "find in output" : "find in output (Ctrl+F)";
  if (ImGui::InputTextWithHint("##find", hint, find_buffer_, sizeof find_buffer_, ImGuiInputTextFlags_EnterReturnsTrue)) {
    find_next(*v, ImGui::GetIO().KeyShift ? -1 : +1);
    focus_find_ = true;
  }
  find_focused_ = ImGui::IsItemActive();
  remember_item("find");
  ImGui::SameLine();
  if (ImGui::ArrowButton("##prev", ImGuiDir_Up)) find_next(*v, -1);
  if (ImGui::IsItemHovered()) ImGui::SetTooltip("previous match (Shift+Enter)");
  remember_item("find_previous");
  ImGui::SameLine();
  if (ImGui::ArrowButton("##next", ImGuiDir_Down)) find_next(*v, +1);
  if (ImGui::IsItemHovered()) ImGui::SetTooltip("next match (Enter)");
  remember_item("find_next");
  if (!find_for_.empty()) {
    ImGui::SameLine();
    ImGui::TextColored(colours->grey, "%d of %zu", find_current_ + 1, find_matches_.size());
  }
  ImGui::SameLine();
  ImGui::Checkbox("follow", &follow_tail_);
  remember_item("follow");
  ImGui::SameLine();
  ImGui::TextColored(colours->grey, "%zu lines", v->output().size());
  draw_output(*v);
}

void ui::draw_execution_state(const common::execution_view& v) {
  const auto& record = app_.record();
  if (const auto& e = v.exit()) {
    const ImVec4 colour = e->state == common::exit_state::exited && e->code == 0 ? colours->green : colours->red;
    if (!v.started()) {  // ended before it ran: rejected, expired, cancelled while waiting
      std::string text = exit_text(*e);
      if (e->state == common::exit_state::rejected && record && record->approved_by) text += " by " + *record->approved_by;
      if (e->state == common::exit_state::expired) text += ": nobody approved it in time";
      ImGui::TextColored(colour, "%s", text.c_str());
    } else {
      ImGui::TextColored(colour, "%s after %s", exit_text(*e).c_str(), duration_text(e->duration_ms).c_str());
    }
    return;
  }
  const bool queued = v.queued_position() || (!v.started() && record && record->state == "queued");
  const std::string requester = app_.approval_requester();
  if (queued) {
    if (v.queued_position()) {
      ImGui::TextColored(colours->yellow, "Queued (position %lld)", static_cast<long long>(*v.queued_position()));
    } else {
      ImGui::TextColored(colours->yellow, "Queued");
    }
    if (ImGui::IsItemHovered()) ImGui::SetTooltip("another exclusive action runs on this machine; this one starts after it");
    return;
  }
  if (requester.empty()) {
    ImGui::TextColored(colours->yellow, v.started() ? "running" : "starting");
    if (record && record->approved_by && v.started()) {
      ImGui::SameLine();
      ImGui::TextColored(colours->grey, "approved by %s", record->approved_by->c_str());
    }
    return;
  }
  std::string expires;
  if (v.awaiting_approval()) {
    if (const auto at = parse_rfc3339_ms(v.awaiting_approval()->expires_at)) expires = " (expires " + clock_label(*at) + ")";
  }
  ImGui::TextColored(colours->yellow, "Awaiting approval from another operator%s", expires.c_str());
  if (app_.can_approve()) {
    ImGui::TextColored(colours->grey, "%s asks to run this:", requester.c_str());
    ImGui::SameLine();
    if (ImGui::Button("Approve")) app_.approve();
    remember_item("approve");
    ImGui::SameLine();
    if (ImGui::Button("Reject")) app_.reject();
    remember_item("reject");
  } else if (requester == app_.user()) {
    ImGui::TextColored(colours->grey, "waiting for approval: another operator must approve your request");
  } else {
    ImGui::TextColored(colours->grey, "requested by %s; an operator other than them may approve it", requester.c_str());
  }
}

std::string ui::time_label(std::int64_t t) const {
  switch (time_mode_) {
    case time_column::off: return "";
    case time_column::elapsed: return elapsed_label(t);
    case time_column::clock: {
      const auto* v = app_.view();
      const auto started = v && v->started() ? parse_rfc3339_ms(v->started()->started_at) : std::nullopt;
      return started ? clock_label(*started + t) : elapsed_label(t);
    }
  }
  return "";
}

std::string ui::state_fields(float pixel_ratio) const {
  std::string s = ",\"follow_tail\":";
  s += follow_tail_ ? "true" : "false";
  s += ",\"find\":{\"matches\":" + std::to_string(find_matches_.size()) + ",\"current\":" + std::to_string(find_current_) +
       ",\"focused\":" + (find_focused_ ? "true" : "false") + "}";
  s += ",\"selection\":";
  common::append_json_string(s, selection_text());
  s += std::string(",\"theme\":") + (light_ ? "\"light\"" : "\"dark\"");
  s += std::string(",\"layout\":") + (narrow_ ? "\"narrow\"" : "\"wide\"");
  s += std::string(",\"typing\":") + (ImGui::GetIO().WantTextInput ? "true" : "false");
  s += ",\"visible_lines\":[" + std::to_string(visible_.first) + "," + std::to_string(visible_.second) + "]";
  s += std::string(",\"time_column\":") +
       (time_mode_ == time_column::off ? "\"off\"" : time_mode_ == time_column::elapsed ? "\"elapsed\"" : "\"clock\"");
  // What the time column shows beside the last 100 lines (as "tail" holds them).
  s += ",\"tail_time_labels\":[";
  if (const auto* v = app_.view(); v && time_mode_ != time_column::off) {
    const auto times = v->tail_times(100);
    for (std::size_t i = 0; i < times.size(); ++i) {
      if (i) s += ',';
      common::append_json_string(s, time_label(times[i]));
    }
  }
  s += "]";
  s += ",\"items\":" + items_json(pixel_ratio);
  return s;
}

void ui::draw_line_menu(const common::execution_view& v) {
  if (!ImGui::BeginPopup("line_menu")) return;
  const auto& out = v.output();
  if (menu_line_ >= out.size()) {
    ImGui::CloseCurrentPopup();
    ImGui::EndPopup();
    return;
  }
  // With several lines selected around it, the link is to all of them.
  line_range range{v.line_number(menu_line_), v.line_number(menu_line_)};
  if (anchor_ && cursor_ && anchor_->line != cursor_->line) {
    const auto from = std::min(anchor_->line, cursor_->line), to = std::max(anchor_->line, cursor_->line);
    if (menu_line_ >= from && menu_line_ <= to) range = {v.line_number(from), v.line_number(to)};
  }
  const std::string label = range.first == range.last
                                ? "Copy link to this line"
                                : "Copy link to lines " + std::to_string(range.first) + "-" + std::to_string(range.last);
  if (ImGui::MenuItem(label.c_str())) {
    app_.set_line_link(range, false);
    const std::string route = execution_route(v.execution_id(), range);
    const std::string link = link_for ? link_for(route) : route;
    if (copy_text) {
      copy_text(link);
    } else {
      ImGui::SetClipboardText(link.c_str());
    }
  }
  remember_item("copy_line_link");
  if (ImGui::MenuItem("Copy this line")) {
    const std::string text(out.line(menu_line_).text);
    if (copy_text) {
      copy_text(text);
    } else {
      ImGui::SetClipboardText(text.c_str());
    }
  }
  remember_item("copy_line");
  ImGui::EndPopup();
}

void ui::find_next(const common::execution_view& v, int direction) {
  const std::string needle = find_buffer_;
  if (needle.empty()) return;
  const auto& out = v.output();
  if (needle != find_for_ || out.version() != find_version_) {
    // The same needle in grown output keeps its place: the next match is after the one shown.
    const bool same = needle == find_for_;
    find_for_ = needle;
    find_version_ = out.version();
    find_matches_.clear();
    for (std::size_t i = 0; i < out.size(); ++i) {
      if (contains(out.line(i).text, needle)) find_matches_.push_back(i);
    }
    if (!same) find_current_ = direction > 0 ? -1 : 0;
    find_current_ = std::min(find_current_, static_cast<int>(find_matches_.size()) - 1);
  }
  if (find_matches_.empty()) return;
  const int n = static_cast<int>(find_matches_.size());
  find_current_ = ((find_current_ + direction) % n + n) % n;
  scroll_to_line_ = static_cast<long>(find_matches_[static_cast<std::size_t>(find_current_)]);
  follow_tail_ = false;
}

void ui::handle_selection(const common::execution_view& v, ImVec2 origin, float line_height) {
  const ImGuiIO& io = ImGui::GetIO();
  const auto& out = v.output();
  if (out.size() == 0) return;
  auto position_at = [&](ImVec2 mouse) {
    const float row = std::floor((mouse.y - origin.y) / line_height);
    if (row < 0) return text_position{0, 0};
    if (row >= static_cast<float>(out.size())) return text_position{out.size() - 1, out.line(out.size() - 1).text.size()};
    const auto line = static_cast<std::size_t>(row);
    return text_position{line, column_at(out.line(line).text, mouse.x - origin.x)};
  };
  // Clicks on the text, not on the scrollbars.
  const ImVec2 window = ImGui::GetWindowPos();
  const float bar = ImGui::GetStyle().ScrollbarSize;
  const float right = window.x + ImGui::GetWindowWidth() - (ImGui::GetScrollMaxY() > 0 ? bar : 0);
  const float bottom = window.y + ImGui::GetWindowHeight() - (ImGui::GetScrollMaxX() > 0 ? bar : 0);
  const bool on_text = ImGui::IsWindowHovered() && io.MousePos.x < right && io.MousePos.y < bottom;
  if (on_text && ImGui::IsMouseClicked(0)) {
    const auto at = position_at(io.MousePos);
    const auto text = out.line(at.line).text;
    const int clicks = ImGui::GetMouseClickedCount(0);
    selecting_ = false;
    if (clicks == 2) {  // the word under the mouse
      std::size_t begin = at.column, end = at.column;
      while (begin > 0 && is_word_byte(text[begin - 1])) --begin;
      while (end < text.size() && is_word_byte(text[end])) ++end;
      anchor_ = text_position{at.line, begin};
      cursor_ = text_position{at.line, end};
    } else if (clicks >= 3) {  // the line
      anchor_ = text_position{at.line, 0};
      cursor_ = text_position{at.line, text.size()};
    } else if (io.KeyShift && anchor_) {
      cursor_ = at;
    } else {
      anchor_ = cursor_ = at;
      selecting_ = true;
    }
    if (clicks >= 2 || io.KeyShift) follow_tail_ = false;
  }
  if (selecting_) {
    if (!ImGui::IsMouseDown(0)) {
      selecting_ = false;
      return;
    }
    cursor_ = position_at(io.MousePos);
    if (*cursor_ != *anchor_) follow_tail_ = false;  // a drag: the text must hold still
    // Dragging past the top or the bottom scrolls.
    if (io.MousePos.y < window.y) ImGui::SetScrollY(ImGui::GetScrollY() - line_height);
    if (io.MousePos.y > window.y + ImGui::GetWindowHeight()) ImGui::SetScrollY(ImGui::GetScrollY() + line_height);
  }
}

void ui::draw_output(const common::execution_view& v) {
  ImGui::PushStyleColor(ImGuiCol_ChildBg, colours->output_bg);
  ImGui::BeginChild("output", {0, 0}, true, ImGuiWindowFlags_HorizontalScrollbar);
  const ImVec2 at = ImGui::GetWindowPos(), size = ImGui::GetWindowSize();
  items_["output"] = {at.x, at.y, size.x, size.y};
  // Follow the tail until the user scrolls up; scrolling back to the bottom resumes it.
  const bool at_bottom = ImGui::GetScrollY() >= ImGui::GetScrollMaxY() - 1.0f;
  if (ImGui::IsWindowHovered() && ImGui::GetIO().MouseWheel > 0) follow_tail_ = false;
  else if (at_bottom && ImGui::GetIO().MouseWheel < 0) follow_tail_ = true;

  const auto& out = v.output();
  const float line_height = ImGui::GetTextLineHeightWithSpacing();
  // PgUp, PgDn and Home leave the tail; End (or paging down to it) follows it again.
  const float page = std::max(line_height, ImGui::GetWindowHeight() - 2 * line_height);
  switch (std::exchange(scroll_key_, scroll_key::none)) {
    case scroll_key::page_up:
      follow_tail_ = false;
      ImGui::SetScrollY(std::max(0.0f, ImGui::GetScrollY() - page));
      break;
    case scroll_key::page_down:
      ImGui::SetScrollY(std::min(ImGui::GetScrollMaxY(), ImGui::GetScrollY() + page));
      follow_tail_ = follow_tail_ || ImGui::GetScrollY() + page >= ImGui::GetScrollMaxY();
      break;
    case scroll_key::home:
      follow_tail_ = false;
      ImGui::SetScrollY(0);
      break;
    case scroll_key::end: follow_tail_ = true; break;
    case scroll_key::none: break;
  }
  if (const float by = std::exchange(pending_scroll_, 0.0f); by != 0) {
    const float target = std::clamp(ImGui::GetScrollY() + by, 0.0f, ImGui::GetScrollMaxY());
    ImGui::SetScrollY(target);
    follow_tail_ = by > 0 && target >= ImGui::GetScrollMaxY() - 1.0f;
  }
  const long highlighted =
      find_current_ >= 0 && find_current_ < static_cast<int>(find_matches_.size())
          ? static_cast<long>(find_matches_[static_cast<std::size_t>(find_current_)])
          : -1;
  // A line link opened: go there once its first line has arrived (or give up at the end).
  const auto& link = app_.line_link();
  if (app_.line_link_scrolls() != link_scrolls_done_) {
    follow_tail_ = false;
    if (!link) {
      link_scrolls_done_ = app_.line_link_scrolls();
    } else if (const auto index = v.index_of_line(link->first)) {
      scroll_to_line_ = static_cast<long>(*index);
      link_scrolls_done_ = app_.line_link_scrolls();
    } else if (v.finished() && v.line_number(out.size()) <= link->first) {
      link_scrolls_done_ = app_.line_link_scrolls();
    }
  }
  if (out.dropped_lines() > 0) {
    ImGui::TextColored(colours->grey, "[%llu older lines dropped]", static_cast<unsigned long long>(out.dropped_lines()));
  }
  // The time column, as wide as its widest label.
  gutter_ = time_mode_ == time_column::off
                ? 0.0f
                : ImGui::CalcTextSize(time_label(out.size() ? out.line(out.size() - 1).t : 0).c_str()).x +
                      ImGui::CalcTextSize("  ").x;
  const ImVec2 line_origin = ImGui::GetCursorScreenPos();  // where line 0 is drawn, time column included
  const ImVec2 origin{line_origin.x + gutter_, line_origin.y};  // where line 0's text is drawn
  handle_selection(v, origin, line_height);
  // Right-click (a long press on a phone): the line's menu.
  if (ImGui::IsWindowHovered() && ImGui::IsMouseClicked(ImGuiMouseButton_Right) && out.size() > 0) {
    const float row = std::floor((ImGui::GetIO().MousePos.y - origin.y) / line_height);
    if (row >= 0 && row < static_cast<float>(out.size())) {
      menu_line_ = static_cast<std::size_t>(row);
      ImGui::OpenPopup("line_menu");
    }
  }
  draw_line_menu(v);
  const std::uint64_t link_first = link ? link->first : 0, link_last = link ? link->last : 0;
  // The selection, in order; only the lines on screen are looked at.
  const bool has_selection = anchor_ && cursor_ && *anchor_ != *cursor_;
  const text_position from = has_selection ? std::min(*anchor_, *cursor_) : text_position{};
  const text_position to = has_selection ? std::max(*anchor_, *cursor_) : text_position{};
  ImGuiListClipper clipper;
  clipper.Begin(static_cast<int>(out.size()), line_height);
  visible_ = {out.size(), 0};
  while (clipper.Step()) {
    visible_.first = std::min(visible_.first, static_cast<std::size_t>(clipper.DisplayStart));
    visible_.second = std::max(visible_.second, static_cast<std::size_t>(clipper.DisplayEnd));
    for (int i = clipper.DisplayStart; i < clipper.DisplayEnd; ++i) {
      const auto index = static_cast<std::size_t>(i);
      std::size_t select_from = 0, select_to = 0;
      if (has_selection && index >= from.line && index <= to.line) {
        select_from = index == from.line ? from.column : 0;
        select_to = index == to.line ? to.column : std::string_view::npos;
      }
      const auto line = out.line(index);
      const std::uint64_t number = v.line_number(index);
      const bool linked = link && number >= link_first && number <= link_last;
      const ImVec2 row = ImGui::GetCursorScreenPos();
      if (gutter_ > 0) {
        const std::string label = time_label(line.t);
        ImGui::GetWindowDrawList()->AddText(row, ImGui::GetColorU32(colours->grey), label.c_str());
        ImGui::SetCursorScreenPos({row.x + gutter_, row.y});
      }
      if (linked) {  // a bar in the margin marks the linked lines
        ImGui::GetWindowDrawList()->AddRectFilled({row.x - 4 * scale, row.y}, {row.x - 1 * scale, row.y + line_height},
                                                  colours->link_bar);
      }
      draw_line(line, i == highlighted ? colours->find_bg : linked ? colours->link_bg : 0, select_from, select_to);
    }
  }
  clipper.End();
  if (visible_.first > visible_.second) visible_ = {0, 0};
  // For tests: where the first line on screen starts, one character's width, a line's height.
  items_["output_text"] = {origin.x, origin.y + static_cast<float>(visible_.first) * line_height,
                           ImGui::CalcTextSize("M").x, line_height};
  if (scroll_to_line_ >= 0) {
    ImGui::SetScrollY(static_cast<float>(scroll_to_line_) * line_height - ImGui::GetWindowHeight() / 2);
    scroll_to_line_ = -1;
  } else if (follow_tail_) {
    ImGui::SetScrollY(ImGui::GetScrollMaxY() + line_height);
  }
  ImGui::EndChild();
  ImGui::PopStyleColor();
}

}  // namespace cmdcast::client
