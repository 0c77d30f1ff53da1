// The radlads dashboard: a job list and a job page, refreshed from /api and kept live by /api/events.
// Views are built once and then updated in place, so scroll position, focus and chart zoom survive updates.
"use strict";

const $ = (sel, root = document) => root.querySelector(sel);
const el = (tag, attrs = {}, ...kids) => {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v; else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const k of kids) e.append(k instanceof Node ? k : document.createTextNode(k == null ? "" : String(k)));
  return e;
};
const STATES = ["QUEUED", "HELD", "RUNNING", "RECOVERING", "COMPLETED", "FAILED", "CANCELLING", "CANCELLED", "INTERRUPTED"];

function fmtDuration(s) {
  if (s == null || !isFinite(s)) return "—";
  s = Math.round(s);
  if (s < 60) return s + " s";
  if (s < 3600) return Math.floor(s / 60) + " min " + (s % 60) + " s";
  const h = Math.floor(s / 3600);
  return h < 48 ? h + " h " + Math.floor((s % 3600) / 60) + " min" : Math.floor(h / 24) + " d " + (h % 24) + " h";
}
function fmtNum(v, digits = 3) {
  if (v == null || !isFinite(v)) return "—";
  const a = Math.abs(v);
  if (a !== 0 && (a < 1e-3 || a >= 1e6)) return v.toExponential(2);
  return a >= 100 ? Math.round(v).toLocaleString() : (+v.toPrecision(digits)).toString();
}
function fmtBytes(b) {
  if (b == null || !isFinite(b)) return "—";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let u = 0;
  while (b >= 1024 && u < units.length - 1) { b /= 1024; u++; }
  return (u ? b.toFixed(b < 10 ? 2 : b < 100 ? 1 : 0) : b) + " " + units[u];
}
function fmtTime(ms) { return ms ? new Date(ms).toLocaleString() : "—"; }
function stateBadge(s) { return el("span", { class: "state s-" + s }, s); }
function progressBar(ratio) {
  const pct = Math.max(0, Math.min(1, ratio || 0)) * 100;
  const span = el("span");
  span.style.width = pct.toFixed(1) + "%";
  return el("span", {}, el("span", { class: "bar", role: "progressbar", "aria-valuenow": pct.toFixed(0) }, span), pct.toFixed(0) + " %");
}

async function api(path, opts) {
  const r = await fetch(path, opts);
  const doc = await r.json().catch(() => ({ error: r.statusText }));
  if (!r.ok) throw new Error(doc.error || r.status + " " + r.statusText);
  return doc;
}

