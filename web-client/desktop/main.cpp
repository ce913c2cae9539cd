// cmdcast-desktop: the cmdcast UI in a native window (GLFW + OpenGL 3), the same client_app and
// ui as the web shell, over Beast on a network thread.
//   cmdcast-desktop --server URL [--cacert FILE] [--token TOKEN] [--open ROUTE] [--state-file PATH]
// URL is https://HOST[:PORT] (TLS), or http://HOST[:PORT] or HOST[:PORT] (plain). Over TLS the
// server's certificate must verify against the system's CAs, or those of --cacert FILE: it is
// checked before the window opens, and a refused certificate is one line and exit code 2.
// The token comes from --token or $CMDCAST_TOKEN. --open takes a deep link ("#/executions/ID",
// "#/machines/ID", "#/batches/ID" for a fleet run). --state-file keeps PATH holding what the user sees (the JSON of the web's
// window.cmdcast.state()), replaced about every 250 ms and at exit, for tests and scripts.
// The window's title shows the watched execution's state ("⟳ 42% apt_upgrade · pihole",
// "✓ ...", "✗ ...", "⏸ ..."). Download .log saves the output into the current directory.
// SIGINT and SIGTERM close the window as the user would. --help prints the usage to stdout and
// exits 0; --version prints "cmdcast VERSION"; a usage error exits 2.
#include <GLFW/glfw3.h>
#include <imgui.h>
#include <imgui_impl_glfw.h>
#include <imgui_impl_opengl3.h>

#include <cctype>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <string_view>

#include "app/client_app.hpp"
#include "app/ui.hpp"
#include "cmdcast/client_net/connection.hpp"
#include "cmdcast/common/result.hpp"
#include "desktop/beast_transport.hpp"

namespace {

using cmdcast::client_net::connector;
using cmdcast::common::failure;
using cmdcast::common::result;

constexpr double frame_wait_s = 0.1;        // redraw at least this often (timers, elapsed times)
constexpr double state_interval_s = 0.25;   // how often --state-file is replaced
constexpr int window_width = 1200, window_height = 760;  // at scale 1
constexpr auto tls_check_timeout = std::chrono::seconds(10);

volatile std::sig_atomic_t quit_requested = 0;

void request_quit(int) { quit_requested = 1; }

struct options {
  cmdcast::client_net::server_url server;
  std::string ca_file, token, route, state_file;
  bool help = false, version = false;  // print that and exit 0
};

constexpr const char* usage_text =
    "usage: cmdcast-desktop --server URL [--cacert FILE] [--token TOKEN] [--open ROUTE] [--state-file PATH]\n"
    "  --server URL       https://HOST[:PORT] (TLS; port 443 unless given), or plain\n"
    "                     http://HOST[:PORT] (port 80) or HOST[:PORT] (port 8080)\n"
    "  --cacert FILE      verify the server's certificate with the CA certificates in FILE\n"
    "                     (PEM) instead of the system's: for a private CA\n"
    "  --token TOKEN      the bearer token (default $CMDCAST_TOKEN)\n"
    "  --open ROUTE       open a deep link at start: \"#/executions/ID\", \"#/machines/ID\"\n"
    "                     or \"#/batches/ID\" (a fleet run)\n"
    "  --state-file PATH  keep PATH holding what the window shows, as JSON\n"
    "  --help             this text\n"
    "  --version          print cmdcast's version\n";

int usage(const std::string& problem) {
  std::fprintf(stderr, "cmdcast-desktop: %s\n%s", problem.c_str(), usage_text);
  return 2;
}

result<options> parse_options(int argc, char** argv) {
  options o;
  if (const char* t = std::getenv("CMDCAST_TOKEN")) o.token = t;
  std::string server;
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (arg == "--help" || arg == "-h" || arg == "--version") {
      (arg == "--version" ? o.version : o.help) = true;
      return o;
    }
    std::string* value = arg == "--server"       ? &server
                         : arg == "--cacert"     ? &o.ca_file
                         : arg == "--token"      ? &o.token
                         : arg == "--open"       ? &o.route
                         : arg == "--state-file" ? &o.state_file
                                                 : nullptr;
    if (!value) return failure{"unknown argument \"" + std::string(arg) + "\""};
    if (i + 1 == argc) return failure{std::string(arg) + " needs a value"};
    *value = argv[++i];
  }
  if (server.empty()) return failure{"--server is required"};
  auto url = cmdcast::client_net::parse_server_url(server);
  if (!url) return failure{"--server: " + url.error()};
  o.server = std::move(*url);
  return o;
}

