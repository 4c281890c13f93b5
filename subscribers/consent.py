"""Consent as subscribers give and withdraw it: double opt-in, unsubscribing, preferences.

Every function takes a Session and plain values; those acting on a link a subscriber
followed also take the :class:`~subscribers.tokens.TokenSigner` and the token, and check
it first. They raise the errors of :mod:`newsletter.errors`:

* InvalidInput: a malformed, forged, foreign or expired link (:class:`LinkExpired` for an
  expired confirmation link), or a bad form value;
* NotFound: the link names a list or subscriber that no longer exists;
* Conflict: the link cannot be used in the subscription's current state.

The rules, in the order a subscriber meets them:

* **Asking** (the public form) never changes what is stored about a *confirmed*
  subscription, nor an existing subscriber's name: anyone can type any address into a
  form. A new address is stored with its name; an unconfirmed request is refreshed (time,
  IP, user agent); a subscription that ended stays ended, its record intact, until the new
  request is confirmed. An address suppressed for a bounce, a complaint or by an admin is
  stored nowhere and sent nothing.
* **Confirming** needs the link from the confirmation email, whose token was issued at the
  time of the request. It confirms an unconfirmed subscription, or re-subscribes one that
  ended *before* that request (a link sent before someone left never brings them back).
  A re-subscription writes a new consent record (source "form", requested at the time of
  the link, IP and user agent of the confirmation). Confirming is the subscriber's
  explicit new consent, so it lifts an ``unsubscribed_all`` suppression (but no other).
* **Leaving** records when and how (``ended_at``, ``end_reason``: "one-click (RFC 8058)",
  "unsubscribe page", "preferences", "leave everything"); leaving twice keeps the first
  record. Workers re-check every claimed delivery, so leaving takes effect for sends
  already in progress. Leaving everything also suppresses the address (``unsubscribed_all``).
* **Preferences** (the link in every issue) show the subscriber's lists; from there they
  can rename themselves, leave a list, leave everything, or ask to join again a list they
  are on the books of. A preferences link lives ``max_age`` (NEWSLETTER_PREFERENCES_DAYS,
  then :class:`~subscribers.tokens.TokenExpired`, and :func:`fresh_link_for` names whom a
  fresh link goes to), and may have been forwarded, so joining again never subscribes at
  once: like the form it is a request, confirmed from the email it sends (double opt-in);
  until then an ended subscription stays ended.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session, undefer

from newsletter.errors import Conflict, InvalidInput, NotFound
from newsletter.locales.languages import SOURCE
from newsletter.locales.translatable import translatable
from newsletter.store.models import MailingList, Subscriber, Subscription, Suppression, utcnow
from newsletter.store.states import SubscriptionStatus, SuppressionReason
from subscribers.addresses import check_display_name, normalise_email
from subscribers.automation_mails import goodbye_due, welcome_due
from subscribers.lists import get_public_list
from subscribers.suppressions import suppress
from subscribers.tokens import TokenClaims, TokenSigner

FORM_SOURCE = "form"
PREFERENCES_SOURCE = "preferences"
HOW_ONE_CLICK = "one-click (RFC 8058)"
HOW_PAGE = "unsubscribe page"
HOW_PREFERENCES = "preferences"
HOW_EVERYTHING = "leave everything"
#: The one suppression a subscriber can lift themselves, by subscribing again.
SELF_SUPPRESSION = SuppressionReason.UNSUBSCRIBED_ALL

_IP_MAX = 64  # column sizes of the consent record
_USER_AGENT_MAX = 512


class LinkExpired(InvalidInput):
    """A confirmation link past its lifetime; ``list_slug`` names the list to ask again."""

    def __init__(self, message: str, *, list_slug: str) -> None:
        super().__init__(message)
        self.list_slug = list_slug


@dataclass(frozen=True)
class ConfirmationRequest:
    """A request from the form that needs a confirmation email."""

    subscription_id: int
    email: str
    requested_at: int  # unix seconds: the confirmation link's issued_at


@dataclass(frozen=True)
class PendingConfirmation:
    """What the confirmation email needs, read when it is about to be sent."""

    subscription_id: int
    subscriber_id: int
    email: str
    name: str
    mailing_list: MailingList
    requested_at: int


@dataclass(frozen=True)
class SubscriptionView:
    """One subscription as a page shows it."""

    subscriber_id: int
    list_id: int
    email: str
    name: str
    list_slug: str
    list_name: str
    status: str
    ended_at: datetime | None
    end_reason: str | None
    already: bool = False  # the action had been taken before: nothing changed now
    list_language: str = SOURCE  # the list's: its pages' language unless the reader's browser asks for another


@dataclass(frozen=True)
class ListState:
    slug: str
    name: str
    status: str
    confirmed_at: datetime | None
    ended_at: datetime | None
    list_id: int | None = None


@dataclass(frozen=True)
class Preferences:
    subscriber_id: int
    email: str
    name: str
    lists: tuple[ListState, ...]
    suppressed: str | None  # the suppression reason, if any
    suppressed_at: datetime | None
    language: str = SOURCE  # the language of the list the link came for: the page's unless the browser asks


# --- asking and confirming -----------------------------------------------------------


def request_subscription(
    session: Session,
    list_slug: str,
    email: str,
    *,
    name: str = "",
    ip: str | None = None,
    user_agent: str | None = None,
) -> ConfirmationRequest | None:
    """Record a request from the public form; returns what to confirm, or None to mail nothing.

    Callers must answer the same whatever this returns, so the form never tells whether
    an address is known. Raises NotFound (an unknown or a private list: the public form
    cannot join a private one), InvalidInput (address or name, with ``where`` "email" or "name").
    """
    mailing_list = get_public_list(session, list_slug)
    try:
        address = normalise_email(email)
    except InvalidInput:
        raise InvalidInput(
            translatable("please enter a whole email address, like ann@example.com"), where="email"
        ) from None
    try:
        name = check_display_name(name)
    except InvalidInput as exc:
        raise InvalidInput(
            translatable("please check your name: %(reason)s", reason=exc.message), where="name"
        ) from None
    reason = _suppression(session, address)
    if reason is not None and reason != SELF_SUPPRESSION:
        return None
    now = utcnow()
    subscriber = session.scalar(select(Subscriber).where(Subscriber.email == address))
    if subscriber is None:
        subscriber = Subscriber(email=address, name=name, attributes={})
        session.add(subscriber)
        session.flush()
    subscription = _subscription(session, mailing_list.id, subscriber.id)
    if subscription is None:
        subscription = Subscription(
            list_id=mailing_list.id,
            subscriber_id=subscriber.id,
            status=SubscriptionStatus.UNCONFIRMED,
            source=FORM_SOURCE,
            ip=_clip(ip, _IP_MAX),
            user_agent=_clip(user_agent, _USER_AGENT_MAX),
            requested_at=now,
        )
        session.add(subscription)
        session.flush()
    elif subscription.status == SubscriptionStatus.CONFIRMED:
        return None
    elif subscription.status == SubscriptionStatus.UNCONFIRMED:
        subscription.source, subscription.requested_at = FORM_SOURCE, now
        subscription.ip, subscription.user_agent = _clip(ip, _IP_MAX), _clip(user_agent, _USER_AGENT_MAX)
    # An ended subscription keeps its record until this request is confirmed.
    return ConfirmationRequest(subscription.id, address, int(now.timestamp()))


def pending_confirmation(session: Session, subscription_id: int, requested_at: int) -> PendingConfirmation | None:
    """What a confirmation email for this request needs, or None if it should no longer be sent.

    None when the subscription is gone or confirmed, ended after the request, or the
    address was suppressed for a reason other than leaving everything. Raises nothing.
    """
    row = session.execute(
        select(Subscription, Subscriber, MailingList)
        .join(Subscriber, Subscriber.id == Subscription.subscriber_id)
        .join(MailingList, MailingList.id == Subscription.list_id)
        .where(Subscription.id == subscription_id)
        .options(undefer(MailingList.language))  # deferred; the email is rendered after this session
    ).first()
    if row is None:
        return None
    subscription, subscriber, mailing_list = row
    if subscription.status == SubscriptionStatus.CONFIRMED or not _request_stands(subscription, requested_at):
        return None
    reason = _suppression(session, subscriber.email)
    if reason is not None and reason != SELF_SUPPRESSION:
        return None
    return PendingConfirmation(
        subscription.id, subscriber.id, subscriber.email, subscriber.name, mailing_list, requested_at
    )


def check_confirmation(session: Session, signer: TokenSigner, token: str, *, max_age: float) -> SubscriptionView:
    """What a confirmation link would confirm (``already`` if confirmed before); changes nothing.

    Raises InvalidInput (bad link), LinkExpired, NotFound, Conflict (left after the link was sent).
    """
    _, subscription, subscriber, mailing_list = _confirmation(session, signer, token, max_age)
    return _view(subscription, subscriber, mailing_list, already=subscription.status == SubscriptionStatus.CONFIRMED)


def confirm(
    session: Session,
    signer: TokenSigner,
    token: str,
    *,
    max_age: float,
    ip: str | None = None,
    user_agent: str | None = None,
) -> SubscriptionView:
    """Confirm the subscription a confirmation link names (idempotent).

    Lifts an ``unsubscribed_all`` suppression of the address. Raises InvalidInput (bad
    link), LinkExpired, NotFound, Conflict (left after the link was sent).
    """
    claims, subscription, subscriber, mailing_list = _confirmation(session, signer, token, max_age)
    if subscription.status == SubscriptionStatus.CONFIRMED:
        return _view(subscription, subscriber, mailing_list, already=True)
    now = utcnow()
    if subscription.status == SubscriptionStatus.UNSUBSCRIBED:
        # A new consent record for a re-subscription: the request is the link's time.
        subscription.source = FORM_SOURCE
        subscription.requested_at = datetime.fromtimestamp(claims.issued_at, UTC)
        subscription.ip, subscription.user_agent = _clip(ip, _IP_MAX), _clip(user_agent, _USER_AGENT_MAX)
        subscription.ended_at = subscription.end_reason = None
    subscription.status, subscription.confirmed_at = SubscriptionStatus.CONFIRMED, now
    _lift_self_suppression(session, subscriber.email)
    welcome_due(session, mailing_list.id, subscriber.id, now=now)  # if the list has a welcome (automations)
    return _view(subscription, subscriber, mailing_list)


# --- leaving ---------------------------------------------------------------------------


def unsubscribe_view(session: Session, signer: TokenSigner, token: str) -> SubscriptionView:
    """The subscription an unsubscribe link names; changes nothing. Raises InvalidInput, NotFound."""
    subscription, subscriber, mailing_list = _load(session, signer.verify(token, "unsubscribe"))
    return _view(subscription, subscriber, mailing_list, already=subscription.status == SubscriptionStatus.UNSUBSCRIBED)


def unsubscribe(session: Session, signer: TokenSigner, token: str, *, how: str) -> SubscriptionView:
    """Unsubscribe from the list an unsubscribe link names, recording ``how`` (idempotent).

    Raises InvalidInput, NotFound.
    """
    subscription, subscriber, mailing_list = _load(session, signer.verify(token, "unsubscribe"))
    already = not _end(subscription, how)
    if not already:
        goodbye_due(session, mailing_list.id, subscriber.id)  # if the list has a goodbye (automations)
    return _view(subscription, subscriber, mailing_list, already=already)


# --- preferences ---------------------------------------------------------------------


def preferences(session: Session, signer: TokenSigner, token: str, *, max_age: float | None = None) -> Preferences:
    """The subscriber's lists and their states. Raises InvalidInput (TokenExpired past ``max_age``), NotFound."""
    return _preferences(session, *_subscriber(session, signer, token, max_age))


