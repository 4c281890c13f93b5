"""Requests to confirm: asking a list's unconfirmed subscriptions (imported or added) to confirm.

A *run* (:class:`~newsletter.store.models.ConfirmationRun`) is one such request, started by
`newsletter lists request-confirmation SLUG`, the API or the admin list page. Starting it
(:func:`start_run`) is one transaction that picks, with set-based statements, every
unconfirmed subscription of the list except:

* a suppressed address: never asked, whatever the reason of its suppression;
* one asked in the last 7 days (``subscriptions.confirmation_requested_at``, set when a
  confirmation email, the form's or a run's, was accepted by the SMTP server), unless the
  editor asks ``again``;
* one still queued in an unfinished run (asking twice at once helps nobody, even ``again``).

and writes one :class:`~newsletter.store.models.ConfirmationMail` row per recipient: the run's log,
like a send's deliveries. Runs for one list start one at a time (the list's row is locked on
PostgreSQL; SQLite writes one at a time anyway), so two runs started at once never pick the
same people. A run with nobody to ask is not stored.

The worker's side (claiming a batch of rows, handing one over, recording outcomes) is here
too, as small functions over a Session; the loop that mails them is
:mod:`newsletter.delivery.confirmation_mailing`, which explains how a crash or a redelivered task is
kept from mailing anyone twice.

Confirming through such an email is the ordinary ``/confirm/{token}`` flow: the token is
issued when its email is made (not at the subscription's import, nor at the run's start), so
the link lives its full lifetime, and an unconfirmed subscription always accepts it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum
from typing import Any

from sqlalchemy import and_, case, exists, func, insert, literal, not_, or_, select, update
from sqlalchemy.orm import Session

from newsletter.errors import InvalidInput, NotFound
from newsletter.store.db import id_ranges, insert_on_conflict_ignore, rowcount
from newsletter.store.models import (
    ConfirmationMail,
    ConfirmationRun,
    MailingList,
    Subscriber,
    Subscription,
    Suppression,
    utcnow,
)
from newsletter.store.states import ConfirmationMailStatus, ConfirmationRunStatus, SubscriptionStatus, SuppressionReason
from subscribers.lists import get_list

#: Nobody is asked again within this time, unless the editor insists (``again``).
ASK_AGAIN_AFTER = timedelta(days=7)
#: A row a worker was handing to the SMTP server when it died: it may have gone out.
UNKNOWN_OUTCOME = (
    "not known whether it went out: the worker stopped while handing it to the SMTP server; "
    "it is not sent again (ask again later with --again if needed)"
)
_OPEN = (ConfirmationMailStatus.PENDING, ConfirmationMailStatus.SENDING)  # rows a run may still mail

Batch = tuple[int, int]  # first and last row id, inclusive


# --- starting a run ------------------------------------------------------------------------


@dataclass(frozen=True)
class RunStarted:
    """What starting a run did: the rows queued (in ``batches``) and who was left out, and why."""

    list_slug: str
    run_id: int | None  # None when nobody was queued (nothing is stored)
    queued: int
    asked_recently: int
    suppressed: int
    already_queued: int
    again: bool
    batches: list[Batch]

    @property
    def unconfirmed(self) -> int:
        return self.queued + self.asked_recently + self.suppressed + self.already_queued

    def left_out(self, again_hint: str) -> list[str]:
        """One phrase per reason anyone was left out; ``again_hint`` is the edge's way to ask anyway."""
        parts = []
        if self.asked_recently:
            parts.append(
                f"{_people(self.asked_recently)} asked in the last {ASK_AGAIN_AFTER.days} days "
                f"({again_hint} to ask them anyway)"
            )
        if self.already_queued:
            parts.append(f"{_people(self.already_queued)} still queued by an earlier request")
        if self.suppressed:
            parts.append(f"{self.suppressed} suppressed address{'es' if self.suppressed != 1 else ''} (never mailed)")
        return parts

    def describe(self, again_hint: str = "add --again") -> str:
        """The sentence the CLI prints (the API and admin UI say the same with their own hint)."""
        if self.unconfirmed == 0:
            return f"{self.list_slug} has no unconfirmed subscribers: nobody to ask."
        head = f"Queued {self.queued} confirmation request{'s' if self.queued != 1 else ''} for {self.list_slug}" + (
            f" (run {self.run_id})." if self.run_id is not None else "."
        )
        left = self.left_out(again_hint)
        return head + (f" Left out: {'; '.join(left)}." if left else "")


