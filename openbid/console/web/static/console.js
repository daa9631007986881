// The console's charts and htmx glue. Charts are described by the page in
// <script type="application/json" data-chart="canvas id" data-kind="..."> elements (no inline
// script: the pages' Content-Security-Policy allows scripts from the console only) and drawn
// here with Chart.js, which `make vendor` fetched from the npm registry at build time.
(function () {
  "use strict";
  var COLOURS = ["#1f5fa8", "#d9822b", "#2e8540", "#8e44ad", "#c0392b", "#16a085", "#7f8c8d", "#b7950b"];

  var TICKS = { maxRotation: 0, autoSkip: true, maxTicksLimit: 12 };

  function colour(i) { return COLOURS[i % COLOURS.length]; }

  function config(kind, data) {
    var base = {
      animation: false,
      responsive: true,
      maintainAspectRatio: false,
      interaction: { mode: "nearest", intersect: false },
      plugins: { legend: { position: "bottom" } },
    };
    if (kind === "line" || kind === "bar") {
      var twoAxes = data.series.some(function (s) { return s.axis === "y1"; });
      var scales = { x: { ticks: TICKS }, y: { beginAtZero: true, position: "left" } };
      if (twoAxes) { scales.y1 = { beginAtZero: true, position: "right", grid: { drawOnChartArea: false } }; }
      return {
        type: kind,
        data: {
          labels: data.labels,
          datasets: data.series.map(function (s, i) {
            return { type: s.type || kind, label: s.label, data: s.data, yAxisID: s.axis || "y",
                     borderColor: colour(i), backgroundColor: colour(i), borderWidth: 2, tension: 0.2,
                     pointRadius: data.labels.length > 30 ? 0 : 3 };
          }),
        },
        options: Object.assign(base, { scales: scales }),
      };
    }
    if (kind === "pacing") {
      return {
        type: "line",
        data: {
          labels: data.labels,
          datasets: [
            { label: "Planned", data: data.planned, borderColor: "#7f8c8d", borderDash: [6, 4], pointRadius: 0, borderWidth: 2 },
            { label: "Actual", data: data.actual, borderColor: "#1f5fa8", backgroundColor: "rgba(31,95,168,0.12)", fill: true, pointRadius: 0, borderWidth: 2 },
          ],
        },
        options: Object.assign(base, { scales: { x: { ticks: TICKS }, y: { beginAtZero: true, title: { display: true, text: "USD" } } } }),
      };
    }
    if (kind === "calibration") {
      var points = data.x.map(function (x, i) { return { x: x, y: data.y[i] }; });
      var top = Math.max.apply(null, data.x.concat(data.y, [0.001]));
      return {
        type: "scatter",
        data: { datasets: [
          { label: "served probability", data: points, showLine: true, borderColor: "#1f5fa8", backgroundColor: "#1f5fa8", pointRadius: 2 },
          { label: "identity", data: [{ x: 0, y: 0 }, { x: top, y: top }], showLine: true, borderColor: "#bbb", borderDash: [4, 4], pointRadius: 0 },
        ] },
        options: Object.assign(base, { scales: {
          x: { title: { display: true, text: "raw score" } }, y: { title: { display: true, text: "served" } } } }),
      };
    }
    if (kind === "frontier") {
      var byDsp = {};
      data.forEach(function (p) { (byDsp[p.dsp] = byDsp[p.dsp] || []).push({ x: p.kept * 100, y: p.saved * 100 }); });
      return {
        type: "scatter",
        data: { datasets: Object.keys(byDsp).sort().map(function (dsp, i) {
          var pts = byDsp[dsp].sort(function (a, b) { return a.x - b.x; });
          return { label: dsp, data: pts, showLine: true, borderColor: colour(i), backgroundColor: colour(i), pointRadius: 2 };
        }) },
        options: Object.assign(base, { scales: {
          x: { title: { display: true, text: "bids kept (%)" } }, y: { title: { display: true, text: "calls saved (%)" }, beginAtZero: true } } }),
      };
    }
    return null;
  }

  // Draws every chart whose canvas is not drawn yet (a canvas htmx swapped in is new).
  function draw() {
    if (typeof window.Chart === "undefined") { return; }
    document.querySelectorAll('script[type="application/json"][data-chart]').forEach(function (el) {
      var canvas = document.getElementById(el.dataset.chart);
      if (!canvas || canvas.dataset.drawn === "true") { return; }
      var old = window.Chart.getChart(canvas);
      if (old) { old.destroy(); }
      var made = config(el.dataset.kind, JSON.parse(el.textContent));
      if (made) { new window.Chart(canvas, made); canvas.dataset.drawn = "true"; }
    });
  }

  document.addEventListener("DOMContentLoaded", draw);
  document.addEventListener("htmx:afterSettle", draw);
  document.addEventListener("htmx:configRequest", function (event) {
    var meta = document.querySelector('meta[name="csrf-token"]');
    if (meta) { event.detail.headers["X-CSRF-Token"] = meta.content; }
  });
})();
