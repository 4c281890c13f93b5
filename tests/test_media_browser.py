"""The media library in Chromium: drag and drop, paste, the file button, copying a snippet, deleting;
and static/admin/media.js on a textarea, as the issue editor will use it.

The library runs in a real `newsletter web` process. media.js's textarea side is tried on a small page
served by a test-only route added, inside this test process, to an app built by create_app and run
by uvicorn in a thread: the production app has no such page. Playwright drives Debian's Chromium
under the admin CSP; files are dropped and pasted as a browser hands them to a page (a DataTransfer
in a drop or paste event).
"""

from __future__ import annotations

import base64
import io
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import Depends, Request
from fastapi.responses import HTMLResponse
from PIL import Image
from playwright.sync_api import expect

from newsletter.access.accounts import Caller
from newsletter.config import Settings
from newsletter.store import db
from tests.test_admin_journey import DESKTOP, PASSWORD, create_user, log_in, watch_console
from tests.test_web_journey import chromium, free_port, start_web  # noqa: F401

pytestmark = [pytest.mark.browser, pytest.mark.redis, pytest.mark.slow]

#: Drops (or pastes) one file on the element matching the selector, as the browser does for a file from the desktop.
HAND_OVER = """async ([selector, data, name, type, how]) => {
  const bytes = Uint8Array.from(atob(data), c => c.charCodeAt(0));
  const files = new DataTransfer();
  files.items.add(new File([bytes], name, {type}));
  const target = document.querySelector(selector);
  if (how === "paste") {
    target.dispatchEvent(new ClipboardEvent("paste", {bubbles: true, cancelable: true, clipboardData: files}));
    return;
  }
  for (const kind of ["dragenter", "dragover", "drop"]) {
    target.dispatchEvent(new DragEvent(kind, {bubbles: true, cancelable: true, dataTransfer: files}));
  }
}"""


def picture(kind: str, colour: tuple[int, int, int], size: tuple[int, int] = (400, 300)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, colour).save(out, kind)
    return out.getvalue()


def hand_over(page, selector: str, data: bytes, name: str, type_: str, how: str = "drop") -> None:
    page.evaluate(HAND_OVER, [selector, base64.b64encode(data).decode(), name, type_, how])


def test_the_library_takes_drops_pastes_and_the_file_button_copies_snippets_and_deletes(
    chromium,  # noqa: F811
    newsroom,
    tmp_path: Path,
):
    room = newsroom
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    room.cli.env["NEWSLETTER_BASE_URL"] = base
    create_user(room, "edna", "editor")
    web = start_web(room.cli.env, room.tmp, port)
    try:
        context = chromium.new_context(viewport=DESKTOP)
        context.grant_permissions(["clipboard-read", "clipboard-write"], origin=base)
        page = context.new_page()
        problems = watch_console(page)
        log_in(page, base, "edna")
        page.get_by_role("link", name="Media").click()
        page.wait_for_url(f"{base}/admin/media")
        expect(page.locator("#media-empty")).to_have_text("No images yet.")
        expect(page.locator("#media-submit")).to_be_hidden()  # the script uploads as soon as files come

        # Dropped on the drop zone: uploaded, and the page shows it.
        hand_over(page, "#media-drop", picture("PNG", (200, 30, 30), (2000, 1000)), "Red banner.png", "image/png")
        page.wait_for_url(f"{base}/admin/media?done=media-uploaded")
        expect(page.locator(".notice")).to_have_text("Uploaded: the image is in the library.")
        cards = page.locator("#media-grid .media-card")
        expect(cards).to_have_count(1)
        expect(cards.first.locator(".media-name")).to_have_text("Red banner.png")
        expect(cards.first).to_contain_text("1200 × 600 px")  # scaled to email width
        image = cards.first.locator("img")
        expect(image).to_have_js_property("complete", True)
        assert image.evaluate("img => img.naturalWidth") == 1200  # served from /media/ under the admin CSP

        # Pasted (a screenshot on the clipboard): uploaded too.
        hand_over(page, "body", picture("JPEG", (30, 30, 200)), "image.png", "image/png", how="paste")
        expect(cards).to_have_count(2)
        expect(cards.first.locator(".media-name")).to_have_text("image.png")
        expect(cards.first).to_contain_text("400 × 300 px")

        # The file button, with a JPEG named .gif: stored as what it is.
        chosen = tmp_path / "Green field.gif"
        chosen.write_bytes(picture("JPEG", (30, 200, 30), (640, 480)))
        page.set_input_files("#media-file", str(chosen))
        expect(cards).to_have_count(3)
        newest = cards.first
        expect(newest.locator(".media-name")).to_have_text("Green field.gif")
        snippet = newest.locator(".media-markdown").input_value()
        assert snippet.startswith(f"![Green field]({base}/media/") and snippet.endswith(".jpg)")

        # Not an image, whatever its name and type say: refused, said on the page, nothing added.
        hand_over(page, "#media-drop", b"just some words\n" * 10, "fake.png", "image/png")
        expect(page.locator("#media-status")).to_contain_text("fake.png: not an image")
        expect(page.locator("#media-status")).to_have_class("media-status error")
        page.reload()
        expect(cards).to_have_count(3)

        # Copy the Markdown snippet.
        newest.get_by_role("button", name="Copy Markdown").click()
        expect(newest.get_by_role("button", name="Copied")).to_be_visible()
        assert page.evaluate("navigator.clipboard.readText()") == snippet

        # Delete one (after the confirmation the page asks for).
        page.once("dialog", lambda dialog: dialog.accept())
        cards.first.get_by_role("button", name="Delete Green field.gif").click()
        page.wait_for_url(f"{base}/admin/media?done=media-deleted")
        expect(cards).to_have_count(2)
        expect(page.locator("#media-grid")).not_to_contain_text("Green field.gif")
        # The one console line: Chromium's own note of the refused upload's 400.
        assert problems == ["Failed to load resource: the server responded with a status of 400 (Bad Request)"]
        context.close()
    finally:
        web.stop()


