// The web client end to end: the real WebAssembly build in headless Chromium, against the real
// cmdcast-server and a loopback sshd. Each test asserts what a user would check on the page,
// read through window.cmdcast.state(); screenshots go to the artifacts folder.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { execFileSync } from "node:child_process";
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";

import {
  Nginx, Stack, approverToken, artifacts, click, freePort, launchBrowser, openPage, operatorToken, screenshot, state,
  waitForState, viewerToken,
} from "./harness.mjs";

let stack, browser;
before(async () => {
  stack = await new Stack().start();
  browser = await launchBrowser();
});
after(async () => {
  await browser?.close();
  await stack?.stop();
});

const expectedLines = (n) => Array.from({ length: n }, (_, i) => `line ${i + 1}`);

test("run an action from the page and see its output stream in, then its exit", async () => {
  const page = await openPage(browser, stack);
  await click(page, "machine:box");
  await click(page, "action:box/lines");
  await click(page, "param:box/lines/count");
  await page.keyboard.type("40");
  await click(page, "run:box/lines");
  // Output arrives while the command runs (40 lines take 2 s).
  const running = await waitForState(page, (s) => s.lines > 0 && s.exit === null, "the first lines before the exit");
  assert.equal(running.transport, "websocket");
  assert.match(running.route, /^#\/executions\//);
  const done = await waitForState(page, (s) => s.exit !== null, "the exit");
  assert.equal(done.exit.data, 0);
  assert.equal(done.exit.state, "exited");
  assert.deepEqual(done.tail.slice(-3), ["line 39", "line 40", "to stderr"]);
  assert.equal(done.lines, 41);
  assert.equal(await page.evaluate(() => location.hash), done.route, "the address bar links to the execution");
  await screenshot(page, "web-run");
});

test("a page without a token asks for one once, and keeps it out of the URL", async () => {
  const page = await openPage(browser, stack, "", { token: "", waitForMachines: false });
  await waitForState(page, (s) => s.needs_token, "the token prompt");
  await click(page, "token");
  await page.keyboard.type(operatorToken);
  await click(page, "use_token");
  const s = await waitForState(page, (st) => st.machines > 0 && !st.needs_token, "the machines after the token");
  assert.equal(s.user, "olivia");
  assert.equal(s.can_run, true);
  assert.ok(!page.url().includes(operatorToken));
  // Kept for the next visit.
  await page.reload();
  await waitForState(page, (st) => st.machines > 0, "the machines after a reload");
});

test("cancel from the page stops the command", async () => {
  const id = await stack.run("ticks");
  const page = await openPage(browser, stack, `#/executions/${id}`);
  await waitForState(page, (s) => s.lines >= 3, "a few ticks");
  await click(page, "cancel");
  const done = await waitForState(page, (s) => s.exit !== null, "the exit after cancel");
  assert.equal(done.exit.state, "cancelled");
  assert.equal(done.exit.data, null);
  assert.equal(done.exit.signal, "TERM");
});

test("a machine's deep link opens onto it; find in output finds every match", async () => {
  const page = await openPage(browser, stack, "#/machines/box");
  const opened = await state(page);
  assert.equal(opened.selected_machine, "box");
  assert.equal(opened.route, "#/machines/box");
  const id = await stack.run("lines", { count: "30" });
  await page.evaluate((h) => { location.hash = h; }, `#/executions/${id}`);
  await waitForState(page, (s) => s.exit !== null && s.execution_id === id, "the execution the hash names");
  await click(page, "find");
  await page.keyboard.type("line 2");
  await press(page, "Enter");
  // "line 2" and "line 20".."line 29": 11 lines; the first is shown, and follow-tail stops.
  const found = await waitForState(page, (s) => s.find.matches > 0 && s.find.focused, "the matches");
  assert.deepEqual(found.find, { matches: 11, current: 0, focused: true });
  assert.equal(found.follow_tail, false);
  await click(page, "find_next");
  await waitForState(page, (s) => s.find.current === 1, "the next match");
});

const pause = (ms) => new Promise((r) => setTimeout(r, ms));
/// A key as a person presses it: held 200 ms, and on until the page has drawn two frames since
/// it went down (ImGui 1.86 misses a key pressed and released within one frame; on a loaded
/// machine a frame can take longer than 200 ms).
/// `keys` as press() takes them: "Enter", or with modifiers, "Shift+Enter".
async function press(page, keys) {
  const parts = keys.split("+");
  for (const k of parts) await page.keyboard.down(k);
  const down = (await state(page)).frames;
  await pause(200);
  await waitForState(page, (s) => s.frames >= down + 2, `two frames drawn with ${keys} down`);
  for (const k of parts.reverse()) await page.keyboard.up(k);
}

/// Where column `column` of output line `line` is on the page (CSS px), from the first line
/// on screen as the page reports it.
async function textPoint(page, line, column) {
  const s = await state(page);
  const [x, y, charWidth, lineHeight] = s.items.output_text;
  return { x: x + (column + 0.25) * charWidth, y: y + (line - s.visible_lines[0] + 0.5) * lineHeight };
}

test("the keyboard: Ctrl F finds, not the browser; Enter and Shift Enter step, Esc leaves; PgUp, Home and End scroll", async () => {
  const id = await stack.run("lines", { count: "120" });
  const page = await openPage(browser, stack, `#/executions/${id}`);
  await waitForState(page, (s) => s.exit !== null, "the exit");
  await page.evaluate(() => {
    window.keysSeen = [];
    window.addEventListener("keydown", (e) => window.keysSeen.push([e.key, e.defaultPrevented]));
  });
  await page.keyboard.down("Control");
  await press(page, "f");
  await page.keyboard.up("Control");
  await waitForState(page, (s) => s.find.focused, "the find field focused by Ctrl+F");
  assert.deepEqual(await page.evaluate(() => window.keysSeen.filter(([k]) => k === "f")), [["f", true]],
                   "the browser's own find bar is not opened");
  await page.keyboard.type("line 11");  // line 11 and line 110..119: 11 matches
  await press(page, "Enter");
  // (After each Enter the field takes the keyboard back within a few frames.)
  let s = await waitForState(page, (st) => st.find.matches === 11 && st.find.focused, "the matches");
  assert.equal(s.find.current, 0);
  assert.equal(s.follow_tail, false);
  await press(page, "Enter");
  await waitForState(page, (st) => st.find.current === 1 && st.find.focused, "Enter: the next match");
  await press(page, "Shift+Enter");
  await waitForState(page, (st) => st.find.current === 0 && st.find.focused, "Shift+Enter: the previous match");
  await press(page, "Escape");
  s = await waitForState(page, (st) => !st.find.focused, "Esc leaves the find field");
  // The keys now scroll the output: End follows the tail again, PgUp and Home leave it.
  await press(page, "End");
  s = await waitForState(page, (st) => st.follow_tail && st.visible_lines[1] === st.lines, "End: the tail");
  const bottom = s.visible_lines[0];
  await press(page, "PageUp");
  s = await waitForState(page, (st) => !st.follow_tail && st.visible_lines[0] < bottom, "PgUp: a page up");
  await press(page, "Home");
  s = await waitForState(page, (st) => st.visible_lines[0] === 0, "Home: the first line");
  await press(page, "PageDown");
  await waitForState(page, (st) => st.visible_lines[0] > 0, "PgDn: a page down");
});

test("selecting output with the mouse: a drag to the character, a word, a line, shift-click; Ctrl C copies plain text", async () => {
  const id = await stack.run("lines", { count: "20" });
  const page = await openPage(browser, stack, `#/executions/${id}`, { permissions: ["clipboard-read", "clipboard-write"] });
  const done = await waitForState(page, (s) => s.exit !== null && s.visible_lines[1] === s.lines, "the exit");
  const lines = done.tail;
  const at = (line) => lines.indexOf(line);
  // A drag from "line 3", column 2 to "line 5", column 4.
  let p = await textPoint(page, at("line 3"), 2);
  await page.mouse.move(p.x, p.y);
  await pause(50);
  await page.mouse.down();
  await pause(50);
  for (const line of ["line 4", "line 5"]) {
    p = await textPoint(page, at(line), 4);
    await page.mouse.move(p.x, p.y, { steps: 3 });
    await pause(50);
  }
  await page.mouse.up();
  let s = await waitForState(page, (st) => st.selection === "ne 3\nline 4\nline", "the dragged selection");
  // Ctrl+C: the same text on the clipboard, no escape sequences.
  await page.keyboard.down("Control");
  await press(page, "c");
  await page.keyboard.up("Control");
  await pause(200);
  assert.equal(await page.evaluate(() => navigator.clipboard.readText()), "ne 3\nline 4\nline");
  // Shift-click extends it to "line 6", column 2.
  p = await textPoint(page, at("line 6"), 2);
  await page.keyboard.down("Shift");
  await page.mouse.click(p.x, p.y, { delay: 50 });
  await page.keyboard.up("Shift");
  s = await waitForState(page, (st) => st.selection === "ne 3\nline 4\nline 5\nli", "the shift-click");
  // A double-click selects a word, a triple-click the line: clicks in frames of their own,
  // within the double-click time (0.5 s), nothing waited for in between.
  p = await textPoint(page, at("line 12"), 1);
  const clicks = async (n) => {
    for (let i = 0; i < n; ++i) {
      if (i) await pause(70);
      await page.mouse.click(p.x, p.y, { delay: 30 });
    }
  };
  await clicks(2);
  s = await waitForState(page, (st) => st.selection === "line", "the double-clicked word");
  await pause(700);  // past the double-click time: the next click counts from one
  await clicks(3);
  s = await waitForState(page, (st) => st.selection === "line 12", "the triple-clicked line");
  // A plain click clears it.
  await pause(700);
  await page.mouse.click(p.x, p.y, { delay: 30 });
  await waitForState(page, (st) => st.selection === "", "no selection after a click");
});

test("on a phone the layout is one column, the output full width, swiping scrolls it, a long press selects, and there is a way back", async () => {
  const id = await stack.run("lines", { count: "150" });
  const page = await openPage(browser, stack, `#/executions/${id}`,
                              { viewport: { width: 390, height: 844 }, scale: 3, touch: true });
  let s = await waitForState(page, (st) => st.exit !== null && st.items.output, "the output");
  assert.equal(s.layout, "narrow");
  const [ox, , ow] = s.items.output;
  assert.ok(ox < 20 && ow > 350, `the output is full width: ${s.items.output}`);
  // Text follows the device pixel ratio: the canvas is drawn in device pixels.
  assert.deepEqual(await page.evaluate(() => [document.querySelector("canvas").width]), [1170]);
  await screenshot(page, "web-phone");
  // A swipe down the output scrolls back through it, as a finger expects.
  const cdp = await page.context().newCDPSession(page);
  const touch = (type, y) => cdp.send("Input.dispatchTouchEvent", {
    type, touchPoints: type === "touchEnd" ? [] : [{ x: 200, y }] });
  const before = s.visible_lines[0];
  await touch("touchStart", 300);
  for (let y = 320; y <= 700; y += 20) {
    await touch("touchMove", y);
    await pause(16);
  }
  await touch("touchEnd");
  s = await waitForState(page, (st) => !st.follow_tail && st.visible_lines[0] < before - 10, "the output scrolled back");
  // A long press, then a drag, selects: from "line N" column 0 to two lines further, column 4.
  await pause(1500);  // the glide is over
  s = await state(page);
  const first = s.visible_lines[0];
  const from = await textPoint(page, first + 2, 0), to = await textPoint(page, first + 4, 4);
  await cdp.send("Input.dispatchTouchEvent", { type: "touchStart", touchPoints: [{ x: from.x, y: from.y }] });
  await pause(700);
  for (const f of [0.5, 1]) {
    await cdp.send("Input.dispatchTouchEvent", { type: "touchMove",
      touchPoints: [{ x: from.x + (to.x - from.x) * f, y: from.y + (to.y - from.y) * f }] });
    await pause(60);
  }
  await touch("touchEnd");
  const lineAt = (i) => `line ${i + 1}`;  // output line i is "line i+1"
  await waitForState(page, (st) => st.selection === `${lineAt(first + 2)}\n${lineAt(first + 3)}\n${lineAt(first + 4).slice(0, 4)}`,
                     "the long-press selection");
  // Back to the lists, then the execution again, by taps.
  let [bx, by, bw, bh] = s.items.back;
  await page.touchscreen.tap(bx + bw / 2, by + bh / 2);
  s = await waitForState(page, (st) => !st.items.output && st.items[`execution:${id}`], "the lists");
  const [, , lw] = s.items["machine:box"];
  assert.ok(lw > 300, "the lists are full width too");
  [bx, by, bw, bh] = s.items[`execution:${id}`];
  await page.touchscreen.tap(bx + bw / 2, by + bh / 2);
  await waitForState(page, (st) => st.items.output && st.items.back, "the output again");
});

test("screen readers get the lines on screen in a role=log region, announced while following", async () => {
  const id = await stack.run("lines", { count: "120" });
  const page = await openPage(browser, stack, `#/executions/${id}`);
  const s = await waitForState(page, (st) => st.exit !== null && st.visible_lines[1] === st.lines, "the exit");
  const mirror = () => page.evaluate(() => {
    const log = document.querySelector('[role="log"]');
    return { lines: [...log.children].map((d) => d.textContent), live: log.getAttribute("aria-live"),
             label: log.getAttribute("aria-label") };
  });
  // (The region is brought up to date four times a second at most.)
  let m, first, end;
  for (let i = 0; i < 50; ++i) {
    m = await mirror();
    [first, end] = (await state(page)).visible_lines;
    if (m.lines.at(-1) === "to stderr" && m.lines.length === end - first) break;
    await pause(100);
  }
  assert.equal(m.lines.length, end - first, "the lines on screen, not the 121 held");
  assert.ok(m.lines.length < 100);
  assert.equal(m.lines.at(-1), "to stderr");
  assert.equal(m.lines.at(-2), "line 120");
  assert.equal(m.live, "polite");
  assert.equal(m.label, "command output");
  // Scrolled up, the region follows what is shown and stops announcing.
  await press(page, "Home");
  await waitForState(page, (st) => st.visible_lines[0] === 0, "the top");
  await page.waitForFunction(() => document.querySelector('[role="log"]').firstChild?.textContent === "line 1");
  m = await mirror();
  assert.equal(m.lines[0], "line 1");
  assert.equal(m.live, "off");
});

test("keyboard and screen-reader users reach every control as a labelled button and run a command without a mouse", async () => {
  const page = await openPage(browser, stack);
  const focused = () => page.evaluate(() => document.activeElement?.getAttribute("aria-label") ?? "");
  const tabTo = async (label) => {
    const seen = [];
    for (let i = 0; i < 30; ++i) {
      seen.push(await focused());
      if (seen.at(-1) === label) return;
      await press(page, "Tab");
    }
    assert.fail(`Tab never reached "${label}" (focus went ${seen.join(", ")}); the buttons: ${await page.evaluate(() =>
      [...document.querySelectorAll("#controls button")].map((b) => b.getAttribute("aria-label")).join(", "))}`);
  };
  await tabTo("Machine box");
  await press(page, "Enter");
  await waitForState(page, (s) => s.selected_machine === "box", "the machine selected from the keyboard");
  await tabTo("Action lines on box");
  await press(page, "Enter");
  await waitForState(page, (s) => s.items["param:box/lines/count"], "the action opened");
  await tabTo("count, a parameter of lines");
  await press(page, "Enter");
  await waitForState(page, (s) => s.typing, "typing into the param");
  await page.keyboard.type("3", { delay: 100 });
  await press(page, "Enter");
  await waitForState(page, (s) => !s.typing, "the param entered");
  await tabTo("Run lines on box");
  await press(page, "Enter");
  const done = await waitForState(page, (s) => s.exit !== null, "the exit of the run started from the keyboard");
  assert.deepEqual(done.tail, ["line 1", "line 2", "line 3", "to stderr"]);
  await tabTo("Copy output");
  assert.ok(await page.evaluate(() => document.querySelector('#controls')?.getAttribute("role") === "toolbar"));
});

test("under prefers-color-scheme: light the page is light", async () => {
  const id = await stack.run("lines", { count: "10" });
  const brightness = async (page, name) => {
    await screenshot(page, name);
    // ImageMagick's mean of the whole screenshot, 0 (black) to 1 (white).
    return Number(execFileSync("convert", [`${artifacts}/${name}.png`, "-colorspace", "Gray", "-format", "%[fx:mean]", "info:"]));
  };
  const light = await openPage(browser, stack, `#/executions/${id}`, { colorScheme: "light" });
  assert.equal((await waitForState(light, (s) => s.exit !== null, "the exit")).theme, "light");
  const dark = await openPage(browser, stack, `#/executions/${id}`, { colorScheme: "dark" });
  assert.equal((await waitForState(dark, (s) => s.exit !== null, "the exit")).theme, "dark");
  const [l, d] = [await brightness(light, "web-light"), await brightness(dark, "web-dark")];
  assert.ok(l > 0.7 && d < 0.3, `light ${l}, dark ${d}`);
});

test("two pages watching one execution show the same lines", async () => {
  const id = await stack.run("lines", { count: "30" });
  const a = await openPage(browser, stack, `#/executions/${id}`);
  const b = await openPage(browser, stack, `#/executions/${id}`, { token: viewerToken });
  const [sa, sb] = await Promise.all([
    waitForState(a, (s) => s.exit !== null, "page A sees the exit"),
    waitForState(b, (s) => s.exit !== null, "page B sees the exit"),
  ]);
  assert.equal(sa.execution_id, id);
  assert.deepEqual(sa.tail, sb.tail);
  assert.deepEqual(sa.tail.slice(-31, -1), expectedLines(30));
  assert.equal(sb.can_run, false, "the viewer is not offered Run");
});

test("the page's WebSocket is compressed and shows what an uncompressed poller reads", async () => {
  const page = await openPage(browser, stack);
  // Chromium's own record of the handshake: the extension the server agreed to.
  const cdp = await page.context().newCDPSession(page);
  await cdp.send("Network.enable");
  const handshakes = [];
  cdp.on("Network.webSocketHandshakeResponseReceived", (e) => handshakes.push(e.response.headers));
  const id = await stack.run("lines", { count: "100" });
  await page.evaluate((h) => { location.hash = h; }, `#/executions/${id}`);
  const done = await waitForState(page, (s) => s.exit !== null && s.execution_id === id, "the exit");
  assert.equal(done.transport, "websocket");
  const extensions = handshakes.map((h) => h["Sec-WebSocket-Extensions"] ?? h["sec-websocket-extensions"]);
  assert.ok(extensions.includes("permessage-deflate; server_no_context_takeover; client_no_context_takeover"),
            JSON.stringify(handshakes));
  // The same text as the events served plain, over HTTP.
  const polled = await (await fetch(`${stack.url}/executions/${id}/events?after=-1`,
                                    { headers: { Authorization: `Bearer ${viewerToken}` } })).json();
  const text = polled.events.filter((e) => e.type === "stdout").map((e) => e.data).join("");
  assert.deepEqual(done.tail.slice(-31, -1), text.split("\n").slice(-31, -1));
  assert.deepEqual(done.tail.slice(-31, -1), expectedLines(100).slice(-30));
});

test("on a HiDPI screen, and after the window is resized, the controls are where they are drawn", async () => {
  const page = await openPage(browser, stack, "", { scale: 2 });
  await page.setViewportSize({ width: 900, height: 600 });
  await new Promise((r) => setTimeout(r, 300));
  await click(page, "machine:box");
  await click(page, "action:box/lines");
  await click(page, "param:box/lines/count");
  await page.keyboard.type("5");
  await click(page, "run:box/lines");
  const done = await waitForState(page, (s) => s.exit !== null, "the exit");
  assert.deepEqual(done.tail, [...expectedLines(5), "to stderr"]);
  // The canvas is drawn in device pixels: twice the CSS size.
  const canvas = await page.evaluate(() => [document.querySelector("canvas").width, document.querySelector("canvas").height]);
  assert.deepEqual(canvas, [1800, 1200]);
  await screenshot(page, "web-hidpi");
});

test("a browser without WebSocket falls back to polling and still shows everything", async () => {
  const page = await openPage(browser, stack, "", { noWebSocket: true });
  await click(page, "machine:box");
  await click(page, "action:box/lines");
  await click(page, "param:box/lines/count");
  await page.keyboard.type("25");
  await click(page, "run:box/lines");
  const running = await waitForState(page, (s) => s.execution_id && s.exit === null && s.lines > 0, "output while running");
  assert.equal(running.transport, "polling");
  await screenshot(page, "web-polling");
  const done = await waitForState(page, (s) => s.exit !== null, "the exit");
  assert.deepEqual(done.tail.slice(-26, -1), expectedLines(25));
  assert.equal(done.missed_events, 0);
});

test("ANSI colours and carriage-return progress lines render as a terminal shows them", async () => {
  const id = await stack.run("colours");
  const page = await openPage(browser, stack, `#/executions/${id}`);
  const done = await waitForState(page, (s) => s.exit !== null, "the exit");
  assert.deepEqual(done.tail, ["green plain bold red", "progress 100%", "done"]);
  await screenshot(page, "web-colours");
});

test("the progress bar reaches 100 on a real apt run", { skip: process.getuid() !== 0 && "apt needs root" }, async () => {
  const id = await stack.run("apt_reinstall", { package: "hostname" });
  const page = await openPage(browser, stack, `#/executions/${id}`);
  const seen = new Set();
  const done = await waitForState(page, (s) => {
    if (s.progress !== null) seen.add(s.progress);
    return s.exit !== null;
  }, "the apt run's exit", 120000);
  assert.equal(done.exit.data, 0, done.tail.join("\n"));
  assert.equal(done.progress, 100);
  assert.ok(seen.size >= 1);
  await screenshot(page, "web-apt");
});

test("a page too slow to keep up holds the command and loses nothing, on the defaults", async () => {
  // A page whose script is busy while a million lines (68 MB) arrive at once reads nothing
  // for 8 s: more than the SSH window, the server's queue for it and the sockets hold. The
  // command is held until the page reads again; then the page gets every line, on the same
  // WebSocket, with no gap. The page is made slow, not hoped to be.
  const goDir = mkdtempSync(path.join(tmpdir(), "cmdcast-go-"));
  chmodSync(goDir, 0o755);
  const go = `${goDir}/go`;
  const stack = await new Stack().start({
    extraToml: `[actions.burst]\ncommand = "while [ ! -e ${go} ]; do sleep 0.1; done; seq -f \'line %.0f of a burst long enough to overflow the socket buffers\' 1 1000000"\nline_buffered = false\n`,
  });
  try {
    const id = await stack.run("burst");
    const page = await openPage(browser, stack, `#/executions/${id}`);
    await waitForState(page, (s) => s.transport === "websocket" && s.execution_id === id, "the page attached");
    // The page's script busy for 8 s: the burst starts half a second into it.
    const busy = page.evaluate(() => { const end = Date.now() + 8000; while (Date.now() < end); });
    await new Promise((r) => setTimeout(r, 500));
    writeFileSync(go, "");
    await busy;
    const done = await waitForState(page, (s) => s.exit !== null, "the exit", 120000);
    assert.equal(done.lines, 1000000);
    assert.equal(done.missed_events, 0);
    assert.equal(done.transport, "websocket");
    const line = (n) => `line ${n} of a burst long enough to overflow the socket buffers`;
    assert.deepEqual(done.tail.slice(-3), [line(999998), line(999999), line(1000000)]);
    const metrics = await (await fetch(`${stack.url}/metrics`, { headers: { Authorization: `Bearer ${viewerToken}` } })).text();
    const metric = (name) => Number(new RegExp(`${name} (\\d+)`).exec(metrics)[1]);
    assert.ok(metric("cmdcast_output_holds_total") > 0, "the page held the command (else this test proves nothing)");
    assert.equal(metric("cmdcast_watcher_gaps_total"), 0);
  } finally {
    await stack.stop();
    rmSync(goDir, { recursive: true, force: true });
  }
});

test("over HTTPS the page speaks WSS and streams as over plain HTTP", async () => {
  const secure = await new Stack().start({ tls: true });
  try {
    const page = await openPage(browser, secure);
    const sockets = [];
    page.on("websocket", (ws) => sockets.push(ws.url()));
    const id = await secure.run("lines", { count: "40" });
    await page.goto(`${secure.url}/#/executions/${id}`);
    const running = await waitForState(page, (s) => s.lines >= 1 && s.exit === null, "output while it runs");
    assert.equal(running.transport, "websocket");
    const done = await waitForState(page, (s) => s.exit !== null, "the exit over WSS");
    assert.deepEqual(done.tail.filter((l) => l.startsWith("line ")).slice(-3), ["line 38", "line 39", "line 40"]);
    assert.equal(done.exit.data, 0);
    assert.ok(sockets.length > 0 && sockets.every((u) => u.startsWith(`wss://127.0.0.1:${secure.port}/`)), sockets.join(" "));
    await screenshot(page, "web-https");
  } finally {
    await secure.stop();
  }
});

test("the server killed and restarted mid-watch: the page says so and recovers", async () => {
  const id = await stack.run("ticks");
  const page = await openPage(browser, stack, `#/executions/${id}`);
  await waitForState(page, (s) => s.lines >= 10, "ten ticks");
  await new Promise((r) => setTimeout(r, 1200));  // the audit store writes about once a second
  await stack.killServer();
  const down = await waitForState(page, (s) => s.transport === "disconnected", "the page to say it is disconnected");
  await screenshot(page, "web-disconnected");
  const seenBefore = down.lines;
  await stack.startServer();
  // The execution died with the server: after the restart it is "lost", and the page shows it
  // with the output it had, each line once.
  const back = await waitForState(page, (s) => s.exit !== null, "the page to recover and show the end", 30000);
  assert.equal(back.exit.state, "lost");
  assert.ok(back.lines >= seenBefore);
  const ticks = back.tail.filter((l) => l.startsWith("tick "));
  assert.deepEqual(ticks, ticks.map((_, i) => `tick ${Number(ticks[0].slice(5)) + i}`), "no tick twice or missing");
});

/// A Stack behind Debian's nginx running deploy/nginx/cmdcast.conf (without its Upgrade lines
/// when `passUpgrades` is false); the page's origin is nginx's. Stops both whatever happens.
async function behindNginx(passUpgrades, body) {
  const port = await freePort();
  const proxied = await new Stack().start({ origins: [`https://127.0.0.1:${port}`], serverToml: 'trusted_proxies = ["127.0.0.1"]' });
  const nginx = new Nginx();
  try {
    await nginx.start({ upstreamPort: proxied.port, port, passUpgrades });
    await body(nginx);
  } catch (e) {
    console.error(`--- nginx access log ---\n${nginx.accessLog()}--- nginx error log ---\n${nginx.errorLog()}`);
    throw e;
  } finally {
    await nginx.stop();
    await proxied.stop();
  }
}

/// Runs `lines` with `count` from the page, as a user does.
async function runLinesFromThePage(page, count) {
  await click(page, "machine:box");
  await click(page, "action:box/lines");
  await click(page, "param:box/lines/count");
  await page.keyboard.type(String(count));
  await click(page, "run:box/lines");
}

test("through nginx with the shipped site the page runs a command over WSS", async () => {
  await behindNginx(true, async (nginx) => {
    const page = await openPage(browser, nginx);
    const sockets = [];
    page.on("websocket", (ws) => sockets.push(ws.url()));
    await runLinesFromThePage(page, 40);
    const running = await waitForState(page, (s) => s.lines > 0 && s.exit === null, "output while it runs");
    assert.equal(running.transport, "websocket");
    const done = await waitForState(page, (s) => s.exit !== null, "the exit");
    assert.deepEqual(done.tail.slice(-41), [...expectedLines(40), "to stderr"]);
    assert.equal(done.exit.data, 0);
    assert.equal(done.exit.state, "exited");
    assert.equal(done.missed_events, 0);
    assert.ok(sockets.length > 0 && sockets.every((u) => u.startsWith(`wss://127.0.0.1:${nginx.port}/`)), sockets.join(" "));
    // nginx's own record: the stream was an upgrade it passed on, and nothing was polled.
    const log = nginx.accessLog();
    assert.match(log, /"GET \/machines\/box\/commands\/stream HTTP\/1\.1" 101/, log);
    assert.doesNotMatch(log, /\/events\?/, log);
    await screenshot(page, "web-nginx");
  });
});

test("through nginx without the Upgrade headers the page falls back to polling and shows every line and the exit", async () => {
  await behindNginx(false, async (nginx) => {
    const page = await openPage(browser, nginx);
    await runLinesFromThePage(page, 40);
    // 40 lines take 2 s: the page follows them while the command runs, by polling.
    const running = await waitForState(page, (s) => s.execution_id && s.lines > 0 && s.exit === null, "output while it runs");
    assert.equal(running.transport, "polling");
    await screenshot(page, "web-nginx-polling");
    const done = await waitForState(page, (s) => s.exit !== null, "the exit");
    assert.equal(done.transport, "polling");
    assert.deepEqual(done.tail.slice(-41), [...expectedLines(40), "to stderr"]);
    assert.equal(done.lines, 41);
    assert.equal(done.exit.data, 0);
    assert.equal(done.exit.state, "exited");
    assert.equal(done.missed_events, 0);
    // nginx's record: the upgrade reached the server as a plain GET (426 Upgrade Required); the run then went
    // by POST and long-polls.
    const log = nginx.accessLog();
    assert.match(log, /"GET \/machines\/box\/commands\/stream HTTP\/1\.1" 426/, log);
    assert.match(log, /"POST \/machines\/box\/commands HTTP\/2\.0" 202/, log);
    assert.match(log, /"GET \/executions\/[^/]+\/events\?after=-?\d+&wait=\d+ HTTP\/2\.0" 200/, log);
    assert.doesNotMatch(log, /" 101 /, log);
  });
});

// --- Issue 15: time column, downloads, line links, title and notifications, queue and approval.

/// "+MM:SS.mmm" of `ms`, as the time column shows it.
const elapsed = (ms) => `+${String(Math.floor(ms / 60000)).padStart(2, "0")}:${String(Math.floor(ms / 1000) % 60).padStart(2, "0")}.${String(ms % 1000).padStart(3, "0")}`;

test("the time column shows a time on every line: off, elapsed since the start, the wall clock", async () => {
  const id = await stack.run("lines", { count: "20" });  // a line every 50 ms
  const page = await openPage(browser, stack, `#/executions/${id}`);
  let s = await waitForState(page, (st) => st.exit !== null, "the exit");
  assert.equal(s.time_column, "off");
  assert.deepEqual(s.tail_time_labels, []);
  // The times are the server's, per line: never going back, about a second from first to last.
  const times = s.tail_times;
  assert.equal(times.length, s.tail.length);
  assert.ok(times.every((t, i) => i === 0 || t >= times[i - 1]), `times go forward: ${times}`);
  assert.ok(times.at(-1) - times[0] >= 500, `20 lines 50 ms apart: ${times}`);
  await click(page, "time_toggle");
  s = await waitForState(page, (st) => st.time_column === "elapsed", "the elapsed column");
  assert.deepEqual(s.tail_time_labels, s.tail_times.map(elapsed));
  assert.ok(s.tail_time_labels.every((l) => /^\+\d\d:\d\d\.\d\d\d$/.test(l)), s.tail_time_labels.join(" "));
  await screenshot(page, "web-time-elapsed");
  // Selecting still finds the characters under the mouse, right of the column.
  await click(page, "time_toggle");
  s = await waitForState(page, (st) => st.time_column === "clock", "the clock column");
  // started_at + t in the browser's local time, HH:MM:SS.
  const clock = await page.evaluate(([startedAt, ts]) => ts.map((t) => {
    const d = new Date(Date.parse(startedAt) + t);
    return [d.getHours(), d.getMinutes(), d.getSeconds()].map((n) => String(n).padStart(2, "0")).join(":");
  }), [s.started_at, s.tail_times]);
  assert.deepEqual(s.tail_time_labels, clock);
  await click(page, "time_toggle");
  s = await waitForState(page, (st) => st.time_column === "off", "the column off again");
  assert.deepEqual(s.tail_time_labels, []);
});

test("a line link opens the execution scrolled to its lines and highlights them", async () => {
  const id = await stack.run("lines", { count: "150" });
  await waitForExit(id);
  const page = await openPage(browser, stack, `#/executions/${id}/L30-L32`);
  let s = await waitForState(page, (st) => st.exit !== null && st.visible_lines[1] > 0, "the output");
  s = await waitForState(page, (st) => st.visible_lines[0] <= 29 && st.visible_lines[1] > 31, "line 30 in view");
  assert.deepEqual(s.highlight, [30, 32]);
  assert.equal(s.follow_tail, false);
  assert.equal(s.route, `#/executions/${id}/L30-L32`);
  assert.equal(await page.evaluate(() => location.hash), `#/executions/${id}/L30-L32`);
  await screenshot(page, "web-line-link");
  // Another link to the same execution, typed into the address bar: there at once.
  await page.evaluate((h) => { location.hash = h; }, `#/executions/${id}/L140`);
  s = await waitForState(page, (st) => st.highlight?.[0] === 140 && st.visible_lines[0] <= 139 && st.visible_lines[1] > 139,
                         "line 140 highlighted and in view");
  assert.deepEqual(s.highlight, [140, 140]);
  assert.equal(s.tail[s.tail.length - (s.lines - 139)], "line 140", "line numbers count from 1");
});

test("a line link opened while the command runs waits for its line, then goes there", async () => {
  const id = await stack.run("lines", { count: "200" });  // 10 s
  const page = await openPage(browser, stack, `#/executions/${id}/L60`);
  const s = await waitForState(page, (st) => st.lines > 60 && st.visible_lines[0] <= 59 && st.visible_lines[1] > 59,
                               "line 60 in view once it arrived");
  assert.deepEqual(s.highlight, [60, 60]);
  assert.equal(s.follow_tail, false, "the output holds still at the link while more arrives");
  const later = await waitForState(page, (st) => st.lines > s.lines + 20, "more output");
  assert.ok(later.visible_lines[0] <= 59 && later.visible_lines[1] > 59, "still at line 60");
});

test("a line's context menu copies a link to it", async () => {
  const id = await stack.run("lines", { count: "20" });
  const page = await openPage(browser, stack, `#/executions/${id}`, { permissions: ["clipboard-read", "clipboard-write"] });
  const done = await waitForState(page, (s) => s.exit !== null && s.visible_lines[1] === s.lines, "the exit");
  const index = done.tail.indexOf("line 5");
  const p = await textPoint(page, index, 2);
  await page.mouse.move(p.x, p.y);
  await pause(50);
  await page.mouse.click(p.x, p.y, { button: "right", delay: 50 });
  await click(page, "copy_line_link");
  const s = await waitForState(page, (st) => st.highlight !== null, "the line marked");
  assert.deepEqual(s.highlight, [5, 5]);
  const link = `${stack.url}/#/executions/${id}/L5`;
  let copied = "";
  for (let i = 0; i < 40 && copied !== link; ++i) {
    await pause(50);
    copied = await page.evaluate(() => navigator.clipboard.readText());
  }
  assert.equal(copied, link);
  assert.equal(s.route, `#/executions/${id}/L5`);
  // The link, opened in another page, lands on that line.
  const other = await openPage(browser, stack, `#/executions/${id}/L5`);
  await waitForState(other, (st) => st.highlight?.[0] === 5 && st.visible_lines[0] <= 4 && st.visible_lines[1] > 4, "line 5");
});

test("on a phone a long press that does not move opens a line's menu, and its link is copied", async () => {
  const id = await stack.run("lines", { count: "10" });
  const page = await openPage(browser, stack, `#/executions/${id}`, {
    viewport: { width: 390, height: 844 }, scale: 3, touch: true, permissions: ["clipboard-read", "clipboard-write"] });
  const done = await waitForState(page, (st) => st.exit !== null && st.items.output && st.visible_lines[1] === st.lines, "the output");
  const p = await textPoint(page, done.tail.indexOf("line 7"), 2);
  const cdp = await page.context().newCDPSession(page);
  await cdp.send("Input.dispatchTouchEvent", { type: "touchStart", touchPoints: [{ x: p.x, y: p.y }] });
  await pause(800);
  await cdp.send("Input.dispatchTouchEvent", { type: "touchEnd", touchPoints: [] });
  const s = await waitForState(page, (st) => st.items.copy_line_link, "the line's menu");
  const [x, y, w, h] = s.items.copy_line_link;
  await page.touchscreen.tap(x + w / 2, y + h / 2);
  await waitForState(page, (st) => st.highlight?.[0] === 7, "line 7 marked");
  const link = `${stack.url}/#/executions/${id}/L7`;
  let copied = "";
  for (let i = 0; i < 40 && copied !== link; ++i) {
    await pause(50);
    copied = await page.evaluate(() => navigator.clipboard.readText());
  }
  assert.equal(copied, link);
});

/// Stubs the Notification API (permission "default" until asked), and lets a test hide the page
/// (window.hide(true)) as a background tab is: document.hidden, and no animation frames (so no
/// drawing) until it is shown again.
function notificationStub() {
  window.notifications = [];
  window.permissionRequests = 0;
  let permission = "default";
  window.Notification = class {
    static get permission() { return permission; }
    static requestPermission() { ++window.permissionRequests; permission = "granted"; return Promise.resolve(permission); }
    constructor(title) { window.notifications.push(title); }
  };
  let hidden = false, drawing = true;
  const held = [];
  const frame = window.requestAnimationFrame.bind(window);
  window.requestAnimationFrame = (callback) => (drawing ? frame(callback) : (held.push(callback), 0));
  window.framesHeld = () => held.length;
  window.hide = (h, { frames = !h } = {}) => {
    hidden = h;
    drawing = frames;
    if (drawing) held.splice(0).forEach((callback) => frame(callback));
  };
  Object.defineProperty(document, "hidden", { get: () => hidden });
}

test("the tab title shows the watched run's state, and a hidden page is notified when it ends", async () => {
  const page = await openPage(browser, stack, "", { init: notificationStub });
  assert.equal(await page.title(), "cmdcast");
  await runLinesFromThePage(page, 40);
  let s = await waitForState(page, (st) => st.lines > 0 && st.exit === null, "the run going");
  assert.equal(await page.evaluate(() => window.permissionRequests), 1, "asked on the first Run");
  // The user switches to another tab: no more frames, yet the title and the notification
  // come from the events.
  await page.evaluate(() => window.hide(true));
  await page.waitForFunction(() => document.title === "⟳ lines · loopback box");
  s = await waitForState(page, (st) => st.exit !== null, "the exit");
  await page.waitForFunction(() => document.title.startsWith("✓"));
  assert.equal(s.title, "✓ lines · loopback box");
  await page.waitForFunction(() => window.notifications.length > 0);
  const notes = await page.evaluate(() => window.notifications);
  assert.equal(notes.length, 1);
  assert.match(notes[0], /^lines on loopback box: exited 0 \(\ds\)$/);
  assert.ok(await page.evaluate(() => window.framesHeld()) > 0, "the page drew nothing while hidden (else this proves little)");
  // A command that fails: ✗; a visible page is not notified.
  await page.evaluate(() => window.hide(false));
  const id = await stack.run("ticks");
  await page.evaluate((h) => { location.hash = h; }, `#/executions/${id}`);
  await waitForState(page, (st) => st.execution_id === id && st.lines >= 2, "ticks");
  assert.equal(await page.title(), "⟳ ticks · loopback box");
  await click(page, "cancel");
  s = await waitForState(page, (st) => st.exit !== null, "the cancel");
  await page.waitForFunction(() => document.title.startsWith("✗"));
  assert.equal(await page.title(), "✗ ticks · loopback box");
  await pause(500);
  assert.equal((await page.evaluate(() => window.notifications)).length, 1);
  // An execution that ended before the page looked is no news, hidden or not (frames kept, for
  // the page to open it).
  await page.evaluate(() => window.hide(true, { frames: true }));
  const old = await stack.run("lines", { count: "1" });
  await waitForExit(old);
  await page.evaluate((h) => { location.hash = h; }, `#/executions/${old}`);
  await waitForState(page, (st) => st.execution_id === old && st.exit !== null, "the old run");
  await pause(500);
  assert.equal((await page.evaluate(() => window.notifications)).length, 1);
  await page.evaluate(() => window.hide(false));
  // Asked once: picking an execution from the list (a watch) does not ask again.
  await click(page, `execution:${id}`);
  await waitForState(page, (st) => st.execution_id === id, "the picked execution");
  assert.equal(await page.evaluate(() => window.permissionRequests), 1);
});

/// Polls the server until the execution has ended.
async function waitForExit(id) {
  for (let i = 0; i < 400; ++i) {
    const r = await stack.request(`/executions/${id}`, { headers: { Authorization: `Bearer ${viewerToken}` } });
    if (r.status === 200 && !["running", "queued", "awaiting_approval"].includes(JSON.parse(r.body).state)) return;
    await pause(50);
  }
  throw new Error(`execution ${id} did not end`);
}

test("Download .log saves the output as plain text, and with colours as received", async () => {
  const id = await stack.run("colours");
  const page = await openPage(browser, stack, `#/executions/${id}`);
  const done = await waitForState(page, (s) => s.exit !== null, "the exit");
  const save = async (item) => {
    const [download] = await Promise.all([page.waitForEvent("download", { timeout: 20000 }), click(page, item)]);
    return { name: download.suggestedFilename(), text: readFileSync(await download.path(), "utf8") };
  };
  const text = await save("download_text");
  assert.equal(text.text, done.tail.join("\n") + "\n");
  assert.match(text.name, /\.log$/);
  assert.match(text.name, /colours/, "the server's file name");
  const ansi = await save("download_ansi");
  assert.ok(ansi.text.includes("\x1b[32mgreen\x1b[0m"), JSON.stringify(ansi.text));
  assert.ok(ansi.text.includes("progress 10%\r"), JSON.stringify(ansi.text));
});

test("an exclusive action waits its turn: the page says Queued at position 1, then shows it run", async () => {
  const exclusive = await new Stack().start({
    extraToml: '[actions.hold]\ncommand = "sleep {seconds}; echo held"\nparams = { seconds = "^[0-9]{1,2}$" }\nexclusive = true\n',
  });
  try {
    const first = await exclusive.run("hold", { seconds: "8" });
    const second = await exclusive.run("hold", { seconds: "1" });
    const third = await exclusive.run("hold", { seconds: "1" });
    const page = await openPage(browser, exclusive, `#/executions/${second}`);
    // The page learns the action's name from the record, which may come just after the event.
    let s = await waitForState(page, (st) => st.queued_position === 1 && st.title === "⏸ hold · loopback box",
                               "queued behind the first, and the title says so");
    assert.equal(s.exit, null);
    await screenshot(page, "web-queued");
    // The third, second in the queue, is cancelled from its page before it ran.
    const other = await openPage(browser, exclusive, `#/executions/${third}`);
    await waitForState(other, (st) => st.queued_position === 2 && st.items.cancel, "queued second");
    await click(other, "cancel");
    const cancelled = await waitForState(other, (st) => st.exit !== null && st.title !== "", "the cancel of a queued run");
    assert.equal(cancelled.exit.state, "cancelled");
    assert.ok(!cancelled.tail.includes("held"), cancelled.tail.join("\n"));
    assert.match(cancelled.title, /^✗ hold/);
    s = await waitForState(page, (st) => st.exit !== null, "its exit after the first", 30000);
    assert.equal(s.exit.data, 0);
    assert.deepEqual(s.tail, ["held"]);
    assert.equal(s.queued_position, null);
    assert.ok(first);
  } finally {
    await exclusive.stop();
  }
});

test("an action that needs approval waits; another operator approves it in their page and both see it run", async () => {
  const guarded = await new Stack().start({
    extraToml: '[actions.guarded]\ncommand = "echo approved run; echo done"\napproval = true\napproval_timeout_s = 120\n' +
               '[actions.fleeting]\ncommand = "echo never"\napproval = true\napproval_timeout_s = 1\n',
  });
  try {
    // Olivia asks from her page: it waits, and she is not offered Approve.
    const requester = await openPage(browser, guarded);
    await click(requester, "machine:box");
    await click(requester, "action:box/guarded");
    await click(requester, "run:box/guarded");
    let r = await waitForState(requester, (st) => st.awaiting_approval !== null, "awaiting approval");
    const id = r.execution_id;
    assert.ok(id);
    assert.equal(r.awaiting_approval.requested_by, "olivia");
    assert.equal(r.can_approve, false);
    assert.equal(r.items.approve, undefined, "the requester sees no Approve button");
    assert.equal(r.title, "⏸ guarded · loopback box", "its own run is named at once, before its record comes");
    assert.equal(r.exit, null);
    assert.deepEqual(r.tail, []);
    await screenshot(requester, "web-awaiting-approval");
    // A viewer sees it waiting, without the buttons.
    const viewer = await openPage(browser, guarded, `#/executions/${id}`, { token: viewerToken });
    const v = await waitForState(viewer, (st) => st.awaiting_approval !== null, "the viewer sees it waiting");
    assert.equal(v.can_approve, false);
    // Oscar, another operator, approves it from his page.
    const approver = await openPage(browser, guarded, `#/executions/${id}`, { token: approverToken });
    await waitForState(approver, (st) => st.can_approve && st.items.approve && st.items.reject, "Approve and Reject");
    await screenshot(approver, "web-approve");
    await click(approver, "approve");
    for (const page of [requester, approver, viewer]) {
      const s = await waitForState(page, (st) => st.exit !== null && st.approved_by === "oscar", "the approved run's exit");
      assert.equal(s.exit.data, 0);
      assert.deepEqual(s.tail, ["approved run", "done"]);
      assert.equal(s.awaiting_approval, null);
    }
    r = await state(requester);
    assert.equal(r.title, "✓ guarded · loopback box");
    // Another request, rejected this time: it never runs.
    const second = await guarded.run("guarded");
    await approver.evaluate((h) => { location.hash = h; }, `#/executions/${second}`);
    await waitForState(approver, (st) => st.execution_id === second && st.can_approve && st.items.reject, "the Reject button");
    await click(approver, "reject");
    const rejected = await waitForState(approver, (st) => st.exit !== null && st.title !== "", "the rejection");
    assert.equal(rejected.exit.state, "rejected");
    assert.ok(!rejected.tail.includes("approved run"));
    assert.match(rejected.title, /^✗ guarded/);
    const record = JSON.parse((await guarded.request(`/executions/${second}`, { headers: { Authorization: `Bearer ${viewerToken}` } })).body);
    assert.equal(record.state, "rejected");
    // Nobody approves the next within its approval_timeout_s: it expires, and never ran.
    const third = await guarded.run("fleeting");
    await approver.evaluate((h) => { location.hash = h; }, `#/executions/${third}`);
    // items are those of the last frame drawn, which may be the one before the exit came.
    const expired = await waitForState(approver, (st) => st.execution_id === third && st.exit !== null && !st.items.approve,
                                       "the expiry, and the Approve button gone");
    assert.equal(expired.exit.state, "expired");
    assert.ok(!expired.tail.includes("never"));
    assert.equal(expired.can_approve, false);
  } finally {
    await guarded.stop();
  }
});

/// A stack with five machines on the one loopback sshd, one of them down (port 1), in a group.
const fleetStack = () => new Stack().start({ machines: ["m2", "m3", "m4"], down: ["down"],
                                             groups: { five: ["box", "m2", "down", "m3", "m4"] } });
const rowsBy = (s) => Object.fromEntries(s.batch.machines.map((m) => [m.machine_id, m]));

test("a fleet run on a group: a row per machine with its state and exit code, the failed filter, a machine's output beside the grid, the title, a re-run on the failed one", async () => {
  const fleet = await fleetStack();
  try {
    const page = await openPage(browser, fleet);
    await click(page, "group:five");
    await click(page, "group_action:five/lines");
    await click(page, "group_param:five/lines/count");
    await page.keyboard.type("30");
    await click(page, "group_run:five/lines");
    const running = await waitForState(page, (s) => s.batch && s.batch.machines.length === 5 && s.batch.state === "running",
                                       "the batch's rows while it runs");
    assert.match(running.route, /^#\/batches\/[0-9a-f-]+$/);
    assert.equal(await page.evaluate(() => location.hash), running.route, "the address bar links to the batch");
    assert.match(running.title, /^⟳ [0-5]\/5 lines · five$/);
    const done = await waitForState(page, (s) => s.batch.state === "failed" && s.batch.machines.every((m) => m.exit_code !== null || m.state === "failed"),
                                    "the batch's end");
    assert.deepEqual(done.batch.counts, { queued: 0, running: 0, succeeded: 4, failed: 1, cancelled: 0 });
    const rows = rowsBy(done);
    assert.deepEqual(done.batch.machines.map((m) => m.machine_id), ["box", "m2", "down", "m3", "m4"], "in the group's order");
    for (const id of ["box", "m2", "m3", "m4"]) {
      assert.equal(rows[id].state, "exited", id);
      assert.equal(rows[id].exit_code, 0, id);
      assert.equal(rows[id].last_line, "to stderr", id);
      assert.ok(rows[id].duration_ms >= 1000, `${id} ran 30 lines of 50 ms`);
    }
    assert.equal(rows.down.state, "failed");
    assert.equal(rows.down.exit_code, null);
    assert.match(rows.down.last_line, /^cmdcast: /);
    assert.equal(done.title, "✗ lines · five");
    assert.equal(await page.evaluate(() => document.title), "✗ lines · five");
    // The failed filter shows the machine that is down, alone.
    await click(page, "filter:failed");
    await waitForState(page, (s) => s.batch.filter === "failed" && s.batch.shown.join() === "down", "the failed filter");
    await click(page, "batch_row:down");
    const down = await waitForState(page, (s) => s.batch.open === rows.down.execution_id && s.lines > 0, "the down machine's output");
    assert.equal(down.execution_id, rows.down.execution_id);
    assert.match(down.tail.join("\n"), /cmdcast: /);
    assert.equal(down.exit.state, "failed");
    // Another machine's whole output, beside the grid.
    await click(page, "filter:all");
    await waitForState(page, (s) => s.batch.shown.length === 5, "every row again");
    await click(page, "batch_row:m3");
    const m3 = await waitForState(page, (s) => s.batch.open === rows.m3.execution_id && s.exit !== null, "m3's output");
    assert.deepEqual(m3.tail, [...expectedLines(30), "to stderr"]);
    assert.equal(m3.exit.data, 0);
    assert.ok(m3.items.output && m3.items["batch_row:m3"], "the output and the grid are both on screen");
    assert.ok(m3.items.output[0] >= m3.items["batch_row:m3"][0] + m3.items["batch_row:m3"][2] - 1 ||
              m3.items.output[1] >= m3.items["batch_row:m3"][1], "the output beside (or below) the grid");
    await screenshot(page, "web-batch");
    // Re-run on the failed machine: a new batch of just that one (the group run with `machines`).
    assert.equal(m3.batch.can_rerun_failed, true);
    await click(page, "rerun_failed");
    const rerun = await waitForState(page, (s) => s.batch.batch_id !== done.batch.batch_id, "the re-run's batch");
    assert.deepEqual(rerun.batch.machines.map((m) => m.machine_id), ["down"]);
    assert.equal(rerun.route, `#/batches/${rerun.batch.batch_id}`);
    assert.equal(rerun.batch.group, "five");
    const execution = rerun.batch.machines[0].execution_id;
    await waitForState(page, (s) => s.batch.state === "failed", "the re-run's end (the machine is still down)");
    const record = await fleet.request(`/executions/${execution}`, { headers: { Authorization: `Bearer ${viewerToken}` } });
    assert.equal(JSON.parse(record.body).machine_id, "down");
    assert.equal(JSON.parse(record.body).params.count, "30");
  } finally {
    await fleet.stop();
  }
});

test("a batch's deep link opens its grid; a viewer sees it but no Run, no Cancel and no Re-run", async () => {
  const fleet = await fleetStack();
  try {
    const r = await fleet.request("/groups/five/commands", {
      method: "POST",
      headers: { Authorization: `Bearer ${operatorToken}`, "Content-Type": "application/json" },
      body: JSON.stringify({ action_type: "lines", params: { count: "40" }, parallel: 2 }),
    });
    assert.equal(r.status, 202, r.body);
    const id = JSON.parse(r.body).batch_id;
    const page = await openPage(browser, fleet, `#/batches/${id}`, { token: viewerToken });
    const live = await waitForState(page, (s) => s.batch && s.batch.machines.length === 5, "the grid");
    assert.equal(live.batch.batch_id, id);
    assert.equal(live.can_run, false);
    assert.equal(live.route, `#/batches/${id}`);
    const done = await waitForState(page, (s) => s.batch.state === "failed" && s.batch.counts.succeeded === 4, "the end");
    assert.equal(done.title, "✗ lines · five");
    assert.equal(done.batch.can_rerun_failed, false);
    assert.equal(done.items.rerun_failed, undefined);
    assert.equal(done.items.cancel_batch, undefined);
    await click(page, "batch_row:box");
    const box = await waitForState(page, (s) => s.exit !== null && s.lines === 41, "box's output");
    assert.deepEqual(box.tail.slice(-2), ["line 40", "to stderr"]);
    await click(page, "group:five");
    await click(page, "group_action:five/lines");
    const s = await waitForState(page, (st) => st.items["group_parallel:five/lines"], "the group's action");
    assert.equal(s.items["group_run:five/lines"], undefined, "no Run for a viewer");
  } finally {
    await fleet.stop();
  }
});

test("a browser without WebSocket follows a fleet run by polling, and sees every machine end", async () => {
  const fleet = await fleetStack();
  try {
    const page = await openPage(browser, fleet, "", { noWebSocket: true });
    await click(page, "group:five");
    await click(page, "group_action:five/lines");
    await click(page, "group_param:five/lines/count");
    await page.keyboard.type("20");
    await click(page, "group_run:five/lines");
    const live = await waitForState(page, (s) => s.batch && s.transport === "polling", "polling the batch");
    assert.equal(live.batch.machines.length, 5);
    const done = await waitForState(page, (s) => s.batch.state === "failed" && s.batch.counts.succeeded === 4, "the end");
    for (const m of done.batch.machines.filter((m) => m.machine_id !== "down")) assert.equal(m.last_line, "to stderr");
    await click(page, "batch_row:m4");
    const m4 = await waitForState(page, (s) => s.exit !== null && s.execution_id === rowsBy(done).m4.execution_id, "m4's output");
    assert.deepEqual(m4.tail, [...expectedLines(20), "to stderr"]);
  } finally {
    await fleet.stop();
  }
});

test("a fleet run's stream dropped mid-run: the page reconnects with each execution's own after and every machine's output is whole, each line once", async () => {
  const fleet = await fleetStack();
  try {
    const r = await fleet.request("/groups/five/commands", {
      method: "POST",
      headers: { Authorization: `Bearer ${operatorToken}`, "Content-Type": "application/json" },
      body: JSON.stringify({ action_type: "lines", params: { count: "60" } }),
    });
    assert.equal(r.status, 202, r.body);
    const id = JSON.parse(r.body).batch_id;
    // Every WebSocket the page opens is kept, so that the test can drop it.
    const page = await openPage(browser, fleet, `#/batches/${id}`, {
      init: () => {
        const Real = window.WebSocket;
        window.openedSockets = [];
        window.WebSocket = class extends Real {
          constructor(...args) {
            super(...args);
            window.openedSockets.push(this);
          }
        };
      },
    });
    await click(page, "batch_row:box");
    await waitForState(page, (s) => s.batch && s.transport === "websocket" && s.lines >= 15, "box's first lines");
    await page.evaluate(() => window.openedSockets.forEach((s) => s.close()));
    await page.waitForFunction(() => window.openedSockets.length >= 2, null, { timeout: 20000 });
    const done = await waitForState(page, (s) => s.batch.state === "failed" && s.exit !== null, "the batch's end", 60000);
    assert.deepEqual(done.tail, [...expectedLines(60), "to stderr"], "box: each line once, none missing");
    assert.equal(done.missed_events, 0);
    const urls = await page.evaluate(() => window.openedSockets.map((s) => s.url));
    assert.ok(urls.length >= 2, `a reconnect: ${urls}`);
    const resumed = new URL(urls[1]).searchParams.get("after");
    assert.ok(resumed && resumed.split(",").length >= 4, `one after per execution that had events: ${resumed}`);
    for (const machine of ["m2", "m4"]) {
      await click(page, `batch_row:${machine}`);
      const s = await waitForState(page, (st) => st.batch.open === rowsBy(done)[machine].execution_id && st.exit !== null,
                                   `${machine}'s output`);
      assert.deepEqual(s.tail, [...expectedLines(60), "to stderr"], machine);
    }
  } finally {
    await fleet.stop();
  }
});

test("a batch the server no longer holds in memory opens from the audit store, each machine's output read on its own", async () => {
  const fleet = await fleetStack();
  try {
    const r = await fleet.request("/groups/five/commands", {
      method: "POST",
      headers: { Authorization: `Bearer ${operatorToken}`, "Content-Type": "application/json" },
      body: JSON.stringify({ action_type: "lines", params: { count: "12" } }),
    });
    assert.equal(r.status, 202, r.body);
    const id = JSON.parse(r.body).batch_id;
    for (let i = 0; i < 200; ++i) {
      const b = await fleet.request(`/batches/${id}`, { headers: { Authorization: `Bearer ${viewerToken}` } });
      if (JSON.parse(b.body).state !== "running") break;
      await new Promise((done) => setTimeout(done, 100));
    }
    await new Promise((done) => setTimeout(done, 1500));  // the audit store writes about once a second
    await fleet.killServer();
    await fleet.startServer();
    const page = await openPage(browser, fleet, `#/batches/${id}`);
    const s = await waitForState(page, (st) => st.batch && st.batch.state === "failed" && st.batch.machines.length === 5,
                                 "the batch's record");
    assert.equal(rowsBy(s).m2.state, "exited");
    assert.equal(rowsBy(s).m2.exit_code, 0);
    assert.equal(rowsBy(s).down.state, "failed");
    await click(page, "batch_row:m2");
    const m2 = await waitForState(page, (st) => st.batch.open === rowsBy(s).m2.execution_id && st.exit !== null, "m2's output");
    assert.deepEqual(m2.tail, [...expectedLines(12), "to stderr"]);
    assert.equal(m2.error, "");
    assert.equal(m2.title, "✗ lines · five");
  } finally {
    await fleet.stop();
  }
});
