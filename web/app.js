// The fleet page: a page of servers at a time from /api/v1/servers (with
// the filters, in the controller's database), the fleet's counts and
// versions from /api/v1/fleet/summary, then /api/v1/events to stay live
// without a reload. No framework, no CDN.
"use strict";

// The procedure's module order; other modules follow alphabetically.
const MODULE_ORDER = ["database", "integration", "gestioncommerciale", "ecommerce", "phygitalapi"];
const servers = new Map(); // id -> server JSON
const liveInstalls = new Map(); // "server/module" -> latest progress line

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null) continue;
    if (key === "class") node.className = value;
    else if (key.startsWith("data-") || key === "title") node.setAttribute(key, value);
    else node[key] = value;
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function moduleRank(name) {
  const i = MODULE_ORDER.indexOf(name);
  return i < 0 ? MODULE_ORDER.length : i;
}

function byModuleOrder(a, b) {
  return moduleRank(a) - moduleRank(b) || a.localeCompare(b);
}

function ago(iso) {
  const seconds = Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 1000));
  if (seconds < 60) return `${seconds} s ago`;
  const minutes = Math.floor(seconds / 60);
  if (minutes < 60) return `${minutes} min ago`;
  const hours = Math.floor(minutes / 60);
  if (hours < 48) return `${hours} h ago`;
  return `${Math.floor(hours / 24)} days ago`;
}

function statusCell(server) {
  if (server.online) {
    return el("td", { class: "status" },
      el("span", { class: "dot online" }), "online",
      el("div", { class: "muted small", title: clock(server.connected_at) },
        "connected ", el("span", { class: "ago", "data-at": server.connected_at }, ago(server.connected_at))));
  }
  const since = server.went_silent_at || server.last_seen_at;
  return el("td", { class: "status" },
    el("span", { class: "dot offline" }), "offline",
    el("div", { class: "muted small", title: clock(since) },
      "silent since ", el("span", { class: "ago", "data-at": since }, ago(since))),
    server.offline_reason ? el("div", { class: "muted small" }, server.offline_reason) : null);
}

function installLine(server, module) {
  const install = module.last_install;
  const live = liveInstalls.get(`${server.id}/${module.name}`);
  if (install && install.state === "running") {
    const text = live ? `${live.phase ? live.phase + " · " : ""}${live.text}` : `installing ${install.to_version}`;
    return el("div", { class: "install running small", "data-install": "running" }, "⟳ ", text);
  }
  if (!install) return null;
  if (install.state === "succeeded" && install.warnings.length) {
    return el("div", { class: "install warned small", "data-install": "succeeded-with-warnings", title: install.warnings.join("\n") },
      `⚠ ${install.to_version} · ${install.downtime_ms} ms down · ${install.warnings[0]}`);
  }
  if (install.state === "succeeded") {
    return el("div", { class: "install ok small", "data-install": "succeeded", title: install.message || "" },
      `✓ ${install.to_version} · ${install.downtime_ms} ms down`);
  }
  const where = install.phase ? ` in ${install.phase}` : "";
  return el("div", { class: "install failed small", "data-install": "failed", title: install.message || "" },
    `✗ ${install.to_version} failed${where}${install.rolled_back ? ", rolled back" : ""}`);
}

function downloadLine(module) {
  const download = module.download;
  if (!download) return null;
  if (download.state === "downloading") {
    return el("div", { class: "download small", "data-download": "downloading" }, `⇣ ${download.version} · ${download.detail}`);
  }
  return el("div", { class: "download failed small", "data-download": download.state, title: download.detail || "" },
    `✗ ${download.version} ${download.state === "refused" ? "refused" : "download failed"}: ${download.detail || ""}`);
}

function installButton(server, module) {
  if (!module.pending_version || !server.online) return null;
  if (module.last_install && module.last_install.state === "running") return null;
  const button = el("button", { class: "install-button", "data-install-button": module.name, type: "button" },
    `Install ${module.pending_version}`);
  button.addEventListener("click", async () => {
    button.disabled = true;
    button.textContent = "Starting…";
    const response = await api(`/api/v1/servers/${encodeURIComponent(server.id)}/modules/${encodeURIComponent(module.name)}/install`,
      { method: "POST", headers: { "content-type": "application/json" }, body: "{}" });
    if (!response.ok) {
      const error = await response.json().catch(() => ({ message: response.statusText }));
      button.textContent = "Refused";
      button.title = error.message;
      alert(error.message);
    }
  });
  return el("div", {}, button);
}

