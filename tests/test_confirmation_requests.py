"""Asking imported people to confirm: `newsletter lists request-confirmation`, its log, the API call and
the admin button, on SQLite and PostgreSQL.

The CLI test runs the whole path: a real `newsletter worker`, Redis, the capture SMTP server
(answering some recipients with chosen replies), the subscriber web app following the link
from a captured email, and a send afterwards. The batch test calls the worker's domain
function directly against the capture server to replay what a crashed worker and a
redelivered task leave behind.
"""

from __future__ import annotations

import html
import json
import re
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from newsletter.access import accounts
from newsletter.config import Settings, SmtpSettings
from newsletter.content.issues import RenderSettings
from newsletter.delivery.batch_loop import DeliveryPolicy
from newsletter.delivery.confirmation_mailing import deliver_batch
from newsletter.devtools.smtp_capture import CaptureServer
from newsletter.mail.transport import SmtpTransport
from newsletter.store import db
from newsletter.store.models import ConfirmationMail, ConfirmationRun, Subscriber, Subscription, Suppression, utcnow
from subscribers import confirmation_requests
from subscribers.lists import create_list
from subscribers.subscriptions import add_subscriber
from subscribers.suppressions import suppress
from subscribers.tokens import TokenSigner
from tests.apikit import (
    api_with_broker,  # noqa: F401  (fixture)
    assert_error,
)
from tests.textkit import body_text, must_match

CONFIRM_SUBJECT = "Confirm your subscription to Info War Weekly"
CONFIRM_LINK = re.compile(r"https://news\.example\.org/confirm/(v1\.\d+\.\d+\.\d+\.[A-Za-z0-9_-]+)")


def wait_for(predicate: Callable[[], Any], what: str, timeout: float = 90) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"{what} did not happen within {timeout} s")


def confirmation_mails(room: Any, address: str) -> list[EmailMessage]:
    found = []
    for m in room.capture.messages:
        parsed = message_from_bytes(m.data, policy=policy.default)
        if address in m.rcpt_tos and parsed["Subject"] == CONFIRM_SUBJECT:
            found.append(parsed)
    return found


def confirmations_received(room: Any) -> Counter[str]:
    return Counter(rcpt for m in room.capture.messages if m.subject == CONFIRM_SUBJECT for rcpt in m.rcpt_tos)


def confirm_token(mail: EmailMessage) -> str:
    text = body_text(mail)
    match = CONFIRM_LINK.search(text)
    assert match, text
    return match.group(1)


def finished_log(cli: Any, run_id: int) -> dict[str, Any]:
    """`confirmation-log --json` of the run once it has finished."""

    def read() -> dict[str, Any] | None:
        log = json.loads(cli("lists", "confirmation-log", "weekly", "--run", str(run_id), "--json").stdout)
        return log if log["run"]["status"] == "finished" else None

    return wait_for(read, f"request to confirm {run_id} finishing")


