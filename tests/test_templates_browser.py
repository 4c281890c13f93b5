"""The template editor in Chromium: copy the shipped layout, watch the live preview follow the typing,
see an error with its line (and jump to it), save; then choose the template for a list.

A real `newsletter web` process, Debian's Chromium driven by Playwright, the page's own script
(static/admin/templates.js) under the admin CSP, the preview in sandboxed frames.
"""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from tests.test_admin_journey import DESKTOP, create_user, log_in, watch_console
from tests.test_web_journey import chromium, free_port, start_web  # noqa: F401

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def test_the_template_editor_previews_live_marks_errors_and_saves(chromium, newsroom):  # noqa: F811
    room = newsroom
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    room.cli.env["NEWSLETTER_BASE_URL"] = base
    room.cli("lists", "create", "weekly", "--name", "Info War Weekly", "--from-email", "news@example.org")
    create_user(room, "ada", "admin")
    web = start_web(room.cli.env, room.tmp, port)
    try:
        page = chromium.new_context(viewport=DESKTOP).new_page()
        problems = watch_console(page)
        log_in(page, base, "ada")
        page.get_by_role("link", name="Templates").click()
        page.get_by_role("link", name="issue", exact=True).click()
        expect(page.locator("#shipped-note")).to_contain_text("cannot be changed or deleted")
        assert page.locator("#template-html").get_attribute("readonly") is not None
        # Even the read-only shipped layout is previewed.
        desktop = page.frame_locator("#tpl-preview-desktop")
        desktop.locator("text=This is the sample body.").wait_for()

        # Copy it; the copy's preview shows the sample issue, personalised for a sample reader.
        page.get_by_role("link", name="Copy it into a new template").click()
        expect(page.locator("h1")).to_have_text("New template")
        desktop.locator("h1", has_text="A headline").wait_for()
        desktop.locator("text=Hello Ann Example,").wait_for()
        page.frame_locator("#tpl-preview-phone").locator("text=This is the sample body.").wait_for(state="attached")
        page.get_by_text("Plain text", exact=True).click()
        expect(page.locator("#tpl-preview-text")).to_contain_text("This is the sample body.")
        page.get_by_text("Phone", exact=True).click()
        assert page.locator("#tpl-preview-phone").bounding_box()["width"] == 375
        page.get_by_text("Desktop", exact=True).click()

        # Typing changes the preview (after a pause): the masthead says something new.
        source = page.locator("#template-html")
        original = source.input_value()
        source.fill(original.replace('<a href="{{ base_url }}">{{ list_name }}</a>', "Fresh from the press"))
        desktop.locator("text=Fresh from the press").wait_for()
        expect(page.locator("#tpl-preview-state")).to_have_text("Up to date.")
        expect(page.locator("#template-dirty")).to_be_visible()

        # A mistake is listed with its part and line; the link selects that line; fixing it clears it.
        broken = source.input_value().replace("Fresh from the press", "Fresh {{ from the press")
        line = next(i for i, row in enumerate(broken.splitlines(), 1) if "Fresh {{" in row)
        source.fill(broken)
        error = page.locator("#template-problems li.error")
        error.wait_for()
        assert error.inner_text().startswith(f"HTML, line {line}: template syntax error")
        expect(page.locator("#tpl-preview-state")).to_contain_text("Not updated")
        assert source.get_attribute("aria-invalid") == "true"
        error.get_by_role("link").click()
        assert page.evaluate("document.activeElement.id") == "template-html"
        selected = page.evaluate("s => s.value.substring(s.selectionStart, s.selectionEnd)", source.element_handle())
        assert "Fresh {{ from the press" in selected
        # The sandbox: reaching for Python is an error like any other.
        source.fill(broken.replace("Fresh {{ from the press", "{{ ''.__class__.__mro__ }}"))
        expect(error).to_contain_text("access to attribute '__class__' of 'str' object is unsafe")
        source.fill(broken.replace("Fresh {{ from the press", "Fresh from the press, again"))
        expect(page.locator("#template-problems li")).to_have_count(0)
        desktop.locator("text=Fresh from the press, again").wait_for()

        # Saved under a name; the list's form chooses it; the list says so.
        page.get_by_label("Name").fill("fresh")
        page.get_by_role("button", name="Create template").click()
        page.wait_for_url(re.compile(rf"{re.escape(base)}/admin/templates/fresh\?done=created"))
        assert page.inner_text(".notice") == "Created."
        expect(page.locator("#template-facts")).to_contain_text("by admin:ada")
        desktop.locator("text=Fresh from the press, again").wait_for()  # a saved one is previewed too
        page.goto(f"{base}/admin/lists/weekly")
        page.get_by_label("Email layout").select_option("fresh")
        page.get_by_role("button", name="Save settings").click()
        page.wait_for_url(re.compile(r"done=saved"))
        expect(page.locator("#template-fact")).to_contain_text("fresh")
        page.goto(f"{base}/admin/templates")
        expect(page.locator("#templates tbody tr", has_text="fresh")).to_contain_text("weekly")
        assert problems == []
        page.context.close()
    finally:
        web.stop()