// ---- charts: a line chart on a canvas; wheel zooms the x axis, drag pans, double-click resets ----
class Chart {
  constructor(title, color) {
    this.color = color;
    this.canvas = el("canvas", { "data-points": "0" });
    this.root = el("div", { class: "chart panel" }, el("div", { class: "t" }, title), this.canvas,
      el("div", { class: "hint muted" }, "wheel: zoom · drag: pan · double-click: reset"));
    this.xs = []; this.ys = []; this.view = null; // null: follow all the data
    this.canvas.addEventListener("wheel", (e) => this.zoom(e), { passive: false });
    this.canvas.addEventListener("pointerdown", (e) => this.dragStart(e));
    this.canvas.addEventListener("dblclick", () => { this.view = null; this.draw(); });
    new ResizeObserver(() => this.draw()).observe(this.canvas);
  }
  setData(xs, ys) {
    this.xs = xs; this.ys = ys;
    this.canvas.dataset.points = String(xs.length);
    this.draw();
  }
  extent() {
    if (!this.xs.length) return [0, 1];
    const lo = this.xs[0], hi = this.xs[this.xs.length - 1];
    return lo === hi ? [lo - 1, hi + 1] : [lo, hi];
  }
  range() { return this.view || this.extent(); }
  xAt(clientX) {
    const r = this.canvas.getBoundingClientRect(), [x0, x1] = this.range();
    const f = (clientX - r.left - this.padL) / Math.max(1, r.width - this.padL - this.padR);
    return x0 + f * (x1 - x0);
  }
  zoom(e) {
    e.preventDefault();
    const [x0, x1] = this.range(), c = this.xAt(e.clientX), k = e.deltaY > 0 ? 1.25 : 0.8;
    this.view = [c - (c - x0) * k, c + (x1 - c) * k];
    this.draw();
  }
  dragStart(e) {
    const start = e.clientX, [x0, x1] = this.range(), w = this.canvas.getBoundingClientRect().width - this.padL - this.padR;
    const move = (m) => {
      const dx = ((m.clientX - start) / Math.max(1, w)) * (x1 - x0);
      this.view = [x0 - dx, x1 - dx];
      this.draw();
    };
    const up = () => { window.removeEventListener("pointermove", move); window.removeEventListener("pointerup", up); };
    window.addEventListener("pointermove", move);
    window.addEventListener("pointerup", up);
  }
  draw() {
    const cv = this.canvas, dpr = window.devicePixelRatio || 1, w = cv.clientWidth, h = cv.clientHeight;
    if (!w || !h) return;
    if (cv.width !== Math.round(w * dpr) || cv.height !== Math.round(h * dpr)) {
      cv.width = Math.round(w * dpr); cv.height = Math.round(h * dpr);
    }
    const css = getComputedStyle(document.documentElement), g = cv.getContext("2d");
    g.setTransform(dpr, 0, 0, dpr, 0, 0);
    g.clearRect(0, 0, w, h);
    g.font = "11px system-ui, sans-serif";
    this.padL = 56; this.padR = 10;
    const padT = 8, padB = 20, pw = w - this.padL - this.padR, ph = h - padT - padB;
    const [x0, x1] = this.range();
    let lo = Infinity, hi = -Infinity;
    for (let i = 0; i < this.xs.length; i++) {
      if (this.xs[i] < x0 || this.xs[i] > x1 || this.ys[i] == null) continue;
      lo = Math.min(lo, this.ys[i]); hi = Math.max(hi, this.ys[i]);
    }
    if (!isFinite(lo)) { lo = 0; hi = 1; }
    if (lo === hi) { lo -= Math.abs(lo) * 0.1 || 1; hi += Math.abs(hi) * 0.1 || 1; }
    const X = (x) => this.padL + ((x - x0) / (x1 - x0)) * pw, Y = (y) => padT + (1 - (y - lo) / (hi - lo)) * ph;
    g.strokeStyle = css.getPropertyValue("--grid"); g.fillStyle = css.getPropertyValue("--muted"); g.lineWidth = 1;
    for (let i = 0; i <= 4; i++) {
      const y = lo + ((hi - lo) * i) / 4, py = Math.round(Y(y)) + 0.5;
      g.beginPath(); g.moveTo(this.padL, py); g.lineTo(w - this.padR, py); g.stroke();
      g.textAlign = "right"; g.textBaseline = "middle"; g.fillText(fmtNum(y), this.padL - 6, py);
    }
    g.textAlign = "center"; g.textBaseline = "top";
    for (let i = 0; i <= 4; i++) {
      const x = x0 + ((x1 - x0) * i) / 4;
      g.fillText("step " + (x1 - x0 > 20 ? Math.round(x).toLocaleString() : fmtNum(x, 4)), Math.min(w - 30, Math.max(this.padL + 20, X(x))), h - padB + 4);
    }
    if (!this.xs.length) {
      g.textBaseline = "middle"; g.fillText("no data yet", this.padL + pw / 2, padT + ph / 2);
      return;
    }
    g.save();
    g.beginPath(); g.rect(this.padL, padT, pw, ph); g.clip();
    g.strokeStyle = css.getPropertyValue(this.color); g.lineWidth = 1.6; g.beginPath();
    let pen = false;
    for (let i = 0; i < this.xs.length; i++) {
      if (this.ys[i] == null) { pen = false; continue; }
      const px = X(this.xs[i]), py = Y(this.ys[i]);
      if (pen) g.lineTo(px, py); else g.moveTo(px, py);
      pen = true;
    }
    g.stroke();
    g.restore();
  }
}

// ---- the job list ----
const listState = { state: "", owner: "" };
function listView(main) {
  const stateSel = el("select", { id: "f-state", onchange: () => { listState.state = stateSel.value; refresh(); } },
    el("option", { value: "" }, "all states"), ...STATES.map((s) => el("option", { value: s }, s)));
  stateSel.value = listState.state;
  const owner = el("input", { id: "f-owner", placeholder: "owner", value: listState.owner,
    onchange: () => { listState.owner = owner.value.trim(); refresh(); } });
  const tbody = el("tbody", { id: "jobs-body" });
  main.replaceChildren(el("h1", {}, "Jobs"), el("div", { class: "filters" }, stateSel, owner),
    el("div", { class: "panel" }, el("table", { id: "jobs" },
      el("thead", {}, el("tr", {}, ...["id", "name", "state", "owner", "stage", "progress", "tokens/s", "ETA", "updated"]
        .map((h, i) => el("th", { class: i === 6 ? "num" : "" }, h)))), tbody)));
  return async function update() {
    const q = new URLSearchParams();
    if (listState.state) q.set("state", listState.state);
    if (listState.owner) q.set("owner", listState.owner);
    const doc = await api("/api/jobs?" + q);
    const rows = doc.jobs.map((j) => el("tr", { "data-job-id": j.id, "data-state": j.state },
      el("td", {}, el("a", { href: "#/job/" + j.id }, "#" + j.id)), el("td", {}, el("a", { href: "#/job/" + j.id }, j.name)),
      el("td", {}, stateBadge(j.state)), el("td", {}, j.owner), el("td", {}, j.current_stage || "—"),
      el("td", { class: "progress" }, progressBar(j.progress)), el("td", { class: "num" }, j.tokens_per_s ? fmtNum(j.tokens_per_s) : "—"),
      el("td", {}, fmtDuration(j.eta_s)), el("td", { class: "muted" }, fmtTime(j.updated_at_ms))));
    if (!rows.length) rows.push(el("tr", {}, el("td", { colspan: 9, class: "muted" }, "no jobs")));
    tbody.replaceChildren(...rows);
  };
}

