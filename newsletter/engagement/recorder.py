"""Recording opens and clicks at thousands a second: tracked sends read once, events written in bulk.

A click must answer at once, and a busy morning brings thousands a second, so the web app
neither reads a send's links nor writes its event in the request:

- :class:`TrackedSends` keeps each tracked send's links, tracking and reader key, read once
  and for :data:`CACHE_SECONDS` (links never change; the key only goes when the report is
  rolled up, and events for a rolled-up send are dropped when written).
- :class:`EventRecorder` buffers events and writes them from a background thread, every
  :data:`FLUSH_SECONDS` or :data:`FLUSH_AT` events, in one transaction; stopping the web app
  writes what is left. If the database cannot be reached the events wait (up to
  :data:`KEEP_AT_MOST`) and go with the next write. A web process killed outright loses the
  events of its last fraction of a second: their readers were still redirected.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import insert, select
from sqlalchemy.orm import Session, sessionmaker

from newsletter.engagement.events import reader_of
from newsletter.store.models import Delivery, EngagementEvent, Send, SendLink, SubjectTest, utcnow
from newsletter.store.states import EngagementKind, EngagementOrigin, Tracking

__all__ = ["EventRecorder", "TrackedSend", "TrackedSends"]

CACHE_SECONDS = 30.0
FLUSH_SECONDS = 0.2
FLUSH_AT = 1000
KEEP_AT_MOST = 200_000

log = logging.getLogger("newsletter.engagement")


@dataclass(frozen=True)
class TrackedSend:
    send_id: int
    tracking: Tracking
    reader_key: str | None  # None once rolled up: nothing more is counted
    urls: dict[int, str]  # position -> address
    tested: bool = False  # it has a subject test: each event keeps the variant its reader's copy had


class TrackedSends:
    """Each tracked send's links and key, read once per :data:`CACHE_SECONDS` (thread-safe)."""

    def __init__(self, sessions: sessionmaker[Session], *, seconds: float = CACHE_SECONDS) -> None:
        self.sessions, self.seconds = sessions, seconds
        self._known: dict[int, tuple[float, TrackedSend | None]] = {}
        self._lock = threading.Lock()

    def cached(self, send_id: int) -> tuple[bool, TrackedSend | None]:
        """(known, the send): known False means it must be read (:meth:`read`, in a thread)."""
        found = self._known.get(send_id)
        if found is None or time.monotonic() - found[0] > self.seconds:
            return False, None
        return True, found[1]

    def read(self, send_id: int) -> TrackedSend | None:
        """The send, if it exists and is tracked, read from the database and kept."""
        with self.sessions() as session:
            row = session.execute(select(Send.tracking, Send.reader_key).where(Send.id == send_id)).one_or_none()
            send = None
            if row is not None and row.tracking != Tracking.OFF:
                urls = dict(
                    session.execute(select(SendLink.position, SendLink.url).where(SendLink.send_id == send_id)).all()
                )
                tested = session.get(SubjectTest, send_id) is not None
                send = TrackedSend(send_id, Tracking(row.tracking), row.reader_key, urls, tested)
        with self._lock:
            if len(self._known) > 10_000:
                self._known.clear()
            self._known[send_id] = (time.monotonic(), send)
        return send


@dataclass(frozen=True)
class _Pending:
    send_id: int
    delivery_id: int
    individual: bool
    tested: bool
    reader: str
    kind: EngagementKind
    position: int | None
    origin: EngagementOrigin
    at: datetime


class EventRecorder:
    """Buffers events and writes them in bulk from a background thread (see the module)."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        *,
        every: float = FLUSH_SECONDS,
        at_most: int = FLUSH_AT,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.sessions, self.every, self.at_most, self.clock = sessions, every, at_most, clock
        self._pending: list[_Pending] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopped = False
        self._thread: threading.Thread | None = None
        self.written = 0  # events written so far (for tests and /metrics)
        self.dropped = 0  # events dropped, the oldest first, when more than KEEP_AT_MOST waited for the database

    def add(
        self,
        send: TrackedSend,
        delivery_id: int,
        kind: EngagementKind,
        *,
        machine: bool,
        position: int | None = None,
        at: datetime | None = None,
    ) -> bool:
        """Queue one open or click (made ``at``, default now); returns False when the send counts nothing (any more)."""
        if send.reader_key is None or send.tracking == Tracking.OFF:
            return False
        event = _Pending(
            send.send_id,
            delivery_id,
            send.tracking == Tracking.INDIVIDUAL,
            send.tested,
            reader_of(send.reader_key, delivery_id),
            kind,
            position,
            EngagementOrigin.MACHINE if machine else EngagementOrigin.HUMAN,
            at or self.clock(),
        )
        with self._lock:
            self._pending.append(event)
            if len(self._pending) > KEEP_AT_MOST:  # the database has been away for long: memory stays bounded
                del self._pending[: len(self._pending) - KEEP_AT_MOST]
                self.dropped += 1
            full = len(self._pending) >= self.at_most
            if self._thread is None and not self._stopped:
                self._thread = threading.Thread(target=self._run, name="engagement-recorder", daemon=True)
                self._thread.start()
        if full:
            self._wake.set()
        return True

    def flush(self) -> int:
        """Write every queued event now; returns how many were written."""
        with self._lock:
            batch, self._pending = self._pending, []
        if not batch:
            return 0
        try:
            written = self._write(batch)
        except Exception as exc:  # the database is away: keep them for the next write
            log.warning("could not record %d open(s) and click(s) yet: %s", len(batch), exc)
            with self._lock:
                kept = batch + self._pending
                self.dropped += max(0, len(kept) - KEEP_AT_MOST)
                self._pending = kept[-KEEP_AT_MOST:]
            return 0
        self.written += written
        return written

    def close(self) -> None:
        """Stop the thread and write what is left (the web app's shutdown)."""
        self._stopped = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(10)
        self.flush()

    def _run(self) -> None:
        while not self._stopped:
            self._wake.wait(self.every)
            self._wake.clear()
            self.flush()

    def _write(self, batch: list[_Pending]) -> int:
        with self.sessions() as session, session.begin():
            live = set(
                session.scalars(
                    select(Send.id).where(Send.id.in_({e.send_id for e in batch}), Send.reader_key.is_not(None))
                )
            )
            batch = [e for e in batch if e.send_id in live]  # a send rolled up meanwhile counts nothing more
            individual = [e.delivery_id for e in batch if e.individual]
            subscribers = (
                dict(
                    session.execute(
                        select(Delivery.id, Delivery.subscriber_id).where(Delivery.id.in_(individual))
                    ).all()
                )
                if individual
                else {}
            )
            tested = {(e.send_id, e.delivery_id) for e in batch if e.tested}
            variants: dict[tuple[int, int], int | None] = (
                {
                    (send_id, delivery_id): variant
                    for delivery_id, send_id, variant in session.execute(
                        select(Delivery.id, Delivery.send_id, Delivery.variant).where(
                            Delivery.id.in_({d for _, d in tested})
                        )
                    )
                }
                if tested
                else {}
            )
            if batch:
                session.execute(
                    insert(EngagementEvent),
                    [
                        {
                            "send_id": e.send_id,
                            "kind": e.kind,
                            "position": e.position,
                            "origin": e.origin,
                            "reader": e.reader,
                            "subscriber_id": subscribers.get(e.delivery_id) if e.individual else None,
                            "at": e.at,
                            "variant": variants.get((e.send_id, e.delivery_id)) if e.tested else None,
                        }
                        for e in batch
                    ],
                )
        return len(batch)
