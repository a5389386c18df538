#!/usr/bin/env node
// The reader's check of a built book: serve the HTML folder on 127.0.0.1, open every page in
// headless Chromium (Debian's /usr/bin/chromium, driven by playwright-core) and report per page
// the requests to anything but 127.0.0.1 (blocked, so none leaves the machine), the charts
// drawn, the widgets rendered and the math rendered, and the page's JavaScript errors.
//
//   node tests/browser_check.js HTML_DIR [--pages a.html,b/c.html] [--screenshots DIR]
//        [--shot-pages a.html,...] [--timeout-ms 20000] [--chromium /usr/bin/chromium]
//
// Prints one JSON object: {"pages": [{page, outside_requests, failed_requests, charts: {total,
// drawn, errors}, widgets: {total, rendered}, math: {total, rendered}, errors, screenshot}]}.
// tests/browser.py wraps it for Python.
"use strict";
const fs = require("fs");
const http = require("http");
const os = require("os");
const path = require("path");

const ROOT = path.resolve(__dirname, "..");
const { chromium } = require(process.env.PLAYWRIGHT_CORE ||
  path.join(ROOT, "node_modules", "playwright-core"));

function parseArgs(argv) {
  const args = { dir: null, pages: null, screenshots: null, shotPages: null, timeoutMs: 20000,
                 chromium: process.env.CHROMIUM || "/usr/bin/chromium", width: 1200, height: 900 };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const next = () => argv[++i];
    if (a === "--pages") args.pages = next().split(",").filter(Boolean);
    else if (a === "--screenshots") args.screenshots = next();
    else if (a === "--shot-pages") args.shotPages = next().split(",").filter(Boolean);
    else if (a === "--timeout-ms") args.timeoutMs = Number(next());
    else if (a === "--chromium") args.chromium = next();
    else if (a === "--width") args.width = Number(next());
    else if (!args.dir) args.dir = a;
    else throw new Error(`unknown argument ${a}`);
  }
  if (!args.dir) throw new Error("usage: browser_check.js HTML_DIR [options]");
  args.dir = path.resolve(args.dir);
  return args;
}

function listPages(dir) {
  const out = [];
  (function walk(rel) {
    for (const ent of fs.readdirSync(path.join(dir, rel), { withFileTypes: true })) {
      const r = rel ? `${rel}/${ent.name}` : ent.name;
      if (ent.isDirectory()) {
        if (!ent.name.startsWith("_") && !ent.name.startsWith(".")) walk(r);
      } else if (ent.name.endsWith(".html")) out.push(r);
    }
  })("");
  return out.sort();
}

const TYPES = { ".html": "text/html", ".js": "text/javascript", ".css": "text/css",
  ".json": "application/json", ".svg": "image/svg+xml", ".png": "image/png",
  ".woff": "font/woff", ".woff2": "font/woff2", ".ttf": "font/ttf", ".eot":
  "application/vnd.ms-fontobject", ".ico": "image/x-icon", ".txt": "text/plain" };

function serve(dir) {
  const server = http.createServer((req, res) => {
    let rel = decodeURIComponent(new URL(req.url, "http://x").pathname);
    let file = path.join(dir, rel);
    if (!file.startsWith(dir)) { res.writeHead(403); return res.end(); }
    if (fs.existsSync(file) && fs.statSync(file).isDirectory()) file = path.join(file, "index.html");
    fs.readFile(file, (err, body) => {
      if (err) { res.writeHead(404); return res.end("not found"); }
      res.writeHead(200, { "Content-Type": TYPES[path.extname(file)] || "application/octet-stream" });
      res.end(body);
    });
  });
  return new Promise((resolve) => server.listen(0, "127.0.0.1", () => resolve(server)));
}

