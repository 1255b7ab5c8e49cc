// roadie web: live statuses and progress bars over ONE server-sent-events stream per page.
// Pages work without this file; it only updates what the server rendered.
(function () {
  "use strict";
  var body = document.body;
  var ids = (body.getAttribute("data-live-ids") || "").trim();
  var counts = body.getAttribute("data-live-counts") === "1";
  var changes = body.getAttribute("data-live-changes") === "1";
  if (!window.EventSource || (!ids && !counts && !changes)) { return; }
  var FINAL = { "failed": 1, "successful": 1, "cancelled": 1, "deleted": 1 };
  var query = [];
  ids.split(/\s+/).forEach(function (id) { if (id) { query.push("id=" + encodeURIComponent(id)); } });
  if (counts) { query.push("counts=1"); }
  if (changes) { query.push("changes=1"); }
  var base = body.getAttribute("data-base") || "";
  var source = new EventSource(base + "/events?" + query.join("&"));
  var state = document.querySelector(".live-state");

  // The fields of one task: those inside its element and not inside another task's
  // (a parent's page nests the rows of its subtasks).
  function each(root, field, fn) {
    var found = root.querySelectorAll('[data-field="' + field + '"]');
    for (var i = 0; i < found.length; i++) {
      if (found[i].closest("[data-task-id]") === root) { fn(found[i]); }
    }
  }

  source.addEventListener("task", function (event) {
    var task = JSON.parse(event.data);
    var roots = document.querySelectorAll('[data-task-id="' + task.id + '"]');
    for (var r = 0; r < roots.length; r++) {
      var root = roots[r];
      each(root, "status", function (el) {
        el.textContent = task.status;
        el.className = "badge status-" + task.status;
      });
      each(root, "message", function (el) { el.textContent = task.note || "—"; });
      each(root, "bar", function (el) {
        var bar = el.querySelector("progress");
        var percent = el.querySelector('[data-field="percent"]');
        if (task.progress) {
          bar.hidden = false;
          bar.value = task.progress.percent;
          bar.textContent = task.progress.percent + "%";
          percent.textContent = Math.round(task.progress.percent) + "%";
        }
      });
      if (task.subtasks) {
        each(root, "subtasks", function (el) {
          el.textContent = Object.keys(task.subtasks).map(function (label) {
            return label + " " + task.subtasks[label];
          }).join(", ");
        });
      }
      each(root, "cancel", function (el) { el.hidden = !task.cancel_requested || !!FINAL[task.status]; });
      if (FINAL[task.status]) {
        each(root, "ended", function (el) { el.hidden = false; });
      }
    }
  });

  source.addEventListener("counts", function (event) {
    var data = JSON.parse(event.data);
    Object.keys(data).forEach(function (label) {
      var el = document.querySelector('[data-count="' + label + '"]');
      if (el) { el.textContent = String(data[label]); }
    });
  });

  // the overview: on a change, fetch the charts again (once the workers have written their
  // counts: they do about once a second), at most once every two seconds
  var charts = document.querySelector("[data-live-charts]");
  var pending = null, lastFetch = 0;
  function refreshCharts() {
    pending = null;
    lastFetch = Date.now();
    fetch(charts.getAttribute("data-live-charts"), { credentials: "same-origin" })
      .then(function (response) {  // (logged out meanwhile: the login page, not charts)
        return response.ok && !response.redirected ? response.text() : null;
      })
      .then(function (html) {
        if (html === null) { return; }
        var open = {};
        var details = charts.querySelectorAll("figure details");
        for (var i = 0; i < details.length; i++) { if (details[i].open) { open[details[i].parentNode.id] = 1; } }
        charts.innerHTML = html;
        Object.keys(open).forEach(function (id) {
          var kept = document.querySelector("#" + id + " details");
          if (kept) { kept.open = true; }
        });
      })
      .catch(function () { if (state) { state.textContent = "cannot refresh the charts"; } });
  }
  source.addEventListener("change", function () {
    if (!charts || pending !== null) { return; }
    pending = setTimeout(refreshCharts, Math.max(1500, 2000 - (Date.now() - lastFetch)));
  });

  source.addEventListener("open", function () { if (state) { state.textContent = "live"; } });
  source.addEventListener("error", function () { if (state) { state.textContent = "reconnecting…"; } });
}());
