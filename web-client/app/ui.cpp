#include "app/ui.hpp"

#include <imgui.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <regex>

#include "cmdcast/common/codec.hpp"

namespace cmdcast::client {
namespace {

const ImVec4 green{0.35f, 0.85f, 0.45f, 1}, yellow{0.95f, 0.8f, 0.3f, 1}, red{1.0f, 0.45f, 0.4f, 1},
    grey{0.6f, 0.6f, 0.6f, 1};
constexpr std::uint32_t default_fg = 0xD8D8D8, stderr_fg = 0xFF8A80, default_bg = 0;

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
  if (state == "running") return yellow;
  if (state == "exited") return green;
  return red;
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

/// One transcript line: each span in its colours and attributes.
void draw_line(const common::line_view& line, bool highlighted) {
  ImDrawList* draw = ImGui::GetWindowDrawList();
  const ImVec2 start = ImGui::GetCursorScreenPos();
  if (highlighted) {
    const float width = std::max(ImGui::GetContentRegionAvail().x, ImGui::CalcTextSize(line.text.data(), line.text.data() + line.text.size()).x);
    draw->AddRectFilled(start, {start.x + width, start.y + ImGui::GetTextLineHeight()}, IM_COL32(90, 80, 20, 255));
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
    std::uint32_t fg = common::to_rgb(span.style.fg, from_stderr ? stderr_fg : default_fg);
    std::uint32_t bg = common::to_rgb(span.style.bg, default_bg);
    const bool has_bg = span.style.bg != common::default_color || (span.style.flags & common::style_flag::inverse);
    if (span.style.flags & common::style_flag::inverse) std::swap(fg, bg);
    if (span.style.flags & common::style_flag::inverse && bg == default_bg) bg = default_fg;
    const ImVec2 size = ImGui::CalcTextSize(b, e);
    if (has_bg) draw->AddRectFilled(pos, {pos.x + size.x, pos.y + ImGui::GetTextLineHeight()}, to_imgui(bg));
    ImU32 colour = to_imgui(fg);
    if (span.style.flags & common::style_flag::dim) colour = (colour & 0x00FFFFFF) | 0x99000000;
    draw->AddText(pos, colour, b, e);
    if (span.style.flags & common::style_flag::bold) draw->AddText({pos.x + 1, pos.y}, colour, b, e);
    if (span.style.flags & common::style_flag::underline) {
      const float y = pos.y + ImGui::GetTextLineHeight() - 1;
      draw->AddLine({pos.x, y}, {pos.x + size.x, y}, colour);
    }
    pos.x += size.x;
  }
  // Reserve the line's space so scrolling and clipping know it.
  ImGui::Dummy({pos.x - start.x, ImGui::GetTextLineHeight()});
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

void ui::draw() {
  items_.clear();
  const ImGuiViewport* vp = ImGui::GetMainViewport();
  ImGui::SetNextWindowPos(vp->WorkPos);
  ImGui::SetNextWindowSize(vp->WorkSize);
  ImGui::Begin("cmdcast", nullptr,
               ImGuiWindowFlags_NoDecoration | ImGuiWindowFlags_NoMove | ImGuiWindowFlags_NoSavedSettings |
                   ImGuiWindowFlags_NoBringToFrontOnFocus);
  draw_status_bar();
  if (app_.needs_token()) draw_token_prompt();
  ImGui::Separator();
  const float left = 340.0f * scale;
  ImGui::BeginChild("left", {left, 0}, false);
  draw_machines();
  ImGui::Spacing();
  draw_executions();
  ImGui::EndChild();
  ImGui::SameLine();
  ImGui::BeginChild("right", {0, 0}, false);
  draw_execution();
  ImGui::EndChild();
  ImGui::End();
}

void ui::draw_status_bar() {
  ImGui::TextUnformatted("cmdcast");
  ImGui::SameLine();
  if (!app_.user().empty()) {
    ImGui::TextColored(grey, "%s (%s)", app_.user().c_str(), app_.can_run() ? "operator" : "viewer");
    ImGui::SameLine();
  }
  if (app_.view() && !app_.view()->finished()) {
    switch (app_.mode()) {
      case link_mode::websocket: ImGui::TextColored(green, "live"); break;
      case link_mode::polling: ImGui::TextColored(yellow, "polling (degraded)"); break;
      case link_mode::disconnected: ImGui::TextColored(red, "disconnected: reconnecting..."); break;
    }
    ImGui::SameLine();
  }
  if (!app_.error().empty()) ImGui::TextColored(red, "%s", app_.error().c_str());
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
  ImGui::TextColored(grey, "MACHINES");
  for (const auto& m : app_.machines()) {
    const bool selected = m.id == app_.selected_machine();
    if (ImGui::Selectable((m.name + "##" + m.id).c_str(), selected)) app_.select_machine(m.id);
    remember_item("machine:" + m.id);
    if (!selected) continue;
    ImGui::Indent();
    for (const auto& a : m.actions) draw_action(m, a);
    ImGui::Unindent();
  }
  if (app_.machines().empty()) ImGui::TextColored(grey, "(none yet)");
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
        ImGui::TextColored(value.empty() ? grey : red, "must match %s", pattern.c_str());
      }
      params[name] = value;
    }
    ImGui::BeginDisabled(!valid || !app_.can_run());
    if (ImGui::Button("Run")) app_.run(m.id, a.name, params);
    remember_item("run:" + m.id + "/" + a.name);
    ImGui::EndDisabled();
    if (!app_.can_run() && ImGui::IsItemHovered(ImGuiHoveredFlags_AllowWhenDisabled)) {
      ImGui::SetTooltip("running needs the operator role");
    }
    if (a.progress) {
      ImGui::SameLine();
      ImGui::TextColored(grey, "progress: %s", a.progress->c_str());
    }
    ImGui::TreePop();
  }
  ImGui::PopID();
}

