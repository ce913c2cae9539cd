// The web shell: the cmdcast UI in the browser (Emscripten, GLFW on WebGL2), served by
// cmdcast-server at /. Deep links (#/executions/ID, #/machines/ID, #/batches/ID) open what they name; the
// token is kept in the browser's localStorage, never in the URL; window.cmdcast.state()
// returns what the user sees as an object, for tests. The output lines on screen are mirrored
// into a visually hidden role="log" element for screen readers; the colours follow the
// browser's prefers-color-scheme. The tab's title shows the watched execution's state; a run
// watched while it ran that ends while the page is hidden is a notification (the permission is
// asked once, on the first Run or pick of an execution). Downloads go through fetch, with the
// token, into a Blob saved by a temporary <a download>.
#include <GLFW/glfw3.h>
#include <emscripten.h>
#include <emscripten/html5.h>
#include <imgui.h>
#include <imgui_impl_glfw.h>
#include <imgui_impl_opengl3.h>

#include <algorithm>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "app/client_app.hpp"
#include "cmdcast/common/codec.hpp"
#include "app/ui.hpp"
#include "web/web_transport.hpp"

namespace {

using cmdcast::client::client_app;

EM_JS(char*, js_string, (int which), {
  let s = "";
  if (which === 0) s = location.hash;
  if (which === 1) s = localStorage.getItem("cmdcast.token") || "";
  const size = lengthBytesUTF8(s) + 1;
  const p = _malloc(size);
  stringToUTF8(s, p, size);
  return p;
});
EM_JS(void, js_set_hash, (const char* hash), {
  const h = UTF8ToString(hash);
  if (location.hash !== h) history.replaceState(null, "", h);
});
EM_JS(void, js_store_token, (const char* token), { localStorage.setItem("cmdcast.token", UTF8ToString(token)); });
EM_JS(void, js_copy, (const char* text), { navigator.clipboard && navigator.clipboard.writeText(UTF8ToString(text)); });
EM_JS(double, js_pixel_ratio, (), { return window.devicePixelRatio || 1; });
EM_JS(int, js_inner_width, (), { return window.innerWidth; });
EM_JS(int, js_inner_height, (), { return window.innerHeight; });
EM_JS(int, js_prefers_light, (), { return window.matchMedia("(prefers-color-scheme: light)").matches ? 1 : 0; });
/// The screen reader's copy of the output on screen: one element per line, announced
/// (politely) only while following the tail.
EM_JS(void, js_mirror_output, (const char* lines, int following), {
  const log = document.getElementById("output-log");
  if (!log) return;
  const text = UTF8ToString(lines);
  log.setAttribute("aria-live", following ? "polite" : "off");
  log.replaceChildren(...(text === "" ? [] : text.split("\n")).map((line) => {
    const div = document.createElement("div");
    div.textContent = line;
    return div;
  }));
});
/// The controls drawn on the canvas, as DOM buttons for the keyboard and screen readers
/// (shell.html); `items` is ui::items_json().
EM_JS(void, js_sync_controls, (const char* items), {
  if (window.cmdcastSyncControls) window.cmdcastSyncControls(JSON.parse(UTF8ToString(items)));
});
EM_JS(void, js_set_title, (const char* title), { document.title = UTF8ToString(title); });
/// The notification permission, asked once ever (on a user's Run or pick: a gesture).
EM_JS(void, js_ask_notifications, (), {
  if (!window.Notification || Notification.permission !== "default") return;
  if (localStorage.getItem("cmdcast.notifications_asked")) return;
  localStorage.setItem("cmdcast.notifications_asked", "1");
  try { Notification.requestPermission(); } catch (e) {}
});
EM_JS(void, js_notify, (const char* text), {
  if (!document.hidden || !window.Notification || Notification.permission !== "granted") return;
  try { new Notification(UTF8ToString(text), { tag: "cmdcast" }); } catch (e) {}
});
EM_JS(void, js_download, (const char* path, const char* token, const char* fallback_name), {
  if (window.cmdcastDownload) window.cmdcastDownload(UTF8ToString(path), UTF8ToString(token), UTF8ToString(fallback_name));
});
EM_JS(char*, js_page_base, (), {
  const s = location.origin + location.pathname;
  const size = lengthBytesUTF8(s) + 1;
  const p = _malloc(size);
  stringToUTF8(s, p, size);
  return p;
});
EM_JS(void, js_install_state, (), {
  window.cmdcast = {state : () => JSON.parse(Module.ccall("cmdcast_state", "string", [], []))};
  document.title = "cmdcast";
});

std::string take(char* p) {
  std::string s(p);
  std::free(p);
  return s;
}

struct shell {
  GLFWwindow* window = nullptr;
  std::unique_ptr<cmdcast::client::web_transport> transport;
  std::unique_ptr<client_app> app;
  std::unique_ptr<cmdcast::client::ui> view;
  std::string hash, token, state;
  int width = 0, height = 0;
  // Measured for the benchmarks: when the first frame was done (ms since navigation) and how
  // long the recent frames took to build and draw (ms of main-thread time, not vsync waits).
  double first_frame_ms = -1;
  std::vector<double> frame_ms;  // a ring of the last frame_ring frames
  std::vector<double> ui_ms;     // of those, building the UI (ImGui, the transcript): no GL
  std::size_t frames = 0;
  // Frames are drawn only when something changed, and while output pours in at most so often
  // that drawing takes about a third of the main thread: where WebGL is rasterised on the CPU
  // (no GPU) a frame costs tens of ms, and the page must still keep up with the stream.
  bool input_seen = true;
  int settle_frames = 0;  // frames to draw after input, for ImGui's hover and click states
  std::uint64_t drawn_revision = 0;
  double last_drawn = -1e9, last_cost = 0;
  std::string mirrored;  // what the role="log" mirror holds
  bool mirrored_following = false;
  std::string controls;  // the items the DOM buttons were made for
  double last_mirrored = -1e9;
};
constexpr std::size_t frame_ring = 600;
shell* the_shell = nullptr;

/// Whether this frame is worth drawing (see shell).
bool should_draw(shell& s, double now) {
  if (s.input_seen) {
    s.input_seen = false;
    s.settle_frames = 3;
  }
  if (s.settle_frames > 0) {
    --s.settle_frames;
    return true;
  }
  const double since = now - s.last_drawn;
  if (since > 1000) return true;
  const bool moving = s.app->revision() != s.drawn_revision || s.app->animating() || ImGui::GetIO().WantTextInput;
  return moving && since >= std::min(100.0, 2 * s.last_cost);
}

void mark_input(GLFWwindow*) { the_shell->input_seen = true; }

/// Updates the role="log" mirror when the lines on screen changed: what is visible, never
/// more, so it costs the same with a million lines held.
void mirror_output(shell& s) {
  std::string lines;
  if (const auto* v = s.app->view()) {
    const auto& out = v->output();
    const auto [first, end] = s.view->visible_lines();
    for (std::size_t i = first; i < std::min(end, out.size()); ++i) {
      if (i != first) lines += '\n';
      lines += out.line(i).text;
    }
  }
  const bool following = s.view->following();
  if (lines == s.mirrored && following == s.mirrored_following) return;
  s.mirrored = std::move(lines);
  s.mirrored_following = following;
  js_mirror_output(s.mirrored.c_str(), following ? 1 : 0);
}

void frame() {
  shell& s = *the_shell;
  const double started = emscripten_get_now();
  // Follow the page: CSS size times the device pixel ratio, so text stays sharp on HiDPI.
  const double ratio = js_pixel_ratio();
  const int w = static_cast<int>(js_inner_width() * ratio), h = static_cast<int>(js_inner_height() * ratio);
  if (w != s.width || h != s.height) {
    s.width = w;
    s.height = h;
    glfwSetWindowSize(s.window, w, h);
    s.input_seen = true;
  }
  // The address bar and the app agree: a hash typed or pasted opens it, the app's is shown.
  const std::string hash = take(js_string(0));
  if (hash != s.hash) {
    s.hash = hash;
    s.app->open_route(hash);
  }
  s.app->tick(emscripten_get_now() / 1000.0);
  if (s.app->route() != s.hash && !s.app->route().empty()) {
    s.hash = s.app->route();
    js_set_hash(s.hash.c_str());
  }
  if (s.app->token() != s.token) {
    s.token = s.app->token();
    js_store_token(s.token.c_str());
  }

  // The theme is checked each frame: the system may switch to dark at dusk.
  const bool light = js_prefers_light() != 0;
  if (light != s.view->light()) {
    s.view->set_light(light);
    s.input_seen = true;
  }
  if (!should_draw(s, started)) return;
  s.drawn_revision = s.app->revision();

  ImGui_ImplOpenGL3_NewFrame();
  ImGui_ImplGlfw_NewFrame();
  ImGui::NewFrame();
  s.view->draw();
  ImGui::Render();
  const double built = emscripten_get_now();
  int fw = 0, fh = 0;
  glfwGetFramebufferSize(s.window, &fw, &fh);
  glViewport(0, 0, fw, fh);
  if (light) {
    glClearColor(0.94f, 0.94f, 0.94f, 1.0f);
  } else {
    glClearColor(0.08f, 0.08f, 0.09f, 1.0f);
  }
  glClear(GL_COLOR_BUFFER_BIT);
  ImGui_ImplOpenGL3_RenderDrawData(ImGui::GetDrawData());
  // The page's copies for screen readers and the keyboard, four times a second at most: a
  // live region needs no more, and the DOM's work then stays off the frames that matter
  // (a frame is drawn at least every second, so the last change is never left out).
  if (started - s.last_mirrored >= 250) {
    s.last_mirrored = started;
    mirror_output(s);
    if (auto items = s.view->items_json(static_cast<float>(ratio)); items != s.controls) {
      s.controls = std::move(items);
      js_sync_controls(s.controls.c_str());
    }
  }
  const double finished = emscripten_get_now();
  s.last_drawn = finished;
  s.last_cost = finished - started;
  if (s.first_frame_ms < 0) s.first_frame_ms = finished;
  if (s.frame_ms.size() < frame_ring) {
    s.frame_ms.resize(frame_ring);
    s.ui_ms.resize(frame_ring);
  }
  s.ui_ms[s.frames % frame_ring] = built - started;
  s.frame_ms[s.frames++ % frame_ring] = finished - started;
}

}  // namespace

