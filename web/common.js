// What every dashboard page shares: who is signed in (and a way out), the
// API calls (a change carries the session's CSRF token; a call refused for
// want of a session leads to the sign-in page), and a banner when the
// controller serves plain text (--insecure-plaintext).

let sessionInfo = null;

// Text made safe to put in HTML.
function escapeHtml(text) {
  return String(text ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}

// An element of the page by its id.
const $ = (id) => document.getElementById(id);

// A time for a person, in their locale; "—" for none.
function clock(iso) {
  return iso ? new Date(iso).toLocaleString() : "—";
}

// Runs `task`, at most once at a time; calls made meanwhile run it once more
// after (a page's reload, asked again by each event while it runs).
function coalesce(task) {
  let running = false, again = false;
  return async function run() {
    if (running) { again = true; return; }
    running = true;
    try {
      do { again = false; await task().catch((e) => console.error(e)); } while (again);
    } finally { running = false; }
  };
}

// Follows the live event stream (/api/v1/events). `on` maps an event's
// name (server, install, rollout, resync) to its handler, given the event's
// data: parsed for server and install, as sent for the others; `on.open`
// runs at each (re)connection, when a page reloads what it shows. The
// header's indicator says how the stream stands.
function follow(on) {
  const events = new EventSource("/api/v1/events");
  events.addEventListener("open", () => {
    setLive("live", "ok");
    if (on.open) on.open();
  });
  events.addEventListener("error", () => setLive("reconnecting…", "warn"));
  for (const [name, handler] of Object.entries(on)) {
    if (name === "open") continue;
    const parsed = name === "server" || name === "install";
    events.addEventListener(name, (event) => handler(parsed ? JSON.parse(event.data) : event.data));
  }
  return events;
}

// The header's live indicator: what the event stream is doing.
function setLive(text, cls) {
  const live = document.getElementById("live");
  live.textContent = text;
  live.className = `link ${cls}`;
}

async function session() {
  if (!sessionInfo) {
    const response = await fetch("/api/v1/session", { credentials: "same-origin" });
    if (response.status === 401) {
      signIn();
      throw new Error("not signed in");
    }
    sessionInfo = await response.json();
    // A password someone else set is changed before anything else.
    if (sessionInfo.must_change_password && location.pathname !== "/login") {
      const next = encodeURIComponent(location.pathname + location.search);
      location.href = `/login?change=1&next=${next}`;
      throw new Error("the password must be changed first");
    }
  }
  return sessionInfo;
}

function signIn() {
  const next = encodeURIComponent(location.pathname + location.search);
  location.href = `/login?next=${next}`;
}

// fetch() for the API: the CSRF token on changes, the sign-in page on 401.
async function api(url, options = {}) {
  const method = (options.method || "GET").toUpperCase();
  const headers = { ...(options.headers || {}) };
  if (method !== "GET" && method !== "HEAD") {
    const { csrf } = await session();
    if (csrf) headers["X-CSRF-Token"] = csrf;
  }
  const response = await fetch(url, { ...options, headers, credentials: "same-origin" });
  if (response.status === 401) signIn();
  return response;
}

// Every server the fleet API selects (`query`: its filters), page after
// page, following X-Next-Cursor.
async function allServers(query = "") {
  const servers = [];
  let after = null;
  do {
    const params = new URLSearchParams(query);
    params.set("limit", "1000");
    if (after) params.set("after", after);
    const response = await api(`/api/v1/servers?${params}`);
    if (!response.ok) {
      const error = new Error(`GET /api/v1/servers: ${response.status}`);
      error.response = response;
      throw error;
    }
    servers.push(...(await response.json()));
    after = response.headers.get("X-Next-Cursor");
  } while (after);
  return servers;
}

(() => {
  if (location.protocol === "http:") {
    const banner = document.createElement("div");
    banner.className = "plaintext";
    banner.id = "plaintext";
    banner.setAttribute("role", "alert");
    banner.textContent =
      "Plain text: this controller runs with --insecure-plaintext. Anyone on the network can read and change what this page, the API and the agents say.";
    document.body.prepend(banner);
  }
  if (location.pathname === "/login") return;
  session().then(({ name, role }) => {
    const nav = document.querySelector("nav.who");
    if (!nav) return;
    const who = document.createElement("span");
    who.id = "signed-in";
    who.className = "signed-in";
    who.textContent = ` · ${name} (${role}) · `;
    const out = document.createElement("a");
    out.href = "#";
    out.className = "nav";
    out.id = "sign-out";
    out.textContent = "Sign out";
    out.addEventListener("click", async (event) => {
      event.preventDefault();
      await api("/api/v1/session", { method: "DELETE" });
      location.href = "/login";
    });
    who.append(out);
    nav.append(who);
  }).catch(() => {});
})();
