"""A send's recipients in SQL: the claim on one batch, and the bulk write of its outcomes.

:class:`SqlRecipientStore` is the :class:`~newsletter.delivery.ports.RecipientStore` of one
batch (a range of delivery ids). The worker *claims* the range's pending rows that are due
(a claim expires unless renewed, so rows held by a dead worker come back), skips those who
left or were suppressed since the send started, and later writes every outcome in one
statement. Every query on held rows names the range, so it reads a batch's rows through
the primary key instead of scanning all pending rows of a large send.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, bindparam, case, exists, func, not_, or_, select, text, update
from sqlalchemy.orm import Session, sessionmaker

from newsletter.delivery.ports import Checked, Claimed, Outcome, Taken
from newsletter.store.db import insert_on_conflict_ignore, reading, rowcount
from newsletter.store.models import Delivery, Send, Subscriber, Subscription, Suppression, utcnow
from newsletter.store.states import DeliveryStatus, SendStatus, SubscriptionStatus, SuppressionReason


def worker_name() -> str:
    """Who holds a claim: host, process id and a random part (``host:1234:a1b2c3``)."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


class SqlRecipientStore:
    """The deliveries of ``send_id`` with ids in [first_id, last_id], claimed as ``me`` (a new
    :func:`worker_name` by default)."""

    def __init__(
        self, sessions: sessionmaker[Session], send_id: int, first_id: int, last_id: int, *, me: str | None = None
    ) -> None:
        self.sessions = sessions
        self._send_id = send_id
        self.first_id, self.last_id = first_id, last_id
        self.me = me or worker_name()
        self._list_id: int | None = None

    @property
    def send_id(self) -> int:
        return self._send_id

    def _in_range(self) -> tuple[Any, ...]:
        return (Delivery.send_id == self._send_id, Delivery.id.between(self.first_id, self.last_id))

    def _held(self) -> tuple[Any, ...]:
        return (*self._in_range(), Delivery.claimed_by == self.me)

    # --- claiming ------------------------------------------------------------------

    def take(self, claim_seconds: float) -> Taken | None:
        with self.sessions() as session, session.begin():
            send = session.get(Send, self._send_id)
            if send is None or send.status != SendStatus.SENDING:
                return None
            self._list_id = send.list_id
            self._claim_due(session, claim_seconds)
            rows, departed = [], []
            for delivery_id, subscriber_id, email, name, attempts, subscribed, suppressed in session.execute(
                self._held_rows()
            ):
                if subscribed is None or suppressed is not None:
                    departed.append(delivery_id)
                else:
                    rows.append(Claimed(delivery_id, subscriber_id, email, name, attempts))
            self._skip(session, departed)
            return Taken(rows, len(departed))

    def _claim_due(self, session: Session, claim_seconds: float) -> None:
        """Claim the batch's pending rows that are due and not held by a live claim."""
        now = utcnow()
        session.execute(
            update(Delivery)
            .where(
                *self._in_range(),
                Delivery.status == DeliveryStatus.PENDING,
                or_(Delivery.claim_expires.is_(None), Delivery.claim_expires < now),
                or_(Delivery.next_attempt_at.is_(None), Delivery.next_attempt_at <= now),
            )
            .values(claimed_by=self.me, claim_expires=now + timedelta(seconds=claim_seconds))
            .execution_options(synchronize_session=False)
        )

    def _held_rows(self) -> Select[*tuple[Any, ...]]:
        """The held pending rows in id order, each with its subscriber's name and two marks: the confirmed
        subscription's id (None: the subscriber left the list) and the suppression's id (not None: suppressed).

        Outer joins probed row by row through their unique keys: the cost is the batch's, whatever the
        size of the list (an ``EXISTS`` under ``OR`` made PostgreSQL hash every subscription of the list).
        """
        return (
            select(
                Delivery.id,
                Delivery.subscriber_id,
                Delivery.email,
                Subscriber.name,
                Delivery.attempts,
                Subscription.id,
                Suppression.id,
            )
            # Outer: a row whose subscriber is gone (no foreign key says it cannot be) is found and skipped.
            .outerjoin(Subscriber, Subscriber.id == Delivery.subscriber_id)
            .outerjoin(Subscription, self._confirmed_subscription())
            .outerjoin(Suppression, Suppression.email == Delivery.email)
            .where(*self._held(), Delivery.status == DeliveryStatus.PENDING)
            .order_by(Delivery.id)
        )

    def _confirmed_subscription(self) -> ColumnElement[bool]:
        return and_(
            Subscription.list_id == self._list_id,
            Subscription.subscriber_id == Delivery.subscriber_id,
            Subscription.status == SubscriptionStatus.CONFIRMED,
        )

    def _departed(self, session: Session) -> list[int]:
        """The held pending rows whose subscriber left the list or was suppressed since the send began."""
        return list(
            session.scalars(
                select(Delivery.id)
                .outerjoin(Subscription, self._confirmed_subscription())
                .outerjoin(Suppression, Suppression.email == Delivery.email)
                .where(*self._held(), Delivery.status == DeliveryStatus.PENDING)
                .where(or_(Subscription.id.is_(None), Suppression.id.is_not(None)))
            )
        )

    def _skip(self, session: Session, departed: list[int]) -> set[int]:
        """Mark these held rows skipped (their subscriber left or was suppressed); returns the ids it did."""
        if not departed:
            return set()
        return set(
            session.scalars(
                update(Delivery)
                .where(*self._held(), Delivery.status == DeliveryStatus.PENDING, Delivery.id.in_(departed))
                .values(
                    status=DeliveryStatus.SKIPPED,
                    smtp_reply="left the list or was suppressed after the send started",
                    claimed_by=None,
                    claim_expires=None,
                    updated_at=utcnow(),
                )
                .returning(Delivery.id)
                .execution_options(synchronize_session=False)
            )
        )

    def check(self) -> Checked:
        # A read (on SQLite it takes no write lock, so the checks of many workers never queue behind
        # each other's flushes); a write only when someone left, which the UPDATE checks again.
        with reading(self.sessions) as session:
            status = session.scalar(select(Send.status).where(Send.id == self._send_id))
            departed = self._departed(session) if status == SendStatus.SENDING else []
        if not departed:
            return Checked(status, set())
        with self.sessions() as session, session.begin():
            return Checked(status, self._skip(session, departed))

    def renew(self, claim_seconds: float) -> None:
        self._update_held(claim_expires=utcnow() + timedelta(seconds=claim_seconds))

    def defer(self, seconds: float) -> None:
        self._update_held(claimed_by=None, claim_expires=None, next_attempt_at=utcnow() + timedelta(seconds=seconds))

    def _update_held(self, **values: Any) -> None:
        """Change the held rows that are still pending."""
        with self.sessions() as session, session.begin():
            session.execute(
                update(Delivery)
                .where(*self._held(), Delivery.status == DeliveryStatus.PENDING)
                .values(**values)
                .execution_options(synchronize_session=False)
            )

    def release(self) -> None:
        with self.sessions() as session, session.begin():
            session.execute(
                update(Delivery)
                .where(*self._held())
                .values(claimed_by=None, claim_expires=None)
                .execution_options(synchronize_session=False)
            )

    # --- outcomes ------------------------------------------------------------------

    def record(self, outcomes: Sequence[Outcome], hard_bounces: Sequence[tuple[str, str]]) -> None:
        if not outcomes:
            return
        now = utcnow()
        with self.sessions() as session, session.begin():
            if session.get_bind().dialect.name == "postgresql":
                session.execute(_RECORD_POSTGRESQL, _outcomes_json(outcomes, now))
            else:
                session.execute(_RECORD, [_bind(outcome, now) for outcome in outcomes])
            if hard_bounces:
                session.execute(
                    insert_on_conflict_ignore(session, Suppression.__table__, index_elements=["email"]),
                    [
                        {"email": e, "reason": SuppressionReason.HARD_BOUNCE, "note": reply[:500], "created_at": now}
                        for e, reply in hard_bounces
                    ],
                )

    def pause_for_errors(self, reason: str) -> bool:
        with self.sessions() as session, session.begin():
            return bool(
                rowcount(
                    session.execute(
                        update(Send)
                        .where(Send.id == self._send_id, Send.status == SendStatus.SENDING)
                        .values(status=SendStatus.PAUSED, status_reason=reason)
                    )
                )
            )

    # --- progress ------------------------------------------------------------------

    def next_due(self) -> float | None:
        with reading(self.sessions) as session:
            row = session.execute(
                select(func.min(Delivery.next_attempt_at), func.min(Delivery.claim_expires), func.count()).where(
                    *self._in_range(), Delivery.status == DeliveryStatus.PENDING
                )
            ).one()
        next_attempt, claim_expires, pending = row
        if not pending:
            return None
        now = utcnow()
        moments = [m for m in (next_attempt, claim_expires) if m is not None]
        if not moments:
            return 0.0
        return max(0.0, (min(moments) - now).total_seconds()) + 0.1

    def finish_if_done(self) -> bool:
        # Most batches end with later batches still to go: one index probe past this range says so,
        # where the whole send's check steps over every row already done that the index still lists.
        with reading(self.sessions) as session:
            later = session.scalar(
                select(Delivery.id)
                .where(
                    Delivery.send_id == self._send_id,
                    Delivery.status == DeliveryStatus.PENDING,
                    Delivery.id > self.last_id,
                )
                .order_by(Delivery.id)
                .limit(1)
            )
        if later is not None:
            return False
        return finish_if_done(self.sessions, self._send_id)


