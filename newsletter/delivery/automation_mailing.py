"""Mailing one batch of an automated email: the worker side of :mod:`subscribers.automation_mails`.

A batch is a range of row ids of one automation (a list's welcome, a step of its sequence, its
goodbye). It goes through the send's own batch loop (:mod:`newsletter.delivery.batch_loop`):
:class:`AutomationRecipients` is its :class:`~newsletter.delivery.ports.RecipientStore` over
``automation_mails``, :class:`~newsletter.delivery.automation_editions.AutomationEditions` its
message source. So an automated email is delivered exactly as a send's copy is, with the same
guarantees:

* the rows are *claimed* (``claimed_by``, ``claim_expires``: a claim lapses unless renewed, and a
  dead worker's claims on this host are released by the reconciler at once), so two workers, a
  redelivered task or a second task for the same rows never mail a row twice;
* each message the SMTP server accepts is written to the Redis journal before the next one goes
  out, and outcomes reach the database in bulk: a worker killed with ``kill -9`` repeats at most
  the one message it had in flight (with the same Message-ID), and whoever takes its rows over
  records the journaled ones as sent instead of mailing them again;
* 4xx answers retry with backoff, 5xx fail that person (an unknown mailbox is suppressed), an
  unreachable SMTP server gives up on nobody; each outcome is logged on the row (status,
  attempts, SMTP reply, Message-ID, times).

A person's automated emails of a list go out in the order they were written: a row whose
subscriber has an earlier one still pending (their welcome, an earlier step) waits for it.
Someone who left the list (or, for a goodbye, joined it again) or was suppressed before their
email went out is skipped, and so is everyone still to get an automated email that was switched
off or removed; the reason is logged on the row. An automated email never pauses itself for
errors as a send does: there is no one to resume it, and each failure is in its log.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, bindparam, func, or_, select, update
from sqlalchemy.orm import Session, aliased, sessionmaker

from newsletter.delivery import batch_loop
from newsletter.delivery.automation_editions import AutomationEditions
from newsletter.delivery.batch_loop import BatchResult, DeliveryPolicy
from newsletter.delivery.domain_pacing import DomainPacer
from newsletter.delivery.ports import Checked, Claimed, Outcome, Taken, Transport
from newsletter.delivery.recipient_store import suppress_hard_bounces, worker_name
from newsletter.delivery.send_control import RateLimiter, SendControl
from newsletter.errors import NotFound, RenderError
from newsletter.store.db import reading, rowcount
from newsletter.store.models import (
    Automation,
    AutomationMail,
    Subscriber,
    Subscription,
    Suppression,
    utcnow,
)
from newsletter.store.states import (
    AutomationKind,
    AutomationMailStatus,
    SendStatus,
    SubscriptionStatus,
)

#: Seconds a row waits, at least, for an earlier automated email of the same person and list still pending.
IN_ORDER_WAIT = 3.0
#: What a row's log says when the automation it belongs to was switched off or removed before it went out.
SWITCHED_OFF = {
    AutomationKind.WELCOME: "not sent: the list's welcome was switched off before it went out",
    AutomationKind.GOODBYE: "not sent: the list's goodbye was switched off before it went out",
    AutomationKind.STEP: "not sent: the step was removed from the sequence before it went out",
}


def deliver_batch(
    sessions: sessionmaker[Session],
    editions: AutomationEditions,
    transport: Transport,
    control: SendControl,
    automation_id: int,
    first_id: int,
    last_id: int,
    *,
    policy: DeliveryPolicy,
    limiter: RateLimiter | None = None,
    pacer: DomainPacer | None = None,
) -> BatchResult:
    """Mail the due, pending rows of automation ``automation_id`` with ids in [first_id, last_id].

    Never raises for one person's delivery error: each becomes an outcome on their row. An
    automation that no longer renders fails the rows it takes, saying why in their log.
    """
    store = AutomationRecipients(sessions, automation_id, first_id, last_id)
    try:
        editions.edition(automation_id)  # rendered once per process and version, then reused
    except NotFound:
        return BatchResult()  # its list was deleted, and its rows with it
    except RenderError as exc:
        return store.fail_taken(f"not sent: {exc}", policy.claim_seconds)
    return batch_loop.deliver_batch(
        store,
        editions,
        transport,
        control,
        policy=replace(policy, pause_min_attempts=sys.maxsize),  # never pauses: see the module docstring
        limiter=limiter,
        pacer=pacer,
    )


class AutomationRecipients:
    """The rows of automation ``automation_id`` with ids in [first_id, last_id], claimed as ``me``
    (a new :func:`~newsletter.delivery.recipient_store.worker_name` by default): a RecipientStore."""

    def __init__(
        self, sessions: sessionmaker[Session], automation_id: int, first_id: int, last_id: int, *, me: str | None = None
    ) -> None:
        self.sessions = sessions
        self.automation_id = automation_id
        self.first_id, self.last_id = first_id, last_id
        self.me = me or worker_name()
        self._kind: AutomationKind | None = None

    @property
    def send_id(self) -> int:
        """The batch loop names the unit whose edition it mails a send; here it is the automation."""
        return self.automation_id

    def _in_range(self) -> tuple[Any, ...]:
        return (
            AutomationMail.automation_id == self.automation_id,
            AutomationMail.id.between(self.first_id, self.last_id),
        )

    def _held(self) -> tuple[Any, ...]:
        return (
            *self._in_range(),
            AutomationMail.claimed_by == self.me,
            AutomationMail.status == AutomationMailStatus.PENDING,
        )

    # --- claiming ------------------------------------------------------------------

    def take(self, claim_seconds: float) -> Taken | None:
        now = utcnow()
        with self.sessions() as session, session.begin():
            automation = session.get(Automation, self.automation_id)
            if automation is None:
                return None
            self._kind = automation.kind
            if not _active(automation):
                self._drop_unsent(session, SWITCHED_OFF[automation.kind], now)
                return None
            session.execute(
                update(AutomationMail)
                .where(
                    *self._in_range(),
                    AutomationMail.status == AutomationMailStatus.PENDING,
                    or_(AutomationMail.next_attempt_at.is_(None), AutomationMail.next_attempt_at <= now),
                    or_(AutomationMail.claim_expires.is_(None), AutomationMail.claim_expires < now),
                )
                .values(claimed_by=self.me, claim_expires=now + timedelta(seconds=claim_seconds))
                .execution_options(synchronize_session=False)
            )
            self._hold_back(session, now)
            rows, departed = [], {}
            for row_id, subscriber_id, email, name, attempts, standing, suppressed in session.execute(
                self._rows(automation.list_id)
            ):
                reason = _why_not(automation.kind, name, standing, suppressed)
                if reason is None:
                    rows.append(Claimed(row_id, subscriber_id, email, name, attempts))
                else:
                    departed[row_id] = reason
            self._skip(session, departed, now)
            return Taken(rows, len(departed))

    def _hold_back(self, session: Session, now: datetime) -> None:
        """Give back, due again later, the held rows whose subscriber has an earlier automated email of the
        list still pending (a welcome, an earlier step): a person's emails go out in the order they were
        written. Each waits until that one's next attempt, or a few seconds."""
        earlier = aliased(AutomationMail)
        waiting = session.execute(
            select(AutomationMail.id, func.max(earlier.next_attempt_at))
            .join(
                earlier,
                and_(
                    earlier.subscriber_id == AutomationMail.subscriber_id,
                    earlier.list_id == AutomationMail.list_id,
                    earlier.status == AutomationMailStatus.PENDING,
                    earlier.id < AutomationMail.id,
                ),
            )
            .where(*self._held())
            .group_by(AutomationMail.id)
        ).all()
        for row_id, until in waiting:
            session.execute(
                update(AutomationMail)
                .where(*self._held(), AutomationMail.id == row_id)
                .values(
                    claimed_by=None,
                    claim_expires=None,
                    next_attempt_at=max(now + timedelta(seconds=IN_ORDER_WAIT), until or now),
                )
                .execution_options(synchronize_session=False)
            )

    def _rows(self, list_id: int) -> Any:
        """The held rows in id order, each with the subscriber's name (None: gone), their subscription's
        status on the list and their suppression's reason (None: not suppressed)."""
        return (
            select(
                AutomationMail.id,
                AutomationMail.subscriber_id,
                AutomationMail.email,
                Subscriber.name,
                AutomationMail.attempts,
                Subscription.status,
                Suppression.reason,
            )
            .outerjoin(Subscriber, Subscriber.id == AutomationMail.subscriber_id)
            .outerjoin(
                Subscription,
                and_(Subscription.list_id == list_id, Subscription.subscriber_id == AutomationMail.subscriber_id),
            )
            .outerjoin(Suppression, Suppression.email == AutomationMail.email)
            .where(*self._held())
            .order_by(AutomationMail.id)
        )

    def _skip(self, session: Session, departed: dict[int, str], now: datetime) -> set[int]:
        """Mark these held rows skipped, each with its reason; returns the ids it did."""
        done: set[int] = set()
        for reason in set(departed.values()):
            ids = [i for i, r in departed.items() if r == reason]
            done |= set(
                session.scalars(
                    update(AutomationMail)
                    .where(*self._held(), AutomationMail.id.in_(ids))
                    .values(
                        status=AutomationMailStatus.SKIPPED,
                        smtp_reply=reason,
                        claimed_by=None,
                        claim_expires=None,
                        updated_at=now,
                    )
                    .returning(AutomationMail.id)
                    .execution_options(synchronize_session=False)
                )
            )
        return done

    def _drop_unsent(self, session: Session, reason: str, now: datetime) -> int:
        """Skip the range's pending rows no live worker holds: their automation was switched off or removed."""
        return rowcount(
            session.execute(
                update(AutomationMail)
                .where(
                    *self._in_range(),
                    AutomationMail.status == AutomationMailStatus.PENDING,
                    or_(AutomationMail.claim_expires.is_(None), AutomationMail.claim_expires < now),
                )
                .values(status=AutomationMailStatus.SKIPPED, smtp_reply=reason, updated_at=now)
                .execution_options(synchronize_session=False)
            )
        )

    def check(self) -> Checked:
        with reading(self.sessions) as session:
            automation = session.get(Automation, self.automation_id)
            if automation is None or not _active(automation):
                return Checked(SendStatus.CANCELLED, set())
            departed = {
                row_id: reason
                for row_id, _, _, name, _, standing, suppressed in session.execute(self._rows(automation.list_id))
                if (reason := _why_not(automation.kind, name, standing, suppressed)) is not None
            }
        if not departed:
            return Checked(SendStatus.SENDING, set())
        with self.sessions() as session, session.begin():
            return Checked(SendStatus.SENDING, self._skip(session, departed, utcnow()))

    def renew(self, claim_seconds: float) -> None:
        with self.sessions() as session, session.begin():
            session.execute(
                update(AutomationMail)
                .where(*self._held())
                .values(claim_expires=utcnow() + timedelta(seconds=claim_seconds))
                .execution_options(synchronize_session=False)
            )

    def release(self) -> None:
        self._give_back({})

    def defer(self, seconds: float) -> None:
        self._give_back({"next_attempt_at": utcnow() + timedelta(seconds=seconds)})

    def _give_back(self, values: dict[str, Any]) -> None:
        with self.sessions() as session, session.begin():
            session.execute(
                update(AutomationMail)
                .where(*self._held())
                .values(claimed_by=None, claim_expires=None, **values)
                .execution_options(synchronize_session=False)
            )

    # --- outcomes ------------------------------------------------------------------

    def record(self, outcomes: Sequence[Outcome], hard_bounces: Sequence[tuple[str, str]]) -> None:
        if not outcomes:
            return
        now = utcnow()
        with self.sessions() as session, session.begin():
            session.execute(_RECORD, [_bind(outcome, now) for outcome in outcomes])
            suppress_hard_bounces(session, hard_bounces, now)

    def pause_for_errors(self, reason: str) -> bool:
        return False  # never reached: deliver_batch gives the loop a policy that never pauses

    def fail_taken(self, reply: str, claim_seconds: float) -> BatchResult:
        """Log every row this batch can take as failed with ``reply`` (the automation does not render)."""
        taken = self.take(claim_seconds)
        result = BatchResult(skipped=taken.skipped if taken else 0)
        if taken:
            self.record(
                [Outcome(r.delivery_id, AutomationMailStatus.FAILED, None, reply, "") for r in taken.recipients], []
            )
            result.failed = len(taken.recipients)
        return result

    # --- progress ------------------------------------------------------------------

    def next_due(self) -> float | None:
        with reading(self.sessions) as session:
            next_attempt, held_until, pending = session.execute(
                select(
                    func.min(AutomationMail.next_attempt_at), func.min(AutomationMail.claim_expires), func.count()
                ).where(*self._in_range(), AutomationMail.status == AutomationMailStatus.PENDING)
            ).one()
        if not pending:
            return None
        moments = [m for m in (next_attempt, held_until) if m is not None]
        if not moments:
            return 0.0
        return max(0.0, (min(moments) - utcnow()).total_seconds()) + 0.1

    def finish_if_done(self) -> bool:
        """An automation never finishes; one switched off or removed meanwhile has its unsent rows skipped."""
        with self.sessions() as session, session.begin():
            automation = session.get(Automation, self.automation_id)
            if automation is not None and not _active(automation):
                self._drop_unsent(session, SWITCHED_OFF[automation.kind], utcnow())
        return False