def start_run(
    session: Session,
    list_slug: str,
    *,
    batch_size: int,
    again: bool = False,
    created_by: str = "",
    now: datetime | None = None,
) -> RunStarted:
    """Queue a request to confirm for the list's unconfirmed subscriptions (see the module's rules).

    Returns what was queued and who was left out; the caller enqueues ``batches`` after the
    commit. Raises NotFound (list), InvalidInput (batch size).
    """
    if batch_size < 1:
        raise InvalidInput("the batch size must be at least 1", where="NEWSLETTER_BATCH_SIZE")
    mailing_list = get_list(session, list_slug)
    # One run at a time per list: a second one waits here and then sees the first one's rows.
    session.execute(select(MailingList.id).where(MailingList.id == mailing_list.id).with_for_update())
    now = now or utcnow()
    unconfirmed = _Unconfirmed(mailing_list.id, now)
    total, n_suppressed, n_queued, n_recent = unconfirmed.count(session)
    if again:
        n_recent = 0
    if total - n_suppressed - n_queued - n_recent == 0:
        return RunStarted(mailing_list.slug, None, 0, n_recent, n_suppressed, n_queued, again, [])
    run = ConfirmationRun(
        list_id=mailing_list.id,
        status=ConfirmationRunStatus.SENDING,
        again=again,
        total=0,
        asked_recently=n_recent,
        suppressed=n_suppressed,
        already_queued=n_queued,
        created_by=created_by[:100],
        created_at=now,
    )
    session.add(run)
    session.flush()
    run.total = _queue_mails(session, run.id, unconfirmed.to_ask(again), now)
    return RunStarted(
        mailing_list.slug,
        run.id,
        run.total,
        n_recent,
        n_suppressed,
        n_queued,
        again,
        pending_batches(session, run.id, batch_size),
    )


class _Unconfirmed:
    """A list's unconfirmed subscriptions (joined to their subscriber) and what leaves one out of a run."""

    def __init__(self, list_id: int, now: datetime) -> None:
        self.on_list = (Subscription.list_id == list_id, Subscription.status == SubscriptionStatus.UNCONFIRMED)
        self.suppressed = exists().where(Suppression.email == Subscriber.email)
        self.queued = exists().where(
            ConfirmationMail.subscription_id == Subscription.id, ConfirmationMail.status.in_(_OPEN)
        )
        self.recent = Subscription.confirmation_requested_at >= now - ASK_AGAIN_AFTER

    def count(self, session: Session) -> tuple[int, int, int, int]:
        """How many in all, suppressed, queued (not suppressed), asked recently (neither): one statement."""
        suppressed, queued, recent = self.suppressed, self.queued, self.recent
        counted = session.execute(
            select(
                func.count(),
                func.coalesce(func.sum(case((suppressed, 1), else_=0)), 0),
                func.coalesce(func.sum(case((and_(not_(suppressed), queued), 1), else_=0)), 0),
                func.coalesce(func.sum(case((and_(not_(suppressed), not_(queued), recent), 1), else_=0)), 0),
            )
            .select_from(Subscription)
            .join(Subscriber, Subscriber.id == Subscription.subscriber_id)
            .where(*self.on_list)
        ).one()
        total, n_suppressed, n_queued, n_recent = (int(v or 0) for v in counted)
        return total, n_suppressed, n_queued, n_recent

    def to_ask(self, again: bool) -> list[Any]:
        """The conditions of those a run asks: not suppressed, not queued, not asked recently unless ``again``."""
        return [*self.on_list, not_(self.suppressed), not_(self.queued)] + (
            [] if again else [or_(Subscription.confirmation_requested_at.is_(None), not_(self.recent))]
        )


