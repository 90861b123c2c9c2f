// Agents' identities (admins): enrollment tokens for new servers, and
// revoking a server, which closes its connection and refuses its
// certificates until it is enrolled again.
"use strict";

function cell(text) {
  const td = document.createElement("td");
  td.textContent = text;
  return td;
}

function showProblem(message) {
  const problem = document.getElementById("problem");
  problem.textContent = message;
  problem.hidden = !message;
}

async function failure(response) {
  const body = await response.json().catch(() => null);
  return (body && body.message) || `${response.status} ${response.statusText}`;
}

async function loadTokens() {
  const response = await api("/api/v1/enrollments");
  if (!response.ok) return showProblem(await failure(response));
  const tokens = await response.json();
  document.querySelector("#tokens tbody").replaceChildren(...tokens.map((token) => {
    const row = document.createElement("tr");
    row.dataset.token = String(token.id);
    const used = token.used_at ? `${clock(token.used_at)} from ${token.used_from}` : "not yet";
    row.append(cell(token.server), cell(token.site), cell(token.created_by),
      cell(clock(token.expires_at)), cell(used));
    return row;
  }));
}

function revokeButton(server) {
  const button = document.createElement("button");
  button.textContent = "Revoke";
  button.dataset.revoke = server.id;
  button.addEventListener("click", async () => {
    // Two clicks: the first asks, the second revokes.
    if (button.dataset.confirm !== "yes") {
      button.dataset.confirm = "yes";
      button.textContent = `Revoke ${server.id}: its connection closes and it must be enrolled again`;
      return;
    }
    button.disabled = true;
    const response = await api(`/api/v1/servers/${encodeURIComponent(server.id)}/revoke`, { method: "POST" });
    if (!response.ok) return showProblem(await failure(response));
    showProblem("");
    button.textContent = "Revoked";
    loadServers();
  });
  return button;
}

async function loadServers() {
  let servers;
  try {
    servers = await allServers();
  } catch (e) {
    return showProblem(e.response ? await failure(e.response) : e.message);
  }
  document.querySelector("#servers tbody").replaceChildren(...servers.map((server) => {
    const row = document.createElement("tr");
    row.dataset.server = server.id;
    const status = server.online ? "online" : `offline${server.offline_reason ? `: ${server.offline_reason}` : ""}`;
    const action = document.createElement("td");
    action.append(revokeButton(server));
    row.append(cell(server.id), cell(server.site), cell(status), action);
    return row;
  }));
}

document.getElementById("enroll").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = event.target;
  const response = await api("/api/v1/enrollments", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({
      server: form.server.value.trim(),
      site: form.site.value.trim(),
      expires_in_minutes: Number(form.minutes.value),
    }),
  });
  if (!response.ok) return showProblem(await failure(response));
  showProblem("");
  const created = await response.json();
  document.getElementById("fingerprint").textContent = created.ca_fingerprint;
  document.getElementById("token").textContent = created.token;
  document.getElementById("command").textContent = created.command;
  document.getElementById("windows-command").textContent = created.windows_command;
  document.getElementById("created").hidden = false;
  loadTokens();
});

loadServers();
loadTokens();
