"""A new reader's whole journey, through real processes end to end.

A real `newsletter web` process, a real `newsletter worker`, Redis, the capture SMTP
server, the CLI, and Debian's Chromium driven by Playwright at phone width: subscribe on
the page, confirm from the email, receive the next issue, manage preferences, unsubscribe
in one click from the List-Unsubscribe header as a mail provider does, and get nothing more.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

import httpx
import pytest

from tests.conftest import need_service
from tests.textkit import body_text, must_match

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-dev-shm-usage"]
PHONE = {"width": 375, "height": 740}
#: Set to a folder to keep the phone-width screenshots the journey takes (for a human to look at).
SCREENSHOT_DIR = os.environ.get("WEB_JOURNEY_SCREENSHOTS")

pytestmark = [pytest.mark.browser, pytest.mark.redis, pytest.mark.slow]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class WebProcess:
    proc: subprocess.Popen
    log: Path
    base: str

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)


def start_web(env: dict[str, str], cwd: Path, port: int) -> WebProcess:
    log = cwd / "web.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "newsletter", "web", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        cwd=cwd,
        stdout=open(log, "w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    web = WebProcess(proc, log, f"http://127.0.0.1:{port}")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"newsletter web exited {proc.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(web.base + "/", timeout=1).status_code == 200:
                return web
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    web.stop()
    raise AssertionError(f"newsletter web did not answer within 30 s:\n{log.read_text()}")


@pytest.fixture
def chromium() -> Iterator[object]:
    if not Path(CHROMIUM).exists():
        need_service(f"Chromium not installed at {CHROMIUM} (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def wait_for_mail(room, to: str, count: int, timeout: float = 60) -> list[EmailMessage]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [m for m in room.capture.messages if to in m.rcpt_tos]
        if len(found) >= count:
            return [message_from_bytes(m.data, policy=policy.default) for m in found]
        time.sleep(0.1)
    logs = "\n".join(w.log.read_text()[-3000:] for w in room.workers)
    raise AssertionError(f"{to} has {len(found)} message(s), expected {count}, after {timeout} s\n{logs}")


def text_of(message: EmailMessage) -> str:
    return body_text(message)


def check_phone_layout(page, name: str, tmp_path: Path) -> None:
    """Nothing wider than the phone (no sideways scrolling), and a screenshot to look at."""
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"], f"{name} scrolls sideways at 375 px"
    folder = Path(SCREENSHOT_DIR) if SCREENSHOT_DIR else tmp_path
    folder.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(folder / f"{name}-375px.png"), full_page=True)


def test_subscribe_confirm_receive_manage_and_unsubscribe_in_one_click(chromium, newsroom, tmp_path):
    room = newsroom
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    room.cli.env["NEWSLETTER_BASE_URL"] = base  # the links in every email point at this web process
    others = room.setup_list(3)
    room.cli("lists", "create", "monthly", "--name", "The Monthly", "--from-email", "news@example.org")
    room.start_worker(concurrency=1)
    web = start_web(room.cli.env, room.tmp, port)
    try:
        context = chromium.new_context(viewport=PHONE, device_scale_factor=2, is_mobile=True, has_touch=True)
        page = context.new_page()
        csp_errors: list[str] = []
        page.on("console", lambda m: csp_errors.append(m.text) if "Content Security Policy" in m.text else None)

        # 1. Subscribe through the page, to two lists.
        for slug, count in (("weekly", 1), ("monthly", 2)):
            page.goto(f"{base}/subscribe/{slug}")
            if slug == "weekly":
                check_phone_layout(page, "subscribe", tmp_path)
            page.fill("#name", "Zoë Tester")
            page.fill("#email", "Zoe@Example.com")
            page.click("button[type=submit]")
            assert page.inner_text("h1") == "Check your inbox"
            assert "zoe@example.com" in room.cli("subscribers", "ls", slug, "--status", "unconfirmed").stdout

            # 2. The confirmation email, through the worker and a real SMTP server.
            mail = wait_for_mail(room, "zoe@example.com", count)[-1]
            assert mail["Subject"] in (
                "Confirm your subscription to Info War Weekly",
                "Confirm your subscription to The Monthly",
            )
            link = must_match(re.search(rf"{re.escape(base)}/confirm/\S+", text_of(mail))).group(0)
            if slug == "weekly":  # the email itself fits a phone too (in a page of its own: no site CSP)
                mail_page = context.new_page()
                mail_page.set_content(body_text(mail, "html"))
                check_phone_layout(mail_page, "confirmation-email", tmp_path)
                mail_page.close()

            # 3. Opening the link shows a button; only pressing it confirms.
            page.goto(link)
            assert page.inner_text("button[type=submit]") == "Yes, subscribe me"
            assert "zoe@example.com" not in room.cli("subscribers", "ls", slug, "--status", "confirmed").stdout
            page.click("button[type=submit]")
            assert page.inner_text("h1") == "Welcome, Zoë Tester!"
            assert "zoe@example.com" in room.cli("subscribers", "ls", slug, "--status", "confirmed").stdout

        # 4. The editor sends the next issue; the new reader gets it.
        first_send = room.send(room.create_issue())
        assert room.wait_status(first_send)["sent"] == 4
        issue = wait_for_mail(room, "zoe@example.com", 3)[-1]
        assert issue["Subject"].startswith("This Week in Info War")
        assert "Hello Zoë Tester," in text_of(issue)
        assert issue["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        one_click_url = must_match(re.match(r"<(http[^>]+)>", issue["List-Unsubscribe"])).group(1)
        preferences_url = must_match(re.search(rf"{re.escape(base)}/preferences/\S+", text_of(issue))).group(0)
        view_online_url = must_match(re.search(rf"{re.escape(base)}/archive/weekly/\d+", text_of(issue))).group(0)

        page.goto(view_online_url)
        assert "Qualified Support in Moscow" in page.content() and "zoe@example.com" not in page.content()

        # 5. Preferences, in the browser: change the name, leave one list.
        page.goto(preferences_url)
        assert page.inner_text("h1") == "Your preferences"
        assert page.locator(".lists li").count() == 2
        page.fill("#name", "Zoë T.")
        page.click("text=Save name")
        assert page.inner_text(".notice") == "Your name is saved."
        page.click("button[aria-label='Leave The Monthly']")
        assert "You left The Monthly" in page.inner_text(".notice")
        assert page.locator("button[aria-label='Join The Monthly again']").count() == 1
        check_phone_layout(page, "preferences", tmp_path)
        assert "zoe@example.com" in room.cli("subscribers", "ls", "monthly", "--status", "unsubscribed").stdout
        assert "Zoë T." in room.cli("subscribers", "ls", "weekly").stdout

        assert csp_errors == [], csp_errors
        context.close()

        # 6. One click from the List-Unsubscribe header, as a mail provider posts it (RFC 8058).
        response = httpx.post(
            one_click_url,
            content=b"List-Unsubscribe=One-Click",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
            follow_redirects=False,
        )
        assert response.status_code == 200
        assert "location" not in response.headers and "set-cookie" not in response.headers
        assert "zoe@example.com" in room.cli("subscribers", "ls", "weekly", "--status", "unsubscribed").stdout

        # 7. The next issues reach everyone else, and her no more.
        second_send = room.send(room.create_issue())
        assert room.wait_status(second_send)["sent"] == 3
        # She left "monthly" too, and no one else is on it: that send is refused, saying why.
        refused = room.cli("send", room.create_issue("monthly"), check=False)
        assert refused.returncode == 1 and "monthly has 0 confirmed subscribers" in refused.stderr
        # A finished send has every delivery recorded: 2 confirmations, 4 + 3 issues, nothing more.
        assert len(room.capture.messages) == 2 + 4 + 3
        assert room.received()["zoe@example.com"] == 3  # the two confirmations and the first issue
        assert all(room.received()[a] == 2 for a in others)
    finally:
        web.stop()