def _queue_mails(session: Session, run_id: int, to_ask: list[Any], now: datetime) -> int:
    """Write the run's rows, one ``pending`` per subscription to ask, with one INSERT ... SELECT; return their number."""
    rows = (
        select(
            literal(run_id),
            Subscription.id,
            Subscriber.email,
            literal(ConfirmationMailStatus.PENDING, ConfirmationMail.status.type),
            literal(0),
            literal(now, ConfirmationMail.updated_at.type),
        )
        .join(Subscriber, Subscriber.id == Subscription.subscriber_id)
        .where(*to_ask)
        .order_by(Subscription.id)
    )
    session.execute(
        insert(ConfirmationMail).from_select(
            ["run_id", "subscription_id", "email", "status", "attempts", "updated_at"], rows
        ),
        execution_options={"synchronize_session": False},
    )
    # Counted, not taken from rowcount: drivers report -1 for INSERT ... SELECT on PostgreSQL.
    return (
        session.scalar(select(func.count()).select_from(ConfirmationMail).where(ConfirmationMail.run_id == run_id)) or 0
    )


def pending_batches(session: Session, run_id: int, batch_size: int, *, due_only: bool = False) -> list[Batch]:
    """The run's rows still to mail, as id ranges of ``batch_size`` rows (computed in the database).

    ``due_only``: only rows no live worker holds and whose retry is due (what the reconciler re-queues).
    """
    conditions: list[Any] = [ConfirmationMail.run_id == run_id, ConfirmationMail.status.in_(_OPEN)]
    if due_only:
        now = utcnow()
        conditions += [
            or_(ConfirmationMail.claim_expires.is_(None), ConfirmationMail.claim_expires < now),
            or_(ConfirmationMail.next_attempt_at.is_(None), ConfirmationMail.next_attempt_at <= now),
        ]
    return id_ranges(session, ConfirmationMail.id, conditions, batch_size)


def unfinished_runs(session: Session) -> list[int]:
    return list(
        session.scalars(
            select(ConfirmationRun.id)
            .where(ConfirmationRun.status == ConfirmationRunStatus.SENDING)
            .order_by(ConfirmationRun.id)
        )
    )


def finish_if_done(session: Session, run_id: int) -> bool:
    """Mark the run finished once no row is left to mail. Returns whether it did."""
    still_open = exists().where(ConfirmationMail.run_id == run_id, ConfirmationMail.status.in_(_OPEN))
    return bool(
        rowcount(
            session.execute(
                update(ConfirmationRun)
                .where(
                    ConfirmationRun.id == run_id,
                    ConfirmationRun.status == ConfirmationRunStatus.SENDING,
                    not_(still_open),
                )
                .values(finished_at=utcnow(), status=ConfirmationRunStatus.FINISHED)
                .execution_options(synchronize_session=False)
            )
        )
    )


def record_asked(session: Session, subscription_id: int, when: datetime | None = None) -> None:
    """Note that a confirmation email to the subscription was just accepted by the SMTP server."""
    session.execute(
        update(Subscription)
        .where(Subscription.id == subscription_id)
        .values(confirmation_requested_at=when or utcnow())
        .execution_options(synchronize_session=False)
    )


# --- reading runs and their logs ----------------------------------------------------------------


@dataclass(frozen=True)
class RunSummary:
    run: ConfirmationRun
    list_slug: str
    counts: dict[str, int]  # rows by status

    @property
    def pending(self) -> int:
        return sum(self.counts.get(s, 0) for s in _OPEN)

    def as_json(self) -> dict[str, Any]:
        r = self.run
        return {
            "id": r.id,
            "list": self.list_slug,
            "status": r.status,
            "again": r.again,
            "queued": r.total,
            "left_out": {
                "asked_recently": r.asked_recently,
                "suppressed": r.suppressed,
                "already_queued": r.already_queued,
            },
            "sent": self.counts.get(ConfirmationMailStatus.SENT, 0),
            "failed": self.counts.get(ConfirmationMailStatus.FAILED, 0),
            "skipped": self.counts.get(ConfirmationMailStatus.SKIPPED, 0),
            "pending": self.pending,
            "created_by": r.created_by,
            "created_at": _iso(r.created_at),
            "finished_at": _iso(r.finished_at),
        }


