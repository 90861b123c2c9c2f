// The rollouts page: plan and start a rollout, list them, and follow one live
// through /api/v1/events. No framework, no CDN.
"use strict";

const OUTPUT_LINES = 200;
// Rollouts', sites' and steps' states, their labels and what they allow,
// as the controller defines them (GET /api/v1/rollouts/states).
let states = { rollout: new Map(), site: new Map(), step: new Map() };
let shownId = null; // the rollout in #rollout, as a string
let detail = null; // its last fetched JSON
const outputs = new Map(); // "server/module" -> { install_id, lines: [] }

const seconds = (ms) => `${Math.round((ms || 0) / 1000)} s`;
const versions = (from, to) => `${escapeHtml(from || "none")} → ${escapeHtml(to)}`;
const layers = (ls) => ls.map((l) => l.map(escapeHtml).join(", ")).join(" → ");

const stateOf = (kind, name) => states[kind].get(name) || { name, label: name, allows: [], under_way: false };
const allows = (kind, name, action) => stateOf(kind, name).allows.includes(action);
const pill = (kind, name, attributes = "") =>
  `<span ${attributes} class="${kind}-state pill state-${escapeHtml(name)}" data-state="${escapeHtml(name)}">${escapeHtml(stateOf(kind, name).label)}</span>`;

async function loadStates() {
  const all = await request("GET", "/api/v1/rollouts/states");
  states = Object.fromEntries(Object.entries(all).map(([kind, list]) => [kind, new Map(list.map((s) => [s.name, s]))]));
}

async function request(method, url, body) {
  const options = { method, headers: {} };
  if (body !== undefined) {
    options.headers["content-type"] = "application/json";
    options.body = JSON.stringify(body);
  }
  const response = await api(url, options);
  const data = await response.json().catch(() => null);
  if (!response.ok) throw new Error((data && data.message) || `${method} ${url}: ${response.status} ${response.statusText}`);
  return data;
}

function showError(id, message) {
  const node = $(id);
  if (!node) { if (message) alert(message); return; }
  node.textContent = message || "";
  node.hidden = !message;
}

// ---- the form ------------------------------------------------------------

async function loadReleases() {
  const releases = await request("GET", "/api/v1/releases");
  releases.sort((a, b) => Date.parse(b.created_at) - Date.parse(a.created_at));
  const select = $("release"), chosen = select.value;
  select.innerHTML = releases.length
    ? releases.map((r) => `<option value="${escapeHtml(r.version)}">${escapeHtml(r.version)} · ${r.packages.length} packages · ${clock(r.created_at)}</option>`).join("")
    : '<option value="">No release published</option>';
  if (releases.some((r) => r.version === chosen)) select.value = chosen;
}

function integer(id, label) {
  const text = $(id).value.trim();
  if (text === "") return undefined;
  const n = Number(text);
  if (!Number.isInteger(n) || n < 0) throw new Error(`${label} must be a whole number`);
  return n;
}

function formBody() {
  const body = { release: $("release").value };
  if (!body.release) throw new Error("Choose a release");
  const sites = $("sites").value.split(",").map((s) => s.trim()).filter(Boolean);
  if (sites.length) body.sites = sites;
  const pattern = $("site-pattern").value.trim();
  if (pattern) body.site_pattern = pattern;
  const waves = {}, failure = { site: $("on-failure").value }, strategy = { waves, failure };
  const batch = integer("batch-size", "Batch size");
  if (batch !== undefined) waves.batch_size = batch;
  if ($("manual-gate").checked) waves.gate = "manual";
  const maxFailed = integer("max-failed", "Max failed sites");
  if (maxFailed !== undefined) failure.max_failed_sites = maxFailed;
  const install = integer("default-install-seconds", "Default install seconds");
  if (install !== undefined) strategy.default_install_seconds = install;
  if (!Object.keys(waves).length) delete strategy.waves;
  body.strategy = strategy;
  return body;
}

