// The segment builder's live count: after typing stops, ask the server how many the filter matches
// (GET /admin/segments/count), or show its error with the part at fault marked. The page works
// without it (its Count button does the same on a reload).
"use strict";

(function () {
  var form = document.getElementById("segment-builder");
  if (!form) return;
  var filter = document.getElementById("segment-filter");
  var count = document.getElementById("segment-count");
  var where = document.getElementById("segment-where");
  var url = form.getAttribute("data-count-url"), list = form.getAttribute("data-list");
  var timer = null, asked = 0;

  function say(message, isError) {
    count.textContent = message;
    count.className = isError ? "error" : "muted";
  }

  function mark(text, position) {
    where.textContent = text + "\n" + new Array(position + 1).join(" ") + "^";
    where.hidden = false;
  }

  function ask() {
    var text = filter.value, mine = ++asked;
    if (!text.trim()) { say("", false); where.hidden = true; return; }
    say("Counting…", false);
    var query = "?list=" + encodeURIComponent(list) + "&filter=" + encodeURIComponent(text);
    fetch(url + query, { credentials: "same-origin", headers: { "Accept": "application/json" } })
      .then(function (response) { return response.json(); })
      .then(function (answer) {
        if (mine !== asked) return; // a newer question is on its way
        if (typeof answer.count === "number") {
          say("Matches " + answer.count.toLocaleString("en") + " subscriber" + (answer.count === 1 ? "" : "s") + ".", false);
          where.hidden = true;
        } else {
          say(answer.error || "This filter cannot be counted.", true);
          if (typeof answer.position === "number") mark(text, answer.position); else where.hidden = true;
        }
      })
      .catch(function () { if (mine === asked) say("Could not count just now; the Count button still works.", true); });
  }

  filter.addEventListener("input", function () {
    if (timer) clearTimeout(timer);
    timer = setTimeout(ask, 300);
  });
  if (filter.value.trim()) ask();
})();
