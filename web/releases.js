// The releases page: every published release with its notes and packages.
"use strict";


// A small, safe Markdown subset: headings, lists, paragraphs, **bold**, `code`.
function markdown(source) {
  const inline = (line) => escapeHtml(line)
    .replace(/\*\*([^*]+)\*\*/g, "<strong>$1</strong>")
    .replace(/`([^`]+)`/g, "<code>$1</code>");
  const out = [];
  let list = false;
  for (const raw of source.split("\n")) {
    const line = raw.trimEnd();
    const item = line.match(/^\s*[-*] (.*)$/);
    if (!item && list) { out.push("</ul>"); list = false; }
    const heading = line.match(/^(#{1,4}) (.*)$/);
    if (heading) out.push(`<h${heading[1].length + 2}>${inline(heading[2])}</h${heading[1].length + 2}>`);
    else if (item) { if (!list) { out.push("<ul>"); list = true; } out.push(`<li>${inline(item[1])}</li>`); }
    else if (line.trim()) out.push(`<p>${inline(line)}</p>`);
  }
  if (list) out.push("</ul>");
  return out.join("\n");
}

function megabytes(bytes) {
  return bytes == null ? "—" : `${(bytes / 1e6).toFixed(1)} MB`;
}

async function load() {
  const response = await api("/api/v1/releases");
  const releases = await response.json();
  const container = document.getElementById("releases");
  if (!releases.length) {
    container.innerHTML = '<p class="muted">No release has been published yet.</p>';
    return;
  }
  container.innerHTML = releases.map((release) => `
    <section class="card release" data-release="${escapeHtml(release.version)}">
      <div class="site-head"><h2>${escapeHtml(release.version)}</h2>
        <span class="muted small">published ${escapeHtml(clock(release.created_at))}</span>
        ${release.withdrawn
          ? `<span class="withdrawn" data-withdrawn="${escapeHtml(release.version)}">withdrawn by ${escapeHtml(release.withdrawn.by)}, ${escapeHtml(clock(release.withdrawn.at))}: ${escapeHtml(release.withdrawn.reason)}</span>`
          : `<form class="withdraw" data-withdraw="${escapeHtml(release.version)}"><input name="reason" placeholder="why withdraw it" required>
             <button type="submit">Withdraw</button></form>`}</div>
      <p class="problem" role="alert" hidden></p>
      <div class="notes">${markdown(release.notes || "") || '<p class="muted">No notes.</p>'}</div>
      <table><thead><tr><th>Module</th><th>Version</th><th>Kind</th><th>Size</th><th>sha256</th></tr></thead><tbody>
      ${release.packages.map((p) => `<tr data-package="${escapeHtml(p.module)}"><td class="name">${escapeHtml(p.module)}</td>
        <td class="version">${escapeHtml(p.version)}</td><td>${escapeHtml(p.kind)}</td><td>${megabytes(p.size)}</td>
        <td><code title="${escapeHtml(p.sha256)}">${escapeHtml(p.sha256.slice(0, 16))}…</code></td></tr>`).join("")}
      </tbody></table>
    </section>`).join("");
  for (const form of container.querySelectorAll("form.withdraw")) {
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const version = form.dataset.withdraw;
      const response = await api(`/api/v1/releases/${encodeURIComponent(version)}/withdraw`, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ reason: form.reason.value }),
      });
      if (!response.ok) {
        const body = await response.json().catch(() => null);
        const problem = form.closest("section").querySelector(".problem");
        problem.textContent = (body && body.message) || `${response.status} ${response.statusText}`;
        problem.hidden = false;
        return;
      }
      load();
    });
  }
}

load().catch((e) => {
  document.getElementById("releases").innerHTML = `<p class="problems">Cannot load the releases: ${escapeHtml(e.message)}</p>`;
});