@dataclass(frozen=True)
class LogRow:
    id: int
    email: str
    status: str
    attempts: int
    smtp_code: int | None
    smtp_reply: str | None
    message_id: str | None
    sent_at: datetime | None
    updated_at: datetime

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "email": self.email,
            "status": self.status,
            "attempts": self.attempts,
            "smtp_code": self.smtp_code,
            "smtp_reply": self.smtp_reply,
            "message_id": self.message_id,
            "sent_at": _iso(self.sent_at),
            "updated_at": _iso(self.updated_at),
        }


def runs_of_list(session: Session, list_slug: str, *, limit: int = 20) -> list[RunSummary]:
    """The list's runs, newest first. Raises NotFound."""
    mailing_list = get_list(session, list_slug)
    runs = session.scalars(
        select(ConfirmationRun)
        .where(ConfirmationRun.list_id == mailing_list.id)
        .order_by(ConfirmationRun.id.desc())
        .limit(limit)
    ).all()
    return [_summary(session, run, mailing_list.slug) for run in runs]


def get_run(session: Session, list_slug: str, run_id: int | None = None) -> RunSummary:
    """One run of the list (its latest without ``run_id``). Raises NotFound."""
    mailing_list = get_list(session, list_slug)
    query = select(ConfirmationRun).where(ConfirmationRun.list_id == mailing_list.id)
    if run_id is not None:
        query = query.where(ConfirmationRun.id == run_id)
    run = session.scalar(query.order_by(ConfirmationRun.id.desc()).limit(1))
    if run is None:
        if run_id is None:
            raise NotFound(
                f"{list_slug} has had no request to confirm yet; "
                f"start one with `newsletter lists request-confirmation {list_slug}`"
            )
        raise NotFound(
            f"{list_slug} has no request to confirm with id {run_id} "
            f"(see `newsletter lists confirmation-runs {list_slug}`)"
        )
    return _summary(session, run, mailing_list.slug)


def run_log(
    session: Session, run_id: int, *, status: str | None = None, offset: int = 0, limit: int | None = None
) -> tuple[int, list[LogRow]]:
    """How many rows of the run match, and those rows (a page of them with ``limit``) in id order.

    Raises InvalidInput (unknown status).
    """
    if status is not None and status not in tuple(ConfirmationMailStatus):
        raise InvalidInput(f"unknown status {status!r}; use one of {', '.join(ConfirmationMailStatus)}", where="status")
    conditions: list[Any] = [ConfirmationMail.run_id == run_id]
    if status is not None:
        conditions.append(ConfirmationMail.status == status)
    total = session.scalar(select(func.count()).select_from(ConfirmationMail).where(*conditions)) or 0
    query = (
        select(
            ConfirmationMail.id,
            ConfirmationMail.email,
            ConfirmationMail.status,
            ConfirmationMail.attempts,
            ConfirmationMail.smtp_code,
            ConfirmationMail.smtp_reply,
            ConfirmationMail.message_id,
            ConfirmationMail.sent_at,
            ConfirmationMail.updated_at,
        )
        .where(*conditions)
        .order_by(ConfirmationMail.id)
        .offset(offset)
    )
    if limit is not None:
        query = query.limit(limit)
    return total, [LogRow(*row) for row in session.execute(query)]


def _summary(session: Session, run: ConfirmationRun, slug: str) -> RunSummary:
    rows = session.execute(
        select(ConfirmationMail.status, func.count())
        .where(ConfirmationMail.run_id == run.id)
        .group_by(ConfirmationMail.status)
    ).all()
    return RunSummary(run, slug, {status: count for status, count in rows})


# --- the worker's side: claiming, handing over, recording --------------------------------------


@dataclass(frozen=True)
class Claimed:
    row_id: int
    subscription_id: int
    subscriber_id: int
    email: str
    name: str
    attempts: int


