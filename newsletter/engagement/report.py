"""A send's report: what happened to its copies and, when tracked, what its readers did.

Delivery figures come from the send log (deliveries, bounce events, subscriptions). Opens and
clicks come from the send's tally (:mod:`newsletter.engagement.tally`): human and machine apart,
unique (per reader) and total. Rates are over copies delivered. Open figures are estimates, and
the report says so: a reader whose mail client blocks images never counts as opening, and a
privacy proxy that fetches images for its users is counted apart, as a machine.

A send with a subject test also shows each subject's figures (recipients, copies delivered, unique
human openers and clickers, rates: :mod:`newsletter.engagement.variant_figures`), the winner and why,
and when it was decided.

Unsubscribes are attributed to a send when someone it reached left its list after the send
started and before the list's next send started.
"""

from __future__ import annotations

import builtins
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from newsletter.engagement.tally import Tally, tally_counts, tally_events
from newsletter.engagement.variant_figures import VariantFigures, figures_from_json, variant_figures
from newsletter.errors import NotFound
from newsletter.store.models import BounceEvent, Delivery, MailingList, Send, SendLink, SubjectTest, Subscription
from newsletter.store.states import (
    BounceKind,
    DeliveryStatus,
    EngagementKind,
    EngagementOrigin,
    SubscriptionStatus,
    Tracking,
)

__all__ = [
    "ESTIMATE_NOTE",
    "Figures",
    "HourFigures",
    "LinkFigures",
    "SendReport",
    "SubjectTestReport",
    "send_report",
    "subject_test_report",
]

ESTIMATE_NOTE = (
    "Open rates are estimates: a reader whose mail client does not load images is never counted as "
    "opening, and image fetches by privacy proxies (Apple Mail Privacy Protection and the like) are "
    "counted apart as machine opens."
)
TIMELINE_DAYS = 7

HUMAN, MACHINE = EngagementOrigin.HUMAN, EngagementOrigin.MACHINE
OPEN, CLICK = EngagementKind.OPEN, EngagementKind.CLICK


@dataclass(frozen=True)
class Figures:
    """Opens or clicks: by people (unique readers, total), and by machines (unique, total) apart."""

    unique: int
    total: int
    machine_unique: int
    machine_total: int


@dataclass(frozen=True)
class LinkFigures:
    position: int
    url: str
    unique: int
    total: int
    machine: int  # machine clicks, total


@dataclass(frozen=True)
class HourFigures:
    """People's opens and clicks in one hour of the first days (unique: readers whose first it was)."""

    hour: datetime
    opens: int
    unique_opens: int
    clicks: int
    unique_clicks: int


@dataclass(frozen=True)
class SendReport:
    send_id: int
    list: str
    subject: str
    status: str
    tracking: str
    started_at: datetime | None
    recipients: int
    delivered: int
    pending: int
    failed: int
    bounced: int
    complaints: int
    unsubscribes: int
    opens: Figures
    clicks: Figures
    open_rate: float | None  # unique human opens / delivered
    click_through_rate: float | None  # unique human clickers / delivered
    click_to_open_rate: float | None  # unique human clickers / unique human openers
    links: builtins.list[LinkFigures]
    timeline: builtins.list[HourFigures]  # the first TIMELINE_DAYS days, hours with something only
    rolled_up: bool  # the events were rolled up into counts: the figures stay, who did what is gone
    subject_test: SubjectTestReport | None = None  # its subject test, if it had one

    def as_json(self) -> dict[str, object]:
        data = asdict(self)
        data["started_at"] = self.started_at.isoformat(timespec="seconds") if self.started_at else None
        data["timeline"] = [{**asdict(h), "hour": h.hour.isoformat(timespec="seconds")} for h in self.timeline]
        data["note"] = ESTIMATE_NOTE if self.tracking != Tracking.OFF else "Tracking was off for this send."
        data["subject_test"] = self.subject_test.as_json() if self.subject_test else None
        return data


@dataclass(frozen=True)
class SubjectTestReport:
    """A send's subject test in its report: each subject's figures now, and the decision with the figures it
    was made on. ``variants`` are A then B (after the report window closed: as they were then)."""

    state: str  # planned, testing, decided, cancelled
    share: int  # percent of the recipients in the test
    remainder: int  # the rest of the recipients, who get (got) the winner
    decide_at: datetime | None
    decided_at: datetime | None
    decided_by: str | None
    winner: str | None  # "A" or "B"
    reason: str | None  # why it won (or why the rest was cancelled)
    variants: builtins.list[VariantFigures]
    decided_on: builtins.list[VariantFigures] | None  # the figures when it was decided

    def as_json(self) -> dict[str, object]:
        return {
            "state": self.state,
            "share": self.share,
            "remainder": self.remainder,
            "decide_at": _iso(self.decide_at),
            "decided_at": _iso(self.decided_at),
            "decided_by": self.decided_by,
            "winner": self.winner,
            "reason": self.reason,
            "variants": [v.as_json() for v in self.variants],
            "decided_on": [v.as_json() for v in self.decided_on] if self.decided_on is not None else None,
        }


def _iso(value: datetime | None) -> str | None:
    return value.isoformat(timespec="seconds") if value else None