def test_imported_people_are_asked_once_and_whoever_confirms_gets_the_next_send(newsroom_any_db, database_url):
    room, cli = newsroom_any_db, newsroom_any_db.cli
    cli("lists", "create", "weekly", "--name", "Info War Weekly", "--from-email", "news@example.org")
    readers = [f"reader{i}@example.com" for i in range(4)]
    grey, unknown, trap, old = "grey@example.com", "nobody@example.com", "trap@example.com", "old@example.com"
    people = room.tmp / "people.csv"
    people.write_text(
        "email,name\n" + "".join(f"{a},Reader {i}\n" for i, a in enumerate([*readers, grey, unknown, trap]))
    )
    cli("subscribers", "import", "weekly", str(people))  # without --confirmed: all unconfirmed
    cli("subscribers", "add", "weekly", old, "--confirmed")
    cli("suppressions", "add", trap)
    engine = db.make_engine(database_url)
    sessions = db.session_factory(engine)
    try:
        with db.transaction(sessions) as s:  # imported a month ago: the links must still live their whole week
            s.execute(update(Subscription).values(requested_at=utcnow() - timedelta(days=30)))
        room.capture.replies[grey] = "451 4.7.1 greylisted, try again later"
        room.capture.replies[unknown] = "550 5.1.1 no such user here"
        room.start_worker()

        first = cli("lists", "request-confirmation", "weekly").stdout
        assert "Queued 6 confirmation requests for weekly (run 1)." in first, first
        assert "Left out: 1 suppressed address (never mailed)." in first, first

        def attempts_of(address: str) -> int:
            with sessions() as s:
                return s.scalar(select(ConfirmationMail.attempts).where(ConfirmationMail.email == address)) or 0

        wait_for(lambda: attempts_of(grey) >= 1, "the greylisted address's first attempt")
        del room.capture.replies[grey]  # the server takes it on a later attempt
        log = finished_log(cli, 1)
        rows = {r["email"]: r for r in log["recipients"]}
        assert set(rows) == {*readers, grey, unknown}
        assert log["run"]["queued"] == 6 and log["run"]["sent"] == 5 and log["run"]["failed"] == 1
        assert log["run"]["left_out"] == {"asked_recently": 0, "suppressed": 1, "already_queued": 0}
        for address in [*readers, grey]:
            assert rows[address]["status"] == "sent" and rows[address]["smtp_reply"] == "2.0.0 OK: captured", rows[
                address
            ]
            assert rows[address]["smtp_code"] == 250 and rows[address]["sent_at"]
            [mail] = confirmation_mails(room, address)
            assert mail["Message-ID"] == rows[address]["message_id"]
            assert "is on the list of Info War Weekly" in body_text(mail)
        assert rows[grey]["attempts"] >= 2
        assert rows[unknown]["status"] == "failed" and rows[unknown]["smtp_code"] == 550
        assert "no such user" in rows[unknown]["smtp_reply"]
        with sessions() as s:  # an unknown mailbox is suppressed, as a send does
            assert s.scalar(select(Suppression.reason).where(Suppression.email == unknown)) == "hard_bounce"
        # Exactly one each; nothing for the suppressed, the confirmed or the refused address.
        assert confirmations_received(room) == Counter({a: 1 for a in [*readers, grey]})
        table = cli("lists", "confirmation-log", "weekly").stdout
        assert "2.0.0 OK: captured" in table and "no such user" in table and "finished" in table

        again = cli("lists", "request-confirmation", "weekly").stdout
        assert "Queued 0 confirmation requests for weekly." in again, again
        assert "5 people asked in the last 7 days (add --again to ask them anyway)" in again, again
        assert "2 suppressed addresses (never mailed)" in again, again
        assert len(json.loads(cli("lists", "confirmation-runs", "weekly", "--json").stdout)) == 1  # nothing stored

        forced = cli("lists", "request-confirmation", "weekly", "--again").stdout
        assert "Queued 5 confirmation requests for weekly (run 2)." in forced, forced
        assert finished_log(cli, 2)["run"]["sent"] == 5
        assert confirmations_received(room) == Counter({a: 2 for a in [*readers, grey]})

        # Following the link of the latest email confirms; the next send reaches that address.
        from fastapi.testclient import TestClient

        from newsletter.http.app import create_app

        ann = readers[0]
        token = confirm_token(confirmation_mails(room, ann)[-1])
        with TestClient(create_app(Settings.from_environ(cli.env)), base_url="https://news.example.org") as client:
            shown = client.get(f"/confirm/{token}")
            assert shown.status_code == 200 and "<form" in shown.text, shown.text
            confirmed = client.post(f"/confirm/{token}")
            assert confirmed.status_code == 200, confirmed.text
            assert "Info War Weekly" in html.unescape(confirmed.text)
        with sessions() as s:
            status = s.scalar(select(Subscription.status).join(Subscriber).where(Subscriber.email == ann))
        assert status == "confirmed"
        send_id = room.send(room.create_issue())
        assert room.wait_status(send_id)["sent"] == 2
        issues = Counter(r for m in room.capture.messages if m.subject != CONFIRM_SUBJECT for r in m.rcpt_tos)
        assert issues == Counter({ann: 1, old: 1})
    finally:
        engine.dispose()


# --- a crashed worker and a redelivered task ---------------------------------------------------


