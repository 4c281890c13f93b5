"""Secrets and tokens (issue 16, item 6).

* A blank or short NEWSLETTER_SECRET_KEY stops `web`, `worker`, `send` and `inbound` at
  start, naming the setting; `doctor` still runs, reports it and says how to make a key.
* Preferences links expire (NEWSLETTER_PREFERENCES_DAYS); an expired one offers to mail a
  fresh link, which a real worker delivers; a preferences link never re-subscribes an
  address that left without a new confirmation.
* Tokens in paths and query strings never reach the access log.

Everything runs for real: the CLI as a process, `newsletter web` under uvicorn, a Celery
worker, Redis and an SMTP capture server.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from newsletter.config import Settings
from newsletter.store import db
from newsletter.store.models import Suppression
from subscribers.suppressions import suppress
from subscribers.tokens import TokenSigner
from tests.conftest import Cli
from tests.test_web import BASE, add, site  # noqa: F401 - site is a fixture
from tests.test_web_journey import free_port, start_web, text_of, wait_for_mail
from tests.textkit import must_match

GOOD_KEY = "a-good-secret-key-of-forty-bytes-0123456"
BAD_KEYS = {"empty": "", "blank": "   ", "short": "short", "31 bytes": "k" * 31}


def run_briefly(cli: Cli, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run `newsletter ARGS`; a command that starts instead of refusing is stopped (and the test fails)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "newsletter", *args],
        env=env,
        cwd=cli.cwd,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        stdout, stderr = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        raise AssertionError(
            f"newsletter {' '.join(args)} started with a weak key instead of refusing:\n{stderr}"
        ) from None
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


# --- the secret key ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(BAD_KEYS))
def test_a_blank_or_short_secret_key_stops_every_long_running_command_at_start(cli, redis_url, kind):
    env = {**cli.env, "NEWSLETTER_SECRET_KEY": BAD_KEYS[kind], "NEWSLETTER_BROKER_URL": redis_url}
    commands = {
        "web": ("web", "--port", str(free_port())),
        "worker": ("worker", "--concurrency", "1"),
        "send": ("send", "1"),
        "inbound": ("inbound", "--port", "0"),
    }
    for name, args in commands.items():
        result = run_briefly(cli, *args, env=env)
        assert result.returncode == 1, f"{name}: exit {result.returncode}\n{result.stderr}"
        assert result.stderr.startswith("configuration error: NEWSLETTER_SECRET_KEY: "), f"{name}: {result.stderr}"
        assert "secrets.token_urlsafe" in result.stderr, f"{name} does not say how to make a key: {result.stderr}"
        assert "Traceback" not in result.stderr


def test_doctor_reports_a_weak_secret_key_and_says_how_to_make_one(cli):
    for kind, detail in (
        ("empty", "set but empty"),
        ("blank", "only whitespace"),
        ("31 bytes", "too short (31 bytes)"),
    ):
        result = Cli({**cli.env, "NEWSLETTER_SECRET_KEY": BAD_KEYS[kind]}, cli.cwd)("doctor", check=False)
        assert "configuration error" not in result.stderr, result.stderr
        line = next(line for line in result.stdout.splitlines() if "Secret key:" in line)
        assert line.startswith("missing ") and detail in line, line
        fix = result.stdout.splitlines()[result.stdout.splitlines().index(line) + 1]
        assert "secrets.token_urlsafe(48)" in fix and "NEWSLETTER_SECRET_KEY_OLD" in fix, fix
        assert result.returncode == 1 and "Secret key" in result.stdout.splitlines()[-1]
    # A good key passes; a short old key (kept to verify links mailed before a rotation) is a warning.
    result = Cli(
        {**cli.env, "NEWSLETTER_SECRET_KEY": GOOD_KEY, "NEWSLETTER_SECRET_KEY_OLD": "old-key-of-20-bytes!"}, cli.cwd
    )("doctor", check=False)
    assert f"ok       Secret key: NEWSLETTER_SECRET_KEY is set ({len(GOOD_KEY)} bytes)" in result.stdout
    assert "warn     Old secret key: NEWSLETTER_SECRET_KEY_OLD: key 1 of 1 is 20 bytes, under 32" in result.stdout
    # An old key too short ever to have been a key stops the other commands, and the doctor names it.
    tiny = {**cli.env, "NEWSLETTER_SECRET_KEY": GOOD_KEY, "NEWSLETTER_SECRET_KEY_OLD": f"{'o' * 40},tiny"}
    refused = Cli(tiny, cli.cwd)("lists", "ls", check=False)
    assert refused.returncode == 1 and refused.stderr.startswith(
        "configuration error: NEWSLETTER_SECRET_KEY_OLD: key 2 of 2 is 4 bytes"
    ), refused.stderr
    assert (
        "missing  Old secret key: NEWSLETTER_SECRET_KEY_OLD: key 2 of 2 is 4 bytes"
        in Cli(tiny, cli.cwd)("doctor", check=False).stdout
    )


def test_the_development_key_is_long_enough_and_a_damaged_one_is_refused(cli):
    key_file = Path(cli.env["NEWSLETTER_VAR_DIR"]) / "secret_key"
    assert len(key_file.read_text().strip().encode()) >= 32 and (key_file.stat().st_mode & 0o777) == 0o600
    key_file.write_text("abc\n")  # cut short by hand or by a full disk
    result = cli("lists", "ls", check=False)
    assert result.returncode == 1
    assert result.stderr.startswith("configuration error: NEWSLETTER_SECRET_KEY: unset, and the development key in")
    assert str(key_file) in result.stderr and "delete that file" in result.stderr


# --- tokens in the access log ----------------------------------------------------------------------


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_the_access_log_of_a_real_web_process_holds_no_token(cli, log_format):
    env = {**cli.env, "NEWSLETTER_SECRET_KEY": GOOD_KEY, "NEWSLETTER_LOG_FORMAT": log_format}
    run = Cli(env, cli.cwd)
    run("lists", "create", "weekly", "--name", "The Weekly", "--from-email", "news@example.org")
    run("subscribers", "add", "weekly", "ann@example.com", "--confirmed")
    signer = TokenSigner(GOOD_KEY)
    tokens = {purpose: signer.make(1, 1, purpose) for purpose in ("unsubscribe", "confirm", "preferences")}
    archive_key, api_token = signer.archive_key(1, 1), "nl_secret-api-token-in-a-query-0123456789"
    port = free_port()
    web = start_web(env, cli.cwd, port)
    try:
        requests = [
            ("GET", f"/unsubscribe/{tokens['unsubscribe']}"),
            ("GET", f"/confirm/{tokens['confirm']}"),
            ("GET", f"/preferences/{tokens['preferences']}"),
            ("POST", f"/preferences/{tokens['preferences']}/name"),
            ("GET", f"/archive/weekly/1?key={archive_key}"),
            ("GET", f"/api/lists?token={api_token}&limit=5"),
            ("GET", "/unsubscribe/v1.9.9.9.forged-token-value"),
        ]
        answers = [
            httpx.request(
                method, f"{web.base}{path}", data={"name": "Ann"} if method == "POST" else None, timeout=30
            ).status_code
            for method, path in requests
        ]
        assert answers[:4] == [200, 200, 200, 200], answers
    finally:
        web.stop()
    log = web.log.read_text()
    for secret in [*tokens.values(), archive_key, api_token, "forged-token-value"]:
        assert secret not in log, f"{secret} is in the access log:\n{log}"
    if log_format == "json":
        lines = [json.loads(line)["message"] for line in log.splitlines() if line.startswith("{")]
    else:
        lines = log.splitlines()
    expected = [
        '"GET /unsubscribe/… HTTP/1.1" 200',
        '"GET /confirm/… HTTP/1.1" 200',
        '"GET /preferences/… HTTP/1.1" 200',
        '"POST /preferences/…/name HTTP/1.1" 200',
        '"GET /archive/weekly/1?key=… HTTP/1.1"',
        '"GET /api/lists?token=…&limit=5 HTTP/1.1" 401',
        '"GET /unsubscribe/… HTTP/1.1" 400',
    ]
    for line in expected:
        assert any(line in entry for entry in lines), f"no access log line with {line}:\n{log}"


# --- preferences links: expiry, a fresh link, no re-subscription without a confirmation ------------------------

DAY = 86400


def test_an_expired_preferences_link_offers_a_fresh_one_that_a_worker_mails(newsroom):
    room = newsroom
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    room.cli.env.update(NEWSLETTER_BASE_URL=base, NEWSLETTER_SECRET_KEY=GOOD_KEY)
    room.cli("lists", "create", "weekly", "--name", "The Weekly", "--from-email", "news@example.org")
    room.cli("subscribers", "add", "weekly", "ann@example.com", "--name", "Ann", "--confirmed")
    signer = TokenSigner(GOOD_KEY)
    now = int(time.time())
    expired = signer.make(1, 1, "preferences", issued_at=now - 91 * DAY)
    room.start_worker(concurrency=1)
    web = start_web(room.cli.env, room.tmp, port)
    try:
        # Still valid on day 89 of 90; past them, a page that names no one and offers a fresh link.
        assert (
            httpx.get(f"{base}/preferences/{signer.make(1, 1, 'preferences', issued_at=now - 89 * DAY)}").status_code
            == 200
        )
        page = httpx.get(f"{base}/preferences/{expired}")
        assert page.status_code == 410 and "This link has expired" in page.text
        assert f'action="/preferences/{expired}/renew"' in page.text and "Email me a fresh link" in page.text
        assert "ann@example.com" not in page.text and "Ann" not in page.text
        # An expired link changes nothing.
        for action, data in (("leave", {"list": "weekly"}), ("leave-all", {}), ("name", {"name": "Eve"})):
            assert httpx.post(f"{base}/preferences/{expired}/{action}", data=data).status_code == 410
        assert "ann@example.com" in room.cli("subscribers", "ls", "weekly", "--status", "confirmed").stdout
        assert "Eve" not in room.cli("subscribers", "ls", "weekly").stdout
        # A tampered link stays refused, for the fresh link too; a foreign key's link as well.
        body, signature = expired.rsplit(".", 1)
        tampered = f"{body}.{'A' * len(signature)}"
        assert httpx.get(f"{base}/preferences/{tampered}").status_code == 400
        assert httpx.post(f"{base}/preferences/{tampered}/renew").status_code == 400
        foreign = TokenSigner("another-install-key-0123456789-abcdef").make(
            1, 1, "preferences", issued_at=now - 91 * DAY
        )
        assert httpx.post(f"{base}/preferences/{foreign}/renew").status_code == 400

        asked = httpx.post(f"{base}/preferences/{expired}/renew")
        assert asked.status_code == 200 and "Check your inbox" in asked.text and "ann@example.com" not in asked.text
        mail = wait_for_mail(room, "ann@example.com", 1)[-1]
        assert mail["Subject"] == "Your preferences for The Weekly"
        assert mail["List-Unsubscribe"].startswith(f"<{base}/unsubscribe/v1.")
        fresh = must_match(re.search(rf"{re.escape(base)}/preferences/(\S+)", text_of(mail))).group(1)
        assert fresh != expired and "works for 90 days" in text_of(mail)
        opened = httpx.get(f"{base}/preferences/{fresh}")
        assert opened.status_code == 200 and "Your preferences" in opened.text and "ann@example.com" in opened.text
        # Unsubscribe links never expire: a year-old one still works in one click (RFC 8058).
        old_unsubscribe = signer.make(1, 1, "unsubscribe", issued_at=now - 400 * DAY)
        one_click = httpx.post(
            f"{base}/unsubscribe/{old_unsubscribe}",
            content=b"List-Unsubscribe=One-Click",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert one_click.status_code == 200
        assert "ann@example.com" in room.cli("subscribers", "ls", "weekly", "--status", "unsubscribed").stdout
    finally:
        web.stop()


def test_fresh_links_are_limited_per_address_and_follow_the_setting(site):  # noqa: F811
    from fastapi.testclient import TestClient

    from newsletter.http.app import create_app

    add(site, "ann@example.com")
    add(site, "bob@example.com")
    queued: list[tuple[int, int]] = []
    settings = Settings.from_environ({**site.environ, "NEWSLETTER_PREFERENCES_DAYS": "2"})
    app = create_app(
        settings,
        sessions=site.sessions,
        send_confirmation=site.send_confirmation,
        send_preferences_link=lambda subscriber_id, list_id: queued.append((subscriber_id, list_id)),
    )
    client = TestClient(app, client=("203.0.113.9", 50000), raise_server_exceptions=False)
    now = int(time.time())
    ann = site.token("ann@example.com", "preferences", issued_at=now - 3 * DAY)
    assert (
        client.get(f"/preferences/{site.token('ann@example.com', 'preferences', issued_at=now - DAY)}").status_code
        == 200
    )
    page = client.get(f"/preferences/{ann}")
    assert page.status_code == 410 and "works for 2 days" in page.text
    # The same page for each request; the address gets at most 3 such emails a day, whoever asks.
    for _ in range(5):
        assert client.post(f"/preferences/{ann}/renew").status_code == 200
    assert queued == [site.ids("ann@example.com")] * 3
    client.post(f"/preferences/{site.token('bob@example.com', 'preferences', issued_at=now - 3 * DAY)}/renew")
    assert queued[-1] == site.ids("bob@example.com")
    # A suppressed address gets nothing.
    with db.transaction(site.sessions) as s:
        suppress(s, "bob@example.com", reason="hard_bounce", note="test")
    client.post(f"/preferences/{site.token('bob@example.com', 'preferences', issued_at=now - 3 * DAY)}/renew")
    assert len(queued) == 4


def test_a_preferences_link_never_resubscribes_without_a_new_confirmation(site):  # noqa: F811
    add(site, "ann@example.com", "weekly")
    add(site, "ann@example.com", "daily")
    client = site.client()
    one_click = client.post(
        f"/unsubscribe/{site.token('ann@example.com', 'unsubscribe')}", data={"List-Unsubscribe": "One-Click"}
    )
    assert one_click.status_code == 200 and site.subscription("ann@example.com").status == "unsubscribed"
    preferences = f"/preferences/{site.token('ann@example.com', 'preferences')}"
    assert len(site.mails("ann@example.com")) == 0

    joined = client.post(f"{preferences}/join", data={"list": "weekly"})
    assert joined.status_code == 200 and "Until then you stay off the list" in joined.text
    weekly = site.subscription("ann@example.com")
    assert (weekly.status, weekly.end_reason) == ("unsubscribed", "one-click (RFC 8058)")  # the record stays
    [mail] = site.mails("ann@example.com")
    assert mail["Subject"] == "Confirm your subscription to The Weekly"
    assert client.post(site.confirm_link("ann@example.com").removeprefix(BASE)).status_code == 200
    weekly = site.subscription("ann@example.com")
    assert (weekly.status, weekly.source, weekly.ended_at) == ("confirmed", "form", None)

    # After leaving everything the address is suppressed; joining from preferences lifts nothing by itself.
    assert client.post(f"{preferences}/leave-all").status_code == 200
    joined = client.post(f"{preferences}/join", data={"list": "daily"})
    assert joined.status_code == 200
    assert site.subscription("ann@example.com", "daily").status == "unsubscribed"
    with site.sessions() as s:
        assert s.scalar(select(Suppression.reason).where(Suppression.email == "ann@example.com")) == "unsubscribed_all"
    assert site.mails("ann@example.com")[-1]["Subject"] == "Confirm your subscription to The Daily"
    assert client.post(site.confirm_link("ann@example.com").removeprefix(BASE)).status_code == 200
    assert site.subscription("ann@example.com", "daily").status == "confirmed"
    assert site.subscription("ann@example.com", "weekly").status == "unsubscribed"  # only the list asked for
    with site.sessions() as s:
        assert s.scalar(select(Suppression.reason).where(Suppression.email == "ann@example.com")) is None

    # An expired preferences link asks for nothing and mails nothing.
    assert (
        client.post(
            "/unsubscribe/" + site.token("ann@example.com", "unsubscribe", "daily"),
            data={"List-Unsubscribe": "One-Click"},
        ).status_code
        == 200
    )
    sent = len(site.mails("ann@example.com"))
    old = site.token("ann@example.com", "preferences", issued_at=int(time.time()) - 91 * DAY)
    assert client.post(f"/preferences/{old}/join", data={"list": "daily"}).status_code == 410
    assert len(site.mails("ann@example.com")) == sent
    assert site.subscription("ann@example.com", "daily").status == "unsubscribed"


def test_the_unsubscribe_page_offers_the_preferences_link_of_its_own_email_which_expires_with_it(site):  # noqa: F811
    """Unsubscribe links never expire; the preferences link their pages offer must not outlive the email's own."""
    add(site, "ann@example.com", "weekly")
    client = site.client()
    now = int(time.time())
    for issued_at, works in ((now - 10 * DAY, True), (now - 91 * DAY, False)):
        token = site.token("ann@example.com", "unsubscribe", issued_at=issued_at)
        page = client.get(f"/unsubscribe/{token}")
        assert page.status_code == 200  # the unsubscribe link itself still works
        [link] = re.findall(r'href="(/preferences/[^"]+)"', page.text)
        assert client.get(link).status_code == (200 if works else 410)
    # After unsubscribing, the same: an old email's link leads to the offer of a fresh link, not to the page.
    gone = client.post(f"/unsubscribe/{site.token('ann@example.com', 'unsubscribe', issued_at=now - 91 * DAY)}")
    assert gone.status_code == 200 and site.subscription("ann@example.com").status == "unsubscribed"
    [link] = re.findall(r'href="(/preferences/[^"]+)"', gone.text)
    expired = client.get(link)
    assert expired.status_code == 410 and "ann@example.com" not in expired.text