/// window.cmdcast.state(): the app's state plus where its controls are on the page.
extern "C" EMSCRIPTEN_KEEPALIVE const char* cmdcast_state() {
  auto& s = *the_shell;
  s.state = s.app->state_json();
  s.state.pop_back();
  s.state += s.view->state_fields(static_cast<float>(js_pixel_ratio()));
  s.state += ",\"first_frame_ms\":" + std::to_string(s.first_frame_ms);
  s.state += ",\"frames\":" + std::to_string(s.frames);  // drawn so far (frame_ms holds the last 600)
  const std::size_t n = std::min(s.frames, frame_ring);
  for (const auto& [name, ring] : {std::pair{"frame_ms", &s.frame_ms}, std::pair{"ui_ms", &s.ui_ms}}) {
    s.state += ",\"" + std::string(name) + "\":[";
    for (std::size_t i = 0; i < n; ++i) {
      if (i) s.state += ',';
      s.state += std::to_string((*ring)[(s.frames - n + i) % frame_ring]);
    }
    s.state += "]";
  }
  s.state += "}";
  return s.state.c_str();
}

/// A finger's swipe on the page, in CSS pixels (shell.html turns touches into this).
extern "C" EMSCRIPTEN_KEEPALIVE void cmdcast_scroll_output(double css_pixels) {
  the_shell->view->scroll_output(static_cast<float>(css_pixels * js_pixel_ratio()));
  the_shell->input_seen = true;
}