def rename(
    session: Session, signer: TokenSigner, token: str, name: str, *, max_age: float | None = None
) -> Preferences:
    """Change the subscriber's name ("" clears it). Raises InvalidInput (bad link or name), NotFound."""
    subscriber, language = _subscriber(session, signer, token, max_age)
    try:
        subscriber.name = check_display_name(name)
    except InvalidInput as exc:
        raise InvalidInput(
            translatable("please check your name: %(reason)s", reason=exc.message), where="name"
        ) from None
    return _preferences(session, subscriber, language)


def leave(
    session: Session, signer: TokenSigner, token: str, list_slug: str, *, max_age: float | None = None
) -> Preferences:
    """Leave one of the subscriber's lists. Raises InvalidInput, NotFound."""
    subscriber, language = _subscriber(session, signer, token, max_age)
    subscription = _own_subscription(session, subscriber, list_slug)
    if _end(subscription, HOW_PREFERENCES):
        goodbye_due(session, subscription.list_id, subscriber.id)  # if the list has a goodbye (automations)
    return _preferences(session, subscriber, language)


def leave_everything(session: Session, signer: TokenSigner, token: str, *, max_age: float | None = None) -> Preferences:
    """Leave every list and suppress the address (``unsubscribed_all``). Raises InvalidInput, NotFound."""
    subscriber, language = _subscriber(session, signer, token, max_age)
    for subscription in session.scalars(select(Subscription).where(Subscription.subscriber_id == subscriber.id)):
        _end(subscription, HOW_EVERYTHING)
    suppress(session, subscriber.email, reason=SELF_SUPPRESSION, note="left everything on the preferences page")
    return _preferences(session, subscriber, language)