class Handoff(Enum):
    GO = "go"  # marked "sending": mail it now
    SKIPPED = "skipped"  # confirmed, left or suppressed since the run started: logged, not mailed
    LOST = "lost"  # no longer this worker's (its claim lapsed and another took it): leave it alone


def claim(session: Session, run_id: int, first_id: int, last_id: int, me: str, seconds: float) -> list[Claimed]:
    """Claim the run's due, unheld rows with ids in [first_id, last_id] for ``seconds``; return them.

    Rows a dead worker left "sending" (its claim lapsed) are logged as failed with
    :data:`UNKNOWN_OUTCOME`, never mailed again, and count as asked.
    """
    now = utcnow()
    in_range = (ConfirmationMail.run_id == run_id, ConfirmationMail.id.between(first_id, last_id))
    orphaned = session.scalars(
        update(ConfirmationMail)
        .where(
            *in_range, ConfirmationMail.status == ConfirmationMailStatus.SENDING, ConfirmationMail.claim_expires < now
        )
        .values(
            status=ConfirmationMailStatus.FAILED,
            smtp_reply=UNKNOWN_OUTCOME,
            claimed_by=None,
            claim_expires=None,
            updated_at=now,
        )
        .returning(ConfirmationMail.subscription_id)
        .execution_options(synchronize_session=False)
    ).all()
    if orphaned:
        session.execute(
            update(Subscription)
            .where(Subscription.id.in_(orphaned))
            .values(confirmation_requested_at=now)
            .execution_options(synchronize_session=False)
        )
    session.execute(
        update(ConfirmationMail)
        .where(
            *in_range,
            ConfirmationMail.status == ConfirmationMailStatus.PENDING,
            or_(ConfirmationMail.claim_expires.is_(None), ConfirmationMail.claim_expires < now),
            or_(ConfirmationMail.next_attempt_at.is_(None), ConfirmationMail.next_attempt_at <= now),
        )
        .values(claimed_by=me, claim_expires=now + timedelta(seconds=seconds))
        .execution_options(synchronize_session=False)
    )
    rows = session.execute(
        select(
            ConfirmationMail.id,
            ConfirmationMail.subscription_id,
            Subscription.subscriber_id,
            ConfirmationMail.email,
            Subscriber.name,
            ConfirmationMail.attempts,
        )
        .join(Subscription, Subscription.id == ConfirmationMail.subscription_id)
        .join(Subscriber, Subscriber.id == Subscription.subscriber_id)
        .where(*in_range, ConfirmationMail.claimed_by == me, ConfirmationMail.status == ConfirmationMailStatus.PENDING)
        .order_by(ConfirmationMail.id)
    )
    return [Claimed(*row) for row in rows]


def hand_over(session: Session, row_id: int, me: str) -> Handoff:
    """Check the row may still be mailed and mark it "sending" (commit before mailing it)."""
    found = session.execute(
        select(ConfirmationMail.status, ConfirmationMail.claimed_by, Subscription.status, Suppression.reason)
        .join(Subscription, Subscription.id == ConfirmationMail.subscription_id)
        .outerjoin(Suppression, Suppression.email == ConfirmationMail.email)
        .where(ConfirmationMail.id == row_id)
    ).first()
    if found is None or found[0] != ConfirmationMailStatus.PENDING or found[1] != me:
        return Handoff.LOST
    _, _, subscription_status, suppression = found
    reason = None
    if subscription_status == SubscriptionStatus.CONFIRMED:
        reason = "not sent: confirmed meanwhile"
    elif subscription_status != SubscriptionStatus.UNCONFIRMED:
        reason = "not sent: left the list meanwhile"
    elif suppression is not None:
        reason = f"not sent: suppressed meanwhile ({suppression})"
    now = utcnow()
    values: dict[str, Any] = (
        {
            "status": ConfirmationMailStatus.SKIPPED,
            "smtp_reply": reason,
            "claimed_by": None,
            "claim_expires": None,
            "updated_at": now,
        }
        if reason
        else {"status": ConfirmationMailStatus.SENDING, "updated_at": now}
    )
    changed = rowcount(
        session.execute(
            update(ConfirmationMail)
            .where(
                ConfirmationMail.id == row_id,
                ConfirmationMail.claimed_by == me,
                ConfirmationMail.status == ConfirmationMailStatus.PENDING,
            )
            .values(**values)
            .execution_options(synchronize_session=False)
        )
    )
    if not changed:
        return Handoff.LOST
    return Handoff.SKIPPED if reason else Handoff.GO


