// The database page: the review of a database module's pending upgrade on one
// server (drift from the standard schema, scripts, history), and the guided
// upgrade: run each script, or mark it applied by hand, in order.
// No framework, no CDN.
"use strict";

const DONE = ["succeeded", "marked applied"];
const params = new URLSearchParams(location.search);
const server = params.get("server") || "";
const module = params.get("module") || "";
const base = `/api/v1/servers/${encodeURIComponent(server)}/modules/${encodeURIComponent(module)}/database`;
let busy = false; // a run or mark request is in flight
let serverKey = null; // what of the server, seen on the event stream, the review depends on

async function request(method, url) {
  const response = await api(url, { method });
  const data = await response.json().catch(() => null);
  if (!response.ok) {
    const error = new Error((data && data.message) || `${method} ${url}: ${response.status} ${response.statusText}`);
    error.code = (data && data.error) || String(response.status);
    throw error;
  }
  return data;
}

function showError(message, code) {
  const node = $("error");
  node.textContent = message || "";
  node.hidden = !message;
  if (message && code) node.dataset.error = code; else delete node.dataset.error;
}

function showLastRun(run) {
  const node = $("last-run");
  if (!run) { node.hidden = true; node.textContent = ""; delete node.dataset.ok; return; }
  node.hidden = false;
  node.dataset.ok = String(Boolean(run.ok));
  node.className = run.ok ? "card ok" : "problems";
  node.textContent = run.ok
    ? `${run.script} succeeded in ${run.duration_ms} ms.${run.message ? ` ${run.message}` : ""}`
    : `${run.script} failed after ${run.duration_ms} ms; its transaction was rolled back: ${run.message}`;
}

// ---- rendering -------------------------------------------------------------

function renderHeader(r) {
  $("title").textContent = `Database of ${r.module} on ${server}: ${r.from_version || "none"} → ${r.to_version}`;
  const verdict = $("verdict");
  verdict.className = r.standard ? "ok" : "warn";
  verdict.dataset.standard = String(Boolean(r.standard));
  verdict.dataset.done = String(Boolean(r.done));
  verdict.textContent = (r.standard
    ? "Standard schema: the upgrade runs by itself when the module is installed."
    : `Customized (${r.summary.length} differences): nothing runs by itself; check each script, run it or mark it applied by hand, in order.`)
    + (r.done ? " Every script is done: installing the module now installs its files." : "");
  $("summary").innerHTML = r.summary.map((s) => `<li>${escapeHtml(s)}</li>`).join("");
  $("summary").hidden = r.standard || !r.summary.length;
}

function driftItem(change, object, body) {
  return `<details class="drift-item" data-change="${change}" data-kind="${escapeHtml(object.kind)}" data-name="${escapeHtml(object.name)}">
    <summary>${change} ${escapeHtml(object.kind)} <strong>${escapeHtml(object.name)}</strong></summary>${body}</details>`;
}

const labelled = (label, cls, text) => `<div class="${cls}"><h4>${label}</h4><pre>${escapeHtml(text)}</pre></div>`;

function renderDrift(r) {
  const section = $("drift");
  section.hidden = r.standard;
  if (r.standard) { section.innerHTML = ""; return; }
  const open = new Set([...section.querySelectorAll("details[open]")].map((d) => `${d.dataset.change} ${d.dataset.kind} ${d.dataset.name}`));
  const d = r.drift;
  const changes = (o) => (o.changes || []).length
    ? `<ul class="table-changes">${o.changes.map((c) => `<li data-change="${escapeHtml(c.change)}">${escapeHtml(c.text)}</li>`).join("")}</ul>`
    : "";
  section.innerHTML = `<h2>Differences from the standard schema</h2>
    ${d.note ? `<p class="drift-note">${escapeHtml(d.note)}</p>` : ""}
    ${d.missing.map((o) => driftItem("missing", o, labelled("standard", "standard", o.definition))).join("")}
    ${d.added.map((o) => driftItem("added", o, labelled("this database", "actual", o.definition))).join("")}
    ${d.modified.map((o) => driftItem("modified", o, `${changes(o)}<div class="drift-compare">${labelled("standard", "standard", o.standard)}${labelled("this database", "actual", o.actual)}</div>`)).join("")}`;
  for (const details of section.querySelectorAll("details")) {
    if (open.has(`${details.dataset.change} ${details.dataset.kind} ${details.dataset.name}`)) details.open = true;
  }
}

