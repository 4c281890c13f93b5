// The admin UI's script: send and import progress, small conveniences (the issue editor has editor.js).
// Every page works without it; it only refreshes what the server renders anyway.
"use strict";

(function () {
  function $(selector, root) { return (root || document).querySelector(selector); }
  function $all(selector, root) { return Array.prototype.slice.call((root || document).querySelectorAll(selector)); }
  function text(id, value) { var el = document.getElementById(id); if (el) el.textContent = value; }
  function show(id, visible) { var el = document.getElementById(id); if (el) el.hidden = !visible; }

  // Ask before destructive forms (cancel a send, erase a subscriber, lift a suppression).
  $all("form[data-confirm]").forEach(function (form) {
    form.addEventListener("submit", function (event) {
      if (!window.confirm(form.getAttribute("data-confirm"))) event.preventDefault();
    });
  });

  // A select that reloads its GET form when changed; its button is then not needed.
  $all("select[data-autosubmit]").forEach(function (select) {
    var button = select.form && $("[data-autosubmit-button]", select.form);
    if (button) button.hidden = true;
    select.addEventListener("change", function () { select.form.submit(); });
  });

  // datetime-local is the browser's local time: send its UTC offset at that date along.
  $all("form[data-local-time]").forEach(function (form) {
    form.addEventListener("submit", function () {
      var at = form.elements.at, offset = form.elements.tz_offset;
      if (at && offset && at.value) {
        var local = new Date(at.value);
        if (!isNaN(local.getTime())) offset.value = String(local.getTimezoneOffset());
      }
    });
  });

  // The issue editor's toolbar, preview and autosave are in editor.js, loaded by its page.

  // --- polling a JSON view every second while something runs -------------------------------
  function poll(url, update) {
    var stopped = false;
    function tick() {
      fetch(url, { credentials: "same-origin", headers: { "Accept": "application/json" } })
        .then(function (response) {
          if (response.redirected) { stopped = true; window.location.reload(); return null; }  // logged out
          return response.ok ? response.json() : null;
        })
        .then(function (data) {
          if (data && update(data) === false) stopped = true;
        })
        .catch(function () { /* a missed beat; try again */ })
        .then(function () { if (!stopped) setTimeout(tick, 1000); });
    }
    setTimeout(tick, 1000);
  }

  var sendView = $("[data-send-progress]");
  if (sendView && sendView.getAttribute("data-live") === "yes") {
    var last = null;
    poll(sendView.getAttribute("data-send-progress"), function (s) {
      var status = document.getElementById("p-status");
      status.textContent = s.status;
      status.className = "badge badge-" + s.status;
      ["total", "sent", "failed", "pending", "skipped", "cancelled"].forEach(function (key) { text("p-" + key, s[key]); });
      text("p-elapsed", Math.floor(s.elapsed));
      text("p-reason", s.status_reason || "");
      show("p-reason", !!s.status_reason);
      if (s.subject_test) text("p-test", s.subject_test.line);
      // Why the send is stuck, in plain words (null while it moves); `commands` shown as code.
      var problem = document.getElementById("p-problem-text");
      if (problem) {
        problem.textContent = "";
        (s.problem || "").split("`").forEach(function (part, i) {
          if (i % 2) { var code = document.createElement("code"); code.textContent = part; problem.appendChild(code); }
          else problem.appendChild(document.createTextNode(part));
        });
      }
      show("p-problem", !!s.problem);
      show("p-scheduled", s.status === "scheduled");
      var bar = document.getElementById("p-bar");
      bar.max = s.total || 1;
      bar.value = s.done;
      bar.textContent = s.done + " of " + s.total;
      // The rate now, from the last second's progress; the average once it is over.
      var now = Date.now(), done = s.sent + s.failed, rate = s.rate;
      if (last && s.status === "sending" && now > last.at) rate = Math.max(0, Math.round((done - last.done) * 1000 / (now - last.at)));
      last = { at: now, done: done };
      text("p-rate", rate);
      show("f-pause", s.can_pause);
      show("f-resume", s.can_resume);
      show("f-cancel", s.can_cancel);
      var rows = document.getElementById("p-errors");
      if (rows && s.errors.length) {
        rows.textContent = "";
        s.errors.forEach(function (e) {
          var tr = document.createElement("tr");
          [e.email, e.code || "", e.reply].forEach(function (value) {
            var td = document.createElement("td");
            td.textContent = value;
            tr.appendChild(td);
          });
          rows.appendChild(tr);
        });
      }
      show("p-errors-section", s.errors.length > 0);
      var relays = document.getElementById("p-relays");
      if (relays && s.relays) {
        relays.textContent = "";
        s.relays.forEach(function (r) {
          var tr = document.createElement("tr");
          [r.relay, r.weight, r.sent === null ? "?" : r.sent, r.line].forEach(function (value) {
            var td = document.createElement("td");
            td.textContent = value;
            tr.appendChild(td);
          });
          relays.appendChild(tr);
        });
      }
      return s.live;
    });
  }

  var importView = $("[data-import-progress]");
  if (importView && importView.getAttribute("data-live") === "yes") {
    poll(importView.getAttribute("data-import-progress"), function (job) {
      var status = document.getElementById("j-status");
      status.textContent = job.status;
      status.className = "badge badge-" + job.status;
      ["rows_read", "imported", "updated", "unchanged", "kept_unsubscribed", "rejected"].forEach(function (key) {
        text("j-" + key, job[key]);
      });
      text("j-error", job.error || "");
      show("j-error", !!job.error);
      show("j-report", job.has_report);
      return job.status === "queued" || job.status === "running";
    });
  }
})();
