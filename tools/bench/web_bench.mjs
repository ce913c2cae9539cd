// The web client's figures, with the real WebAssembly build in Debian's headless Chromium
// against the real server and a loopback sshd (the e2e harness):
//  1. what the browser downloads: index.html, index.js, index.wasm, raw and gzip;
//  2. time to the first frame drawn, from navigation start (median of 5 page loads);
//  3. output ingest in the page, streamed to a page already watching: 500,000 apt-like lines of
//     86 bytes (43 MB), and 5,000,000 short numbered lines (38.9 MB);
//  4. frame time with 1,000,000 lines held (following the tail), over 3 s of frames;
//  5. frame time of a fleet run on 50 machines (50 entries on the one loopback sshd), each
//     printing 2,000 apt-like lines with dpkg progress over about 10 s, the batch grid and one
//     machine's output open, over the frames drawn while they all run.
// Usage (after tools/test or the dev and wasm builds): node tools/bench/web_bench.mjs [--fleet]
// (--fleet: the fleet run's figures only)
import { readFileSync } from "node:fs";
import { gzipSync } from "node:zlib";

import {
  Stack, click, launchBrowser, openPage, operatorToken, root, state, waitForState,
} from "../../tests/e2e/harness.mjs";

const webRoot = process.env.CMDCAST_WEB_ROOT ?? `${root}/build/wasm/web`;
const kib = (n) => `${(n / 1024).toFixed(1)} KiB`;
const median = (v) => [...v].sort((a, b) => a - b)[Math.floor(v.length / 2)];
const percentile = (v, p) => [...v].sort((a, b) => a - b)[Math.min(v.length - 1, Math.floor(p * v.length))];
const fleetOnly = process.argv.includes("--fleet");
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const seqBytes = (n) => { let b = 0; for (let i = 1; i <= n; ++i) b += String(i).length + 1; return b; };

console.log("cmdcast web_bench: headless Chromium (SwiftShader WebGL), 2 cores shared with sshd and the server\n");

let raw = 0, gz = 0;
for (const f of ["index.html", "index.js", "index.wasm"]) {
  const data = readFileSync(`${webRoot}/${f}`);
  const z = gzipSync(data, { level: 9 }).length;
  raw += data.length;
  gz += z;
  console.log(`${f.padEnd(12)} ${kib(data.length).padStart(12)} raw ${kib(z).padStart(12)} gzip`);
}
console.log(`${"total".padEnd(12)} ${kib(raw).padStart(12)} raw ${kib(gz).padStart(12)} gzip\n`);

