"""The admin segment builder in Chromium: the live count as the editor types, errors marked, saving;
then the issue's send page sends to the saved segment, and to two lists at once.

A real `newsletter web` process, Debian's Chromium driven by Playwright, the admin's own script
(static/admin/segments.js) under the admin CSP.
"""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from tests.test_admin_journey import DESKTOP, create_user, log_in, watch_console
from tests.test_web_journey import chromium, free_port, start_web  # noqa: F401

pytestmark = [pytest.mark.browser, pytest.mark.redis, pytest.mark.slow]


def test_the_segment_builder_counts_live_and_the_send_page_sends_to_a_segment(chromium, newsroom):  # noqa: F811
    room = newsroom
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    room.cli.env["NEWSLETTER_BASE_URL"] = base
    room.setup_list(5)  # reader00000..4@example.com, "Reader Ünï N"
    for address in ("ann@gmail.com", "bob@gmail.com"):
        room.cli("subscribers", "add", "weekly", address, "--confirmed")
    room.cli("lists", "create", "monthly", "--name", "The Monthly", "--from-email", "news@example.org")
    room.cli("subscribers", "add", "monthly", "ann@gmail.com", "--confirmed")
    room.cli("subscribers", "add", "monthly", "only-monthly@example.net", "--confirmed")
    create_user(room, "edna", "editor")
    web = start_web(room.cli.env, room.tmp, port)
    try:
        page = chromium.new_context(viewport=DESKTOP).new_page()
        problems = watch_console(page)
        log_in(page, base, "edna")
        page.goto(f"{base}/admin/segments?list=weekly")
        assert page.inner_text("h1") == "Segments"
        count = page.locator("#segment-count")

        # Live, as the editor types: a count, then an error naming the part and marking it, then a count again.
        page.fill("#segment-filter", 'domain = "gmail.com"')
        expect(count).to_have_text("Matches 2 subscribers.")
        page.fill("#segment-filter", 'domain = "gmail.com" or nmae contains "Reader"')
        expect(count).to_contain_text("unknown field")
        expect(count).to_contain_text("'nmae' at character 25")
        expect(page.locator("#segment-where")).to_be_visible()
        assert page.inner_text("#segment-where").splitlines()[1] == " " * 24 + "^"
        page.fill("#segment-filter", 'domain = "gmail.com" or name contains "Ünï 1"')
        expect(count).to_have_text("Matches 3 subscribers.")
        expect(page.locator("#segment-where")).to_be_hidden()
        page.fill("#segment-filter", "engaged in last 3 sends")  # the list's tracking is off
        expect(count).to_contain_text("needs the list's tracking to be individual")

        # Saved, listed with its count.
        page.fill("#segment-name", "gmail")
        page.fill("#segment-filter", 'domain = "gmail.com"')
        expect(count).to_have_text("Matches 2 subscribers.")
        page.click("#segment-save")
        expect(page.locator(".notice")).to_have_text("Saved the segment gmail.")
        expect(page.locator("#segments tbody tr")).to_have_count(1)
        expect(page.locator("#segments tbody td.num")).to_have_text("2")

        # The send page offers it; sending mails exactly the segment.
        issue = room.create_issue()
        room.start_worker(concurrency=1)
        page.goto(f"{base}/admin/issues/{issue}/send")
        page.select_option("#target-segment", "gmail")  # the page reloads with the segment's count
        page.wait_for_url("**segment=gmail**")
        expect(page.locator("#recipients")).to_contain_text("2 recipients")
        expect(page.locator("#recipients")).to_contain_text("Info War Weekly in the segment gmail")
        page.click("#send-now")
        page.wait_for_url(f"{base}/admin/sends/*")
        send_id = page.url.split("/sends/")[1].split("?")[0]
        assert room.wait_status(send_id)["sent"] == 2
        room.wait_received(2)
        assert room.received() == {"ann@gmail.com": 1, "bob@gmail.com": 1}

        # Two lists at once, only the new ones: the other five of weekly and the one only on monthly.
        page.goto(f"{base}/admin/issues/{issue}/send?list=weekly&also=monthly")
        expect(page.locator("#earlier-sends")).to_be_visible()
        page.check("#repeat-only-new")
        page.click("#choose-repeat")
        expect(page.locator("#recipients")).to_contain_text("6 recipients")
        page.click("#send-now")
        page.wait_for_url(f"{base}/admin/sends/*")
        second = page.url.split("/sends/")[1].split("?")[0]
        assert room.wait_status(second)["sent"] == 6
        room.wait_received(8)
        received = room.received()
        assert sum(received.values()) == 8 and set(received.values()) == {1}
        assert received["only-monthly@example.net"] == 1
        assert problems == []
        page.context.close()
    finally:
        web.stop()
