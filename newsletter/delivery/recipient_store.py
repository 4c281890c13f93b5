"""A send's recipients in SQL: the claim on one batch, and the bulk write of its outcomes.

:class:`SqlRecipientStore` is the :class:`~newsletter.delivery.ports.RecipientStore` of one
batch (a range of delivery ids). The worker *claims* the range: one ``batch_claims`` row (a
claim expires unless renewed, so rows held by a dead worker come back) that holds the range's
pending, due rows no other live claim covers; it skips those who left or were suppressed since
the send started, and later writes every outcome in one statement, so each delivery row is
written once after the snapshot. Every query on held rows names the range, so it reads a
batch's rows through an index instead of scanning all pending rows of a large send.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Select,
    and_,
    bindparam,
    case,
    delete,
    exists,
    func,
    insert,
    not_,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.orm import Session, sessionmaker

from newsletter.delivery import subject_variants
from newsletter.delivery.ports import Checked, Claimed, Outcome, Taken
from newsletter.store.db import insert_on_conflict_ignore, reading, rowcount
from newsletter.store.models import (
    BatchClaim,
    Delivery,
    Send,
    SendList,
    Subscriber,
    Subscription,
    Suppression,
    utcnow,
)
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
        # A send to several lists (rows in send_lists): each row is checked against its own list
        # (deliveries.list_id). Looked up once; a send to one list keeps its claim query as it was.
        self._several: bool | None = None
        # A send with a subject test: each row's variant is read, and while the test is undecided the rows
        # without one (the rest) are held back; once decided they carry the winner (subject_variants).
        self._tested: bool | None = None
        self._hold_back = False
        self._winner: int | None = None
        self._claim_id: int | None = None  # the batch_claims row while this batch holds one
        self._taken: list[int] = []  # the rows the claim took (held while they are pending and it lives)

    @property
    def send_id(self) -> int:
        return self._send_id

    def _in_range(self) -> tuple[Any, ...]:
        return (Delivery.send_id == self._send_id, Delivery.id.between(self.first_id, self.last_id))

    def _held(self) -> tuple[Any, ...]:
        """The rows this batch took, while its claim is there (a claim that expired and was taken over
        by another worker holds nothing any more)."""
        ours = exists().where(BatchClaim.id == self._claim_id, BatchClaim.claimed_by == self.me)
        return (*self._in_range(), Delivery.id.in_(self._taken), ours)

    # --- claiming ------------------------------------------------------------------

    def take(self, claim_seconds: float) -> Taken | None:
        with self.sessions() as session, session.begin():
            # Claims of one send are taken one at a time (the send's row locked; SQLite writes one
            # transaction at a time anyway), so two overlapping batches never take the same row.
            send = session.get(Send, self._send_id, with_for_update={"key_share": True})
            if send is None or send.status != SendStatus.SENDING:
                return None
            self._list_id = send.list_id
            if self._several is None:
                self._several = bool(session.scalar(select(exists().where(SendList.send_id == self._send_id))))
            if self._tested is not False:
                test = subject_variants.phase(session, self._send_id)
                self._tested = test is not None
                self._hold_back = subject_variants.holds_back(test[0] if test else None)
                self._winner = test[1] if test else None
            now = utcnow()
            overlapping = (
                BatchClaim.send_id == self._send_id,
                BatchClaim.first_id <= self.last_id,
                BatchClaim.last_id >= self.first_id,
            )
            session.execute(
                delete(BatchClaim)
                .where(*overlapping, BatchClaim.claim_expires < now)
                .execution_options(synchronize_session=False)
            )
            rows, departed = [], []
            for delivery_id, subscriber_id, email, name, attempts, subscribed, suppressed, *more in session.execute(
                self._due_rows(now)
            ):
                if subscribed is None or suppressed is not None:
                    departed.append(delivery_id)
                    continue
                list_id = more[0] if self._several else None
                variant = (more[-1] if more[-1] is not None else self._winner) if self._tested else None
                rows.append(Claimed(delivery_id, subscriber_id, email, name, attempts, list_id, variant=variant))
            if not rows and not departed:
                return Taken([], 0)
            self._claim_id = session.execute(
                insert(BatchClaim)
                .values(
                    send_id=self._send_id,
                    first_id=self.first_id,
                    last_id=self.last_id,
                    claimed_by=self.me,
                    claim_expires=now + timedelta(seconds=claim_seconds),
                )
                .returning(BatchClaim.id)
            ).scalar_one()
            self._taken = [r.delivery_id for r in rows] + departed
            self._skip(session, departed)
            return Taken(rows, len(departed))

    def _due_rows(self, now: datetime) -> Select[*tuple[Any, ...]]:
        """The range's pending rows that are due and that no other live claim covers, in id order, each with
        its subscriber's name and two marks: the confirmed subscription's id (None: the subscriber left the
        list) and the suppression's id (not None: suppressed).

        Outer joins probed row by row through their unique keys: the cost is the batch's, whatever the
        size of the list (an ``EXISTS`` under ``OR`` made PostgreSQL hash every subscription of the list).
        A send to several lists adds each row's list id (the same joins, the subscription probed on it).
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
                *([Delivery.list_id] if self._several else []),
                *([Delivery.variant] if self._tested else []),
            )
            # Outer: a row whose subscriber is gone (no foreign key says it cannot be) is found and skipped.
            .outerjoin(Subscriber, Subscriber.id == Delivery.subscriber_id)
            .outerjoin(Subscription, self._confirmed_subscription())
            .outerjoin(Suppression, Suppression.email == Delivery.email)
            .where(
                *self._in_range(),
                Delivery.status == DeliveryStatus.PENDING,
                or_(Delivery.next_attempt_at.is_(None), Delivery.next_attempt_at <= now),
                ~held_by_a_live_claim(self._send_id, now),
                *self._released(),
            )
            .order_by(Delivery.id)
        )

    def _released(self) -> tuple[ColumnElement[bool], ...]:
        """While a subject test is undecided, only the test share's rows may go."""
        return (subject_variants.released(),) if self._hold_back else ()

    def _confirmed_subscription(self) -> ColumnElement[bool]:
        return and_(
            Subscription.list_id == Delivery.list_id if self._several else Subscription.list_id == self._list_id,
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
        if self._claim_id is None:
            return
        with self.sessions() as session, session.begin():
            session.execute(
                update(BatchClaim)
                .where(BatchClaim.id == self._claim_id, BatchClaim.claimed_by == self.me)
                .values(claim_expires=utcnow() + timedelta(seconds=claim_seconds))
                .execution_options(synchronize_session=False)
            )

    def defer(self, seconds: float) -> None:
        """The held rows still pending are due again in ``seconds``; the claim is given back."""
        if self._claim_id is None:
            return
        now = utcnow()
        with self.sessions() as session, session.begin():
            session.execute(
                update(Delivery)
                .where(*self._held(), Delivery.status == DeliveryStatus.PENDING)
                .values(next_attempt_at=now + timedelta(seconds=seconds), updated_at=now)
                .execution_options(synchronize_session=False)
            )
            self._give_back(session)

    def release(self) -> None:
        if self._claim_id is None:
            return
        with self.sessions() as session, session.begin():
            self._give_back(session)

    def _give_back(self, session: Session) -> None:
        session.execute(
            delete(BatchClaim)
            .where(BatchClaim.id == self._claim_id, BatchClaim.claimed_by == self.me)
            .execution_options(synchronize_session=False)
        )
        self._claim_id, self._taken = None, []

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
            suppress_hard_bounces(session, hard_bounces, now)

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
            next_attempt, pending = session.execute(
                select(func.min(Delivery.next_attempt_at), func.count()).where(
                    *self._in_range(), Delivery.status == DeliveryStatus.PENDING, *self._released()
                )
            ).one()
            if not pending:
                return None
            held_until = session.scalar(
                select(func.min(BatchClaim.claim_expires)).where(
                    BatchClaim.send_id == self._send_id,
                    BatchClaim.first_id <= self.last_id,
                    BatchClaim.last_id >= self.first_id,
                )
            )
        now = utcnow()
        moments = [m for m in (next_attempt, held_until) if m is not None]
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
        finished = bool(
            rowcount(
                session.execute(
                    update(Send)
                    .where(Send.id == send_id, Send.status == SendStatus.SENDING, not_(pending))
                    .values(status=SendStatus.FINISHED, finished_at=utcnow())
                    .execution_options(synchronize_session=False)
                )
            )
        )
        if finished:  # claims left by workers that died hold nothing now
            session.execute(delete(BatchClaim).where(BatchClaim.send_id == send_id))
        return finished


def release_dead_claims(sessions: sessionmaker[Session], hostname: str, is_alive: Callable[[int], bool]) -> int:
    """Release claims held by processes of this host that no longer exist (a worker killed with -9).

    Claims of other hosts expire on their own; this only makes local recovery immediate.
    Returns how many batches' claims were released.
    """
    with sessions() as session, session.begin():
        holders = session.scalars(
            select(BatchClaim.claimed_by).where(BatchClaim.claimed_by.like(f"{hostname}:%")).distinct()
        ).all()
        dead = [h for h in holders if h and not is_alive(int(h.split(":")[1]))]
        if not dead:
            return 0
        return rowcount(
            session.execute(
                delete(BatchClaim).where(BatchClaim.claimed_by.in_(dead)).execution_options(synchronize_session=False)
            )
        )


def held_by_a_live_claim(send_id: int, now: datetime) -> ColumnElement[bool]:
    """The delivery row lies in a batch of ``send_id`` that a worker holds (its claim not expired)."""
    return exists().where(
        BatchClaim.send_id == send_id,
        BatchClaim.first_id <= Delivery.id,
        BatchClaim.last_id >= Delivery.id,
        BatchClaim.claim_expires >= now,
    )


def suppress_hard_bounces(session: Session, hard_bounces: Sequence[tuple[str, str]], now: datetime) -> None:
    """Suppress each (address, SMTP reply) that bounced hard; an address already suppressed stays as it was."""
    if hard_bounces:
        session.execute(
            insert_on_conflict_ignore(session, Suppression.__table__, index_elements=["email"]),
            [
                {"email": e, "reason": SuppressionReason.HARD_BOUNCE, "note": reply[:500], "created_at": now}
                for e, reply in hard_bounces
            ],
        )
