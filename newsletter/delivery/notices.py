"""Notices: one-off emails to one subscriber: the double opt-in confirmation, the fresh preferences link.

The same confirmation email goes out in two ways: to someone who asked through the public
form (:func:`send_confirmation`), and to an imported or added subscription that an editor
asks to confirm (a run of :mod:`subscribers.confirmation_requests`, mailed by
:mod:`newsletter.delivery.confirmation_mailing`), then with ``asked_by_list`` true so the wording says
why it came.

An issue is rendered once for thousands of recipients and personalised by a join; a
notice has one recipient, so it is rendered for that recipient from its templates in
``templates/email/`` (``confirm.html``, ``confirm.txt``, ``confirm.subject.txt``; a
file of the same name in ``NEWSLETTER_TEMPLATE_DIR`` overrides each), with the
recipient's values as plain, autoescaped variables. The CSS is inlined as for an issue,
and the message is compiled and sent like a test send: one
:class:`~newsletter.mail.messages.CompiledMessage`, one recipient, the worker's SMTP connection.

A notice is written in its list's language (``mailing_lists.language``, newsletter.locales):
the templates mark their words for translation (``{% trans %}``, ``_()``), and the code passes
``subject``, ``preheader`` and its own variables as translatable text where they are words.

The confirmation templates extend the issue layouts and see ``subject``, ``preheader``,
``list_name``, ``list_slug``, ``from_name``, ``postal_address``, ``base_url``, ``name``,
``email``, ``confirm_url``, ``link_lifetime`` (e.g. "7 days"), ``asked_by_list`` (true when
the list asks an address it holds, not someone who used the form) and ``personal`` (the
same values as an issue's, for layouts that print them).

Every notice is made by :func:`notice_message` from its template's three files; the fresh
preferences link (:mod:`newsletter.delivery.preferences_mail`) is the other one.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from jinja2 import Environment, TemplateError
from sqlalchemy.orm import Session, sessionmaker

from newsletter.content.issues import RenderSettings
from newsletter.content.rendering import RenderContext, inline_css, template_environment
from newsletter.delivery.ports import Transport
from newsletter.errors import RenderError
from newsletter.locales.formats import lifetime
from newsletter.locales.languages import translations
from newsletter.locales.translatable import Translatable, say, translatable
from newsletter.mail.messages import CompiledMessage, MessageHeaders, Recipient
from newsletter.mail.outbound import PLAIN, Outbound
from newsletter.store.models import MailingList
from subscribers.confirmation_requests import record_asked
from subscribers.consent import PendingConfirmation, pending_confirmation
from subscribers.tokens import TokenSigner

CONFIRM_TEMPLATE = "confirm"
# The private-use characters rendering uses as placeholder markers: a name holding them
# must not be taken for a placeholder by CompiledMessage.
_MARKERS = str.maketrans("", "", "\ue000\ue001\ue002")


@dataclass(frozen=True)
class PlainPersonal:
    """``personal`` for a notice's templates: the values themselves, not placeholders."""

    name: str
    email: str
    unsubscribe_url: str
    preferences_url: str
    view_online_url: str

    def name_or(self, fallback: str) -> str:
        return self.name or fallback


@dataclass(frozen=True)
class Addressee:
    """Whom a notice goes to: one subscriber of one list."""

    subscriber_id: int
    email: str
    name: str
    mailing_list: MailingList


def confirm_url(base_url: str, token: str) -> str:
    return f"{base_url}/confirm/{token}"


def link_lifetime(days: float) -> Translatable:
    """ "7 days", "1 day", "12 hours": how long a confirmation link works, for people (in any language)."""
    return lifetime(days)


def send_confirmation(
    sessions: sessionmaker[Session],
    transport: Transport,
    render: RenderSettings,
    signer: TokenSigner,
    subscription_id: int,
    requested_at: int,
    *,
    confirm_days: float,
    outbound: Outbound = PLAIN,
) -> str | None:
    """Email the confirmation link of a subscription request, unless it no longer applies.

    The message goes out through ``outbound`` (DKIM signature, envelope sender).

    Returns the Message-ID, or None when nothing was sent (already confirmed, left since,
    suppressed, gone). Raises TemporaryDeliveryError or PermanentDeliveryError from the
    transport, RenderError when a template fails.
    """
    with sessions() as session, session.begin():
        pending = pending_confirmation(session, subscription_id, requested_at)
    if pending is None:
        return None
    message, recipient = confirmation_message(pending, render, signer, confirm_days=confirm_days)
    message_id, data = message.build(recipient)
    transport.send(outbound.envelope_from(message), recipient.email, outbound.seal(data))
    with sessions() as session, session.begin():
        record_asked(session, subscription_id)  # so a request to confirm does not ask again within the week
    return message_id


