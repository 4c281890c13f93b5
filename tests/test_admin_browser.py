"""Small admin UI details that only a browser shows: the plain-text preview as mail clients show
the text part, and the page an editor gets where only an admin may go.

A real `newsletter web` process and Debian's Chromium driven by Playwright (see
test_admin_journey.py for the whole journeys).
"""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from tests.test_admin_journey import DESKTOP, create_user, log_in, watch_console
from tests.test_web_journey import chromium, free_port, start_web  # noqa: F401

pytestmark = [pytest.mark.browser, pytest.mark.redis, pytest.mark.slow]

#: For each line of the element's text, how many line boxes the browser laid it out on.
LINE_BOXES = """el => {
  const text = el.firstChild;
  const counts = [];
  let start = 0;
  for (const line of text.data.split("\\n")) {
    if (line.length) {
      const range = document.createRange();
      range.setStart(text, start);
      range.setEnd(text, start + line.length);
      counts.push(new Set([...range.getClientRects()].map(r => Math.round(r.top))).size);
    }
    start += line.length + 1;
  }
  return counts;
}"""


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


def test_the_text_preview_shows_the_text_part_line_for_line(chromium, newsroom, web):  # noqa: F811
    """The text part is wrapped at 78 columns once, by the renderer; the preview must not wrap it again."""
    issue_id = newsroom.create_issue()
    newsroom.cli("issues", "preview", issue_id, "--text", str(newsroom.tmp / "part.txt"))
    part = (newsroom.tmp / "part.txt").read_text(encoding="utf-8")
    assert max(len(line) for line in part.splitlines() if "://" not in line) == 78  # lines as long as the part has
    for viewport in (DESKTOP, {"width": 900, "height": 900}):  # the preview beside the editor, and below it
        page = chromium.new_context(viewport=viewport).new_page()
        problems = watch_console(page)
        log_in(page, web, "edna")
        page.goto(f"{web}/admin/issues/{issue_id}")
        page.get_by_text("Plain text", exact=True).click()
        shown = page.locator("#preview-text")
        expect(shown).to_contain_text("Qualified Support in Moscow")
        assert shown.evaluate("el => el.textContent") == part  # exactly the part, as a sample reader gets it
        boxes = shown.evaluate(LINE_BOXES)
        assert len(boxes) > 20 and set(boxes) == {1}, f"lines wrapped again at {viewport['width']} px: {boxes}"
        assert problems == []
        page.context.close()


def test_an_editor_refused_a_page_sees_the_admin_403_page_and_gets_back(chromium, newsroom, web):  # noqa: F811
    page = chromium.new_context(viewport=DESKTOP).new_page()
    problems = watch_console(page)
    log_in(page, web, "edna")
    page.goto(f"{web}/admin/issues?list=weekly")
    # An admin-only page, reached from a link on this page (as from a bookmark list or a colleague's message).
    page.evaluate("""() => { const a = document.createElement("a"); a.href = "/admin/subscribers"; a.id = "probe";
                             a.textContent = "subscribers"; document.querySelector("main").append(a); }""")
    with page.expect_navigation() as navigation:
        page.click("#probe")
    assert navigation.value.status == 403
    assert page.title() == "Not allowed · Newsletter admin"
    assert "it needs the admin role" in page.inner_text("#forbidden-reason")
    assert page.get_by_role("link", name="Issues").is_visible()  # the admin's navigation, in the admin's style
    assert (
        page.evaluate("getComputedStyle(document.querySelector('header.top')).display") != "inline"
    )  # admin.css applied
    page.get_by_role("link", name="Back to the page you came from").click()
    page.wait_for_url(f"{web}/admin/issues?list=weekly")
    page.goto(f"{web}/admin/suppressions")  # typed in: no page to go back to, the dashboard is there
    assert page.get_by_role("link", name="Back to the page you came from").count() == 0
    page.get_by_role("link", name="Go to the dashboard").click()
    page.wait_for_url(f"{web}/admin")
    assert [p for p in problems if "status of 403" not in p] == []  # the refused pages themselves are logged as 403s