// Runs in the page: counts what should be drawn and what is.
function inspectPage() {
  // the book renderer's divs, vega-embed's, and Altair's own html renderer's (which a page
  // should not have: it loads from a CDN)
  const SEL = '.whypretrain-chart, .vega-embed, [id^="altair-viz-"]';
  const charts = Array.from(document.querySelectorAll(SEL))
    .filter((el) => !el.parentElement.closest(SEL));
  const drawn = charts.filter((el) => {
    const g = el.querySelector("svg.marks, canvas.marks, svg, canvas");
    if (!g) return false;
    const r = g.getBoundingClientRect();
    return r.width > 0 && r.height > 0;
  });
  const chartErrors = Array.from(document.querySelectorAll(".whypretrain-chart-error"))
    .map((el) => el.textContent.slice(0, 300));
  // A chart shown without the book renderer (charts.setup() not called) is only text.
  Array.from(document.querySelectorAll(".cell_output pre, .output pre"))
    .filter((el) => /^<Vega(Lite)? \d+ object>|^alt\.\w*Chart\(/.test(el.textContent.trim()))
    .forEach((el) => chartErrors.push(`chart as text: ${el.textContent.trim().slice(0, 80)}`));
  const views = document.querySelectorAll('script[type="application/vnd.jupyter.widget-view+json"]');
  const rendered = document.querySelectorAll(".widget-subarea > .jupyter-widgets, .widget-subarea > .lm-Widget");
  const mathSrc = document.querySelectorAll(".math, span.math, div.math");
  const mathOut = document.querySelectorAll("mjx-container");
  return {
    charts: { total: charts.length, drawn: drawn.length, errors: chartErrors },
    widgets: { total: views.length, rendered: rendered.length },
    math: { total: mathSrc.length, rendered: mathOut.length },
    mathjax: !!(window.MathJax && window.MathJax.startup),
  };
}

function done(s) {
  return s.charts.drawn + s.charts.errors.length >= s.charts.total &&
    s.widgets.rendered >= s.widgets.total && (s.math.total === 0 || s.math.rendered > 0);
}

async function checkPage(context, base, page, args) {
  const p = await context.newPage();
  const result = { page, outside_requests: [], failed_requests: [], errors: [] };
  const isLocal = (u) => u.startsWith(base) || u.startsWith("data:") || u.startsWith("blob:") ||
    u.startsWith("about:");
  p.on("request", (req) => { if (!isLocal(req.url())) result.outside_requests.push(req.url()); });
  p.on("websocket", (ws) => result.outside_requests.push(ws.url()));
  p.on("requestfailed", (req) => {
    if (isLocal(req.url())) result.failed_requests.push(req.url());
  });
  p.on("response", (resp) => {
    if (resp.status() >= 400 && isLocal(resp.url())) result.failed_requests.push(`${resp.status()} ${resp.url()}`);
  });
  // Uncaught exceptions and console errors, both as text.
  p.on("pageerror", (err) => result.errors.push(String(err).slice(0, 500)));
  p.on("console", (msg) => { if (msg.type() === "error") result.errors.push(msg.text().slice(0, 500)); });
  try {
    // Sphinx's top-level index.html only redirects (meta refresh): its target is checked itself.
    const html = fs.readFileSync(path.join(args.dir, page), "utf8");
    const refresh = html.match(/http-equiv="refresh"[^>]*url=([^"]+)"/i);
    if (refresh) {
      result.redirect = refresh[1];
      return result;
    }
    await p.goto(`${base}/${page}`, { waitUntil: "load", timeout: args.timeoutMs });
    const deadline = Date.now() + args.timeoutMs;
    let state = await p.evaluate(inspectPage);
    while (!done(state) && Date.now() < deadline) {
      await p.waitForTimeout(200);
      state = await p.evaluate(inspectPage);
    }
    // MathJax typesets asynchronously: wait for its promise when it is on the page.
    if (state.mathjax) {
      await p.evaluate(() => window.MathJax.startup.promise).catch(() => {});
      state = await p.evaluate(inspectPage);
    }
    Object.assign(result, { charts: state.charts, widgets: state.widgets, math: state.math });
    const shoot = args.screenshots && (!args.shotPages || args.shotPages.includes(page));
    if (shoot) {
      const file = path.join(args.screenshots, page.replace(/\//g, "__").replace(/\.html$/, ".png"));
      await p.screenshot({ path: file, fullPage: true });
      result.screenshot = file;
    }
  } catch (err) {
    result.errors.push(`check failed: ${String(err).slice(0, 500)}`);
  } finally {
    await p.close();
  }
  return result;
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  const pages = args.pages || listPages(args.dir);
  if (args.screenshots) fs.mkdirSync(args.screenshots, { recursive: true });
  const server = await serve(args.dir);
  const base = `http://127.0.0.1:${server.address().port}`;
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), "wp-chromium-"));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: args.chromium,
    headless: true,
    viewport: { width: args.width, height: args.height },
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync",
      "--disable-dev-shm-usage"],
  });
  // Nothing leaves the machine: a request to anything but the local server is recorded
  // (by the request event above) and aborted here.
  await context.route("**/*", (route) => {
    const u = route.request().url();
    if (u.startsWith(base) || u.startsWith("data:") || u.startsWith("blob:")) return route.continue();
    return route.abort("blockedbyclient");
  });
  const results = [];
  try {
    for (const page of pages) results.push(await checkPage(context, base, page, args));
  } finally {
    await context.close();
    server.close();
    fs.rmSync(profile, { recursive: true, force: true });
  }
  process.stdout.write(JSON.stringify({ base, pages: results }, null, 1) + "\n");
}

main().catch((err) => { console.error(err); process.exit(1); });
