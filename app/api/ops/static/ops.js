// Handoff ops: keeps each [data-live] region current by fetching its server-rendered
// fragment every few seconds, and asks before destructive forms ([data-confirm]).
// No framework, no inline script (the pages' Content-Security-Policy forbids it).
(function () {
  "use strict";
  var EVERY_MS = 3000;
  var busy = false;

  function status(text, bad) {
    var el = document.getElementById("live-status");
    if (!el) return;
    el.textContent = text;
    el.className = bad ? "live bad" : "live";
  }

  function load(region) {
    var url = region.getAttribute("data-live");
    return fetch(url, { credentials: "same-origin", headers: { Accept: "text/html" } })
      .then(function (response) {
        if (response.status === 401) {
          var here = window.location.pathname + window.location.search;
          window.location.assign("/ops/login?next=" + encodeURIComponent(here));
          throw new Error("session ended");
        }
        if (!response.ok && response.status !== 422) throw new Error("HTTP " + response.status);
        return response.text();
      })
      .then(function (html) {
        // The fragment is rendered and escaped by the server, like the page it came from.
        if (region.innerHTML !== html) region.innerHTML = html;
      });
  }

  function refresh() {
    if (busy || document.hidden) return;
    var regions = document.querySelectorAll("[data-live]");
    if (!regions.length) return;
    busy = true;
    Promise.all(Array.prototype.map.call(regions, load))
      .then(function () {
        status("live · " + new Date().toLocaleTimeString(), false);
      })
      .catch(function (error) {
        status("not updating: " + error.message, true);
      })
      .then(function () {
        busy = false;
      });
  }

  document.addEventListener("submit", function (event) {
    var form = event.target;
    var question = form.getAttribute && form.getAttribute("data-confirm");
    if (question && !window.confirm(question)) event.preventDefault();
  });

  document.addEventListener("DOMContentLoaded", function () {
    refresh();
    window.setInterval(refresh, EVERY_MS);
    document.addEventListener("visibilitychange", refresh);
  });
})();
