"""Engagement records on both databases: individual events name their subscriber until erasure, a roll-up
keeps every figure while forgetting who did what, and old individual events expire."""

from __future__ import annotations

from dataclasses import asdict
from datetime import timedelta

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from newsletter.engagement import rollup
from newsletter.engagement.events import reader_of
from newsletter.engagement.recorder import EventRecorder, TrackedSends
from newsletter.engagement.report import send_report
from newsletter.store import db
from newsletter.store.models import EngagementCount, EngagementEvent, Send, SendLink, utcnow
from newsletter.store.states import EngagementKind
from subscribers.directory import delete_subscriber
from subscribers.lists import create_list
from subscribers.tokens import TokenSigner
from tests.bouncekit import KEY, sent_issue

SIGNER = TokenSigner(KEY)
OPEN, CLICK = EngagementKind.OPEN, EngagementKind.CLICK


def _tracked_send(sessions: sessionmaker[Session], tracking: str) -> tuple[int, dict]:
    with db.transaction(sessions) as s:
        create_list(s, "weekly", name="The Weekly", from_email="news@example.org", tracking=tracking)
    sent = sent_issue(sessions, ["ann@example.com", "bob@example.com", "cy@example.com"])
    with sessions() as s:
        send_id = s.scalar(select(func.max(Send.id)))
    assert send_id is not None
    return send_id, sent


def _record(sessions, send_id: int, delivery_id: int, kind, *, position=None, machine=False, at=None) -> bool:
    """One open or click as the web app records it (a token checked, the send read fresh, written at once)."""
    assert SIGNER.tracked_delivery(send_id, SIGNER.tracking_token(send_id, delivery_id)) == delivery_id
    send = TrackedSends(sessions, seconds=0).read(send_id)
    assert send is not None
    recorder = EventRecorder(sessions)
    recorder.add(send, delivery_id, kind, machine=machine, position=position, at=at)
    return recorder.flush() == 1


def _click(sessions, send_id: int, delivery_id: int, position: int, *, machine=False, at=None) -> bool:
    return _record(sessions, send_id, delivery_id, CLICK, position=position, machine=machine, at=at)


def _open(sessions, send_id: int, delivery_id: int, *, machine=False, at=None) -> bool:
    return _record(sessions, send_id, delivery_id, OPEN, machine=machine, at=at)


def _figures(report) -> dict:
    data = asdict(report)
    del data["rolled_up"]
    return data


def test_individual_events_name_their_subscriber_until_erasure_and_the_figures_stay(sessions):
    send_id, sent = _tracked_send(sessions, "individual")
    ann, bob = sent["ann@example.com"], sent["bob@example.com"]
    with sessions() as s:
        assert (s.scalar(select(func.count()).select_from(SendLink).where(SendLink.send_id == send_id)) or 0) >= 2
    assert _open(sessions, send_id, ann.delivery_id) and _click(sessions, send_id, ann.delivery_id, 1)
    assert _open(sessions, send_id, bob.delivery_id, machine=True)
    with sessions() as s:
        named = s.execute(
            select(EngagementEvent.subscriber_id, EngagementEvent.kind).order_by(EngagementEvent.id)
        ).all()
        before = send_report(s, send_id)
    assert all(subscriber_id is not None for subscriber_id, _ in named) and len(named) == 3
    assert (before.opens.unique, before.opens.machine_unique, before.clicks.unique) == (1, 1, 1)
    with db.transaction(sessions) as s:
        ann_id = s.scalar(select(EngagementEvent.subscriber_id).where(EngagementEvent.kind == CLICK))
        assert ann_id is not None
        delete_subscriber(s, ann_id, erase=True)
    with sessions() as s:
        assert s.scalar(select(func.count()).where(EngagementEvent.subscriber_id == ann_id)) == 0
        assert _figures(send_report(s, send_id)) == _figures(before)  # unlinked, still counted


def test_anonymous_events_name_no_subscriber(sessions):
    send_id, sent = _tracked_send(sessions, "anonymous")
    ann = sent["ann@example.com"].delivery_id
    assert _open(sessions, send_id, ann)
    with sessions() as s:
        (row,) = s.execute(select(EngagementEvent.subscriber_id, EngagementEvent.reader)).all()
        key = s.scalar(select(Send.reader_key).where(Send.id == send_id))
    assert row.subscriber_id is None
    assert key is not None and row.reader == reader_of(key, ann)  # the send's own random key tells readers apart
    assert row.reader != reader_of("00" * 32, ann)  # and without it the value says nothing of the delivery


