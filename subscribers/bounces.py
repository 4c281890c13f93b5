"""Bounces, delay warnings, complaints and mailed unsubscribes: what each does to a delivery, a subscription, a suppression.

Every source (the inbound SMTP server, the Amazon SES webhook, the generic JSON webhook)
ends in :func:`record_bounce`, so the rules are the same whoever reports the event:

* **hard** bounce: the delivery (when known) is marked ``bounced`` and the address is
  suppressed at once (``hard_bounce``).
* **soft** bounce: the delivery is marked ``bounced``; the address is suppressed
  (``soft_bounce``) once ``soft_limit`` soft bounces arrived within ``soft_days``.
* **delayed** (a delay warning: the sending server has not delivered the message yet
  and is still trying): stored, so an admin can see it, and nothing else. The delivery
  stays ``sent``, it does not count toward ``soft_limit``, nothing is suppressed or
  ended. If the server gives up in the end, its failure report is the bounce.
* **complaint** (someone pressed "this is spam"): the address leaves the delivery's list
  (every list when the delivery is unknown) and is suppressed (``complaint``).
* **unsubscribe** (mail to the List-Unsubscribe mailto address, or a provider's
  unsubscribe event): the address leaves that list only; nothing is suppressed, so the
  reader may subscribe again.

**Only a proven event acts.** Anyone can mail the bounce address or write a report
naming any address, so an event changes something only when it proves that we mailed
that address the message it is about. The proof is one of (see :func:`find_proof`):

* a delivery: our signed VERP return path names it, or the original message's
  Message-ID is the one that delivery carried and it went to that very address
  (:func:`find_delivery`);
* the Message-ID of a confirmation email (a request to confirm) to that address;
* a signed unsubscribe link of ours (the original's List-Unsubscribe header or footer)
  made for the subscriber with that address: every message we send carries one,
  confirmation emails included;
* for a mailed unsubscribe, the signed token of the List-Unsubscribe mailto address.

An event without proof is stored with ``proven`` false, for an admin to review
(``newsletter bounces ls --unproven``, the admin's Bounces page), and changes nothing:
no delivery is marked, nothing is suppressed or ended, and it counts toward no limit.

An event is stored once: a repeat of the same kind for the same delivery changes and
counts nothing (mail servers send a delay warning more than once, SNS retries its
POSTs). Without a known delivery, an event is a repeat when the same address, kind and
detail arrived within the last 24 hours (a proven one only repeats a proven one).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from newsletter.errors import InvalidInput, NotFound
from newsletter.store.models import (
    BounceEvent,
    ConfirmationMail,
    ConfirmationRun,
    Delivery,
    MailingList,
    Send,
    Subscriber,
    Subscription,
    utcnow,
)
from newsletter.store.states import BounceKind, DeliveryStatus, SubscriptionStatus, SuppressionReason
from subscribers.addresses import normalise_email
from subscribers.automation_mails import goodbyes_due
from subscribers.suppressions import suppress
from subscribers.tokens import TokenSigner

SOURCES = ("smtp", "ses", "webhook")
REPEAT_WINDOW = timedelta(hours=24)
DETAIL_MAX = 2000
COMPLAINT_END_REASON = "complaint (marked as spam)"
UNSUBSCRIBE_END_REASONS = {
    "smtp": "unsubscribe email (List-Unsubscribe mailto)",
    "ses": "unsubscribe reported by Amazon SES",
    "webhook": "unsubscribe reported by the mail provider",
}
# A suppression for a soft bounce gives way to a stronger reason; any other reason stays.
_UPGRADABLE = {SuppressionReason.SOFT_BOUNCE: (SuppressionReason.HARD_BOUNCE, SuppressionReason.COMPLAINT)}
_MESSAGE_ID = re.compile(r"<?\s*(\d{1,19})\.[^<>\s@]+@[^<>\s]+\s*>?")
# A signed unsubscribe token where our mail puts one: the List-Unsubscribe mailto (unsubscribe+TOKEN@)
# and the unsubscribe link (/unsubscribe/TOKEN). See subscribers.tokens for the format.
_UNSUBSCRIBE_TOKEN = re.compile(
    rb"unsubscribe(?:\+|/)(v1\.\d{1,19}\.\d{1,19}\.\d{1,19}\.[A-Za-z0-9_-]{24})(?![A-Za-z0-9_-])"
)
_MAX_ID = (
    2**63 - 1
)  # a BIGINT: a larger number in a stranger's Message-ID names no row (and must not reach the database)
MAX_TOKENS = 20  # distinct tokens checked per report: a real one quotes one or two
UNPROVEN_NOTE = "no VERP address, Message-ID or signed link of ours for this address"


@dataclass(frozen=True)
class BounceOutcome:
    """What one event did."""

    email: str
    kind: str
    source: str
    delivery_id: int | None
    event_id: int | None  # None for a repeat, which stores nothing
    repeated: bool = False
    delivery_bounced: bool = False  # the delivery was marked bounced now
    suppressed: str | None = None  # the suppression reason this event set (new or upgraded)
    unsubscribed: tuple[str, ...] = ()  # slugs of the lists it ended
    soft_count: int | None = None  # soft bounces within the window, this one included
    proven: bool = True  # False: stored for review only, nothing changed

    def summary(self) -> str:
        """One line for a log: ``hard bounce ann@example.com (delivery 12): delivery bounced, suppressed hard_bounce``."""
        what: dict[str, str] = {
            BounceKind.HARD: "hard bounce",
            BounceKind.SOFT: "soft bounce",
            BounceKind.DELAYED: "delay warning",
            BounceKind.COMPLAINT: "complaint",
            BounceKind.UNSUBSCRIBE: "unsubscribe",
        }
        where = f" (delivery {self.delivery_id})" if self.delivery_id is not None else ""
        if self.repeated:
            return f"{what[self.kind]} {self.email}{where}: repeat of an event already recorded, nothing changed"
        if not self.proven:
            return f"{what[self.kind]} {self.email}: unproven ({UNPROVEN_NOTE}), kept for review, nothing changed"
        done = []
        if self.delivery_bounced:
            done.append("delivery bounced")
        if self.soft_count is not None:
            done.append(f"{self.soft_count} soft bounce(s) in the window")
        if self.unsubscribed:
            done.append("left " + ", ".join(self.unsubscribed))
        if self.suppressed:
            done.append(f"suppressed {self.suppressed}")
        if self.kind == BounceKind.DELAYED:
            done.append("recorded only (the sending server is still trying)")
        return f"{what[self.kind]} {self.email}{where}: " + (", ".join(done) or "recorded")


@dataclass(frozen=True)
class EventRow:
    """One stored event, as an admin sees it."""

    id: int
    created_at: datetime
    email: str
    kind: str
    source: str
    delivery_id: int | None
    send_id: int | None
    detail: str
    proven: bool


@dataclass(frozen=True)
class Proof:
    """What shows that we mailed an address the message a report is about."""

    how: str  # for the log: "the Message-ID of a delivery to that address", ...
    delivery_id: int | None = None
    list_id: int | None = None  # the list of the mail, when no delivery is known


def record_bounce(
    session: Session,
    *,
    email: str | None,
    delivery_id: int | None = None,
    kind: str,
    source: str,
    detail: str = "",
    soft_limit: int,
    soft_days: float,
    list_id: int | None = None,
    proof: str | None = None,
    now: datetime | None = None,
) -> BounceOutcome:
    """Store a bounce, delay warning, complaint or unsubscribe event and act on it if it is proven (see the module docstring).

    With a ``delivery_id`` the event is about the address that delivery went to (``email``
    may then be None), and proven: pass one only when the report named it (a signed VERP
    address, or :func:`find_delivery`). Without one, the event is proven only when
    ``proof`` says what proved it (:func:`find_proof`, a verified unsubscribe token);
    otherwise it is stored unproven and changes nothing. ``list_id`` names the list of an
    unsubscribe or complaint when no delivery is known. Raises InvalidInput (unknown kind
    or source, bad address, neither address nor delivery), NotFound (no such delivery or
    list).
    """
    _check_kind_and_source(kind, source)
    now = now or utcnow()
    detail = _clean(detail)
    address, delivery = _event_address(session, email, delivery_id)
    if list_id is not None and session.get(MailingList, list_id) is None:
        raise NotFound(f"no list {list_id}")

    proven = delivery is not None or proof is not None
    if _is_repeat(session, address, kind, delivery, detail, now, proven):
        return BounceOutcome(address, kind, source, delivery_id, None, repeated=True, proven=proven)
    event = BounceEvent(
        email=address, delivery_id=delivery_id, kind=kind, source=source, detail=detail, created_at=now, proven=proven
    )
    session.add(event)
    session.flush()
    if not proven:
        return BounceOutcome(address, kind, source, None, event.id, proven=False)
    return _act_on_proven(session, event, delivery, list_id, soft_limit=soft_limit, soft_days=soft_days, now=now)


def find_delivery(session: Session, message_id: str | None, email: str | None = None) -> int | None:
    """The delivery a Message-ID of ours names, or None.

    Message-IDs start with the delivery id (``<1234.5.k3j4@example.org>``); the id is
    taken only if that delivery's stored Message-ID is the same one and, when ``email`` is
    given, it went to that address (Message-IDs can be guessed from one another, so an
    ID alone never names someone else's delivery). Raises nothing.
    """
    if not message_id:
        return None
    match = _MESSAGE_ID.fullmatch(message_id.strip())
    if match is None or int(match.group(1)) > _MAX_ID:
        return None
    delivery = session.get(Delivery, int(match.group(1)))
    if delivery is None or delivery.message_id is None:
        return None
    wanted = "<" + message_id.strip().strip("<>").strip() + ">"
    if delivery.message_id.strip() != wanted:
        return None
    if email is not None:
        try:
            if normalise_email(email) != delivery.email:
                return None
        except InvalidInput:
            return None
    return delivery.id


def signed_links(data: bytes | str, signer: TokenSigner) -> tuple[tuple[int, int], ...]:
    """(subscriber id, list id) of each signed unsubscribe link of ours in ``data`` (a report, a header), forged ones left out.

    Our mail carries such a link in its List-Unsubscribe header and its footer; a bounce or
    complaint that quotes the original quotes it too. Raises nothing.
    """
    if isinstance(data, str):
        data = data.encode("utf-8", "replace")
    found: list[tuple[int, int]] = []
    tokens = dict.fromkeys(m.group(1).decode("ascii") for m in _UNSUBSCRIBE_TOKEN.finditer(data))
    for token in list(tokens)[:MAX_TOKENS]:
        try:
            claims = signer.verify(token, "unsubscribe")
        except InvalidInput:
            continue
        if (claims.subscriber_id, claims.list_id) not in found:
            found.append((claims.subscriber_id, claims.list_id))
    return tuple(found)


def find_proof(
    session: Session, *, email: str | None, message_id: str | None = None, signed: Iterable[tuple[int, int]] = ()
) -> Proof | None:
    """What in a report proves that we mailed ``email`` the message it is about, or None.

    In this order: the original ``message_id`` is a delivery's to that address
    (:func:`find_delivery`), or a confirmation email's to that address; one of the
    ``signed`` links (:func:`signed_links`) was made for the subscriber with that address.
    A VERP return path is proof too, checked by the callers (it names the delivery).
    Raises nothing.
    """
    if not email:
        return None
    try:
        address = normalise_email(email)
    except InvalidInput:
        return None
    delivery_id = find_delivery(session, message_id, address)
    if delivery_id is not None:
        return Proof("the Message-ID of a delivery to that address", delivery_id=delivery_id)
    confirmation_list = _confirmation_mail_list(session, message_id, address)
    if confirmation_list is not None:
        return Proof("the Message-ID of a confirmation email to that address", list_id=confirmation_list)
    for subscriber_id, list_id in signed:
        mine = session.scalar(select(Subscriber.email).where(Subscriber.id == subscriber_id)) == address
        if mine and session.get(MailingList, list_id) is not None:
            return Proof("a signed unsubscribe link of ours made for that address", list_id=list_id)
    return None


def recent_events(
    session: Session,
    *,
    limit: int = 50,
    kind: str | None = None,
    email: str | None = None,
    proven: bool | None = None,
) -> list[EventRow]:
    """The newest events first, optionally of one kind, one address, proven or unproven only. Raises InvalidInput."""
    if kind is not None and kind not in tuple(BounceKind):
        raise InvalidInput(f"unknown kind {kind!r}; use one of {', '.join(BounceKind)}", where="--kind")
    if limit < 1:
        raise InvalidInput("must be at least 1", where="--limit")
    query = (
        select(
            BounceEvent.id,
            BounceEvent.created_at,
            BounceEvent.email,
            BounceEvent.kind,
            BounceEvent.source,
            BounceEvent.delivery_id,
            Delivery.send_id,
            BounceEvent.detail,
            BounceEvent.proven,
        )
        .outerjoin(Delivery, Delivery.id == BounceEvent.delivery_id)
        .order_by(BounceEvent.created_at.desc(), BounceEvent.id.desc())
        .limit(limit)
    )
    if kind is not None:
        query = query.where(BounceEvent.kind == kind)
    if email is not None:
        query = query.where(BounceEvent.email == normalise_email(email))
    if proven is not None:
        query = query.where(BounceEvent.proven.is_(proven))
    return [EventRow(*row[:-1], proven=bool(row[-1])) for row in session.execute(query)]


# --- helpers ---------------------------------------------------------------------------


def _check_kind_and_source(kind: str, source: str) -> None:
    if kind not in tuple(BounceKind):
        raise InvalidInput(f"unknown kind {kind!r}; use one of {', '.join(BounceKind)}", where="kind")
    if source not in SOURCES:
        raise InvalidInput(f"unknown source {source!r}; use one of {', '.join(SOURCES)}", where="source")


def _event_address(session: Session, email: str | None, delivery_id: int | None) -> tuple[str, Delivery | None]:
    """The address an event is about (the named delivery's, else ``email``) and that delivery, if any."""
    if delivery_id is not None:
        delivery = session.get(Delivery, delivery_id)
        if delivery is None:
            raise NotFound(f"no delivery {delivery_id}")
        return delivery.email, delivery
    if email:
        return normalise_email(email), None
    raise InvalidInput("an event needs an address or a delivery", where="email")


def _act_on_proven(
    session: Session,
    event: BounceEvent,
    delivery: Delivery | None,
    list_id: int | None,
    *,
    soft_limit: int,
    soft_days: float,
    now: datetime,
) -> BounceOutcome:
    """Do what a proven event of its kind does (see the module docstring); say what it did."""
    address, kind, source, detail = event.email, event.kind, event.source, event.detail
    delivery_bounced = kind in (BounceKind.HARD, BounceKind.SOFT) and _mark_bounced(delivery, now)
    suppressed: str | None = None
    soft_count: int | None = None
    unsubscribed: tuple[str, ...] = ()
    if kind == BounceKind.HARD:
        suppressed = _suppress(session, address, SuppressionReason.HARD_BOUNCE, detail)
    elif kind == BounceKind.SOFT:
        soft_count = _soft_bounces_within(session, address, soft_days, now)
        if soft_count >= soft_limit:
            note = f"{soft_count} soft bounces within {soft_days:g} days; the last: {detail}"
            suppressed = _suppress(session, address, SuppressionReason.SOFT_BOUNCE, note)
    elif kind == BounceKind.COMPLAINT:
        unsubscribed = _end_subscriptions(
            session, address, _lists_of(session, delivery, list_id), COMPLAINT_END_REASON, now
        )
        suppressed = _suppress(session, address, SuppressionReason.COMPLAINT, detail)
    elif kind == BounceKind.DELAYED:
        pass  # a warning: the message may still arrive, so it is only kept for the record
    else:  # unsubscribe
        unsubscribed = _end_subscriptions(
            session, address, _lists_of(session, delivery, list_id), UNSUBSCRIBE_END_REASONS[source], now
        )
        goodbyes_due(session, address, unsubscribed, now=now)  # they left by themselves: the lists' goodbyes
    return BounceOutcome(
        address,
        kind,
        source,
        event.delivery_id,
        event.id,
        delivery_bounced=delivery_bounced,
        suppressed=suppressed,
        unsubscribed=unsubscribed,
        soft_count=soft_count,
    )


def _mark_bounced(delivery: Delivery | None, now: datetime) -> bool:
    """Mark the delivery bounced if it is still ``sent``; True if it was marked now."""
    if delivery is None or delivery.status != DeliveryStatus.SENT:
        return False
    # The SMTP reply stays: it records what the server said when it took the message.
    delivery.status, delivery.bounced_at, delivery.updated_at = DeliveryStatus.BOUNCED, now, now
    return True


def _soft_bounces_within(session: Session, address: str, soft_days: float, now: datetime) -> int:
    """Proven soft bounces for the address within the last ``soft_days``, up to ``now`` included."""
    return (
        session.scalar(
            select(func.count())
            .select_from(BounceEvent)
            .where(
                BounceEvent.email == address,
                BounceEvent.kind == BounceKind.SOFT,
                BounceEvent.proven.is_(True),
                BounceEvent.created_at > now - timedelta(days=soft_days),
                BounceEvent.created_at <= now,
            )
        )
        or 0
    )


def _clean(detail: str) -> str:
    """One line, control characters replaced, clipped: details come from strangers' mail servers."""
    text = "".join(c if c >= " " and c != "\x7f" else " " for c in detail)
    return " ".join(text.split())[:DETAIL_MAX]


def _is_repeat(
    session: Session, address: str, kind: str, delivery: Delivery | None, detail: str, now: datetime, proven: bool
) -> bool:
    query = select(BounceEvent.id).where(BounceEvent.kind == kind)
    if proven:  # an unproven report first, then the proof: the proven one is news
        query = query.where(BounceEvent.proven.is_(True))
    if delivery is not None:
        query = query.where(BounceEvent.delivery_id == delivery.id)
    else:
        query = query.where(
            BounceEvent.email == address,
            BounceEvent.delivery_id.is_(None),
            BounceEvent.detail == detail,
            BounceEvent.created_at > now - REPEAT_WINDOW,
        )
    return session.scalar(query.limit(1)) is not None


def _confirmation_mail_list(session: Session, message_id: str | None, address: str) -> int | None:
    """The list of the confirmation email (a request to confirm's) that carried ``message_id`` to ``address``, or None.

    Its Message-ID starts with its row's id (``<12.confirm-run.3.6744@example.org>``), and
    counts only if that row stored the very same one and went to that address.
    """
    if not message_id:
        return None
    match = _MESSAGE_ID.fullmatch(message_id.strip())
    if match is None or int(match.group(1)) > _MAX_ID:
        return None
    wanted = "<" + message_id.strip().strip("<>").strip() + ">"
    row = session.execute(
        select(ConfirmationMail.message_id, ConfirmationMail.email, ConfirmationRun.list_id)
        .join(ConfirmationRun, ConfirmationRun.id == ConfirmationMail.run_id)
        .where(ConfirmationMail.id == int(match.group(1)))
    ).first()
    if row is None or row.message_id is None or row.message_id.strip() != wanted or row.email != address:
        return None
    return int(row.list_id)


def _suppress(session: Session, address: str, reason: SuppressionReason, note: str) -> str | None:
    """Suppress ``address``; the reason set now, or None if it was suppressed before (and stays so)."""
    row, created = suppress(session, address, reason=reason, note=note[:500])
    if created:
        return reason
    if reason in _UPGRADABLE.get(row.reason, ()):
        row.reason, row.note = reason, note[:500]
        return reason
    return None


def _lists_of(session: Session, delivery: Delivery | None, list_id: int | None) -> list[int] | None:
    """The list an event is about: the delivery's send's, or the one given; None means every list."""
    if delivery is not None:
        send_list = session.scalar(select(Send.list_id).where(Send.id == delivery.send_id))
        return [] if send_list is None else [send_list]  # a delivery's send always exists (foreign key)
    if list_id is not None:
        return [list_id]
    return None


def _end_subscriptions(
    session: Session, address: str, list_ids: list[int] | None, reason: str, now: datetime
) -> tuple[str, ...]:
    """End the address's subscriptions to those lists (None: all); returns the slugs of those ended now."""
    query = (
        select(Subscription, MailingList.slug)
        .join(Subscriber, Subscriber.id == Subscription.subscriber_id)
        .join(MailingList, MailingList.id == Subscription.list_id)
        .where(Subscriber.email == address, Subscription.status != SubscriptionStatus.UNSUBSCRIBED)
        .order_by(MailingList.slug)
    )
    if list_ids is not None:
        query = query.where(Subscription.list_id.in_(list_ids))
    ended = []
    for subscription, slug in session.execute(query).all():
        subscription.status, subscription.ended_at, subscription.end_reason = (
            SubscriptionStatus.UNSUBSCRIBED,
            now,
            reason,
        )
        ended.append(slug)
    return tuple(ended)
