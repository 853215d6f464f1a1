/* The funnel card (pushhub/templates/_funnel_card.html): totals and a funnel chart over the selected
   range (7/30/90 days), and on a template's page the open rate per day, from the card's funnel.json
   (Chart.js, vendored). */
(function () {
  "use strict";
  var box = document.getElementById("funnel");
  if (!box || typeof Chart === "undefined") return;
  var STAGES = ["credits_collected", "sent", "failed", "opened", "resubscribed"];
  var COLOURS = ["#0969da", "#07c160", "#cf222e", "#8250df", "#bf8700"];
  var labelKeys = { credits_collected: "labelCredits", sent: "labelSent", failed: "labelFailed",
                    opened: "labelOpened", resubscribed: "labelResubscribed" };
  var funnelChart = null, rateChart = null;
  var rateCanvas = document.getElementById("chart-open-rate");

  function draw(data) {
    STAGES.forEach(function (name) { document.getElementById("f-" + name).textContent = data.totals[name]; });
    document.getElementById("funnel-span").textContent = data.from + " – " + data.to + " (UTC)";
    if (funnelChart) funnelChart.destroy();
    funnelChart = new Chart(document.getElementById("chart-funnel"), {
      type: "bar",
      data: {
        labels: STAGES.map(function (name) { return box.dataset[labelKeys[name]]; }),
        datasets: [{ data: STAGES.map(function (name) { return data.totals[name]; }), backgroundColor: COLOURS }],
      },
      options: {
        indexAxis: "y", animation: false, responsive: true,
        plugins: { legend: { display: false } },
        scales: { x: { beginAtZero: true, ticks: { precision: 0 } } },
      },
    });
    if (!rateCanvas) return;
    if (rateChart) rateChart.destroy();
    rateChart = new Chart(rateCanvas, {
      type: "line",
      data: {
        labels: data.days.map(function (d) { return d.date.slice(5); }),
        datasets: [{
          label: box.dataset.labelOpenRate, borderColor: "#8250df", spanGaps: true,
          data: data.open_rate.map(function (r) { return r === null ? null : Math.round(r * 1000) / 10; }),
        }],
      },
      options: {
        animation: false, responsive: true,
        scales: { y: { beginAtZero: true, suggestedMax: 100, ticks: { callback: function (v) { return v + "%"; } } } },
      },
    });
  }

  function load(days) {
    var url = box.dataset.url + (box.dataset.url.indexOf("?") < 0 ? "?" : "&") + "days=" + days;
    fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (r) { if (!r.ok) throw new Error(r.status); return r.json(); })
      .then(function (data) { box.querySelector(".chart-error").hidden = true; box.dataset.loaded = days; draw(data); })
      .catch(function () { box.querySelector(".chart-error").hidden = false; });
  }

  var select = document.getElementById("funnel-range");
  select.addEventListener("change", function () { load(select.value); });
  load(select.value);
})();