// Each server's answer to the checks made before its site goes down: the
// plan's (asked now) and a rollout's site's (with when it answered).
function preflightItems(answers) {
  return answers.map((p) => `<li class="preflight-server" data-server="${escapeHtml(p.server)}" data-failed="${p.failures.length ? "true" : "false"}">
      <strong>${escapeHtml(p.server)}</strong>${p.at ? ` <span class="muted small">${clock(p.at)}</span>` : ""}
      ${p.failures.length ? `<ul class="preflight-failures">${p.failures.map((f) => `<li class="problem-line">✗ ${escapeHtml(f)}</li>`).join("")}</ul>` : ' <span class="ok-text">ready</span>'}
      ${p.warnings.length ? `<ul class="preflight-warnings">${p.warnings.map((w) => `<li class="muted small">⚠ ${escapeHtml(w)}</li>`).join("")}</ul>` : ""}</li>`).join("");
}

function planPreflight(site) {
  if (!site.preflight || !site.preflight.length) return "";
  return `<div class="preflight"><p class="small"><strong>Preflight now</strong></p><ul>${preflightItems(site.preflight)}</ul></div>`;
}

function renderPlan(plan) {
  const warnings = plan.warnings.length
    ? `<div class="problems warnings"><ul>${plan.warnings.map((w) => `<li>${escapeHtml(w)}</li>`).join("")}</ul></div>` : "";
  const sites = plan.sites.map((s) => `
    <section class="card plan-site" data-site="${escapeHtml(s.site)}" data-wave="${s.wave}">
      <div class="site-head"><h2>${escapeHtml(s.site)}</h2><span class="pill warn">wave ${s.wave}</span>
        <span class="muted small">${s.planned_start_local ? escapeHtml(s.planned_start_local) : '<span class="bad">no window long enough</span>'}</span></div>
      <p class="small">about ${seconds(s.estimated_seconds * 1000)} · expected downtime ${seconds(s.expected_downtime_ms)} ·
        layers: ${layers(s.layers)}</p>
      <table><thead><tr><th>Server</th><th>Module</th><th>From → to</th><th>Action</th></tr></thead><tbody>
      ${s.steps.map((t) => `<tr data-server="${escapeHtml(t.server)}" data-module="${escapeHtml(t.module)}">
        <td>${escapeHtml(t.server)}</td><td>${escapeHtml(t.module)}</td><td class="version">${versions(t.from_version, t.to_version)}</td>
        <td class="action ${t.action === "skip" ? "muted" : ""}">${escapeHtml(t.action)}</td></tr>`).join("")}
      </tbody></table>
      ${planPreflight(s)}
    </section>`).join("");
  $("plan").innerHTML = `<h3>Plan for ${escapeHtml(plan.release)}: ${plan.sites.length} sites in ${plan.waves.length} waves</h3>
    ${warnings}${sites || '<p class="muted">No site to update.</p>'}`;
}

async function preview() {
  $("start").disabled = true;
  showError("form-error", "");
  try {
    renderPlan(await request("POST", "/api/v1/rollouts?dry_run=true", formBody()));
    $("start").disabled = false;
  } catch (e) {
    $("plan").innerHTML = "";
    showError("form-error", e.message);
  }
}

async function start() {
  $("start").disabled = true;
  showError("form-error", "");
  try {
    const created = await request("POST", "/api/v1/rollouts", formBody());
    $("plan").innerHTML = "";
    location.hash = `#${created.id}`;
    show(String(created.id));
    refreshList();
  } catch (e) {
    showError("form-error", e.message);
  }
}

// ---- the list ------------------------------------------------------------

