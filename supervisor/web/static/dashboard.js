// jobvisor dashboard: live updates over Server-Sent Events, confirmed admin actions, diagrams.
(function () {
  "use strict";
  const status = () => document.getElementById("live-status");
  const flash = (text, ok) => {
    const box = document.getElementById("flash");
    box.textContent = text;
    box.className = ok ? "ok" : "problem";
  };

  // Every event of this page's stream asks for #live to be fetched again, at most once a second
  // and never dropped: an event that comes while a fetch is waiting joins it, and one that comes
  // after the last fetch started makes another (htmx's own throttle drops the trailing event,
  // which left a finished job shown as active).
  const REFRESH_MS = 1000;
  let pending = null;
  let last = 0;
  const refresh = () => {
    pending = null;
    last = Date.now();
    document.body.dispatchEvent(new CustomEvent("jv-refresh"));
  };
  const changed = () => {
    if (pending !== null) return;
    pending = setTimeout(refresh, Math.max(0, last + REFRESH_MS - Date.now()));
  };
  const url = document.body.dataset.events;
  if (url) {
    const source = new EventSource(url);
    source.onopen = () => { status().textContent = "live"; status().className = "live-status on"; };
    source.onerror = () => { status().textContent = "reconnecting…"; status().className = "live-status"; };
    source.onmessage = (message) => {
      JSON.parse(message.data); // a well-formed event; what changed is read back with #live
      changed();
    };
  }

  // Admin buttons: confirm, then POST to the API; the answer (or its problem) is shown.
  document.addEventListener("click", async (click) => {
    const button = click.target.closest("button[data-post]");
    if (!button) return;
    if (!window.confirm(button.dataset.confirm || "Are you sure?")) return;
    const response = await fetch(button.dataset.post, {
      method: "POST",
      headers: { "HX-Request": "true", "Content-Type": "application/json" },
      body: button.dataset.body || "",
      credentials: "same-origin",
    });
    const answer = await response.json().catch(() => ({}));
    if (response.ok) {
      flash(`${answer.id}: ${answer.from} → ${answer.to}`, true);
      changed();
    } else {
      flash(answer.detail || `HTTP ${response.status}`, false);
    }
  });

  // Mermaid draws the job machine after every swap of #live.
  const draw = () => {
    if (!window.mermaid) return;
    window.mermaid.initialize({ startOnLoad: false, securityLevel: "strict" });
    window.mermaid.run({ querySelector: "pre.mermaid:not([data-processed])" });
  };
  window.addEventListener("load", draw);
  document.addEventListener("htmx:afterSettle", draw);
})();
