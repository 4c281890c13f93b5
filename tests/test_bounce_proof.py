"""A bounce or complaint acts only when it proves that it is about our mail (issue 16, item 2).

Anyone can mail the bare return path, and a webhook report is only as good as what it
carries. These tests send forged and genuine DSNs and ARF reports over real SMTP to
`newsletter inbound` (the real process, and the server in a thread on SQLite and
PostgreSQL), post generic and SES webhook events to the real app, and read the results
back through `newsletter bounces ls` and the admin's Bounces page: a report without proof
(a VERP address, the Message-ID of our message to that address, a signed link of ours
made for it) is kept as unproven and changes nothing; one with proof is acted on. SES
notifications older than NEWSLETTER_SES_MAX_AGE are refused as replays.
"""

from __future__ import annotations

import json
import logging
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, select, text

from newsletter.config import Settings
from newsletter.delivery.notices import confirmation_message
from newsletter.errors import ConfigError
from newsletter.mail.return_path import make_return_path
from newsletter.store import db
from newsletter.store.models import Base, BounceEvent, ConfirmationMail, MailingList, Subscriber, Subscription
from newsletter.store.states import ConfirmationMailStatus
from subscribers import confirmation_requests
from subscribers.bounces import recent_events, record_bounce
from subscribers.consent import PendingConfirmation
from subscribers.subscriptions import add_subscriber
from tests.bouncekit import (
    KEY,
    RENDER,
    RETURN_PATH,
    delivery,
    events,
    sample,
    sent_issue,
    subscription_status,
    suppression,
)
from tests.conftest import throwaway_postgres_database
from tests.test_admin_ui import admin, login  # noqa: F401 - the admin UI fixture
from tests.test_inbound import SIGNER, InboundProcess, inbound, verp  # noqa: F401 - the inbound server fixture
from tests.test_migrations import _downgrade
from tests.test_webhooks import SECRET, hooks, ses_bounce, ses_complaint, signing, sns  # noqa: F401 - webhook fixtures

LIMITS: dict[str, Any] = {"soft_limit": 3, "soft_days": 30}


def unproven(sessions) -> list[tuple[str, str]]:
    """(email, kind) of the events kept for review, oldest first."""
    with sessions() as s:
        return [(r.email, r.kind) for r in reversed(recent_events(s, proven=False))]


def dsn_quoting(original_headers: bytes, recipient: str, *, report_id: str = "dsn-1@mx.example.net") -> bytes:
    """An RFC 3464 hard bounce for ``recipient`` that quotes the original's headers, as Postfix writes one."""
    return (
        (
            f"From: MAILER-DAEMON@mx.example.net\r\nTo: {RETURN_PATH}\r\nSubject: Undelivered Mail Returned to Sender\r\n"
            f"Message-ID: <{report_id}>\r\nAuto-Submitted: auto-replied\r\nMIME-Version: 1.0\r\n"
            'Content-Type: multipart/report; report-type=delivery-status; boundary="b"\r\n\r\n'
            "--b\r\nContent-Type: text/plain\r\n\r\nYour message could not be delivered.\r\n"
            "--b\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.example.net\r\n\r\n"
            f"Final-Recipient: rfc822; {recipient}\r\nAction: failed\r\nStatus: 5.1.1\r\n\r\n"
            "--b\r\nContent-Type: text/rfc822-headers\r\n\r\n"
        ).encode()
        + original_headers
        + b"\r\n--b--\r\n"
    )


# --- the real `newsletter inbound`, end to end ------------------------------------------------


