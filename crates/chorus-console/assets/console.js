// Chorus console: the little the server-rendered pages need from the
// browser. Times are shown in the viewer's zone (UTC stays on hover),
// destructive buttons ask first, pages with work in progress refresh
// themselves, and "/" jumps to the search box.
"use strict";
(function () {
  function pad(n) { return (n < 10 ? "0" : "") + n; }
  function local(d) {
    return d.getFullYear() + "-" + pad(d.getMonth() + 1) + "-" + pad(d.getDate()) + " " +
      pad(d.getHours()) + ":" + pad(d.getMinutes()) + ":" + pad(d.getSeconds());
  }
  function zone() {
    try { return Intl.DateTimeFormat().resolvedOptions().timeZone || ""; } catch (e) { return ""; }
  }
  document.addEventListener("DOMContentLoaded", function () {
    var z = zone();
    document.querySelectorAll("time[datetime]").forEach(function (t) {
      var d = new Date(t.getAttribute("datetime"));
      if (!isNaN(d.getTime())) { t.textContent = local(d) + (z ? " " + z : ""); }
    });
    document.querySelectorAll("form[data-confirm]").forEach(function (f) {
      f.addEventListener("submit", function (e) {
        if (!window.confirm(f.getAttribute("data-confirm"))) { e.preventDefault(); }
      });
    });
    var r = document.querySelector("[data-refresh]");
    if (r) {
      window.setTimeout(function () { window.location.reload(); },
        1000 * parseInt(r.getAttribute("data-refresh"), 10));
    }
    document.addEventListener("keydown", function (e) {
      var q = document.querySelector("input[name=q]");
      var typing = /^(INPUT|TEXTAREA|SELECT)$/.test((e.target || {}).tagName || "");
      if (e.key === "/" && q && !typing) { e.preventDefault(); q.focus(); }
    });
  });
})();
