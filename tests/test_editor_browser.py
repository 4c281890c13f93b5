"""The issue editor in a browser: the toolbar and its shortcuts on the selected text (undoable), the live
preview of the real email beside the text (desktop, phone, plain text), autosave with its visible state,
and two tabs on one issue, where the second save is refused and nothing is lost.

A real `newsletter web` process on SQLite and Debian's Chromium driven by Playwright.
"""

from __future__ import annotations

import re
import time

import pytest
from playwright.sync_api import expect
from sqlalchemy import create_engine, select

from newsletter.store.models import Issue
from tests.test_admin_journey import DESKTOP, create_user, log_in, watch_console
from tests.test_web_journey import chromium, free_port, start_web  # noqa: F401

pytestmark = [pytest.mark.browser, pytest.mark.redis, pytest.mark.slow]

DRAFT = """---
subject: "Toolbar test"
---
Hello *|NAME:there|*,

big news today

read the story online

one
two
"""

#: Select the first occurrence of a piece of the text, as a reader dragging the mouse over it would.
SELECT = """(el, piece) => {
  const at = el.value.indexOf(piece);
  if (at < 0) throw new Error("not in the text: " + piece);
  el.focus();
  el.setSelectionRange(at, at + piece.length);
}"""
SELECTED = "el => el.value.substring(el.selectionStart, el.selectionEnd)"


@pytest.fixture
def web(newsroom):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    newsroom.cli.env["NEWSLETTER_BASE_URL"] = base
    newsroom.setup_list(1)
    create_user(newsroom, "edna", "editor")
    process = start_web(newsroom.cli.env, newsroom.tmp, port)
    yield base
    process.stop()


def stored(newsroom, issue_id: str) -> tuple[int, str]:
    """The issue's revision and body as the database has them."""
    engine = create_engine(newsroom.cli.env["NEWSLETTER_DATABASE_URL"])
    try:
        with engine.connect() as conn:
            row = conn.execute(select(Issue.revision, Issue.body_markdown).where(Issue.id == int(issue_id))).one()
            return row[0], row[1]
    finally:
        engine.dispose()


def select_text(page, piece: str) -> None:
    page.locator("#source").evaluate(SELECT, piece)


#: A 1x1 transparent PNG, served for every image the preview asks another site for (no network here).
PIXEL = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000001e221bc330000000049454e44ae426082"
)


