// fhirlink console: the one script of every page (served from 'self'; no inline script).
// It switches the tabs of a form, and keeps a page live: when the control plane's state
// changes (server-sent events), the page reloads, unless the user has typed into a form.
"use strict";

(function () {
  let dirty = false;
  document.addEventListener("input", () => { dirty = true; });

  // Tabs: a form with data-tabs shows one data-panel at a time.
  for (const root of document.querySelectorAll("[data-tabs]")) {
    const tabs = root.querySelectorAll("[data-tab]");
    const panels = root.querySelectorAll("[data-panel]");
    const show = (name) => {
      for (const t of tabs) {
        const on = t.dataset.tab === name;
        t.setAttribute("aria-selected", on ? "true" : "false");
        t.tabIndex = on ? 0 : -1;
      }
      for (const p of panels) p.hidden = p.dataset.panel !== name;
    };
    for (const t of tabs) t.addEventListener("click", () => show(t.dataset.tab));
    // After a failed submission, open the tab of the field the error concerns.
    const invalid = root.querySelector("[aria-invalid=true]");
    const panel = invalid ? invalid.closest("[data-panel]") : null;
    show(panel ? panel.dataset.panel : root.dataset.tabs);
    // Every panel is shown while the form is checked by the browser, so that a field's
    // message is never hidden; the server answers every error beside its field anyway.
    root.addEventListener("submit", () => { for (const p of panels) p.hidden = false; });
  }

  // A choice of subnets that follows the chosen virtual network.
  for (const box of document.querySelectorAll("[data-subnets]")) {
    const form = box.closest("form");
    const vnet = form && form.querySelector(`select[name=${box.dataset.subnets}]`);
    const subnet = box.querySelector("select[name=subnet]");
    if (!vnet || !subnet) continue;
    vnet.addEventListener("change", async () => {
      subnet.disabled = true;
      const resp = await fetch(`/console/subnets?vnet=${encodeURIComponent(vnet.value)}`, { credentials: "same-origin" });
      const items = resp.ok ? await resp.json() : [];
      subnet.replaceChildren(...items.map((i) => new Option(i.label, i.id)));
      subnet.disabled = false;
      subnet.dispatchEvent(new Event("subnets-loaded"));
      box.dataset.loaded = vnet.value;
    });
  }

  // A page that samples (the metrics) reloads itself every few seconds while untouched.
  const refresh = document.querySelector("[data-refresh]");
  if (refresh) {
    setInterval(() => { if (!dirty) window.location.reload(); }, Number(refresh.dataset.refresh) * 1000);
  }

  const live = document.body && document.body.dataset.live;
  if (live && "EventSource" in window) {
    const events = new EventSource(live);
    events.addEventListener("change", () => {
      if (!dirty) window.location.reload();
      else document.body.classList.add("stale");
    });
  }
})();
