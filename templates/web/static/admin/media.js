// Image uploads to the media library (POST /admin/media), from three places:
//
// * the media library page's form (data-media-dropzone): files dropped on it, pasted anywhere on
//   the page, or chosen with its file button are uploaded at once, one after the other; the page
//   then reloads to show them. Without this script the form still uploads one file per submit.
// * any <textarea data-media-upload="URL">: image files dropped or pasted into it are uploaded to
//   URL, and `![name](url)` is put where the cursor was (a placeholder holds the place while the
//   file travels), then an `input` event is dispatched so the page's own listeners (a live preview,
//   autosave) see the change. Optional: data-media-status="ID" names the element that says how
//   it went (else one is made after the textarea).
//
// Each upload carries the page's CSRF token (the textarea's data-media-csrf, else the page's first
// csrf_token field) in the X-CSRF-Token header and asks for JSON. The server checks every file by
// its content; the type test here only skips what is plainly not an image.
"use strict";

(function () {
  var ACCEPTED = /^image\/(png|jpeg|gif|webp)$/;

  function csrfToken(element) {
    var own = element && element.getAttribute("data-media-csrf");
    if (own) return own;
    var field = document.querySelector('input[name="csrf_token"]');
    return field ? field.value : "";
  }

  function imageFiles(list) {
    return Array.prototype.filter.call(list || [], function (file) { return ACCEPTED.test(file.type); });
  }

  function sizeText(bytes) {
    return bytes >= 1048576 ? (bytes / 1048576).toFixed(1) + " MB" : Math.ceil(bytes / 1024) + " KB";
  }

  // Upload one file; resolves with the item ({url, markdown, name, ...}) or rejects with a sentence.
  function upload(url, file, csrf, maxBytes) {
    if (maxBytes && file.size > maxBytes) {
      return Promise.reject(new Error(file.name + " is " + sizeText(file.size) + ", more than the " +
        sizeText(maxBytes) + " an image may be."));
    }
    var body = new FormData();
    body.append("csrf_token", csrf);
    body.append("file", file, file.name || "pasted-image");
    return fetch(url, {
      method: "POST",
      body: body,
      credentials: "same-origin",
      headers: { "X-CSRF-Token": csrf, "Accept": "application/json" }
    }).then(function (response) {
      var type = response.headers.get("content-type") || "";
      if (type.indexOf("application/json") === -1) {
        var why = response.status === 413 ? "it is larger than the limit for an image" :
          response.status === 403 ? "this page has expired: reload it and try again" :
          "the server answered " + response.status;
        throw new Error((file.name || "The image") + " was not uploaded: " + why + ".");
      }
      return response.json().then(function (data) {
        if (!response.ok) throw new Error((data.error && data.error.message) || "the upload failed");
        return data;
      });
    });
  }

  function say(element, message, isError) {
    if (!element) return;
    element.hidden = !message;
    element.textContent = message;
    element.className = "media-status " + (isError ? "error" : "notice");
  }

  // --- any textarea that takes images -------------------------------------------------------
  var placeholders = 0;

  function attachTextarea(area) {
    var url = area.getAttribute("data-media-upload");
    var status = area.getAttribute("data-media-status") && document.getElementById(area.getAttribute("data-media-status"));
    if (!status) {
      status = document.createElement("p");
      status.setAttribute("role", "status");
      status.hidden = true;
      area.insertAdjacentElement("afterend", status);
    }

    function changed() { area.dispatchEvent(new Event("input", { bubbles: true })); }

    function insertAt(position, text) {
      area.setRangeText(text, position, position, "end");
      area.focus();
    }

    function take(files) {
      var position = area.selectionStart;
      var queue = Promise.resolve();
      files.forEach(function (file) {
        placeholders += 1;
        var mark = "![Uploading " + (file.name || "image") + " #" + placeholders + "…]()";
        insertAt(position, mark + "\n");
        position += mark.length + 1;
        queue = queue.then(function () {
          say(status, "Uploading " + (file.name || "the image") + "…", false);
          return upload(url, file, csrfToken(area)).then(function (item) {
            var at = area.value.indexOf(mark);
            if (at === -1) {
              insertAt(area.selectionStart, item.markdown);
            } else {
              area.setRangeText(item.markdown, at, at + mark.length, "end");
            }
            say(status, "Added " + (item.filename || "the image") + ".", false);
            changed();
          }, function (error) {
            var at = area.value.indexOf(mark);
            if (at !== -1) area.setRangeText("", at, at + mark.length + (area.value.charAt(at + mark.length) === "\n" ? 1 : 0), "end");
            say(status, error.message, true);
            changed();
          });
        });
      });
      changed();
    }

    area.addEventListener("dragover", function (event) {
      if (event.dataTransfer && Array.prototype.indexOf.call(event.dataTransfer.types, "Files") !== -1) {
        event.preventDefault();
        area.classList.add("dragging");
      }
    });
    area.addEventListener("dragleave", function () { area.classList.remove("dragging"); });
    area.addEventListener("drop", function (event) {
      area.classList.remove("dragging");
      var files = imageFiles(event.dataTransfer && event.dataTransfer.files);
      if (!files.length) return;
      event.preventDefault();
      take(files);
    });
    area.addEventListener("paste", function (event) {
      var files = imageFiles(event.clipboardData && event.clipboardData.files);
      if (!files.length) return;
      event.preventDefault();
      take(files);
    });
    // A file button for the textarea: <input type="file" data-media-pick-for="TEXTAREA-ID">.
    if (area.id) {
      Array.prototype.forEach.call(document.querySelectorAll('input[type="file"][data-media-pick-for="' + area.id + '"]'), function (picker) {
        picker.addEventListener("change", function () {
          var files = imageFiles(picker.files);
          picker.value = "";
          if (files.length) take(files);
          else say(status, "Those are not PNG, JPEG, GIF or WebP images.", true);
        });
      });
    }
  }

  Array.prototype.forEach.call(document.querySelectorAll("textarea[data-media-upload]"), attachTextarea);

  // --- the media library page -----------------------------------------------------------------
  var form = document.querySelector("form[data-media-dropzone]");
  if (form) {
    var zone = document.getElementById("media-drop");
    var input = document.getElementById("media-file");
    var status = document.getElementById("media-status");
    var button = document.getElementById("media-submit");
    var maxBytes = parseInt(form.getAttribute("data-max-bytes"), 10) || 0;
    input.multiple = true;
    input.required = false;
    button.hidden = true;  // choosing files uploads them

    var sendAll = function (files) {
      if (!files.length) {
        say(status, "Those are not PNG, JPEG, GIF or WebP images.", true);
        return;
      }
      var done = 0, failed = [];
      var queue = Promise.resolve();
      files.forEach(function (file) {
        queue = queue.then(function () {
          say(status, "Uploading " + (file.name || "the image") + " (" + (done + failed.length + 1) + " of " + files.length + ")…", false);
          return upload(form.action, file, csrfToken(form), maxBytes).then(function () { done += 1; },
            function (error) { failed.push(error.message); });
        });
      });
      queue.then(function () {
        if (!failed.length) {
          window.location.assign(window.location.pathname + "?done=media-uploaded");
          return;
        }
        say(status, (done ? done + " uploaded. " : "") + failed.join(" "), true);
        if (done) {
          var again = document.createElement("a");
          again.href = window.location.pathname;
          again.textContent = " Show the library.";
          status.appendChild(again);
        }
      });
    };

    input.addEventListener("change", function () {
      sendAll(Array.prototype.slice.call(input.files));
      input.value = "";
    });
    ["dragenter", "dragover"].forEach(function (name) {
      zone.addEventListener(name, function (event) {
        event.preventDefault();
        zone.classList.add("dragging");
      });
    });
    zone.addEventListener("dragleave", function () { zone.classList.remove("dragging"); });
    zone.addEventListener("drop", function (event) {
      event.preventDefault();
      zone.classList.remove("dragging");
      sendAll(imageFiles(event.dataTransfer && event.dataTransfer.files));
    });
    document.addEventListener("paste", function (event) {
      if (event.target && event.target.closest && event.target.closest("textarea[data-media-upload]")) return;
      var files = imageFiles(event.clipboardData && event.clipboardData.files);
      if (!files.length) return;
      event.preventDefault();
      sendAll(files);
    });
  }

  // --- copy a Markdown snippet --------------------------------------------------------------
  Array.prototype.forEach.call(document.querySelectorAll("button[data-copy]"), function (copy) {
    copy.addEventListener("click", function () {
      var field = document.getElementById(copy.getAttribute("data-copy"));
      var copied = function () {
        copy.textContent = "Copied";
        window.setTimeout(function () { copy.textContent = "Copy Markdown"; }, 2000);
      };
      if (navigator.clipboard && window.isSecureContext) {
        navigator.clipboard.writeText(field.value).then(copied, function () { field.select(); });
      } else {
        field.select();
        if (document.execCommand("copy")) copied();
      }
    });
  });
})();
