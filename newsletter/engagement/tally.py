"""A send's opens and clicks tallied per hour, link and origin: from its events, or from its rolled-up counts.

A :class:`Tally` is what a report reads and what a roll-up stores (one ``engagement_counts``
row per cell). Position 0 is the send as a whole: every open, and "any link" for clicks, so
a reader who follows three links is one unique clicker of the send and one of each link.

Bursts are told apart here, from the events: a reader's clicks on two different links within
:data:`~newsletter.engagement.machines.BURST_SECONDS` are a scanner's, and every click of that
burst is a machine click (a person does not follow two links of an issue within two seconds).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from newsletter.engagement.machines import BURST_SECONDS
from newsletter.store.models import EngagementCount, EngagementEvent
from newsletter.store.states import EngagementKind, EngagementOrigin

__all__ = ["Cell", "Tally", "tally_counts", "tally_events"]

Cell = tuple[EngagementKind, int, EngagementOrigin, datetime]  # kind, position (0: whole send), origin, hour


@dataclass
class Tally:
    """Unique and total events per cell; ``unique`` counts a reader in the hour of their first such event."""

    unique: dict[Cell, int] = field(default_factory=lambda: defaultdict(int))
    total: dict[Cell, int] = field(default_factory=lambda: defaultdict(int))

    def cells(self) -> list[Cell]:
        return sorted(self.total, key=lambda c: (c[0], c[1], c[2], c[3]))

    def sum(self, kind: EngagementKind, position: int, origin: EngagementOrigin) -> tuple[int, int]:
        """(unique, total) over every hour."""
        unique = total = 0
        for cell, count in self.total.items():
            if cell[0] == kind and cell[1] == position and cell[2] == origin:
                total += count
                unique += self.unique.get(cell, 0)
        return unique, total

    def positions(self, kind: EngagementKind) -> set[int]:
        return {cell[1] for cell in self.total if cell[0] == kind and cell[1] != 0}


def _hour(at: datetime) -> datetime:
    return at.replace(minute=0, second=0, microsecond=0)


_Event = tuple[str, EngagementKind, int | None, EngagementOrigin, datetime]  # reader, kind, position, origin, at


def _bursts(clicks: list[_Event]) -> set[int]:
    """Indexes (into one reader's clicks, sorted by time) of clicks that belong to a burst."""
    machine: set[int] = set()
    window = timedelta(seconds=BURST_SECONDS)
    for i, (_, _, position, _, at) in enumerate(clicks):
        j = i + 1
        while j < len(clicks) and clicks[j][4] - at <= window:
            if clicks[j][2] != position:
                machine.update((i, j))
            j += 1
    return machine


def tally(events: Iterable[_Event]) -> Tally:
    """Tally events grouped by reader (``events`` sorted by reader, then time)."""
    result = Tally()

    def add(reader_events: list[_Event]) -> None:
        clicks = [e for e in reader_events if e[1] == EngagementKind.CLICK]
        burst = _bursts(clicks)
        origin_of = {id(e): (EngagementOrigin.MACHINE if i in burst else e[3]) for i, e in enumerate(clicks)}
        seen: set[tuple[EngagementKind, int, EngagementOrigin]] = set()
        for event in reader_events:
            _, kind, position, origin, at = event
            origin = origin_of.get(id(event), origin)
            hour = _hour(at)
            places = [0] if kind == EngagementKind.OPEN else [0, position or 0]
            for place in dict.fromkeys(places):
                cell = (kind, place, origin, hour)
                result.total[cell] += 1
                if (kind, place, origin) not in seen:
                    seen.add((kind, place, origin))
                    result.unique[cell] += 1

    current: list[_Event] = []
    for event in events:
        if current and event[0] != current[0][0]:
            add(current)
            current = []
        current.append(event)
    if current:
        add(current)
    return result


def tally_events(session: Session, send_id: int) -> Tally:
    """The send's events, tallied (those without a reader, kept after a roll-up, are left out).

    Opens, most of a send's events, are counted by the database (per origin and hour: every one,
    and each reader in the hour of their first); clicks are read one by one, bursts being a
    matter of each reader's sequence of links.
    """
    result = _tally_opens(session, send_id)
    rows = session.execute(
        select(
            EngagementEvent.reader,
            EngagementEvent.kind,
            EngagementEvent.position,
            EngagementEvent.origin,
            EngagementEvent.at,
        )
        .where(
            EngagementEvent.send_id == send_id,
            EngagementEvent.kind == EngagementKind.CLICK,
            EngagementEvent.reader.is_not(None),
        )
        .order_by(EngagementEvent.reader, EngagementEvent.at, EngagementEvent.id)
        .execution_options(yield_per=10_000)
    )
    clicks = tally(tuple(row) for row in rows)  # type: ignore[misc]
    result.total.update(clicks.total)
    result.unique.update(clicks.unique)
    return result


def _hour_of(session: Session, column: Any) -> Any:
    """An SQL expression for the UTC hour a time falls in (text on SQLite, a timestamp on PostgreSQL)."""
    if session.get_bind().dialect.name == "postgresql":
        return func.date_trunc("hour", func.timezone("UTC", column))
    return func.substr(column, 1, 13)  # SQLite keeps "YYYY-MM-DD HH:MM:SS..." in UTC


def _as_hour(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return datetime.strptime(str(value), "%Y-%m-%d %H").replace(tzinfo=UTC)


def _tally_opens(session: Session, send_id: int) -> Tally:
    result = Tally()
    opens = (
        EngagementEvent.send_id == send_id,
        EngagementEvent.kind == EngagementKind.OPEN,
        EngagementEvent.reader.is_not(None),
    )
    hour = _hour_of(session, EngagementEvent.at)
    for origin, at, count in session.execute(
        select(EngagementEvent.origin, hour, func.count()).where(*opens).group_by(EngagementEvent.origin, hour)
    ):
        result.total[(EngagementKind.OPEN, 0, EngagementOrigin(origin), _as_hour(at))] += count
    firsts = (
        select(EngagementEvent.origin.label("origin"), func.min(EngagementEvent.at).label("first"))
        .where(*opens)
        .group_by(EngagementEvent.origin, EngagementEvent.reader)
        .subquery()
    )
    first_hour = _hour_of(session, firsts.c.first)
    for origin, at, count in session.execute(
        select(firsts.c.origin, first_hour, func.count()).group_by(firsts.c.origin, first_hour)
    ):
        result.unique[(EngagementKind.OPEN, 0, EngagementOrigin(origin), _as_hour(at))] += count
    return result


def tally_counts(session: Session, send_id: int) -> Tally:
    """The send's rolled-up counts as a tally."""
    result = Tally()
    for row in session.scalars(select(EngagementCount).where(EngagementCount.send_id == send_id)):
        cell = (row.kind, row.position, row.origin, row.hour)
        result.unique[cell] = row.unique_count
        result.total[cell] = row.total
    return result
