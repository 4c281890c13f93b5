"""An editor's weekly send (its delivery log read by an admin) and an admin's list cleaning, in the browser.

Real processes end to end: a `newsletter web` process, a `newsletter worker`, Redis, the
capture SMTP server, the CLI to set up, and Debian's Chromium driven by Playwright.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from playwright.sync_api import expect

from tests.sendkit import SAMPLE_ISSUE
from tests.test_web_journey import PHONE, check_phone_layout, chromium, free_port, start_web, wait_for_mail  # noqa: F401
from tests.textkit import must_match

pytestmark = [pytest.mark.browser, pytest.mark.redis, pytest.mark.slow]

DESKTOP = {"width": 1366, "height": 900}
PASSWORD = "a long editor password"


def create_user(room, username: str, role: str) -> None:
    room.cli("admin", "create-user", "--username", username, "--role", role, "--password-stdin", input=PASSWORD + "\n")


def log_in(page, base: str, username: str) -> None:
    page.goto(f"{base}/admin")
    assert page.url == f"{base}/admin/login"  # logged out: sent to the login page
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"{base}/admin")


def watch_console(page) -> list[str]:
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    return problems


def test_an_editor_writes_previews_tests_and_sends_the_weekly_issue(chromium, newsroom, tmp_path):  # noqa: F811
    room = newsroom
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    room.cli.env["NEWSLETTER_BASE_URL"] = base
    readers = room.setup_list(50)
    create_user(room, "edna", "editor")
    create_user(room, "ada", "admin")
    web = start_web(room.cli.env, room.tmp, port)
    try:
        context = chromium.new_context(viewport=DESKTOP)
        page = context.new_page()
        problems = watch_console(page)
        log_in(page, base, "edna")
        assert "Info War Weekly" in page.inner_text("main")
        assert page.get_by_role("link", name="Subscribers").count() == 0  # no admin-only navigation for editors

        # Write the issue: paste the sample file into the editor.
        page.get_by_role("link", name="Write a new issue").click()
        page.get_by_label("List").select_option("weekly")
        source = page.locator("#source")
        source.fill(SAMPLE_ISSUE.read_text(encoding="utf-8"))
        # The preview follows the text: desktop and phone frames, and the plain text.
        desktop = page.frame_locator("#preview-desktop")
        desktop.locator("h1", has_text="Qualified Support in Moscow for Korean Summit").wait_for()
        page.frame_locator("#preview-phone").locator("text=Hello Ann Example,").wait_for(
            state="attached"
        )  # a hidden tab
        page.get_by_text("Plain text", exact=True).click()
        expect(page.locator("#preview-text")).to_contain_text("Qualified Support in Moscow")
        page.get_by_text("Phone", exact=True).click()
        assert page.locator("#preview-phone").bounding_box()["width"] == 375

        # A mistake is shown with its line; clicking it selects that line; fixing it clears it.
        good = source.input_value()
        source.fill(good.replace("(https://twitter.com/intent/tweet?", "(/intent/tweet?"))
        error = page.locator("#problems li.error")
        error.wait_for()
        assert "relative link URL '/intent/tweet" in error.inner_text() and error.inner_text().startswith("Line 12")
        error.get_by_role("link").click()
        assert page.evaluate("document.activeElement.id") == "source"
        assert page.evaluate(
            "s => s.value.substring(s.selectionStart, s.selectionEnd)", source.element_handle()
        ).startswith("- [Share on Twitter](/intent/tweet?")
        source.fill(good)
        expect(page.locator("#problems li")).to_have_count(0)
        page.get_by_role("button", name="Create draft").click()
        page.wait_for_url(re.compile(rf"{re.escape(base)}/admin/issues/\d+\?done=created"))
        issue_id = must_match(re.search(r"/issues/(\d+)", page.url)).group(1)
        assert page.inner_text(".notice") == "Created."

        # A test to herself, through the real SMTP path.
        page.get_by_label("Send a test to").fill("edna@example.org")
        page.get_by_role("button", name="Send test").click()
        page.wait_for_url(re.compile(r"done=test-sent"))
        assert page.inner_text(".notice") == "Test sent to edna@example.org."
        [test] = wait_for_mail(room, "edna@example.org", 1)
        assert test["Subject"] == "[TEST] This Week in Info War: Qualified Support in Moscow for Korean Summit"

        # Send: the confirmation page counts the recipients first.
        page.get_by_role("link", name="Send…").click()
        assert page.url == f"{base}/admin/issues/{issue_id}/send"
        assert "50 recipients" in page.inner_text("#recipients")
        page.get_by_role("button", name="Send now to 50 recipients").click()
        page.wait_for_url(re.compile(rf"{re.escape(base)}/admin/sends/\d+\?done=started"))
        assert page.inner_text("#p-status") == "sending" and page.inner_text("#p-pending") == "50"

        # No worker runs yet: pause and resume from the page, then watch a worker finish it.
        page.get_by_role("button", name="Pause").click()
        page.wait_for_url(re.compile(r"done=paused"))
        assert page.inner_text("#p-status") == "paused"
        page.get_by_role("button", name="Resume").click()
        page.wait_for_url(re.compile(r"done=resumed"))
        assert page.inner_text("#p-status") == "sending"
        room.start_worker(concurrency=2)
        expect(page.locator("#p-status")).to_have_text("finished", timeout=120_000)
        assert page.inner_text("#p-sent") == "50" and page.inner_text("#p-pending") == "0"
        assert page.inner_text("#p-failed") == "0"
        assert page.locator("#f-pause").is_hidden() and page.locator("#f-cancel").is_hidden()

        # The log names every recipient: the editor sees the counts only, and who can open it.
        assert page.get_by_role("link", name="Delivery log").count() == 0
        assert "only admins can open it" in page.inner_text("#log-admins-only")
        send_page = page.url
        assert problems == [], problems
        context.close()

        # An admin opens the log, filters and exports it.
        context = chromium.new_context(viewport=DESKTOP)
        page = context.new_page()
        problems = watch_console(page)
        log_in(page, base, "ada")
        page.goto(send_page)
        page.get_by_role("link", name="Delivery log").click()
        page.get_by_label("Status").select_option("sent")
        page.wait_for_url(re.compile(r"status=sent"))
        assert page.locator("table.log tbody tr").count() == 50
        with page.expect_download() as download:
            page.get_by_role("link", name="Export sent as CSV").click()
        exported = Path(download.value.path()).read_text(encoding="utf-8").splitlines()
        assert len(exported) == 51 and all(",sent," in line for line in exported[1:])

        assert problems == [], problems
        context.close()

        # Every reader got exactly one copy; the editor her one test.
        received = room.received()
        assert all(received[address] == 1 for address in readers), received
        assert received["edna@example.org"] == 1 and len(room.capture.messages) == 51

        # And the pages work at phone width too.
        phone = chromium.new_context(viewport=PHONE, device_scale_factor=2, is_mobile=True, has_touch=True)
        small = phone.new_page()
        problems = watch_console(small)
        log_in(small, base, "edna")
        for path, name in (
            ("", "admin-dashboard"),
            (f"/issues/{issue_id}", "admin-editor"),
            (f"/issues/{issue_id}/send", "admin-send"),
            ("/sends/1", "admin-send-finished"),
        ):
            small.goto(f"{base}/admin{path}")
            check_phone_layout(small, name, tmp_path)
        assert problems == [], problems
        phone.close()
    finally:
        web.stop()


def test_an_admin_imports_finds_unsubscribes_erases_and_suppresses(chromium, newsroom, tmp_path):  # noqa: F811
    room = newsroom
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    room.cli.env["NEWSLETTER_BASE_URL"] = base
    room.setup_list(3)
    create_user(room, "ada", "admin")
    web = start_web(room.cli.env, room.tmp, port)
    people = tmp_path / "new-readers.csv"
    people.write_text(
        "email,name,city\nnora@example.com,Nora North,Oslo\nnot-an-address,Broken Row,Nowhere\n"
        "omar@example.com,Omar Ost,Rome\n",
        encoding="utf-8",
    )
    try:
        context = chromium.new_context(viewport=DESKTOP)
        page = context.new_page()
        problems = watch_console(page)
        page.on("dialog", lambda dialog: dialog.accept())  # "Erase ... for good?"
        log_in(page, base, "ada")

        # Import a CSV with one bad row and read the report.
        page.get_by_role("link", name="Imports").click()
        page.get_by_label("Into the list").select_option("weekly")
        page.get_by_label("CSV file").set_input_files(str(people))
        page.get_by_label("They are confirmed").check()
        page.get_by_role("button", name="Upload and import").click()
        expect(page.locator("#j-status")).to_have_text("finished", timeout=60_000)
        assert page.inner_text("#j-imported") == "2" and page.inner_text("#j-rejected") == "1"
        with page.expect_download() as download:
            page.get_by_role("link", name="Download the report of rejected rows").click()
        report = Path(download.value.path()).read_text(encoding="utf-8").splitlines()
        assert report[0] == "line,reason" and report[1].startswith("3,") and len(report) == 2
        assert "nora@example.com" in room.cli("subscribers", "ls", "weekly", "--status", "confirmed").stdout

        # Find a subscriber, take her off the list, then erase her.
        page.get_by_role("link", name="Subscribers").click()
        page.get_by_label("Address or name contains").fill("nora")
        page.get_by_role("button", name="Search").click()
        page.wait_for_url(re.compile(r"q=nora"))
        assert page.inner_text("#found-count") == "1 subscriber found."
        page.get_by_role("link", name="nora@example.com").click()
        assert page.get_by_label("Name", exact=True).input_value() == "Nora North"
        page.get_by_role("button", name="Unsubscribe from weekly").click()
        page.wait_for_url(re.compile(r"done=unsubscribed"))
        assert page.inner_text(".notice") == "Unsubscribed from the list."
        assert "nora@example.com" in room.cli("subscribers", "ls", "weekly", "--status", "unsubscribed").stdout
        page.get_by_role("button", name="Erase for good").click()
        page.wait_for_url(re.compile(r"/admin/subscribers\?done=erased"))
        assert page.inner_text(".notice") == "Erased, with the consent history."
        assert "nora@example.com" not in room.cli("subscribers", "ls", "weekly").stdout

        # Suppress an address so that it is never mailed.
        page.get_by_role("link", name="Suppressions").click()
        page.get_by_label("Address", exact=True).fill("omar@example.com")
        page.get_by_label("Note").fill("asked by phone")
        page.get_by_role("button", name="Suppress", exact=True).click()
        page.wait_for_url(re.compile(r"done=suppressed"))
        assert page.inner_text(".notice") == "Suppressed: this address is never mailed."
        assert "asked by phone" in page.inner_text("table")
        assert "omar@example.com" in room.cli("suppressions", "ls").stdout

        # A send now would reach the 3 first readers: not nora (erased), not omar (suppressed).
        page.goto(f"{base}/admin/issues/new?list=weekly")
        page.locator("#source").fill(SAMPLE_ISSUE.read_text(encoding="utf-8"))
        page.get_by_role("button", name="Create draft").click()
        page.get_by_role("link", name="Send…").click()
        assert "3 recipients" in page.inner_text("#recipients")
        assert problems == [], problems
        context.close()
    finally:
        web.stop()