def confirmation_message(
    pending: PendingConfirmation,
    render: RenderSettings,
    signer: TokenSigner,
    *,
    confirm_days: float,
    asked_by_list: bool = False,
    message_tag: str | None = None,
    log_id: int | None = None,
) -> tuple[CompiledMessage, Recipient]:
    """The confirmation email for one request. Raises RenderError.

    ``asked_by_list``: the list asks an address it holds (wording). ``message_tag`` and
    ``log_id`` make the Message-ID, ``<log_id.message_tag@domain>`` (by default the
    subscription's id and a random tag).
    """
    mailing_list = pending.mailing_list
    # The link's time is the request's, so "left after this request?" can be told later.
    token = signer.make(pending.subscriber_id, mailing_list.id, "confirm", issued_at=pending.requested_at)
    return notice_message(
        CONFIRM_TEMPLATE,
        Addressee(pending.subscriber_id, pending.email, pending.name, mailing_list),
        render,
        signer,
        subject=translatable("Confirm your subscription to %(list_name)s", list_name=mailing_list.name),
        preheader=translatable("One click and you're on the list of %(list_name)s.", list_name=mailing_list.name),
        variables=lambda personal: {
            "confirm_url": confirm_url(render.base_url, token),
            "link_lifetime": link_lifetime(confirm_days),
            "asked_by_list": asked_by_list,
        },
        message_id_tag=message_tag or f"confirm.{secrets.token_hex(6)}",
        feedback_id=f"confirm:{mailing_list.slug}:confirmation",
        delivery_id=pending.subscription_id if log_id is None else log_id,
        message_id_key=signer.derived_key("message-id"),
    )


def notice_message(
    template: str,
    to: Addressee,
    render: RenderSettings,
    signer: TokenSigner,
    *,
    subject: str,
    preheader: str,
    variables: Callable[[PlainPersonal], dict[str, Any]],
    message_id_tag: str,
    feedback_id: str,
    delivery_id: int,
    message_id_key: bytes | None = None,
) -> tuple[CompiledMessage, Recipient]:
    """One notice to one subscriber, rendered from ``template`` (``.subject.txt``, ``.html``, ``.txt``).

    The templates see ``subject``, ``preheader``, the list's values, ``name``, ``email``,
    ``personal``, and the notice's own ``variables`` (given the recipient's ``personal``
    links). ``message_id_tag`` and ``delivery_id`` make the Message-ID. Raises RenderError.

    The notice is written in its list's language: the templates' own words (``{% trans %}``,
    ``_()``), and ``subject``, ``preheader`` and any variable given as a
    :class:`~newsletter.locales.translatable.Translatable` (say, ``translatable("...")``).
    """
    mailing_list = to.mailing_list
    unsubscribe = signer.make(to.subscriber_id, mailing_list.id, "unsubscribe")
    personal = _personal(to, render, signer, unsubscribe)
    context = render.context(mailing_list)
    catalogue = translations(context.language)
    seen = {
        "subject": say(subject, catalogue),
        "preheader": say(preheader, catalogue),
        **_seen(context, to),
        **{key: say(value, catalogue) for key, value in variables(personal).items()},
        "personal": personal,
    }
    subject_line, html, text = _render_notice(template, render, seen, context.language)
    headers = MessageHeaders(
        subject=subject_line,
        from_email=mailing_list.from_email,
        from_name=context.from_name,
        reply_to=mailing_list.reply_to,
        list_name=mailing_list.name,
        list_slug=mailing_list.slug,
        message_id_tag=message_id_tag,
        feedback_id=feedback_id,
    )
    message = CompiledMessage(headers, html, text, message_id_key=message_id_key)
    recipient = Recipient(
        delivery_id=delivery_id,
        email=to.email,
        name=to.name,
        unsubscribe_url=personal.unsubscribe_url,
        preferences_url=personal.preferences_url,
        unsubscribe_mailto=f"mailto:unsubscribe+{unsubscribe}@{message.domain}?subject=unsubscribe",
        view_online_url=personal.view_online_url,
    )
    return message, recipient


def _seen(context: RenderContext, to: Addressee) -> dict[str, Any]:
    """What every notice's templates see of its list and its recipient."""
    return {
        "list_name": context.list_name,
        "list_slug": context.list_slug,
        "from_name": context.from_name,
        "postal_address": context.postal_address,
        "base_url": context.base_url,
        "name": to.name,
        "email": to.email,
    }


def _personal(to: Addressee, render: RenderSettings, signer: TokenSigner, unsubscribe: str) -> PlainPersonal:
    mailing_list, links = to.mailing_list, render.links
    return PlainPersonal(
        name=to.name,
        email=to.email,
        unsubscribe_url=links.unsubscribe(unsubscribe),
        preferences_url=links.preferences(signer.make(to.subscriber_id, mailing_list.id, "preferences")),
        # A private list has no public archive: its readers' link goes to the home page instead.
        view_online_url=f"{render.base_url}/"
        if mailing_list.private
        else f"{render.base_url}/archive/{mailing_list.slug}",
    )


def _render_notice(
    template: str, render: RenderSettings, variables: dict[str, Any], language: str
) -> tuple[str, str, str]:
    """(subject, HTML with its CSS inlined, text) of a notice, without rendering's placeholder markers."""
    env = template_environment(tuple(str(d) for d in render.template_dirs), language)
    subject = " ".join(_render(env, f"{template}.subject.txt", variables).split())
    html = inline_css(_render(env, f"{template}.html", variables))
    text = _render(env, f"{template}.txt", variables)
    return subject.translate(_MARKERS), html.translate(_MARKERS), text.translate(_MARKERS)


def _render(env: Environment, name: str, variables: dict[str, Any]) -> str:
    try:
        return env.get_template(name).render(variables)
    except TemplateError as exc:
        raise RenderError(f"template error: {exc.message or exc}", where=name) from None
