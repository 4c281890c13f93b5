"""Deciding a subject test: the winner by its readers, the rest released exactly once.

When a test's wait is over, the scheduler's tick (``newsletter.worker.scheduler_tasks``) decides
it (:func:`decide_due`): each subject's figures are read
(:mod:`newsletter.engagement.variant_figures`), the winner is chosen by :func:`choose`, and the
test is marked decided by one conditional ``UPDATE ... WHERE state = 'testing'``: that is the
claim. Of several schedulers, or a tick run again after one was killed mid-way, only the one whose
update changed the row goes on, in the same transaction, to cut the rest's batches; the others
do nothing. Nothing of the rest can go before that commit (its rows are held back while the test
is undecided, :mod:`newsletter.delivery.subject_variants`), and the batches are queued after it:
a tick killed between the commit and the queueing leaves them to the workers' reconciler, which
re-queues due rows no task holds. The batch claims and the sent-journal make a batch queued twice
send nothing twice, as for every send.

**The rule** (:func:`choose`): the subject whose copies got the larger share of unique human
clickers wins (the share of its copies delivered, so a subject with a few more copies has no
edge); equal shares of clickers are broken by the share of unique human openers; equal on both,
A (the issue's own subject) goes to the rest, and the reason says so.

Editors may decide early (:func:`decide_now`, by the same rule or choosing the winner) or cancel
the rest (:func:`cancel_rest`): only the test share then gets the issue.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from fractions import Fraction

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from newsletter.delivery.sending import Batch, get_send, pending_batches
from newsletter.delivery.subject_variants import NAMES, A, B
from newsletter.engagement.variant_figures import VariantFigures, figures_from_json, variant_figures
from newsletter.errors import Conflict, InvalidInput
from newsletter.store.db import rowcount
from newsletter.store.models import Delivery, Send, SubjectTest, utcnow
from newsletter.store.states import DeliveryStatus, SendStatus, SubjectTestState

__all__ = ["Decided", "Decision", "cancel_rest", "choose", "decide", "decide_due", "decide_now", "due", "parse_winner"]

SCHEDULER = "scheduler"


@dataclass(frozen=True)
class Decision:
    winner: int  # A or B
    reason: str


@dataclass(frozen=True)
class Decided:
    """A test this call decided: the winner, why, and the rest's batches to queue once committed."""

    send_id: int
    winner: str
    reason: str
    remainder: int
    batches: list[Batch]
    send_status: SendStatus


def _of(part: int, whole: int) -> str:
    share = f"{part / whole:.1%}" if whole else "-"
    return f"{part} of {whole} ({share})"


def choose(a: VariantFigures, b: VariantFigures) -> Decision:
    """The winner of A and B by their figures (see the module), and why, in a sentence."""

    def rate(part: int, whole: int) -> Fraction:
        return Fraction(part, whole) if whole else Fraction(0)

    clicks_a, clicks_b = rate(a.clicks, a.delivered), rate(b.clicks, b.delivered)
    clicks = f"A {_of(a.clicks, a.delivered)}, B {_of(b.clicks, b.delivered)} of the copies delivered clicked"
    if clicks_a != clicks_b:
        winner = A if clicks_a > clicks_b else B
        return Decision(winner, f"{NAMES[winner]} won on unique human clicks: {clicks}.")
    opens_a, opens_b = rate(a.opens, a.delivered), rate(b.opens, b.delivered)
    opens = f"A {_of(a.opens, a.delivered)}, B {_of(b.opens, b.delivered)} opened"
    if opens_a != opens_b:
        winner = A if opens_a > opens_b else B
        return Decision(winner, f"Clicks tied ({clicks}); {NAMES[winner]} won on unique human opens: {opens}.")
    return Decision(
        A,
        f"A tie on clicks ({clicks}) and on opens ({opens}): A, the issue's own subject, goes to the rest.",
    )


def parse_winner(value: str | None, *, where: str = "--winner") -> int | None:
    """ "a" or "b" (any case) as A or B; None or "" for "by the figures". Raises InvalidInput."""
    if value is None or not value.strip():
        return None
    found = {"a": A, "b": B}.get(value.strip().lower())
    if found is None:
        raise InvalidInput(f"the winner is A or B, got {value!r}", where=where)
    return found


def due(session: Session, now: datetime | None = None) -> list[int]:
    """The sends whose test is due to be decided, soonest first."""
    return list(
        session.scalars(
            select(SubjectTest.send_id)
            .where(SubjectTest.state == SubjectTestState.TESTING, SubjectTest.decide_at <= (now or utcnow()))
            .order_by(SubjectTest.decide_at, SubjectTest.send_id)
        )
    )