def rejoin(
    session: Session,
    signer: TokenSigner,
    token: str,
    list_slug: str,
    *,
    ip: str | None = None,
    user_agent: str | None = None,
    max_age: float | None = None,
) -> tuple[Preferences, ConfirmationRequest | None]:
    """Ask to join again (or to confirm) one of the subscriber's lists: returns the request whose
    confirmation email to send, or None when the subscription is confirmed already.

    Nothing is subscribed here: a preferences link may be old or forwarded, so like the form
    this is a request, and the subscription (an ended one keeps its record) changes only when
    the link of the confirmation email is followed, which also lifts an ``unsubscribed_all``
    suppression. Raises InvalidInput, NotFound, Conflict (the address is suppressed for a
    bounce, a complaint or by an admin).
    """
    subscriber, language = _subscriber(session, signer, token, max_age)
    subscription = _own_subscription(session, subscriber, list_slug)
    reason = _suppression(session, subscriber.email)
    if reason is not None and reason != SELF_SUPPRESSION:
        raise Conflict(translatable("we can't send email to this address any more; please write to us to change that"))
    if subscription.status == SubscriptionStatus.CONFIRMED:
        return _preferences(session, subscriber, language), None
    now = utcnow()
    requested = int(now.timestamp())
    if subscription.status == SubscriptionStatus.UNCONFIRMED:
        subscription.source, subscription.requested_at = PREFERENCES_SOURCE, now
        subscription.ip, subscription.user_agent = _clip(ip, _IP_MAX), _clip(user_agent, _USER_AGENT_MAX)
    elif subscription.ended_at is not None:
        # Asked after leaving, even within the same second: the request counts as after it.
        requested = max(requested, int(subscription.ended_at.timestamp()) + 1)
    return _preferences(session, subscriber, language), ConfirmationRequest(
        subscription.id, subscriber.email, requested
    )


