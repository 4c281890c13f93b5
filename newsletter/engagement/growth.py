"""How the lists grew, week by week: new confirmed subscriptions, people who left, addresses lost to bounces.

Read from the consent records and suppressions, not from the send log, so it covers every list
whether or not it tracks anything:

* **confirmed**: subscriptions confirmed in the week (``subscriptions.confirmed_at``), whether or
  not they stayed;
* **unsubscribed**: subscriptions that ended in the week and are still ended (``ended_at``, status
  unsubscribed): by link, page, mailed request, complaint or an admin (``end_reason`` says which);
* **bounced**: addresses on a list suppressed in the week for bouncing (``suppressions`` with a
  hard or repeated soft bounce reason): a bounce ends no subscription, it stops all mail to the
  address.

A subscription counts once per list (someone on two lists who confirms both counts twice). Weeks
start on Monday, 00:00 UTC. Each figure is one query grouped by day in the database, so Python
sums at most 7 rows a week whatever the list's size; ``subscriptions`` has no index on
``confirmed_at`` or ``ended_at``, so each of those two queries reads the whole table.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Select, func, select
from sqlalchemy.orm import Session

from newsletter.store.models import Subscriber, Subscription, Suppression
from newsletter.store.states import SubscriptionStatus, SuppressionReason

__all__ = ["BOUNCE_REASONS", "WeekGrowth", "week_start", "weekly_growth"]

BOUNCE_REASONS = (SuppressionReason.HARD_BOUNCE, SuppressionReason.SOFT_BOUNCE)


@dataclass(frozen=True)
class WeekGrowth:
    start: date  # the week's Monday (UTC)
    confirmed: int
    unsubscribed: int
    bounced: int

    @property
    def net(self) -> int:
        return self.confirmed - self.unsubscribed - self.bounced


def week_start(at: datetime) -> date:
    """The Monday (UTC) of the week ``at`` falls in."""
    day = at.date()
    return day - timedelta(days=day.weekday())


def weekly_growth(session: Session, *, now: datetime, weeks: int = 26, list_id: int | None = None) -> list[WeekGrowth]:
    """The last ``weeks`` weeks up to and including the one ``now`` falls in, oldest first, every week
    present (zeros included); ``list_id`` keeps to one list (bounced: addresses on it)."""
    first = week_start(now) - timedelta(weeks=weeks - 1)
    since = datetime(first.year, first.month, first.day, tzinfo=now.tzinfo)
    dialect = session.get_bind().dialect.name

    def by_day(column: Any, query: Select[Any]) -> dict[date, int]:
        day = _day(column, dialect)
        rows = session.execute(query.add_columns(day, func.count()).where(column >= since).group_by(day)).all()
        return {_as_date(value): count for value, count in rows}

    on_list = [Subscription.list_id == list_id] if list_id is not None else []
    confirmed = by_day(Subscription.confirmed_at, select().select_from(Subscription).where(*on_list))
    unsubscribed = by_day(
        Subscription.ended_at,
        select().select_from(Subscription).where(Subscription.status == SubscriptionStatus.UNSUBSCRIBED, *on_list),
    )
    subscribed_addresses = (
        select(Subscriber.email).join(Subscription, Subscription.subscriber_id == Subscriber.id).where(*on_list)
    )
    bounced = by_day(
        Suppression.created_at,
        select()
        .select_from(Suppression)
        .where(Suppression.reason.in_(BOUNCE_REASONS), Suppression.email.in_(subscribed_addresses)),
    )
    starts = [first + timedelta(weeks=i) for i in range(weeks)]
    return [
        WeekGrowth(start, _week(confirmed, start), _week(unsubscribed, start), _week(bounced, start))
        for start in starts
    ]


def _day(column: Any, dialect: str) -> ColumnElement[Any]:
    """The UTC calendar day of a timestamp column, on either database."""
    if dialect == "postgresql":  # timestamptz: its date depends on the session's zone unless made UTC first
        return func.date(func.timezone("UTC", column))
    return func.date(column)  # SQLite keeps UTC text: date() reads its first ten characters


def _as_date(value: object) -> date:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    return date.fromisoformat(str(value)[:10])


def _week(days: dict[date, int], start: date) -> int:
    return sum(days.get(start + timedelta(days=i), 0) for i in range(7))
