// The portal's pages follow the agent without reloading. Every few seconds
// (the body's data-live-every, in ms) the page is fetched again, and each
// region (data-live) whose content changed is replaced in place; what did
// not change, buttons included, stays where it is. A region is never
// replaced while a button in it is being pressed, and polling stops once
// the page no longer changes (an install's page once it has ended: its
// body has no data-live-every). Without scripts, a <noscript> refresh
// reloads the page instead.
(function () {
  "use strict";
  const every = Number(document.body.dataset.liveEvery || 0);
  if (!every) return;
  let pressing = null;
  document.addEventListener("pointerdown", (event) => { pressing = event.target; }, true);
  document.addEventListener("pointerup", () => { setTimeout(() => { pressing = null; }, 0); }, true);
  document.addEventListener("submit", () => { clearInterval(timer); }, true);
  let busy = false;
  async function refresh() {
    if (busy || document.hidden) return;
    busy = true;
    try {
      const response = await fetch(location.href, { cache: "no-store", credentials: "same-origin" });
      if (!response.ok) return;
      const fresh = new DOMParser().parseFromString(await response.text(), "text/html");
      for (const region of document.querySelectorAll("[data-live]")) {
        const next = fresh.querySelector(`[data-live="${region.dataset.live}"]`);
        if (!next || next.outerHTML === region.outerHTML) continue;
        if (pressing && region.contains(pressing)) continue;
        region.replaceWith(document.importNode(next, true));
      }
      if (!fresh.body.dataset.liveEvery) clearInterval(timer);
    } catch (_) {
      // The agent restarting, say: the next round tries again.
    } finally {
      busy = false;
    }
  }
  let timer = setInterval(refresh, every);
  // Back to this page from the browser's history: what it shows may be old.
  window.addEventListener("pageshow", (event) => {
    if (!event.persisted) return;
    clearInterval(timer);
    timer = setInterval(refresh, every);
    refresh();
  });
})();