def fresh_link_for(session: Session, signer: TokenSigner, token: str) -> tuple[int, int, str] | None:
    """Whom a fresh preferences link goes to, for a well-signed preferences link of any age:
    (subscriber id, list id, address), or None when the address is suppressed (nothing is sent
    to it). Raises InvalidInput (a malformed or forged link), NotFound.
    """
    _, subscriber, mailing_list = _load(session, signer.verify(token, "preferences"))
    if _suppression(session, subscriber.email) is not None:
        return None
    return subscriber.id, mailing_list.id, subscriber.email


def link_language(session: Session, signer: TokenSigner, token: str, purpose: str) -> str:
    """The language of the list a well-signed link of ``purpose`` names, at any age; English for a link that
    is not one of ours, or whose list is gone. For the pages of an expired link. Raises nothing."""
    try:
        claims = signer.verify(token, purpose)
    except InvalidInput:
        return SOURCE
    language = session.scalar(select(MailingList.language).where(MailingList.id == claims.list_id))
    return language or SOURCE


# --- helpers ---------------------------------------------------------------------------


def _load(session: Session, claims: TokenClaims) -> tuple[Subscription, Subscriber, MailingList]:
    row = session.execute(
        select(Subscription, Subscriber, MailingList)
        .join(Subscriber, Subscriber.id == Subscription.subscriber_id)
        .join(MailingList, MailingList.id == Subscription.list_id)
        .where(Subscription.subscriber_id == claims.subscriber_id, Subscription.list_id == claims.list_id)
        .options(undefer(MailingList.language))
    ).first()
    if row is None:
        raise NotFound("this link belongs to a subscription that no longer exists")
    return row[0], row[1], row[2]