int main() {
  if (!glfwInit()) return 1;
  glfwWindowHint(GLFW_CLIENT_API, GLFW_OPENGL_ES_API);
  glfwWindowHint(GLFW_CONTEXT_VERSION_MAJOR, 3);
  glfwWindowHint(GLFW_CONTEXT_VERSION_MINOR, 0);
  const double ratio = js_pixel_ratio();
  auto* s = new shell;
  the_shell = s;
  s->width = static_cast<int>(js_inner_width() * ratio);
  s->height = static_cast<int>(js_inner_height() * ratio);
  s->window = glfwCreateWindow(s->width, s->height, "cmdcast", nullptr, nullptr);
  if (!s->window) return 1;
  glfwMakeContextCurrent(s->window);

  IMGUI_CHECKVERSION();
  ImGui::CreateContext();
  ImGuiIO& io = ImGui::GetIO();
  io.IniFilename = nullptr;
  io.MouseDoubleClickTime = 0.5f;  // as most desktops (ImGui: 0.3 s); a triple-click is three clicks within it
  ImFontConfig font;
  font.SizePixels = static_cast<float>(13.0 * ratio);
  io.Fonts->AddFontDefault(&font);
  ImGui::StyleColorsDark();
  ImGui::GetStyle().ScaleAllSizes(static_cast<float>(ratio));
  // Any input means a frame to draw; ImGui's own callbacks are chained after these.
  glfwSetCursorPosCallback(s->window, [](GLFWwindow* w, double, double) { mark_input(w); });
  glfwSetMouseButtonCallback(s->window, [](GLFWwindow* w, int, int, int) { mark_input(w); });
  glfwSetScrollCallback(s->window, [](GLFWwindow* w, double, double) { mark_input(w); });
  glfwSetKeyCallback(s->window, [](GLFWwindow* w, int, int, int, int) { mark_input(w); });
  glfwSetCharCallback(s->window, [](GLFWwindow* w, unsigned) { mark_input(w); });
  ImGui_ImplGlfw_InitForOpenGL(s->window, true);
  ImGui_ImplOpenGL3_Init("#version 300 es");

  s->transport = std::make_unique<cmdcast::client::web_transport>();
  s->app = std::make_unique<client_app>(*s->transport);
  s->view = std::make_unique<cmdcast::client::ui>(*s->app);
  s->view->scale = static_cast<float>(ratio);
  s->view->copy_text = [](const std::string& text) { js_copy(text.c_str()); };
  s->view->link_for = [](const std::string& route) { return take(js_page_base()) + route; };
  s->view->on_user_watch = [] { js_ask_notifications(); };
  // From the events themselves: a hidden tab draws no frames, and that is when they matter.
  s->app->on_title = [](const std::string& title) { js_set_title(title.empty() ? "cmdcast" : title.c_str()); };
  s->app->on_finish = [](const std::string& notice) { js_notify(notice.c_str()); };
  s->view->download = [s](const std::string& format) {
    const auto* v = s->app->view();
    if (!v) return;
    const std::string name = v->execution_id() + (format == "ansi" ? ".ansi.log" : ".log");
    js_download(s->app->output_path(format).c_str(), s->app->token().c_str(), name.c_str());
  };
  s->token = take(js_string(1));
  s->hash = take(js_string(0));
  js_install_state();
  s->app->start(s->hash, s->token);
  emscripten_set_main_loop(frame, 0, true);
  return 0;
}
