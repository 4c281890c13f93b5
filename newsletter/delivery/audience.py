"""Who a send mails, and whether it may start at all.

One rule for the CLI, the API, the admin UI and the scheduler:

* A send mails the list's confirmed subscribers whose address is not suppressed
  (audience ``all``), or only those of them who got no copy of the issue yet (audience
  ``new``, the "new since last time" resend): no delivery of the issue, in any earlier send,
  that was sent, bounced, or is still pending in a send that may yet deliver it.
* Sending an issue to a list that already has a send of it (anything but cancelled) is
  refused unless the editor chose: again to everyone (:attr:`Repeat.AGAIN`) or only to the
  new ones (:attr:`Repeat.ONLY_NEW`).
* A send that would reach no one is refused, saying why from the list's own counts.

Refusals are :class:`SendRefused` (a Conflict): ``summary`` states the facts, each edge adds
its own way out (CLI options, API fields, buttons); ``str()`` is the CLI's wording.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import exists, func, not_, select
from sqlalchemy.orm import Session, aliased

from newsletter.errors import Conflict
from newsletter.store.models import Delivery, MailingList, Send, Subscriber, Subscription, Suppression
from newsletter.store.states import DeliveryStatus, SendAudience, SendStatus, SubscriptionStatus


class Repeat(StrEnum):
    """What the editor chose for an issue the list already has a send of."""

    NO = "no"  # refuse a second send
    AGAIN = "again"  # everyone again
    ONLY_NEW = "only_new"  # only those who got no copy yet

    @property
    def audience(self) -> SendAudience:
        return SendAudience.NEW if self is Repeat.ONLY_NEW else SendAudience.ALL


# A delivery in one of these states means the person has (or is about to get) a copy.
GOT_A_COPY = (DeliveryStatus.SENT, DeliveryStatus.BOUNCED, DeliveryStatus.PENDING)


def mailed(list_id: int, issue_id: int | None = None, audience: SendAudience = SendAudience.ALL) -> tuple[Any, ...]:
    """Conditions on Subscriber joined to Subscription: who a send of the issue to the list mails now."""
    suppressed = exists().where(Suppression.email == Subscriber.email)
    conditions: tuple[Any, ...] = (
        Subscription.list_id == list_id,
        Subscription.status == SubscriptionStatus.CONFIRMED,
        not_(suppressed),
    )
    if audience is SendAudience.NEW:
        assert issue_id is not None
        earlier = aliased(Send)
        got_one = exists().where(
            Delivery.subscriber_id == Subscriber.id,
            Delivery.status.in_(GOT_A_COPY),
            Delivery.send_id == earlier.id,
            earlier.issue_id == issue_id,
        )
        conditions += (not_(got_one),)
    return conditions


def recipient_count(
    session: Session, list_id: int, issue_id: int | None = None, audience: SendAudience = SendAudience.ALL
) -> int:
    """How many a send to the list would mail now."""
    return (
        session.scalar(
            select(func.count())
            .select_from(Subscription)
            .join(Subscriber, Subscriber.id == Subscription.subscriber_id)
            .where(*mailed(list_id, issue_id, audience))
        )
        or 0
    )


@dataclass(frozen=True)
class ListCounts:
    """A list's subscriptions as a send sees them (``unconfirmed`` and ``unsubscribed`` count as
    `newsletter lists show` does; confirmed ones are split by whether the address is suppressed)."""

    confirmed: int  # confirmed and not suppressed: who a send mails
    confirmed_suppressed: int  # confirmed, but the address must never be mailed
    unconfirmed: int
    unconfirmed_suppressed: int  # of the unconfirmed: never asked to confirm either
    unsubscribed: int

    @property
    def askable(self) -> int:
        """The unconfirmed who may be asked to confirm."""
        return self.unconfirmed - self.unconfirmed_suppressed


def list_counts(session: Session, list_id: int) -> ListCounts:
    suppressed = exists().where(Suppression.email == Subscriber.email)
    rows = session.execute(
        select(Subscription.status, suppressed.label("suppressed"), func.count())
        .join(Subscriber, Subscriber.id == Subscription.subscriber_id)
        .where(Subscription.list_id == list_id)
        .group_by(Subscription.status, suppressed)
    ).all()
    counts = dict.fromkeys(
        ("confirmed", "confirmed_suppressed", "unconfirmed", "unconfirmed_suppressed", "unsubscribed"), 0
    )
    for status, is_suppressed, count in rows:
        if status == SubscriptionStatus.CONFIRMED:
            counts["confirmed_suppressed" if is_suppressed else "confirmed"] += count
        else:
            counts[status] += count
            if status == SubscriptionStatus.UNCONFIRMED and is_suppressed:
                counts["unconfirmed_suppressed"] += count
    return ListCounts(**counts)


@dataclass(frozen=True)
class EarlierSend:
    """A send of the issue to the list that already exists, for the refusal to name."""

    id: int
    status: SendStatus
    audience: SendAudience
    got_it: int  # deliveries sent (or bounced after being sent)
    total: int
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    scheduled_at: datetime | None

    @property
    def reached_no_one(self) -> bool:
        """Cancelled before anyone got a copy, or finished with no one to mail: it blocks no later send."""
        return (self.status == SendStatus.CANCELLED and not self.got_it) or (
            self.status == SendStatus.FINISHED and not self.total
        )

    def state(self) -> str:
        """E.g. "finished 2026-12-04 08:00 UTC: 194 of 194 got it", "scheduled for ..."."""
        if self.status == SendStatus.SCHEDULED:
            return f"scheduled for {_when(self.scheduled_at)}"
        if self.status == SendStatus.FINISHED:
            return f"finished {_when(self.finished_at)}: {self.got_it} of {self.total} got it"
        if self.status == SendStatus.CANCELLED:
            return f"cancelled {_when(self.finished_at)}: {self.got_it} of {self.total} got it before that"
        return f"{self.status} since {_when(self.started_at or self.created_at)}: {self.got_it} of {self.total} got it so far"

    def describe(self) -> str:
        return f"send {self.id} {'' if self.status in (SendStatus.FINISHED, SendStatus.CANCELLED) else 'is '}{self.state()}"

    def as_json(self) -> dict[str, object]:
        return {
            "id": self.id,
            "status": self.status,
            "got_it": self.got_it,
            "total": self.total,
            "created_at": _iso(self.created_at),
            "started_at": _iso(self.started_at),
            "finished_at": _iso(self.finished_at),
            "scheduled_at": _iso(self.scheduled_at),
        }


class SendRefused(Conflict):
    """A send that would mail an issue to a list a second time, or mail no one.

    ``reason`` is "already_sent" or "empty"; ``summary`` states the facts without telling how
    to go on; ``earlier`` lists the sends that exist, ``counts`` the list's subscriptions (for
    an empty one); ``str()`` adds the CLI's ways out.
    """

    def __init__(
        self,
        reason: str,
        summary: str,
        cli_hint: str,
        *,
        earlier: tuple[EarlierSend, ...] = (),
        list_slug: str = "",
        counts: ListCounts | None = None,
    ) -> None:
        self.reason = reason
        self.counts = counts  # the list's counts, for an empty send
        self.summary = summary
        self.earlier = earlier
        self.list_slug = list_slug
        super().__init__(f"{summary}: {cli_hint}" if cli_hint else summary)


def earlier_sends(session: Session, issue_id: int, list_id: int) -> tuple[EarlierSend, ...]:
    """The sends of the issue to the list, oldest first: all but those that reached no one (a send
    cancelled halfway did reach people)."""
    got_it = (
        select(func.count())
        .where(Delivery.send_id == Send.id, Delivery.status.in_((DeliveryStatus.SENT, DeliveryStatus.BOUNCED)))
        .correlate(Send)
        .scalar_subquery()
    )
    rows = session.execute(
        select(
            Send.id,
            Send.status,
            Send.audience,
            got_it,
            Send.total,
            Send.created_at,
            Send.started_at,
            Send.finished_at,
            Send.scheduled_at,
        )
        .where(Send.issue_id == issue_id, Send.list_id == list_id)
        .order_by(Send.id)
    ).all()
    return tuple(e for e in (EarlierSend(*row) for row in rows) if not e.reached_no_one)


def scheduled_for_everyone(earlier: tuple[EarlierSend, ...]) -> EarlierSend | None:
    """A scheduled send among ``earlier`` that will mail every confirmed subscriber when it starts."""
    return next((e for e in earlier if e.status == SendStatus.SCHEDULED and e.audience == SendAudience.ALL), None)


def check_send(
    session: Session,
    issue_id: int,
    mailing_list: MailingList,
    repeat: Repeat = Repeat.NO,
    *,
    require_recipients: bool = True,
) -> SendAudience:
    """May the issue be sent to the list now? Returns who the send mails.

    Raises SendRefused when the list already has a send of the issue and ``repeat`` is NO, or
    when the send would reach no one now (saying why from the list's counts) unless
    ``require_recipients`` is False (a send planned into a weekly slot: its recipients are
    counted when it comes due).
    """
    slug = mailing_list.slug
    earlier = earlier_sends(session, issue_id, mailing_list.id)
    if earlier and repeat is Repeat.NO:
        raise SendRefused(
            "already_sent",
            f"issue {issue_id} already has a send to {slug}: " + "; ".join(e.describe() for e in earlier),
            f"to send it anyway use `newsletter send {issue_id} --list {slug} --again`, or only to the confirmed "
            f"subscribers who got no copy yet with `--only-new`",
            earlier=earlier,
            list_slug=slug,
        )
    scheduled = scheduled_for_everyone(earlier)
    if scheduled is not None and repeat is Repeat.ONLY_NEW:
        # It takes its recipients when it starts, the new ones included: they would get two copies.
        raise SendRefused(
            "already_sent",
            f"{scheduled.describe()} and will mail every confirmed subscriber of {slug} then, the new ones included",
            f"to send now instead, cancel it (`newsletter sends cancel {scheduled.id}`) and send again",
            earlier=earlier,
            list_slug=slug,
        )
    audience = repeat.audience
    if not require_recipients or recipient_count(session, mailing_list.id, issue_id, audience):
        return audience
    counts = list_counts(session, mailing_list.id)
    raise empty_refusal(slug, issue_id, counts, audience, earlier)


def empty_refusal(
    slug: str, issue_id: int, counts: ListCounts, audience: SendAudience, earlier: tuple[EarlierSend, ...] = ()
) -> SendRefused:
    """Why a send of the issue to the list reaches no one, from the list's counts."""
    if audience is SendAudience.NEW and counts.confirmed:
        summary = (
            f"all {counts.confirmed} confirmed subscriber{_s(counts.confirmed)} of {slug} already got "
            f"issue {issue_id} or are queued for it: no one is new since the last send"
        )
        return SendRefused("empty", summary, "", earlier=earlier, list_slug=slug, counts=counts)
    others = [f"{counts.unconfirmed} unconfirmed"]
    if counts.confirmed_suppressed:
        others.append(f"{counts.confirmed_suppressed} confirmed but suppressed")
    if counts.unsubscribed:
        others.append(f"{counts.unsubscribed} unsubscribed")
    summary = f"{slug} has 0 confirmed subscribers who can be mailed ({', '.join(others)})"
    if counts.askable:
        hint = f"ask the unconfirmed with `newsletter lists request-confirmation {slug}`"
    else:
        hint = f"add subscribers with `newsletter subscribers add {slug} EMAIL` or `newsletter subscribers import {slug} FILE.csv`"
    return SendRefused("empty", summary, hint, earlier=earlier, list_slug=slug, counts=counts)


def _s(n: int) -> str:
    return "" if n == 1 else "s"


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M UTC") if value else "(unknown time)"


def _iso(value: datetime | None) -> str | None:
    return value.isoformat(timespec="seconds") if value else None