def _active(automation: Automation) -> bool:
    return bool(automation.enabled) and automation.removed_at is None


def _why_not(kind: AutomationKind, name: str | None, standing: str | None, suppressed: str | None) -> str | None:
    """Why a row is not mailed after all, or None to mail it."""
    if name is None:
        return "not sent: the subscriber was deleted"
    if suppressed is not None:
        return f"not sent: the address was suppressed ({suppressed}) before it went out"
    if kind == AutomationKind.GOODBYE:
        return (
            "not sent: joined the list again before it went out" if standing == SubscriptionStatus.CONFIRMED else None
        )
    if standing != SubscriptionStatus.CONFIRMED:
        return "not sent: left the list before it went out"
    return None


_table = AutomationMail.__table__
# Every outcome is one attempt (a journaled copy recorded by whoever took the row over included).
_RECORD = (
    update(_table)
    .where(_table.c.id == bindparam("b_id"))
    .values(
        status=bindparam("b_status"),
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


def _bind(outcome: Outcome, now: datetime) -> dict[str, Any]:
    return {
        "b_id": outcome.delivery_id,
        "b_status": AutomationMailStatus(str(outcome.status)),
        "b_code": outcome.code,
        "b_reply": outcome.reply.replace("\x00", ""),  # PostgreSQL's text holds no NUL
        "b_message_id": outcome.message_id or None,
        "b_sent_at": outcome.sent_at,
        "b_next": outcome.next_attempt_at,
        "b_now": now,
    }


def release_dead_claims(sessions: sessionmaker[Session], hostname: str, is_alive: Callable[[int], bool]) -> int:
    """Release the claims on automated emails held by processes of this host that no longer exist (a worker
    killed with -9), so its rows are taken over at once instead of when the claims lapse. Returns how many rows."""
    with sessions() as session, session.begin():
        holders = session.scalars(
            select(AutomationMail.claimed_by)
            .where(
                AutomationMail.status == AutomationMailStatus.PENDING, AutomationMail.claimed_by.like(f"{hostname}:%")
            )
            .distinct()
        ).all()
        dead = [h for h in holders if h and not is_alive(int(h.split(":")[1]))]
        if not dead:
            return 0
        return rowcount(
            session.execute(
                update(AutomationMail)
                .where(AutomationMail.status == AutomationMailStatus.PENDING, AutomationMail.claimed_by.in_(dead))
                .values(claimed_by=None, claim_expires=None)
                .execution_options(synchronize_session=False)
            )
        )
