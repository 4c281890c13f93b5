// The template editor's live preview: after typing stops, check the HTML and text templates
// (POST /admin/templates/check: problems with their part and line, and the text part) and, when
// they render, post them into the two sandboxed preview frames (POST /admin/templates/preview).
// Nothing is stored until Save; the page works without it (a save shows every problem).
"use strict";

(function () {
  var editor = document.querySelector("[data-template-editor]");
  if (!editor) return;
  var html = document.getElementById("template-html");
  var text = document.getElementById("template-text");
  var problems = document.getElementById("template-problems");
  var state = document.getElementById("tpl-preview-state");
  var dirty = document.getElementById("template-dirty");
  var form = document.getElementById("template-form");
  var csrf = editor.getAttribute("data-csrf");
  var timer = null, asked = 0, saved = [html.value, text.value];

  // A hidden form per frame posts the sources into it: each frame loads the sample issue's HTML
  // from the app, with the preview's own CSP. (One form each: a form submitted twice in a row
  // would cancel its first navigation.)
  var frameForms = ["tpl-preview-desktop", "tpl-preview-phone"].map(function (name) {
    var f = document.createElement("form");
    f.method = "post";
    f.action = editor.getAttribute("data-preview-url");
    f.target = name;
    f.hidden = true;
    [["csrf_token", "input"], ["html", "textarea"], ["text", "textarea"]].forEach(function (pair) {
      var field = document.createElement(pair[1]);
      field.name = pair[0];
      if (pair[1] === "input") { field.type = "hidden"; field.value = csrf; }
      f.appendChild(field);
    });
    document.body.appendChild(f);
    return f;
  });

  function goTo(part, line) {
    var area = part === "text" ? text : html;
    var lines = area.value.split("\n"), start = 0;
    line = Math.max(1, Math.min(line || 1, lines.length));
    for (var i = 0; i < line - 1; i++) start += lines[i].length + 1;
    area.focus();
    area.setSelectionRange(start, start + lines[line - 1].length);
    var lineHeight = parseFloat(getComputedStyle(area).lineHeight) || 20;
    area.scrollTop = Math.max(0, (line - 3) * lineHeight);
  }

  function showProblems(list) {
    problems.textContent = "";
    html.removeAttribute("aria-invalid");
    text.removeAttribute("aria-invalid");
    if (!list.length) return;
    var ul = document.createElement("ul");
    list.forEach(function (p) {
      var li = document.createElement("li");
      li.className = p.level;
      if (p.part) {
        var a = document.createElement("a");
        a.href = "#template-" + p.part;
        a.setAttribute("data-part", p.part);
        a.setAttribute("data-line", p.line || "");
        a.textContent = (p.part === "html" ? "HTML" : "Text") + (p.line ? ", line " + p.line : "");
        li.appendChild(a);
        li.appendChild(document.createTextNode(": "));
        if (p.level === "error") (p.part === "text" ? text : html).setAttribute("aria-invalid", "true");
      }
      li.appendChild(document.createTextNode(p.message));
      ul.appendChild(li);
    });
    problems.appendChild(ul);
  }

  problems.addEventListener("click", function (event) {
    var link = event.target.closest("a[data-part]");
    if (link) {
      event.preventDefault();
      goTo(link.getAttribute("data-part"), parseInt(link.getAttribute("data-line"), 10) || 1);
    }
  });

  function refresh() {
    var mine = ++asked;
    var body = new URLSearchParams();
    body.set("csrf_token", csrf);
    body.set("html", html.value);
    body.set("text", text.value);
    state.textContent = "Updating…";
    fetch(editor.getAttribute("data-check-url"), {
      method: "POST", body: body, credentials: "same-origin", headers: { "X-CSRF-Token": csrf }
    }).then(function (response) {
      if (response.redirected) { window.location.reload(); return null; }  // logged out
      if (!response.ok) throw new Error("the server answered " + response.status);
      return response.json();
    }).then(function (result) {
      if (!result || mine !== asked) return;  // a newer check is on its way
      showProblems(result.problems);
      if (!result.ok) { state.textContent = "Not updated: fix the errors listed above the templates."; return; }
      document.getElementById("tpl-preview-text").textContent = result.text;
      frameForms.forEach(function (f) {
        f.elements.html.value = html.value;
        f.elements.text.value = text.value;
        f.submit();
      });
      state.textContent = "Up to date.";
    }).catch(function (error) {
      if (mine === asked) state.textContent = "Preview not updated (" + error.message + ").";
    });
  }

  function changed() {
    if (dirty) dirty.hidden = html.value === saved[0] && text.value === saved[1];
    clearTimeout(timer);
    timer = setTimeout(refresh, 500);
  }

  html.addEventListener("input", changed);
  text.addEventListener("input", changed);
  form.addEventListener("submit", function () { saved = [html.value, text.value]; });
  window.addEventListener("beforeunload", function (event) {
    if (html.value !== saved[0] || text.value !== saved[1]) { event.preventDefault(); event.returnValue = ""; }
  });
  refresh();
})();
