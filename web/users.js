// Users (admins): accounts and their lifecycle (role, disabled, password
// reset, deleted) and API tokens; and, for everyone, one's own password.
"use strict";

function cell(...content) {
  const td = document.createElement("td");
  td.append(...content);
  return td;
}

function showProblem(message) {
  $("problem").textContent = message;
  $("problem").hidden = !message;
}

async function failure(response) {
  const body = await response.json().catch(() => null);
  return (body && body.message) || `${response.status} ${response.statusText}`;
}

// Sends a change; reloads the tables when it was made, says why not when not.
async function change(url, method, body) {
  const options = { method };
  if (body !== undefined) {
    options.headers = { "Content-Type": "application/json" };
    options.body = JSON.stringify(body);
  }
  const response = await api(url, options);
  if (!response.ok) {
    showProblem(await failure(response));
    return false;
  }
  showProblem("");
  await Promise.all([loadAccounts(), loadTokens()]);
  return true;
}

// A button that asks first: the first click says what will happen, the
// second does it.
function twoClicks(label, warning, action) {
  const button = document.createElement("button");
  button.type = "button";
  button.textContent = label;
  button.addEventListener("click", async () => {
    if (button.dataset.confirm !== "yes") {
      button.dataset.confirm = "yes";
      button.textContent = warning;
      return;
    }
    button.disabled = true;
    await action();
  });
  return button;
}

function accountRow(account) {
  const row = document.createElement("tr");
  row.dataset.account = account.name;
  const url = `/api/v1/accounts/${encodeURIComponent(account.name)}`;

  const role = document.createElement("select");
  role.dataset.role = account.name;
  for (const name of ["viewer", "operator", "publisher", "admin"]) {
    role.append(new Option(name, name, false, name === account.role));
  }
  role.addEventListener("change", () => change(url, "PATCH", { role: role.value }));

  const state = account.disabled_at
    ? `disabled since ${clock(account.disabled_at)}`
    : account.must_change_password ? "must change its password" : "enabled";

  const password = document.createElement("input");
  password.type = "password";
  password.autocomplete = "new-password";
  password.placeholder = "new password";
  password.dataset.password = account.name;
  const reset = document.createElement("button");
  reset.type = "button";
  reset.textContent = "Reset";
  reset.dataset.reset = account.name;
  reset.addEventListener("click", () =>
    change(`${url}/password`, "PUT", { password: password.value, must_change_password: true }));

  const toggle = document.createElement("button");
  toggle.type = "button";
  toggle.textContent = account.disabled_at ? "Enable" : "Disable";
  toggle.dataset.toggle = account.name;
  toggle.addEventListener("click", () => change(url, "PATCH", { disabled: !account.disabled_at }));

  const remove = twoClicks("Delete",
    `Delete ${account.name}: its sessions end and its API tokens are revoked`,
    () => change(url, "DELETE"));
  remove.dataset.delete = account.name;

  row.append(cell(account.name), cell(role), cell(state), cell(clock(account.created_at)),
    cell(password, " ", reset), cell(toggle, " ", remove));
  return row;
}

async function loadAccounts() {
  const response = await api("/api/v1/accounts");
  if (!response.ok) return showProblem(await failure(response));
  const accounts = await response.json();
  document.querySelector("#accounts tbody").replaceChildren(...accounts.map(accountRow));
}

function tokenRow(token) {
  const row = document.createElement("tr");
  row.dataset.token = token.name;
  const state = token.revoked_at ? `revoked ${clock(token.revoked_at)}` : "live";
  const actions = cell();
  if (!token.revoked_at) {
    const revoke = twoClicks("Revoke", `Revoke ${token.name}: it is refused from now on`,
      () => change(`/api/v1/tokens/${encodeURIComponent(token.name)}`, "DELETE"));
    revoke.dataset.revoke = token.name;
    actions.append(revoke);
  }
  row.append(cell(token.name), cell(token.role), cell(token.created_by),
    cell(token.expires_at ? clock(token.expires_at) : "never"), cell(clock(token.last_used_at)),
    cell(state), actions);
  return row;
}

async function loadTokens() {
  const response = await api("/api/v1/tokens");
  if (!response.ok) return showProblem(await failure(response));
  const tokens = await response.json();
  document.querySelector("#tokens tbody").replaceChildren(...tokens.map(tokenRow));
}

$("my-password").addEventListener("submit", async (event) => {
  event.preventDefault();
  $("password-changed").hidden = true;
  const response = await api("/api/v1/session/password", {
    method: "PUT",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ current_password: $("current-password").value, new_password: $("new-password").value }),
  });
  if (!response.ok) return showProblem(await failure(response));
  showProblem("");
  event.target.reset();
  $("password-changed").hidden = false;
});

$("new-account").addEventListener("submit", async (event) => {
  event.preventDefault();
  const made = await change("/api/v1/accounts", "POST", {
    name: $("account-name").value.trim(),
    role: $("account-role").value,
    password: $("account-password").value,
    must_change_password: $("account-must-change").checked,
  });
  if (made) event.target.reset();
});

$("new-token").addEventListener("submit", async (event) => {
  event.preventDefault();
  const days = $("token-days").value;
  const response = await api("/api/v1/tokens", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({
      name: $("token-name").value.trim(),
      role: $("token-role").value,
      expires_in_days: days ? Number(days) : null,
    }),
  });
  if (!response.ok) return showProblem(await failure(response));
  showProblem("");
  $("token-secret").textContent = (await response.json()).secret;
  $("token-created").hidden = false;
  event.target.reset();
  loadTokens();
});

session().then(({ role }) => {
  const admin = role === "admin";
  $("admin").hidden = !admin;
  $("admins-only").hidden = admin;
  if (admin) {
    loadAccounts();
    loadTokens();
  }
}).catch(() => {});