/// Replaces `path` with `text` in one step, so that a reader never sees half a file.
bool write_atomically(const std::string& path, const std::string& text) {
  const std::string temporary = path + ".tmp";
  {
    std::ofstream out(temporary, std::ios::binary | std::ios::trunc);
    out << text;
    if (!out.flush()) return false;
  }
  return std::rename(temporary.c_str(), path.c_str()) == 0;
}

/// Keeps --state-file current; after a failed write it says so once and stops.
class state_writer {
 public:
  explicit state_writer(std::string path) : path_(std::move(path)) {}
  void write(const cmdcast::client::client_app& app, const cmdcast::client::ui& view) {
    if (path_.empty()) return;
    std::string state = app.state_json();
    state.pop_back();
    state += view.state_fields(1.0f);
    state += "}";
    if (!write_atomically(path_, state)) {
      std::fprintf(stderr, "cmdcast-desktop: cannot write the state file %s\n", path_.c_str());
      path_.clear();
    }
  }

 private:
  std::string path_;
};

void report_glfw_error(int code, const char* description) {
  std::fprintf(stderr, "cmdcast-desktop: GLFW error %d: %s\n", code, description);
}

/// Download .log on the desktop: the output fetched, then written into the current directory
/// as ACTION-MACHINE-EXECUTION[.ansi].log; the status bar says where (or why not).
void save_download(cmdcast::client::client_app& app, cmdcast::client::ui& view, const std::string& format) {
  const auto* v = app.view();
  if (!v) return;
  std::string name = app.watched_action() + "-" + app.watched_machine() + "-" + v->execution_id() +
                     (format == "ansi" ? ".ansi.log" : ".log");
  for (char& c : name) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '_' && c != '.') c = '_';
  }
  view.flash("downloading " + name + "...");
  app.download(format, [name, &view](cmdcast::client::http_answer a) {
    if (a.status != 200) {
      view.flash("download failed: " + (a.status == 0 ? std::string("the server cannot be reached") : "HTTP " + std::to_string(a.status)));
      return;
    }
    std::ofstream out(name, std::ios::binary | std::ios::trunc);
    out << a.body;
    view.flash(out.flush() ? "saved " + name : "cannot write " + name + " here");
  });
}

