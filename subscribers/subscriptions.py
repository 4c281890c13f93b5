"""Subscribers on lists, one at a time, with their consent records.

Bulk changes live in ``subscribers.importing``; this module is for the single
add/remove an admin or a form makes.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from newsletter.errors import InvalidInput, NotFound
from newsletter.store.models import Subscriber, Subscription, utcnow
from newsletter.store.states import SubscriptionStatus
from subscribers.addresses import check_display_name, normalise_email
from subscribers.automation_mails import welcome_due
from subscribers.lists import get_list


@dataclass(frozen=True)
class SubscriberRow:
    email: str
    name: str
    status: str
    source: str
    requested_at: datetime
    confirmed_at: datetime | None
    ended_at: datetime | None


@dataclass(frozen=True)
class AddResult:
    subscription: Subscription
    created: bool  # False when the address was already on the list


def get_or_create_subscriber(session: Session, email: str, name: str = "") -> Subscriber:
    """The subscriber for ``email`` (normalised), created if new; a given name replaces the stored one.

    Raises InvalidInput for a bad address or name.
    """
    email = normalise_email(email)
    name = check_display_name(name)
    subscriber = session.scalar(select(Subscriber).where(Subscriber.email == email))
    if subscriber is None:
        subscriber = Subscriber(email=email, name=name, attributes={})
        session.add(subscriber)
        session.flush()
    elif name and name != subscriber.name:
        subscriber.name = name
    return subscriber


def add_subscriber(
    session: Session,
    list_slug: str,
    email: str,
    *,
    name: str = "",
    confirmed: bool = False,
    source: str = "admin",
    ip: str | None = None,
    user_agent: str | None = None,
) -> AddResult:
    """Put ``email`` on the list, recording how it got there.

    An address that had unsubscribed is subscribed again only through this explicit call
    (a new consent record replaces the old one). Raises NotFound, InvalidInput.
    """
    mailing_list = get_list(session, list_slug)
    subscriber = get_or_create_subscriber(session, email, name)
    now = utcnow()
    status = SubscriptionStatus.CONFIRMED if confirmed else SubscriptionStatus.UNCONFIRMED
    subscription = session.scalar(
        select(Subscription).where(Subscription.list_id == mailing_list.id, Subscription.subscriber_id == subscriber.id)
    )
    if subscription is None:
        subscription = Subscription(
            list_id=mailing_list.id,
            subscriber_id=subscriber.id,
            status=status,
            source=source,
            ip=ip,
            user_agent=user_agent,
            requested_at=now,
            confirmed_at=now if confirmed else None,
        )
        session.add(subscription)
        session.flush()
        if confirmed:
            welcome_due(session, mailing_list.id, subscriber.id, added=True, now=now)  # if the list welcomes them
        return AddResult(subscription, created=True)
    if subscription.status == SubscriptionStatus.UNSUBSCRIBED or (
        confirmed and subscription.status == SubscriptionStatus.UNCONFIRMED
    ):
        subscription.status = status
        subscription.source, subscription.ip, subscription.user_agent = source, ip, user_agent
        subscription.requested_at = now
        subscription.confirmed_at = now if confirmed else None
        subscription.ended_at = subscription.end_reason = None
        if confirmed:
            welcome_due(session, mailing_list.id, subscriber.id, added=True, now=now)  # if the list welcomes them
    return AddResult(subscription, created=False)


def unsubscribe(session: Session, list_slug: str, email: str, *, reason: str) -> Subscription:
    """Mark the subscription unsubscribed, keeping its consent history. Raises NotFound, InvalidInput."""
    mailing_list = get_list(session, list_slug)
    address = normalise_email(email)
    subscription = session.scalar(
        select(Subscription)
        .join(Subscriber, Subscriber.id == Subscription.subscriber_id)
        .where(Subscription.list_id == mailing_list.id, Subscriber.email == address)
    )
    if subscription is None:
        raise NotFound(f"{address} is not on list {list_slug!r}")
    if subscription.status != SubscriptionStatus.UNSUBSCRIBED:
        subscription.status = SubscriptionStatus.UNSUBSCRIBED
        subscription.ended_at = utcnow()
        subscription.end_reason = reason
    return subscription


def iter_subscribers(session: Session, list_slug: str, *, status: str | None = None) -> Iterator[SubscriberRow]:
    """Stream the list's subscribers, ordered by address. Raises NotFound, InvalidInput (bad status)."""
    if status is not None and status not in tuple(SubscriptionStatus):
        raise InvalidInput(f"unknown status {status!r}; use one of {', '.join(SubscriptionStatus)}", where="--status")
    mailing_list = get_list(session, list_slug)
    query = (
        select(
            Subscriber.email,
            Subscriber.name,
            Subscription.status,
            Subscription.source,
            Subscription.requested_at,
            Subscription.confirmed_at,
            Subscription.ended_at,
        )
        .join(Subscriber, Subscriber.id == Subscription.subscriber_id)
        .where(Subscription.list_id == mailing_list.id)
        .order_by(Subscriber.email)
    )
    if status:
        query = query.where(Subscription.status == status)
    for row in session.execute(query.execution_options(yield_per=1000)):
        yield SubscriberRow(*row)