def test_the_toolbar_and_shortcuts_format_the_selection_undoably(chromium, web):  # noqa: F811
    context = chromium.new_context(viewport=DESKTOP)
    context.route(
        re.compile(r"^https?://(?!127\.0\.0\.1[:/])"),
        lambda route: route.fulfill(status=200, content_type="image/png", body=PIXEL),
    )
    page = context.new_page()
    problems = watch_console(page)
    log_in(page, web, "edna")
    page.goto(f"{web}/admin/issues/new?list=weekly")
    source = page.locator("#source")
    source.fill(DRAFT)
    toolbar = page.get_by_role("toolbar", name="Formatting")
    expect(toolbar).to_be_visible()
    assert toolbar.get_by_role("button", name="Bold", exact=True).get_attribute("title") == "Bold (Ctrl+B)"
    assert toolbar.get_by_role("button", name="Link", exact=True).get_attribute("title") == "Link (Ctrl+K)"

    select_text(page, "big news today")
    toolbar.get_by_role("button", name="Heading", exact=True).click()
    assert "\n# big news today\n" in source.input_value()
    assert page.evaluate("document.activeElement.id") == "source"  # the toolbar leaves the focus in the text

    select_text(page, "news")
    toolbar.get_by_role("button", name="Bold", exact=True).click()
    assert "\n# big **news** today\n" in source.input_value()
    assert source.evaluate(SELECTED) == "news"  # still selected: pressing again takes the bold off
    toolbar.get_by_role("button", name="Bold", exact=True).click()
    assert "\n# big news today\n" in source.input_value()
    page.keyboard.press("Control+z")  # the browser's own undo brings the bold back
    assert "\n# big **news** today\n" in source.input_value()

    select_text(page, "read")
    page.keyboard.press("Control+i")
    assert "\n_read_ the story online\n" in source.input_value()

    select_text(page, "online")
    page.keyboard.press("Control+k")
    assert "[online](https://)" in source.input_value()
    assert source.evaluate(SELECTED) == "https://"  # ready for the address to be typed or pasted over
    page.keyboard.type("https://example.org/more")
    assert "_read_ the story [online](https://example.org/more)\n" in source.input_value()

    select_text(page, "one\ntwo")
    toolbar.get_by_role("button", name="Numbered list", exact=True).click()
    assert source.input_value().endswith("\n1. one\n2. two\n")
    page.keyboard.press("End")
    page.keyboard.press("Enter")  # Enter in a list item starts the next one
    page.keyboard.type("three")
    assert source.input_value().endswith("\n1. one\n2. two\n3. three\n")
    select_text(page, "1. one\n2. two\n3. three")
    page.keyboard.press("Control+Shift+8")
    assert source.input_value().endswith("\n- one\n- two\n- three\n")
    toolbar.get_by_role("button", name="Quote", exact=True).click()
    assert source.input_value().endswith("\n> - one\n> - two\n> - three\n")
    toolbar.get_by_role("button", name="Quote", exact=True).click()
    page.keyboard.press("Control+End")
    toolbar.get_by_role("button", name="Divider", exact=True).click()
    toolbar.get_by_role("button", name="Image", exact=True).click()
    assert source.input_value().endswith("\n- three\n\n---\n\n![alt text](https://)")
    assert source.evaluate(SELECTED) == "https://"
    page.keyboard.type("https://example.org/photo.png")

    # The preview follows: the real email's HTML in both frames, and its plain text.
    desktop = page.frame_locator("#preview-desktop")
    expect(desktop.locator("h1")).to_have_text("big news today")
    expect(desktop.locator("strong")).to_have_text("news")
    expect(desktop.locator("em")).to_have_text("read")
    expect(desktop.locator("a", has_text="online")).to_have_attribute("href", "https://example.org/more")
    expect(desktop.locator("ul li")).to_have_count(3)
    expect(desktop.locator("hr")).to_have_count(1)
    expect(desktop.locator("img[alt='alt text']")).to_have_attribute("src", "https://example.org/photo.png")
    expect(page.frame_locator("#preview-phone").locator("strong")).to_have_text("news")
    assert problems == [], problems
    page.context.close()


def test_the_preview_beside_the_text_follows_typing_in_every_view(chromium, newsroom, web):  # noqa: F811
    issue_id = newsroom.create_issue()
    page = chromium.new_context(viewport=DESKTOP).new_page()
    problems = watch_console(page)
    log_in(page, web, "edna")
    page.goto(f"{web}/admin/issues/{issue_id}")
    source = page.locator("#source")
    desktop_frame = page.locator("#preview-desktop")
    expect(page.frame_locator("#preview-desktop").locator("h1")).to_contain_text("Qualified Support in Moscow")

    # Side by side: the preview is right of the text, not under it, and both are on screen.
    text_box, preview_box = source.bounding_box(), desktop_frame.bounding_box()
    assert preview_box["x"] >= text_box["x"] + text_box["width"], (text_box, preview_box)
    assert preview_box["y"] < text_box["y"] + text_box["height"] and preview_box["x"] + preview_box["width"] <= 1366
    assert preview_box["width"] == 620 and text_box["width"] > 450

    select_text(page, "# Qualified Support in Moscow")  # the headline (the subject says it too)
    page.keyboard.type("# Typed Headline")
    expect(page.frame_locator("#preview-desktop").locator("h1")).to_have_text("Typed Headline for Korean Summit")
    phone = page.frame_locator("#preview-phone").locator("h1")
    expect(phone).to_have_text("Typed Headline for Korean Summit")  # loaded while its tab is hidden
    page.get_by_text("Phone", exact=True).click()
    expect(phone).to_be_visible()
    assert page.locator("#preview-phone").bounding_box()["width"] == 375
    assert page.locator("#preview-desktop").is_hidden()
    page.get_by_text("Plain text", exact=True).click()
    expect(page.locator("#preview-text")).to_contain_text("Typed Headline for Korean Summit\n=====")
    expect(page.locator("#preview-state")).to_have_text("Up to date.")
    assert problems == [], problems
    page.context.close()


