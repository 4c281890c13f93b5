// The admin UI's one script: live issue preview, send and import progress, small conveniences.
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

  // --- the issue editor: check and preview the draft after typing stops ---------------------
  var editor = $("[data-editor]");
  if (editor) {
    var source = $("#source"), list = $("#editor-list"), problems = $("#problems"), state = $("#preview-state");
    var csrf = editor.getAttribute("data-csrf"), issueId = editor.getAttribute("data-issue-id");
    var timer = null, sequence = 0, saved = source.value;

    // A hidden form per preview frame posts the draft into it: the frames load the email's own
    // HTML from the app, with its own CSP, and nothing is stored. (One form each: a form
    // submitted twice in a row would cancel its first navigation.)
    var frameForms = ["preview-desktop", "preview-phone"].map(function (name) {
      var form = document.createElement("form");
      form.method = "post";
      form.action = editor.getAttribute("data-preview-url");
      form.target = name;
      form.hidden = true;
      [["csrf_token", csrf], ["list", ""], ["source", ""], ["issue_id", issueId]].forEach(function (pair) {
        var input = document.createElement(pair[0] === "source" ? "textarea" : "input");
        input.name = pair[0];
        if (input.tagName === "INPUT") input.type = "hidden";
        input.value = pair[1];
        form.appendChild(input);
      });
      document.body.appendChild(form);
      return form;
    });

    function goToLine(line) {
      var lines = source.value.split("\n"), start = 0;
      for (var i = 0; i < line - 1 && i < lines.length; i++) start += lines[i].length + 1;
      source.focus();
      source.setSelectionRange(start, start + (lines[line - 1] || "").length);
      var lineHeight = parseFloat(getComputedStyle(source).lineHeight) || 20;
      source.scrollTop = Math.max(0, (line - 3) * lineHeight);
    }

    function showProblems(list) {
      problems.textContent = "";
      source.removeAttribute("aria-invalid");
      if (!list.length) return;
      var ul = document.createElement("ul");
      list.forEach(function (p) {
        var li = document.createElement("li");
        li.className = p.level;
        if (p.line) {
          var a = document.createElement("a");
          a.href = "#source";
          a.setAttribute("data-line", p.line);
          a.textContent = "Line " + p.line;
          li.appendChild(a);
          li.appendChild(document.createTextNode(": "));
        } else if (p.where) {
          li.appendChild(document.createTextNode(p.where + ": "));
        }
        li.appendChild(document.createTextNode(p.message));
        ul.appendChild(li);
        if (p.level === "error") source.setAttribute("aria-invalid", "true");
      });
      problems.appendChild(ul);
    }

    problems.addEventListener("click", function (event) {
      var link = event.target.closest("a[data-line]");
      if (link) { event.preventDefault(); goToLine(parseInt(link.getAttribute("data-line"), 10)); }
    });

    function refresh(initial) {
      var mine = ++sequence;
      var body = new URLSearchParams();
      body.set("csrf_token", csrf);
      body.set("list", list.value);
      body.set("source", source.value);
      body.set("issue_id", issueId);
      state.textContent = "Updating…";
      fetch(editor.getAttribute("data-check-url"), {
        method: "POST", body: body, credentials: "same-origin", headers: { "X-CSRF-Token": csrf }
      }).then(function (response) {
        if (response.status === 303 || response.redirected) { window.location.reload(); return null; }
        if (!response.ok) throw new Error("the server answered " + response.status);
        return response.json();
      }).then(function (result) {
        if (!result || mine !== sequence) return;
        showProblems(result.problems);
        if (!result.ok) { state.textContent = "Not updated: fix the errors listed above the text."; return; }
        $("#preview-text").textContent = result.text;
        // A saved issue's frames show it already when the page opens.
        if (initial === true && issueId !== "0") { state.textContent = "Up to date."; return; }
        frameForms.forEach(function (form) {
          form.elements.list.value = list.value;
          form.elements.source.value = source.value;
          form.submit();
        });
        state.textContent = "Up to date.";
      }).catch(function (error) {
        if (mine === sequence) state.textContent = "Preview not updated (" + error.message + ").";
      });
    }

    function changed() {
      $("#dirty").hidden = source.value === saved;
      clearTimeout(timer);
      timer = setTimeout(function () { refresh(false); }, 600);
    }

    source.addEventListener("input", changed);
    list.addEventListener("change", function () { refresh(false); });
    $("#editor-form").addEventListener("submit", function () { saved = source.value; });
    window.addEventListener("beforeunload", function (event) {
      if (source.value !== saved) { event.preventDefault(); event.returnValue = ""; }
    });
    refresh(true);
  }

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
