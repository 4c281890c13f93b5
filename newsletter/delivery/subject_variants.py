"""A send's subject variants: the editor's plan, who gets which subject, and the rest held back meanwhile.

A subject test (``newsletter send ID --subject-test "B" --test-share 20 --decide-after 2h``) is a
:class:`SubjectTestPlan` checked here (:func:`plan`) and stored with the send as a ``subject_tests`` row.
When the send starts, its one snapshot (:mod:`newsletter.delivery.sending`) writes every
recipient's delivery row as usual, ranked by a keyed mix of the subscriber id (:func:`rank_key`,
the seed random per send, so the choice is random but can be made again from the seed): the first
``share`` % of the ranking (rounded half up) is the test share, alternately A and B down the
ranking (``deliveries.variant`` 1 and 2), the rest gets no variant. The rows are written in the
ranking's order, so the test share's rows are the send's first ids and its batches few.

While the test runs, the rest is held back: the claim, the batches and the health checks leave out
the rows without a variant (:func:`held_back`, :func:`phase`) until the test is decided
(:mod:`newsletter.delivery.subject_tests`), after which those rows carry the winner's subject.

A test is decided by the readers' clicks and opens, so every list of the send must track them
(:func:`refuse_untracked`); each subject must get at least one reader (:func:`refuse_too_small`).
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Integer, Select, case, func, literal, null, select
from sqlalchemy.orm import Session

from newsletter.errors import Conflict, InvalidInput
from newsletter.mail.messages import check_header_value
from newsletter.store.db import id_ranges
from newsletter.store.models import Delivery, MailingList, Send, SubjectTest
from newsletter.store.states import DeliveryStatus, SubjectTestState, Tracking

__all__ = [
    "NAMES",
    "A",
    "B",
    "SubjectTestPlan",
    "UntrackedLists",
    "begin",
    "cancel_with_send",
    "format_duration",
    "held_back",
    "holds_back",
    "parse_duration",
    "phase",
    "plan",
    "planned",
    "rank_key",
    "rank_key_of",
    "ranked",
    "refuse_too_small",
    "refuse_untracked",
    "released",
    "started",
    "store_plan",
    "test_batches",
    "test_size",
]

A, B = 1, 2  # deliveries.variant: the issue's own subject, the other one
NAMES = {A: "A", B: "B"}
DEFAULT_SHARE = 20
DEFAULT_DECIDE_AFTER = "4h"
MAX_DECIDE_AFTER = 30 * 86400
#: The option names the CLI shows; the API and the admin form pass their own field names.
CLI_FIELDS = ("--subject-test", "--test-share", "--decide-after")

_DURATION = re.compile(r"(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")
_PRIME = 2_147_483_647  # 2**31 - 1: every step below stays under 2**62, whatever the database


@dataclass(frozen=True)
class SubjectTestPlan:
    """What the editor asked for: the other subject, the test share in percent, and the wait in seconds."""

    subject_b: str
    share: int = DEFAULT_SHARE
    decide_after: int = 4 * 3600

    def describe(self) -> str:
        return (
            f"when the send starts, {self.share} % of its recipients get the issue's subject (A) or "
            f'"{self.subject_b}" (B), half each; the winner is decided {format_duration(self.decide_after)} later '
            "and goes to the rest"
        )


def parse_duration(value: str, *, where: str = "--decide-after") -> int:
    """Seconds in "90m", "2h", "1h30m", "1d", "45s", "0s" (a bare number is minutes). Raises InvalidInput."""
    text = value.strip().lower().replace(" ", "")
    if text.isdigit():
        seconds = int(text) * 60
    else:
        match = _DURATION.fullmatch(text)
        if not text or match is None:
            raise InvalidInput(
                f"not a duration: {value!r}; use e.g. 2h, 90m, 1h30m, 1d or 0s (decide at the next tick)", where=where
            )
        days, hours, minutes, secs = (int(g) if g else 0 for g in match.groups())
        seconds = ((days * 24 + hours) * 60 + minutes) * 60 + secs
    if seconds > MAX_DECIDE_AFTER:
        raise InvalidInput(f"{value!r} is longer than 30 days; decide within the report window", where=where)
    return seconds


def format_duration(seconds: int) -> str:
    """ "2 h", "1 h 30 min", "45 s", "1 day 2 h"."""
    if seconds < 60:
        return f"{seconds} s"
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes = rest // 60
    parts = [f"{days} day{'s' if days != 1 else ''}"] if days else []
    parts += [f"{hours} h"] if hours else []
    parts += [f"{minutes} min"] if minutes else []
    return " ".join(parts)


def plan(
    subject_b: str | None,
    share: int | None = None,
    decide_after: str | int | None = None,
    *,
    fields: Sequence[str] = CLI_FIELDS,
) -> SubjectTestPlan | None:
    """The editor's test, checked: None without a B subject (and then no share or wait may be given).

    ``fields`` names the three inputs in errors (the CLI's options by default). Raises InvalidInput.
    """
    subject_field, share_field, after_field = fields
    if subject_b is None:
        given = [name for name, value in ((share_field, share), (after_field, decide_after)) if value is not None]
        if given:
            raise InvalidInput(f"only with a subject test: give the other subject with {subject_field}", where=given[0])
        return None
    subject = subject_b.strip()
    if not subject:
        raise InvalidInput("the other subject is empty", where=subject_field)
    if len(subject) > 998:
        raise InvalidInput(f"the other subject has {len(subject)} characters; at most 998", where=subject_field)
    check_header_value(subject_field, subject)
    share = DEFAULT_SHARE if share is None else share
    if not 1 <= share <= 100:
        raise InvalidInput(
            f"the test share is a percentage of the recipients from 1 to 100, got {share}", where=share_field
        )
    if decide_after is None:
        decide_after = DEFAULT_DECIDE_AFTER
    seconds = decide_after if isinstance(decide_after, int) else parse_duration(decide_after, where=after_field)
    if not 0 <= seconds <= MAX_DECIDE_AFTER:
        raise InvalidInput(f"the wait is from 0 to {MAX_DECIDE_AFTER} seconds, got {seconds}", where=after_field)
    return SubjectTestPlan(subject, share, seconds)


class UntrackedLists(Conflict):
    """A subject test on a send to lists that do not count their readers' clicks and opens.

    ``summary`` states it; ``slugs`` are the lists with tracking off; ``str()`` adds the CLI's way out.
    """

    def __init__(self, slugs: Sequence[str]) -> None:
        self.slugs = tuple(slugs)
        named = " and ".join(self.slugs)
        has = "has" if len(self.slugs) == 1 else "have"
        self.summary = (
            f"a subject test needs its readers' clicks and opens to pick the winner, but {named} {has} "
            f"tracking off, so none would be counted"
        )
        commands = "; ".join(f"`newsletter lists update {slug} --tracking anonymous`" for slug in self.slugs)
        super().__init__(f"{self.summary}: turn it on with {commands} (or individual), or send without a subject test")


def refuse_untracked(lists: Sequence[MailingList]) -> None:
    """Raises UntrackedLists naming each of ``lists`` whose tracking is off."""
    off = [m.slug for m in lists if (m.tracking or Tracking.OFF) == Tracking.OFF]
    if off:
        raise UntrackedLists(off)


def test_size(recipients: int, share: int) -> int:
    """How many of ``recipients`` are in the test: ``share`` % of them, rounded half up."""
    return (2 * recipients * share + 100) // 200


def refuse_too_small(recipients: int, share: int, *, where: str = "--test-share") -> None:
    """Raises InvalidInput when the test share leaves a subject with no reader."""
    size = test_size(recipients, share)
    if size < 2:
        raise InvalidInput(
            f"{share} % of {recipients} recipient{'' if recipients == 1 else 's'} is {size}: each subject needs at "
            "least one reader; raise the test share or send without a subject test",
            where=where,
        )


def store_plan(session: Session, send: Send, test: SubjectTestPlan) -> SubjectTest:
    """Keep the (flushed) send's test, planned: it starts with the send."""
    row = SubjectTest(
        send_id=send.id,
        subject_b=test.subject_b,
        share=test.share,
        decide_after=test.decide_after,
        seed=random.SystemRandom().randrange(1, _PRIME),
        state=SubjectTestState.PLANNED,
        recipients_a=0,
        recipients_b=0,
        remainder=0,
    )
    session.add(row)
    session.flush()
    return row


def planned(session: Session, send_id: int) -> SubjectTest | None:
    """The send's test if it waits for the send to start."""
    row = session.get(SubjectTest, send_id)
    return row if row is not None and row.state == SubjectTestState.PLANNED else None


def _steps(seed: int) -> tuple[int, int, int, int]:
    """The mix's four constants, drawn from the seed (the same seed, the same ranking)."""
    draw = random.Random(seed)
    return tuple(draw.randrange(1, _PRIME) for _ in range(4))  # type: ignore[return-value]


def rank_key(subscriber_id: Any, seed: int) -> ColumnElement[int]:
    """A subscriber id's place in the send's random ranking, in SQL both databases compute alike.

    Two rounds of an affine map modulo the prime 2**31 - 1 (a permutation of the ids below it) with an
    xor-shift between them (``x ^ (x >> 13)``, written ``(x | y) - (x & y)``: SQLite has no xor), so
    that neighbouring ids land far apart and no arithmetic pattern of the ids shows in the choice.
    """
    a, c, b, d = _steps(seed)
    first = ((subscriber_id % _PRIME) * a + c) % _PRIME
    shifted = first.op(">>")(literal(13, Integer))  # (PostgreSQL shifts a bigint by an integer only)
    mixed = first.op("|")(shifted) - first.op("&")(shifted)
    return ((mixed % _PRIME) * b + d) % _PRIME  # type: ignore[no-any-return]


def rank_key_of(subscriber_id: int, seed: int) -> int:
    """:func:`rank_key` in Python: the test's choice, made again from its seed."""
    a, c, b, d = _steps(seed)
    first = ((subscriber_id % _PRIME) * a + c) % _PRIME
    mixed = first ^ (first >> 13)
    return ((mixed % _PRIME) * b + d) % _PRIME


def ranked(recipients: Select[Any], names: Sequence[str], subscriber_id: Any, test: SubjectTest) -> Select[Any]:
    """The snapshot's SELECT (``recipients``, its columns labelled ``names``) with each row's variant added,
    in the order of the ranking: the first ``share`` % (rounded half up) alternately A and B, the rest NULL."""
    inner = recipients.add_columns(rank_key(subscriber_id, test.seed).label("rank_key")).order_by(None).subquery()
    numbered = select(
        *(inner.c[n] for n in names),
        func.row_number().over(order_by=(inner.c.rank_key, inner.c.subscriber_id)).label("rank"),
        func.count().over().label("everyone"),
    ).subquery()
    rank = numbered.c.rank
    in_test = rank * 200 <= numbered.c.everyone * (2 * test.share) + 100
    variant = case((in_test & (rank % 2 == 1), literal(A)), (in_test, literal(B)), else_=null())
    return select(*(numbered.c[n] for n in names), variant.label("variant")).order_by(rank)


def begin(session: Session, send: Send, test: SubjectTest, now: datetime) -> None:
    """The snapshot is written: count each variant and the rest, and start the test's clock.

    Raises InvalidInput when a subject got no reader (the caller's transaction stores nothing then).
    """
    counts = dict(
        session.execute(
            select(Delivery.variant, func.count()).where(Delivery.send_id == send.id).group_by(Delivery.variant)
        ).all()
    )
    test.recipients_a, test.recipients_b, test.remainder = counts.get(A, 0), counts.get(B, 0), counts.get(None, 0)
    if not test.recipients_b:
        refuse_too_small(test.recipients_a + test.remainder, test.share)
    test.state = SubjectTestState.TESTING
    test.decide_at = now + timedelta(seconds=test.decide_after)


def test_batches(session: Session, send_id: int, batch_size: int) -> list[tuple[int, int]]:
    """The test share's pending rows as id ranges (the first the send's workers get)."""
    return id_ranges(
        session,
        Delivery.id,
        [Delivery.send_id == send_id, Delivery.status == DeliveryStatus.PENDING, Delivery.variant.is_not(None)],
        batch_size,
    )


def phase(session: Session, send_id: int) -> tuple[SubjectTestState, int | None] | None:
    """The send's test state and winner (None: the send has no test)."""
    row = session.execute(
        select(SubjectTest.state, SubjectTest.winner).where(SubjectTest.send_id == send_id)
    ).one_or_none()
    return None if row is None else (SubjectTestState(row[0]), row[1])


def holds_back(state: SubjectTestState | None) -> bool:
    """Whether rows without a variant wait (every state but decided: no winner to give them)."""
    return state is not None and state != SubjectTestState.DECIDED


def released() -> ColumnElement[bool]:
    """A delivery row that may go while the test is undecided: one of the test share."""
    return Delivery.variant.is_not(None)


def held_back(session: Session, send_id: int) -> tuple[ColumnElement[bool], ...]:
    """Conditions that leave out the rows held back by the send's undecided test (none without one)."""
    found = phase(session, send_id)
    return (released(),) if found is not None and holds_back(found[0]) else ()


def cancel_with_send(session: Session, send_id: int, now: datetime) -> None:
    """The send is cancelled: so is its test's rest, if it was still to come."""
    row = session.get(SubjectTest, send_id)
    if row is not None and row.state in (SubjectTestState.PLANNED, SubjectTestState.TESTING):
        row.state, row.decided_at, row.reason = SubjectTestState.CANCELLED, now, "the send was cancelled"


def started(session: Session, send_id: int) -> str | None:
    """What a send's test does now that the send started, in a sentence (None without a test)."""
    test = session.get(SubjectTest, send_id)
    send = session.get(Send, send_id)
    if test is None or send is None or test.state != SubjectTestState.TESTING or test.decide_at is None:
        return None
    rest = (
        f"the winner (by unique human clicks, opens breaking a tie) goes to the other {test.remainder:,} at "
        f"{test.decide_at:%Y-%m-%d %H:%M} UTC, in {format_duration(test.decide_after)}"
        if test.remainder
        else f"the winner is decided at {test.decide_at:%Y-%m-%d %H:%M} UTC (there is no one else to send to)"
    )
    return (
        f'Subject test: {test.recipients_a:,} get A ("{send.subject}") and {test.recipients_b:,} get B '
        f'("{test.subject_b}") now; {rest}. Follow it with `newsletter sends status {send_id}`.'
    )