// ---- one job ----
function jobView(main, id) {
  const charts = { loss: new Chart("loss", "--c1"), lr: new Chart("learning rate", "--c2"), tps: new Chart("tokens / s", "--c3"),
    mem: new Chart("device memory held, GiB (rank 0)", "--c4") };
  let stageSel = null; // null: follow the job's current stage
  const head = el("div", { id: "job-head" }), actions = el("div", { class: "actions" }), timeline = el("div", { class: "timeline", id: "timeline" });
  const attempts = el("tbody"), checkpoints = el("tbody"), log = el("pre", { class: "log", id: "log" }), msg = el("div", { class: "err" });
  const chartBox = el("div", { class: "charts", id: "charts" }, charts.loss.root, charts.lr.root, charts.tps.root, charts.mem.root);
  chartBox.children[0].id = "chart-loss"; chartBox.children[1].id = "chart-lr"; chartBox.children[2].id = "chart-tps";
  chartBox.children[3].id = "chart-mem";
  main.replaceChildren(el("p", {}, el("a", { href: "#/" }, "← all jobs")), head, actions, msg,
    el("h2", {}, "Stages"), timeline, el("h2", {}, "Training"), chartBox,
    el("h2", {}, "Attempts"), el("div", { class: "panel" }, el("table", {}, el("thead", {}, el("tr", {},
      ...["#", "stage", "try", "state", "pool", "started", "finished", "failure reason", "resumed from"].map((h) => el("th", {}, h)))), attempts)),
    el("h2", {}, "Checkpoints"), el("div", { class: "panel" }, el("table", {}, el("thead", {}, el("tr", {},
      ...["#", "stage", "step", "tokens", "saved", "path"].map((h) => el("th", {}, h)))), checkpoints)),
    el("h2", {}, "Log"), el("div", { class: "panel" }, log));

  async function act(verb) {
    msg.textContent = "";
    try {
      const r = await api(`/api/jobs/${id}/${verb}`, { method: "POST", headers: { Authorization: "Bearer " + token() } });
      msg.textContent = r.message || "";
      if (r.new_job_id) location.hash = "#/job/" + r.new_job_id;
    } catch (e) { msg.textContent = verb + ": " + e.message; }
    refresh();
  }
  let lastLogId = 0;
  return async function update() {
    const j = await api("/api/jobs/" + id);
    head.replaceChildren(el("h1", {}, `#${j.id} ${j.name} `, stateBadge(j.state)),
      el("div", { class: "kv" }, ...[["owner", j.owner], ["progress", progressBar(j.progress)],
        ["tokens/s", j.tokens_per_s ? fmtNum(j.tokens_per_s) : "—"], ["ETA", fmtDuration(j.eta_s)],
        ["submitted", fmtTime(j.submitted_at_ms)], ["output", j.result_path || j.output_dir],
        ...(j.failure_reason ? [["failure", el("span", { class: "err" }, j.failure_reason)]] : [])]
        .flatMap(([k, v]) => [el("span", { class: "muted" }, k), el("span", {}, v)])));
    const verbs = { QUEUED: ["hold", "cancel"], HELD: ["release", "cancel"], RUNNING: ["drain", "cancel", "restart"], RECOVERING: ["cancel"],
      INTERRUPTED: ["hold", "restart", "cancel"], COMPLETED: ["restart"], FAILED: ["restart"], CANCELLED: ["restart"] }[j.state] || [];
    actions.replaceChildren(...(token() ? verbs.map((v) => el("button", { "data-action": v, onclick: () => act(v) }, v)) : []));
    const shown = stageSel == null ? Math.min(j.current_stage_idx, j.stages.length - 1) : stageSel;
    timeline.replaceChildren(...j.stages.map((s) => el("div", { class: "stage" + (s.idx === shown ? " sel" : ""), "data-stage": s.idx,
      onclick: () => { stageSel = s.idx; refresh(); } },
      el("div", { class: "k" }, s.idx + " · " + s.kind), stateBadge(s.state),
      el("div", {}, progressBar(s.state === "DONE" ? 1 : s.tokens_total ? s.tokens_done / s.tokens_total : 0)),
      el("div", { class: "muted" }, "step " + s.step + (s.last_loss != null ? " · loss " + fmtNum(s.last_loss) : "") +
        (s.mem_peak_bytes ? " · peak " + fmtBytes(s.mem_peak_bytes) : "")))));
    attempts.replaceChildren(...j.attempts.map((a) => el("tr", {}, el("td", {}, a.id), el("td", {}, j.stages[a.stage_idx] ? j.stages[a.stage_idx].kind : a.stage_idx),
      el("td", {}, a.number), el("td", {}, stateBadge(a.state)), el("td", {}, a.pool_id ?? "—"), el("td", {}, fmtTime(a.started_at_ms)),
      el("td", {}, fmtTime(a.finished_at_ms)), el("td", { class: "wrap err" }, a.failure_reason || ""), el("td", {}, a.resumed_from_checkpoint ? "checkpoint " + a.resumed_from_checkpoint : "—"))));
    checkpoints.replaceChildren(...j.checkpoints.map((c) => el("tr", {}, el("td", {}, c.id), el("td", {}, c.stage_idx), el("td", {}, c.step),
      el("td", {}, fmtNum(c.tokens)), el("td", {}, fmtTime(c.created_at_ms)), el("td", { class: "wrap muted" }, c.path))));
    const m = await api(`/api/jobs/${id}/metrics?stage=${shown}&points=600`);
    charts.loss.setData(m.step, m.loss); charts.lr.setData(m.step, m.lr); charts.tps.setData(m.step, m.tokens_per_s);
    charts.mem.setData(m.step, m.mem_live_bytes.map((b) => (b == null ? null : b / 2 ** 30)));
    const logs = await api(`/api/jobs/${id}/logs?limit=200&after=${lastLogId}`);
    if (logs.logs.length) {
      const atEnd = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
      for (const l of logs.logs) log.append(`${new Date(l.time_ms).toLocaleTimeString()} [${l.rank}] ${l.level}: ${l.text}\n`);
      lastLogId = logs.logs[logs.logs.length - 1].id;
      if (atEnd) log.scrollTop = log.scrollHeight; // follow the tail unless the user scrolled up
    } else if (!lastLogId) log.textContent = "";
  };
}

