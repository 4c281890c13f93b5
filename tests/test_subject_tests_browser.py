"""Subject tests in the admin UI, in Chromium: the send form's test (explained away on an untracked list, refused
with the reason if posted anyway), the send page's test with each subject's figures, deciding it now with a
chosen winner, and cancelling another test's rest.

A real `newsletter web` process, a real worker and SMTP capture, Debian's Chromium driven by Playwright.
"""

from __future__ import annotations

import time
from email import message_from_bytes, policy

import pytest
from playwright.sync_api import expect

from tests.test_admin_journey import DESKTOP, create_user, log_in, watch_console
from tests.test_web_journey import chromium, free_port, start_web  # noqa: F401

pytestmark = [pytest.mark.browser, pytest.mark.redis, pytest.mark.slow]

B_SUBJECT = "Moscow's quiet support, in one read"


def test_an_editor_tests_a_subject_decides_it_early_and_cancels_another_tests_rest(chromium, newsroom):  # noqa: F811
    room = newsroom
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    room.cli.env["NEWSLETTER_BASE_URL"] = base
    addresses = room.setup_list(20)
    create_user(room, "edna", "editor")
    first, second = room.create_issue(), room.create_issue()
    web = start_web(room.cli.env, room.tmp, port)
    try:
        page = chromium.new_context(viewport=DESKTOP).new_page()
        problems = watch_console(page)
        log_in(page, base, "edna")

        # The list tracks nothing: the form says why there is no test, and a test posted anyway is refused.
        page.goto(f"{base}/admin/issues/{first}/send")
        page.click("#now-subject-test summary")
        expect(page.locator("#now-test-untracked")).to_contain_text("weekly has tracking off")
        expect(page.locator("#now-test-subject")).to_have_count(0)
        page.evaluate(
            """() => { const form = document.querySelector('#send-now').form;
                for (const [name, value] of [['test_subject', 'B'], ['test_share', '50']]) {
                  const input = document.createElement('input'); input.type = 'hidden';
                  input.name = name; input.value = value; form.appendChild(input); } }"""
        )
        page.click("#send-now")
        expect(page.locator("#send-error")).to_contain_text("weekly has tracking off")
        expect(page.locator("#send-error")).to_contain_text("turn it on on the list's page")
        assert room.cli("sends", "ls", "--json").stdout.strip() == "[]"

        room.cli("lists", "update", "weekly", "--tracking", "anonymous")
        room.start_worker(concurrency=1)
        page.goto(f"{base}/admin/issues/{first}/send")
        page.click("#now-subject-test summary")
        page.fill("#now-test-subject", B_SUBJECT)
        page.fill("#now-test-share", "50")
        page.fill("#now-test-after", "2 weeks")
        page.click("#send-now")
        expect(page.locator("#send-error")).to_contain_text("Decide after: not a duration")
        expect(page.locator("#now-test-subject")).to_have_value(B_SUBJECT)  # what was typed stays
        page.fill("#now-test-after", "3h")
        page.click("#send-now")
        page.wait_for_url(f"{base}/admin/sends/*")
        send_id = page.url.split("/sends/")[1].split("?")[0]
        expect(page.locator("#p-test")).to_contain_text("5 got A and 5 got B; then the winning subject goes to 10 more")
        assert room.wait_status(send_id, ("sending",))["subject_test"]["state"] == "testing"
        deadline = time.monotonic() + 60
        while room.status(send_id)["sent"] < 10 and time.monotonic() < deadline:
            time.sleep(0.3)
        page.reload()
        rows = page.locator("#test-variants tbody tr")
        expect(rows).to_have_count(2)
        expect(rows.nth(0)).to_contain_text("A: This Week in Info War")
        expect(rows.nth(1)).to_contain_text(f"B: {B_SUBJECT}")
        assert [c.strip() for c in rows.nth(1).locator("td").all_inner_texts()][:2] == ["5", "5"]

        page.select_option("#decide-winner", "B")
        page.click("#f-decide button")
        expect(page.locator(".notice")).to_contain_text("The subject test is decided")
        expect(page.locator("#p-test")).to_contain_text("B won")
        expect(page.locator("#test-reason")).to_contain_text("B chosen by admin:edna")
        expect(page.locator("#f-decide")).to_have_count(0)
        assert room.wait_status(send_id)["sent"] == 20
        page.reload()
        expect(page.locator("#test-variants tbody tr.winner")).to_contain_text("B (winner)")

        # Another issue's test: its rest is cancelled from the page; only the test share gets it.
        page.goto(f"{base}/admin/issues/{second}/send")
        page.click("#now-subject-test summary")
        page.fill("#now-test-subject", B_SUBJECT)
        page.fill("#now-test-share", "20")
        page.click("#send-now")
        page.wait_for_url(f"{base}/admin/sends/*")
        other = page.url.split("/sends/")[1].split("?")[0]
        page.once("dialog", lambda dialog: dialog.accept())
        page.click("#f-cancel-remainder button")
        expect(page.locator(".notice")).to_contain_text("only the test share gets the issue")
        expect(page.locator("#p-test")).to_contain_text("cancelled by admin:edna")
        final = room.wait_status(other)
        assert (final["sent"], final["cancelled"]) == (4, 16)
        refusals = ("status of 409 (Conflict)", "status of 400 (Bad Request)")  # the two refused forms above
        assert [p for p in problems if not p.endswith(refusals)] == []
    finally:
        web.stop()
    room.wait_received(24)
    time.sleep(2)  # room for a duplicate to show up, if there were one
    subjects = [str(message_from_bytes(m.data, policy=policy.default)["Subject"]) for m in room.capture.messages]
    # The first send: 5 got A, 5 got B, and the 10 others the winner, B; the second: its 4 of the test share only.
    assert len(subjects) == 24
    assert subjects.count(B_SUBJECT) == 5 + 10 + 2
    counts = room.received()
    assert set(counts) == set(addresses) and sorted(counts.values()) == [1] * 16 + [2] * 4