function renderScripts(r) {
  const section = $("scripts");
  const next = r.standard ? null : r.scripts.find((s) => !DONE.includes(s.state));
  section.hidden = false;
  section.innerHTML = `<h2>Scripts</h2>${r.scripts.map((s) => {
    const name = escapeHtml(s.name);
    const who = [s.by ? `by ${escapeHtml(s.by)}` : "", s.at ? clock(s.at) : ""].filter(Boolean).join(", ");
    const buttons = s === next ? `<div class="actions">
      <button type="button" class="run" data-script="${name}"${busy ? " disabled" : ""}>Run this script</button>
      <button type="button" class="mark" data-script="${name}"${busy ? " disabled" : ""}>Mark as applied by hand</button></div>` : "";
    return `<article class="script${s === next ? " next" : ""}" data-script="${name}" data-state="${escapeHtml(s.state)}">
      <div class="site-head"><h3>${name}</h3><span class="script-state pill state-${escapeHtml(s.state.replace(/ /g, "_"))}">${escapeHtml(s.state)}</span>
        <span class="muted small">${s.transactional ? "in a transaction" : "not transactional"} · checksum <code>${escapeHtml(s.checksum)}</code></span></div>
      ${who ? `<p class="script-by small muted">${who}</p>` : ""}
      ${s.message ? `<p class="script-message small">${escapeHtml(s.message)}</p>` : ""}
      <pre class="sql">${escapeHtml(s.sql)}</pre>${buttons}</article>`;
  }).join("") || '<p class="muted">No script.</p>'}`;
}

function renderHistory(r) {
  $("history").tBodies[0].innerHTML = r.history.map((h) => `<tr data-script="${escapeHtml(h.script)}" data-outcome="${escapeHtml(h.outcome)}">
    <td class="small">${clock(h.applied_at)}</td><td>${escapeHtml(h.script)} <span class="muted small">${escapeHtml(h.version)}</span></td>
    <td><span class="pill state-${escapeHtml(String(h.outcome).replace(/ /g, "_"))}">${escapeHtml(h.outcome)}</span></td>
    <td>${escapeHtml(h.applied_by)}</td><td class="version">${escapeHtml(h.duration_ms)}</td><td class="small">${escapeHtml(h.message)}</td></tr>`).join("");
  $("history-empty").hidden = r.history.length > 0;
}

const load = coalesce(async () => {
  try {
    const r = await request("GET", base);
    renderHeader(r);
    renderDrift(r);
    renderScripts(r);
    renderHistory(r);
  } catch (e) {
    showError(e.message, e.code);
    if ($("verdict").dataset.standard === undefined) $("verdict").textContent = "";
  }
});

// ---- actions ---------------------------------------------------------------

function setBusy(value) {
  busy = value;
  for (const button of $("scripts").querySelectorAll("button.run, button.mark")) button.disabled = value;
}

async function act(button) {
  const script = button.dataset.script;
  const mark = button.classList.contains("mark");
  if (mark && !confirm(`Mark ${script} as applied by hand? Flotilla will not run it; do so only if its changes are already in the database.`)) return;
  setBusy(true);
  showError("");
  showLastRun(null);
  const original = button.textContent;
  button.textContent = mark ? "Marking…" : "Running…";
  try {
    const result = await request("POST", `${base}/scripts/${encodeURIComponent(script)}/${mark ? "mark-applied" : "run"}`);
    if (!mark) showLastRun(result);
  } catch (e) {
    showError(e.message, e.code);
  } finally {
    button.textContent = original;
    await load(); // re-rendered with the buttons still disabled
    setBusy(false);
  }
}

$("scripts").addEventListener("click", (event) => {
  const button = event.target.closest("button.run, button.mark");
  if (button && !button.disabled && !busy) act(button);
});

// ---- live ------------------------------------------------------------------


// Re-reads the review when the server comes or goes or the module changes,
// not on every heartbeat (each review reads the database through the agent).
function onServer(s) {
  if (s.id !== server) return;
  const m = (s.modules || []).find((x) => x.name === module) || {};
  const key = JSON.stringify([s.online, m.installed_version, m.pending_version, m.last_install && m.last_install.state]);
  if (serverKey !== null && key !== serverKey && !busy) load();
  serverKey = key;
}

if (!server || !module) {
  $("verdict").textContent = "";
  showError("This page needs ?server=<id>&module=<module> in its address.", "bad_request");
} else {
  document.title = `Flotilla · Database of ${module} on ${server}`;
  $("title").textContent = `Database of ${module} on ${server}`;
  load();
  follow({ server: onServer, resync: () => { if (!busy) load(); } });
}
