// chart.js — oxray's small line-chart drawer, vendored with the dashboard so
// the build needs no JavaScript toolchain. One function, OxChart.line, draws
// series of [x, y] points on a <canvas> with axes, grid and a legend.
(function (global) {
  "use strict";
  var COLORS = ["#2f6fde", "#e0542d", "#2c9f5a", "#9a4fd1", "#c9a100", "#1aa3b8", "#d13f8c", "#6b7280"];

  function niceStep(range) {
    var rough = range / 4;
    var power = Math.pow(10, Math.floor(Math.log10(rough)));
    var steps = [1, 2, 2.5, 5, 10];
    for (var i = 0; i < steps.length; i++) {
      if (steps[i] * power >= rough) return steps[i] * power;
    }
    return 10 * power;
  }

  function short(v) {
    var a = Math.abs(v);
    if (a >= 1e9) return (v / 1e9).toFixed(1) + "G";
    if (a >= 1e6) return (v / 1e6).toFixed(1) + "M";
    if (a >= 1e3) return (v / 1e3).toFixed(1) + "k";
    return (Math.round(v * 100) / 100).toString();
  }

  // opts: {title, series: [{name, points: [[x, y], ...]}], yMax, xLabel}
  function line(canvas, opts) {
    var ctx = canvas.getContext("2d");
    var w = canvas.width, h = canvas.height;
    var left = 52, right = 12, top = 26, bottom = 40;
    ctx.clearRect(0, 0, w, h);
    ctx.fillStyle = "#fff";
    ctx.fillRect(0, 0, w, h);
    ctx.font = "12px sans-serif";
    ctx.fillStyle = "#111";
    ctx.fillText(opts.title || "", left, 16);
    var xs = [], ys = [0];
    opts.series.forEach(function (s) {
      s.points.forEach(function (p) { xs.push(p[0]); ys.push(p[1]); });
    });
    // How many points are drawn, for tests and for anyone debugging a chart.
    canvas.dataset.points = xs.length;
    if (xs.length === 0) {
      ctx.fillStyle = "#888";
      ctx.fillText("no data yet", left + 10, top + 30);
      return;
    }
    var xMin = Math.min.apply(null, xs), xMax = Math.max.apply(null, xs);
    if (xMax === xMin) xMax = xMin + 1;
    var yMin = Math.min(0, Math.min.apply(null, ys));
    var yMax = Math.max(opts.yMax || 0, Math.max.apply(null, ys));
    if (yMax === yMin) yMax = yMin + 1;
    var step = niceStep(yMax - yMin);
    yMax = Math.ceil(yMax / step) * step;
    var px = function (x) { return left + (x - xMin) / (xMax - xMin) * (w - left - right); };
    var py = function (y) { return h - bottom - (y - yMin) / (yMax - yMin) * (h - top - bottom); };
    ctx.strokeStyle = "#e5e7eb";
    ctx.fillStyle = "#555";
    for (var y = yMin; y <= yMax + step / 2; y += step) {
      ctx.beginPath(); ctx.moveTo(left, py(y)); ctx.lineTo(w - right, py(y)); ctx.stroke();
      ctx.fillText(short(y), 4, py(y) + 4);
    }
    ctx.fillText(short(xMin), left, h - bottom + 14);
    var last = short(xMax);
    ctx.fillText(last, w - right - ctx.measureText(last).width, h - bottom + 14);
    if (opts.xLabel) ctx.fillText(opts.xLabel, left + (w - left - right) / 2 - 30, h - bottom + 14);
    var legendX = left;
    opts.series.forEach(function (s, i) {
      var color = COLORS[i % COLORS.length];
      ctx.strokeStyle = color;
      ctx.lineWidth = 2;
      ctx.beginPath();
      s.points.forEach(function (p, j) {
        if (j === 0) ctx.moveTo(px(p[0]), py(p[1])); else ctx.lineTo(px(p[0]), py(p[1]));
      });
      ctx.stroke();
      ctx.lineWidth = 1;
      ctx.fillStyle = color;
      ctx.fillRect(legendX, h - 14, 10, 10);
      ctx.fillStyle = "#333";
      var label = s.name.length > 28 ? "…" + s.name.slice(-27) : s.name;
      ctx.fillText(label, legendX + 14, h - 5);
      legendX += 24 + ctx.measureText(label).width;
    });
  }

  global.OxChart = { line: line };
})(window);