# --- media.js on a textarea, on a page made for this test ----------------------------------------------

HARNESS = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>media.js harness</title>
<link rel="icon" href="{static}/favicon.svg" type="image/svg+xml">
<script src="{static}/media.js" defer></script>
<script src="{static}/harness-count.js" defer></script></head>
<body><input type="hidden" name="csrf_token" value="{csrf}">
<label for="body">Body</label>
<textarea id="body" rows="10" cols="80" data-media-upload="{upload}" data-inputs="0">Before

After</textarea>
</body></html>"""
#: Counts the input events the textarea dispatches (a file of its own: the admin CSP allows no inline script).
COUNTER = 'document.getElementById("body").addEventListener("input", e => { e.target.dataset.inputs = +e.target.dataset.inputs + 1; });'


@pytest.fixture
def harness(tmp_path: Path, redis_url: str) -> Iterator[str]:
    """The app with a test-only page holding a textarea[data-media-upload], served by uvicorn in a thread."""
    import uvicorn
    from fastapi.responses import Response

    from newsletter.access import accounts
    from newsletter.http.admin.auth import user
    from newsletter.http.admin.pages import PAGE_HEADERS
    from newsletter.http.app import create_app

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    url = f"sqlite:///{tmp_path / 'harness.db'}"
    engine = db.make_engine(url)
    db.upgrade(engine)
    sessions = db.session_factory(engine)
    with db.transaction(sessions) as session:
        accounts.create_user(session, "edna", PASSWORD, "editor")
    settings = Settings.from_environ(
        {
            "NEWSLETTER_VAR_DIR": str(tmp_path / "var"),
            "NEWSLETTER_DATABASE_URL": url,
            "NEWSLETTER_BROKER_URL": redis_url,
            "NEWSLETTER_BASE_URL": base,
            "NEWSLETTER_SECRET_KEY": "media-harness-secret-key-0123456789abcdef",
        }
    )
    app = create_app(settings, sessions=sessions, send_confirmation=lambda request: None)

    def page(request: Request, caller: Caller = Depends(user("media"))) -> HTMLResponse:
        html = HARNESS.format(static="/static/admin", csrf=caller.csrf_token, upload="/admin/media")
        return HTMLResponse(html, headers=PAGE_HEADERS)

    def counter() -> Response:
        return Response(COUNTER, media_type="text/javascript")

    app.add_api_route("/admin/harness", page, methods=["GET"])
    app.add_api_route("/static/admin/harness-count.js", counter, methods=["GET"])
    app.router.routes.insert(0, app.router.routes.pop())  # before the static files' mount
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield base
    server.should_exit = True
    thread.join(15)
    engine.dispose()


def test_media_js_puts_dropped_and_pasted_images_into_a_textarea_at_the_cursor(chromium, harness):  # noqa: F811
    base = harness
    page = chromium.new_context(viewport=DESKTOP).new_page()
    problems = watch_console(page)
    log_in(page, base, "edna")
    page.goto(f"{base}/admin/harness")
    area = page.locator("#body")
    start = len("Before\n")
    area.evaluate(f"el => {{ el.focus(); el.setSelectionRange({start}, {start}); }}")

    hand_over(page, "#body", picture("PNG", (250, 200, 0)), "Sun flower.png", "image/png")
    page.wait_for_function("() => /!\\[Sun flower\\]\\(http/.test(document.getElementById('body').value)")
    value = area.input_value()
    first = value.split("\n")[1]
    assert value.startswith("Before\n![Sun flower](") and value.endswith("\nAfter")
    assert first.startswith(f"![Sun flower]({base}/media/") and first.endswith(".png)")
    assert "Uploading" not in value
    assert int(area.get_attribute("data-inputs") or 0) >= 1  # the page's own listeners were told
    served = page.request.get(first[first.index("(") + 1 : -1])
    assert served.status == 200 and served.headers["content-type"] == "image/png"

    # Pasted at the end: a JPEG named .png arrives as the JPEG it is.
    area.evaluate("el => { el.focus(); el.setSelectionRange(el.value.length, el.value.length); }")
    hand_over(page, "#body", picture("JPEG", (0, 90, 200)), "clip.png", "image/png", how="paste")
    page.wait_for_function("() => /!\\[clip\\]\\(http[^)]*\\.jpg\\)/.test(document.getElementById('body').value)")
    assert area.input_value().startswith(value)

    # Not an image: the placeholder goes, the reason is said beside the textarea, the text is as it was.
    before = area.input_value()
    hand_over(page, "#body", b"plain words", "words.png", "image/png")
    status = page.locator("#body + p[role=status]")
    expect(status).to_contain_text("words.png: not an image")
    expect(area).to_have_value(before)
    # A file that is not an image type at all is left to the browser: nothing is uploaded.
    hand_over(page, "#body", b"a,b\n1,2\n", "table.csv", "text/csv")
    expect(area).to_have_value(before)
    assert problems == ["Failed to load resource: the server responded with a status of 400 (Bad Request)"]
    page.context.close()
