"""A subject test's figures per variant: who got each subject, and how many of them opened and clicked.

Each reader's opens and clicks of a send with a subject test carry the variant their copy had
(``engagement_events.variant``, written by the recorder), so each subject's unique human openers
and clickers are counted apart, with bursts of clicks told apart as the report does
(:mod:`newsletter.engagement.tally`). Rates are over the copies of that subject delivered. When the
send's report window closes, the figures are kept on the test (:func:`keep`), since the events that
tell the subjects apart are then gone.

The figures travel as plain dictionaries too (:meth:`VariantFigures.as_json`): a test keeps the
figures it was decided on.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from newsletter.engagement.tally import tally
from newsletter.store.models import Delivery, EngagementEvent, SubjectTest
from newsletter.store.states import DeliveryStatus, EngagementKind, EngagementOrigin

__all__ = ["VariantFigures", "figures_from_json", "keep", "variant_figures"]

NAMES = {1: "A", 2: "B"}


@dataclass(frozen=True)
class VariantFigures:
    """One subject of a test: its recipients, copies delivered, and unique human openers and clickers."""

    variant: str  # "A" (the issue's own subject) or "B"
    subject: str
    recipients: int
    delivered: int
    opens: int  # unique human openers
    clicks: int  # unique human clickers

    @property
    def open_rate(self) -> float | None:
        return round(self.opens / self.delivered, 4) if self.delivered else None

    @property
    def click_rate(self) -> float | None:
        return round(self.clicks / self.delivered, 4) if self.delivered else None

    def as_json(self) -> dict[str, Any]:
        return {**asdict(self), "open_rate": self.open_rate, "click_rate": self.click_rate}


def figures_from_json(data: Mapping[str, Any]) -> VariantFigures:
    return VariantFigures(
        str(data["variant"]),
        str(data["subject"]),
        int(data["recipients"]),
        int(data["delivered"]),
        int(data["opens"]),
        int(data["clicks"]),
    )


def variant_figures(session: Session, send_id: int, subjects: tuple[str, str]) -> tuple[VariantFigures, VariantFigures]:
    """The test's figures now, A then B, from the delivery log and the events (``subjects``: A's, B's).

    The recipients and copies delivered are counted over the send's rows (one pass, grouped by variant
    and status); opens by the database; clicks read one by one for bursts, as the report does.
    """
    recipients = {1: 0, 2: 0}
    delivered = {1: 0, 2: 0}
    for row_variant, status, count in session.execute(
        select(Delivery.variant, Delivery.status, func.count())
        .where(Delivery.send_id == send_id, Delivery.variant.is_not(None))
        .group_by(Delivery.variant, Delivery.status)
    ):
        variant = int(row_variant or 0)
        recipients[variant] += count
        if status == DeliveryStatus.SENT:
            delivered[variant] += count
    human = (
        EngagementEvent.send_id == send_id,
        EngagementEvent.variant.is_not(None),
        EngagementEvent.reader.is_not(None),
    )
    opens = dict(
        session.execute(
            select(EngagementEvent.variant, func.count(func.distinct(EngagementEvent.reader)))
            .where(
                *human, EngagementEvent.kind == EngagementKind.OPEN, EngagementEvent.origin == EngagementOrigin.HUMAN
            )
            .group_by(EngagementEvent.variant)
        ).all()
    )
    clicks: dict[int, int] = {}
    for variant in (1, 2):
        rows = session.execute(
            select(
                EngagementEvent.reader,
                EngagementEvent.kind,
                EngagementEvent.position,
                EngagementEvent.origin,
                EngagementEvent.at,
            )
            .where(*human, EngagementEvent.kind == EngagementKind.CLICK, EngagementEvent.variant == variant)
            .order_by(EngagementEvent.reader, EngagementEvent.at, EngagementEvent.id)
            .execution_options(yield_per=10_000)
        )
        counted = tally(tuple(row) for row in rows)  # type: ignore[misc]
        clicks[variant] = counted.sum(EngagementKind.CLICK, 0, EngagementOrigin.HUMAN)[0]
    return tuple(  # type: ignore[return-value]
        VariantFigures(NAMES[v], subjects[v - 1], recipients[v], delivered[v], opens.get(v, 0), clicks[v])
        for v in (1, 2)
    )


def keep(session: Session, send_id: int, subject_a: str) -> None:
    """Keep the test's figures on it before the send's events are rolled up (nothing for a send without one)."""
    test = session.get(SubjectTest, send_id)
    if test is None or test.final_figures is not None:
        return
    a, b = variant_figures(session, send_id, (subject_a, test.subject_b))
    test.final_figures = {"A": a.as_json(), "B": b.as_json()}