_table = Delivery.__table__
# Every outcome is one attempt, recovered journal entries included.
_RECORD = (
    update(_table)
    .where(_table.c.id == bindparam("b_id"))
    .values(
        # A row cancelled while its message was in flight keeps the truth if it went
        # out, and stays cancelled if it would only have been retried.
        status=case(
            (
                and_(bindparam("b_status") == DeliveryStatus.PENDING, _table.c.status == DeliveryStatus.CANCELLED),
                DeliveryStatus.CANCELLED,
            ),
            else_=bindparam("b_status"),
        ),
        attempts=_table.c.attempts + 1,
        smtp_code=bindparam("b_code"),
        smtp_reply=bindparam("b_reply"),
        message_id=bindparam("b_message_id"),
        sent_at=bindparam("b_sent_at"),
        next_attempt_at=bindparam("b_next"),
        claimed_by=None,
        claim_expires=None,
        updated_at=bindparam("b_now"),
    )
)


# PostgreSQL: the same write as one statement over a JSON array of the outcomes, one row of it per outcome:
# parsed and planned once per flush instead of once per row (executemany), each row found through the primary
# key. JSON rather than one array per column: json.dumps makes the parameter in C, where psycopg dumps an
# array element by element in Python (10.5 against 4.8 µs of the worker's time per row, measured).
_RECORD_POSTGRESQL = text(
    """
    UPDATE deliveries AS d SET
        status = CASE WHEN v.status = :pending AND d.status = :cancelled THEN :cancelled ELSE v.status END,
        attempts = d.attempts + 1,
        smtp_code = v.code,
        smtp_reply = v.reply,
        message_id = v.message_id,
        sent_at = v.sent_at,
        next_attempt_at = v.next_at,
        claimed_by = NULL,
        claim_expires = NULL,
        updated_at = :now
    FROM json_to_recordset(CAST(:outcomes AS json))
        AS v(id bigint, status text, code integer, reply text, message_id text, sent_at timestamptz, next_at timestamptz)
    WHERE d.id = v.id
    """
)