function moduleCell(server, name) {
  const module = server.modules.find((m) => m.name === name);
  if (!module) return el("td", { class: "cell none", "data-module": name }, "—");
  const text = module.installed_version || (module.state === "missing" ? "missing" : "unknown");
  const title = [`${module.kind} · ${module.install_path}`, module.detail].filter(Boolean).join("\n");
  return el("td", { class: `cell state-${module.state}`, "data-module": name, title },
    el("span", { class: "version" }, text),
    module.pending_version ? el("span", { class: "pending small", "data-pending": module.pending_version }, ` → ${module.pending_version} available`) : null,
    module.state === "maintenance" ? el("div", { class: "small" }, "in maintenance") : null,
    downloadLine(module),
    installLine(server, module),
    installButton(server, module),
    reviewLink(server, module));
}

// A database upgrade may need a review (drift, scripts run by hand) first.
function reviewLink(server, module) {
  if (module.kind !== "database" || !module.pending_version) return null;
  const href = `/database?server=${encodeURIComponent(server.id)}&module=${encodeURIComponent(module.name)}`;
  return el("a", { class: "review", href, title: "Review the database upgrade" }, "review");
}

// Doctor reports asked from the dashboard, by server id: {loading} or
// {report} or {error}; kept across re-renders.
const doctors = new Map();

function doctorButton(server) {
  if (!server.online) return null;
  const button = el("button", { class: "small-button", type: "button", "data-doctor-button": server.id }, "Doctor");
  button.addEventListener("click", async () => {
    doctors.set(server.id, { loading: true });
    render();
    const response = await api(`/api/v1/servers/${encodeURIComponent(server.id)}/doctor`);
    const body = await response.json().catch(() => ({ message: response.statusText }));
    doctors.set(server.id, response.ok ? { report: body } : { error: body.message || response.statusText });
    render();
  });
  return button;
}

function doctorRow(server, columns) {
  const found = doctors.get(server.id);
  if (!found) return null;
  let content;
  if (found.loading) content = el("p", { class: "muted" }, "Running the doctor on the server…");
  else if (found.error) content = el("p", { class: "problem-line" }, `The doctor could not run: ${found.error}`);
  else {
    const rows = found.report.checks.map((c) => el("tr", { class: `check ${c.status}`, "data-check": c.check, "data-status": c.status },
      el("td", {}, el("span", { class: `pill ${c.status === "ok" ? "ok" : "bad"}` }, c.status.toUpperCase())),
      el("td", {}, c.check), el("td", {}, el("code", {}, c.subject)), el("td", {}, c.finding), el("td", { class: "small" }, c.fix)));
    content = el("div", {},
      el("p", { "data-worst": found.report.worst }, `Doctor of ${found.report.server}: ${found.report.worst.toUpperCase()}, ${clock(found.report.at)}`),
      el("table", { class: "doctor" }, el("thead", {}, el("tr", {}, el("th", {}), el("th", {}, "Check"), el("th", {}, "Looked at"), el("th", {}, "Found"), el("th", {}, "How to fix it"))),
        el("tbody", {}, ...rows)));
  }
  return el("tr", { class: "doctor-row", "data-doctor-of": server.id }, el("td", { colSpan: columns }, content));
}

function siteCard(site, siteServers) {
  const modules = [...new Set(siteServers.flatMap((s) => s.modules.map((m) => m.name)))].sort(byModuleOrder);
  const online = siteServers.filter((s) => s.online).length;
  const head = el("tr", {}, el("th", {}, "Server"), el("th", {}, "Status"), ...modules.map((m) => el("th", {}, m)));
  const body = el("tbody");
  for (const server of siteServers) {
    body.append(el("tr", { class: server.online ? "online" : "offline", "data-server": server.id, "data-status": server.online ? "online" : "offline" },
      el("td", { class: "server" }, el("strong", {}, server.id),
        el("div", { class: "muted small" }, `${server.hostname} · ${server.os} · agent ${server.agent_version}`),
        doctorButton(server)),
      statusCell(server),
      ...modules.map((m) => moduleCell(server, m))));
    if (server.problems.length) {
      body.append(el("tr", { class: "problems-row", "data-problems-of": server.id },
        el("td", { colSpan: modules.length + 2 },
          ...server.problems.map((p) => el("div", { class: "problem-line" },
            "⚠ ", [p.file, p.line ? `line ${p.line}` : null].filter(Boolean).join(", "), p.file ? ": " : "", p.message)))));
    }
    const doctor = doctorRow(server, modules.length + 2);
    if (doctor) body.append(doctor);
  }
  return el("section", { class: "card site", "data-site": site },
    el("div", { class: "site-head" }, el("h2", {}, site),
      el("span", { class: `pill ${online === siteServers.length ? "ok" : "bad"}` }, `${online}/${siteServers.length} online`)),
    el("table", { class: "matrix" }, el("thead", {}, head), body));
}