@pytest.fixture
def capture() -> Iterator[CaptureServer]:
    server = CaptureServer(port=0)
    server.start()
    yield server
    server.stop()


def _batch(sessions: sessionmaker[Session], capture: CaptureServer, run_id: int, first: int, last: int):
    render = RenderSettings.create(
        base_url="https://news.example.org", postal_address="1 Example Street", user_template_dir=None
    )
    with SmtpTransport(SmtpSettings("127.0.0.1", capture.port)) as transport:
        return deliver_batch(
            sessions,
            transport,
            render,
            TokenSigner("test-secret-key-0123456789abcdef"),
            run_id,
            first,
            last,
            confirm_days=7,
            policy=DeliveryPolicy(claim_seconds=30),
        )


def test_a_redelivered_batch_mails_nobody_twice_and_an_interrupted_handoff_is_never_repeated(sessions, capture):
    addresses = ["ann@example.com", "bob@example.com", "cy@example.com", "dee@example.com"]
    with db.transaction(sessions) as s:
        create_list(s, "weekly", name="Info War Weekly", from_email="news@example.org")
        for address in addresses:
            add_subscriber(s, "weekly", address, confirmed=False, source="import")
        started = confirmation_requests.start_run(s, "weekly", batch_size=100, created_by="test")
    assert started.queued == 4 and len(started.batches) == 1 and started.run_id is not None
    run_id, (first, last) = started.run_id, started.batches[0]
    ids = dict(zip(addresses, range(first, last + 1), strict=True))
    past, future = utcnow() - timedelta(seconds=5), utcnow() + timedelta(seconds=60)
    with db.transaction(sessions) as s:
        # What workers left: ann was being handed to the SMTP server when its worker died; bob was
        # claimed by that dead worker; cy is held by a worker that is still alive.
        s.execute(
            update(ConfirmationMail)
            .where(ConfirmationMail.id == ids["ann@example.com"])
            .values(status="sending", claimed_by="host:1:dead", claim_expires=past)
        )
        s.execute(
            update(ConfirmationMail)
            .where(ConfirmationMail.id == ids["bob@example.com"])
            .values(claimed_by="host:1:dead", claim_expires=past)
        )
        s.execute(
            update(ConfirmationMail)
            .where(ConfirmationMail.id == ids["cy@example.com"])
            .values(claimed_by="host:2:alive", claim_expires=future)
        )

    result = _batch(sessions, capture, run_id, first, last)  # a redelivered task
    assert (
        result.sent == 2 and result.run_again_in is not None and result.run_again_in > 30
    )  # cy: when its claim lapses
    assert sorted(r for m in capture.messages for r in m.rcpt_tos) == ["bob@example.com", "dee@example.com"]
    with sessions() as s:
        rows = {r.email: r for r in s.scalars(select(ConfirmationMail).where(ConfirmationMail.run_id == run_id))}
        asked = dict(
            s.execute(select(Subscriber.email, Subscription.confirmation_requested_at).join(Subscription)).all()
        )
    assert (
        rows["ann@example.com"].status == "failed"
        and rows["ann@example.com"].smtp_reply == confirmation_requests.UNKNOWN_OUTCOME
    )
    assert rows["cy@example.com"].status == "pending" and rows["cy@example.com"].claimed_by == "host:2:alive"
    assert asked["ann@example.com"] is not None and asked["cy@example.com"] is None  # ann may have been asked

    assert _batch(sessions, capture, run_id, first, last).sent == 0  # the same task once more: nobody again
    assert len(capture.messages) == 2
    with db.transaction(sessions) as s:  # cy's worker died too; its claim lapses
        s.execute(
            update(ConfirmationMail).where(ConfirmationMail.id == ids["cy@example.com"]).values(claim_expires=past)
        )
    assert _batch(sessions, capture, run_id, first, last).sent == 1
    assert Counter(r for m in capture.messages for r in m.rcpt_tos) == Counter(
        {"bob@example.com": 1, "cy@example.com": 1, "dee@example.com": 1}
    )
    with sessions() as s:
        assert s.scalar(select(ConfirmationRun.status).where(ConfirmationRun.id == run_id)) == "finished"


