// The wq dashboard's page: polls /api/history every second and draws it on
// plain canvases (no library). After each draw the body says
// data-ready="1" and data-points, the pods canvas data-cpus (the CPU
// cells of a row drawn inside it), and, loaded with ?ink, every canvas
// data-inked (how many of its sampled pixels are not background): the
// tests read those.
"use strict";

const WINDOW_S = 300;
const COLORS = { p50: "#64b5f6", p95: "#ffb300", p99: "#ef5350" };
const RATE_COLORS = { started: "#4caf50", kicks: "#64b5f6", coalesced: "#ab47bc", cm_wakeups: "#ef5350" };
const STATE_COLORS = { busy: "#4caf50", kicked: "#ffb300", idle: "#546e7a", blocked: "#e53935", cpu_intensive: "#ab47bc" };
const BG = "#181e24", GRID = "#2a333d", DIM = "#8a96a3", FG = "#d8dee6";
// A machine with hundreds of pools (a cpu-scope pool per CPU and
// attributes) gets charts for the pools with the highest p99 now, and pod
// rows for the first pools; the table has every pool.
const MAX_CHARTS = 48;
const MAX_POD_ROWS = 160;

let seq = null;
let points = [];
let feed = null;
let instance = null;
// When the newest point arrived (the page's clock): a service that stops
// answering, or answers with no new point, is called stale after
// STALE_MS, whatever its fetch is doing.
let lastPointAt = null;
const STALE_MS = 3500;
// The last poll failed: its message stands until one succeeds.
let failing = false;
// A poll that gets no complete answer in this long is given up (a stopped
// service's kernel still accepts the request: the fetch would wait for
// ever, and the page never poll again).
const FETCH_TIMEOUT_MS = 5000;

function fmtNs(ns) {
  if (ns < 1e3) return ns.toFixed(0) + "ns";
  if (ns < 1e6) return (ns / 1e3).toFixed(1) + "us";
  if (ns < 1e9) return (ns / 1e6).toFixed(1) + "ms";
  return (ns / 1e9).toFixed(2) + "s";
}

function fmtRate(r) {
  if (r >= 1e6) return (r / 1e6).toFixed(1) + "M";
  if (r >= 1e3) return (r / 1e3).toFixed(1) + "k";
  return r.toFixed(r < 10 ? 1 : 0);
}

function setStatus(text, err) {
  const s = document.getElementById("status");
  s.textContent = text;
  s.className = err ? "err" : "";
}

// Sizes a canvas's buffer to its box and clears it.
function prepare(canvas) {
  const w = Math.max(200, Math.floor(canvas.clientWidth || canvas.width));
  if (canvas.width !== w) canvas.width = w;
  const ctx = canvas.getContext("2d");
  ctx.fillStyle = BG;
  ctx.fillRect(0, 0, canvas.width, canvas.height);
  ctx.font = "11px system-ui, sans-serif";
  return ctx;
}

// Counts sampled pixels that are not the background (the tests' proof that
// something was drawn): only for a page loaded with `?ink` (the tests'),
// as it reads every canvas back each second.
const INK = new URLSearchParams(location.search).has("ink");
function ink(canvas, ctx) {
  if (!INK) return;
  const d = ctx.getImageData(0, 0, canvas.width, canvas.height).data;
  let n = 0;
  for (let i = 0; i < d.length; i += 16) {
    if (d[i] !== 0x18 || d[i + 1] !== 0x1e || d[i + 2] !== 0x24) n++;
  }
  canvas.dataset.inked = String(n);
}

