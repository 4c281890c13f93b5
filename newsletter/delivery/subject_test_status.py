"""A send's subject test as its status shows it, read as plain SQL: no SQLAlchemy at import time.

``sends status`` (on a bare DB-API connection), ``sends ls``, the API and the admin pages all read the
test through :func:`read_test` and say where it stands in one sentence (:meth:`SubjectTestStatus.line`), e.g.
"testing until 14:05 UTC (in 1 h 58 min): 500 got A and 500 got B; then the winning subject goes to
9,000 more". :data:`RELEASED` is the SQL condition the health checks use to leave out the rows an
undecided test holds back.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from newsletter.store.states import SubjectTestState

#: As :data:`newsletter.delivery.send_status.Query` (which imports this module): SQL and parameters in, rows out.
Query = Callable[[str, Mapping[str, object]], Sequence[Sequence[Any]]]

__all__ = ["RELEASED", "SUBJECT_TEST", "SubjectTestStatus", "read_test"]

#: The send's test, if it has one.
SUBJECT_TEST = """
SELECT state, subject_b, share, decide_after, decide_at, winner, decided_at, decided_by, reason,
       recipients_a, recipients_b, remainder
FROM subject_tests WHERE send_id = :send_id
"""

#: A pending row of the send that is not held back by its undecided subject test (on ``deliveries``).
RELEASED = (
    "(variant IS NOT NULL OR NOT EXISTS (SELECT 1 FROM subject_tests t"
    f" WHERE t.send_id = :send_id AND t.state <> '{SubjectTestState.DECIDED}'))"
)

NAMES = {1: "A", 2: "B"}


@dataclass(frozen=True)
class SubjectTestStatus:
    """A send's subject test: the two subjects, the share, the clock, and how it ended."""

    state: SubjectTestState
    subject_a: str
    subject_b: str
    share: int  # percent of the recipients in the test
    decide_after: int  # seconds after the start
    decide_at: datetime | None
    winner: str | None  # "A" or "B" once decided
    decided_at: datetime | None
    decided_by: str | None
    reason: str | None
    recipients_a: int
    recipients_b: int
    remainder: int

    def line(self, now: datetime | None = None) -> str:
        """Where the test stands, in one sentence."""
        now = now or datetime.now(UTC)
        rest = f"{self.remainder:,} more"
        if self.state == SubjectTestState.PLANNED:
            return (
                f"subject test planned: when the send starts, {self.share} % of its recipients get A or B (half "
                f"each); the winner is decided {_duration(self.decide_after)} later and goes to the rest"
            )
        if self.state == SubjectTestState.TESTING:
            split = f"{self.recipients_a:,} got A and {self.recipients_b:,} got B"
            then = f"then the winning subject goes to {rest}" if self.remainder else "there is no one else to send to"
            if self.decide_at is None or self.decide_at > now:
                until = "" if self.decide_at is None else f" until {_clock(self.decide_at, now)}"
                left = "" if self.decide_at is None else f" (in {_duration((self.decide_at - now).total_seconds())})"
                return f"testing{until}{left}: {split}; {then}"
            return (
                f"testing: due to be decided since {_clock(self.decide_at, now)}, at the scheduler's next tick "
                f"(is `newsletter scheduler` running?): {split}; {then}"
            )
        if self.state == SubjectTestState.DECIDED:
            who = "" if self.decided_by in (None, "scheduler") else f" by {self.decided_by}"
            when = _clock(self.decided_at, now) if self.decided_at else "(unknown time)"
            goes = f"it goes to the other {self.remainder:,}" if self.remainder else "no one else to send it to"
            return f"decided{who} at {when}: {self.winner} won; {goes}. {self.reason or ''}".strip()
        when = _clock(self.decided_at, now) if self.decided_at else "(unknown time)"
        if not self.remainder:
            return f"subject test cancelled: {self.reason or 'cancelled'} ({when})"
        return f"the rest ({self.remainder:,}) will not get it: {self.reason or 'cancelled'} ({when})"

    def as_json(self, now: datetime | None = None) -> dict[str, Any]:
        return {
            "state": str(self.state),
            "subject_a": self.subject_a,
            "subject_b": self.subject_b,
            "share": self.share,
            "decide_after_seconds": self.decide_after,
            "decide_at": _iso(self.decide_at),
            "recipients_a": self.recipients_a,
            "recipients_b": self.recipients_b,
            "remainder": self.remainder,
            "winner": self.winner,
            "decided_at": _iso(self.decided_at),
            "decided_by": self.decided_by,
            "reason": self.reason,
            "line": self.line(now),
        }


def read_test(query: Query, send_id: int, subject_a: str) -> SubjectTestStatus | None:
    """The send's test (``subject_a``: the send's own subject), or None when it has none."""
    rows = query(SUBJECT_TEST, {"send_id": send_id})
    if not rows:
        return None
    state, subject_b, share, after, decide_at, winner, decided_at, decided_by, reason, a, b, rest = rows[0]
    return SubjectTestStatus(
        SubjectTestState(state),
        subject_a,
        subject_b,
        int(share),
        int(after),
        _moment(decide_at),
        NAMES.get(winner) if winner is not None else None,
        _moment(decided_at),
        decided_by,
        reason,
        int(a),
        int(b),
        int(rest),
    )


def _moment(value: object) -> datetime | None:
    """A time read back (SQLite's naive UTC text, or a driver's datetime) as an aware UTC datetime."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if not isinstance(value, datetime):
        raise TypeError(f"not a time: {value!r}")
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat(timespec="seconds") if value else None


def _clock(moment: datetime, now: datetime) -> str:
    """ "14:05 UTC", with the date when it is not today."""
    moment = moment.astimezone(UTC)
    return moment.strftime("%H:%M UTC" if moment.date() == now.astimezone(UTC).date() else "%Y-%m-%d %H:%M UTC")


def _duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    if seconds < 120:
        return f"{seconds} s"
    minutes = seconds // 60
    if minutes < 120:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    return f"{hours // 24} days {hours % 24} h"