const refreshList = coalesce(async () => {
  const rollouts = await request("GET", "/api/v1/rollouts");
  const container = $("rollouts");
  if (!rollouts.length) { container.innerHTML = '<p class="muted">No rollout yet.</p>'; return; }
  container.innerHTML = `<table class="rollout-list"><thead><tr><th>#</th><th>Release</th><th>State</th><th>Sites</th><th>By</th><th>Started</th><th>Finished</th></tr></thead><tbody>
    ${rollouts.map((r) => `<tr class="clickable ${String(r.id) === shownId ? "current" : ""}" data-rollout="${r.id}">
      <td><a href="#${r.id}">${r.id}</a></td><td class="version">${escapeHtml(r.release)}</td>
      <td>${pill("rollout", r.state)}${r.reason ? `<div class="muted small">${escapeHtml(r.reason)}</div>` : ""}</td>
      <td class="small">${Object.entries(r.sites).map(([state, n]) => `${n} ${escapeHtml(stateOf("site", state).label)}`).join(", ")}</td>
      <td>${escapeHtml(r.created_by)}</td><td class="small">${clock(r.created_at)}</td><td class="small">${clock(r.finished_at)}</td></tr>`).join("")}
    </tbody></table>`;
});

// ---- one rollout -----------------------------------------------------------

function outputOf(server, module) {
  const key = `${server}/${module}`;
  if (!outputs.has(key)) outputs.set(key, { install_id: null, lines: [] });
  return outputs.get(key);
}

function stepRow(rollout, server, step) {
  const running = stateOf("step", step.state).under_way;
  const install = step.install;
  const output = outputs.get(`${server.server}/${step.module}`);
  const details = [
    step.download ? `<span class="download">⇣ ${escapeHtml(step.download)}</span>` : "",
    step.attempts ? `<span class="muted">attempt ${step.attempts}</span>` : "",
    install && install.downtime_ms != null ? `<span class="muted">${install.downtime_ms} ms down</span>` : "",
    step.message ? `<span class="message">${escapeHtml(step.message)}</span>` : "",
  ].filter(Boolean).join(" · ");
  const pre = running || (output && output.lines.length)
    ? `<tr class="output-row"><td colspan="4"><pre class="output" data-server="${escapeHtml(server.server)}" data-module="${escapeHtml(step.module)}">${escapeHtml(output ? output.lines.join("\n") : "")}</pre></td></tr>` : "";
  return `<tr class="step" data-server="${escapeHtml(server.server)}" data-module="${escapeHtml(step.module)}">
    <td class="name">${escapeHtml(step.module)}</td><td class="version">${versions(step.from_version, step.to_version)}</td>
    <td>${pill("step", step.state)}</td>
    <td class="small">${running ? `<span class="phase">${escapeHtml((install && install.phase) || "")}</span> ` : ""}${details}</td></tr>${pre}`;
}

function serverBlock(rollout, server) {
  const excludable = allows("rollout", rollout.state, "exclude") && server.steps.some((s) => allows("step", s.state, "exclude"));
  return `<div class="rollout-server" data-server="${escapeHtml(server.server)}">
    <div class="server-head"><span class="dot ${server.online ? "online" : "offline"}"></span><strong>${escapeHtml(server.server)}</strong>
      ${excludable ? `<button type="button" class="small-button exclude" data-exclude="${escapeHtml(server.server)}">Exclude</button>` : ""}</div>
    <table><thead><tr><th>Module</th><th>From → to</th><th>State</th><th>Details</th></tr></thead>
    <tbody>${server.steps.map((step) => stepRow(rollout, server, step)).join("")}</tbody></table></div>`;
}

// What restoring a database backup would discard, by server/module/version:
// read once per rollout shown, when a site waits for the decision.
const discards = new Map();

function discardOf(step, server) {
  const key = `${server}/${step.module}/${step.from_version}`;
  const known = discards.get(key);
  // Read again after a while: the application goes on writing.
  if (!known || (!known.loading && Date.now() - known.at > 15000)) {
    discards.set(key, { ...(known || {}), loading: !known, at: Date.now() });
    const url = `/api/v1/servers/${encodeURIComponent(server)}/modules/${encodeURIComponent(step.module)}/database/discard?version=${encodeURIComponent(step.from_version || "")}`;
    request("GET", url)
      .then((d) => discards.set(key, { discard: d, at: Date.now() }))
      .catch((e) => discards.set(key, { error: e.message, at: Date.now() }))
      .finally(() => { if (detail) renderDetail(detail); });
  }
  return discards.get(key);
}

