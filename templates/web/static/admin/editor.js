// The issue editor (templates/admin/issue_edit.html): a Markdown toolbar with keyboard shortcuts,
// the live preview of the real email (desktop and phone frames, plain text), and autosave with a
// revision check, so two tabs never silently overwrite each other. The page works without it: the
// form's Save (or Create draft) stores the text, and the server checks the same revision.
"use strict";

(function () {
  var editor = document.querySelector("[data-editor]");
  if (!editor) return;

  var source = document.getElementById("source");
  var form = document.getElementById("editor-form");
  var problems = document.getElementById("problems");
  var previewState = document.getElementById("preview-state");
  var saveState = document.getElementById("save-state");
  var revisionInput = document.getElementById("editor-revision");
  var conflictBox = document.getElementById("conflict");
  var csrf = editor.getAttribute("data-csrf");
  var issueId = editor.getAttribute("data-issue-id");
  var autosaveUrl = editor.getAttribute("data-autosave-url");
  var isMac = /Mac|iPhone|iPad/.test(navigator.platform || "");

  var PREVIEW_DELAY = 600;   // ms after typing stops
  var SAVE_DELAY = 1500;
  var RETRY_DELAY = 5000;    // after a network error

  // --- editing the text: every change goes through the browser's own undo stack ---------------

  // Replace value[start, end) with text, then select [selectFrom, selectTo) of the new value.
  function edit(start, end, text, selectFrom, selectTo) {
    source.focus();
    source.setSelectionRange(start, end);
    var done = false;
    try {
      done = document.execCommand("insertText", false, text);
    } catch (error) {
      done = false;
    }
    if (!done || source.value.slice(start, start + text.length) !== text) {
      // No insertText (an older browser): the text is right, the undo history may not be.
      source.setRangeText(text, start, end, "end");
      source.dispatchEvent(new Event("input", { bubbles: true }));
    }
    source.setSelectionRange(selectFrom, selectTo === undefined ? selectFrom : selectTo);
  }

  function selection() {
    var start = source.selectionStart, end = source.selectionEnd;
    return { start: start, end: end, text: source.value.slice(start, end) };
  }

  // **bold**, _italic_: wraps the selection (spaces at its ends stay outside), or unwraps it when
  // it is wrapped already; with nothing selected, inserts a placeholder and selects it.
  function wrap(marker, placeholder) {
    var sel = selection(), value = source.value, n = marker.length;
    if (value.slice(sel.start - n, sel.start) === marker && value.slice(sel.end, sel.end + n) === marker) {
      edit(sel.start - n, sel.end + n, sel.text, sel.start - n, sel.end - n);
      return;
    }
    if (sel.text.length > 2 * n && sel.text.slice(0, n) === marker && sel.text.slice(-n) === marker) {
      var inner = sel.text.slice(n, -n);
      edit(sel.start, sel.end, inner, sel.start, sel.start + inner.length);
      return;
    }
    var lead = sel.text.length - sel.text.replace(/^\s+/, "").length;
    var trimmed = sel.text.trim();
    if (!trimmed) {
      edit(sel.start, sel.end, marker + placeholder + marker, sel.start + n, sel.start + n + placeholder.length);
      return;
    }
    var start = sel.start + lead;
    edit(start, start + trimmed.length, marker + trimmed + marker, start + n, start + n + trimmed.length);
  }

  var URL_LIKE = /^(https?:\/\/|mailto:)\S+$/i;

  // [text](https://) with the address selected to type or paste over; a selected address becomes
  // the link's target, with its text selected instead.
  function link(image) {
    var sel = selection(), bang = image ? "!" : "", label = sel.text.trim(), text, from, to;
    if (URL_LIKE.test(label)) {
      var placeholder = image ? "alt text" : "link text";
      text = bang + "[" + placeholder + "](" + label + ")";
      from = sel.start + bang.length + 1;
      to = from + placeholder.length;
    } else {
      label = label.replace(/\s*\n\s*/g, " ") || (image ? "alt text" : "link text");
      text = bang + "[" + label + "](https://)";
      from = sel.start + bang.length + label.length + 3;
      to = from + "https://".length;
    }
    edit(sel.start, sel.end, text, from, to);
  }

  // The whole lines the selection touches.
  function lines() {
    var value = source.value, sel = selection();
    var start = value.lastIndexOf("\n", sel.start - 1) + 1;
    var last = sel.end > sel.start && value.charAt(sel.end - 1) === "\n" ? sel.end - 1 : sel.end;
    var end = value.indexOf("\n", last);
    if (end === -1) end = value.length;
    return { start: start, end: end, lines: value.slice(start, end).split("\n"), collapsed: sel.start === sel.end };
  }

  var HEADING = /^#{1,6}[ \t]+/, BULLET = /^[-*+][ \t]+/, NUMBER = /^\d{1,9}[.)][ \t]+/, QUOTE = /^>[ \t]?/;

  // Apply a line prefix (a heading level, a list, a quote) to every line of the selection, or take it
  // off when every line has it already; the selection then covers the lines changed.
  function prefixLines(kind, level) {
    var block = lines();
    var filled = block.lines.filter(function (line) { return line.trim() !== ""; });
    var has = {
      heading: function (line) { var m = /^(#{1,6})[ \t]+/.exec(line); return !!m && m[1].length === level; },
      bullets: function (line) { return BULLET.test(line); },
      numbers: function (line) { return NUMBER.test(line); },
      quote: function (line) { return QUOTE.test(line); }
    }[kind];
    var off = filled.length > 0 && filled.every(has);
    var number = 0;
    var changed = block.lines.map(function (line) {
      if (kind === "quote") return off ? line.replace(QUOTE, "") : (line ? "> " + line : ">");
      if (line.trim() === "") return line;
      var bare = line.replace(HEADING, "").replace(BULLET, "").replace(NUMBER, "");
      if (off) return bare;
      if (kind === "heading") return new Array(level + 1).join("#") + " " + bare;
      if (kind === "bullets") return "- " + bare;
      number += 1;
      return number + ". " + bare;
    }).join("\n");
    if (block.collapsed) {
      var lineEnd = block.start + changed.length;
      edit(block.start, block.end, changed, lineEnd);
    } else {
      edit(block.start, block.end, changed, block.start, block.start + changed.length);
    }
  }

  // Ctrl+H: no heading, #, ##, ###, then no heading again.
  function cycleHeading() {
    var first = lines().lines[0], m = /^(#{1,6})[ \t]+/.exec(first), level = m ? m[1].length : 0;
    if (level >= 3) prefixLines("heading", level);  // off
    else prefixLines("heading", level + 1);
  }

  // A divider on a line of its own after the current line, blank lines around it (a "---" right
  // under a line of text would make that line a heading instead).
  function divider() {
    var value = source.value, sel = selection();
    var at = value.indexOf("\n", sel.end);
    if (at === -1) at = value.length;
    var before = value.slice(0, at), after = value.slice(at);
    var lead = before === "" || /\n\n$/.test(before) ? "" : /\n$/.test(before) ? "\n" : "\n\n";
    var trail = /^\n\n/.test(after) ? "" : /^\n/.test(after) ? "\n" : "\n\n";
    var text = lead + "---" + trail;
    edit(at, at, text, at + text.length);
  }

  var ACTIONS = {
    h1: function () { prefixLines("heading", 1); },
    h2: function () { prefixLines("heading", 2); },
    heading: cycleHeading,
    bold: function () { wrap("**", "bold text"); },
    italic: function () { wrap("_", "italic text"); },
    link: function () { link(false); },
    image: function () { link(true); },
    bullets: function () { prefixLines("bullets"); },
    numbers: function () { prefixLines("numbers"); },
    quote: function () { prefixLines("quote"); },
    divider: divider
  };

  // Enter in a list item starts the next item; Enter in an empty item ends the list.
  function continueList(event) {
    var sel = selection();
    if (sel.start !== sel.end) return;
    var value = source.value, lineStart = value.lastIndexOf("\n", sel.start - 1) + 1;
    var m = /^([ \t]*)([-*+]|(\d{1,9})([.)]))([ \t]+)(.*)$/.exec(value.slice(lineStart, sel.start));
    if (!m) return;
    var lineEnd = value.indexOf("\n", sel.start);
    var rest = value.slice(sel.start, lineEnd === -1 ? value.length : lineEnd);
    event.preventDefault();
    if (m[6] === "" && rest.trim() === "") {
      edit(lineStart, sel.start, "", lineStart);
      return;
    }
    var marker = m[3] ? (parseInt(m[3], 10) + 1) + m[4] : m[2];
    var text = "\n" + m[1] + marker + " ";
    edit(sel.start, sel.start, text, sel.start + text.length);
  }

  function shortcut(event) {
    if (!(event.ctrlKey || event.metaKey) || event.altKey) return null;
    if (event.shiftKey) {
      return { Digit8: "bullets", Digit7: "numbers", KeyK: "image" }[event.code] || null;
    }
    return { b: "bold", i: "italic", k: "link", h: "heading", "'": "quote" }[(event.key || "").toLowerCase()] || null;
  }

  source.addEventListener("keydown", function (event) {
    if (event.isComposing) return;
    var action = shortcut(event);
    if (action) {
      event.preventDefault();
      ACTIONS[action]();
    } else if (event.key === "Enter" && !event.shiftKey && !event.ctrlKey && !event.metaKey && !event.altKey) {
      continueList(event);
    }
  });

  // The toolbar: one tab stop, arrow keys between its buttons (the ARIA toolbar pattern); pressing a
  // button leaves the focus and the selection in the text.
  var toolbar = document.getElementById("md-toolbar");
  if (toolbar) {
    var buttons = Array.prototype.slice.call(toolbar.querySelectorAll("button[data-md]"));
    buttons.forEach(function (button, i) {
      button.tabIndex = i === 0 ? 0 : -1;
      if (isMac) {
        button.title = button.title.replace(/Ctrl\+/g, "⌘");
        var keys = button.getAttribute("aria-keyshortcuts");
        if (keys) button.setAttribute("aria-keyshortcuts", keys.replace(/Control\+/g, "Meta+"));
      }
      button.addEventListener("mousedown", function (event) { event.preventDefault(); });
      button.addEventListener("click", function () { ACTIONS[button.getAttribute("data-md")](); });
    });
    toolbar.addEventListener("keydown", function (event) {
      var at = buttons.indexOf(document.activeElement), next = null;
      if (at < 0) return;
      if (event.key === "ArrowRight") next = (at + 1) % buttons.length;
      else if (event.key === "ArrowLeft") next = (at - 1 + buttons.length) % buttons.length;
      else if (event.key === "Home") next = 0;
      else if (event.key === "End") next = buttons.length - 1;
      if (next === null) return;
      event.preventDefault();
      buttons[at].tabIndex = -1;
      buttons[next].tabIndex = 0;
      buttons[next].focus();
    });
    toolbar.hidden = false;
  }

  // For other parts of the editor (an image upload, say): put text in place of the selection,
  // undoably, and select [selectFrom, selectTo) relative to where it was put.
  window.newsletterEditor = {
    replaceSelection: function (text, selectFrom, selectTo) {
      var sel = selection();
      edit(sel.start, sel.end, text, sel.start + (selectFrom || text.length),
        sel.start + (selectTo === undefined ? (selectFrom || text.length) : selectTo));
    }
  };

  // --- the preview: check and render the draft after typing stops ------------------------------

  // Everything the form would send (the text, the list, any other field of the form), for the
  // check, the preview frames and the autosave alike.
  function fields() {
    var body = new URLSearchParams(new FormData(form));
    body.set("csrf_token", csrf);
    body.set("issue_id", issueId);
    return body;
  }

  // A hidden form per preview frame posts the draft into it: the frames load the email's own HTML
  // from the app, with its own CSP, and nothing is stored. (One form each: a form submitted twice
  // in a row would cancel its first navigation.)
  var frameForms = ["preview-desktop", "preview-phone"].map(function (name) {
    var frameForm = document.createElement("form");
    frameForm.method = "post";
    frameForm.action = editor.getAttribute("data-preview-url");
    frameForm.target = name;
    frameForm.hidden = true;
    document.body.appendChild(frameForm);
    return frameForm;
  });

  function postToFrames(body) {
    frameForms.forEach(function (frameForm) {
      frameForm.textContent = "";
      body.forEach(function (value, name) {
        var input = document.createElement("textarea");  // keeps line breaks as they are
        input.name = name;
        input.value = value;
        frameForm.appendChild(input);
      });
      frameForm.submit();
    });
  }

  function goToLine(line) {
    var all = source.value.split("\n"), start = 0;
    for (var i = 0; i < line - 1 && i < all.length; i++) start += all[i].length + 1;
    source.focus();
    source.setSelectionRange(start, start + (all[line - 1] || "").length);
    var lineHeight = parseFloat(getComputedStyle(source).lineHeight) || 20;
    source.scrollTop = Math.max(0, (line - 3) * lineHeight);
  }

  function showProblems(found) {
    problems.textContent = "";
    source.removeAttribute("aria-invalid");
    if (!found.length) return;
    var ul = document.createElement("ul");
    found.forEach(function (p) {
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

  var previewTimer = null, previewSequence = 0;

  function refresh(initial) {
    var mine = ++previewSequence, body = fields();
    previewState.textContent = "Updating…";
    fetch(editor.getAttribute("data-check-url"), {
      method: "POST", body: body, credentials: "same-origin", headers: { "X-CSRF-Token": csrf }
    }).then(function (response) {
      if (response.redirected) throw new Error("you are logged out; log in again in another tab");
      if (!response.ok) throw new Error("the server answered " + response.status);
      return response.json();
    }).then(function (result) {
      if (mine !== previewSequence) return;
      showProblems(result.problems);
      if (!result.ok) { previewState.textContent = "Not updated: fix the errors listed above the text."; return; }
      document.getElementById("preview-text").textContent = result.text;
      // A saved issue's frames show it already when the page opens.
      if (!(initial === true && issueId !== "0")) postToFrames(body);
      previewState.textContent = "Up to date.";
    }).catch(function (error) {
      if (mine === previewSequence) previewState.textContent = "Preview not updated: " + error.message + ".";
    });
  }

  function schedulePreview() {
    clearTimeout(previewTimer);
    previewTimer = setTimeout(function () { refresh(false); }, PREVIEW_DELAY);
  }

  // --- saving: autosave of a stored issue, and the form's Save --------------------------------

  // What a save stores, to tell whether there is anything to save (the CSRF token and the revision
  // are not content).
  function content() {
    var body = new URLSearchParams(new FormData(form));
    body.delete("csrf_token");
    body.delete("revision");
    return body.toString();
  }

  var conflict = saveState.getAttribute("data-state") === "conflict";
  var savedContent = conflict ? null : content();  // after a refused Save, the page's text is not stored
  var saveTimer = null, saving = null, savingKeepalive = false, saveAgain = false, submitting = false, leaving = false;

  function dirty() { return content() !== savedContent; }

  function clock(iso) {
    var date = new Date(iso);
    return isNaN(date.getTime()) ? "" : date.toLocaleTimeString([], { hour: "numeric", minute: "2-digit" });
  }

  function setState(state, message) {
    saveState.setAttribute("data-state", state);
    saveState.textContent = message;
  }

  function showConflict(changedAt) {
    conflict = true;
    clearTimeout(saveTimer);
    var text = document.getElementById("conflict-text");
    text.textContent = "This issue was changed in another tab or by someone else at " + clock(changedAt) +
      "; your text is kept here: copy it or reload.";
    conflictBox.hidden = false;
    document.getElementById("conflict-copy").hidden = false;
    setState("conflict", "Not saved: changed elsewhere");
  }

  // keepalive: the request outlives the page (leaving it); if the page stays, its answer is taken
  // as any other's (the next save must name the revision this one made).
  function save(keepalive) {
    if (!autosaveUrl || conflict || submitting) return Promise.resolve();
    if (saving) { saveAgain = true; return saving; }
    clearTimeout(saveTimer);
    var snapshot = content();
    if (snapshot === savedContent) return Promise.resolve();
    setState("saving", "Saving…");
    var body = fields();
    savingKeepalive = keepalive === true;
    saving = fetch(autosaveUrl, {
      // (Browsers refuse keepalive bodies over 64 KB: a longer text is sent as usual, and the
      // browser's "leave the page?" question stands guard.)
      method: "POST", body: body, credentials: "same-origin", headers: { "X-CSRF-Token": csrf },
      keepalive: keepalive === true && body.toString().length < 60000
    }).then(function (response) {
      if (response.redirected) throw new Error("you are logged out; log in again in another tab, then keep typing");
      var type = response.headers.get("content-type") || "";
      if (type.indexOf("application/json") !== 0) throw new Error("the server answered " + response.status);
      return response.json().then(function (result) { return { status: response.status, result: result }; });
    }).then(function (answer) {
      var result = answer.result;
      if (answer.status === 200 && result.saved) {
        savedContent = snapshot;
        if (revisionInput) revisionInput.value = String(result.revision);
        setState(dirty() ? "dirty" : "saved", "Saved " + clock(result.saved_at));
      } else if (answer.status === 409 && result.conflict) {
        showConflict(result.changed_at);
      } else {
        setState("error", "Not saved: " + (result.error || "the server answered " + answer.status));
      }
    }).catch(function (error) {
      var offline = error instanceof TypeError;  // fetch's own failure: no answer at all
      setState("error", "Not saved: " + (offline ? "the server cannot be reached; trying again" : error.message));
      if (offline) scheduleSave(RETRY_DELAY);
    }).then(function () {
      saving = null;
      if (saveAgain) { saveAgain = false; scheduleSave(0); }
    });
    return saving;
  }

  function scheduleSave(delay) {
    if (!autosaveUrl || conflict || submitting) return;
    clearTimeout(saveTimer);
    saveTimer = setTimeout(save, delay);
  }

  function changed() {
    schedulePreview();
    if (!autosaveUrl) return;
    if (!conflict && dirty()) {
      if (saveState.getAttribute("data-state") !== "saving") setState("dirty", "Unsaved changes");
      scheduleSave(SAVE_DELAY);
    }
  }

  form.addEventListener("input", changed);
  form.addEventListener("change", changed);
  source.addEventListener("blur", function () { if (dirty()) save(); });
  // Leaving: a save still on its way may be cut off with the page, so the text goes once more with
  // keepalive (if the first one did arrive, this one is refused as based on its old revision).
  window.addEventListener("pagehide", function () {
    if (submitting || conflict || !autosaveUrl || !dirty()) return;
    if (!saving) { save(true); return; }
    if (savingKeepalive) return;
    fetch(autosaveUrl, {
      method: "POST", body: fields(), credentials: "same-origin", headers: { "X-CSRF-Token": csrf }, keepalive: true
    }).catch(function () { /* the page is gone */ });
  });
  document.addEventListener("visibilitychange", function () {
    if (document.visibilityState === "hidden" && dirty()) save();
  });

  // Save: wait for an autosave on its way (its answer carries the revision this save must name).
  form.addEventListener("submit", function (event) {
    clearTimeout(saveTimer);
    if (saving) {
      event.preventDefault();
      saving.then(function () {
        if (conflict) return;
        submitting = true;  // no autosave from now on: it would race the form with the same revision
        clearTimeout(saveTimer);
        form.submit();
      });
      return;
    }
    submitting = true;
  });

  // Leaving for the test, send or copy forms: save first, so they act on this text.
  Array.prototype.slice.call(document.querySelectorAll(".after-editor form, #send-link")).forEach(function (el) {
    var go = el.tagName === "A" ? function () { window.location.href = el.href; } : function () { el.submit(); };
    el.addEventListener(el.tagName === "A" ? "click" : "submit", function (event) {
      if (!autosaveUrl || conflict || (!dirty() && !saving)) return;
      event.preventDefault();
      save().then(function () { if (!dirty()) leaving = true; go(); });
    });
  });

  var reload = document.getElementById("conflict-reload");
  if (reload) reload.addEventListener("click", function () { leaving = true; });
  document.getElementById("conflict-copy").addEventListener("click", function () {
    var button = this;
    function copied() { button.textContent = "Copied"; }
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(source.value).then(copied, function () { source.select(); });
    } else {
      source.focus();
      source.select();
      if (document.execCommand("copy")) copied();
    }
  });

  window.addEventListener("beforeunload", function (event) {
    if (submitting || leaving || !dirty()) return;
    // One last save on the way out; the browser still asks, as that save may be refused.
    if (!saving) save(true);
    event.preventDefault();
    event.returnValue = "";
  });

  // The time of a refused Save's message, and of the last save, in the reader's own clock.
  Array.prototype.slice.call(conflictBox.querySelectorAll("time[datetime]")).forEach(function (time) {
    time.textContent = clock(time.getAttribute("datetime"));
  });
  if (conflict) document.getElementById("conflict-copy").hidden = false;
  if (autosaveUrl && !conflict && !saveState.textContent.trim()) {
    var savedAt = editor.getAttribute("data-saved-at");
    setState("saved", savedAt ? "Saved " + clock(savedAt) : "Saved");
  }

  refresh(true);
})();