/// The window's life: events, the network's callbacks, timers, a frame; until it is closed.
void run_window(GLFWwindow* window, const connector& server, const options& o, float scale) {
  const std::string idle_title = "cmdcast: " + o.server.authority();
  cmdcast::client::beast_transport transport(server, [] { glfwPostEmptyEvent(); });
  cmdcast::client::client_app app(transport);
  cmdcast::client::ui view(app);
  view.scale = scale;
  view.copy_text = [window](const std::string& text) { glfwSetClipboardString(window, text.c_str()); };
  view.link_for = [&o](const std::string& route) {
    return std::string(o.server.tls ? "https://" : "http://") + o.server.authority() + "/" + route;
  };
  view.download = [&app, &view](const std::string& format) { save_download(app, view, format); };
  state_writer state(o.state_file);
  std::string title;  // the window's, as last set
  app.start(o.route, o.token);
  double next_state_write = 0;
  while (!glfwWindowShouldClose(window) && !quit_requested) {
    // Sleeps until input, a network callback (the transport wakes us) or the next timer.
    glfwWaitEventsTimeout(frame_wait_s);
    transport.pump();
    app.tick(glfwGetTime());
    if (std::string t = app.title(); (t.empty() ? idle_title : t) != title) {
      title = t.empty() ? idle_title : std::move(t);
      glfwSetWindowTitle(window, title.c_str());
    }

    ImGui_ImplOpenGL3_NewFrame();
    ImGui_ImplGlfw_NewFrame();
    ImGui::NewFrame();
    view.draw();
    ImGui::Render();
    int width = 0, height = 0;
    glfwGetFramebufferSize(window, &width, &height);
    glViewport(0, 0, width, height);
    glClearColor(0.08f, 0.08f, 0.09f, 1.0f);
    glClear(GL_COLOR_BUFFER_BIT);
    ImGui_ImplOpenGL3_RenderDrawData(ImGui::GetDrawData());
    glfwSwapBuffers(window);

    // After the swap: the state file never runs ahead of the screen.
    if (glfwGetTime() >= next_state_write) {
      state.write(app, view);
      next_state_write = glfwGetTime() + state_interval_s;
    }
  }
  state.write(app, view);
}

}  // namespace

int main(int argc, char** argv) {
  const auto parsed = parse_options(argc, argv);
  if (!parsed) return usage(parsed.error());
  const options& o = *parsed;
  if (o.help) {
    std::fputs(usage_text, stdout);
    return 0;
  }
  if (o.version) {
    std::printf("cmdcast %s\n", CMDCAST_VERSION);
    return 0;
  }
  const auto server = connector::make(o.server, o.ca_file);
  if (!server) {
    std::fprintf(stderr, "cmdcast-desktop: %s\n", server.error().c_str());
    return 2;
  }
  // A refused certificate stays refused: say so now rather than open a window that cannot work.
  // Anything else (the server down, say) the window shows, and it keeps trying.
  if (const auto failed = server->check_tls(tls_check_timeout); failed && failed->certificate_rejected) {
    std::fprintf(stderr, "cmdcast-desktop: %s\n", failed->message.c_str());
    return 2;
  }

  glfwSetErrorCallback(report_glfw_error);
  if (!glfwInit()) return 1;
  glfwWindowHint(GLFW_CONTEXT_VERSION_MAJOR, 3);
  glfwWindowHint(GLFW_CONTEXT_VERSION_MINOR, 0);
  glfwWindowHint(GLFW_SCALE_TO_MONITOR, GLFW_TRUE);  // HiDPI: a window of the same apparent size
  const std::string title = "cmdcast: " + o.server.authority();
  GLFWwindow* window = glfwCreateWindow(window_width, window_height, title.c_str(), nullptr, nullptr);
  if (!window) {
    glfwTerminate();
    return 1;
  }
  glfwMakeContextCurrent(window);
  glfwSwapInterval(1);
  float scale = 1, y_scale = 1;
  glfwGetWindowContentScale(window, &scale, &y_scale);

  IMGUI_CHECKVERSION();
  ImGui::CreateContext();
  ImGuiIO& io = ImGui::GetIO();
  io.IniFilename = nullptr;
  io.MouseDoubleClickTime = 0.5f;  // as most desktops (ImGui: 0.3 s); a triple-click is three clicks within it
  ImFontConfig font;
  font.SizePixels = 13.0f * scale;
  io.Fonts->AddFontDefault(&font);
  ImGui::StyleColorsDark();
  ImGui::GetStyle().ScaleAllSizes(scale);
  ImGui_ImplGlfw_InitForOpenGL(window, true);
  ImGui_ImplOpenGL3_Init("#version 130");

  std::signal(SIGINT, request_quit);
  std::signal(SIGTERM, request_quit);
  run_window(window, *server, o, scale);

  ImGui_ImplOpenGL3_Shutdown();
  ImGui_ImplGlfw_Shutdown();
  ImGui::DestroyContext();
  glfwDestroyWindow(window);
  glfwTerminate();
  return 0;
}
