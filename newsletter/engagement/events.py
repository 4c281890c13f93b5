"""Recording a tracked send's opens and clicks: one row each, keyed to a reader, never to an address.

``reader`` is the first 22 characters of the base64 HMAC-SHA256 of the delivery's id under the
send's own random ``reader_key``: two events of one reader share it, so they count once, but it
names no one without that key. When the send's report is rolled up
(:mod:`newsletter.engagement.rollup`) the key is deleted and anonymous events with it: what stays
is hourly counts. ``individual`` tracking also keeps the subscriber's id on each event, for the
retention period (``NEWSLETTER_TRACKING_RETENTION_DAYS``) or until the subscriber is erased.

Nothing here classifies bursts of clicks: :mod:`newsletter.engagement.report` does, from the
events themselves, so two scanner requests racing in parallel are still seen as one burst.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, insert, select
from sqlalchemy.orm import Session

from newsletter.store.db import rowcount
from newsletter.store.models import Delivery, EngagementEvent, Send, SendLink, utcnow
from newsletter.store.states import EngagementKind, EngagementOrigin, Tracking
from subscribers.tokens import TokenSigner

__all__ = [
    "ClickTarget",
    "Tracked",
    "erase_subscriber_events",
    "new_reader_key",
    "reader_of",
    "record",
    "resolve_click",
    "resolve_open",
]


def new_reader_key() -> str:
    """A send's reader key: random, stored on the send until its report is rolled up."""
    return secrets.token_hex(32)


def reader_of(reader_key: str, delivery_id: int) -> str:
    digest = hmac.new(bytes.fromhex(reader_key), str(delivery_id).encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode()[:22]


@dataclass(frozen=True)
class Tracked:
    """A request that named a delivery of a tracked send: what to record it under."""

    send_id: int
    delivery_id: int
    tracking: Tracking
    reader_key: str | None  # None once the report is rolled up: nothing more is recorded


@dataclass(frozen=True)
class ClickTarget(Tracked):
    position: int
    url: str


def resolve_click(session: Session, signer: TokenSigner, send_id: int, position: int, token: str) -> ClickTarget | None:
    """Where a tracked link goes, if its token is one of the send's and the send has that link; else None."""
    delivery_id = signer.tracked_delivery(send_id, token)
    if delivery_id is None:
        return None
    row = session.execute(
        select(SendLink.url, Send.tracking, Send.reader_key)
        .join(Send, Send.id == SendLink.send_id)
        .where(SendLink.send_id == send_id, SendLink.position == position)
    ).one_or_none()
    if row is None:
        return None
    return ClickTarget(send_id, delivery_id, row.tracking, row.reader_key, position, row.url)


def resolve_open(session: Session, signer: TokenSigner, send_id: int, token: str) -> Tracked | None:
    """The delivery an open image names, if its token is one of a tracked send's; else None."""
    delivery_id = signer.tracked_delivery(send_id, token)
    if delivery_id is None:
        return None
    row = session.execute(select(Send.tracking, Send.reader_key).where(Send.id == send_id)).one_or_none()
    if row is None or row.tracking == Tracking.OFF:
        return None
    return Tracked(send_id, delivery_id, row.tracking, row.reader_key)


def record(
    session: Session,
    tracked: Tracked,
    kind: EngagementKind,
    *,
    machine: bool,
    position: int | None = None,
    now: datetime | None = None,
) -> bool:
    """Store one open or click; returns whether it was recorded (not after the send's report was rolled up)."""
    if tracked.reader_key is None or tracked.tracking == Tracking.OFF:
        return False
    subscriber_id = None
    if tracked.tracking == Tracking.INDIVIDUAL:
        subscriber_id = session.scalar(
            select(Delivery.subscriber_id).where(
                Delivery.id == tracked.delivery_id, Delivery.send_id == tracked.send_id
            )
        )
    session.execute(
        insert(EngagementEvent).values(
            send_id=tracked.send_id,
            kind=kind,
            position=position,
            origin=EngagementOrigin.MACHINE if machine else EngagementOrigin.HUMAN,
            reader=reader_of(tracked.reader_key, tracked.delivery_id),
            subscriber_id=subscriber_id,
            at=now or utcnow(),
        )
    )
    return True


def erase_subscriber_events(session: Session, subscriber_id: int) -> int:
    """Delete an erased subscriber's individual events; returns how many there were."""
    return rowcount(session.execute(delete(EngagementEvent).where(EngagementEvent.subscriber_id == subscriber_id)))