def test_autosave_stores_the_draft_and_says_so(chromium, newsroom, web):  # noqa: F811
    issue_id = newsroom.create_issue()
    assert stored(newsroom, issue_id)[0] == 1
    page = chromium.new_context(viewport=DESKTOP).new_page()
    problems = watch_console(page)
    log_in(page, web, "edna")
    page.goto(f"{web}/admin/issues/{issue_id}")
    state = page.locator("#save-state")
    expect(state).to_have_text(re.compile(r"^Saved \d\d?:\d\d"))  # when it was last saved

    page.locator("#source").click()
    page.keyboard.press("Control+End")
    with page.expect_response(lambda r: r.url.endswith(f"/issues/{issue_id}/autosave")) as answer:
        page.keyboard.type("\nA line written in the browser.\n")
    assert answer.value.status == 200
    expect(state).to_have_text(re.compile(r"^Saved \d\d?:\d\d"))
    expect(state).to_have_attribute("data-state", "saved")
    revision, body = stored(newsroom, issue_id)
    assert revision == 2 and body.endswith("A line written in the browser.\n")
    assert page.locator("#editor-revision").input_value() == "2"
    good = page.locator("#source").input_value()

    # A draft that does not render is not stored, and the state says why.
    with page.expect_response(lambda r: r.url.endswith("/autosave")) as answer:
        page.keyboard.type("[a relative link](/nowhere)")
    assert answer.value.status == 400
    expect(state).to_have_text(re.compile(r"^Not saved: line \d+: .*relative link URL '/nowhere'"))
    assert stored(newsroom, issue_id)[0] == 2

    # Save (the form) right after typing: leaving the text saves it first (autosave on blur), and the
    # form waits for that save and names the revision it returned, so it is not refused.
    page.locator("#source").fill(good + "Saved by the button.\n")
    page.get_by_role("button", name="Save", exact=True).click()
    page.wait_for_url(re.compile(rf"/admin/issues/{issue_id}\?done=saved$"))
    expect(page.locator(".notice")).to_have_text("Saved.")
    revision, body = stored(newsroom, issue_id)
    assert revision in (3, 4) and body.endswith("Saved by the button.\n")
    assert [p for p in problems if "status of 400" not in p] == [], problems  # the refused autosave only
    page.context.close()


def test_leaving_the_page_right_after_typing_saves_the_text(chromium, newsroom, web):  # noqa: F811
    issue_id = newsroom.create_issue()
    page = chromium.new_context(viewport=DESKTOP).new_page()
    log_in(page, web, "edna")
    page.goto(f"{web}/admin/issues/{issue_id}")
    expect(page.locator("#save-state")).to_have_text(re.compile(r"^Saved"))
    asked: list[str] = []

    def leave(dialog) -> None:
        asked.append(dialog.type)
        dialog.accept()

    page.on("dialog", leave)
    page.locator("#source").click()
    page.keyboard.press("Control+End")
    page.keyboard.type("\nTyped just before leaving.\n")
    page.get_by_role("link", name="Issues", exact=True).first.click()  # away before the autosave's pause
    page.wait_for_url(f"{web}/admin/issues")
    assert asked in ([], ["beforeunload"])  # asked only while the last save was on its way
    deadline = time.monotonic() + 30
    while not stored(newsroom, issue_id)[1].endswith("Typed just before leaving.\n"):
        assert time.monotonic() < deadline, stored(newsroom, issue_id)
        time.sleep(0.1)
    assert stored(newsroom, issue_id)[0] == 2
    page.context.close()