def test_someone_who_confirmed_or_was_suppressed_meanwhile_is_skipped(sessions, capture):
    with db.transaction(sessions) as s:
        create_list(s, "weekly", name="Info War Weekly", from_email="news@example.org")
        for address in ("ann@example.com", "bob@example.com", "cy@example.com"):
            add_subscriber(s, "weekly", address, confirmed=False, source="import")
        started = confirmation_requests.start_run(s, "weekly", batch_size=100)
        assert started.run_id is not None
    with db.transaction(sessions) as s:
        s.execute(
            update(Subscription)
            .where(
                Subscription.subscriber_id
                == select(Subscriber.id).where(Subscriber.email == "ann@example.com").scalar_subquery()
            )
            .values(status="confirmed", confirmed_at=utcnow())
        )
        suppress(s, "bob@example.com", reason="complaint")
    result = _batch(sessions, capture, started.run_id, *started.batches[0])
    assert (result.sent, result.skipped) == (1, 2)
    assert [r for m in capture.messages for r in m.rcpt_tos] == ["cy@example.com"]
    with sessions() as s:
        _, rows = confirmation_requests.run_log(s, started.run_id, status="skipped")
    assert {(r.email, r.smtp_reply) for r in rows} == {
        ("ann@example.com", "not sent: confirmed meanwhile"),
        ("bob@example.com", "not sent: suppressed meanwhile (complaint)"),
    }


def test_an_unreachable_smtp_server_gives_up_on_nobody_and_the_batch_waits_for_its_next_try(sessions, capture):
    with db.transaction(sessions) as s:
        create_list(s, "weekly", name="Info War Weekly", from_email="news@example.org")
        for address in ("ann@example.com", "bob@example.com"):
            add_subscriber(s, "weekly", address, confirmed=False, source="import")
        started = confirmation_requests.start_run(s, "weekly", batch_size=100)
        assert started.run_id is not None
    capture.stop()  # nothing listens on its port now
    render = RenderSettings.create(
        base_url="https://news.example.org", postal_address="1 Example Street", user_template_dir=None
    )
    before = utcnow()
    with SmtpTransport(SmtpSettings("127.0.0.1", capture.port), timeout=5) as transport:
        result = deliver_batch(
            sessions,
            transport,
            render,
            TokenSigner("test-secret-key-0123456789abcdef"),
            started.run_id,
            *started.batches[0],
            confirm_days=7,
            policy=DeliveryPolicy(max_attempts=1, retry_delay=60, max_connect_retry_delay=120),
        )
    assert (result.sent, result.failed, result.retrying) == (0, 0, 1)
    assert result.stopped is not None and result.run_again_in == 60
    with sessions() as s:
        rows = s.scalars(
            select(ConfirmationMail).where(ConfirmationMail.run_id == started.run_id).order_by(ConfirmationMail.id)
        ).all()
    # One attempt was the most allowed, yet nobody failed: the server's trouble is not theirs. Both rows
    # wait for the next try, the one not tried as well (no worker takes it meanwhile only to fail the same way).
    assert [(r.email, r.status, r.claimed_by) for r in rows] == [
        ("ann@example.com", "pending", None),
        ("bob@example.com", "pending", None),
    ]
    assert all(r.next_attempt_at is not None and r.next_attempt_at >= before + timedelta(seconds=60) for r in rows)
    assert rows[0].attempts == 1 and rows[1].attempts == 0


def test_a_link_mailed_days_after_the_request_started_lives_its_whole_lifetime(sessions, capture):
    with db.transaction(sessions) as s:
        create_list(s, "weekly", name="Info War Weekly", from_email="news@example.org")
        add_subscriber(s, "weekly", "ann@example.com", confirmed=False, source="import")
        started = confirmation_requests.start_run(s, "weekly", batch_size=100)
        assert started.run_id is not None
        # A slow, rate-limited run (or one that waited out an SMTP outage) reaches ann 8 days after it started.
        s.execute(
            update(ConfirmationRun)
            .where(ConfirmationRun.id == started.run_id)
            .values(created_at=utcnow() - timedelta(days=8))
        )
    before = int(time.time())
    assert _batch(sessions, capture, started.run_id, *started.batches[0]).sent == 1
    (mail,) = [message_from_bytes(m.data, policy=policy.default) for m in capture.messages]
    claims = TokenSigner("test-secret-key-0123456789abcdef").verify(confirm_token(mail), "confirm", max_age=7 * 86400)
    assert claims.issued_at >= before  # "valid for 7 days" holds from the email, not from the run's start


