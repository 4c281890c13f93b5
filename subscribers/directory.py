"""The subscriber directory: search, view, edit and delete subscribers, across every list.

Plain functions over a session the caller owns (one transaction per call site); the admin
API and the admin UI are thin wrappers around them.

Search stays cheap on a million subscribers: one COUNT, one page query (the suppression
reason joined in) and one query for the page's subscriptions, whatever the page size.

Erasure (GDPR) and the delivery log: ``deliveries.subscriber_id`` cascades on delete, so
deleting the subscriber row would delete its rows from every send's log and change the
sends' counts. A subscriber who appears in a delivery log is therefore reduced to an
anonymous tombstone instead (address ``erased-<id>@erased.invalid``, a reserved domain no
real address can have; no name, no attributes, no subscriptions), which the directory
never shows; a subscriber with no deliveries is deleted outright.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, ScalarSelect, delete, exists, func, or_, select, update
from sqlalchemy.orm import Session

from newsletter.errors import Conflict, InvalidInput, NotFound
from newsletter.store import erasure_lock
from newsletter.store.db import rowcount
from newsletter.store.models import (
    AutomationMail,
    BounceEvent,
    Delivery,
    EngagementEvent,
    MailingList,
    Subscriber,
    Subscription,
    Suppression,
    utcnow,
)
from newsletter.store.states import AutomationMailStatus, DeliveryStatus, SubscriptionStatus
from subscribers.addresses import check_display_name, normalise_email
from subscribers.automation_mails import welcome_due
from subscribers.lists import get_list

MAX_PAGE = 500
ERASED_DOMAIN = "erased.invalid"  # RFC 2606 reserved: normalise_email refuses it, so no clash with a real address
ERASED_EMAIL = "erased"  # what an erased subscriber's rows in the delivery log show
ADMIN_REMOVED = "removed by an admin"
ADMIN_DELETED = "deleted by an admin"
MAX_ATTRIBUTES = 100
MAX_ATTRIBUTE_KEY = 100
MAX_ATTRIBUTE_VALUE = 2000


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


@dataclass(frozen=True)
class SubscriptionSummary:
    list_slug: str
    list_name: str
    status: str
    source: str
    ip: str | None
    user_agent: str | None
    requested_at: datetime
    confirmed_at: datetime | None
    ended_at: datetime | None
    end_reason: str | None

    def as_json(self) -> dict[str, Any]:
        return {
            "list": self.list_slug,
            "list_name": self.list_name,
            "status": self.status,
            "source": self.source,
            "ip": self.ip,
            "user_agent": self.user_agent,
            "requested_at": _iso(self.requested_at),
            "confirmed_at": _iso(self.confirmed_at),
            "ended_at": _iso(self.ended_at),
            "end_reason": self.end_reason,
        }


@dataclass(frozen=True)
class SubscriberSummary:
    id: int
    email: str
    name: str
    attributes: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    subscriptions: tuple[SubscriptionSummary, ...]
    suppressed: str | None  # the suppression reason, or None

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "email": self.email,
            "name": self.name,
            "attributes": dict(self.attributes),
            "created_at": _iso(self.created_at),
            "updated_at": _iso(self.updated_at),
            "subscriptions": [s.as_json() for s in self.subscriptions],
            "suppressed": self.suppressed,
        }


@dataclass(frozen=True)
class Page:
    total: int
    offset: int
    limit: int
    items: tuple[SubscriberSummary, ...]

    def as_json(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "offset": self.offset,
            "limit": self.limit,
            "items": [item.as_json() for item in self.items],
        }


def _not_erased() -> ColumnElement[bool]:
    return Subscriber.email.not_like(f"%@{ERASED_DOMAIN}")


def _erased_count() -> ScalarSelect[int]:
    # A range on the unique email index first: only addresses starting "erased-" are looked at.
    return (
        select(func.count())
        .select_from(Subscriber)
        .where(Subscriber.email >= "erased-", Subscriber.email < "erased.", Subscriber.email.like(f"%@{ERASED_DOMAIN}"))
        .scalar_subquery()
    )


def _like_pattern(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def search_subscribers(
    session: Session,
    *,
    query: str | None = None,
    list_slug: str | None = None,
    status: str | None = None,
    offset: int = 0,
    limit: int = 50,
) -> Page:
    """One page of subscribers, ordered by id.

    ``query`` matches a case-insensitive substring of the address or the name; ``list_slug``
    and ``status`` keep subscribers with a subscription on that list and/or in that status.
    Raises InvalidInput (where "status", "limit" or "offset"), NotFound for an unknown list.
    """
    _check_search(status, limit, offset)
    text_match = _text_match(session, (query or "").strip().lower())
    on_list: list[Any] = []
    if list_slug is not None:
        on_list.append(Subscription.list_id == get_list(session, list_slug).id)
    if status is not None:
        on_list.append(Subscription.status == status)
    conditions, total = _conditions_and_total(session, text_match, on_list, one_list=list_slug is not None)
    if total == 0 or offset >= total:
        return Page(total=total, offset=offset, limit=limit, items=())
    return Page(total=total, offset=offset, limit=limit, items=_page_items(session, conditions, offset, limit))


def _check_search(status: str | None, limit: int, offset: int) -> None:
    if status is not None and status not in tuple(SubscriptionStatus):
        raise InvalidInput(f"unknown status {status!r}; use one of {', '.join(SubscriptionStatus)}", where="status")
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE:
        raise InvalidInput(f"limit must be a whole number from 1 to {MAX_PAGE}", where="limit")
    if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
        raise InvalidInput("offset must be a whole number, 0 or more", where="offset")


def _text_match(session: Session, text: str) -> Any:
    """The condition that the address or the name holds ``text`` (lower-cased), ignoring case; None for no text."""
    if not text:
        return None
    pattern = _like_pattern(text)
    # Addresses are stored lower-cased. SQLite's LIKE ignores ASCII case by itself (and its
    # lower() knows no other letters); PostgreSQL's ILIKE folds every letter.
    sqlite = session.get_bind().dialect.name == "sqlite"
    name_match = Subscriber.name.like(pattern, escape="\\") if sqlite else Subscriber.name.ilike(pattern, escape="\\")
    return or_(Subscriber.email.like(pattern, escape="\\"), name_match)


def _conditions_and_total(
    session: Session, text_match: Any, on_list: list[Any], *, one_list: bool
) -> tuple[list[Any], int]:
    """The conditions on Subscriber that pick the listing's rows, and how many it has in all.

    Counting is the costly part on a big table, so each case counts the cheapest way:
    from the subscriptions index alone when there is no text to match. Erased tombstones
    have no subscriptions, so only listings without a list/status filter leave them out.
    """
    conditions: list[Any] = [text_match] if text_match is not None else []
    if on_list:
        if text_match is None:
            # One subscription per list and subscriber: count rows on one list, distinct subscribers across lists.
            counted = func.count() if one_list else func.count(func.distinct(Subscription.subscriber_id))
            total = session.scalar(select(counted).select_from(Subscription).where(*on_list)) or 0
        else:
            # A set (IN) for counting every match; EXISTS for the page, which stops after offset + limit rows.
            member = Subscriber.id.in_(select(Subscription.subscriber_id).where(*on_list))
            total = session.scalar(select(func.count()).select_from(Subscriber).where(*conditions, member)) or 0
        conditions.append(exists().where(Subscription.subscriber_id == Subscriber.id, *on_list))
    else:
        conditions.append(_not_erased())
        if text_match is None:
            everyone = select(func.count()).select_from(Subscriber).scalar_subquery()
            total = session.scalar(select(everyone - _erased_count())) or 0
        else:
            total = session.scalar(select(func.count()).select_from(Subscriber).where(*conditions)) or 0
    return conditions, total


def _page_items(session: Session, conditions: list[Any], offset: int, limit: int) -> tuple[SubscriberSummary, ...]:
    rows = session.execute(
        select(Subscriber, Suppression.reason)
        .outerjoin(Suppression, Suppression.email == Subscriber.email)
        .where(*conditions)
        .order_by(Subscriber.id)
        .offset(offset)
        .limit(limit)
    ).all()
    by_subscriber = _subscriptions_of(session, [subscriber.id for subscriber, _ in rows])
    return tuple(_summary(subscriber, reason, by_subscriber.get(subscriber.id, ())) for subscriber, reason in rows)


def _subscriptions_of(session: Session, subscriber_ids: list[int]) -> dict[int, list[SubscriptionSummary]]:
    found: dict[int, list[SubscriptionSummary]] = {}
    if not subscriber_ids:
        return found
    rows = session.execute(
        select(Subscription, MailingList.slug, MailingList.name)
        .join(MailingList, MailingList.id == Subscription.list_id)
        .where(Subscription.subscriber_id.in_(subscriber_ids))
        .order_by(Subscription.subscriber_id, MailingList.slug)
    ).all()
    for sub, slug, list_name in rows:
        found.setdefault(sub.subscriber_id, []).append(
            SubscriptionSummary(
                list_slug=slug,
                list_name=list_name,
                status=sub.status,
                source=sub.source,
                ip=sub.ip,
                user_agent=sub.user_agent,
                requested_at=sub.requested_at,
                confirmed_at=sub.confirmed_at,
                ended_at=sub.ended_at,
                end_reason=sub.end_reason,
            )
        )
    return found


def _summary(subscriber: Subscriber, suppressed: str | None, subs: Any) -> SubscriberSummary:
    return SubscriberSummary(
        id=subscriber.id,
        email=subscriber.email,
        name=subscriber.name,
        attributes=dict(subscriber.attributes or {}),
        created_at=subscriber.created_at,
        updated_at=subscriber.updated_at,
        subscriptions=tuple(subs),
        suppressed=suppressed,
    )


def _load(session: Session, subscriber_id: int) -> Subscriber:
    subscriber = session.get(Subscriber, subscriber_id) if isinstance(subscriber_id, int) else None
    if subscriber is None or subscriber.email.endswith(f"@{ERASED_DOMAIN}"):
        raise NotFound(f"no subscriber {subscriber_id}")
    return subscriber


def get_subscriber(session: Session, subscriber_id: int) -> SubscriberSummary:
    """The subscriber with every subscription (consent record) and any suppression. Raises NotFound."""
    subscriber = _load(session, subscriber_id)
    session.flush()
    reason = session.scalar(select(Suppression.reason).where(Suppression.email == subscriber.email))
    return _summary(subscriber, reason, _subscriptions_of(session, [subscriber.id]).get(subscriber.id, ()))


def update_subscriber(
    session: Session,
    subscriber_id: int,
    *,
    email: str | None = None,
    name: str | None = None,
    attributes: dict[str, Any] | None = None,
) -> SubscriberSummary:
    """Change the address, name and/or attributes (None leaves a field as it is; ``attributes`` replaces all).

    Raises NotFound, InvalidInput (where "email", "name" or "attributes"), Conflict when
    another subscriber has the address. Nothing is changed when any field is refused.
    """
    subscriber = _load(session, subscriber_id)
    new_email = new_name = new_attributes = None
    if email is not None:
        new_email = _checked("email", normalise_email, email)
        if new_email != subscriber.email:
            other = session.scalar(select(Subscriber.id).where(Subscriber.email == new_email))
            if other is not None:
                raise Conflict(f"another subscriber (id {other}) already has the address {new_email}")
    if name is not None:
        if not isinstance(name, str):
            raise InvalidInput("name must be a string", where="name")
        new_name = _checked("name", check_display_name, name)
    if attributes is not None:
        new_attributes = check_attributes(attributes)
    if new_email is not None and new_email != subscriber.email:
        subscriber.email = new_email
    if new_name is not None and new_name != subscriber.name:
        subscriber.name = new_name
    if new_attributes is not None and new_attributes != (subscriber.attributes or {}):
        subscriber.attributes = new_attributes
    session.flush()
    return get_subscriber(session, subscriber.id)


def _checked(where: str, check: Any, value: Any) -> Any:
    if not isinstance(value, str):
        raise InvalidInput(f"{where} must be a string", where=where)
    try:
        return check(value)
    except InvalidInput as exc:
        raise InvalidInput(exc.message, where=where) from None


def check_attributes(attributes: Any) -> dict[str, Any]:
    """A flat dict of str -> str/int/float/bool, or InvalidInput(where="attributes")."""
    if not isinstance(attributes, dict):
        raise InvalidInput("attributes must be an object of names to values", where="attributes")
    if len(attributes) > MAX_ATTRIBUTES:
        raise InvalidInput(f"at most {MAX_ATTRIBUTES} attributes", where="attributes")
    checked: dict[str, Any] = {}
    for key, value in attributes.items():
        if not isinstance(key, str) or not key.strip():
            raise InvalidInput(f"attribute name {key!r} must be a non-empty string", where="attributes")
        if len(key) > MAX_ATTRIBUTE_KEY or any(ord(c) < 32 or ord(c) == 127 for c in key):
            raise InvalidInput(
                f"attribute name {key[:40]!r} must be at most {MAX_ATTRIBUTE_KEY} characters, without control characters",
                where="attributes",
            )
        if isinstance(value, float) and not math.isfinite(value):
            raise InvalidInput(f"attribute {key!r} is not a finite number", where="attributes")
        if isinstance(value, str) and len(value) > MAX_ATTRIBUTE_VALUE:
            raise InvalidInput(f"attribute {key!r} is longer than {MAX_ATTRIBUTE_VALUE} characters", where="attributes")
        if not isinstance(value, str | int | float | bool):
            raise InvalidInput(
                f"attribute {key!r} must be a string, number or true/false, not {type(value).__name__}",
                where="attributes",
            )
        checked[key] = value
    return checked


def set_subscription(
    session: Session, subscriber_id: int, list_slug: str, status: str, *, source: str = "admin"
) -> SubscriberSummary:
    """An admin adds the subscriber to a list ("confirmed") or removes them ("unsubscribed").

    Adding (or re-adding after an unsubscribe) records a new consent: confirmed now, by
    ``source``. Removing keeps the consent record and notes when and why it ended.
    Raises NotFound (subscriber, list, or not on the list when removing), InvalidInput
    (where "status"), Conflict when adding a suppressed address.
    """
    if status not in (SubscriptionStatus.CONFIRMED, SubscriptionStatus.UNSUBSCRIBED):
        raise InvalidInput(
            f"status must be '{SubscriptionStatus.CONFIRMED}' or '{SubscriptionStatus.UNSUBSCRIBED}', not {status!r}",
            where="status",
        )
    subscriber = _load(session, subscriber_id)
    mailing_list = get_list(session, list_slug)
    subscription = session.scalar(
        select(Subscription).where(Subscription.list_id == mailing_list.id, Subscription.subscriber_id == subscriber.id)
    )
    now = utcnow()
    if status == SubscriptionStatus.CONFIRMED:
        reason = session.scalar(select(Suppression.reason).where(Suppression.email == subscriber.email))
        if reason is not None:
            raise Conflict(
                f"{subscriber.email} is suppressed ({reason}); lift the suppression before subscribing it again"
            )
        if subscription is None:
            session.add(
                Subscription(
                    list_id=mailing_list.id,
                    subscriber_id=subscriber.id,
                    status=SubscriptionStatus.CONFIRMED,
                    source=source,
                    requested_at=now,
                    confirmed_at=now,
                )
            )
        elif subscription.status != SubscriptionStatus.CONFIRMED:
            subscription.status = SubscriptionStatus.CONFIRMED
            subscription.source = source
            subscription.ip = subscription.user_agent = None
            subscription.requested_at = subscription.confirmed_at = now
            subscription.ended_at = subscription.end_reason = None
        if subscription is None or subscription.confirmed_at == now:  # confirmed just now
            welcome_due(session, mailing_list.id, subscriber.id, added=True, now=now)  # if the list welcomes them
    else:
        if subscription is None:
            raise NotFound(f"{subscriber.email} is not on list {list_slug!r}")
        if subscription.status != SubscriptionStatus.UNSUBSCRIBED:
            subscription.status = SubscriptionStatus.UNSUBSCRIBED
            subscription.ended_at = now
            subscription.end_reason = ADMIN_REMOVED
    session.flush()
    return get_subscriber(session, subscriber.id)


def delete_subscriber(session: Session, subscriber_id: int, *, erase: bool = False) -> None:
    """Remove the subscriber from every list, or erase every trace of them (``erase=True``).

    Without ``erase``: each live subscription becomes unsubscribed ("deleted by an admin");
    the subscriber row and the consent records stay as proof. With ``erase`` (GDPR erasure):
    the subscriptions and bounce events go, their opens and clicks no longer name them, the delivery log
    rows are anonymised (address
    "erased", SMTP reply removed; pending ones skipped) but kept for the sends' counts, and
    the subscriber row is deleted, or reduced to an anonymous tombstone when delivery log
    rows still refer to it (see the module docstring). A suppression of the address is kept,
    so it is never mailed again. Raises NotFound.
    """
    subscriber = _load(session, subscriber_id)
    now = utcnow()
    if not erase:
        session.execute(
            update(Subscription)
            .where(Subscription.subscriber_id == subscriber.id, Subscription.status != SubscriptionStatus.UNSUBSCRIBED)
            .values(status=SubscriptionStatus.UNSUBSCRIBED, ended_at=now, end_reason=ADMIN_DELETED, updated_at=now)
            .execution_options(synchronize_session="fetch")
        )
        return
    email = subscriber.email
    erasure_lock.hold_for_erasure(session)  # a snapshot writing their deliveries now commits first, so they are seen
    session.execute(delete(BounceEvent).where(BounceEvent.email == email).execution_options(synchronize_session=False))
    # Their opens and clicks no longer name them; a send's figures keep counting them, as its delivery log does.
    session.execute(
        update(EngagementEvent)
        .where(EngagementEvent.subscriber_id == subscriber.id)
        .values(subscriber_id=None)
        .execution_options(synchronize_session=False)
    )
    session.execute(
        delete(Subscription)
        .where(Subscription.subscriber_id == subscriber.id)
        .execution_options(synchronize_session="fetch")
    )
    session.execute(
        update(Delivery)
        .where(Delivery.subscriber_id == subscriber.id, Delivery.status == DeliveryStatus.PENDING)
        .values(status=DeliveryStatus.SKIPPED, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    # Their automated emails (welcome, steps, goodbye) are anonymised like the delivery log, the unsent ones skipped.
    session.execute(
        update(AutomationMail)
        .where(AutomationMail.subscriber_id == subscriber.id, AutomationMail.status == AutomationMailStatus.PENDING)
        .values(status=AutomationMailStatus.SKIPPED, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    session.execute(
        update(AutomationMail)
        .where(AutomationMail.subscriber_id == subscriber.id)
        .values(email=ERASED_EMAIL, smtp_reply=None, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    logged = rowcount(
        session.execute(
            update(Delivery)
            .where(Delivery.subscriber_id == subscriber.id)
            .values(email=ERASED_EMAIL, smtp_reply=None, updated_at=now)
            .execution_options(synchronize_session=False)
        )
    )
    if logged:
        subscriber.email = f"erased-{subscriber.id}@{ERASED_DOMAIN}"
        subscriber.name = ""
        subscriber.attributes = {}
        subscriber.created_at = now
    else:
        session.delete(subscriber)
    session.flush()