function discardText(found) {
  if (found.loading) return '<span class="muted">reading what a restore would discard…</span>';
  if (found.error) return `<span class="problems">what a restore would discard is unknown: ${escapeHtml(found.error)}</span>`;
  const d = found.discard;
  const since = d.taken_at ? `since the backup of ${clock(d.taken_at)}` : "since the backup";
  const floor = d.counters_reset ? ' <span class="muted">(the statistics were reset since: at least these)</span>' : "";
  if (!d.counted) return `a restore discards everything written ${since} (the engine does not count writes)`;
  if (!d.tables.length) return `no row written ${since}${floor}`;
  return `a restore discards the rows written ${since}${floor}:
    <table class="discard"><thead><tr><th>Table</th><th>Inserted</th><th>Updated</th><th>Deleted</th></tr></thead><tbody>
    ${d.tables.map((t) => `<tr data-table="${escapeHtml(t.table)}"><td>${escapeHtml(t.table)}</td><td>${t.inserted}</td><td>${t.updated}</td><td>${t.deleted}</td></tr>`).join("")}
    </tbody></table>`;
}

// A rolled-back site whose databases stayed at the new version: what a
// restore would discard, and the two choices.
function databaseDecision(site) {
  if (!allows("site", site.state, "restore_database")) return "";
  const waiting = site.servers.flatMap((server) => server.steps
    .filter((step) => allows("step", step.state, "restore_database"))
    .map((step) => `<li class="database-decision" data-server="${escapeHtml(server.server)}" data-module="${escapeHtml(step.module)}">
      <strong>${escapeHtml(step.module)}</strong> on ${escapeHtml(server.server)}: at ${escapeHtml(step.to_version)}, upgraded from ${escapeHtml(step.from_version || "?")}.
      ${discardText(discardOf(step, server.server))}</li>`));
  return `<div class="decision"><p><strong>The files are back; these databases stay at the new version until you decide.</strong></p>
    <ul>${waiting.join("")}</ul>
    <button type="button" class="danger" data-database="restore" data-site="${escapeHtml(site.site)}">Restore the backups (discard the writes above)</button>
    <button type="button" data-database="keep" data-site="${escapeHtml(site.site)}">Keep the databases at the new version</button></div>`;
}

// What each server answered before the site was taken down.
function preflightBlock(site) {
  if (!site.preflight || !site.preflight.length) return "";
  const items = preflightItems(site.preflight);
  const override = allows("site", site.state, "override_preflight")
    ? `<button type="button" class="small-button danger" data-override="${escapeHtml(site.site)}">Start anyway</button>` : "";
  const by = site.preflight_override_by ? `<p class="small">overridden by ${escapeHtml(site.preflight_override_by)}</p>` : "";
  return `<div class="preflight"><p class="small"><strong>Preflight</strong> (checked ${clock(site.preflight_at)}) ${override}</p><ul>${items}</ul>${by}</div>`;
}

function siteCard(rollout, site) {
  const slot = site.planned_start_local
    ? `${escapeHtml(site.planned_start_local)} → ${escapeHtml(site.planned_end_local || "?")}` : "not scheduled yet";
  const rollback = allows("site", site.state, "rollback")
    ? `<button type="button" class="small-button" data-rollback="${escapeHtml(site.site)}">Roll back site</button>` : "";
  return `<section class="card rollout-site" data-site="${escapeHtml(site.site)}">
    <div class="site-head"><h2>${escapeHtml(site.site)}</h2>
      ${pill("site", site.state)}
      <span class="muted small">wave ${site.wave}</span>${rollback}</div>
    ${site.message ? `<p class="site-message small">${escapeHtml(site.message)}</p>` : ""}
    ${databaseDecision(site)}
    ${preflightBlock(site)}
    <p class="small muted">slot: ${slot} (${escapeHtml(site.time_zone)}) · notice: ${escapeHtml(site.notice_result || "none")}
      · downtime measured: ${seconds(site.downtime_ms)} · ${site.started_at ? `started ${clock(site.started_at)}` : "not started"}${site.finished_at ? `, finished ${clock(site.finished_at)}` : ""}</p>
    ${site.servers.map((server) => serverBlock(rollout, server)).join("")}
  </section>`;
}