function render() {
  const all = [...servers.values()];
  const sites = new Map();
  for (const server of all.sort((a, b) => a.id.localeCompare(b.id))) {
    if (!sites.has(server.site)) sites.set(server.site, []);
    sites.get(server.site).push(server);
  }
  const chart = versionsChart();
  const existing = document.getElementById("versions");
  if (existing) existing.remove();
  if (chart) document.getElementById("summary").after(chart);
  const counts = summary || { sites: sites.size, servers: all.length, online: 0, update_available: 0, failed: 0, maintenance: 0, problems: 0 };
  document.getElementById("summary").replaceChildren(
    el("div", { class: "tile" }, el("b", {}, counts.sites), "sites"),
    el("div", { class: "tile", "data-tile": "online" }, el("b", {}, `${counts.online}/${counts.servers}`), "servers online"),
    el("div", { class: "tile", "data-tile": "update_available" }, el("b", {}, counts.update_available), "updates waiting"),
    el("div", { class: `tile ${counts.failed ? "bad" : ""}`, "data-tile": "failed" }, el("b", {}, counts.failed), "installs failed"),
    el("div", { class: `tile ${counts.problems ? "bad" : ""}`, "data-tile": "problems" }, el("b", {}, counts.problems), "servers with problems"));
  const first = page.previous.length * page.size;
  document.getElementById("page-text").textContent =
    page.total ? `servers ${first + 1}–${first + all.length} of ${page.total}` : "";
  document.getElementById("page-previous").disabled = !page.previous.length;
  document.getElementById("page-next").disabled = !page.next;
  const container = document.getElementById("sites");
  if (!all.length) {
    container.replaceChildren(el("p", { class: "muted" },
      filtered() ? "No server matches these filters." : "No agent has connected yet."));
    return;
  }
  container.replaceChildren(...[...sites.keys()].sort().map((site) => siteCard(site, sites.get(site))));
}

// The page shown: its cursor, the cursors of the pages before it (to go
// back), the next page's, and how many servers the filters select.
const page = { after: null, previous: [], next: null, total: 0, size: 100 };

function filterQuery() {
  const params = new URLSearchParams();
  const value = (id) => document.getElementById(id).value.trim();
  if (value("filter-q")) params.set("q", value("filter-q"));
  if (value("filter-state")) params.set("state", value("filter-state"));
  if (value("filter-module")) params.set("module", value("filter-module"));
  if (value("filter-version")) params.set("version", value("filter-version"));
  if (document.getElementById("filter-problems").checked) params.set("problems", "true");
  return params;
}

const filtered = () => [...filterQuery().keys()].length > 0;

// Server events that came while a reload was reading the fleet: newer than
// what it read, so laid over it (else a change made during a reload,
// at a reconnection or a resync, would be lost until the next one).
let reloads = 0;
let reloading = 0;
const arrivedDuringReload = new Map();

async function reload() {
  const mine = ++reloads;
  reloading += 1;
  try {
    await reloadServers(mine);
  } finally {
    reloading -= 1;
    if (!reloading) arrivedDuringReload.clear();
  }
}

async function reloadServers(mine) {
  const params = filterQuery();
  page.size = Number(document.getElementById("page-size").value) || 100;
  params.set("limit", String(page.size));
  if (page.after) params.set("after", page.after);
  const [response] = await Promise.all([api(`/api/v1/servers?${params}`), reloadSummary()]);
  if (!response.ok) {
    const error = await response.json().catch(() => ({}));
    throw new Error(error.message || `GET /api/v1/servers: ${response.status}`);
  }
  const read = await response.json();
  // A later reload (a new filter, a new page) stands instead.
  if (mine !== reloads) return;
  page.next = response.headers.get("X-Next-Cursor");
  page.total = Number(response.headers.get("X-Total-Count") || 0);
  servers.clear();
  for (const server of read) servers.set(server.id, server);
  for (const server of arrivedDuringReload.values()) take(server);
  render();
}

