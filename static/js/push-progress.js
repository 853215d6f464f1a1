/* Push page: poll progress.json every second and redraw the bar until the push is done or canceled (then reload
   once). A finished push's page keeps its opens live (users open messages long after the send): every 10 s
   while the page is visible. */
(function () {
  "use strict";
  var bar = document.getElementById("push-progress");
  if (!bar) return;
  var FINISHED = { done: true, canceled: true };
  var OPENS_EVERY = 10000;
  var finishedAtLoad = bar.dataset.finished === "1";
  var rateEl = document.querySelector("[data-open-rate]");
  var statusEl = document.getElementById("push-status");

  function draw(push) {
    var c = push.counts;
    var parts = { sent: c.sent, failed: c.failed, no_credit: c.no_credit || 0, pending: c.pending };
    var counted = parts.sent + parts.failed + parts.no_credit + parts.pending;
    var total = Math.max(c.recipients || 0, counted, 1);
    Object.keys(parts).forEach(function (name) {
      var seg = bar.querySelector('[data-segment="' + name + '"]');
      if (seg) seg.style.width = (100 * parts[name] / total).toFixed(2) + "%";
    });
    Object.keys(c).forEach(function (name) {
      var el = document.querySelector('[data-count="' + name + '"]');
      if (el) el.textContent = c[name] === null ? "…" : c[name];
    });
    // opened / sent, as templates_app.push_pages.open_rate formats it
    if (rateEl) rateEl.textContent = c.sent ? (100 * c.opened / c.sent).toFixed(1) + "%" : "—";
    if (statusEl) {
      statusEl.textContent = bar.dataset["status" + push.status.charAt(0).toUpperCase() + push.status.slice(1)] || push.status;
      statusEl.className = "status status-" + push.status;
    }
  }

  function poll() {
    if (finishedAtLoad && document.hidden) {
      window.setTimeout(poll, OPENS_EVERY);
      return;
    }
    fetch(bar.dataset.url, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (r) { if (!r.ok) throw new Error(r.status); return r.json(); })
      .then(function (push) {
        draw(push);
        if (finishedAtLoad) {
          window.setTimeout(poll, OPENS_EVERY);
        } else if (FINISHED[push.status]) {
          window.location.reload(); // once: the reloaded page is finished and only follows the opens
        } else {
          window.setTimeout(poll, 1000);
        }
      })
      .catch(function () { window.setTimeout(poll, finishedAtLoad ? OPENS_EVERY : 5000); });
  }
  window.setTimeout(poll, finishedAtLoad ? OPENS_EVERY : 1000);
})();