def test_forged_dsn_and_arf_to_the_bare_return_path_change_nothing_and_proven_ones_act(newsroom):
    newsroom.cli.env.update(NEWSLETTER_RETURN_PATH=RETURN_PATH, NEWSLETTER_SECRET_KEY=KEY)
    addresses = newsroom.setup_list(5)
    newsroom.start_worker()
    first = newsroom.send(newsroom.create_issue())
    assert newsroom.wait_status(first)["sent"] == 5
    dsn_victim, arf_victim, bounced, complained, _ = addresses
    envelope = {a: next(m.mail_from for m in newsroom.capture.messages if a in m.rcpt_tos) for a in addresses}
    message_id = {a: str(newsroom.parsed(a)["Message-ID"]) for a in addresses}

    process = InboundProcess(newsroom.cli.env, newsroom.cli.cwd)
    try:
        # A stranger's DSN naming a subscriber, quoting a real Message-ID of ours, but another reader's.
        process.deliver(
            sample("dsn-hard.eml", recipient=dsn_victim, message_id=message_id[complained], return_path=RETURN_PATH),
            RETURN_PATH,
        )
        # A stranger's "feedback loop" complaint about a subscriber, with a made-up Message-ID.
        process.deliver(
            sample(
                "arf-complaint.eml", recipient=arf_victim, message_id="<1.2.3@example.org>", return_path=RETURN_PATH
            ),
            RETURN_PATH,
        )
        # The genuine articles: a DSN to the delivery's own VERP address, a complaint quoting our Message-ID.
        process.deliver(
            sample("dsn-hard.eml", recipient=bounced, message_id=message_id[bounced], return_path=envelope[bounced]),
            envelope[bounced],
        )
        process.deliver(
            sample(
                "arf-complaint.eml", recipient=complained, message_id=message_id[complained], return_path=RETURN_PATH
            ),
            RETURN_PATH,
        )
        lines = process.wait_lines(4)
    finally:
        assert process.stop() == 0
    assert any(f"hard bounce {dsn_victim}: unproven" in line and "nothing changed" in line for line in lines), lines
    assert any(f"complaint {arf_victim}: unproven" in line and "nothing changed" in line for line in lines), lines
    assert any(f"hard bounce {bounced} (delivery" in line and "suppressed hard_bounce" in line for line in lines), lines
    assert any(
        f"complaint {complained} (delivery" in line and "left weekly, suppressed complaint" in line for line in lines
    ), lines

    suppressed = {
        row["email"]: row["reason"] for row in json.loads(newsroom.cli("suppressions", "ls", "--json").stdout)
    }
    assert suppressed == {bounced: "hard_bounce", complained: "complaint"}
    status = {
        row["email"]: row["status"] for row in json.loads(newsroom.cli("subscribers", "ls", "weekly", "--json").stdout)
    }
    assert status[dsn_victim] == status[arf_victim] == "confirmed" and status[complained] == "unsubscribed"

    # The unproven reports are kept for review: in the listing, with a column and a filter of their own.
    table = newsroom.cli("bounces", "ls").stdout
    assert dsn_victim in table and arf_victim in table and "proven" in table
    assert "4 event(s). 2 unproven: kept for review, they changed nothing." in table
    only = json.loads(newsroom.cli("bounces", "ls", "--unproven", "--json").stdout)
    assert sorted((e["email"], e["kind"], e["proven"], e["delivery_id"]) for e in only) == sorted(
        [
            (dsn_victim, "hard", False, None),
            (arf_victim, "complaint", False, None),
        ]
    )
    acted = json.loads(newsroom.cli("bounces", "ls", "--proven", "--json").stdout)
    assert sorted(e["email"] for e in acted) == sorted([bounced, complained]) and all(e["proven"] for e in acted)
    both = newsroom.cli("bounces", "ls", "--proven", "--unproven", check=False)
    assert both.returncode == 1 and "--unproven" in both.stderr and "not both" in both.stderr

    log = {row["email"]: row["status"] for row in json.loads(newsroom.cli("sends", "log", first, "--json").stdout)}
    assert log[bounced] == "bounced" and log[dsn_victim] == "sent" and log[arf_victim] == "sent"
    second = newsroom.send(newsroom.create_issue())
    assert newsroom.wait_status(second)["sent"] == 3  # the forged reports kept nobody from the next issue
    newsroom.wait_received(8)
    received = newsroom.received()
    assert received[dsn_victim] == received[arf_victim] == 2 and received[bounced] == received[complained] == 1