def _confirmation(
    session: Session, signer: TokenSigner, token: str, max_age: float
) -> tuple[TokenClaims, Subscription, Subscriber, MailingList]:
    claims = signer.verify(token, "confirm")
    subscription, subscriber, mailing_list = _load(session, claims)
    if time.time() - claims.issued_at > max_age:
        raise LinkExpired(
            translatable("this confirmation link has expired; please subscribe again"), list_slug=mailing_list.slug
        )
    if not _request_stands(subscription, claims.issued_at):
        raise Conflict(
            translatable(
                "you left %(list_name)s after this link was sent, so it no longer subscribes you; "
                "to subscribe again, use the form",
                list_name=mailing_list.name,
            )
        )
    return claims, subscription, subscriber, mailing_list


def _request_stands(subscription: Subscription, requested_at: int) -> bool:
    """False unless a request made at ``requested_at`` came after the subscription ended.

    Request times have one-second resolution; a request in the same second as leaving
    counts as before it, so a link can never bring back someone who just declined.
    """
    if subscription.status != SubscriptionStatus.UNSUBSCRIBED:
        return True
    ended = subscription.ended_at
    return ended is not None and int(ended.timestamp()) < requested_at


def _end(subscription: Subscription, how: str) -> bool:
    """Mark the subscription ended; False if it had ended before (its first record is kept)."""
    if subscription.status == SubscriptionStatus.UNSUBSCRIBED:
        return False
    subscription.status, subscription.ended_at, subscription.end_reason = SubscriptionStatus.UNSUBSCRIBED, utcnow(), how
    return True


def _subscriber(
    session: Session, signer: TokenSigner, token: str, max_age: float | None = None
) -> tuple[Subscriber, str]:
    """The subscriber a preferences link names (its subscription to the link's list must exist), and that
    list's language."""
    _, subscriber, mailing_list = _load(session, signer.verify(token, "preferences", max_age=max_age))
    return subscriber, mailing_list.language


def _own_subscription(session: Session, subscriber: Subscriber, list_slug: str) -> Subscription:
    subscription = session.scalar(
        select(Subscription)
        .join(MailingList, MailingList.id == Subscription.list_id)
        .where(Subscription.subscriber_id == subscriber.id, MailingList.slug == list_slug)
    )
    if subscription is None:
        raise NotFound("you are not on that list")
    return subscription


def _subscription(session: Session, list_id: int, subscriber_id: int) -> Subscription | None:
    return session.scalar(
        select(Subscription).where(Subscription.list_id == list_id, Subscription.subscriber_id == subscriber_id)
    )


def _suppression(session: Session, address: str) -> str | None:
    return session.scalar(select(Suppression.reason).where(Suppression.email == address))


def _lift_self_suppression(session: Session, address: str) -> None:
    row = session.scalar(
        select(Suppression).where(Suppression.email == address, Suppression.reason == SELF_SUPPRESSION)
    )
    if row is not None:
        session.delete(row)
        session.flush()


def _preferences(session: Session, subscriber: Subscriber, language: str) -> Preferences:
    session.flush()
    rows = session.execute(
        select(
            MailingList.slug,
            MailingList.name,
            Subscription.status,
            Subscription.confirmed_at,
            Subscription.ended_at,
            MailingList.id,
        )
        .join(Subscription, Subscription.list_id == MailingList.id)
        .where(Subscription.subscriber_id == subscriber.id)
        .order_by(MailingList.name, MailingList.slug)
    ).all()
    suppression = session.scalar(select(Suppression).where(Suppression.email == subscriber.email))
    return Preferences(
        subscriber_id=subscriber.id,
        email=subscriber.email,
        name=subscriber.name,
        lists=tuple(ListState(*row) for row in rows),
        suppressed=suppression.reason if suppression else None,
        suppressed_at=suppression.created_at if suppression else None,
        language=language,
    )


def _view(
    subscription: Subscription, subscriber: Subscriber, mailing_list: MailingList, *, already: bool = False
) -> SubscriptionView:
    return SubscriptionView(
        subscriber_id=subscriber.id,
        list_id=mailing_list.id,
        email=subscriber.email,
        name=subscriber.name,
        list_slug=mailing_list.slug,
        list_name=mailing_list.name,
        status=subscription.status,
        ended_at=subscription.ended_at,
        end_reason=subscription.end_reason,
        already=already,
        list_language=mailing_list.language,
    )


def _clip(value: str | None, size: int) -> str | None:
    return value[:size] if value else None
