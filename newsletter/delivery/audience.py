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
* A send may go to several lists at once (a :class:`Target`: its own list first, then the
  others): it mails each confirmed, unsuppressed subscriber of any of them once. Each earlier
  send to any of those lists counts as a send of the issue to it, and "new" means no copy of
  the issue in any earlier send, whatever its lists.
* A send may go to a saved segment of one list (:mod:`subscribers.segments`): only the list's
  subscribers the segment's filter matches, the filter frozen on the send as it started.

Refusals are :class:`SendRefused` (a Conflict): ``summary`` states the facts, each edge adds
its own way out (CLI options, API fields, buttons); ``str()`` is the CLI's wording.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import distinct, exists, func, not_, or_, select
from sqlalchemy.orm import Session, aliased

from newsletter.errors import Conflict, InvalidInput
from newsletter.store.models import (
    Delivery,
    MailingList,
    Send,
    SendList,
    Subscriber,
    Subscription,
    Suppression,
)
from newsletter.store.states import DeliveryStatus, SendAudience, SendStatus, SubscriptionStatus
from subscribers import segments
from subscribers.lists import get_list


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


ListIds = int | Sequence[int]


@dataclass(frozen=True)
class Target:
    """Who a send goes to: its lists (its own, the primary one, first) and, perhaps, a segment of that list.

    ``segment_filter`` is the segment's filter text as the send uses it (frozen on the send);
    ``condition`` is that filter compiled (:func:`subscribers.segments.condition_for`).
    """

    lists: tuple[MailingList, ...]
    segment_id: int | None = None
    segment_name: str | None = None
    segment_filter: str | None = None
    condition: Any = None

    @property
    def primary(self) -> MailingList:
        return self.lists[0]

    @property
    def list_ids(self) -> tuple[int, ...]:
        return tuple(m.id for m in self.lists)

    @property
    def several(self) -> bool:
        return len(self.lists) > 1

    @property
    def slugs(self) -> str:
        """ "news" or "news, offers"."""
        return ", ".join(m.slug for m in self.lists)

    def described(self) -> str:
        """ "news", "news, offers", "segment pro of news"."""
        return f"segment {self.segment_name} of {self.slugs}" if self.segment_name else self.slugs

    def cli_flags(self) -> str:
        """The options that name this target again: "--list a --list b --segment pro"."""
        flags = " ".join(f"--list {m.slug}" for m in self.lists)
        return flags + (f" --segment {_quoted(self.segment_name)}" if self.segment_name else "")


def choose_target(
    session: Session, issue_list: MailingList, list_slugs: Sequence[str] = (), segment: str | None = None
) -> Target:
    """The lists ``list_slugs`` (the issue's own list when none is named; repeats dropped, order kept) and
    the segment named ``segment`` of the first. Raises NotFound (a list, the segment), InvalidInput (a
    segment with several lists), SegmentError (a saved filter the list no longer allows)."""
    lists: list[MailingList] = []
    for slug in list_slugs:
        found = get_list(session, slug)
        if found not in lists:
            lists.append(found)
    if not lists:
        lists.append(issue_list)
    if segment is None:
        return Target(tuple(lists))
    if len(lists) > 1:
        raise InvalidInput(
            "a segment belongs to one list: send to a segment of one list at a time "
            f"(the lists named: {', '.join(m.slug for m in lists)})",
            where="--segment",
        )
    mailing_list, saved = segments.get_segment(session, lists[0].slug, segment)
    return Target(
        (mailing_list,), saved.id, saved.name, saved.filter, segments.condition_for(mailing_list, saved.filter)
    )


def target_of_send(session: Session, send: Send) -> Target:
    """The target a stored send was made with (a scheduled one, starting): its lists and frozen segment filter.

    Raises SegmentError when the frozen filter no longer fits the list (its tracking was turned down).
    """
    primary = session.get(MailingList, send.list_id)
    assert primary is not None
    others = session.scalars(
        select(MailingList)
        .join(SendList, SendList.list_id == MailingList.id)
        .where(SendList.send_id == send.id)
        .order_by(MailingList.id)
    ).all()
    lists = (primary, *others)
    if send.segment_filter is None:
        return Target(lists)
    condition = segments.condition_for(primary, send.segment_filter)
    return Target(lists, send.segment_id, send.segment_name, send.segment_filter, condition)


def record_target(session: Session, send: Send, target: Target) -> None:
    """Store on the (flushed) send what its target is beyond its own list: the other lists, the segment."""
    session.add_all(SendList(send_id=send.id, list_id=m.id) for m in target.lists[1:])
    if target.segment_filter is not None:
        send.segment_id, send.segment_name, send.segment_filter = (
            target.segment_id,
            target.segment_name,
            target.segment_filter,
        )


def _ids(list_ids: ListIds) -> tuple[int, ...]:
    return (list_ids,) if isinstance(list_ids, int) else tuple(list_ids)


def _quoted(name: str) -> str:
    return f'"{name}"' if " " in name else name