# --- the server in a thread, on SQLite and PostgreSQL ------------------------------------------


def test_a_guessed_message_id_proves_nothing_and_the_real_one_does(inbound):  # noqa: F811
    sent = sent_issue(inbound.sessions, ["kay@example.com", "lee@example.com"])
    kay = sent["kay@example.com"]
    # Message-IDs are <delivery.send.time.mac@domain>: a guessed one must be the stored one
    # and the delivery must have gone to the address the report names.
    guessed = kay.message_id.replace(f"<{kay.delivery_id}.", f"<{kay.delivery_id}.9")
    for message_id, name in ((guessed, "exim-bounce.eml"), (sent["lee@example.com"].message_id, "qmail-bounce.eml")):
        bounce = sample(name, recipient="kay@example.com", message_id=message_id, return_path=RETURN_PATH)
        inbound.deliver(bounce, RETURN_PATH)
        assert "hard bounce kay@example.com: unproven" in inbound.lines[-1], inbound.lines
    assert suppression(inbound.sessions, "kay@example.com") is None
    assert delivery(inbound.sessions, kay.delivery_id).status == "sent"
    assert unproven(inbound.sessions) == [("kay@example.com", "hard")] * 2

    # Nor can a recipient work out a neighbour's Message-ID from their own: each carries a MAC of its delivery id.
    lee = sent["lee@example.com"]
    derived = lee.message_id.replace(f"<{lee.delivery_id}.", f"<{kay.delivery_id}.")
    assert derived != kay.message_id
    forged = sample("dsn-hard.eml", recipient="kay@example.com", message_id=derived, return_path=RETURN_PATH)
    inbound.deliver(forged, RETURN_PATH)
    assert "hard bounce kay@example.com: unproven" in inbound.lines[-1], inbound.lines
    assert suppression(inbound.sessions, "kay@example.com") is None

    real = sample("qmail-bounce.eml", recipient="kay@example.com", message_id=kay.message_id, return_path=RETURN_PATH)
    inbound.deliver(real, RETURN_PATH)
    assert suppression(inbound.sessions, "kay@example.com") == "hard_bounce"
    assert delivery(inbound.sessions, kay.delivery_id).status == "bounced"
    assert events(inbound.sessions)[-1] == ("kay@example.com", "hard", kay.delivery_id)


def test_a_bounce_of_a_form_confirmation_email_is_proven_by_the_signed_link_it_quotes(inbound):  # noqa: F811
    sent_issue(inbound.sessions, ["victim@example.com"])
    with db.transaction(inbound.sessions) as s:
        add_subscriber(s, "weekly", "typo@example.com", confirmed=False, source="form")
        row = s.execute(
            select(Subscription.id, Subscriber.id, MailingList)
            .join(Subscriber, Subscriber.id == Subscription.subscriber_id)
            .join(MailingList, MailingList.id == Subscription.list_id)
            .where(Subscriber.email == "typo@example.com")
        ).one()
        pending = PendingConfirmation(row[0], row[1], "typo@example.com", "", row[2], int(time.time()))
        message, recipient = confirmation_message(pending, RENDER, SIGNER, confirm_days=7)
    # The email as it went out (from the bare return path: it is no delivery, so it has no VERP address).
    _, data = message.build(recipient)
    headers = data.split(b"\r\n\r\n", 1)[0] + b"\r\n"
    assert b"List-Unsubscribe: <https://news.example.org/unsubscribe/v1." in headers

    # Someone who got that email (or its headers) reports another address: the link was not made for it.
    inbound.deliver(dsn_quoting(headers, "victim@example.com"), RETURN_PATH)
    # A link whose signature was tampered with proves nothing either.
    token = recipient.unsubscribe_url.rsplit("/", 1)[1]
    forged = headers.replace(token.encode(), token[:-4].encode() + b"AAAA")
    assert forged != headers
    inbound.deliver(dsn_quoting(forged, "typo@example.com"), RETURN_PATH)
    assert unproven(inbound.sessions) == [("victim@example.com", "hard"), ("typo@example.com", "hard")]
    assert (
        suppression(inbound.sessions, "victim@example.com") is None
        and suppression(inbound.sessions, "typo@example.com") is None
    )

    # The real bounce (the same report id as the forged one: the proven report is news, not a repeat).
    inbound.deliver(dsn_quoting(headers, "typo@example.com"), RETURN_PATH)
    assert inbound.lines[-1].startswith("dsn: hard bounce typo@example.com: suppressed hard_bounce"), inbound.lines
    assert suppression(inbound.sessions, "typo@example.com") == "hard_bounce"
    assert suppression(inbound.sessions, "victim@example.com") is None
    assert subscription_status(inbound.sessions, "victim@example.com")[0] == "confirmed"