# --- the API --------------------------------------------------------------------------------------


def test_the_api_queues_a_request_with_its_counts_for_editors_and_admins(api_with_broker):  # noqa: F811
    api = api_with_broker
    api.make_list()
    for address in ("ann@example.com", "bob@example.com", "trap@example.com"):
        api.make_subscriber(address, confirmed=False)
    api.make_subscriber("old@example.com")
    api.post("/api/suppressions", json={"email": "trap@example.com"}, expect=201)
    path = "/api/lists/weekly/confirmation-requests"

    assert_error(api.client.post(path), 401)
    answer = api.post(path, role="editor", expect=202).json()
    assert answer["queued"] == 2 and answer["list"] == "weekly"
    assert answer["left_out"] == {"asked_recently": 0, "suppressed": 1, "already_queued": 0}
    assert (
        answer["message"]
        == "Queued 2 confirmation requests for weekly (run 1). Left out: 1 suppressed address (never mailed)."
    )
    run = answer["run"]
    assert (
        run["id"] == 1 and run["status"] == "sending" and run["pending"] == 2 and run["created_by"] == "api:test-editor"
    )

    # No worker runs here: both are still queued, so asking again (even with "again") queues nobody twice.
    repeat = api.post(path, role="admin", json={"again": True}, expect=200).json()
    assert repeat["queued"] == 0 and repeat["run"] is None and repeat["left_out"]["already_queued"] == 2
    assert "2 people still queued by an earlier request" in repeat["message"]

    # The recipients' addresses are for admins, like a send's delivery log; an editor is told where the counts are.
    assert_error(
        api.get(f"{path}/1/recipients", role="editor"), 403, says="GET /api/lists/weekly/confirmation-requests/1"
    )
    page = api.get(f"{path}/1/recipients", role="admin", expect=200).json()
    assert page["total"] == 2 and [r["email"] for r in page["items"]] == ["ann@example.com", "bob@example.com"]
    assert {r["status"] for r in page["items"]} == {"pending"}
    assert api.get(f"{path}/1/recipients?status=sent", expect=200).json()["total"] == 0
    assert [r["id"] for r in api.get(path, role="editor", expect=200).json()["items"]] == [1]
    assert api.get(f"{path}/1", expect=200).json()["queued"] == 2
    assert_error(api.get(f"{path}/2"), 404, says="no request to confirm with id 2")
    assert_error(api.post("/api/lists/nope/confirmation-requests"), 404, says="no list 'nope'")
    assert_error(api.post(path, json={"again": "maybe"}), 422, field="again")

    # Once the mails went out (as a worker records them), the week's rule applies; "again" overrides it.
    with db.transaction(api.sessions) as s:
        s.execute(update(ConfirmationMail).values(status="sent", sent_at=utcnow()))
        for subscription_id in s.scalars(select(ConfirmationMail.subscription_id)):
            confirmation_requests.record_asked(s, subscription_id)
    recent = api.post(path, expect=200).json()
    assert recent["left_out"]["asked_recently"] == 2 and 'send "again": true' in recent["message"]
    forced = api.post(path, json={"again": True}, expect=202).json()
    assert forced["queued"] == 2 and forced["run"]["again"] is True


# --- the admin list page's button --------------------------------------------------------------


PASSWORD = "correct horse battery"
CSRF_INPUT = re.compile(r'<input type="hidden" name="csrf_token" value="([^"]+)">')