def mailed(
    list_ids: ListIds, issue_id: int | None = None, audience: SendAudience = SendAudience.ALL, segment: Any = None
) -> tuple[Any, ...]:
    """Conditions on Subscriber joined to Subscription: who a send of the issue to the lists mails now.

    With several lists a subscriber on more than one of them matches once per list: group by
    subscriber (the snapshot does) or count distinct subscribers (:func:`recipient_count` does).
    ``segment``: a segment's compiled filter, which narrows the (one) list further.
    """
    ids = _ids(list_ids)
    suppressed = exists().where(Suppression.email == Subscriber.email)
    conditions: tuple[Any, ...] = (
        Subscription.list_id == ids[0] if len(ids) == 1 else Subscription.list_id.in_(ids),
        Subscription.status == SubscriptionStatus.CONFIRMED,
        not_(suppressed),
    )
    if segment is not None:
        conditions += (segment,)
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
    session: Session,
    list_ids: ListIds,
    issue_id: int | None = None,
    audience: SendAudience = SendAudience.ALL,
    segment: Any = None,
) -> int:
    """How many a send to the lists (each address once) would mail now."""
    ids = _ids(list_ids)
    counted = func.count() if len(ids) == 1 else func.count(distinct(Subscription.subscriber_id))
    return (
        session.scalar(
            select(counted)
            .select_from(Subscription)
            .join(Subscriber, Subscriber.id == Subscription.subscriber_id)
            .where(*mailed(ids, issue_id, audience, segment))
        )
        or 0
    )


def target_count(
    session: Session, target: Target, issue_id: int | None = None, audience: SendAudience = SendAudience.ALL
) -> int:
    """How many a send to ``target`` would mail now."""
    return recipient_count(session, target.list_ids, issue_id, audience, target.condition)


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


def list_counts(session: Session, list_ids: ListIds) -> ListCounts:
    """The lists' subscriptions (added up over several lists: a subscriber on two counts twice)."""
    ids = _ids(list_ids)
    suppressed = exists().where(Suppression.email == Subscriber.email)
    rows = session.execute(
        select(Subscription.status, suppressed.label("suppressed"), func.count())
        .join(Subscriber, Subscriber.id == Subscription.subscriber_id)
        .where(Subscription.list_id.in_(ids))
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


def earlier_sends(session: Session, issue_id: int, list_ids: ListIds) -> tuple[EarlierSend, ...]:
    """The sends of the issue to any of the lists (as their own list or one of several), oldest first: all
    but those that reached no one (a send cancelled halfway did reach people)."""
    ids = _ids(list_ids)
    also_to = exists().where(SendList.send_id == Send.id, SendList.list_id.in_(ids))
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
        .where(Send.issue_id == issue_id, or_(Send.list_id.in_(ids), also_to))
        .order_by(Send.id)
    ).all()
    return tuple(e for e in (EarlierSend(*row) for row in rows) if not e.reached_no_one)


def scheduled_for_everyone(earlier: tuple[EarlierSend, ...]) -> EarlierSend | None:
    """A scheduled send among ``earlier`` that will mail every confirmed subscriber when it starts."""
    return next((e for e in earlier if e.status == SendStatus.SCHEDULED and e.audience == SendAudience.ALL), None)


def check_send(
    session: Session,
    issue_id: int,
    target: MailingList | Target,
    repeat: Repeat = Repeat.NO,
    *,
    require_recipients: bool = True,
) -> SendAudience:
    """May the issue be sent to the list (or the target's lists, or segment) now? Returns who the send mails.

    Raises SendRefused when any of the lists already has a send of the issue and ``repeat`` is NO,
    or when the send would reach no one now (saying why from the lists' counts) unless
    ``require_recipients`` is False (a send planned into a weekly slot: its recipients are
    counted when it comes due).
    """
    if isinstance(target, MailingList):
        target = Target((target,))
    slug = target.slugs
    earlier = earlier_sends(session, issue_id, target.list_ids)
    if earlier and repeat is Repeat.NO:
        raise SendRefused(
            "already_sent",
            f"issue {issue_id} already has a send to {slug}: " + "; ".join(e.describe() for e in earlier),
            f"to send it anyway use `newsletter send {issue_id} {target.cli_flags()} --again`, or only to the confirmed "
            f"subscribers who got no copy yet with `--only-new`",
            earlier=earlier,
            list_slug=target.primary.slug,
        )
    scheduled = scheduled_for_everyone(earlier)
    if scheduled is not None and repeat is Repeat.ONLY_NEW:
        # It takes its recipients when it starts, the new ones included: they would get two copies.
        raise SendRefused(
            "already_sent",
            f"{scheduled.describe()} and will mail every confirmed subscriber of {slug} then, the new ones included",
            f"to send now instead, cancel it (`newsletter sends cancel {scheduled.id}`) and send again",
            earlier=earlier,
            list_slug=target.primary.slug,
        )
    audience = repeat.audience
    if not require_recipients or target_count(session, target, issue_id, audience):
        return audience
    raise target_refusal(session, target, issue_id, audience, earlier)


def target_refusal(
    session: Session,
    target: Target,
    issue_id: int,
    audience: SendAudience,
    earlier: tuple[EarlierSend, ...] = (),
) -> SendRefused:
    """Why a send of the issue to ``target`` reaches no one: from the lists' counts, or the segment's."""
    counts = list_counts(session, target.list_ids)
    if target.segment_name is not None and counts.confirmed:
        matched = recipient_count(session, target.list_ids, segment=target.condition)
        if matched and audience is SendAudience.NEW:
            summary = (
                f"all {matched} subscriber{_s(matched)} of {target.described()} already got issue {issue_id} "
                "or are queued for it: no one is new since the last send"
            )
        else:
            summary = (
                f"segment {target.segment_name} of {target.slugs} matches none of its {counts.confirmed} confirmed "
                f"subscriber{_s(counts.confirmed)} who can be mailed (filter: {target.segment_filter})"
            )
        return SendRefused("empty", summary, "", earlier=earlier, list_slug=target.primary.slug, counts=counts)
    refusal = empty_refusal(target.slugs, issue_id, counts, audience, earlier)
    refusal.list_slug = target.primary.slug
    return refusal


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