def test_a_percent_encoded_token_is_redacted_too_and_smuggles_no_line_break_into_the_log():
    from newsletter.logs import redact

    token = "v1.12.3.1700000000.AbC-_9"
    assert redact(f"GET /unsubscribe%2F{token} HTTP/1.1") == "GET /unsubscribe/… HTTP/1.1"
    assert redact(f"/unsubscribe/{token.replace('.', '%2E')}") == "/unsubscribe/…"
    assert redact("/archive/weekly/1?k%65y=SECRET&page=2") == "/archive/weekly/1?key=…&page=2"
    assert redact("/archive/x?key=a%0AFAKE LINE") == "/archive/x?key=…\\x0aFAKE LINE"
    assert redact("/archive/x?q=caf%C3%A9") == "/archive/x?q=caf%C3%A9"  # nothing secret: logged as received


def test_a_tracked_links_reader_token_is_redacted_from_the_log():
    from newsletter.logs import redact

    line = '127.0.0.1:5000 - "GET /t/c/12/3/500001.y6sykz4dTmYd_pgy HTTP/1.1" 302'
    assert redact(line) == '127.0.0.1:5000 - "GET /t/c/12/3/… HTTP/1.1" 302'  # send and link stay, the reader goes
    assert redact("GET /news/t/o/12/500001.y6sykz4dTmYd_pgy HTTP/1.1") == "GET /news/t/o/12/… HTTP/1.1"
    assert redact("GET /t%2Fo%2F12%2F500001.abc HTTP/1.1") == "GET /t/o/12/… HTTP/1.1"


def test_clicks_and_opens_leave_no_access_log_line_other_requests_do():
    import logging

    from newsletter.logs import UntrackedAccess

    quiet = UntrackedAccess()

    def line(path: str) -> logging.LogRecord:
        args = ("127.0.0.1:5000", "GET", path, "1.1", 302)
        return logging.LogRecord("uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d', args, None)

    assert not quiet.filter(line("/t/c/12/3/500001.y6sykz4dTmYd_pgy"))
    assert not quiet.filter(line("/news/t/o/12/500001.y6sykz4dTmYd_pgy"))
    assert quiet.filter(line("/unsubscribe/v1.1.1.1.abc")) and quiet.filter(line("/archive/weekly/3"))