def test_a_roll_up_keeps_the_figures_and_forgets_who_did_what(sessions):
    send_id, sent = _tracked_send(sessions, "anonymous")
    ann, bob, cy = (sent[f"{n}@example.com"].delivery_id for n in ("ann", "bob", "cy"))
    started = utcnow() - timedelta(days=31)
    with db.transaction(sessions) as s:
        s.execute(update(Send).where(Send.id == send_id).values(started_at=started))
    for hours, delivery in ((1, ann), (1, ann), (5, bob)):
        _open(sessions, send_id, delivery, at=started + timedelta(hours=hours))
    _click(sessions, send_id, ann, 1, at=started + timedelta(hours=1))
    _click(sessions, send_id, cy, 1, at=started + timedelta(hours=2))  # a burst: both of cy's clicks are a machine's
    _click(sessions, send_id, cy, 2, at=started + timedelta(hours=2, seconds=1))
    with sessions() as s:
        before = send_report(s, send_id)
    assert (before.opens.unique, before.opens.total) == (2, 3)
    assert (before.clicks.unique, before.clicks.total, before.clicks.machine_total) == (1, 1, 2)

    with db.transaction(sessions) as s:
        assert rollup.roll_up_due(s, 60) == []  # not due yet
        assert rollup.roll_up_due(s, 30) == [send_id]
    with db.transaction(sessions) as s:
        after = send_report(s, send_id)
        assert after.rolled_up and _figures(after) == _figures(before)
        assert s.scalar(select(func.count()).select_from(EngagementEvent)) == 0  # anonymous: gone
        assert (s.scalar(select(func.count()).select_from(EngagementCount)) or 0) > 0
        assert s.scalar(select(Send.reader_key).where(Send.id == send_id)) is None
        assert rollup.roll_up_due(s, 30) == []
    # The links still redirect; nothing more is counted.
    still = TrackedSends(sessions, seconds=0).read(send_id)
    assert still is not None and still.urls[1].startswith("http") and still.reader_key is None
    assert not _click(sessions, send_id, bob, 1)


def test_individual_events_outlive_the_window_until_the_retention_period(sessions):
    send_id, sent = _tracked_send(sessions, "individual")
    started = utcnow() - timedelta(days=200)
    with db.transaction(sessions) as s:
        s.execute(update(Send).where(Send.id == send_id).values(started_at=started))
    _open(sessions, send_id, sent["ann@example.com"].delivery_id, at=started + timedelta(hours=1))
    _open(sessions, send_id, sent["bob@example.com"].delivery_id, at=utcnow() - timedelta(days=10))
    with db.transaction(sessions) as s:
        said = rollup.close_windows(s, window_days=30, retention_days=180)
    assert said == "rolled up the reports of 1 send(s), deleted 1 expired individual event(s)"
    with sessions() as s:
        kept = s.execute(select(EngagementEvent.subscriber_id, EngagementEvent.reader)).all()
        assert len(kept) == 1 and kept[0].subscriber_id is not None and kept[0].reader is None
        assert send_report(s, send_id).opens.unique == 2  # the counts keep both


def test_the_recorder_writes_in_the_background_and_keeps_events_while_the_database_is_away(sessions, tmp_path):
    import time

    from sqlalchemy import create_engine

    send_id, sent = _tracked_send(sessions, "anonymous")
    send = TrackedSends(sessions).read(send_id)
    assert send is not None
    away = sessionmaker(create_engine(f"sqlite:///{tmp_path}/missing/folder/db.sqlite"))
    recorder = EventRecorder(away, every=0.05)
    for delivery in sent.values():
        assert recorder.add(send, delivery.delivery_id, OPEN, machine=False)
    time.sleep(0.3)  # the thread tried, and failed: nothing lost
    assert recorder.written == 0
    recorder.sessions = sessions
    deadline = time.monotonic() + 10
    while recorder.written < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert recorder.written == 3
    recorder.add(send, sent["ann@example.com"].delivery_id, CLICK, machine=False, position=1)
    recorder.close()  # what is still buffered is written on the way out
    with sessions() as s:
        assert s.scalar(select(func.count()).select_from(EngagementEvent)) == 4