// ---- routing, token, live updates ----
function token() { return sessionStorage.getItem("radlads-token") || ""; }
let current = { key: null, update: null }, pending = null, busy = false;
function route() {
  const main = $("#main"), m = location.hash.match(/^#\/job\/(\d+)$/);
  const key = m ? "job" + m[1] : "list";
  if (key !== current.key) {
    current = { key, update: m ? jobView(main, +m[1]) : listView(main) };
    window.scrollTo(0, 0);
  }
  refresh();
}
async function refresh() {
  if (busy) { pending = true; return; }
  busy = true;
  try { await current.update(); document.body.dataset.updated = String(Date.now()); }
  catch (e) { console.error(e); }
  busy = false;
  if (pending) { pending = false; refresh(); }
}
function connectEvents() {
  const live = $("#live"), es = new EventSource("/api/events?after=" + lastEventId);
  es.onopen = () => { live.textContent = "live"; live.classList.add("on"); };
  es.onmessage = (e) => { lastEventId = +e.lastEventId || lastEventId; refresh(); };
  // Training progress is pushed as it happens; redraw at most twice a second.
  let soon = null;
  es.addEventListener("progress", () => { if (!soon) soon = setTimeout(() => { soon = null; refresh(); }, 500); });
  es.onerror = () => { live.textContent = "reconnecting…"; live.classList.remove("on"); };
}
let lastEventId = 0;
async function start() {
  const t = $("#token");
  t.value = token();
  t.addEventListener("change", () => { sessionStorage.setItem("radlads-token", t.value.trim()); refresh(); });
  try {
    const d = await api("/api/daemon");
    $("#daemon").textContent = `radladsd ${d.version} · pid ${d.pid}`;
    lastEventId = d.last_event_id || 0; // the stream starts at the present; views load the past
  } catch (e) { $("#daemon").textContent = "daemon unreachable: " + e.message; }
  window.addEventListener("hashchange", route);
  route();
  connectEvents();
  // Progress and metrics are not events: poll them; state changes come at once through the stream.
  setInterval(refresh, 2000);
}
start();