void ui::draw_executions() {
  ImGui::TextColored(grey, "EXECUTIONS");
  const auto flags = ImGuiTableFlags_RowBg | ImGuiTableFlags_SizingStretchProp | ImGuiTableFlags_ScrollY;
  if (!ImGui::BeginTable("executions", 3, flags)) return;
  for (const auto& r : app_.executions()) {
    ImGui::TableNextRow();
    ImGui::TableNextColumn();
    ImGui::PushID(r.execution_id.c_str());
    const bool current = app_.view() && app_.view()->execution_id() == r.execution_id;
    if (ImGui::Selectable(r.action_type.c_str(), current, ImGuiSelectableFlags_SpanAllColumns)) app_.attach(r.execution_id);
    remember_item("execution:" + r.execution_id);
    ImGui::PopID();
    ImGui::TableNextColumn();
    ImGui::TextColored(grey, "%s", r.machine_id.c_str());
    ImGui::TableNextColumn();
    ImGui::TextColored(state_colour(r.state), "%s", r.state.c_str());
    if (r.state == "running" && r.watchers > 0) {
      ImGui::SameLine();
      ImGui::TextColored(grey, "%lld", static_cast<long long>(r.watchers));
    }
  }
  ImGui::EndTable();
}

void ui::draw_execution() {
  const auto* v = app_.view();
  if (!v) {
    ImGui::TextColored(grey, "Run an action, or pick an execution to watch.");
    return;
  }
  if (v->execution_id() != shown_execution_) {
    shown_execution_ = v->execution_id();
    follow_tail_ = true;
    find_matches_.clear();
    find_for_.clear();
    find_current_ = -1;
  }
  // Header: what, where, state.
  const auto& s = v->started();
  ImGui::Text("%s on %s", s ? s->action_type.c_str() : "...", s ? s->machine_id.c_str() : "...");
  ImGui::SameLine();
  if (const auto& e = v->exit()) {
    ImGui::TextColored(e->state == common::exit_state::exited && e->code == 0 ? green : red, "%s after %s",
                       exit_text(*e).c_str(), duration_text(e->duration_ms).c_str());
  } else {
    ImGui::TextColored(yellow, "running");
  }
  if (v->watchers() && !v->finished()) {
    ImGui::SameLine();
    ImGui::TextColored(grey, "%lld watching", static_cast<long long>(*v->watchers()));
  }
  ImGui::TextColored(grey, "%s", v->execution_id().c_str());
  if (s) {
    ImGui::SameLine();
    ImGui::TextColored(grey, "  $ %s", s->command.c_str());
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
  // Tools.
  if (!v->finished()) {
    ImGui::BeginDisabled(!app_.can_run());
    if (ImGui::Button("Cancel")) app_.cancel();
    remember_item("cancel");
    ImGui::EndDisabled();
    ImGui::SameLine();
  }
  if (ImGui::Button("Copy output")) {
    const auto text = v->plain_text();
    if (copy_text) copy_text(text);
    else ImGui::SetClipboardText(text.c_str());
  }
  ImGui::SameLine();
  ImGui::SetNextItemWidth(180 * scale);
  if (ImGui::InputTextWithHint("##find", "find in output", find_buffer_, sizeof find_buffer_,
                               ImGuiInputTextFlags_EnterReturnsTrue)) {
    find_next(*v, +1);
  }
  remember_item("find");
  ImGui::SameLine();
  if (ImGui::ArrowButton("##prev", ImGuiDir_Up)) find_next(*v, -1);
  ImGui::SameLine();
  if (ImGui::ArrowButton("##next", ImGuiDir_Down)) find_next(*v, +1);
  remember_item("find_next");
  if (!find_for_.empty()) {
    ImGui::SameLine();
    ImGui::TextColored(grey, "%d of %zu", find_current_ + 1, find_matches_.size());
  }
  ImGui::SameLine();
  ImGui::Checkbox("follow", &follow_tail_);
  remember_item("follow");
  ImGui::SameLine();
  ImGui::TextColored(grey, "%zu lines", v->output().size());
  draw_output(*v);
}

void ui::find_next(const common::execution_view& v, int direction) {
  const std::string needle = find_buffer_;
  if (needle.empty()) return;
  const auto& out = v.output();
  if (needle != find_for_ || out.version() != find_version_) {
    find_for_ = needle;
    find_version_ = out.version();
    find_matches_.clear();
    for (std::size_t i = 0; i < out.size(); ++i) {
      if (contains(out.line(i).text, needle)) find_matches_.push_back(i);
    }
    find_current_ = direction > 0 ? -1 : 0;
  }
  if (find_matches_.empty()) return;
  const int n = static_cast<int>(find_matches_.size());
  find_current_ = ((find_current_ + direction) % n + n) % n;
  scroll_to_line_ = static_cast<long>(find_matches_[static_cast<std::size_t>(find_current_)]);
  follow_tail_ = false;
}

void ui::draw_output(const common::execution_view& v) {
  ImGui::PushStyleColor(ImGuiCol_ChildBg, IM_COL32(16, 16, 18, 255));
  ImGui::BeginChild("output", {0, 0}, true, ImGuiWindowFlags_HorizontalScrollbar);
  // Follow the tail until the user scrolls up; scrolling back to the bottom resumes it.
  const bool at_bottom = ImGui::GetScrollY() >= ImGui::GetScrollMaxY() - 1.0f;
  if (ImGui::IsWindowHovered() && ImGui::GetIO().MouseWheel > 0) follow_tail_ = false;
  else if (at_bottom && ImGui::GetIO().MouseWheel < 0) follow_tail_ = true;

  const auto& out = v.output();
  const float line_height = ImGui::GetTextLineHeightWithSpacing();
  const long highlighted =
      find_current_ >= 0 && find_current_ < static_cast<int>(find_matches_.size())
          ? static_cast<long>(find_matches_[static_cast<std::size_t>(find_current_)])
          : -1;
  if (out.dropped_lines() > 0) {
    ImGui::TextColored(grey, "[%llu older lines dropped]", static_cast<unsigned long long>(out.dropped_lines()));
  }
  ImGuiListClipper clipper;
  clipper.Begin(static_cast<int>(out.size()), line_height);
  while (clipper.Step()) {
    for (int i = clipper.DisplayStart; i < clipper.DisplayEnd; ++i) {
      draw_line(out.line(static_cast<std::size_t>(i)), i == highlighted);
    }
  }
  clipper.End();
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
