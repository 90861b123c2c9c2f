// The sign-in page: an account's name and password make a session cookie,
// then back to the page that asked. A password someone else set (the first
// admin's, or one an admin reset) is changed here first.
let csrf = null;

// The form that changes a password someone else set, the current one
// filled in when it was just typed.
function askForANewPassword(current) {
  document.getElementById("sign-in").hidden = true;
  document.getElementById("change").hidden = false;
  document.getElementById("change-current").value = current || "";
  document.getElementById(current ? "change-new" : "change-current").focus();
}

document.getElementById("change").addEventListener("submit", async (event) => {
  event.preventDefault();
  const problem = document.getElementById("change-problem");
  problem.hidden = true;
  const fresh = document.getElementById("change-new").value;
  if (fresh !== document.getElementById("change-again").value) {
    problem.textContent = "The two new passwords differ.";
    problem.hidden = false;
    return;
  }
  if (!csrf) {
    const me = await fetch("/api/v1/session", { credentials: "same-origin" });
    csrf = me.ok ? (await me.json()).csrf : null;
  }
  const response = await fetch("/api/v1/session/password", {
    method: "PUT",
    headers: { "content-type": "application/json", "x-csrf-token": csrf || "" },
    credentials: "same-origin",
    body: JSON.stringify({ current_password: document.getElementById("change-current").value, new_password: fresh }),
  });
  if (response.ok) {
    location.href = backTo(new URLSearchParams(location.search).get("next"));
    return;
  }
  const body = await response.json().catch(() => ({}));
  problem.textContent = body.message || `The password was not changed (${response.status})`;
  problem.hidden = false;
});

// Sent here by another page because the password must be changed first.
if (new URLSearchParams(location.search).get("change") === "1") askForANewPassword("");

document.getElementById("sign-in").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = event.target;
  const problem = document.getElementById("problem");
  problem.hidden = true;
  const response = await fetch("/api/v1/session", {
    method: "POST",
    headers: { "content-type": "application/json" },
    credentials: "same-origin",
    body: JSON.stringify({ name: form.name.value, password: form.password.value }),
  });
  if (response.ok) {
    const signedIn = await response.json();
    if (signedIn.must_change_password) {
      csrf = signedIn.csrf;
      askForANewPassword(form.password.value);
      return;
    }
    location.href = backTo(new URLSearchParams(location.search).get("next"));
    return;
  }
  const body = await response.json().catch(() => ({}));
  problem.textContent = body.message || `Sign-in failed (${response.status})`;
  problem.hidden = false;
});

// Where to go after signing in: the page that asked, only if it is on this
// site. The browser resolves `next` as it would navigate to it (so
// `/\evil.example` or `/<tab>/evil.example`, which it reads as another
// host, is caught); the whole URL resolved goes on, never a path that a
// browser could read again as another host's.
function backTo(next) {
  if (!next) return "/";
  let url;
  try {
    url = new URL(next, location.origin);
  } catch {
    return "/";
  }
  if (url.origin !== location.origin) return "/";
  return url.href;
}