def _reply_text(reply: str) -> str:
    """The reply as logged: PostgreSQL's text cannot hold NUL, so a reply carrying one is kept without it
    (on both stores, so the log reads the same)."""
    return reply.replace("\x00", "") if "\x00" in reply else reply


def _when(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def _outcomes_json(outcomes: Sequence[Outcome], now: datetime) -> dict[str, Any]:
    rows = [
        {
            "id": o.delivery_id,
            "status": str(o.status),
            "code": o.code,
            "reply": _reply_text(o.reply),
            "message_id": o.message_id,
            "sent_at": _when(o.sent_at),
            "next_at": _when(o.next_attempt_at),
        }
        for o in outcomes
    ]
    return {
        "pending": DeliveryStatus.PENDING.value,
        "cancelled": DeliveryStatus.CANCELLED.value,
        "now": now,
        "outcomes": json.dumps(rows, ensure_ascii=False),
    }


def _bind(outcome: Outcome, now: object) -> dict[str, Any]:
    return {
        "b_id": outcome.delivery_id,
        "b_status": outcome.status,
        "b_code": outcome.code,
        "b_reply": _reply_text(outcome.reply),
        "b_message_id": outcome.message_id,
        "b_sent_at": outcome.sent_at,
        "b_next": outcome.next_attempt_at,
        "b_now": now,
    }


def finish_if_done(sessions: sessionmaker[Session], send_id: int) -> bool:
    """Mark a sending send finished once nothing is pending. Returns whether it did."""
    pending = exists().where(Delivery.send_id == send_id, Delivery.status == DeliveryStatus.PENDING)
    with sessions() as session, session.begin():
        return bool(
            rowcount(
                session.execute(
                    update(Send)
                    .where(Send.id == send_id, Send.status == SendStatus.SENDING, not_(pending))
                    .values(status=SendStatus.FINISHED, finished_at=utcnow())
                    .execution_options(synchronize_session=False)
                )
            )
        )


def release_dead_claims(sessions: sessionmaker[Session], hostname: str, is_alive: Callable[[int], bool]) -> int:
    """Release claims held by processes of this host that no longer exist (a worker killed with -9).

    Claims of other hosts expire on their own; this only makes local recovery immediate.
    Returns how many rows were released.
    """
    with sessions() as session, session.begin():
        holders = session.scalars(
            select(Delivery.claimed_by)
            .where(Delivery.status == DeliveryStatus.PENDING, Delivery.claimed_by.like(f"{hostname}:%"))
            .distinct()
        ).all()
        dead = [h for h in holders if h and not is_alive(int(h.split(":")[1]))]
        if not dead:
            return 0
        return rowcount(
            session.execute(
                update(Delivery)
                .where(Delivery.status == DeliveryStatus.PENDING, Delivery.claimed_by.in_(dead))
                .values(claimed_by=None, claim_expires=None)
                .execution_options(synchronize_session=False)
            )
        )