def test_a_complaint_about_a_request_to_confirm_is_proven_by_its_message_id_and_leaves_that_list(inbound):  # noqa: F811
    sent_issue(inbound.sessions, ["ola@example.com"], slug="daily")
    sent_issue(inbound.sessions, ["pia@example.com"], slug="weekly")
    with db.transaction(inbound.sessions) as s:
        add_subscriber(s, "weekly", "ola@example.com", confirmed=False, source="import")
        confirmation_requests.start_run(s, "weekly", batch_size=10, created_by="test")
        mail = s.scalars(select(ConfirmationMail).where(ConfirmationMail.email == "ola@example.com")).one()
        mail.status, mail.message_id = (
            ConfirmationMailStatus.SENT,
            f"<{mail.id}.confirm-run.{mail.run_id}.6751c0de@example.org>",
        )
        message_id = mail.message_id
    # The same Message-ID reported for someone else proves nothing about them.
    stranger = sample("arf-complaint.eml", recipient="pia@example.com", message_id=message_id, return_path=RETURN_PATH)
    inbound.deliver(stranger, RETURN_PATH)
    assert "complaint pia@example.com: unproven" in inbound.lines[-1]
    assert subscription_status(inbound.sessions, "pia@example.com")[0] == "confirmed"

    report = sample("arf-complaint.eml", recipient="ola@example.com", message_id=message_id, return_path=RETURN_PATH)
    inbound.deliver(report, RETURN_PATH)
    assert inbound.lines[-1].startswith(
        "feedback report: complaint ola@example.com: left weekly, suppressed complaint ["
    ), inbound.lines
    assert subscription_status(inbound.sessions, "ola@example.com", "weekly") == (
        "unsubscribed",
        "complaint (marked as spam)",
    )
    assert subscription_status(inbound.sessions, "ola@example.com", "daily")[0] == "confirmed"  # the other list stays
    assert suppression(inbound.sessions, "ola@example.com") == "complaint"
    assert unproven(inbound.sessions) == [("pia@example.com", "complaint")]


def test_unproven_soft_bounces_count_toward_nothing(sessions):
    sends = [sent_issue(sessions, ["quin@example.com"])["quin@example.com"] for _ in range(2)]
    with db.transaction(sessions) as s:
        for number in range(5):
            outcome = record_bounce(
                s, email="quin@example.com", kind="soft", source="webhook", detail=f"mailbox full #{number}", **LIMITS
            )
            assert not outcome.proven and outcome.soft_count is None and outcome.suppressed is None
            assert outcome.event_id is not None and outcome.summary().startswith(
                "soft bounce quin@example.com: unproven"
            )
        for sent in sends:
            outcome = record_bounce(s, email=None, delivery_id=sent.delivery_id, kind="soft", source="smtp", **LIMITS)
        assert outcome.proven and outcome.soft_count == 2 and outcome.suppressed is None
    assert suppression(sessions, "quin@example.com") is None
    assert len(unproven(sessions)) == 5