function renderDetail(r) {
  const section = $("rollout");
  const scrolled = new Map([...section.querySelectorAll("pre.output")].map((p) => [`${p.dataset.server}/${p.dataset.module}`, p.scrollTop + p.clientHeight >= p.scrollHeight - 4 ? null : p.scrollTop]));
  const may = (action) => allows("rollout", r.state, action);
  const buttons = [
    may("pause") ? '<button type="button" id="pause">Pause</button>' : "",
    may("resume") ? '<button type="button" id="resume">Resume</button>' : "",
    may("cancel") ? '<button type="button" id="cancel" class="danger">Cancel</button>' : "",
    may("retry") && r.sites.some((s) => allows("site", s.state, "retry")) ? '<button type="button" id="retry">Retry failed</button>' : "",
  ].join(" ");
  section.dataset.rollout = r.id;
  section.hidden = false;
  section.innerHTML = `
    <div class="site-head"><h2>Rollout ${r.id} · ${escapeHtml(r.release)}</h2>
      ${pill("rollout", r.state, 'id="rollout-state"')}
      <span class="muted small">by ${escapeHtml(r.created_by)}, ${clock(r.created_at)}${r.finished_at ? ` · finished ${clock(r.finished_at)}` : ""} · wave ${r.opened_wave} open</span></div>
    <p id="rollout-reason" class="small">${escapeHtml(r.reason || "")}</p>
    <div class="actions">${buttons}</div>
    <p id="action-error" class="problems" hidden></p>
    ${r.sites.map((site) => siteCard(r, site)).join("") || '<p class="muted">No site.</p>'}
    <h3>Log</h3>
    <table class="log"><thead><tr><th>Time</th><th>Actor</th><th>Action</th><th>Detail</th></tr></thead><tbody>
    ${r.log.map((l) => `<tr><td class="small">${clock(l.at)}</td><td>${escapeHtml(l.actor)}</td><td>${escapeHtml(l.action)}</td><td>${escapeHtml(l.detail)}</td></tr>`).join("")}
    </tbody></table>`;
  for (const pre of section.querySelectorAll("pre.output")) {
    const top = scrolled.get(`${pre.dataset.server}/${pre.dataset.module}`);
    pre.scrollTop = top == null ? pre.scrollHeight : top;
  }
}

const refreshDetail = coalesce(async () => {
  const id = shownId;
  if (id === null) return;
  const r = await request("GET", `/api/v1/rollouts/${encodeURIComponent(id)}`).catch((e) => {
    if (id === shownId) { $("rollout").hidden = false; $("rollout").innerHTML = `<p class="problems">Cannot load rollout ${escapeHtml(id)}: ${escapeHtml(e.message)}</p>`; }
    return null;
  });
  if (!r || id !== shownId) return;
  detail = r;
  renderDetail(r);
});

function show(id) {
  if (id !== shownId) { outputs.clear(); discards.clear(); detail = null; }
  shownId = id;
  if (id === null) { $("rollout").hidden = true; return; }
  refreshDetail();
}

