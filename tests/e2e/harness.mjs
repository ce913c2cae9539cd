// The browser end-to-end harness: a private loopback sshd (tools/lib/loopback-sshd), the real
// cmdcast-server serving the real WebAssembly build, and Debian's Chromium driven headless by
// playwright-core. Paths come from the environment ctest sets (see tests/e2e/CMakeLists.txt).
import { execFileSync, spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { chmodSync, mkdtempSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import http from "node:http";
import https from "node:https";
import net from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { chromium } from "playwright-core";

export const root = path.resolve(new URL("../..", import.meta.url).pathname);
const serverBinary = process.env.CMDCAST_SERVER_BINARY ?? `${root}/build/dev/server/cmdcast-server`;
const webRoot = process.env.CMDCAST_WEB_ROOT ?? `${root}/build/wasm/web`;
export const artifacts = process.env.CMDCAST_E2E_ARTIFACTS ?? `${root}/build/e2e-artifacts`;
export const operatorToken = "e2e-operator-token";
export const viewerToken = "e2e-viewer-token";
export const approverToken = "e2e-approver-token";  // a second operator, "oscar"

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export async function freePort() {
  return new Promise((resolve) => {
    const s = net.createServer();
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

const sha256 = (text) => createHash("sha256").update(text).digest("hex");

/// The sshd, and a cmdcast-server that can be killed and started again on the same port and
/// audit database.
export class Stack {
  /// `extraToml` adds actions (benchmarks), `serverToml` [server] keys; `tls` serves HTTPS and
  /// WSS with a certificate made now (this.ca trusts it); `origins` are more allowed_origins
  /// (a page served through a proxy). Fleet runs: `machines` are more ids on the same loopback
  /// sshd, `down` ids of machines nobody answers for (port 1), `groups` {id: [machine ids]}.
  async start({ extraToml = "", serverToml = "", tls = false, origins = [], machines = [], down = [], groups = {} } = {}) {
    this.dir = mkdtempSync(path.join(tmpdir(), "cmdcast-e2e-"));
    chmodSync(this.dir, 0o755);  // the sshd reads the authorized keys below as cmdcast-test
    this.sshdDir = `${this.dir}/ssh`;
    const sshPort = execFileSync(`${root}/tools/lib/loopback-sshd`, ["start", this.sshdDir, "cmdcast-test"]).toString().trim();
    this.port = await freePort();
    this.tls = tls;
    this.url = `${tls ? "https" : "http"}://127.0.0.1:${this.port}`;
    if (tls) {
      execFileSync("openssl", ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                               "-keyout", `${this.dir}/key.pem`, "-out", `${this.dir}/cert.pem`, "-days", "1",
                               "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
                   { stdio: "ignore" });
      this.ca = readFileSync(`${this.dir}/cert.pem`);
      serverToml += `\ntls_cert = "${this.dir}/cert.pem"\ntls_key = "${this.dir}/key.pem"\n`;
    }
    const user = "cmdcast-test";  // made by tools/setup: its /bin/sh runs no login script
    const machineToml = (id, port) => `
[[machines]]
id = "${id}"
name = "${id}"
host = "127.0.0.1"
port = ${port}
user = "${user}"
identity = "${this.sshdDir}/client"
known_hosts = "${this.sshdDir}/known_hosts"
`;
    extraToml += machines.map((id) => machineToml(id, sshPort)).join("") + down.map((id) => machineToml(id, 1)).join("");
    if (Object.keys(groups).length) {
      extraToml += "\n[groups]\n" + Object.entries(groups).map(([g, ids]) => `${g} = ${JSON.stringify(ids)}\n`).join("");
    }
    writeFileSync(`${this.dir}/cmdcast.toml`, `
[server]
listen = "127.0.0.1:${this.port}"
web_root = "${webRoot}"
allowed_origins = ${JSON.stringify([this.url, ...origins])}
audit_db = "${this.dir}/cmdcast.db"
${serverToml}

[[tokens]]
name = "olivia"
sha256 = "${sha256(operatorToken)}"
role = "operator"

[[tokens]]
name = "victor"
sha256 = "${sha256(viewerToken)}"
role = "viewer"

[[tokens]]
name = "oscar"
sha256 = "${sha256(approverToken)}"
role = "operator"

[[machines]]
id = "box"
name = "loopback box"
host = "127.0.0.1"
port = ${sshPort}
user = "${user}"
identity = "${this.sshdDir}/client"
known_hosts = "${this.sshdDir}/known_hosts"

[actions.lines]
command = "for i in $(seq 1 {count}); do echo \\"line $i\\"; sleep 0.05; done; echo 'to stderr' >&2"
params = { count = "^[0-9]{1,4}$" }

[actions.colours]
command = "printf '\\\\033[32mgreen\\\\033[0m plain \\\\033[1;31mbold red\\\\033[0m\\\\n'; for p in 10 50 100; do printf 'progress %s%%\\\\r' $p; sleep 0.1; done; echo; echo done"

[actions.ticks]
command = "for i in $(seq 1 600); do echo \\"tick $i\\"; sleep 0.1; done"

[actions.apt_reinstall]
command = "DEBIAN_FRONTEND=noninteractive sudo -n apt-get install --reinstall -y {package}"
params = { package = "^[a-z0-9][a-z0-9+.-]{0,63}$" }
progress = "apt"
${extraToml}
`);
    await this.startServer();
    return this;
  }

  async startServer() {
    this.server = spawn(serverBinary, ["--config", `${this.dir}/cmdcast.toml`], { stdio: ["ignore", "ignore", "pipe"] });
    this.log = "";
    this.server.stderr.on("data", (d) => { this.log += d; });
    for (let i = 0; i < 200; ++i) {
      try {
        const r = await this.request("/healthz");
        if (r.status === 200) return;
      } catch {}
      await sleep(25);
    }
    throw new Error(`cmdcast-server did not start:\n${this.log}`);
  }

  async killServer() {
    const exited = new Promise((r) => this.server.once("exit", r));
    this.server.kill("SIGKILL");
    await exited;
  }

  async stop() {
    if (this.server && this.server.exitCode === null) await this.killServer();
    execFileSync(`${root}/tools/lib/loopback-sshd`, ["stop", this.sshdDir]);
    rmSync(this.dir, { recursive: true, force: true });
  }

  /// One request to the server, trusting its own certificate on TLS: {status, body}.
  request(target, { method = "GET", headers = {}, body } = {}) {
    return new Promise((resolve, reject) => {
      const req = (this.tls ? https : http).request(`${this.url}${target}`, { method, headers, ca: this.ca }, (res) => {
        let text = "";
        res.setEncoding("utf8");
        res.on("data", (d) => { text += d; });
        res.on("end", () => resolve({ status: res.statusCode, body: text }));
      });
      req.on("error", reject);
      req.end(body);
    });
  }

  /// POST /machines/box/commands as the operator: the execution id.
  async run(action, params = {}) {
    const r = await this.request("/machines/box/commands", {
      method: "POST",
      headers: { Authorization: `Bearer ${operatorToken}`, "Content-Type": "application/json" },
      body: JSON.stringify({ action_type: action, params }),
    });
    if (r.status !== 202) throw new Error(`run ${action}: ${r.status} ${r.body}`);
    return JSON.parse(r.body).execution_id;
  }
}

/// Debian's nginx in front of a Stack's server, running the site cmdcast ships
/// (deploy/nginx/cmdcast.conf) with only the lines an admin edits substituted: its ports, a
/// certificate made now for 127.0.0.1, and the upstream. `passUpgrades: false` leaves out the
/// Upgrade and Connection lines: the usual misconfiguration. Own folder, own process group.
export class Nginx {
  async start({ upstreamPort, port, passUpgrades = true }) {
    this.dir = mkdtempSync(path.join(tmpdir(), "cmdcast-e2e-nginx-"));
    chmodSync(this.dir, 0o755);  // the worker (nobody) uses the temp paths here
    execFileSync("openssl", ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                             "-keyout", `${this.dir}/key.pem`, "-out", `${this.dir}/cert.pem`, "-days", "1",
                             "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
                 { stdio: "ignore" });
    this.port = port ?? await freePort();
    this.plainPort = await freePort();
    this.url = `https://127.0.0.1:${this.port}`;
    this.tls = true;  // for openPage: the browser takes this certificate
    const edits = [
      ["listen 443 ssl http2;", `listen 127.0.0.1:${this.port} ssl http2;`],
      ["listen [::]:443 ssl http2;", null],
      ["listen 80;", `listen 127.0.0.1:${this.plainPort};`],
      ["listen [::]:80;", null],
      ["/etc/ssl/certs/cmdcast.example.org.pem", `${this.dir}/cert.pem`],
      ["/etc/ssl/private/cmdcast.example.org.key", `${this.dir}/key.pem`],
      ["server 127.0.0.1:8080;", `server 127.0.0.1:${upstreamPort};`],
      ...(passUpgrades ? [] : [["proxy_set_header Upgrade ", null], ["proxy_set_header Connection ", null]]),
    ];
    let site = readFileSync(`${root}/deploy/nginx/cmdcast.conf`, "utf8");
    for (const [from, to] of edits) {
      if (!site.includes(from)) throw new Error(`deploy/nginx/cmdcast.conf has no "${from}" any more: update the test`);
      site = to === null ? site.split("\n").filter((l) => !l.includes(from)).join("\n") : site.split(from).join(to);
    }
    writeFileSync(`${this.dir}/cmdcast.conf`, site);
    const temp = ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"].map((k) => `  ${k}_temp_path ${this.dir}/${k};`).join("\n");
    writeFileSync(`${this.dir}/nginx.conf`, `daemon off;
worker_processes 1;
pid ${this.dir}/nginx.pid;
error_log ${this.dir}/error.log notice;
events { worker_connections 1024; }
http {
  include /etc/nginx/mime.types;
  log_format cmdcast '$remote_addr "$request" $status $server_protocol';
  access_log ${this.dir}/access.log cmdcast;
${temp}
  include ${this.dir}/cmdcast.conf;
}
`);
    this.process = spawn("/usr/sbin/nginx", ["-p", this.dir, "-c", `${this.dir}/nginx.conf`],
                         { stdio: ["ignore", "ignore", "pipe"], detached: true });
    this.stderr = "";
    this.process.stderr.on("data", (d) => { this.stderr += d; });
    for (let i = 0; i < 400; ++i) {
      if (this.process.exitCode !== null) break;
      if (await accepts(this.port)) return this;
      await sleep(25);
    }
    const why = `${this.stderr}${this.errorLog()}`;
    await this.stop();
    throw new Error(`nginx did not start:\n${why}`);
  }

  accessLog() { try { return readFileSync(`${this.dir}/access.log`, "utf8"); } catch { return ""; } }
  errorLog() { try { return readFileSync(`${this.dir}/error.log`, "utf8"); } catch { return ""; } }

  /// Fast shutdown (the master stops its worker); the whole group is killed should it hang.
  async stop() {
    if (this.process && this.process.exitCode === null && this.process.signalCode === null) {
      const exited = new Promise((r) => this.process.once("exit", r));
      this.process.kill("SIGTERM");
      if (await Promise.race([exited.then(() => true), sleep(5000).then(() => false)]) === false) {
        process.kill(-this.process.pid, "SIGKILL");
        await exited;
      }
    }
    rmSync(this.dir, { recursive: true, force: true });
  }
}

function accepts(port) {
  return new Promise((resolve) => {
    const s = net.connect(port, "127.0.0.1");
    s.once("connect", () => { s.destroy(); resolve(true); });
    s.once("error", () => resolve(false));
  });
}

export async function launchBrowser() {
  return chromium.launch({
    executablePath: "/usr/bin/chromium",
    args: ["--no-sandbox", "--use-angle=swiftshader", "--enable-unsafe-swiftshader", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--no-first-run"],
  });
}

/// A page of the web client with the token already entered once (kept in localStorage).
/// `viewport`, `scale`, `touch` (a phone: touch and the mobile viewport rules), `colorScheme`
/// and `permissions` (e.g. the clipboard's) make the browser the test needs; `init` is a
/// function run in the page before its scripts (stubs).
export async function openPage(browser, stack, route = "",
                               { token = operatorToken, noWebSocket = false, waitForMachines = true, scale = 1,
                                 viewport = { width: 1280, height: 800 }, touch = false, colorScheme = "dark",
                                 permissions = [], init = null } = {}) {
  // A TLS stack's certificate is its own: the browser is told to take it, as a user who
  // imported the private CA would.
  const context = await browser.newContext({ viewport, deviceScaleFactor: scale, isMobile: touch, hasTouch: touch,
                                             colorScheme, ignoreHTTPSErrors: Boolean(stack.tls) });
  if (permissions.length) await context.grantPermissions(permissions, { origin: stack.url });
  const page = await context.newPage();
  page.on("pageerror", (e) => console.error("page error:", e.message));
  await page.addInitScript(([t, noWs]) => {
    if (t) localStorage.setItem("cmdcast.token", t);
    if (noWs) delete window.WebSocket;
  }, [token, noWebSocket]);
  if (init) await page.addInitScript(init);
  await page.goto(`${stack.url}/${route}`);
  await page.waitForFunction((machines) => window.cmdcast && (!machines || window.cmdcast.state().machines > 0),
                             waitForMachines, { timeout: 20000 });
  return page;
}

/// What the page shows (null while it is still loading).
export const state = (page) => page.evaluate(() => (window.cmdcast ? window.cmdcast.state() : null));

/// Waits until `predicate(state)` holds, polling the page's state.
export async function waitForState(page, predicate, what, timeoutMs = 30000) {
  const deadline = Date.now() + timeoutMs;
  let last;
  while (Date.now() < deadline) {
    last = await state(page);
    if (last && predicate(last)) return last;
    await sleep(50);
  }
  throw new Error(`timed out waiting for ${what}; last state: ${JSON.stringify(last).slice(0, 2000)}`);
}

/// Clicks the centre of a control the UI reports in state().items.
export async function click(page, item) {
  const s = await waitForState(page, (st) => st.items[item], `the control ${item}`);
  const [x, y, w, h] = s.items[item];
  // As a person clicks: move there, then press and release, each seen by its own frame.
  await page.mouse.move(x + w / 2, y + h / 2);
  await sleep(50);
  await page.mouse.click(x + w / 2, y + h / 2, { delay: 50 });
}

export async function screenshot(page, name) {
  mkdirSync(artifacts, { recursive: true });
  await page.screenshot({ path: `${artifacts}/${name}.png` });
}