def subject_test_report(session: Session, send: Send) -> SubjectTestReport | None:
    """The send's subject test as its report shows it, or None when it has none."""
    test = session.get(SubjectTest, send.id)
    if test is None:
        return None
    if test.final_figures is not None:
        variants = [figures_from_json(test.final_figures[name]) for name in ("A", "B")]
    else:
        variants = list(variant_figures(session, send.id, (send.subject, test.subject_b)))
    decided_on = [figures_from_json(test.figures[name]) for name in ("A", "B")] if test.figures else None
    return SubjectTestReport(
        state=test.state,
        share=test.share,
        remainder=test.remainder,
        decide_at=test.decide_at,
        decided_at=test.decided_at,
        decided_by=test.decided_by,
        winner={1: "A", 2: "B"}.get(test.winner) if test.winner else None,
        reason=test.reason,
        variants=variants,
        decided_on=decided_on,
    )


def _rate(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def _figures(tally: Tally, kind: EngagementKind) -> Figures:
    unique, total = tally.sum(kind, 0, HUMAN)
    machine_unique, machine_total = tally.sum(kind, 0, MACHINE)
    return Figures(unique, total, machine_unique, machine_total)


def send_report(session: Session, send_id: int) -> SendReport:
    """The send's report. Raises NotFound."""
    send = session.get(Send, send_id)
    if send is None:
        raise NotFound(f"no send {send_id}")
    slug = session.scalar(select(MailingList.slug).where(MailingList.id == send.list_id)) or ""
    counts = dict(
        session.execute(
            select(Delivery.status, func.count()).where(Delivery.send_id == send_id).group_by(Delivery.status)
        ).all()
    )
    complaints = session.scalar(
        select(func.count(func.distinct(BounceEvent.email)))
        .join(Delivery, Delivery.id == BounceEvent.delivery_id)
        .where(Delivery.send_id == send_id, BounceEvent.kind == BounceKind.COMPLAINT)
    )
    tally = tally_counts(session, send_id) if send.report_rolled_up_at else tally_events(session, send_id)
    opens, clicks = _figures(tally, OPEN), _figures(tally, CLICK)
    delivered = counts.get(DeliveryStatus.SENT, 0)
    urls = dict(session.execute(select(SendLink.position, SendLink.url).where(SendLink.send_id == send_id)).all())
    links = []
    for position in sorted(set(urls) | tally.positions(CLICK)):
        unique, total = tally.sum(CLICK, position, HUMAN)
        links.append(
            LinkFigures(position, urls.get(position, ""), unique, total, tally.sum(CLICK, position, MACHINE)[1])
        )
    links.sort(key=lambda link: (-link.unique, -link.total, link.position))
    return SendReport(
        send_id=send.id,
        list=slug,
        subject=send.subject,
        status=send.status,
        tracking=send.tracking,
        started_at=send.started_at,
        recipients=send.total,
        delivered=delivered,
        pending=counts.get(DeliveryStatus.PENDING, 0),
        failed=counts.get(DeliveryStatus.FAILED, 0),
        bounced=counts.get(DeliveryStatus.BOUNCED, 0),
        complaints=complaints or 0,
        unsubscribes=_unsubscribes(session, send),
        opens=opens,
        clicks=clicks,
        open_rate=_rate(opens.unique, delivered),
        click_through_rate=_rate(clicks.unique, delivered),
        click_to_open_rate=_rate(clicks.unique, opens.unique),
        links=links,
        timeline=_timeline(tally, send.started_at),
        rolled_up=send.report_rolled_up_at is not None,
        subject_test=subject_test_report(session, send),
    )


def _timeline(tally: Tally, started_at: datetime | None) -> list[HourFigures]:
    if started_at is None:
        return []
    first = started_at.replace(minute=0, second=0, microsecond=0)
    last = first + timedelta(days=TIMELINE_DAYS)
    hours: dict[datetime, list[int]] = {}
    for kind, position, origin, hour in tally.cells():
        if position != 0 or origin != HUMAN or not first <= hour < last:
            continue
        slot = hours.setdefault(hour, [0, 0, 0, 0])
        offset = 0 if kind == OPEN else 2
        slot[offset] += tally.total[(kind, position, origin, hour)]
        slot[offset + 1] += tally.unique.get((kind, position, origin, hour), 0)
    return [HourFigures(hour, *values) for hour, values in sorted(hours.items())]


def _unsubscribes(session: Session, send: Send) -> int:
    """People the send reached who left its list after it started and before the list's next send."""
    if send.started_at is None:
        return 0
    next_start = session.scalar(
        select(func.min(Send.started_at)).where(
            Send.list_id == send.list_id, Send.id != send.id, Send.started_at > send.started_at
        )
    )
    reached = select(Delivery.subscriber_id).where(
        Delivery.send_id == send.id, Delivery.status.in_([DeliveryStatus.SENT, DeliveryStatus.BOUNCED])
    )
    query = select(func.count()).where(
        Subscription.list_id == send.list_id,
        Subscription.status == SubscriptionStatus.UNSUBSCRIBED,
        Subscription.ended_at >= send.started_at,
        Subscription.subscriber_id.in_(reached),
    )
    if next_start is not None:
        query = query.where(Subscription.ended_at < next_start)
    return session.scalar(query) or 0
