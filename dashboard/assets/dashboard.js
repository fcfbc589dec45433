// The dashboard's page script: refreshes every `.live` fragment once a
// second from the server (which renders the HTML), draws the charts from the
// JSON API, and follows logs by offset.
(function () {
  "use strict";

  function get(url) {
    return fetch(url, { credentials: "same-origin" }).then(function (r) {
      if (r.status === 401) { window.location.href = "/login"; throw new Error("logged out"); }
      return r;
    });
  }

  function formatTimes() {
    document.querySelectorAll("time[data-ms]").forEach(function (t) {
      t.textContent = new Date(Number(t.dataset.ms)).toLocaleString();
    });
  }

  function refreshFragments() {
    var live = document.querySelectorAll(".live[data-fragment]");
    return Promise.all(Array.prototype.map.call(live, function (el) {
      return get(el.dataset.fragment).then(function (r) {
        return r.ok ? r.text().then(function (html) { el.innerHTML = html; }) : null;
      }).catch(function () {});
    })).then(formatTimes);
  }

  function drawResources() {
    var box = document.getElementById("resource-charts");
    if (!box) return;
    get(box.dataset.history).then(function (r) { return r.json(); }).then(function (history) {
      var samples = history.samples;
      var now = samples.length ? samples[samples.length - 1].time_ms : 0;
      box.querySelectorAll("canvas[data-resource]").forEach(function (canvas) {
        var resource = canvas.dataset.resource;
        var byNode = {}, yMax = 0;
        samples.forEach(function (sample) {
          sample.nodes.forEach(function (node) {
            if (!node.alive) return;
            var scale = resource === "memory" ? 1 / (1 << 30) : 1;
            var used = (node.used[resource] || 0) * scale;
            yMax = Math.max(yMax, (node.total[resource] || 0) * scale);
            (byNode[node.node_id] = byNode[node.node_id] || []).push([(sample.time_ms - now) / 1000, used]);
          });
        });
        var series = Object.keys(byNode).map(function (id) { return { name: id, points: byNode[id] }; });
        var unit = resource === "memory" ? "memory used (GiB)" : resource + " used";
        OxChart.line(canvas, { title: unit + " per node", series: series, yMax: yMax, xLabel: "seconds ago" });
      });
    }).catch(function () {});
  }

  function drawTraining() {
    var box = document.getElementById("training-charts");
    if (!box) return;
    var titles = {
      episode_return_mean: "episode return mean",
      evaluation_return_mean: "evaluation return mean",
      env_steps_per_s: "env steps / s (sampling)",
      learner_steps_per_s: "env steps / s (learner)"
    };
    get(box.dataset.training).then(function (r) { return r.json(); }).then(function (data) {
      box.querySelectorAll("canvas[data-figure]").forEach(function (canvas) {
        var figure = canvas.dataset.figure;
        var series = data.runs.map(function (run) {
          return {
            name: run.submission_id,
            points: run.points.filter(function (p) { return p[figure] !== null; })
              .map(function (p) { return [p.steps, p[figure]]; })
          };
        });
        OxChart.line(canvas, { title: titles[figure], series: series, xLabel: "env steps (offline: steps trained)" });
      });
    }).catch(function () {});
  }

  var follow = { url: null, offset: 0 };

  function followLog() {
    var pre = document.getElementById("log");
    if (!pre) return;
    if (pre.dataset.follow && pre.dataset.follow !== follow.url) {
      follow = { url: pre.dataset.follow, offset: 0 };
      pre.textContent = "";
    }
    if (!follow.url) return;
    var url = follow.url;
    get(url + "?offset=" + follow.offset).then(function (r) { return r.json(); }).then(function (chunk) {
      if (url !== follow.url || typeof chunk.logs !== "string") return;
      var atBottom = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
      pre.textContent += chunk.logs;
      follow.offset = chunk.offset;
      if (atBottom) pre.scrollTop = pre.scrollHeight;
    }).catch(function () {});
  }

  document.addEventListener("click", function (event) {
    var link = event.target.closest ? event.target.closest(".log-link") : null;
    if (!link) return;
    event.preventDefault();
    document.getElementById("log").dataset.follow = link.dataset.log;
    document.getElementById("log-title").textContent = link.textContent;
    followLog();
  });

  function tick() {
    refreshFragments();
    drawResources();
    drawTraining();
    followLog();
  }

  formatTimes();
  tick();
  setInterval(tick, 1000);
})();
