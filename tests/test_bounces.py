"""subscribers.bounces: what a bounce, complaint or unsubscribe event does, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select

from newsletter.errors import InvalidInput, NotFound
from newsletter.store import db
from newsletter.store.models import Delivery, utcnow
from subscribers.bounces import find_delivery, recent_events, record_bounce
from subscribers.suppressions import suppress
from tests.bouncekit import delivery, events, sent_issue, subscription_status, suppression

LIMITS: dict[str, Any] = {"soft_limit": 3, "soft_days": 30}
# What a caller found in a report without a delivery (subscribers.bounces.find_proof); a delivery is proof itself.
SIGNED = "a signed unsubscribe link of ours made for that address"


def record(sessions, **kwargs):
    kwargs.setdefault("source", "smtp")
    kwargs.setdefault("detail", "")
    with db.transaction(sessions) as s:
        return record_bounce(s, **kwargs, **LIMITS)


def test_a_hard_bounce_marks_the_delivery_and_suppresses_at_once_and_a_repeat_changes_nothing(sessions):
    sent = sent_issue(sessions, ["ann@example.com", "bob@example.com"])
    ann = sent["ann@example.com"]
    outcome = record(
        sessions, email=None, delivery_id=ann.delivery_id, kind="hard", detail="failed 5.1.1: user unknown"
    )
    assert (outcome.email, outcome.delivery_bounced, outcome.suppressed, outcome.repeated) == (
        "ann@example.com",
        True,
        "hard_bounce",
        False,
    )
    row = delivery(sessions, ann.delivery_id)
    assert row.status == "bounced" and row.bounced_at is not None
    assert row.smtp_reply == "2.0.0 OK: queued as 4Yc3" and row.smtp_code == 250  # what the server said when it took it
    assert suppression(sessions, "ann@example.com") == "hard_bounce"
    assert suppression(sessions, "bob@example.com") is None
    assert delivery(sessions, sent["bob@example.com"].delivery_id).status == "sent"

    again = record(sessions, email=None, delivery_id=ann.delivery_id, kind="hard", detail="another copy of the DSN")
    assert again.repeated and again.event_id is None
    assert events(sessions) == [("ann@example.com", "hard", ann.delivery_id)]


def test_soft_bounces_suppress_only_at_the_limit_within_the_window(sessions):
    sends = [sent_issue(sessions, ["carol@example.com"])["carol@example.com"] for _ in range(4)]
    now = utcnow()
    # One soft bounce long ago falls outside the 30-day window and does not count.
    old = record(sessions, email=None, delivery_id=sends[0].delivery_id, kind="soft", now=now - timedelta(days=45))
    assert old.soft_count == 1 and old.suppressed is None
    first = record(sessions, email=None, delivery_id=sends[1].delivery_id, kind="soft", now=now - timedelta(days=10))
    assert first.soft_count == 1 and first.suppressed is None
    # The same failure reported again for the same delivery is a repeat, not a new bounce.
    repeat = record(sessions, email=None, delivery_id=sends[1].delivery_id, kind="soft", now=now - timedelta(days=9))
    assert repeat.repeated
    second = record(sessions, email=None, delivery_id=sends[2].delivery_id, kind="soft", now=now - timedelta(days=1))
    assert second.soft_count == 2 and suppression(sessions, "carol@example.com") is None
    third = record(
        sessions, email=None, delivery_id=sends[3].delivery_id, kind="soft", detail="452 4.2.2 mailbox full", now=now
    )
    assert third.soft_count == 3 and third.suppressed == "soft_bounce"
    assert suppression(sessions, "carol@example.com") == "soft_bounce"
    assert all(delivery(sessions, s.delivery_id).status == "bounced" for s in sends)


def test_delay_warnings_are_kept_but_bounce_nothing_count_nothing_and_suppress_nothing(sessions):
    sends = [sent_issue(sessions, ["pat@example.com"])["pat@example.com"] for _ in range(4)]
    now = utcnow()
    for number, sent in enumerate(sends):  # more warnings than the soft limit, each about another message
        outcome = record(
            sessions,
            email=None,
            delivery_id=sent.delivery_id,
            kind="delayed",
            detail="delayed 4.2.2",
            now=now - timedelta(hours=4 - number),
        )
        assert (outcome.kind, outcome.repeated, outcome.delivery_bounced, outcome.suppressed, outcome.soft_count) == (
            "delayed",
            False,
            False,
            None,
            None,
        )
        assert outcome.event_id is not None
        assert outcome.summary() == (
            f"delay warning pat@example.com (delivery {sent.delivery_id}): recorded only (the sending server is still trying)"
        )
    again = record(
        sessions, email=None, delivery_id=sends[0].delivery_id, kind="delayed", detail="delayed again", now=now
    )
    assert again.repeated and again.event_id is None
    assert all(delivery(sessions, s.delivery_id).status == "sent" for s in sends)
    assert delivery(sessions, sends[0].delivery_id).bounced_at is None
    assert suppression(sessions, "pat@example.com") is None
    assert subscription_status(sessions, "pat@example.com")[0] == "confirmed"
    # Without a delivery, the same warning within a day is a repeat too.
    assert not record(sessions, email="quin@example.com", kind="delayed", detail="retrying (report <a@x>)").repeated
    assert record(sessions, email="quin@example.com", kind="delayed", detail="retrying (report <a@x>)").repeated

    # When the server gives up, its failure is the bounce, and only failures are counted.
    first = record(sessions, email=None, delivery_id=sends[0].delivery_id, kind="soft", detail="failed 4.2.2", now=now)
    assert (first.delivery_bounced, first.soft_count, first.suppressed) == (True, 1, None)
    assert delivery(sessions, sends[0].delivery_id).status == "bounced"
    # A warning that arrives after a bounce (mail servers are not in a hurry) leaves the delivery bounced.
    fresh = sent_issue(sessions, ["pat@example.com"])["pat@example.com"]
    assert record(sessions, email=None, delivery_id=fresh.delivery_id, kind="soft", now=now).soft_count == 2
    late = record(sessions, email=None, delivery_id=fresh.delivery_id, kind="delayed", detail="late", now=now)
    assert not late.repeated and not late.delivery_bounced
    assert delivery(sessions, fresh.delivery_id).status == "bounced"
    assert suppression(sessions, "pat@example.com") is None
    with sessions() as s:
        assert [r.kind for r in recent_events(s, kind="delayed", email="pat@example.com")] == ["delayed"] * 5


def test_a_hard_bounce_after_a_soft_suppression_makes_it_hard(sessions):
    sent = sent_issue(sessions, ["dan@example.com"])["dan@example.com"]
    with db.transaction(sessions) as s:
        suppress(s, "dan@example.com", reason="soft_bounce")
    outcome = record(sessions, email=None, delivery_id=sent.delivery_id, kind="hard")
    assert outcome.suppressed == "hard_bounce"
    assert suppression(sessions, "dan@example.com") == "hard_bounce"
    # An admin's suppression is never replaced.
    with db.transaction(sessions) as s:
        suppress(s, "erin@example.com", reason="admin")
    assert record(sessions, email="erin@example.com", kind="hard", proof=SIGNED).suppressed is None
    assert suppression(sessions, "erin@example.com") == "admin"


def test_a_complaint_leaves_the_deliverys_list_only_and_suppresses(sessions):
    weekly = sent_issue(sessions, ["fay@example.com"], slug="weekly")["fay@example.com"]
    sent_issue(sessions, ["fay@example.com"], slug="daily")
    outcome = record(sessions, email=None, delivery_id=weekly.delivery_id, kind="complaint", detail="abuse report")
    assert outcome.unsubscribed == ("weekly",) and outcome.suppressed == "complaint"
    assert subscription_status(sessions, "fay@example.com", "weekly") == ("unsubscribed", "complaint (marked as spam)")
    assert subscription_status(sessions, "fay@example.com", "daily")[0] == "confirmed"
    assert suppression(sessions, "fay@example.com") == "complaint"
    assert delivery(sessions, weekly.delivery_id).status == "sent"  # it was delivered: a complaint is no bounce


def test_a_proven_complaint_without_a_delivery_or_list_leaves_every_list(sessions):
    sent_issue(sessions, ["gus@example.com"], slug="weekly")
    sent_issue(sessions, ["gus@example.com"], slug="daily")
    outcome = record(
        sessions, email="Gus@Example.com", kind="complaint", source="webhook", detail="abuse", proof=SIGNED
    )
    assert outcome.unsubscribed == ("daily", "weekly")
    assert subscription_status(sessions, "gus@example.com", "daily")[0] == "unsubscribed"
    assert suppression(sessions, "gus@example.com") == "complaint"


def test_an_unsubscribe_event_ends_that_list_only_and_suppresses_nothing(sessions):
    weekly = sent_issue(sessions, ["hal@example.com"], slug="weekly")["hal@example.com"]
    sent_issue(sessions, ["hal@example.com"], slug="daily")
    mailto = "its List-Unsubscribe mailto token"
    outcome = record(
        sessions, email="hal@example.com", kind="unsubscribe", list_id=weekly.list_id, detail="mailto", proof=mailto
    )
    assert outcome.unsubscribed == ("weekly",) and outcome.suppressed is None
    assert subscription_status(sessions, "hal@example.com", "weekly") == (
        "unsubscribed",
        "unsubscribe email (List-Unsubscribe mailto)",
    )
    assert subscription_status(sessions, "hal@example.com", "daily")[0] == "confirmed"
    assert suppression(sessions, "hal@example.com") is None
    # The same request mailed twice the same day is stored once.
    assert record(
        sessions, email="hal@example.com", kind="unsubscribe", list_id=weekly.list_id, detail="mailto", proof=mailto
    ).repeated


def test_events_without_a_delivery_are_repeats_only_with_the_same_detail_within_a_day(sessions):
    now = utcnow()
    record(
        sessions,
        email="ivy@example.com",
        kind="soft",
        detail="mailbox full (report <a@x>)",
        now=now - timedelta(days=3),
        proof=SIGNED,
    )
    assert (
        record(
            sessions, email="ivy@example.com", kind="soft", detail="mailbox full (report <b@x>)", now=now, proof=SIGNED
        ).soft_count
        == 2
    )
    assert record(
        sessions, email="ivy@example.com", kind="soft", detail="mailbox full (report <b@x>)", now=now, proof=SIGNED
    ).repeated
    later = record(
        sessions, email="ivy@example.com", kind="soft", detail="mailbox full (report <a@x>)", now=now, proof=SIGNED
    )
    assert later.soft_count == 3 and later.suppressed == "soft_bounce"


def test_bad_events_are_refused_and_store_nothing(sessions):
    with pytest.raises(InvalidInput) as exc:
        record(sessions, email="not an address", kind="hard")
    assert "invalid email address" in str(exc.value)
    with pytest.raises(InvalidInput, match="unknown kind"):
        record(sessions, email="ann@example.com", kind="bounce")
    with pytest.raises(InvalidInput, match="needs an address or a delivery"):
        record(sessions, email=None, kind="hard")
    with pytest.raises(NotFound):
        record(sessions, email=None, delivery_id=999999, kind="hard")
    assert events(sessions) == []


def test_find_delivery_needs_the_stored_message_id_and_the_same_address(sessions):
    sent = sent_issue(sessions, ["jo@example.com", "kim@example.com"])
    jo, kim = sent["jo@example.com"], sent["kim@example.com"]
    with sessions() as s:
        assert find_delivery(s, jo.message_id, "jo@example.com") == jo.delivery_id
        assert find_delivery(s, jo.message_id.strip("<>"), "JO@example.com") == jo.delivery_id
        assert find_delivery(s, jo.message_id) == jo.delivery_id
        # Jo's Message-ID with Kim's address, Kim's delivery id with another send's tag, or garbage: no one's delivery.
        assert find_delivery(s, jo.message_id, "kim@example.com") is None
        assert find_delivery(s, f"<{kim.delivery_id}.99.6b0a7023@example.org>", "kim@example.com") is None
        assert find_delivery(s, "<20261127.abc@elsewhere.example>", None) is None
        assert find_delivery(s, "no angle brackets or digits", None) is None
        assert find_delivery(s, None, "jo@example.com") is None
        assert s.scalar(select(Delivery.message_id).where(Delivery.id == kim.delivery_id)) == kim.message_id


def test_recent_events_newest_first_with_filters(sessions):
    sent = sent_issue(sessions, ["lou@example.com"])["lou@example.com"]
    now = utcnow()
    record(sessions, email="max@example.com", kind="soft", detail="one", now=now - timedelta(hours=2))
    record(sessions, email=None, delivery_id=sent.delivery_id, kind="hard", detail="two", now=now - timedelta(hours=1))
    record(sessions, email="max@example.com", kind="complaint", source="ses", detail="three", now=now)
    with sessions() as s:
        rows = recent_events(s)
        assert [r.detail for r in rows] == ["three", "two", "one"]
        assert rows[1].send_id is not None and rows[1].delivery_id == sent.delivery_id and rows[0].source == "ses"
        assert [r.detail for r in recent_events(s, kind="soft")] == ["one"]
        assert [r.detail for r in recent_events(s, email="MAX@example.com")] == ["three", "one"]
        assert len(recent_events(s, limit=1)) == 1
        with pytest.raises(InvalidInput):
            recent_events(s, kind="bounced")
