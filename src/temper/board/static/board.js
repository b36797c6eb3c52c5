// temper board: plain JavaScript over the board's JSON routes (no build step, nothing fetched from the web).
"use strict";

const $ = (sel) => document.querySelector(sel);
const state = { info: null, run: null, source: null, metrics: [], chat: [], formTimer: null };
const SKIP = new Set(["step", "max_steps", "epoch", "time", "total_flos", "train_runtime"]);

async function api(path, body, method) {
  const opts = body === undefined ? { method: method || "GET" } :
    { method: method || "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) };
  const res = await fetch(path, opts);
  const data = await res.json().catch(() => ({}));
  if (!res.ok) { const err = new Error(data.error || res.statusText); err.data = data; throw err; }
  return data;
}

function show(view) {
  for (const v of ["launch", "run", "chat"]) $("#view-" + v).hidden = v !== view;
  if (view !== "run") closeStream();
}

// ---- launch form ---------------------------------------------------------------------------------------
function buildForm() {
  const spec = state.info.methods[$("#method").value];
  const form = $("#fields");
  form.innerHTML = "";
  for (const f of spec.fields) {
    const wide = f.key === "model" || f.key === spec.data_key || f.key === "dataset";
    const div = document.createElement("div");
    div.className = "field" + (wide ? " wide" : "");
    const label = document.createElement("label");
    label.textContent = f.key;
    let input;
    if (f.type === "bool") {
      input = document.createElement("select");
      for (const v of ["", "true", "false"]) input.add(new Option(v || `(default: ${f.default})`, v));
    } else {
      input = document.createElement("input");
      const dflt = Array.isArray(f.default) ? f.default.join(", ") : f.default;
      input.placeholder = dflt === null || dflt === "" ? "" : String(dflt);
      if (f.key === "model") { input.setAttribute("list", "models-list"); input.value = state.info.models[0]?.value || ""; }
      if (f.key === spec.data_key || f.key === "validation") input.setAttribute("list", "data-list");
    }
    input.name = f.key;
    input.id = "f-" + f.key;
    input.title = f.help;
    label.appendChild(input);
    div.appendChild(label);
    const help = document.createElement("div");
    help.className = "help";
    help.textContent = f.help + (f.type === "list" ? " (comma-separated)" : "");
    div.appendChild(help);
    const err = document.createElement("div");
    err.className = "error";
    err.dataset.for = f.key;
    div.appendChild(err);
    form.appendChild(div);
  }
  scheduleValidate();
}

function formBody() {
  const values = {};
  for (const el of $("#fields").elements) if (el.name && el.value.trim() !== "") values[el.name] = el.value.trim();
  return { method: $("#method").value, run_name: $("#run-name").value.trim(), values, extra: $("#extra").value };
}

function clearErrors() {
  document.querySelectorAll("#view-launch .error").forEach((e) => { e.textContent = ""; });
  document.querySelectorAll("#view-launch .invalid").forEach((e) => e.classList.remove("invalid"));
}

function showErrors(errors) {
  for (const [key, msg] of Object.entries(errors || {})) {
    const box = document.querySelector(`#view-launch .error[data-for="${CSS.escape(key)}"]`) ||
      document.querySelector('#view-launch .error[data-for=""]');
    box.textContent = (key && !box.dataset.for ? key + ": " : "") + msg;
    const input = $("#f-" + key) || (key === "run_name" ? $("#run-name") : key === "extra" ? $("#extra") : null);
    if (input) input.classList.add("invalid");
  }
}

function scheduleValidate() {
  clearTimeout(state.formTimer);
  state.formTimer = setTimeout(validate, 350);
}

async function validate() {
  try {
    const out = await api("/api/command", formBody());
    clearErrors();
    $("#command").textContent = out.command;
    $("#yaml").textContent = out.yaml;
    return true;
  } catch (e) {
    clearErrors();
    showErrors(e.data?.errors || { "": e.message });
    return false;
  }
}

async function previewData() {
  $("#preview").innerHTML = '<p class="muted">reading the data as the trainer will…</p>';
  try {
    const out = await api("/api/preview", formBody());
    clearErrors();
    const box = $("#preview");
    box.innerHTML = '<h4>Preview <span class="muted small">grey: masked (no loss) · green: trained · red: rejected / undesirable · struck: cut by max_length</span></h4>';
    for (const row of out.rows) {
      const div = document.createElement("div");
      div.className = "prow";
      const head = document.createElement("div");
      head.className = "muted small";
      head.textContent = `${row.source} — ${row.note}`;
      div.appendChild(head);
      for (const seg of row.segments) {
        const span = document.createElement("span");
        span.className = "seg " + seg.kind;
        span.textContent = (seg.label ? `[${seg.label}] ` : "") + seg.text;
        div.appendChild(span);
      }
      box.appendChild(div);
    }
  } catch (e) {
    $("#preview").innerHTML = "";
    clearErrors();
    showErrors(e.data?.errors || { "": e.message });
  }
}

async function launch() {
  $("#launch-btn").disabled = true;
  $("#launch-msg").textContent = "checking the data…";
  try {
    const out = await api("/api/runs", formBody());
    $("#launch-msg").textContent = "";
    await refreshRuns();
    openRun(out.run);
  } catch (e) {
    $("#launch-msg").textContent = "";
    clearErrors();
    showErrors(e.data?.errors || { "": e.message });
  } finally {
    $("#launch-btn").disabled = false;
  }
}

// ---- runs list and run view ----------------------------------------------------------------------------
async function refreshRuns() {
  const runs = await api("/api/runs");
  const ul = $("#runs");
  ul.innerHTML = "";
  for (const r of runs) {
    const li = document.createElement("li");
    li.dataset.run = r.name;
    li.className = r.name === state.run ? "active" : "";
    const name = document.createElement("span");
    name.textContent = `${r.name} `;
    const kind = document.createElement("span");
    kind.className = "muted small";
    kind.textContent = r.kind;
    name.appendChild(kind);
    const badge = document.createElement("span");
    badge.className = "badge " + r.status.split(" ")[0];
    badge.textContent = r.status;
    li.append(name, badge);
    li.onclick = () => openRun(r.name);
    ul.appendChild(li);
  }
  fillChatModels(runs);
}

function closeStream() {
  if (state.source) { state.source.close(); state.source = null; }
}

async function openRun(name) {
  show("run");
  state.run = name;
  state.metrics = [];
  history.replaceState(null, "", "#run=" + encodeURIComponent(name));  // a reload reopens this run
  document.querySelectorAll("#runs li").forEach((li) => li.classList.toggle("active", li.dataset.run === name));
  $("#run-title").textContent = name;
  $("#log").textContent = "";
  $("#charts").innerHTML = "";
  $("#run-error").textContent = "";
  await loadDetail();
  closeStream();
  const src = new EventSource(`/api/runs/${encodeURIComponent(name)}/events`);
  state.source = src;
  src.addEventListener("reset", () => { state.metrics = []; drawCharts(); });
  src.addEventListener("metrics", (ev) => { state.metrics.push(...JSON.parse(ev.data)); drawCharts(); });
  src.addEventListener("log", (ev) => {
    const d = JSON.parse(ev.data);
    if (d.kind !== "train") { loadDetail(); return; }
    const log = $("#log");
    const atEnd = log.scrollTop + log.clientHeight >= log.scrollHeight - 20;
    log.textContent += d.text.replace(/[^\n]*\r(?!\n)/g, "");  // progress bars redraw with \r: keep the last
    if (log.textContent.length > 400000) log.textContent = log.textContent.slice(-300000);
    if (atEnd) log.scrollTop = log.scrollHeight;
  });
  src.addEventListener("status", (ev) => { setStatus(JSON.parse(ev.data)); loadDetail(); refreshRuns(); });
}

function setStatus(s) {
  const badge = $("#run-status");
  badge.textContent = s.status;
  badge.className = "badge " + s.status.split(" ")[0];
  const live = s.status === "running" || s.status === "stopping";
  $("#stop-btn").disabled = s.status !== "running";
  $("#kill-btn").hidden = s.status !== "stopping";
  $("#resume-btn").disabled = live || s.status === "running (cli)" || s.status === "done";
}

async function loadDetail() {
  if (!state.run) return;
  const d = await api(`/api/runs/${encodeURIComponent(state.run)}`);
  setStatus(d);
  $("#run-command").textContent = d.command ? "$ " + d.command : "started from the command line (its output is in that terminal)";
  $("#run-config").textContent = d.config_yaml || "(not written yet)";
  $("#run-error").textContent = d.status === "failed" ?
    `The run failed (exit code ${d.returncode}). The end of its log says why:` : "";
  renderEvals(d.evals);
  const jobs = $("#jobs");
  jobs.innerHTML = "";
  for (const j of d.jobs.filter((x) => x.kind !== "train")) {
    const li = document.createElement("li");
    li.textContent = `${j.kind}: ${j.state} — ${j.command} `;
    const a = document.createElement("a");
    a.href = `/api/jobs/${encodeURIComponent(j.id)}/log`;
    a.target = "_blank";
    a.textContent = "log";
    li.appendChild(a);
    jobs.appendChild(li);
  }
  updateProgress();
}

function renderEvals(evals) {
  const box = $("#evals");
  box.innerHTML = "";
  for (const ev of evals) {
    const h = document.createElement("h4");
    h.textContent = `${ev.dataset} (${ev.dir})`;
    box.appendChild(h);
    const rows = ev.rows || [];
    if (!rows.length) continue;
    const table = document.createElement("table");
    table.className = "eval-table";
    const cols = Object.keys(rows[0]);
    table.insertRow().append(...cols.map((c) => { const th = document.createElement("th"); th.textContent = c; return th; }));
    for (const r of rows) {
      const tr = table.insertRow();
      for (const c of cols) tr.insertCell().textContent = typeof r[c] === "number" ? +r[c].toFixed(4) : r[c];
    }
    box.appendChild(table);
  }
}

function updateProgress() {
  const rows = state.metrics.filter((r) => r.loss !== undefined);
  if (!rows.length) { $("#run-progress").textContent = ""; return; }
  const last = rows[rows.length - 1];
  const total = last.max_steps;
  const tps = [...state.metrics].reverse().find((r) => r.tokens_per_second !== undefined)?.tokens_per_second;
  let eta = "";
  if (rows.length >= 2 && total && $("#run-status").textContent === "running") {
    const a = rows[Math.max(0, rows.length - 6)], b = last;
    const perStep = (b.time - a.time) / Math.max(1, b.step - a.step);
    const s = Math.max(0, Math.round(perStep * (total - b.step)));
    eta = ` · ETA ${Math.floor(s / 60)}m ${s % 60}s`;
  }
  $("#run-progress").textContent =
    `step ${last.step}${total ? "/" + total : ""} · loss ${last.loss.toFixed(4)}` +
    (tps ? ` · ${Math.round(tps)} tokens/s` : "") + eta;
}

function drawCharts() {
  const series = {};
  for (const r of state.metrics) {
    for (const [k, v] of Object.entries(r)) {
      if (SKIP.has(k) || typeof v !== "number" || k.endsWith("_runtime") || k.endsWith("per_second") && k !== "tokens_per_second") continue;
      const key = k.startsWith("eval_") && (k.slice(5) in series || k === "eval_loss") ? k.slice(5) : k;
      (series[key] ||= {}); (series[key][k] ||= []).push([r.step, v]);
    }
  }
  const box = $("#charts");
  box.innerHTML = "";
  const keys = Object.keys(series).sort((a, b) => (a !== "loss") - (b !== "loss") || a.localeCompare(b));
  for (const key of keys) box.appendChild(chart(key, series[key]));
  updateProgress();
}

function chart(title, lines) {
  const W = 320, H = 170, L = 44, R = 8, T = 18, B = 22;
  const pts = Object.values(lines).flat();
  const xs = pts.map((p) => p[0]), ys = pts.map((p) => p[1]);
  const x0 = Math.min(...xs), x1 = Math.max(...xs, x0 + 1), y0 = Math.min(...ys), y1 = Math.max(...ys, y0 + 1e-9);
  const sx = (x) => L + (x - x0) / (x1 - x0) * (W - L - R), sy = (y) => H - B - (y - y0) / (y1 - y0) * (H - T - B);
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  svg.setAttribute("class", "chart");
  svg.dataset.metric = title;
  svg.dataset.points = String(pts.length);
  const colors = ["#2458c6", "#d9731a", "#17683a"];
  const text = (x, y, s, anchor) => {
    const t = document.createElementNS(ns, "text");
    t.setAttribute("x", x); t.setAttribute("y", y); t.setAttribute("text-anchor", anchor || "start");
    t.textContent = s; svg.appendChild(t);
  };
  text(L, 12, title);
  text(L - 4, T + 4, fmt(y1), "end"); text(L - 4, H - B, fmt(y0), "end");
  text(L, H - 6, String(x0)); text(W - R, H - 6, "step " + x1, "end");
  Object.entries(lines).forEach(([name, p], i) => {
    const line = document.createElementNS(ns, "polyline");
    line.setAttribute("points", p.map(([x, y]) => `${sx(x).toFixed(1)},${sy(y).toFixed(1)}`).join(" "));
    line.setAttribute("fill", "none");
    line.setAttribute("stroke", colors[i % 3]);
    line.setAttribute("stroke-width", "1.5");
    svg.appendChild(line);
    if (p.length === 1 || name.startsWith("eval_")) for (const [x, y] of p) {
      const c = document.createElementNS(ns, "circle");
      c.setAttribute("cx", sx(x)); c.setAttribute("cy", sy(y)); c.setAttribute("r", 2.5); c.setAttribute("fill", colors[i % 3]);
      svg.appendChild(c);
    }
    if (Object.keys(lines).length > 1) text(W - R, T + 12 * i, name, "end");
  });
  return svg;
}

function fmt(v) { return Math.abs(v) >= 100 || v === 0 ? v.toFixed(0) : v.toPrecision(4); }

async function upload() {
  const file = $("#upload").files[0];
  if (!file) return;
  $("#upload-msg").textContent = "uploading…";
  const form = new FormData();
  form.append("file", file);
  const res = await fetch("/api/upload", { method: "POST", body: form });
  const data = await res.json().catch(() => ({}));
  if (!res.ok) { $("#upload-msg").textContent = data.error || res.statusText; return; }
  $("#upload-msg").textContent = "saved as " + data.path;
  const spec = state.info.methods[$("#method").value];
  const input = $("#f-" + spec.data_key);
  if (input) { input.value = data.path; scheduleValidate(); }
  $("#data-list").appendChild(new Option(data.path));
}

async function runAction(path, errBox) {
  $(errBox).textContent = "";
  try { await api(path, {}); await loadDetail(); await refreshRuns(); }
  catch (e) { $(errBox).textContent = e.message + (e.data?.hint ? "\n" + e.data.hint : ""); }
}

// ---- chat ----------------------------------------------------------------------------------------------
function fillChatModels(runs) {
  const sel = $("#chat-model");
  const keep = sel.value;
  sel.innerHTML = "";
  for (const r of runs.filter((x) => ["sft", "dpo", "kto", "orpo", "simpo"].includes(x.kind) && x.status !== "failed"))
    sel.add(new Option(`${r.name} (run)`, state.info.runs_root + "/" + r.name));
  for (const m of state.info.models.filter((x) => !x.label.includes("(run"))) sel.add(new Option(m.label, m.value));
  if ([...sel.options].some((o) => o.value === keep)) sel.value = keep;
}

async function loadAdapters() {
  const sel = $("#chat-adapter");
  sel.innerHTML = "";
  sel.add(new Option("loading…", ""));
  try {
    const out = await api(`/api/chat/adapters?model=${encodeURIComponent($("#chat-model").value)}`);
    sel.innerHTML = "";
    if (out.default) sel.add(new Option(`${out.default} (this run)`, "default"));
    sel.add(new Option("base model (no adapter)", "base"));
    for (const a of out.adapters.filter((x) => x !== out.default)) sel.add(new Option(a, a));
    $("#chat-error").textContent = "";
  } catch (e) {
    sel.innerHTML = "";
    $("#chat-error").textContent = e.message;
  }
}

function addMsg(role, text) {
  const div = document.createElement("div");
  div.className = "msg " + role;
  div.textContent = text;
  $("#chat-log").appendChild(div);
  return div;
}

async function sendChat() {
  const text = $("#chat-input").value.trim();
  if (!text) return;
  $("#chat-input").value = "";
  $("#chat-error").textContent = "";
  state.chat.push({ role: "user", content: text });
  addMsg("user", text);
  const out = addMsg("assistant", "");
  $("#chat-send").disabled = true;
  try {
    const res = await fetch("/api/chat", {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ model: $("#chat-model").value, adapter: $("#chat-adapter").value, messages: state.chat,
        temperature: parseFloat($("#chat-temp").value) || 0, max_tokens: parseInt($("#chat-max").value) || 128 }),
    });
    if (!res.ok) { const d = await res.json().catch(() => ({})); throw new Error(d.error || res.statusText); }
    const reader = res.body.getReader(), dec = new TextDecoder();
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      out.textContent += dec.decode(value, { stream: true });
      $("#chat-log").scrollTop = $("#chat-log").scrollHeight;
    }
    out.dataset.done = "1";
    state.chat.push({ role: "assistant", content: out.textContent });
  } catch (e) {
    state.chat.pop();
    out.remove();
    $("#chat-error").textContent = e.message;
  } finally {
    $("#chat-send").disabled = false;
  }
}