// A time chart: series = [{name, color, values: [[t, v]...]}]; log or linear y.
function chart(canvas, series, opts) {
  const ctx = prepare(canvas);
  const W = canvas.width, H = canvas.height, L = 52, R = 8, T = 8, B = 18;
  const tNow = points.length ? points[points.length - 1].t : 0;
  const x = (t) => L + (W - L - R) * (1 - (tNow - t) / WINDOW_S);
  let max = 0, min = Infinity;
  for (const s of series) for (const [, v] of s.values) if (v > 0) { max = Math.max(max, v); min = Math.min(min, v); }
  let y, ticks;
  if (opts.log) {
    const lo = Math.pow(10, Math.floor(Math.log10(min === Infinity ? 100 : Math.max(min, 10))));
    const hi = Math.pow(10, Math.ceil(Math.log10(Math.max(max, lo * 10))));
    y = (v) => T + (H - T - B) * (1 - (Math.log10(Math.max(v, lo)) - Math.log10(lo)) / (Math.log10(hi) - Math.log10(lo)));
    ticks = [];
    for (let v = lo; v <= hi; v *= 10) ticks.push(v);
  } else {
    const hi = max > 0 ? max * 1.1 : 1;
    y = (v) => T + (H - T - B) * (1 - v / hi);
    ticks = [0, hi / 2, hi];
  }
  ctx.strokeStyle = GRID; ctx.fillStyle = DIM; ctx.lineWidth = 1;
  for (const v of ticks) {
    const yy = Math.round(y(v)) + 0.5;
    ctx.beginPath(); ctx.moveTo(L, yy); ctx.lineTo(W - R, yy); ctx.stroke();
    ctx.fillText(opts.fmt(v), 2, yy + 4);
  }
  for (let s = 0; s <= WINDOW_S; s += 60) {
    const xx = Math.round(x(tNow - s)) + 0.5;
    ctx.beginPath(); ctx.moveTo(xx, T); ctx.lineTo(xx, H - B); ctx.stroke();
    const label = s === 0 ? "now" : "-" + s / 60 + "m";
    ctx.fillText(label, Math.min(xx - 10, W - R - ctx.measureText(label).width), H - 4);
  }
  let lx = L + 6;
  for (const s of series) {
    ctx.strokeStyle = s.color; ctx.lineWidth = 1.5; ctx.beginPath();
    let started = false;
    for (const [t, v] of s.values) {
      if (tNow - t > WINDOW_S) continue;
      if (opts.log && !(v > 0)) { started = false; continue; }
      const px = x(t), py = y(v);
      if (started) ctx.lineTo(px, py); else { ctx.moveTo(px, py); started = true; }
    }
    ctx.stroke();
    ctx.fillStyle = s.color; ctx.fillText(s.name, lx, T + 10); lx += ctx.measureText(s.name).width + 12;
  }
  ink(canvas, ctx);
  canvas.dataset.points = String(series.reduce((n, s) => n + s.values.length, 0));
}

function poolLabel(p) {
  return "pool " + p.id + " · " + p.scope + " pod " + p.pod + " · cpus " + cpuList(p.cpus);
}

function cpuList(cpus) {
  const out = [];
  for (let i = 0; i < cpus.length;) {
    let j = i;
    while (j + 1 < cpus.length && cpus[j + 1] === cpus[j] + 1) j++;
    out.push(j === i ? String(cpus[i]) : cpus[i] + "-" + cpus[j]);
    i = j + 1;
  }
  return out.join(",");
}

// A point's pools by id (made once per point: a search per pool and point
// was quadratic in the pools, every second).
function byId(pt) {
  if (!pt.byId) pt.byId = new Map(pt.pools.map((x) => [x.id, x]));
  return pt.byId;
}

// The pools that get a delay chart: all, or the MAX_CHARTS with the
// highest p99 in the latest point, in id order.
function charted() {
  if (feed.pools.length <= MAX_CHARTS) return feed.pools;
  const last = points.length ? byId(points[points.length - 1]) : new Map();
  const p99 = (p) => { const pp = last.get(p.id); return pp ? pp.p99 : 0; };
  const top = feed.pools.slice().sort((a, b) => p99(b) - p99(a) || a.id - b.id).slice(0, MAX_CHARTS);
  return top.sort((a, b) => a.id - b.id);
}

function drawDelays() {
  const box = document.getElementById("delays");
  const pools = charted();
  const more = document.getElementById("delays-more");
  more.hidden = pools.length === feed.pools.length;
  more.textContent = "The " + pools.length + " pools with the highest p99 now, of " + feed.pools.length + ": the table below has every pool.";
  // Cards of pools the service no longer has (a restart with fewer), or
  // no longer charted.
  const ids = new Set(pools.map((p) => "pool-" + p.id));
  for (const card of Array.from(box.querySelectorAll(".card"))) {
    if (!ids.has(card.id)) card.remove();
  }
  let before = box.firstChild;
  for (const p of pools) {
    let card = document.getElementById("pool-" + p.id);
    if (!card) {
      card = document.createElement("div");
      card.className = "card";
      card.id = "pool-" + p.id;
      card.innerHTML = '<div class="title"></div><canvas class="chart delay" width="380" height="150"></canvas>';
    }
    // In id order (a newly charted pool goes where it belongs).
    if (card !== before) box.insertBefore(card, before);
    before = card.nextSibling;
    card.querySelector(".title").textContent = poolLabel(p);
    const series = ["p50", "p95", "p99"].map((q) => ({
      name: q, color: COLORS[q],
      values: points.map((pt) => { const pp = byId(pt).get(p.id); return [pt.t, pp ? pp[q] : 0]; }),
    }));
    chart(card.querySelector("canvas"), series, { log: true, fmt: fmtNs });
  }
}

