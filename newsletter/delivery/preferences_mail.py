"""The fresh preferences link: one email, asked for from an expired preferences link.

A preferences link lives NEWSLETTER_PREFERENCES_DAYS. Its expired page offers to mail a
fresh one to the address the link names (never to anyone else, so a forwarded or leaked
link gives nobody else access). The web app counts the request against the address's
limit of emails a day and queues it; a worker sends it (:func:`send_preferences_link`),
rendered like the confirmation email from ``templates/email/preferences_link.html``,
``.txt`` and ``.subject.txt`` (a file of the same name in NEWSLETTER_TEMPLATE_DIR
overrides each), which see ``subject``, ``preheader``, ``list_name``, ``list_slug``,
``from_name``, ``postal_address``, ``base_url``, ``name``, ``email``, ``preferences_url``,
``link_lifetime`` (e.g. "90 days") and ``personal``.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

from jinja2 import TemplateError
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from newsletter.content.issues import RenderSettings
from newsletter.content.rendering import inline_css, template_environment
from newsletter.delivery.batch_loop import Transport
from newsletter.delivery.notices import PlainPersonal, link_lifetime
from newsletter.errors import RenderError
from newsletter.mail.messages import CompiledMessage, MessageHeaders, Recipient
from newsletter.mail.outbound import PLAIN, Outbound
from newsletter.store.models import MailingList, Subscriber, Subscription, Suppression
from subscribers.tokens import TokenSigner

TEMPLATE = "preferences_link"
_MARKERS = str.maketrans("", "", "\ue000\ue001\ue002")  # rendering's placeholder markers (see notices)


@dataclass(frozen=True)
class LinkRecipient:
    subscriber_id: int
    email: str
    name: str
    mailing_list: MailingList


def recipient(session: Session, subscriber_id: int, list_id: int) -> LinkRecipient | None:
    """Whom the fresh link goes to, or None when it should not be sent (gone, or the address suppressed)."""
    row = session.execute(
        select(Subscriber, MailingList)
        .join(Subscription, Subscription.subscriber_id == Subscriber.id)
        .join(MailingList, MailingList.id == Subscription.list_id)
        .where(Subscriber.id == subscriber_id, MailingList.id == list_id)
    ).first()
    if row is None:
        return None
    subscriber, mailing_list = row
    if session.scalar(select(Suppression.reason).where(Suppression.email == subscriber.email)) is not None:
        return None
    return LinkRecipient(subscriber.id, subscriber.email, subscriber.name, mailing_list)


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
    to: LinkRecipient, render: RenderSettings, signer: TokenSigner, *, preferences_days: float
) -> tuple[CompiledMessage, Recipient]:
    """The email with a fresh preferences link for one subscriber. Raises RenderError."""
    mailing_list, links = to.mailing_list, render.links
    unsubscribe = signer.make(to.subscriber_id, mailing_list.id, "unsubscribe")
    personal = PlainPersonal(
        name=to.name,
        email=to.email,
        unsubscribe_url=links.unsubscribe(unsubscribe),
        preferences_url=links.preferences(signer.make(to.subscriber_id, mailing_list.id, "preferences")),
        view_online_url=f"{render.base_url}/"
        if mailing_list.private
        else f"{render.base_url}/archive/{mailing_list.slug}",
    )
    context = render.context(mailing_list)
    variables: dict[str, Any] = {
        "subject": f"Your preferences for {mailing_list.name}",
        "preheader": "A fresh link to your preferences, as you asked.",
        "list_name": context.list_name,
        "list_slug": context.list_slug,
        "from_name": context.from_name,
        "postal_address": context.postal_address,
        "base_url": context.base_url,
        "name": to.name,
        "email": to.email,
        "preferences_url": personal.preferences_url,
        "link_lifetime": link_lifetime(preferences_days),
        "personal": personal,
    }
    env = template_environment(tuple(str(d) for d in render.template_dirs))

    def part(suffix: str) -> str:
        name = f"{TEMPLATE}.{suffix}"
        try:
            return env.get_template(name).render(variables)
        except TemplateError as exc:
            raise RenderError(f"template error: {exc.message or exc}", where=name) from None

    subject = " ".join(part("subject.txt").split())
    html, text = inline_css(part("html")), part("txt")
    headers = MessageHeaders(
        subject=subject.translate(_MARKERS),
        from_email=mailing_list.from_email,
        from_name=context.from_name,
        reply_to=mailing_list.reply_to,
        list_name=mailing_list.name,
        list_slug=mailing_list.slug,
        message_id_tag=f"preferences.{secrets.token_hex(6)}",
        feedback_id=f"preferences:{mailing_list.slug}:preferences-link",
    )
    message = CompiledMessage(headers, html.translate(_MARKERS), text.translate(_MARKERS))
    person = Recipient(
        delivery_id=to.subscriber_id,
        email=to.email,
        name=to.name,
        unsubscribe_url=personal.unsubscribe_url,
        preferences_url=personal.preferences_url,
        unsubscribe_mailto=f"mailto:unsubscribe+{unsubscribe}@{message.domain}?subject=unsubscribe",
        view_online_url=personal.view_online_url,
    )
    return message, person