// ---- start -------------------------------------------------------------------------------------------------
async function init() {
  state.info = await api("/api/info");
  $("#device").textContent = state.info.device;
  $("#runs-root").textContent = state.info.runs_root;
  for (const name of Object.keys(state.info.methods)) $("#method").add(new Option(name, name));
  for (const [id, items] of [["models-list", state.info.models.map((m) => m.value)], ["data-list", state.info.data_files]]) {
    const dl = document.createElement("datalist");
    dl.id = id;
    for (const v of items) dl.appendChild(new Option(v));
    document.body.appendChild(dl);
  }
  for (const [name, dir] of Object.entries(state.info.dataset_infos || {}))
    $("#data-list").appendChild(new Option(name, name)).label = `${name} (dataset_info.json in ${dir})`;
  $("#method").onchange = buildForm;
  $("#fields").addEventListener("input", (ev) => {
    // A LLaMA-Factory dataset name needs its folder: fill dataset_dir when it is empty.
    const dir = state.info.dataset_infos?.[ev.target.value.trim()];
    if (ev.target.name === "dataset" && dir && $("#f-dataset_dir") && !$("#f-dataset_dir").value) $("#f-dataset_dir").value = dir;
    scheduleValidate();
  });
  $("#run-name").addEventListener("input", scheduleValidate);
  $("#extra").addEventListener("input", scheduleValidate);
  $("#preview-btn").onclick = previewData;
  $("#upload").onchange = upload;
  $("#launch-btn").onclick = launch;
  $("#tab-launch").onclick = () => { show("launch"); state.run = null; history.replaceState(null, "", "#"); };
  $("#tab-chat").onclick = () => { show("chat"); if (!$("#chat-adapter").options.length) loadAdapters(); };
  $("#stop-btn").onclick = () => runAction(`/api/runs/${encodeURIComponent(state.run)}/stop`, "#run-error");
  $("#kill-btn").onclick = () => runAction(`/api/runs/${encodeURIComponent(state.run)}/stop?force=true`, "#run-error");
  $("#resume-btn").onclick = () => runAction(`/api/runs/${encodeURIComponent(state.run)}/resume`, "#run-error");
  $("#chat-run-btn").onclick = () => {
    show("chat");
    $("#chat-model").value = state.info.runs_root + "/" + state.run;
    loadAdapters();
  };
  $("#eval-btn").onclick = async () => {
    $("#eval-error").textContent = "";
    let options = {};
    try { options = $("#eval-options").value.trim() ? JSON.parse($("#eval-options").value) : {}; }
    catch (e) { $("#eval-error").textContent = "options: not valid JSON: " + e.message; return; }
    try {
      await api(`/api/runs/${encodeURIComponent(state.run)}/eval`,
        { eval_dataset: $("#eval-dataset").value, limit: parseInt($("#eval-limit").value) || null, options });
      await loadDetail();
    } catch (e) { $("#eval-error").textContent = e.message + (e.data?.hint ? "\n" + e.data.hint : ""); }
  };
  $("#export-btn").onclick = async () => {
    $("#export-error").textContent = "";
    try { await api(`/api/runs/${encodeURIComponent(state.run)}/export`, { kind: $("#export-kind").value }); await loadDetail(); }
    catch (e) { $("#export-error").textContent = e.message; }
  };
  $("#chat-model").onchange = loadAdapters;
  $("#chat-send").onclick = sendChat;
  $("#chat-input").addEventListener("keydown", (e) => { if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); sendChat(); } });
  $("#chat-clear").onclick = () => { state.chat = []; $("#chat-log").innerHTML = ""; };
  document.querySelectorAll("button.copy").forEach((b) => {
    b.onclick = () => navigator.clipboard?.writeText($("#" + b.dataset.copy).textContent);
  });
  buildForm();
  await refreshRuns();
  const hash = decodeURIComponent(location.hash.slice(1));
  if (hash.startsWith("run=")) openRun(hash.slice(4));
  setInterval(refreshRuns, 5000);
}

window.addEventListener("hashchange", () => {
  const hash = decodeURIComponent(location.hash.slice(1));
  if (hash.startsWith("run=")) openRun(hash.slice(4));
});
init();