def decide(
    session: Session,
    send_id: int,
    *,
    batch_size: int,
    now: datetime | None = None,
    by: str = SCHEDULER,
    winner: int | None = None,
) -> Decided | None:
    """Decide the send's test if it is still testing (``winner``: chosen by an editor, ``by``; else by the
    rule), and cut the rest's batches (none unless the send is sending: a paused one's are queued when it
    resumes). Returns None when the test was not testing when claimed (decided or cancelled meanwhile).

    The caller commits, then queues ``batches``.
    """
    now = now or utcnow()
    test = session.get(SubjectTest, send_id)
    send = session.get(Send, send_id)
    if test is None or send is None or test.state != SubjectTestState.TESTING:
        return None
    if test.final_figures is not None:  # the report window closed first: its events are rolled up
        a, b = (figures_from_json(test.final_figures[name]) for name in ("A", "B"))
    else:
        a, b = variant_figures(session, send_id, (send.subject, test.subject_b))
    if winner is None:
        decision = choose(a, b)
    else:
        by_rule = choose(a, b)
        agrees = (
            "the figures agree"
            if by_rule.winner == winner
            else f"by the figures {NAMES[by_rule.winner]} would have won"
        )
        decision = Decision(winner, f"{NAMES[winner]} chosen by {by}; {agrees}. {by_rule.reason}")
    claimed = rowcount(
        session.execute(
            update(SubjectTest)
            .where(SubjectTest.send_id == send_id, SubjectTest.state == SubjectTestState.TESTING)
            .values(
                state=SubjectTestState.DECIDED,
                winner=decision.winner,
                decided_at=now,
                decided_by=by,
                reason=decision.reason,
                figures={"A": a.as_json(), "B": b.as_json()},
            )
            .execution_options(synchronize_session=False)
        )
    )
    if not claimed:
        return None  # another tick, or an editor, got there first
    session.expire(test)
    batches = pending_batches(session, send_id, batch_size) if send.status == SendStatus.SENDING else []
    return Decided(send_id, NAMES[decision.winner], decision.reason, test.remainder, batches, send.status)


def decide_due(session: Session, send_id: int, *, batch_size: int, now: datetime | None = None) -> Decided | None:
    """The tick's decision of one due test (see :func:`decide`); None when it is not due or not testing."""
    now = now or utcnow()
    decide_at = session.scalar(select(SubjectTest.decide_at).where(SubjectTest.send_id == send_id))
    if decide_at is None or decide_at > now:
        return None
    return decide(session, send_id, batch_size=batch_size, now=now)


def _testing(session: Session, send_id: int) -> SubjectTest:
    """The send's test, which must still be testing. Raises NotFound, Conflict."""
    send = get_send(session, send_id)
    test = session.get(SubjectTest, send.id)
    if test is None:
        raise Conflict(f"send {send_id} has no subject test")
    if test.state == SubjectTestState.PLANNED:
        raise Conflict(f"send {send_id} has not started yet: its subject test starts with it")
    if test.state != SubjectTestState.TESTING:
        winner = f" ({NAMES[test.winner]} won)" if test.winner else ""
        raise Conflict(f"send {send_id}'s subject test is {test.state} already{winner}")
    return test


def decide_now(
    session: Session, send_id: int, *, batch_size: int, by: str, winner: int | None = None, now: datetime | None = None
) -> Decided:
    """An editor decides the test before its time: by the rule, or ``winner``. Raises NotFound, Conflict."""
    _testing(session, send_id)
    decided = decide(session, send_id, batch_size=batch_size, now=now, by=by, winner=winner)
    if decided is None:  # decided or cancelled between the read and the claim
        raise Conflict(f"send {send_id}'s subject test was decided or cancelled meanwhile")
    return decided


def cancel_rest(session: Session, send_id: int, *, by: str, now: datetime | None = None) -> int:
    """Cancel the rest of an undecided test: only the test share gets the issue. Returns how many deliveries
    were cancelled. Raises NotFound, Conflict (no test, or not testing)."""
    now = now or utcnow()
    test = _testing(session, send_id)
    claimed = rowcount(
        session.execute(
            update(SubjectTest)
            .where(SubjectTest.send_id == send_id, SubjectTest.state == SubjectTestState.TESTING)
            .values(
                state=SubjectTestState.CANCELLED,
                decided_at=now,
                decided_by=by,
                reason=f"cancelled by {by} before the test was decided",
            )
            .execution_options(synchronize_session=False)
        )
    )
    if not claimed:
        raise Conflict(f"send {send_id}'s subject test was decided or cancelled meanwhile")
    session.expire(test)
    cancelled = rowcount(
        session.execute(
            update(Delivery)
            .where(
                Delivery.send_id == send_id,
                Delivery.status == DeliveryStatus.PENDING,
                Delivery.variant.is_(None),
            )
            .values(
                status=DeliveryStatus.CANCELLED,
                smtp_reply="the subject test's rest was cancelled before this delivery",
                updated_at=now,
            )
            .execution_options(synchronize_session=False)
        )
    )
    send = get_send(session, send_id)
    pending = session.scalar(
        select(Delivery.id).where(Delivery.send_id == send_id, Delivery.status == DeliveryStatus.PENDING).limit(1)
    )
    if pending is None and send.status in (SendStatus.SENDING, SendStatus.PAUSED):
        send.status, send.finished_at = SendStatus.FINISHED, now
    return cancelled