function fromHash() {
  const id = location.hash.replace(/^#/, "");
  show(/^\d+$/.test(id) ? String(Number(id)) : null);
}

async function act(path, button, body) {
  if (button) button.disabled = true;
  showError("action-error", "");
  try {
    const r = await request("POST", `/api/v1/rollouts/${encodeURIComponent(shownId)}/${path}`, body);
    detail = r;
    renderDetail(r);
    refreshList();
  } catch (e) {
    if (button) button.disabled = false;
    showError("action-error", e.message);
  }
}

$("rollout").addEventListener("click", (event) => {
  const button = event.target.closest("button");
  if (!button || button.disabled) return;
  if (["pause", "resume", "retry"].includes(button.id)) act(button.id, button);
  else if (button.id === "cancel") { if (confirm(`Cancel rollout ${shownId}? Running installs finish; nothing new starts.`)) act("cancel", button); }
  else if (button.dataset.exclude) { if (confirm(`Leave server ${button.dataset.exclude} out of this rollout?`)) act(`servers/${encodeURIComponent(button.dataset.exclude)}/exclude`, button); }
  else if (button.dataset.rollback) { if (confirm(`Roll site ${button.dataset.rollback} back to the versions it had?`)) act(`sites/${encodeURIComponent(button.dataset.rollback)}/rollback`, button); }
  else if (button.dataset.override) { if (confirm(`Start site ${button.dataset.override} despite its failed preflight?`)) act(`sites/${encodeURIComponent(button.dataset.override)}/preflight/override`, button); }
  else if (button.dataset.database) {
    const site = button.dataset.site;
    const question = button.dataset.database === "restore"
      ? `Restore the database backups of site ${site}? What was written since they were taken is lost.`
      : `Keep the databases of site ${site} at the new version, with the files at the old one?`;
    if (confirm(question)) act(`sites/${encodeURIComponent(site)}/database`, button, { choice: button.dataset.database });
  }
});

$("rollouts").addEventListener("click", (event) => {
  const row = event.target.closest("[data-rollout]");
  if (row && !event.target.closest("a")) location.hash = `#${row.dataset.rollout}`;
});

// ---- live ------------------------------------------------------------------

function appendOutput(line) {
  if (!detail || !detail.sites.some((s) => s.servers.some((v) => v.server === line.server && v.steps.some((t) => t.module === line.module)))) return;
  const output = outputOf(line.server, line.module);
  const added = [];
  if (output.install_id !== line.install_id) {
    if (output.install_id !== null) added.push(`── install ${line.install_id} ──`);
    output.install_id = line.install_id;
  }
  added.push(...String(line.text ?? "").replace(/\n$/, "").split("\n").map((t) => (line.kind === "stdout" ? t : `[${line.kind}] ${t}`)));
  output.lines.push(...added);
  output.lines.splice(0, Math.max(0, output.lines.length - OUTPUT_LINES));
  const pre = $("rollout").querySelector(`pre.output[data-server="${CSS.escape(line.server)}"][data-module="${CSS.escape(line.module)}"]`);
  if (!pre) { refreshDetail(); return; } // the step started since the last fetch
  const atBottom = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
  pre.textContent = output.lines.join("\n");
  if (atBottom) pre.scrollTop = pre.scrollHeight;
  const phase = pre.closest("tr").previousElementSibling.querySelector(".phase");
  if (phase && line.phase) phase.textContent = line.phase;
}


function reloadAll() {
  refreshList();
  refreshDetail();
  loadReleases().catch((e) => showError("form-error", `Cannot load the releases: ${e.message}`));
}

$("start").addEventListener("click", start);
$("new-rollout").addEventListener("submit", (event) => { event.preventDefault(); preview(); });
// A changed form no longer matches the previewed plan.
for (const type of ["input", "change"]) $("new-rollout").addEventListener(type, () => { $("start").disabled = true; });
window.addEventListener("hashchange", fromHash);

loadStates()
  .catch((e) => showError("form-error", `Cannot load the rollouts' states: ${e.message}`))
  .finally(() => {
    fromHash();
    reloadAll();
    follow({
      open: () => { refreshList(); refreshDetail(); },
      rollout: (id) => {
        if (id.trim() === shownId) refreshDetail();
        refreshList();
      },
      install: appendOutput,
      server: () => { if (detail && stateOf("rollout", detail.state).under_way) refreshDetail(); },
      resync: reloadAll,
    });
  });
