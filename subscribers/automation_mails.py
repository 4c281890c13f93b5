"""Who is due which automated email: the rows of ``automation_mails``, each written once, and their log.

A row is one automated email (:mod:`subscribers.automations`) to one subscriber, unique per
(automation, subscriber): whatever runs twice (a tick, a task, a confirmation), a person gets each
automated email at most once. Rows are written:

* by :func:`welcome_due`, in the transaction that confirms a subscription: ``consent.confirm``
  (the opt-in link), and ``subscriptions.add_subscriber`` or ``directory.set_subscription`` (an
  editor adds someone as confirmed), the latter only when the list's welcome is for them too;
* by :func:`goodbye_due`, in the transaction in which someone leaves by themselves
  (``consent.unsubscribe`` and ``consent.leave``; ``bounces`` for a mailed unsubscribe);
* by :func:`plan_due_steps`, the scheduler's tick: for each step, one ``INSERT ... SELECT`` of the
  list's confirmed, unsuppressed subscribers with ``confirmed_at + offset <= now`` who confirmed
  after the step was added and have no row for it, reading only the confirmations since the
  step's last planning (less a margin). ``now`` is a parameter: the tick passes the clock, tests
  pass a later one.

A person's automated emails of a list go out one after the other, in the order their rows were
written (the welcome before the first step, each step after the ones before it, even when a
stopped scheduler finds several due at once): the workers hold back a row while an earlier one
of the same person and list is still pending (``delivery.automation_mailing``).

Each returns the id ranges to queue (``delivery.send_queue.queue_automation_batches``) once the
transaction commits. Rows whose task was never queued or was lost (a broker outage, a mailed
unsubscribe taken by the inbound server, a killed worker) are queued by the workers' reconciler
(:func:`due_batches`). The workers' side (claims, outcomes) is
:mod:`newsletter.delivery.automation_mailing`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import exists, func, literal, or_, select, update
from sqlalchemy.orm import Session, aliased

from newsletter.errors import InvalidInput
from newsletter.store.db import id_ranges, insert_on_conflict_ignore
from newsletter.store.models import (
    Automation,
    AutomationMail,
    Issue,
    MailingList,
    Subscriber,
    Subscription,
    Suppression,
    utcnow,
)
from newsletter.store.states import AutomationKind, AutomationMailStatus, SubscriptionStatus
from subscribers.automations import describe
from subscribers.lists import get_list

Batch = tuple[int, int, int]  # the automation's id, the first and the last row id (inclusive)

#: How far before its last planning the next planning of a step looks again: room for a confirmation whose
#: transaction committed late (its ``confirmed_at`` is set before the commit) and for the clocks of the web
#: servers and the scheduler differing a little. The unique rows keep anyone from being written twice.
PLANNING_MARGIN = timedelta(hours=1)

_COLUMNS = [
    "automation_id",
    "list_id",
    "subscriber_id",
    "issue_id",
    "email",
    "status",
    "attempts",
    "created_at",
    "updated_at",
]


# --- writing what is due -------------------------------------------------------------------


def welcome_due(
    session: Session, list_id: int, subscriber_id: int, *, added: bool = False, now: datetime | None = None
) -> list[Batch]:
    """The list's welcome is due to a subscriber who was just confirmed: through the opt-in link, or
    ``added`` as confirmed by an editor (welcomed only when the list's welcome says so).

    Writes nothing when the list's welcome is off, the address is suppressed, or the person was
    welcomed to the list before. Returns the batch to queue after the commit.
    """
    welcome = _switched_on(session, list_id, AutomationKind.WELCOME)
    if welcome is None or (added and not welcome.also_added):
        return []
    return _write_one(session, welcome, subscriber_id, now or utcnow())


def goodbye_due(session: Session, list_id: int, subscriber_id: int, *, now: datetime | None = None) -> list[Batch]:
    """The list's goodbye is due to a subscriber who just left it by themselves.

    Writes nothing when the list's goodbye is off, the address is suppressed, or the person was
    seen off from the list before. Returns the batch to queue after the commit.
    """
    goodbye = _switched_on(session, list_id, AutomationKind.GOODBYE)
    if goodbye is None:
        return []
    return _write_one(session, goodbye, subscriber_id, now or utcnow())


def goodbyes_due(session: Session, email: str, list_slugs: tuple[str, ...], *, now: datetime | None = None) -> None:
    """The goodbyes of the lists ``email`` just left by themselves (a mailed unsubscribe, a provider's report):
    written here, queued by the workers' reconciler."""
    subscriber_id = session.scalar(select(Subscriber.id).where(Subscriber.email == email))
    if subscriber_id is None or not list_slugs:
        return
    for list_id in session.scalars(select(MailingList.id).where(MailingList.slug.in_(list_slugs))):
        goodbye_due(session, list_id, subscriber_id, now=now)


def plan_due_steps(session: Session, now: datetime, batch_size: int) -> list[Batch]:
    """Write a row for every step now due to someone (see the module docstring); return the batches.

    The steps are locked (PostgreSQL; SQLite writes one transaction at a time), so ticks running
    at once plan one after the other, each seeing what the other wrote. Each step notes the time it
    was planned at (``planned_until``); the next planning reads only the confirmations since then,
    less :data:`PLANNING_MARGIN`, so a tick costs what is new, not the whole list.
    """
    steps = session.execute(
        select(
            Automation.id,
            Automation.list_id,
            Automation.issue_id,
            Automation.offset_days,
            Automation.created_at,
            Automation.planned_until,
        )
        .where(Automation.kind == AutomationKind.STEP, Automation.removed_at.is_(None), Automation.enabled)
        .order_by(Automation.list_id, Automation.offset_days, Automation.id)
        .with_for_update()
    ).all()
    batches: list[Batch] = []
    for step_id, list_id, issue_id, offset_days, added_at, planned_until in steps:
        offset = timedelta(days=offset_days or 0)
        since = added_at if planned_until is None else max(added_at, planned_until - offset - PLANNING_MARGIN)
        ids = _write_due_step(session, step_id, list_id, issue_id, since, now - offset, now)
        batches += _ranges(step_id, ids, batch_size)
        if planned_until is None or planned_until < now:
            session.execute(
                update(Automation)
                .where(Automation.id == step_id)
                # updated_at stays: it dates the step's content (its edition is made again when it changes)
                .values(planned_until=now, updated_at=Automation.updated_at)
                .execution_options(synchronize_session=False)
            )
    return batches


def _write_due_step(
    session: Session,
    step_id: int,
    list_id: int,
    issue_id: int | None,
    since: datetime,
    until: datetime,
    now: datetime,
) -> list[int]:
    """Write the step's row for each confirmed, unsuppressed subscriber of the list confirmed between
    ``since`` and ``until`` (inclusive) who has none yet; returns the new rows' ids."""
    had = aliased(AutomationMail)
    due = (
        select(
            literal(step_id),
            literal(list_id),
            Subscriber.id,
            literal(issue_id, AutomationMail.issue_id.type),
            Subscriber.email,
            literal(AutomationMailStatus.PENDING, AutomationMail.status.type),
            literal(0),
            literal(now, AutomationMail.created_at.type),
            literal(now, AutomationMail.updated_at.type),
        )
        .select_from(Subscription)
        .join(Subscriber, Subscriber.id == Subscription.subscriber_id)
        .where(
            Subscription.list_id == list_id,
            Subscription.status == SubscriptionStatus.CONFIRMED,
            Subscription.confirmed_at >= since,
            Subscription.confirmed_at <= until,
            ~exists().where(Suppression.email == Subscriber.email),
            ~exists().where(had.automation_id == step_id, had.subscriber_id == Subscriber.id),
        )
        .order_by(Subscriber.id)
    )
    written = insert_on_conflict_ignore(
        session, AutomationMail.__table__, index_elements=["automation_id", "subscriber_id"]
    ).from_select(_COLUMNS, due)
    return sorted(session.scalars(written.returning(AutomationMail.__table__.c.id)))


def _switched_on(session: Session, list_id: int, kind: AutomationKind) -> Automation | None:
    return session.scalar(
        select(Automation).where(Automation.list_id == list_id, Automation.kind == kind, Automation.enabled)
    )


def _write_one(session: Session, automation: Automation, subscriber_id: int, now: datetime) -> list[Batch]:
    email = session.scalar(select(Subscriber.email).where(Subscriber.id == subscriber_id))
    if email is None or session.scalar(select(exists().where(Suppression.email == email))):
        return []
    row_id = session.scalar(
        insert_on_conflict_ignore(session, AutomationMail.__table__, index_elements=["automation_id", "subscriber_id"])
        .values(
            automation_id=automation.id,
            list_id=automation.list_id,
            subscriber_id=subscriber_id,
            issue_id=automation.issue_id,
            email=email,
            status=AutomationMailStatus.PENDING,
            attempts=0,
            created_at=now,
            updated_at=now,
        )
        .returning(AutomationMail.__table__.c.id)
    )
    return [] if row_id is None else [(automation.id, row_id, row_id)]


def _ranges(automation_id: int, ids: list[int], batch_size: int) -> list[Batch]:
    return [
        (automation_id, ids[start], ids[min(start + batch_size, len(ids)) - 1])
        for start in range(0, len(ids), batch_size)
    ]


# --- what is left to queue -----------------------------------------------------------------


def pending_for(session: Session, list_id: int | None, subscriber_id: int) -> list[Batch]:
    """The subscriber's automated emails of the list (None: of every list) not sent yet (a page queues them)."""
    conditions = [AutomationMail.subscriber_id == subscriber_id, AutomationMail.status == AutomationMailStatus.PENDING]
    if list_id is not None:
        conditions.append(AutomationMail.list_id == list_id)
    rows = session.execute(select(AutomationMail.automation_id, AutomationMail.id).where(*conditions)).all()
    return [(automation_id, row_id, row_id) for automation_id, row_id in rows]


def due_batches(session: Session, batch_size: int, now: datetime | None = None) -> list[Batch]:
    """Every pending row that is due and that no live worker holds, as batches (what the reconciler queues)."""
    now = now or utcnow()
    conditions = [
        AutomationMail.status == AutomationMailStatus.PENDING,
        or_(AutomationMail.claim_expires.is_(None), AutomationMail.claim_expires < now),
        or_(AutomationMail.next_attempt_at.is_(None), AutomationMail.next_attempt_at <= now),
    ]
    automation_ids = session.scalars(select(AutomationMail.automation_id).where(*conditions).distinct()).all()
    return [
        (automation_id, first, last)
        for automation_id in sorted(automation_ids)
        for first, last in id_ranges(
            session, AutomationMail.id, [*conditions, AutomationMail.automation_id == automation_id], batch_size
        )
    ]


# --- the log -------------------------------------------------------------------------------


@dataclass(frozen=True)
class LogRow:
    """One automated email to one person: what, when, and what the SMTP server answered."""

    id: int
    email: str
    what: str  # "welcome", "day 3", "goodbye"
    automation_id: int
    issue_id: int | None  # None: the shipped text
    subject: str | None  # the issue's subject now (None: the shipped text, or a deleted issue)
    status: AutomationMailStatus
    attempts: int
    smtp_code: int | None
    smtp_reply: str | None
    message_id: str | None
    created_at: datetime  # when it became due
    sent_at: datetime | None
    updated_at: datetime

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "email": self.email,
            "what": self.what,
            "automation": self.automation_id,
            "issue": self.issue_id,
            "subject": self.subject,
            "status": self.status,
            "attempts": self.attempts,
            "smtp_code": self.smtp_code,
            "smtp_reply": self.smtp_reply,
            "message_id": self.message_id,
            "due_at": _iso(self.created_at),
            "sent_at": _iso(self.sent_at),
            "updated_at": _iso(self.updated_at),
        }


def mail_log(
    session: Session,
    list_slug: str,
    *,
    kind: str | None = None,
    automation_id: int | None = None,
    status: str | None = None,
    offset: int = 0,
    limit: int | None = None,
) -> tuple[int, list[LogRow]]:
    """How many of the list's automated emails match, and those (a page with ``limit``), newest first.

    Raises NotFound (list), InvalidInput (unknown kind or status, naming the option).
    """
    if kind is not None and kind not in tuple(AutomationKind):
        raise InvalidInput(f"unknown kind {kind!r}; use one of {', '.join(AutomationKind)}", where="--kind")
    if status is not None and status not in tuple(AutomationMailStatus):
        raise InvalidInput(f"unknown status {status!r}; use one of {', '.join(AutomationMailStatus)}", where="--status")
    mailing_list = get_list(session, list_slug)
    conditions: list[Any] = [AutomationMail.list_id == mailing_list.id]
    if automation_id is not None:
        conditions.append(AutomationMail.automation_id == automation_id)
    if status is not None:
        conditions.append(AutomationMail.status == status)
    if kind is not None:
        conditions.append(Automation.kind == kind)
    total = (
        session.scalar(
            select(func.count())
            .select_from(AutomationMail)
            .join(Automation, Automation.id == AutomationMail.automation_id)
            .where(*conditions)
        )
        or 0
    )
    query = (
        select(
            AutomationMail.id,
            AutomationMail.email,
            Automation.kind,
            Automation.offset_days,
            AutomationMail.automation_id,
            AutomationMail.issue_id,
            Issue.subject,
            AutomationMail.status,
            AutomationMail.attempts,
            AutomationMail.smtp_code,
            AutomationMail.smtp_reply,
            AutomationMail.message_id,
            AutomationMail.created_at,
            AutomationMail.sent_at,
            AutomationMail.updated_at,
        )
        .join(Automation, Automation.id == AutomationMail.automation_id)
        .outerjoin(Issue, Issue.id == AutomationMail.issue_id)
        .where(*conditions)
        .order_by(AutomationMail.id.desc())
        .offset(offset)
    )
    if limit is not None:
        query = query.limit(limit)
    rows = [
        LogRow(row_id, email, describe(kind_, days), *rest)
        for row_id, email, kind_, days, *rest in session.execute(query).all()
    ]
    return total, rows


def _iso(value: datetime | None) -> str | None:
    return value.isoformat(timespec="seconds") if value else None
