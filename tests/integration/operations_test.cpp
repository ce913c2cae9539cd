// What an administrator does to a running cmdcast-server, against the real binary and a
// loopback sshd: check a config before putting it in place (--check-config), reload it
// (SIGHUP), learn that it is ready (the service manager's notify socket), and put it behind a
// reverse proxy (trusted_proxies).
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "config/config.hpp"
#include "server_harness.hpp"

namespace cmdcast::testing {
namespace {

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

void write_file(const std::string& path, const std::string& text) { std::ofstream(path) << text; }

/// The log lines of one event.
std::vector<std::string> event_lines(const std::string& log, const std::string& name) {
  std::vector<std::string> out;
  std::istringstream in(log);
  for (std::string line; std::getline(in, line);) {
    if (line.find("\"event\":\"" + name + "\"") != std::string::npos) out.push_back(line);
  }
  return out;
}

std::string token_block(const std::string& name, const std::string& token, const std::string& role) {
  return "[[tokens]]\nname = \"" + name + "\"\nsha256 = \"" + server::sha256_hex(token) + "\"\nrole = \"" + role + "\"\n";
}

// --- cmdcast-server --check-config ---------------------------------------------------------

TEST(CheckConfig, AGoodConfigIsOkAndNothingIsConnectedTo) {
  loopback_sshd sshd;
  const std::string web = sshd.dir() + "/web";
  std::filesystem::create_directories(web);
  write_file(web + "/index.html", "<!doctype html>");
  // The machine points at a port nobody listens on: a check that connected would fail.
  auto endpoint = sshd.endpoint();
  const std::string config = sshd.dir() + "/check.toml";
  write_file(config, "[server]\nlisten = \"127.0.0.1:8080\"\nweb_root = \"" + web + "\"\ntrusted_proxies = [\"127.0.0.1\", \"10.0.0.0/8\"]\n" +
                         token_block("olivia", operator_token, "operator") + "[[machines]]\nid = \"far\"\nhost = \"127.0.0.1\"\nport = 1\nuser = \"u\"\nidentity = \"" +
                         endpoint.identity + "\"\nknown_hosts = \"" + endpoint.known_hosts + "\"\n[actions.uptime]\ncommand = \"uptime\"\n");
  const auto r = run_program(server_binary() + " --check-config " + config);
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out, config + ": ok\n");
  EXPECT_EQ(r.err, "");
}

TEST(CheckConfig, EveryProblemIsOneLineWithFileLineColumnAndKeyAndTheExitIs1) {
  loopback_sshd sshd;
  const std::string dir = sshd.dir();
  write_file(dir + "/empty_known_hosts", "");
  write_file(dir + "/garbage_known_hosts", "this is not a known_hosts line\n");
  write_file(dir + "/public_key", read_file(dir + "/client.pub"));
  std::filesystem::create_directories(dir + "/empty_web");
  const std::string config = dir + "/broken.toml";
  write_file(config,
             "[server]\n"                                              // 1
             "listen = \"127.0.0.1:8080\"\n"                           // 2
             "web_root = \"" + dir + "/empty_web\"\n"                  // 3
             "anonymous = \"operator\"\n"                              // 4
             "[[machines]]\n"                                          // 5
             "id = \"a\"\n"                                            // 6
             "host = \"127.0.0.1\"\n"                                  // 7
             "user = \"u\"\n"                                          // 8
             "identity = \"" + dir + "/missing_key\"\n"                // 9
             "known_hosts = \"" + dir + "/empty_known_hosts\"\n"       // 10
             "[[machines]]\n"                                          // 11
             "id = \"b\"\n"                                            // 12
             "host = \"127.0.0.1\"\n"                                  // 13
             "user = \"u\"\n"                                          // 14
             "identity = \"" + dir + "/public_key\"\n"                 // 15
             "known_hosts = \"" + dir + "/garbage_known_hosts\"\n"     // 16
             "[actions.a]\n"                                           // 17
             "command = \"echo {x}\"\n"                                // 18
             "params = { x = \"[\" }\n");                              // 19
  const auto r = run_program(server_binary() + " --check-config " + config);
  EXPECT_EQ(r.status, 1);
  EXPECT_EQ(r.out, "");
  EXPECT_EQ(r.err,
            config + ":3:12: server.web_root: \"" + dir + "/empty_web\" holds no readable index.html (the web client's build)\n" +
            config + ":9:12: machines.identity: cannot read \"" + dir + "/missing_key\"\n" +
            config + ":10:15: machines.known_hosts: \"" + dir + "/empty_known_hosts\" holds no host key: add each machine's "
                     "(ssh-keyscan -p PORT HOST, checked against the machine's own /etc/ssh/ssh_host_*.pub)\n" +
            config + ":15:12: machines.identity: \"" + dir + "/public_key\" is not a private key (PEM or OpenSSH format)\n" +
            config + ":16:15: machines.known_hosts: \"" + dir + "/garbage_known_hosts\" line 1 is not HOST KEYTYPE KEY (as ssh-keyscan writes it)\n" +
            config + ":19:16: actions.a.params.x: is not a valid RE2 pattern: missing ]: [\n");

  // The server itself refuses the same config, with the same lines, and starts nothing.
  const auto start = run_program(server_binary() + " --config " + config);
  EXPECT_EQ(start.status, 2);
  EXPECT_NE(start.err.find(config + ":19:16: actions.a.params.x"), std::string::npos) << start.err;
  EXPECT_NE(start.err.find("nothing was started"), std::string::npos) << start.err;

  const auto unreadable = run_program(server_binary() + " --check-config " + dir + "/no-such.toml");
  EXPECT_EQ(unreadable.status, 1);
  EXPECT_EQ(unreadable.err, dir + "/no-such.toml: cannot read the config file\n");
}

TEST(CheckConfig, HelpVersionAndBadArguments) {
  const auto help = run_program(server_binary() + " --help");
  EXPECT_EQ(help.status, 0);
  EXPECT_NE(help.out.find("--check-config FILE"), std::string::npos) << help.out;
  EXPECT_NE(help.out.find("SIGHUP reloads"), std::string::npos) << help.out;
  const auto version = run_program(server_binary() + " --version");
  EXPECT_EQ(version.status, 0);
  EXPECT_EQ(version.out, std::string("cmdcast-server ") + CMDCAST_VERSION + "\n");
  const auto bad = run_program(server_binary() + " --frobnicate");
  EXPECT_EQ(bad.status, 2);
  EXPECT_NE(bad.err.find("unexpected argument \"--frobnicate\""), std::string::npos) << bad.err;
  EXPECT_NE(bad.err.find("usage:"), std::string::npos) << bad.err;
  EXPECT_EQ(run_program(server_binary()).status, 2);
}

// --- SIGHUP ---------------------------------------------------------------------------------

TEST(Reload, NewMachinesActionsAndTokensApplyToNewRequestsWhileRunsGoOn) {
  loopback_sshd sshd;
  server_process srv(sshd);
  const auto port = srv.port();
  const auto id = post_run(port, run_request("ticks"));
  ws_client olivia(port, "/executions/" + id + "/stream?after=-1");
  ws_options as_victor;
  as_victor.token = viewer_token;
  ws_client victor(port, "/executions/" + id + "/stream?after=-1", as_victor);
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(olivia.next());

  // The administrator adds a machine, an action and a token, and removes the viewer's token.
  const std::string nina = "nina-new-operator-token";
  std::string text = read_file(srv.config_path());
  const std::string victor_block = token_block("victor", viewer_token, "viewer");
  ASSERT_NE(text.find(victor_block), std::string::npos);
  text.replace(text.find(victor_block), victor_block.size(), token_block("nina", nina, "operator"));
  text += sshd.machine_toml("box2") + "[actions.hello]\ncommand = \"echo hello after the reload\"\nmachines = [\"box2\"]\n";
  write_file(srv.config_path(), text);
  ASSERT_TRUE(srv.reload()) << srv.log();

  // The removed token's watcher is let go; the token no longer opens anything.
  const auto seen_by_victor = victor.all();
  EXPECT_EQ(victor.reason().code, websocket::close_code::policy_error);
  EXPECT_EQ(victor.reason().reason, "token revoked");
  EXPECT_FALSE(seen_by_victor.empty());
  EXPECT_EQ(http_request(port, http::verb::get, "/me", viewer_token).status, 401u);

  // The new token, machine and action serve new requests.
  const auto me = http_request(port, http::verb::get, "/me", nina);
  EXPECT_EQ(me.status, 200u);
  EXPECT_NE(me.body.find("\"nina\""), std::string::npos) << me.body;
  const auto machines = http_request(port, http::verb::get, "/machines", nina);
  EXPECT_NE(machines.body.find("\"box2\""), std::string::npos) << machines.body;
  EXPECT_NE(machines.body.find("\"hello\""), std::string::npos) << machines.body;
  ws_options as_nina;
  as_nina.token = nina;
  ws_client run(port, "/machines/box2/commands/stream", as_nina);
  run.send(run_request("hello"));
  const auto hello = run.all();
  EXPECT_EQ(text_of(hello, common::output_stream::out), "hello after the reload\n");
  ASSERT_EQ(of_type<common::exit_event>(hello).size(), 1u);
  EXPECT_EQ(of_type<common::exit_event>(hello)[0].code, 0);

  // The run started before the reload goes on, watched as before, to its end (the watcher
  // count changed too: victor left).
  std::optional<std::string> after_reload;
  do {
    after_reload = olivia.next();
  } while (after_reload && after_reload->find("tick") == std::string::npos);
  ASSERT_TRUE(after_reload) << "no output after the reload";
  olivia.send(R"({"type":"cancel"})");
  auto rest = olivia.all();
  const auto exits = of_type<common::exit_event>(rest);
  ASSERT_EQ(exits.size(), 1u);
  EXPECT_EQ(exits[0].state, common::exit_state::cancelled);
  EXPECT_EQ(olivia.reason().code, websocket::close_code::normal);
  EXPECT_EQ(event_lines(srv.log(), "reloaded").size(), 1u);
  EXPECT_NE(event_lines(srv.log(), "reloaded")[0].find("\"watchers_revoked\":\"1\""), std::string::npos) << srv.log();
}

TEST(Reload, AConfigThatFailsTheCheckIsRefusedWithOneLogLineAndTheOldOneStays) {
  loopback_sshd sshd;
  server_process srv(sshd);
  const auto port = srv.port();
  const std::string good = read_file(srv.config_path());
  std::string broken = good;
  broken.replace(broken.find("[server]\n"), 9, "[server]\nlisen = \"x\"\n");
  broken.replace(broken.find("role = \"operator\""), 17, "role = \"admin\"");
  write_file(srv.config_path(), broken);
  ASSERT_TRUE(srv.reload("reload_refused")) << srv.log();
  const auto refused = event_lines(srv.log(), "reload_refused");
  ASSERT_EQ(refused.size(), 1u);
  EXPECT_NE(refused[0].find(":2:1: server.lisen: unknown key"), std::string::npos) << refused[0];
  EXPECT_NE(refused[0].find("tokens.role: must be"), std::string::npos) << refused[0];
  EXPECT_TRUE(event_lines(srv.log(), "reloaded").empty());
  EXPECT_EQ(metric(port, "cmdcast_config_reloads_refused_total"), 1u);
  EXPECT_EQ(metric(port, "cmdcast_config_reloads_total"), 0u);

  // The old config is in force: its tokens and actions work.
  EXPECT_EQ(http_request(port, http::verb::get, "/me", viewer_token).status, 200u);
  const auto id = post_run(port, run_request("lines"));
  const auto events = poll_to_the_end(port, id);
  EXPECT_EQ(text_of(events, common::output_stream::out), "line 1\nline 2\nline 3\n");

  // Fixed, it is taken.
  write_file(srv.config_path(), good);
  EXPECT_TRUE(srv.reload());
  EXPECT_EQ(metric(port, "cmdcast_config_reloads_total"), 1u);
}

/// A service manager's notify socket (what systemd gives a Type=notify service).
class notify_socket {
 public:
  explicit notify_socket(const std::string& path) : path_(path) {
    fd_ = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::snprintf(a.sun_path, sizeof a.sun_path, "%s", path.c_str());
    EXPECT_EQ(::bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
    timeval patience{10, 0};
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &patience, sizeof patience);
  }
  ~notify_socket() {
    ::close(fd_);
    ::unlink(path_.c_str());
  }
  /// The next message, or "" after 10 s without one.
  std::string next() {
    char buf[4096];
    const auto n = ::recv(fd_, buf, sizeof buf, 0);
    return n > 0 ? std::string(buf, static_cast<std::size_t>(n)) : "";
  }

