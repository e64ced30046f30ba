// jobvisor dashboard: live updates over Server-Sent Events, confirmed admin actions, diagrams.
(function () {
  "use strict";
  const status = () => document.getElementById("live-status");
  const flash = (text, ok) => {
    const box = document.getElementById("flash");
    box.textContent = text;
    box.className = ok ? "ok" : "problem";
  };

  // Every event of this page's stream asks htmx to fetch #live again (throttled in the markup).
  const url = document.body.dataset.events;
  if (url) {
    const source = new EventSource(url);
    source.onopen = () => { status().textContent = "live"; status().className = "live-status on"; };
    source.onerror = () => { status().textContent = "reconnecting…"; status().className = "live-status"; };
    source.onmessage = (message) => {
      const event = JSON.parse(message.data);
      document.body.dispatchEvent(new CustomEvent("jv-event", { detail: event }));
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
      document.body.dispatchEvent(new CustomEvent("jv-event"));
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