function drawRates() {
  const series = Object.keys(RATE_COLORS).map((k) => ({
    name: k + "/s", color: RATE_COLORS[k],
    values: points.map((pt) => [pt.t, pt.pools.reduce((s, pp) => s + pp[k], 0)]),
  }));
  chart(document.getElementById("rates"), series, { log: false, fmt: fmtRate });
}

function drawPods() {
  const canvas = document.getElementById("pods");
  const last = points.length ? byId(points[points.length - 1]) : null;
  const pools = feed.pools.slice(0, MAX_POD_ROWS);
  const rows = pools.length + (pools.length < feed.pools.length ? 1 : 0);
  // Every CPU of the machine gets a cell in each pool's row: numbered, 18
  // px wide while they fit the canvas; narrower (down to 3 px) past that;
  // wrapped onto more lines past that (CPUs beyond the width were left
  // out: a pool of CPU 60 had no cell at 1280 px).
  const cell = 18, left = 150;
  const width = Math.max(200, Math.floor(canvas.clientWidth || canvas.width));
  const n = Math.max(1, feed.cpus.length);
  const avail = Math.max(cell + 2, width - 4 - left);
  const pitch = Math.max(3, Math.min(cell + 2, Math.floor(avail / n)));
  const perLine = Math.max(1, Math.floor(avail / pitch));
  const lines = Math.ceil(n / perLine);
  const cellW = pitch === cell + 2 ? cell : Math.max(2, pitch - 1);
  const lineH = lines === 1 ? cell + 2 : 8;
  const band = lines === 1 ? cell : lines * lineH - 2;
  const rowH = band + 28;
  canvas.height = Math.max(60, rows * rowH + 30);
  const ctx = prepare(canvas);
  let drawn = 0;
  // The machine: every CPU, marked by the pools that hold it.
  ctx.fillStyle = DIM;
  ctx.fillText("machine: " + feed.cpus.length + " CPUs", 6, 14);
  if (pools.length < feed.pools.length) {
    ctx.fillStyle = DIM;
    ctx.fillText((feed.pools.length - pools.length) + " more pools: the table below has every pool", 6, 24 + pools.length * rowH + 12);
  }
  pools.forEach((p, r) => {
    const y0 = 24 + r * rowH;
    ctx.fillStyle = FG;
    ctx.fillText("pool " + p.id + " (" + p.scope + " " + p.pod + ")", 6, y0 + 12);
    // The machine's CPUs, the pod's filled.
    const pod = new Set(p.cpus);
    feed.cpus.forEach((cpu, i) => {
      const x0 = left + (i % perLine) * pitch;
      const y = y0 + Math.floor(i / perLine) * lineH;
      const mine = pod.has(cpu);
      ctx.fillStyle = mine ? (cellW === cell ? "#37474f" : "#90a4ae") : "#1f262d";
      ctx.fillRect(x0, y, cellW, lines === 1 ? cell : lineH - 2);
      if (r === 0 && x0 + cellW <= canvas.width - 4 && y + lineH <= y0 + rowH) drawn++;
      if (cellW === cell) {
        ctx.fillStyle = mine ? FG : "#3a444f";
        ctx.fillText(String(cpu), x0 + 3, y + 13);
      }
    });
    // Its workers by state, from the latest point.
    const pp = last ? last.get(p.id) : null;
    const states = pp ? [["busy", pp.busy], ["kicked", pp.kicked], ["idle", pp.idle], ["blocked", pp.blocked], ["cpu_intensive", pp.cpu_intensive]] : [];
    let x0 = left;
    for (const [state, count] of states) {
      for (let k = 0; k < count; k++) {
        if (x0 + 10 > canvas.width - 4) break;
        ctx.fillStyle = STATE_COLORS[state];
        ctx.fillRect(x0, y0 + band + 4, 10, 10);
        x0 += 12;
      }
    }
    ctx.fillStyle = DIM;
    const counts = pp ? pp.busy + " busy, " + pp.kicked + " kicked, " + pp.idle + " idle" + (pp.blocked ? ", " + pp.blocked + " blocked" : "") + (pp.cpu_intensive ? ", " + pp.cpu_intensive + " cpu_intensive" : "") + " / max " + p.max_workers : "";
    ctx.fillText(counts, Math.max(x0 + 6, left), y0 + band + 13);
  });
  canvas.dataset.cpus = String(drawn);
  ink(canvas, ctx);
}

