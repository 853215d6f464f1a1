/* Quota page: two charts over the last 30 days, from the app's chart.json (Chart.js, vendored). */
(function () {
  "use strict";
  var box = document.getElementById("quota-charts");
  if (!box || typeof Chart === "undefined") return;
  function bar(canvas, labels, datasets, stacked) {
    return new Chart(canvas, {
      type: "bar",
      data: { labels: labels, datasets: datasets },
      options: {
        animation: false,
        responsive: true,
        scales: { x: { stacked: stacked }, y: { stacked: stacked, beginAtZero: true, ticks: { precision: 0 } } },
      },
    });
  }
  fetch(box.dataset.url, { credentials: "same-origin", headers: { Accept: "application/json" } })
    .then(function (r) { if (!r.ok) throw new Error(r.status); return r.json(); })
    .then(function (data) {
      var days = data.days.map(function (d) { return d.slice(5); });
      bar(document.getElementById("chart-collected"), days, [
        { label: box.dataset.labelFormid, data: data.collected.formid, backgroundColor: "#07c160" },
        { label: box.dataset.labelSubscribe, data: data.collected.subscribe, backgroundColor: "#0969da" },
      ], true);
      bar(document.getElementById("chart-messages"), days, [
        { label: box.dataset.labelSent, data: data.messages.sent, backgroundColor: "#07c160" },
        { label: box.dataset.labelFailed, data: data.messages.failed, backgroundColor: "#cf222e" },
      ], false);
    })
    .catch(function () { box.querySelector(".chart-error").hidden = false; });
})();