def test_a_second_tab_saving_over_the_first_is_refused_and_keeps_its_text(chromium, newsroom, web):  # noqa: F811
    issue_id = newsroom.create_issue()
    context = chromium.new_context(viewport=DESKTOP)
    first, second = context.new_page(), context.new_page()
    problems = watch_console(first) + watch_console(second)
    log_in(first, web, "edna")
    for page in (first, second):
        page.goto(f"{web}/admin/issues/{issue_id}")
        expect(page.locator("#save-state")).to_have_text(re.compile(r"^Saved"))

    # The first tab types and autosaves.
    first.locator("#source").click()
    first.keyboard.press("Control+End")
    with first.expect_response(lambda r: r.url.endswith("/autosave")) as answer:
        first.keyboard.type("\nWritten in the first tab.\n")
    assert answer.value.status == 200
    expect(first.locator("#save-state")).to_have_text(re.compile(r"^Saved \d"))

    # The second tab, loaded before that save, types too: its autosave is refused, its text kept.
    second.locator("#source").click()
    second.keyboard.press("Control+End")
    with second.expect_response(lambda r: r.url.endswith("/autosave")) as answer:
        second.keyboard.type("\nWritten in the second tab.\n")
    assert answer.value.status == 409
    conflict = second.locator("#conflict")
    expect(conflict).to_be_visible()
    expect(second.locator("#conflict-text")).to_have_text(
        re.compile(
            r"^This issue was changed in another tab or by someone else at \d\d?:\d\d( [AP]M)?; "
            r"your text is kept here: copy it or reload\.$"
        )
    )
    expect(second.locator("#save-state")).to_have_text("Not saved: changed elsewhere")
    assert second.locator("#source").input_value().endswith("Written in the second tab.\n")
    assert second.get_by_role("button", name="Copy my text").is_visible()
    revision, body = stored(newsroom, issue_id)
    assert revision == 2 and body.endswith("Written in the first tab.\n") and "second tab" not in body

    # Typing on does not try again, and Save (the form) is refused the same way, keeping the text.
    second.keyboard.type("More in the second tab.")
    with second.expect_navigation() as navigation:
        second.get_by_role("button", name="Save", exact=True).click()
    assert navigation.value.status == 409
    expect(second.locator("#conflict")).to_be_visible()
    expect(second.locator("#conflict-text")).to_contain_text("changed in another tab or by someone else at")
    assert second.locator("#source").input_value().endswith("Written in the second tab.\nMore in the second tab.")
    assert stored(newsroom, issue_id) == (revision, body)  # the first tab's save intact

    # Reloading shows the first tab's text; the first tab keeps saving on its own revision.
    second.get_by_role("link", name="Reload the saved version").click()
    second.wait_for_url(f"{web}/admin/issues/{issue_id}")
    assert second.locator("#source").input_value().endswith("Written in the first tab.\n")
    assert second.locator("#conflict").is_hidden()
    with first.expect_response(lambda r: r.url.endswith("/autosave")) as answer:
        first.keyboard.type("And more in the first.")
    assert answer.value.status == 200
    assert stored(newsroom, issue_id)[1].endswith("Written in the first tab.\nAnd more in the first.")
    assert [p for p in problems if "status of 409" not in p] == [], problems
    context.close()


def test_images_dropped_or_chosen_in_the_editor_are_uploaded_and_saved_with_the_issue(
    chromium,  # noqa: F811
    newsroom,
    web,
    tmp_path,
):
    from tests.test_media_browser import hand_over, picture

    issue_id = newsroom.create_issue()
    page = chromium.new_context(viewport=DESKTOP).new_page()
    problems = watch_console(page)
    log_in(page, web, "edna")
    page.goto(f"{web}/admin/issues/{issue_id}")
    expect(page.locator("#save-state")).to_have_text(re.compile(r"^Saved \d\d?:\d\d"))
    area = page.locator("#source")
    area.evaluate("el => { el.focus(); el.setSelectionRange(el.value.length, el.value.length); }")

    # Dropped on the text: uploaded to the library, its Markdown put at the cursor, then autosaved.
    with page.expect_response(lambda r: r.url.endswith(f"/issues/{issue_id}/autosave") and r.status == 200):
        hand_over(page, "#source", picture("PNG", (250, 200, 0)), "Sun flower.png", "image/png")
    text = area.input_value()
    line = next(x for x in text.splitlines() if x.startswith("![Sun flower]("))
    assert line.startswith(f"![Sun flower]({web}/media/") and line.endswith(".png)") and "Uploading" not in text
    assert stored(newsroom, issue_id)[1].rstrip().endswith(line)
    # The preview shows the uploaded image, served from our own base URL.
    frame = page.frame_locator("iframe[title*='desktop' i], iframe").first
    expect(frame.locator(f"img[src='{line[line.index('(') + 1 : -1]}']")).to_have_count(1)

    # The toolbar's file button does the same.
    picked = tmp_path / "chart.jpg"
    picked.write_bytes(picture("JPEG", (0, 90, 200)))
    with page.expect_response(lambda r: r.url.endswith(f"/issues/{issue_id}/autosave") and r.status == 200):
        page.locator("input[data-media-pick-for=source]").set_input_files(str(picked))
    assert re.search(rf"!\[chart\]\({re.escape(web)}/media/[0-9a-f]+\.jpg\)", stored(newsroom, issue_id)[1])
    assert problems == [], problems
    page.context.close()