// The defaults: a page that falls behind holds the command, and loses nothing.
const fleet = Array.from({ length: 49 }, (_, i) => `m${i + 2}`);
const stack = await new Stack().start({
  machines: fleet,
  groups: { fifty: ["box", ...fleet] },
  extraToml: `
[actions.apt_fleet]
command = "sleep 3; for i in $(seq 1 20); do yes 'Get:1 http://deb.debian.org/debian bookworm/main amd64 libexample1 amd64 1.2.3-4 [123 kB]' | head -n 99; echo \\"Progress: [ $((i * 5))%]\\"; sleep 0.5; done"
progress = "apt"
line_buffered = false
[actions.apt_like]
command = "sleep 3; yes 'Get:1 http://deb.debian.org/debian bookworm/main amd64 libexample1 amd64 1.2.3-4 [123 kB]' | head -n 500000"
line_buffered = false
[actions.million]
command = "sleep 3; seq 1 1000000"
line_buffered = false
[actions.five_million]
command = "sleep 3; seq 1 5000000"
line_buffered = false
`,
});
const browser = await launchBrowser();
try {
  const firstFrames = [];
  for (let i = 0; i < (fleetOnly ? 0 : 5); ++i) {
    const page = await openPage(browser, stack);
    firstFrames.push((await state(page)).first_frame_ms);
    await page.context().close();
  }
  if (!fleetOnly) console.log(`first frame: median ${median(firstFrames).toFixed(0)} ms (${firstFrames.map((v) => v.toFixed(0)).join(", ")})`);

  // Ingest: the page watches before the output starts, then takes it all in.
  for (const [action, bytes] of fleetOnly ? [] : [["apt_like", 500000 * 86], ["five_million", seqBytes(5000000)]]) {
    const id = await stack.run(action);
    const page = await openPage(browser, stack, `#/executions/${id}`);
    const started = await waitForState(page, (s) => s.lines > 0, "the first lines", 60000);
    const t0 = Date.now();
    const done = await waitForState(page, (s) => s.exit !== null, "the exit", 300000);
    const seconds = (Date.now() - t0) / 1000;
    if (done.missed_events !== 0) throw new Error(`the page missed ${done.missed_events} events`);
    console.log(`${action}: ${(bytes / 1e6).toFixed(1)} MB of output; wall clock ${seconds.toFixed(2)} s after the first ` +
                `${started.lines} lines: ${(bytes / 1e6 / seconds).toFixed(1)} MB/s (frames compete); decoding and ` +
                `applying ${(done.ingest_bytes / 1e6).toFixed(1)} MB of events took ${done.ingest_ms.toFixed(0)} ms: ` +
                `${(done.ingest_bytes / 1e3 / done.ingest_ms).toFixed(1)} MB/s`);
    await page.context().close();
  }

  // Frame time with a million lines held.
  if (!fleetOnly) {
    const id = await stack.run("million");
    const page = await openPage(browser, stack, `#/executions/${id}`);
    const done = await waitForState(page, (s) => s.exit !== null, "the exit", 300000);
    await sleep(3000);
    const s = await state(page);
    // The whole frame includes SwiftShader rasterising WebGL on the CPU (it grows with the
    // canvas' pixels, not with the output); building the UI is what the output costs.
    for (const [label, ring] of [["whole frame", s.frame_ms], ["building the UI", s.ui_ms]]) {
      const frames = ring.slice(-180);
      // The median too: with a few dozen frames one slow one (a GC, the VM) moves the mean.
      console.log(`${label} with ${done.lines} lines: median ${median(frames).toFixed(2)} ms,` +
                  ` mean ${(frames.reduce((a, b) => a + b, 0) / frames.length).toFixed(2)} ms,` +
                  ` p99 ${percentile(frames, 0.99).toFixed(2)} ms, max ${Math.max(...frames).toFixed(2)} ms (${frames.length} frames)`);
    }
  }

  // A fleet run: 50 machines live, the grid and one machine's output open.
  {
    const r = await stack.request("/groups/fifty/commands", {
      method: "POST",
      headers: { Authorization: `Bearer ${operatorToken}`, "Content-Type": "application/json" },
      body: JSON.stringify({ action_type: "apt_fleet" }),
    });
    if (r.status !== 202) throw new Error(`group run: ${r.status} ${r.body}`);
    const id = JSON.parse(r.body).batch_id;
    const page = await openPage(browser, stack, `#/batches/${id}`);
    await waitForState(page, (s) => s.batch && s.batch.machines.length === 50, "the grid", 60000);
    await click(page, "batch_row:box");
    await waitForState(page, (s) => s.batch.open !== "", "box's output open");
    const live = await waitForState(page, (s) => s.batch.counts.running === 50 && s.batch.machines.every((m) => m.last_line !== ""),
                                    "all 50 running with output", 60000);
    const t0 = Date.now();
    const done = await waitForState(page, (s) => s.batch.state !== "running", "the batch's end", 300000);
    const seconds = (Date.now() - t0) / 1000;
    if (done.batch.counts.succeeded !== 50) throw new Error(`not all succeeded: ${JSON.stringify(done.batch.counts)}`);
    const drawn = Math.min(done.frames - live.frames, done.frame_ms.length);
    console.log(`fleet run of 50 machines x 2,000 lines (${done.lines} lines in the open output), ${seconds.toFixed(1)} s ` +
                `live, ${done.frames - live.frames} frames drawn while all ran:`);
    for (const [label, ring] of [["whole frame", done.frame_ms], ["building the UI", done.ui_ms]]) {
      const frames = ring.slice(-drawn);
      console.log(`  ${label}: median ${median(frames).toFixed(2)} ms, mean ${(frames.reduce((a, b) => a + b, 0) / frames.length).toFixed(2)} ms,` +
                  ` p99 ${percentile(frames, 0.99).toFixed(2)} ms, max ${Math.max(...frames).toFixed(2)} ms`);
    }
    console.log(`  decoding and applying ${(done.ingest_bytes / 1e6).toFixed(1)} MB of batch events took ${done.ingest_ms.toFixed(0)} ms`);
    await page.context().close();
  }
} finally {
  await browser.close();
  await stack.stop();
}