# --- webhooks ------------------------------------------------------------------------------------


def test_generic_webhook_events_with_only_an_address_are_kept_unproven(hooks):  # noqa: F811
    sent_issue(hooks.sessions, ["rae@example.com", "sid@example.com"])
    batch = {
        "events": [
            {"type": "bounce", "email": "rae@example.com", "bounce_type": "hard", "detail": "550 5.1.1 user unknown"},
            {"type": "complaint", "email": "sid@example.com"},
            {"type": "unsubscribe", "email": "sid@example.com"},
            {
                "type": "bounce",
                "email": "rae@example.com",
                "bounce_type": "soft",
                "message_id": "<1.2.3@elsewhere.example>",
            },
        ]
    }
    response = hooks.client().post("/webhooks/events", json=batch, headers={"Authorization": f"Bearer {SECRET}"})
    assert response.status_code == 200, response.text
    assert [
        (e["email"], e["kind"], e["proven"], e["delivery_id"], e["suppressed"], e["unsubscribed"])
        for e in response.json()["events"]
    ] == [
        ("rae@example.com", "hard", False, None, None, []),
        ("sid@example.com", "complaint", False, None, None, []),
        ("sid@example.com", "unsubscribe", False, None, None, []),
        ("rae@example.com", "soft", False, None, None, []),
    ]
    for address in ("rae@example.com", "sid@example.com"):
        assert suppression(hooks.sessions, address) is None
        assert subscription_status(hooks.sessions, address)[0] == "confirmed"
    assert len(unproven(hooks.sessions)) == 4


def test_ses_events_act_only_on_our_message_id_verp_source_or_signed_header(hooks, signing):  # noqa: F811
    sent = sent_issue(hooks.sessions, ["tam@example.com", "uma@example.com", "val@example.com"])
    client = hooks.client()

    def post(message: str) -> dict:
        response = client.post("/webhooks/ses", json=sns(signing[0], "Notification", message))
        assert response.status_code == 200, response.text
        return response.json()["events"][0]

    # SES's own mail.messageId and a source that is not our VERP address prove nothing.
    assert post(ses_complaint("tam@example.com", "news@example.org"))["proven"] is False
    assert post(ses_bounce("uma@example.com", "Permanent", source=RETURN_PATH))["proven"] is False
    assert (
        suppression(hooks.sessions, "tam@example.com") is None
        and suppression(hooks.sessions, "uma@example.com") is None
    )
    assert subscription_status(hooks.sessions, "tam@example.com")[0] == "confirmed"

    # Our Message-ID among the original headers SES includes names the delivery.
    by_id = post(ses_bounce("uma@example.com", "Permanent", message_id=sent["uma@example.com"].message_id))
    assert (by_id["proven"], by_id["delivery_id"], by_id["suppressed"]) == (
        True,
        sent["uma@example.com"].delivery_id,
        "hard_bounce",
    )
    # commonHeaders.messageId is our Message-ID too (mail.messageId is SES's own).
    record = json.loads(ses_complaint("tam@example.com", "news@example.org"))
    record["mail"]["commonHeaders"] = {"messageId": sent["tam@example.com"].message_id}
    assert post(json.dumps(record))["unsubscribed"] == ["weekly"]
    # A confirmation email sent through SES: no delivery, but its List-Unsubscribe header carries our signed link.
    with hooks.sessions() as s:
        val_id = s.scalar(select(Subscriber.id).where(Subscriber.email == "val@example.com"))
    link = (
        f"<https://news.example.org/unsubscribe/{SIGNER.make(val_id, sent['val@example.com'].list_id, 'unsubscribe')}>"
    )
    for address, proven in (("tam@example.com", False), ("val@example.com", True)):  # made for val, not for tam
        record = json.loads(ses_bounce(address, "Transient", source=RETURN_PATH))
        record["mail"]["headers"] = [
            {"name": "Message-ID", "value": "<9.confirm.ab12@example.org>"},
            {"name": "List-Unsubscribe", "value": link},
        ]
        assert post(json.dumps(record))["proven"] is proven
    with hooks.sessions() as s:
        assert [(r.email, r.kind) for r in recent_events(s, proven=True, kind="soft")] == [("val@example.com", "soft")]
    assert unproven(hooks.sessions) == [
        ("tam@example.com", "complaint"),
        ("uma@example.com", "hard"),
        ("tam@example.com", "soft"),
    ]