@pytest.fixture
def admin_app(tmp_path: Path, database_url: str, redis_url: str) -> Iterator[Any]:
    environ = {
        "NEWSLETTER_VAR_DIR": str(tmp_path / "var"),
        "NEWSLETTER_DATABASE_URL": database_url,
        "NEWSLETTER_BROKER_URL": redis_url,
        "NEWSLETTER_BASE_URL": "https://news.example.org",
        "NEWSLETTER_SECRET_KEY": "test-secret-key-0123456789abcdef",
    }
    engine = db.make_engine(database_url)
    sessions = db.session_factory(engine)
    with db.transaction(sessions) as s:
        accounts.create_user(s, "eddie", PASSWORD, "editor")
        create_list(s, "weekly", name="The Weekly", from_email="news@example.org")
        add_subscriber(s, "weekly", "ann@example.com", confirmed=False, source="import")
        add_subscriber(s, "weekly", "trap@example.com", confirmed=False, source="import")
        add_subscriber(s, "weekly", "old@example.com", confirmed=True)
        suppress(s, "trap@example.com", reason="admin")
    from fastapi.testclient import TestClient

    from newsletter.http.app import create_app

    client = TestClient(
        create_app(Settings.from_environ(environ), sessions=sessions),
        base_url="https://testserver",
        follow_redirects=False,
    )
    form = client.get("/admin/login")
    login = client.post(
        "/admin/login",
        data={
            "username": "eddie",
            "password": PASSWORD,
            "csrf_token": html.unescape(must_match(CSRF_INPUT.search(form.text)).group(1)),
        },
    )
    assert login.status_code == 303
    yield client, sessions
    client.close()
    engine.dispose()


def test_the_list_page_button_asks_the_unconfirmed_and_shows_the_log(admin_app):
    client, sessions = admin_app
    shown = client.get("/admin/lists/weekly")
    assert shown.status_code == 200
    form = re.search(
        r'<form method="post" action="/admin/lists/weekly/confirmations" id="f-request-confirmation".*?</form>',
        shown.text,
        re.S,
    )
    assert form and "Ask the 2 unconfirmed to confirm" in form.group(0)
    csrf = html.unescape(must_match(CSRF_INPUT.search(form.group(0))).group(1))

    refused = client.post("/admin/lists/weekly/confirmations", data={"csrf_token": "forged"})
    assert refused.status_code == 403
    with sessions() as s:
        assert s.scalar(select(ConfirmationRun.id)) is None  # nothing stored

    asked = client.post("/admin/lists/weekly/confirmations", data={"csrf_token": csrf})
    assert asked.status_code == 303, asked.text
    assert asked.headers["location"].startswith("/admin/lists/weekly/confirmations?run=1&queued=1")
    log = client.get(asked.headers["location"])
    assert log.status_code == 200
    text = html.unescape(log.text)
    assert "Queued 1 confirmation request for weekly (run 1). Left out: 1 suppressed address (never mailed)." in text
    # The editor sees the counts; the per-recipient log names addresses, so it is for admins.
    assert 'id="log-admins-only"' in log.text and "ann@example.com" not in log.text
    with db.transaction(sessions) as s:
        accounts.create_user(s, "ada", PASSWORD, "admin")
    from fastapi.testclient import TestClient

    admin_client = TestClient(client.app, base_url="https://testserver", follow_redirects=False)
    form = admin_client.get("/admin/login")
    assert (
        admin_client.post(
            "/admin/login",
            data={
                "username": "ada",
                "password": PASSWORD,
                "csrf_token": html.unescape(must_match(CSRF_INPUT.search(form.text)).group(1)),
            },
        ).status_code
        == 303
    )
    log = admin_client.get(asked.headers["location"])
    table = re.search(r'<table class="log" id="confirmation-log">.*?</table>', log.text, re.S)
    assert table and "ann@example.com" in table.group(0) and "trap@example.com" not in table.group(0)
    assert "pending" in table.group(0)

    second = client.post("/admin/lists/weekly/confirmations", data={"csrf_token": csrf})
    assert second.status_code == 303 and "run=" not in second.headers["location"]
    again_page = html.unescape(client.get(second.headers["location"]).text)
    assert (
        "Queued 0 confirmation requests for weekly. Left out: 1 person still queued by an earlier request" in again_page
    )
    assert client.get("/admin/lists/weekly/confirmations?run=99").status_code == 404
