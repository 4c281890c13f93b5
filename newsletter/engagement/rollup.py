"""Closing a tracked send's report window: its events become hourly counts, and its readers can no longer be told apart.

When a send is older than the report window (``NEWSLETTER_REPORT_WINDOW_DAYS``, from its
start), :func:`roll_up` tallies its events (bursts of clicks told apart as the report does),
writes the tally as ``engagement_counts`` rows, deletes its anonymous events, clears the reader
hash of the individual ones it keeps, and deletes the send's ``reader_key``: from then on its
report reads the counts, the same figures as before, and nothing ties them to anyone. A send with a
subject test keeps each subject's figures on the test first (:mod:`newsletter.engagement.variant_figures`). Later
opens and clicks of that send still work (the links still redirect) but are not counted.

:func:`expire_individual_events` deletes individual events past the retention period
(``NEWSLETTER_TRACKING_RETENTION_DAYS``). The scheduler's tick runs both, hourly.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import delete, insert, select, update
from sqlalchemy.orm import Session

from newsletter.engagement import variant_figures
from newsletter.engagement.tally import tally_events
from newsletter.store.db import rowcount
from newsletter.store.models import EngagementCount, EngagementEvent, Send, utcnow
from newsletter.store.states import Tracking

__all__ = ["close_windows", "expire_individual_events", "roll_up", "roll_up_due"]


def roll_up(session: Session, send: Send, now: datetime | None = None) -> int:
    """Roll up one send's events (see the module); returns how many count rows it wrote."""
    if send.report_rolled_up_at is not None:
        return 0
    tally = tally_events(session, send.id)
    rows = [
        {
            "send_id": send.id,
            "kind": kind,
            "position": position,
            "origin": origin,
            "hour": hour,
            "unique_count": tally.unique.get((kind, position, origin, hour), 0),
            "total": tally.total[(kind, position, origin, hour)],
        }
        for kind, position, origin, hour in tally.cells()
    ]
    if rows:
        session.execute(insert(EngagementCount), rows)
    variant_figures.keep(session, send.id, send.subject)  # a subject test's figures per subject stay on the test
    session.execute(
        delete(EngagementEvent).where(EngagementEvent.send_id == send.id, EngagementEvent.subscriber_id.is_(None))
    )
    session.execute(update(EngagementEvent).where(EngagementEvent.send_id == send.id).values(reader=None))
    send.reader_key = None
    send.report_rolled_up_at = now or utcnow()
    return len(rows)


def roll_up_due(session: Session, window_days: float, now: datetime | None = None) -> list[int]:
    """Roll up every tracked send that started more than ``window_days`` ago; returns their ids."""
    now = now or utcnow()
    due = session.scalars(
        select(Send)
        .where(
            Send.tracking != Tracking.OFF,
            Send.report_rolled_up_at.is_(None),
            Send.started_at < now - timedelta(days=window_days),
        )
        .order_by(Send.id)
    ).all()
    for send in due:
        roll_up(session, send, now)
    return [send.id for send in due]


def expire_individual_events(session: Session, retention_days: float, now: datetime | None = None) -> int:
    """Delete events older than the retention period whose send was rolled up (so its counts keep them);
    returns how many. (The tick rolls sends up within the retention period, whatever the window.)"""
    cutoff = (now or utcnow()) - timedelta(days=retention_days)
    return rowcount(
        session.execute(delete(EngagementEvent).where(EngagementEvent.at < cutoff, EngagementEvent.reader.is_(None)))
    )


def close_windows(session: Session, window_days: float, retention_days: float, now: datetime | None = None) -> str:
    """Roll up the sends due and expire old individual events: the scheduler's hourly chore. Says what it did."""
    rolled = roll_up_due(session, min(window_days, retention_days), now)
    expired = expire_individual_events(session, retention_days, now)
    return f"rolled up the reports of {len(rolled)} send(s), deleted {expired} expired individual event(s)"
