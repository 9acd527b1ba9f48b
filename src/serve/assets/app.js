// hubvault serve: progressive enhancement of pages that work without it.
// Filter as you type, sort and page without reloading, auto refresh, copy buttons.
// Every request is the same GET a link or the filter form would make; the server does
// the filtering, sorting and paging (so 10,000 connectors cost the browser one page).
"use strict";
(function () {
  var body = document.body;
  body.classList.add("js");
  var refreshSeconds = Math.max(5, parseInt(body.getAttribute("data-refresh"), 10) || 30);
  var form = document.getElementById("filters");
  var results = document.getElementById("results");
  var seq = 0;          // the newest request; older answers are dropped
  var lastTyped = 0;

  function copyButtons(root) {
    root.querySelectorAll("button.copy").forEach(function (b) {
      b.hidden = false;
      b.addEventListener("click", function () {
        var text = document.getElementById(b.getAttribute("data-copy")).textContent;
        var done = function () { b.textContent = "Copied"; setTimeout(function () { b.textContent = "Copy"; }, 1500); };
        if (navigator.clipboard && window.isSecureContext) {
          navigator.clipboard.writeText(text).then(done, function () { selectText(b); });
        } else {
          selectText(b);
        }
      });
    });
  }
  function selectText(b) {
    var pre = document.getElementById(b.getAttribute("data-copy"));
    var r = document.createRange();
    r.selectNodeContents(pre);
    var s = window.getSelection();
    s.removeAllRanges();
    s.addRange(r);
    b.textContent = "Selected: press Ctrl+C";
  }
  copyButtons(document);

  // Loads `url` and puts its #results (and the "read at" line) in place of ours.
  function load(url, push) {
    var mine = ++seq;
    body.classList.add("loading");
    return fetch(url, { credentials: "same-origin", headers: { "Accept": "text/html" } })
      .then(function (r) {
        if (!r.ok && r.status !== 502) { throw new Error("HTTP " + r.status); }
        return r.text();
      })
      .then(function (text) {
        if (mine !== seq) { return; }
        var doc = new DOMParser().parseFromString(text, "text/html");
        var fresh = doc.getElementById("results");
        if (fresh && results) { results.replaceWith(fresh); results = fresh; }
        ["checked"].forEach(function (id) {
          var a = document.getElementById(id), b = doc.getElementById(id);
          if (a && b) { a.replaceWith(b); }
        });
        var alert = doc.querySelector(".failure"), ours = document.querySelector(".failure");
        if (ours) { ours.remove(); }
        if (alert) { document.querySelector("main").prepend(alert); }
        if (push) { history.replaceState(null, "", url); }
        body.classList.remove("loading", "offline");
      })
      .catch(function () { if (mine === seq) { body.classList.remove("loading"); body.classList.add("offline"); } });
  }

  function formUrl() {
    var params = new URLSearchParams();
    new FormData(form).forEach(function (v, k) { if (v !== "") { params.append(k, v); } });
    var qs = params.toString();
    return "/" + (qs ? "?" + qs : "");
  }

  if (form && results) {
    var timer = null;
    var q = document.getElementById("q");
    var typed = function () {
      lastTyped = Date.now();
      clearTimeout(timer);
      timer = setTimeout(function () { load(formUrl(), true); }, 120);
    };
    // "change" too: clearing the box (its x, or a script) may fire no "input".
    ["input", "change", "search"].forEach(function (ev) { q.addEventListener(ev, typed); });
    form.querySelectorAll("select").forEach(function (s) {
      s.addEventListener("change", function () { load(formUrl(), true); });
    });
    form.addEventListener("submit", function (e) { e.preventDefault(); load(formUrl(), true); });
    // Sort headers, count cards and pager links: same address, no reload.
    document.addEventListener("click", function (e) {
      var a = e.target.closest && e.target.closest("#results a.sort, #results a.page, #results a.count");
      if (!a || e.ctrlKey || e.metaKey || e.shiftKey || e.button !== 0) { return; }
      e.preventDefault();
      var url = a.getAttribute("href");
      var params = new URLSearchParams(url.split("?")[1] || "");
      form.querySelectorAll("input[type=hidden]").forEach(function (h) { h.remove(); });
      ["sort", "dir"].forEach(function (k) {
        if (params.get(k)) {
          var h = document.createElement("input");
          h.type = "hidden"; h.name = k; h.value = params.get(k);
          form.appendChild(h);
        }
      });
      var st = form.querySelector("select[name=state]");
      if (st) { st.value = params.get("state") || ""; }
      load(url, true);
    });
  }

  // Auto refresh: the server reads the bucket at most once per interval however many
  // pages ask, so this costs the bucket nothing extra.
  setInterval(function () {
    if (document.hidden || Date.now() - lastTyped < 2000) { return; }
    if (results) {
      load(location.pathname + location.search, false);
    }
  }, refreshSeconds * 1000);
})();
