// The audit trail: every change and every refusal, who, what, when, from
// where; filtered here, exported as JSON lines.
function query() {
  const form = document.getElementById("filter");
  const params = new URLSearchParams();
  for (const name of ["actor", "action"]) {
    const value = form[name].value.trim();
    if (value) params.set(name, value);
  }
  if (form.since.value) params.set("since", new Date(form.since.value).toISOString());
  return params.toString();
}

async function load() {
  const problem = document.getElementById("problem");
  problem.hidden = true;
  const q = query();
  document.getElementById("export").href = `/api/v1/audit/export${q ? `?${q}` : ""}`;
  const response = await api(`/api/v1/audit${q ? `?${q}` : ""}`);
  const body = await response.json().catch(() => null);
  if (!response.ok) {
    problem.textContent = (body && body.message) || `${response.status} ${response.statusText}`;
    problem.hidden = false;
    return;
  }
  const rows = document.querySelector("#trail tbody");
  rows.replaceChildren(...body.map((entry) => {
    const row = document.createElement("tr");
    row.className = entry.outcome >= 400 ? "entry refused" : "entry";
    for (const text of [clock(entry.at), entry.actor, entry.action, entry.target, String(entry.outcome), entry.source, entry.detail || ""]) {
      const cell = document.createElement("td");
      cell.textContent = text;
      row.append(cell);
    }
    return row;
  }));
}

document.getElementById("filter").addEventListener("submit", (event) => {
  event.preventDefault();
  load();
});
load();