// A server of this page changed; a new one shows if it fits on the last
// page of the whole fleet. Others are in the counts.
function take(server) {
  const fits = !filtered() && !page.next && servers.size < page.size;
  if (servers.has(server.id) || fits) servers.set(server.id, server);
}

function showPage(after, previous) {
  page.after = after;
  page.previous = previous;
  reload().catch((e) => setLive(`error: ${e.message}`, "bad"));
}

document.getElementById("page-next").addEventListener("click", () => {
  if (page.next) showPage(page.next, [...page.previous, page.after]);
});
document.getElementById("page-previous").addEventListener("click", () => {
  if (page.previous.length) showPage(page.previous[page.previous.length - 1], page.previous.slice(0, -1));
});
// A change of filter starts again from the first page (typing waits a little).
let typing = null;
for (const id of ["filter-q", "filter-module", "filter-version"]) {
  document.getElementById(id).addEventListener("input", () => {
    clearTimeout(typing);
    typing = setTimeout(() => showPage(null, []), 300);
  });
}
for (const id of ["filter-state", "filter-problems", "page-size"]) {
  document.getElementById(id).addEventListener("change", () => showPage(null, []));
}
document.getElementById("filters").addEventListener("submit", (event) => {
  event.preventDefault();
  showPage(null, []);
});

// The fleet's version distribution per module, counted by the controller:
// who is still on the old version?
let summary = null;

async function reloadSummary() {
  const response = await api("/api/v1/fleet/summary");
  if (response.ok) summary = await response.json();
}

function versionsChart() {
  if (!summary || !summary.versions.length) return null;
  const svg = "http://www.w3.org/2000/svg";
  const rows = summary.versions.map((m) => {
    const total = m.versions.reduce((n, v) => n + v.servers, 0) || 1;
    const chart = document.createElementNS(svg, "svg");
    chart.setAttribute("width", "320");
    chart.setAttribute("height", "16");
    chart.setAttribute("role", "img");
    let x = 0;
    const newest = m.versions.length - 1;
    m.versions.forEach((v, i) => {
      const width = Math.max(1, Math.round((v.servers / total) * 320));
      const bar = document.createElementNS(svg, "rect");
      bar.setAttribute("x", String(x));
      bar.setAttribute("width", String(width));
      bar.setAttribute("height", "16");
      bar.setAttribute("class", i === newest ? "bar newest" : "bar older");
      const title = document.createElementNS(svg, "title");
      title.textContent = `${v.version || "unknown"}: ${v.servers} servers`;
      bar.append(title);
      chart.append(bar);
      x += width;
    });
    return el("div", { class: "version-row", "data-module": m.module },
      el("span", { class: "name" }, m.module), chart,
      el("span", { class: "small muted" }, m.versions.map((v) => `${v.version || "unknown"}: ${v.servers}`).join(" · ")));
  });
  return el("section", { class: "card versions", id: "versions" }, el("h2", {}, "Versions across the fleet"), ...rows);
}


follow({
  open: () => reload().catch((e) => setLive(`error: ${e.message}`, "bad")),
  server: (server) => {
    if (reloading) arrivedDuringReload.set(server.id, server);
    refreshSummary();
    take(server);
    render();
  },
  install: (line) => {
    liveInstalls.set(`${line.server}/${line.module}`, line);
    const server = servers.get(line.server);
    if (server) {
      const module = server.modules.find((m) => m.name === line.module);
      if (module && (!module.last_install || module.last_install.install_id !== line.install_id)) {
        module.last_install = { install_id: line.install_id, state: "running", to_version: "" };
      }
      render();
    }
  },
  resync: () => reload().catch(() => {}),
});

// A burst of server events asks for the counts once.
let summaryDue = null;
function refreshSummary() {
  if (summaryDue) return;
  summaryDue = setTimeout(async () => {
    summaryDue = null;
    await reloadSummary().catch(() => {});
    render();
  }, 1000);
}

setInterval(() => {
  for (const node of document.querySelectorAll(".ago")) node.textContent = ago(node.dataset.at);
}, 1000);

