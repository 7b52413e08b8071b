// The dashboard's load time in headless Chromium, for bench/scale.sh.
//
//   node --experimental-websocket bench/dashboard-load.mjs URL CARDS RUNS
//
// Starts Chromium (headless, throw-away profile, a free DevTools port on
// 127.0.0.1), opens URL RUNS times, and prints for each the milliseconds
// from navigation start (performance.timeOrigin) to the first frame painted
// after CARDS rollout cards are in the page: the HTML, its script, the fetch
// of /api/v1/rollouts, the JSON and the rendering. Then the median. Each
// navigation is bounded (60 s); Chromium is stopped at the end. Its profile
// goes under $TMPDIR (bench/scale.sh points that into its own temporary
// directory, removed on exit).
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const [url, cardsArg, runsArg] = process.argv.slice(2);
const cards = Number(cardsArg);
const runs = Number(runsArg || 5);
if (!url || !(cards > 0)) {
  console.error("usage: dashboard-load.mjs URL CARDS [RUNS]");
  process.exit(2);
}
const chromiumBin = process.env.CHROMIUM || "/usr/bin/chromium";
const profile = mkdtempSync(join(tmpdir(), "serin-bench-chromium-"));
const chromium = spawn(chromiumBin, [
  "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
  "--disable-background-networking", "--disable-component-update", "--disable-sync",
  "--disable-dev-shm-usage", "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0",
  `--user-data-dir=${profile}`, "about:blank",
], { stdio: ["ignore", "ignore", "pipe"] });
const exited = new Promise((resolve) => chromium.on("exit", resolve));
const stop = async () => {
  chromium.kill("SIGTERM");
  const late = setTimeout(() => chromium.kill("SIGKILL"), 10000);
  await exited;
  clearTimeout(late);
  // Its helper processes may still be writing for a moment.
  try {
    rmSync(profile, { recursive: true, force: true, maxRetries: 10, retryDelay: 200 });
  } catch (e) {
    console.error(`could not remove ${profile}: ${e}`);
  }
};
// `promise`, or an error after `ms` (the timer cleared either way).
const within = (promise, ms, what) => {
  let timer;
  const late = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no answer in ${ms} ms`)), ms);
  });
  return Promise.race([promise, late]).finally(() => clearTimeout(timer));
};

// In every new document, before the dashboard's own script: note the time of
// the first frame after CARDS cards are in #list.
const probe = `
  new MutationObserver((_, obs) => {
    const list = document.getElementById("list");
    if (list && list.querySelectorAll("section.card").length >= ${cards}) {
      obs.disconnect();
      requestAnimationFrame(() => { window.__serinBench = performance.now(); });
    }
  }).observe(document, { childList: true, subtree: true });`;

let ws = null;
async function measure() {
  // Chromium prints "DevTools listening on ws://127.0.0.1:PORT/devtools/browser/…".
  const port = await within(
    new Promise((resolve) => {
      let seen = "";
      chromium.stderr.on("data", (d) => {
        seen += d;
        const m = seen.match(/DevTools listening on ws:\/\/127\.0\.0\.1:(\d+)\//);
        if (m) resolve(m[1]);
      });
    }),
    30000,
    "chromium start",
  );
  const targets = await (await fetch(`http://127.0.0.1:${port}/json/list`)).json();
  const page = targets.find((t) => t.type === "page");
  ws = new WebSocket(page.webSocketDebuggerUrl);
  await within(new Promise((resolve, reject) => { ws.onopen = resolve; ws.onerror = reject; }), 30000, "DevTools");
  let nextId = 0;
  const pending = new Map();
  ws.onmessage = (e) => {
    const msg = JSON.parse(e.data);
    if (msg.id && pending.has(msg.id)) {
      pending.get(msg.id)(msg);
      pending.delete(msg.id);
    }
  };
  const send = (method, params = {}) => {
    const id = ++nextId;
    ws.send(JSON.stringify({ id, method, params }));
    return within(new Promise((resolve) => pending.set(id, resolve)), 60000, method);
  };
  await send("Page.enable");
  await send("Page.addScriptToEvaluateOnNewDocument", { source: probe });
  await send("Network.enable");
  await send("Network.setCacheDisabled", { cacheDisabled: true });

  const times = [];
  for (let i = 0; i < runs; i++) {
    await send("Page.navigate", { url: `${url}?run=${i}` });
    const until = Date.now() + 60000;
    let ms = null;
    while (ms === null) {
      if (Date.now() > until) throw new Error(`run ${i + 1}: ${cards} cards not shown within 60 s`);
      const r = await send("Runtime.evaluate", { expression: "window.__serinBench ?? null", returnByValue: true });
      ms = r.result?.result?.value ?? null;
      if (ms === null) await new Promise((r) => setTimeout(r, 20));
    }
    times.push(ms);
    console.log(`run ${i + 1}: ${ms.toFixed(1)} ms`);
  }
  times.sort((a, b) => a - b);
  console.log(`median ${times[Math.floor((times.length - 1) / 2)].toFixed(1)} ms`);
}

try {
  await measure();
} catch (e) {
  console.error(String(e));
  process.exitCode = 1;
} finally {
  ws?.close();
  await stop();
}
