// What every dashboard page shares: a banner when the controller serves
// plain text (--insecure-plaintext), which anyone on the network can read
// and change.
(() => {
  if (location.protocol !== "http:") return;
  const banner = document.createElement("div");
  banner.className = "plaintext";
  banner.id = "plaintext";
  banner.setAttribute("role", "alert");
  banner.textContent =
    "Plain text: this controller runs with --insecure-plaintext. Anyone on the network can read and change what this page, the API and the agents say.";
  document.body.prepend(banner);
})();