function drawTable() {
  const body = document.querySelector("#table tbody");
  const last = points.length ? byId(points[points.length - 1]) : null;
  // Workers out of the count (blocked, in a CPU-intensive poll).
  const out = (pp) => (pp.blocked || 0) + (pp.cpu_intensive || 0);
  const rows = feed.pools.map((p) => {
    const pp = last ? last.get(p.id) : null;
    const c = (v) => "<td>" + v + "</td>";
    if (!pp) return "<tr>" + c(p.id) + c(p.scope) + c(p.pod) + c(cpuList(p.cpus)) + "</tr>";
    return "<tr>" + c(p.id) + c(p.scope) + c(p.pod) + c(cpuList(p.cpus)) +
      c(pp.busy + "/" + pp.idle + "/" + pp.kicked + "/" + p.max_workers + (out(pp) ? "+" + out(pp) : "")) + c(pp.tasks) +
      c(fmtRate(pp.started)) + c(fmtRate(pp.kicks)) + c(fmtRate(pp.coalesced)) + c(fmtRate(pp.cm_wakeups)) +
      c(fmtNs(pp.p50)) + c(fmtNs(pp.p95)) + c(fmtNs(pp.p99)) + c(fmtNs(pp.poll_p99)) + "</tr>";
  });
  body.innerHTML = rows.join("");
}

function render() {
  document.getElementById("name").textContent = "· " + feed.thread_name;
  document.getElementById("capture-off").hidden = feed.latency_capture;
  drawDelays();
  drawRates();
  drawPods();
  drawTable();
  document.body.dataset.points = String(points.length);
  if (points.length > 0) document.body.dataset.ready = "1";
}

// A fetch with a deadline over its answer, body included.
function fetchWithin(url, ms) {
  const ctl = new AbortController();
  const timer = setTimeout(() => ctl.abort(new Error("no answer within " + ms / 1000 + " s")), ms);
  return fetch(url, { cache: "no-store", signal: ctl.signal }).then(async (res) => {
    try {
      return { ok: res.ok, status: res.status, body: res.ok ? await res.json() : null };
    } finally {
      clearTimeout(timer);
    }
  }, (e) => {
    clearTimeout(timer);
    throw ctl.signal.aborted && ctl.signal.reason instanceof Error ? ctl.signal.reason : e;
  });
}

// Runs every second, beside the polls: says so when the newest point is
// old, however long the poll in flight takes.
function checkStale() {
  if (lastPointAt === null || failing) return;
  const age = Date.now() - lastPointAt;
  if (age > STALE_MS) {
    setStatus("stale: no new point for " + Math.floor(age / 1000) + " s (the charts stop at the last one); still asking", true);
  }
}

async function poll() {
  try {
    const url = "/api/history" + (seq === null ? "" : "?since=" + seq);
    const res = await fetchWithin(url, FETCH_TIMEOUT_MS);
    if (!res.ok) throw new Error("HTTP " + res.status);
    feed = res.body;
    // A restarted service counts from 0 again (and its clock too): what
    // this page holds is another process's; start over. Its instance
    // tells, even one that has made more points than this page had seen.
    // A feed of the same instance that ends before this page's newest
    // point is an older rendering (the service hands its last whole feed
    // out while as many as it keeps are alive): nothing in it is new.
    if (seq !== null && feed.instance !== instance) {
      points = [];
      seq = null;
      instance = null;
      lastPointAt = null;
      setTimeout(poll, 0);
      return;
    }
    instance = feed.instance;
    // Asked for many points (a tab polled rarely), the service sends every
    // point it keeps: take those beyond what this page holds.
    const held = points.length;
    for (const p of feed.points) if (seq === null || p.seq > seq) points.push(p);
    if (points.length > held || lastPointAt === null) lastPointAt = Date.now();
    if (points.length) seq = points[points.length - 1].seq;
    const tNow = points.length ? points[points.length - 1].t : 0;
    points = points.filter((p) => tNow - p.t <= WINDOW_S);
    render();
    setStatus(points.length ? "live · " + points.length + " s of history" : "waiting for the first second…", false);
    failing = false;
    checkStale();
  } catch (e) {
    failing = true;
    setStatus("lost the service (" + e.message + "); retrying every second", true);
  }
  setTimeout(poll, 1000);
}

poll();
setInterval(checkStale, 1000);
