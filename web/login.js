// The sign-in page: an account's name and password make a session cookie,
// then back to the page that asked.
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
