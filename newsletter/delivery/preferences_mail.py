"""The fresh preferences link: one email, asked for from an expired preferences link.

A preferences link lives NEWSLETTER_PREFERENCES_DAYS. Its expired page offers to mail a
fresh one to the address the link names (never to anyone else, so a forwarded or leaked
link gives nobody else access). The web app counts the request against the address's
limit of emails a day and queues it; a worker sends it (:func:`send_preferences_link`),
made like the confirmation email (:func:`newsletter.delivery.notices.notice_message`) from
``templates/email/preferences_link.html``, ``.txt`` and ``.subject.txt`` (a file of the
same name in NEWSLETTER_TEMPLATE_DIR overrides each), which see ``subject``, ``preheader``, ``list_name``, ``list_slug``,
``from_name``, ``postal_address``, ``base_url``, ``name``, ``email``, ``preferences_url``,
``link_lifetime`` (e.g. "90 days") and ``personal``.
"""

from __future__ import annotations

import secrets

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker, undefer

from newsletter.content.issues import RenderSettings
from newsletter.delivery.notices import Addressee, link_lifetime, notice_message
from newsletter.delivery.ports import Transport
from newsletter.locales.translatable import translatable
from newsletter.mail.messages import CompiledMessage, Recipient
from newsletter.mail.outbound import PLAIN, Outbound
from newsletter.store.models import MailingList, Subscriber, Subscription, Suppression
from subscribers.tokens import TokenSigner

TEMPLATE = "preferences_link"


def recipient(session: Session, subscriber_id: int, list_id: int) -> Addressee | None:
    """Whom the fresh link goes to, or None when it should not be sent (gone, or the address suppressed)."""
    row = session.execute(
        select(Subscriber, MailingList)
        .join(Subscription, Subscription.subscriber_id == Subscriber.id)
        .join(MailingList, MailingList.id == Subscription.list_id)
        .where(Subscriber.id == subscriber_id, MailingList.id == list_id)
        .options(undefer(MailingList.language))  # deferred; the email is rendered after this session
    ).first()
    if row is None:
        return None
    subscriber, mailing_list = row
    if session.scalar(select(Suppression.reason).where(Suppression.email == subscriber.email)) is not None:
        return None
    return Addressee(subscriber.id, subscriber.email, subscriber.name, mailing_list)


def send_preferences_link(
    sessions: sessionmaker[Session],
    transport: Transport,
    render: RenderSettings,
    signer: TokenSigner,
    subscriber_id: int,
    list_id: int,
    *,
    preferences_days: float,
    outbound: Outbound = PLAIN,
) -> str | None:
    """Email a fresh preferences link; returns the Message-ID, or None when nothing was sent.

    Raises TemporaryDeliveryError or PermanentDeliveryError from the transport, RenderError.
    """
    with sessions() as session:
        to = recipient(session, subscriber_id, list_id)
    if to is None:
        return None
    message, person = preferences_link_message(to, render, signer, preferences_days=preferences_days)
    message_id, data = message.build(person)
    transport.send(outbound.envelope_from(message), person.email, outbound.seal(data))
    return message_id


def preferences_link_message(
    to: Addressee, render: RenderSettings, signer: TokenSigner, *, preferences_days: float
) -> tuple[CompiledMessage, Recipient]:
    """The email with a fresh preferences link for one subscriber. Raises RenderError."""
    mailing_list = to.mailing_list
    return notice_message(
        TEMPLATE,
        to,
        render,
        signer,
        subject=translatable("Your preferences for %(list_name)s", list_name=mailing_list.name),
        preheader=translatable("A fresh link to your preferences, as you asked."),
        variables=lambda personal: {
            "preferences_url": personal.preferences_url,
            "link_lifetime": link_lifetime(preferences_days),
        },
        message_id_tag=f"preferences.{secrets.token_hex(6)}",
        feedback_id=f"preferences:{mailing_list.slug}:preferences-link",
        delivery_id=to.subscriber_id,
    )