def test_an_ses_notification_older_than_the_max_age_is_refused_as_a_replay(hooks, signing, caplog):  # noqa: F811
    wes = sent_issue(hooks.sessions, ["wes@example.com"])["wes@example.com"]
    source = make_return_path(RETURN_PATH, wes.delivery_id, KEY)
    message = ses_bounce("wes@example.com", "Permanent", source=source)
    old = sns(signing[0], "Notification", message, published=datetime.now(UTC) - timedelta(hours=2))
    with caplog.at_level(logging.WARNING, logger="newsletter.webhooks"):
        response = hooks.client().post("/webhooks/ses", json=old)
    assert response.status_code == 403, response.text
    error = response.json()["error"]["message"]
    assert "NEWSLETTER_SES_MAX_AGE" in error and "replay" in error and old["Timestamp"] in error, error
    assert any("refused an SNS message" in r.getMessage() and "replay" in r.getMessage() for r in caplog.records)
    assert events(hooks.sessions) == [] and suppression(hooks.sessions, "wes@example.com") is None

    # A tampered Timestamp breaks the signature: the age is the one SNS signed.
    fresh_looking = dict(old, Timestamp=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z"))
    assert hooks.client().post("/webhooks/ses", json=fresh_looking).status_code == 403
    assert events(hooks.sessions) == []
    # Within the age (default one hour) it is taken; a longer NEWSLETTER_SES_MAX_AGE takes the old one too.
    recent = sns(signing[0], "Notification", message, published=datetime.now(UTC) - timedelta(minutes=50))
    assert hooks.client().post("/webhooks/ses", json=recent).json()["events"][0]["suppressed"] == "hard_bounce"
    assert hooks.client(NEWSLETTER_SES_MAX_AGE="10800").post("/webhooks/ses", json=old).status_code == 200
    shorter = hooks.client(NEWSLETTER_SES_MAX_AGE="60")
    assert (
        shorter.post(
            "/webhooks/ses",
            json=sns(signing[0], "Notification", message, published=datetime.now(UTC) - timedelta(minutes=2)),
        ).status_code
        == 403
    )
    # A subscription confirmation is no event: its age does not matter.
    confirm = sns(signing[0], "SubscriptionConfirmation", "subscribe", published=datetime.now(UTC) - timedelta(days=2))
    assert shorter.post("/webhooks/ses", json=confirm).status_code == 200


def test_ses_max_age_setting():
    base = {"NEWSLETTER_VAR_DIR": "/tmp/unused", "NEWSLETTER_SECRET_KEY": KEY}
    assert Settings.from_environ(base).ses_max_age == 3600
    assert Settings.from_environ({**base, "NEWSLETTER_SES_MAX_AGE": "900"}).ses_max_age == 900
    for bad in ("0", "-5", "an hour"):
        with pytest.raises(ConfigError, match="NEWSLETTER_SES_MAX_AGE"):
            Settings.from_environ({**base, "NEWSLETTER_SES_MAX_AGE": bad})


# --- the admin's Bounces page ----------------------------------------------------------------------


def test_the_admin_bounces_page_lists_proven_and_unproven_events_for_admins_only(admin):  # noqa: F811
    with db.transaction(admin.sessions) as s:
        record_bounce(s, email="reader1@example.com", kind="hard", source="smtp", detail="forged 5.1.1 <x@y>", **LIMITS)
        record_bounce(
            s,
            email="reader2@example.com",
            kind="complaint",
            source="ses",
            detail="abuse report",
            proof="a signed unsubscribe link of ours made for that address",
            **LIMITS,
        )
    client = admin.logged_in()
    page = client.get("/admin/bounces")
    assert page.status_code == 200, page.text
    assert 'href="/admin/bounces" aria-current="page"' in page.text  # in the navigation
    assert "reader1@example.com" in page.text and "reader2@example.com" in page.text
    assert page.text.count(">unproven</span>") == 1 and page.text.count(">proven</span>") == 1
    assert "forged 5.1.1 &lt;x@y&gt;" in page.text  # strangers' text is escaped
    only = client.get("/admin/bounces?proof=unproven")
    assert "reader1@example.com" in only.text and "reader2@example.com" not in only.text
    by_kind = client.get("/admin/bounces?kind=complaint&email=Reader2@Example.com")
    assert "reader2@example.com" in by_kind.text and "reader1@example.com" not in by_kind.text
    bad = client.get("/admin/bounces?email=not+an+address")
    assert bad.status_code == 400 and "invalid email address" in bad.text.lower()
    assert client.get("/admin/bounces?kind=bounced").status_code == 400
    # Nothing was acted on by the unproven one.
    with admin.sessions() as s:
        assert (
            s.scalar(select(Subscription.status).join(Subscriber).where(Subscriber.email == "reader1@example.com"))
            == "confirmed"
        )

    editor = admin.logged_in("eddie")
    assert 'href="/admin/bounces"' not in editor.get("/admin").text
    refused = editor.get("/admin/bounces")
    assert refused.status_code == 403 and "editor role may not do this" in refused.text


# --- migration 0010 -----------------------------------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_database_url(request: pytest.FixtureRequest, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'walk.db'}"
        return
    yield from throwaway_postgres_database("newsletter_migrate")


def test_0010_old_events_count_as_proven_and_a_downgrade_drops_only_the_unproven(empty_database_url):
    engine = db.make_engine(empty_database_url)
    try:
        db.upgrade(engine)
        sessions = db.session_factory(engine)
        ann = sent_issue(sessions, ["ann@example.com"])["ann@example.com"]
        with db.transaction(sessions) as s:
            record_bounce(
                s, email=None, delivery_id=ann.delivery_id, kind="hard", source="smtp", detail="real", **LIMITS
            )
            record_bounce(s, email="eve@example.com", kind="complaint", source="smtp", detail="forged", **LIMITS)

        _downgrade(engine, "0009")
        assert "proven" not in {c["name"] for c in inspect(engine).get_columns("bounce_events")}
        with engine.begin() as conn:  # what the old code stored: every event acted on
            assert [tuple(r) for r in conn.execute(text("SELECT email, detail FROM bounce_events"))] == [
                ("ann@example.com", "real")
            ]
            conn.execute(
                text(
                    "INSERT INTO bounce_events (email, kind, source, detail, created_at) "
                    "VALUES ('old@example.com', 'soft', 'ses', 'from before', CURRENT_TIMESTAMP)"
                )
            )

        db.upgrade(engine)
        assert db.schema_is_current(engine)
        with engine.connect() as conn:
            rows = conn.execute(select(BounceEvent.email, BounceEvent.proven).order_by(BounceEvent.id)).all()
            assert [(email, bool(proven)) for email, proven in rows] == [
                ("ann@example.com", True),
                ("old@example.com", True),
            ]
            diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
            if engine.dialect.name == "sqlite":
                assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert diff == []
        [foreign_key] = inspect(engine).get_foreign_keys("bounce_events")
        assert foreign_key["referred_table"] == "deliveries" and foreign_key["options"].get("ondelete") == "SET NULL"
    finally:
        engine.dispose()
