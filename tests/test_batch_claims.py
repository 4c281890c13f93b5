"""Claims on batches (batch_claims, migration 0013): a row is held by at most one live claim, on SQLite and PostgreSQL.

A worker's hold on a batch is one row naming the id range, not a mark on each delivery row. These tests drive
the recipient store directly, as a worker's batch does, with overlapping ranges, expired claims, deferrals and
processes that died.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from newsletter.delivery import sending
from newsletter.delivery.ports import Outcome
from newsletter.delivery.recipient_store import SqlRecipientStore, release_dead_claims
from newsletter.store.db import transaction
from newsletter.store.models import BatchClaim, Delivery, Issue
from subscribers import lists, subscriptions
from tests.bouncekit import RENDER


@pytest.fixture
def send(sessions: sessionmaker[Session]) -> tuple[int, list[int]]:
    """A send to ten confirmed subscribers; returns its id and its delivery ids in order."""
    with transaction(sessions) as session:
        lists.create_list(session, "weekly", name="The Weekly", from_email="news@example.org")
        for i in range(10):
            subscriptions.add_subscriber(session, "weekly", f"reader{i}@example.com", confirmed=True)
        issue = Issue(list_id=lists.get_list(session, "weekly").id, subject="Hello", body_markdown="Hi")
        session.add(issue)
        session.flush()
        started, _ = sending.start_send(session, issue.id, RENDER, batch_size=100)
        send_id = started.id
    with sessions() as session:
        ids = session.scalars(select(Delivery.id).where(Delivery.send_id == send_id).order_by(Delivery.id)).all()
    return send_id, list(ids)


def taken_ids(store: SqlRecipientStore, claim_seconds: float = 30) -> list[int]:
    taken = store.take(claim_seconds)
    assert taken is not None
    return [row.delivery_id for row in taken.recipients]


def claims(sessions: sessionmaker[Session]) -> list[tuple[int, int, str]]:
    with sessions() as session:
        query = select(BatchClaim.first_id, BatchClaim.last_id, BatchClaim.claimed_by).order_by(BatchClaim.id)
        return [(first, last, holder) for first, last, holder in session.execute(query)]


def sent(store: SqlRecipientStore, ids: list[int]) -> None:
    now = datetime.now(UTC)
    store.record([Outcome(i, "sent", 250, "2.0.0 Ok", f"<{i}@x>", sent_at=now) for i in ids], [])


def test_overlapping_batches_never_take_the_same_row(sessions, send):
    send_id, ids = send
    first = SqlRecipientStore(sessions, send_id, ids[0], ids[5], me="host:1:a")
    assert taken_ids(first) == ids[:6]
    # A batch re-queued over an overlapping range (say by `sends resume`) takes only what no live claim covers.
    second = SqlRecipientStore(sessions, send_id, ids[3], ids[9], me="host:2:b")
    assert taken_ids(second) == ids[6:]
    third = SqlRecipientStore(sessions, send_id, ids[0], ids[9], me="host:3:c")
    taken = third.take(30)
    assert taken is not None and taken.recipients == [] and taken.skipped == 0
    assert claims(sessions) == [(ids[0], ids[5], "host:1:a"), (ids[3], ids[9], "host:2:b")]
    # The first sends three of its rows, then gives the batch back (its worker stopping): the three it did
    # not send are free again, but only outside the second's range, which still covers ids[3..5].
    sent(first, ids[:3])
    first.release()
    assert claims(sessions) == [(ids[3], ids[9], "host:2:b")]
    assert taken_ids(SqlRecipientStore(sessions, send_id, ids[0], ids[9], me="host:4:d")) == []
    sent(second, ids[6:])
    second.release()
    assert taken_ids(SqlRecipientStore(sessions, send_id, ids[0], ids[9], me="host:5:e")) == ids[3:6]


def test_an_expired_claim_is_taken_over_and_its_old_holder_changes_nothing(sessions, send):
    send_id, ids = send
    stale = SqlRecipientStore(sessions, send_id, ids[0], ids[9], me="host:1:a")
    assert taken_ids(stale, claim_seconds=0.05) == ids
    time.sleep(0.1)
    fresh = SqlRecipientStore(sessions, send_id, ids[0], ids[9], me="host:2:b")
    assert taken_ids(fresh) == ids
    assert claims(sessions) == [(ids[0], ids[9], "host:2:b")]  # the expired claim was removed
    # The old holder, back from a long pause, can neither defer nor renew nor release the new holder's rows.
    stale.defer(3600)
    stale.renew(3600)
    stale.release()
    with sessions() as session:
        assert session.scalar(select(func.count()).where(Delivery.next_attempt_at.is_not(None))) == 0
    assert claims(sessions) == [(ids[0], ids[9], "host:2:b")]


def test_a_deferred_batch_comes_back_when_due_and_not_before(sessions, send):
    send_id, ids = send
    store = SqlRecipientStore(sessions, send_id, ids[0], ids[9], me="host:1:a")
    assert taken_ids(store) == ids
    sent(store, ids[:4])
    store.defer(3600)  # the SMTP server went away: the rest waits an hour
    assert claims(sessions) == []
    with sessions() as session:
        assert sending.pending_batches(session, send_id, 100, due_only=True) == []
        assert sending.pending_batches(session, send_id, 100) == [(ids[4], ids[9])]
    later = SqlRecipientStore(sessions, send_id, ids[0], ids[9], me="host:2:b")
    assert taken_ids(later) == []
    assert 3500 < (later.next_due() or 0) <= 3601
    with transaction(sessions) as session:
        session.execute(update(Delivery).values(next_attempt_at=None))
    assert taken_ids(later) == ids[4:]


def test_pending_batches_leave_out_rows_a_live_claim_holds(sessions, send):
    send_id, ids = send
    store = SqlRecipientStore(sessions, send_id, ids[2], ids[4], me="host:1:a")
    assert taken_ids(store) == ids[2:5]
    with sessions() as session:
        assert sending.pending_batches(session, send_id, 100, due_only=True) == [(ids[0], ids[9])]
        # Three free rows a batch: the first spans the held range, whose rows its worker will leave alone.
        assert sending.pending_batches(session, send_id, 3, due_only=True) == [
            (ids[0], ids[5]),
            (ids[6], ids[8]),
            (ids[9], ids[9]),
        ]


def test_claims_of_dead_local_processes_are_released_and_a_finished_send_keeps_none(sessions, send):
    send_id, ids = send
    dead = SqlRecipientStore(sessions, send_id, ids[0], ids[4], me="thishost:111:a")
    alive = SqlRecipientStore(sessions, send_id, ids[5], ids[9], me="thishost:222:b")
    elsewhere = SqlRecipientStore(sessions, send_id, ids[5], ids[9], me="otherhost:111:c")
    assert taken_ids(dead) == ids[:5] and taken_ids(alive) == ids[5:] and taken_ids(elsewhere) == []
    assert release_dead_claims(sessions, "thishost", lambda pid: pid == 222) == 1
    assert claims(sessions) == [(ids[5], ids[9], "thishost:222:b")]
    again = SqlRecipientStore(sessions, send_id, ids[0], ids[9], me="thishost:333:d")
    assert taken_ids(again) == ids[:5]
    sent(again, ids[:5])
    sent(alive, ids[5:])
    again.release()
    assert again.finish_if_done() is True
    assert claims(sessions) == []  # the finished send's last claim went with it