 private:
  std::string path_;
  int fd_ = -1;
};

TEST(Reload, ReadinessReloadsAndStoppingAreToldToTheServiceManager) {
  loopback_sshd sshd;
  notify_socket manager(sshd.dir() + "/notify");
  server_process srv(sshd, "", {"env", "NOTIFY_SOCKET=" + sshd.dir() + "/notify"});
  EXPECT_EQ(manager.next(), "READY=1");
  // Ready means listening: a request is answered at once.
  EXPECT_EQ(http_request(srv.port(), http::verb::get, "/healthz", "").status, 200u);
  ASSERT_TRUE(srv.reload());
  EXPECT_EQ(manager.next(), "RELOADING=1");
  EXPECT_EQ(manager.next(), "READY=1");
  const int status = srv.terminate();
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  EXPECT_EQ(manager.next(), "STOPPING=1");
}

// --- behind a reverse proxy -----------------------------------------------------------------

TEST(TrustedProxies, ForwardedAddressesAreBelievedOnlyFromATrustedProxy) {
  const std::string run_body = run_request("lines");
  {
    // No proxy is trusted: whatever a client claims, the log shows where it is.
    loopback_sshd sshd;
    server_process srv(sshd);
    const auto a = http_request(srv.port(), http::verb::post, "/machines/box/commands", operator_token, run_body,
                                {{"X-Forwarded-For", "6.6.6.6"}, {"Forwarded", "for=6.6.6.7"}});
    EXPECT_EQ(a.status, 202u) << a.body;
    const auto runs = event_lines(srv.log(), "run");
    ASSERT_EQ(runs.size(), 1u);
    EXPECT_NE(runs[0].find("\"client\":\"127.0.0.1\""), std::string::npos) << runs[0];
    EXPECT_EQ(runs[0].find("6.6.6."), std::string::npos) << runs[0];
    EXPECT_EQ(runs[0].find("\"proxy\""), std::string::npos) << runs[0];
  }
  loopback_sshd sshd;
  server_process srv(sshd, "trusted_proxies = [\"127.0.0.0/8\", \"10.0.0.0/8\"]");
  const auto port = srv.port();
  // Hops are walked from the nearest: the first one not trusted is the client; what a client
  // put before it (6.6.6.6) does not count.
  EXPECT_EQ(http_request(port, http::verb::post, "/machines/box/commands", operator_token, run_body,
                         {{"X-Forwarded-For", "6.6.6.6, 203.0.113.9, 10.1.2.3"}})
                .status,
            202u);
  // Only X-Forwarded-For (what nginx writes) is read: a client's own Forwarded is passed on
  // by nginx untouched, and would be a forgery.
  EXPECT_EQ(http_request(port, http::verb::post, "/machines/box/commands", operator_token, run_body,
                         {{"Forwarded", "for=6.6.6.8"}, {"X-Forwarded-For", "198.51.100.20"}})
                .status,
            202u);
  // A refused request says where it came from, for fail2ban and the like.
  EXPECT_EQ(http_request(port, http::verb::get, "/executions", "wrong-token", "", {{"X-Forwarded-For", "198.51.100.4"}}).status,
            401u);
  EXPECT_EQ(http_request(port, http::verb::post, "/machines/box/commands", viewer_token, run_body,
                         {{"X-Forwarded-For", "198.51.100.5"}})
                .status,
            403u);
  const auto log = srv.log();
  const auto runs = event_lines(log, "run");
  ASSERT_EQ(runs.size(), 2u) << log;
  EXPECT_NE(runs[0].find("\"client\":\"203.0.113.9\",\"proxy\":\"127.0.0.1\""), std::string::npos) << runs[0];
  EXPECT_NE(runs[1].find("\"client\":\"198.51.100.20\",\"proxy\":\"127.0.0.1\""), std::string::npos) << runs[1];
  EXPECT_EQ(log.find("6.6.6."), std::string::npos) << log;
  const auto denied = event_lines(log, "denied");
  ASSERT_EQ(denied.size(), 2u) << log;
  EXPECT_NE(denied[0].find("\"client\":\"198.51.100.4\""), std::string::npos) << denied[0];
  EXPECT_NE(denied[0].find("\"status\":\"401\",\"method\":\"GET\",\"path\":\"/executions\""), std::string::npos) << denied[0];
  EXPECT_NE(denied[1].find("\"client\":\"198.51.100.5\""), std::string::npos) << denied[1];
  EXPECT_NE(denied[1].find("\"status\":\"403\""), std::string::npos) << denied[1];
  EXPECT_EQ(metric(port, "cmdcast_requests_denied_total"), 2u);
  EXPECT_EQ(log.find(viewer_token), std::string::npos) << "a token in the log";
  EXPECT_EQ(log.find("wrong-token"), std::string::npos) << "a token in the log";
}

TEST(TrustedProxies, BehindAProxyThatWritesForwardedOnlyForwardedIsRead) {
  loopback_sshd sshd;
  server_process srv(sshd, "trusted_proxies = [\"127.0.0.1\"]\nforwarded_header = \"Forwarded\"");
  EXPECT_EQ(http_request(srv.port(), http::verb::post, "/machines/box/commands", operator_token, run_request("lines"),
                         {{"Forwarded", "for=\"[2001:db8::7]:4711\";proto=https"}, {"X-Forwarded-For", "6.6.6.6"}})
                .status,
            202u);
  const auto runs = event_lines(srv.log(), "run");
  ASSERT_EQ(runs.size(), 1u);
  EXPECT_NE(runs[0].find("\"client\":\"2001:db8::7\",\"proxy\":\"127.0.0.1\""), std::string::npos) << runs[0];
  const auto bad = server::parse_config("[server]\nanonymous = \"viewer\"\nforwarded_header = \"X-Real-IP\"\n", "f.toml");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.error(), "f.toml:3:20: server.forwarded_header: must be \"X-Forwarded-For\" or \"Forwarded\"");
  const auto by_name = server::parse_config("[server]\nanonymous = \"viewer\"\ntrusted_proxies = [\"proxy.example\"]\n", "t.toml");
  ASSERT_FALSE(by_name.ok());
  EXPECT_EQ(by_name.error(), "t.toml:3:19: server.trusted_proxies: \"proxy.example\" is not an address or CIDR block (10.0.0.0/8)");
}

TEST(TrustedProxies, AnonymousAccessIsNotForRequestsThroughAProxy) {
  loopback_sshd sshd;
  server_process srv(sshd, "anonymous = \"operator\"\ntrusted_proxies = [\"127.0.0.1\"]");
  EXPECT_EQ(http_request(srv.port(), http::verb::get, "/me", "").status, 200u);
  // A proxy on this machine would make everyone a loopback client.
  for (const auto& header : {std::pair<std::string, std::string>{"X-Forwarded-For", "127.0.0.1"},
                             std::pair<std::string, std::string>{"Forwarded", "for=192.0.2.1"}}) {
    const auto proxied = http_request(srv.port(), http::verb::get, "/me", "", "", {header});
    EXPECT_EQ(proxied.status, 401u) << header.first;
    EXPECT_NE(proxied.body.find("anonymous access is for clients on this machine, not through a proxy"), std::string::npos)
        << proxied.body;
  }
}

}  // namespace
}  // namespace cmdcast::testing
