"""CSV export of a list's subscribers, streamed straight from the database.

Every cell goes through :mod:`subscribers.csv_cells`: none starts a spreadsheet formula, and
``subscribers import`` reads the export back to the same values.
"""

from __future__ import annotations

from datetime import datetime
from typing import TextIO

from sqlalchemy import select
from sqlalchemy.orm import Session

from newsletter.store.models import Subscriber, Subscription
from subscribers import csv_cells
from subscribers.lists import get_list

FIXED_COLUMNS = ["email", "name", "status", "source", "subscribed_at", "confirmed_at", "unsubscribed_at"]


def export_csv(session: Session, list_slug: str, out: TextIO, *, status: str | None = None) -> int:
    """Write the list's subscribers as CSV to ``out``; returns the number of rows.

    Attribute columns follow the fixed ones, sorted by name. Two streamed passes (one to
    learn the attribute names, one to write) keep memory flat. Raises NotFound.
    """
    mailing_list = get_list(session, list_slug)
    base = (
        select(
            Subscriber.email,
            Subscriber.name,
            Subscriber.attributes,
            Subscription.status,
            Subscription.source,
            Subscription.requested_at,
            Subscription.confirmed_at,
            Subscription.ended_at,
        )
        .join(Subscription, Subscription.subscriber_id == Subscriber.id)
        .where(Subscription.list_id == mailing_list.id)
    )
    if status:
        base = base.where(Subscription.status == status)
    keys: set[str] = set()
    for (attributes,) in session.execute(
        select(Subscriber.attributes)
        .join(Subscription, Subscription.subscriber_id == Subscriber.id)
        .where(Subscription.list_id == mailing_list.id)
        .execution_options(yield_per=2000)
    ):
        keys.update(attributes or {})
    attribute_columns = sorted(keys - set(FIXED_COLUMNS))
    writer = csv_cells.writer(out)
    writer.writerow(FIXED_COLUMNS + attribute_columns)
    count = 0
    for email, name, attributes, status_, source, requested, confirmed, ended in session.execute(
        base.order_by(Subscriber.email).execution_options(yield_per=2000)
    ):
        attributes = attributes or {}
        writer.writerow(
            [email, name, status_, source, _iso(requested), _iso(confirmed), _iso(ended)]
            + [attributes.get(k, "") for k in attribute_columns]
        )
        count += 1
    return count


def _iso(value: datetime | None) -> str:
    return value.isoformat(timespec="seconds") if value else ""
