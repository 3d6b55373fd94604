// The Security Console's pages work without this script; with it, the engines table and a
// running scan update themselves, the shared secret's lifetime counts down and Copy copies.
"use strict";

(function () {
  const POLL_MS = 2000;

  function setText(el, text) {
    if (el && el.textContent !== text) el.textContent = text;
  }

  // The engines table: update each displayed row's state in place (focus stays where it is).
  function pollEngines(tbody) {
    const url = tbody.getAttribute("data-poll");
    const updated = document.getElementById("engines-updated");
    async function tick() {
      try {
        const res = await fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } });
        if (res.redirected || res.status === 401) {
          if (updated) setText(updated, "Your session ended: sign in again to see updates.");
          return;
        }
        if (res.status === 200) {
          const data = await res.json();
          const shown = new Set();
          for (const e of data.engines) {
            const row = tbody.querySelector('tr[data-engine-id="' + e.id + '"]');
            if (!row) continue;
            shown.add(String(e.id));
            const comm = row.querySelector(".comm");
            const state = row.querySelector('[data-field="state"]');
            for (const el of [comm, state]) {
              if (!el) continue;
              el.classList.remove("green", "orange", "red");
              el.classList.add(e.colour);
            }
            if (comm) comm.setAttribute("data-colour", e.colour);
            setText(state, e.state);
            setText(row.querySelector('[data-field="version"]'), e.version);
            setText(row.querySelector('[data-field="refreshed"]'), e.refreshed);
            setText(row.querySelector('[data-field="message"]'), e.message);
            const label = row.querySelector('[data-field="label"]');
            if (label && label.getAttribute("aria-label") !== e.label) label.setAttribute("aria-label", e.label);
          }
          const rows = tbody.querySelectorAll("tr[data-engine-id]");
          const changed = rows.length !== data.engines.length ||
            Array.from(rows).some((r) => !shown.has(r.getAttribute("data-engine-id")));
          if (updated) {
            setText(updated, changed
              ? "Engines were added or removed: reload the page to see them."
              : "Updated " + data.at + ".");
          }
        }
      } catch (_) {
        if (updated) setText(updated, "The console cannot be reached; retrying.");
      }
      setTimeout(tick, POLL_MS);
    }
    setTimeout(tick, POLL_MS);
  }

  // The scan statuses that have not ended (running, waiting for an engine, paused).
  const ACTIVE_SCAN = ["running", "dispatched", "paused"];

  // A scan's progress, until it ends; then the page reloads to show what it found.
  function pollScan(section) {
    const url = section.getAttribute("data-poll");
    async function tick() {
      try {
        const res = await fetch(url, { credentials: "same-origin" });
        if (res.redirected) return;
        if (res.status === 200) {
          const s = await res.json();
          setText(document.getElementById("scan-status"), s.words);
          const bar = document.getElementById("scan-progress");
          if (bar) { bar.max = Math.max(1, s.total); bar.value = s.done; }
          setText(document.getElementById("scan-counts"),
            s.done + " of " + s.total + " checks, " + s.assets + " assets found");
          setText(document.getElementById("scan-message"), s.message);
          if (ACTIVE_SCAN.indexOf(s.status) < 0) { window.location.reload(); return; }
        }
      } catch (_) { /* retry */ }
      setTimeout(tick, 1000);
    }
    setTimeout(tick, 1000);
  }

  function words(seconds) {
    const h = Math.floor(seconds / 3600), m = Math.floor(seconds / 60) % 60, s = seconds % 60;
    const two = (n) => String(n).padStart(2, "0");
    return h > 0 ? h + ":" + two(m) + ":" + two(s) : two(m) + ":" + two(s);
  }

  function countdown(el) {
    const end = Date.now() + Number(el.getAttribute("data-countdown")) * 1000;
    function tick() {
      const left = Math.max(0, Math.round((end - Date.now()) / 1000));
      setText(el, left > 0 ? words(left) : "no time: it has expired");
      if (left > 0) setTimeout(tick, 1000);
    }
    tick();
  }

  async function copy(button) {
    const input = document.getElementById(button.getAttribute("data-copy"));
    const status = document.getElementById("copy-status");
    if (!input) return;
    let done = false;
    try {
      await navigator.clipboard.writeText(input.value);
      done = true;
    } catch (_) {
      input.focus();
      input.select();
      try { done = document.execCommand("copy"); } catch (_) { done = false; }
    }
    setText(status, done ? "Copied to the clipboard." : "Select the secret and copy it yourself.");
  }

  document.addEventListener("DOMContentLoaded", function () {
    const rows = document.getElementById("engine-rows");
    if (rows) pollEngines(rows);
    const scan = document.getElementById("scan");
    if (scan && ACTIVE_SCAN.indexOf(scan.getAttribute("data-status")) >= 0) pollScan(scan);
    for (const el of document.querySelectorAll("[data-countdown]")) countdown(el);
    for (const b of document.querySelectorAll("button[data-copy]")) {
      b.addEventListener("click", function () { copy(b); });
    }
  });
})();