def record_outcome(
    session: Session,
    row: Claimed,
    *,
    status: str,
    code: int | None,
    reply: str,
    message_id: str | None,
    next_attempt_at: datetime | None = None,
    suppress_as_hard_bounce: bool = False,
) -> None:
    """Log one attempt: "sent" (the subscription counts as asked now), "failed", or "pending" (a retry
    at ``next_attempt_at``). Written by id alone: the truth of an attempt wins over a lapsed claim."""
    now = utcnow()
    session.execute(
        update(ConfirmationMail)
        .where(ConfirmationMail.id == row.row_id)
        .values(
            status=status,
            attempts=ConfirmationMail.attempts + 1,
            smtp_code=code,
            smtp_reply=reply,
            message_id=message_id,
            sent_at=now if status == ConfirmationMailStatus.SENT else None,
            next_attempt_at=next_attempt_at,
            claimed_by=None,
            claim_expires=None,
            updated_at=now,
        )
        .execution_options(synchronize_session=False)
    )
    if status == ConfirmationMailStatus.SENT:
        record_asked(session, row.subscription_id, now)
    if suppress_as_hard_bounce:
        session.execute(
            insert_on_conflict_ignore(session, Suppression.__table__, index_elements=["email"]),
            [{"email": row.email, "reason": SuppressionReason.HARD_BOUNCE, "note": reply[:500], "created_at": now}],
        )


def renew(session: Session, run_id: int, first_id: int, last_id: int, me: str, seconds: float) -> None:
    session.execute(
        update(ConfirmationMail)
        .where(
            ConfirmationMail.run_id == run_id,
            ConfirmationMail.id.between(first_id, last_id),
            ConfirmationMail.claimed_by == me,
            ConfirmationMail.status.in_(_OPEN),
        )
        .values(claim_expires=utcnow() + timedelta(seconds=seconds))
        .execution_options(synchronize_session=False)
    )


def release(
    session: Session, run_id: int, first_id: int, last_id: int, me: str, *, due_at: datetime | None = None
) -> None:
    """Give back the pending rows this worker holds (it stops early; another may take them), due again
    only at ``due_at`` if given (the SMTP server's next try)."""
    values: dict[str, Any] = {"claimed_by": None, "claim_expires": None}
    if due_at is not None:
        values["next_attempt_at"] = due_at
    session.execute(
        update(ConfirmationMail)
        .where(
            ConfirmationMail.run_id == run_id,
            ConfirmationMail.id.between(first_id, last_id),
            ConfirmationMail.claimed_by == me,
            ConfirmationMail.status == ConfirmationMailStatus.PENDING,
        )
        .values(**values)
        .execution_options(synchronize_session=False)
    )


def next_due(session: Session, run_id: int, first_id: int, last_id: int) -> float | None:
    """Seconds until an open row of the range can be taken (a retry, or a lapsed claim); None if none is open."""
    next_attempt, claim_expires, still_open = session.execute(
        select(
            func.min(ConfirmationMail.next_attempt_at), func.min(ConfirmationMail.claim_expires), func.count()
        ).where(
            ConfirmationMail.run_id == run_id,
            ConfirmationMail.id.between(first_id, last_id),
            ConfirmationMail.status.in_(_OPEN),
        )
    ).one()
    if not still_open:
        return None
    moments = [m for m in (next_attempt, claim_expires) if m is not None]
    if not moments:
        return 0.0
    return max(0.0, (min(moments) - utcnow()).total_seconds()) + 0.1


def _people(count: int) -> str:
    return f"{count} {'person' if count == 1 else 'people'}"


def _iso(value: datetime | None) -> str | None:
    return value.isoformat(timespec="seconds") if value else None
