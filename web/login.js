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
    const next = new URLSearchParams(location.search).get("next") || "/";
    // Only a path on this site: never somewhere else.
    location.href = next.startsWith("/") && !next.startsWith("//") ? next : "/";
    return;
  }
  const body = await response.json().catch(() => ({}));
  problem.textContent = body.message || `Sign-in failed (${response.status})`;
  problem.hidden = false;
});
