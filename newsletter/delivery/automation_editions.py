"""An automated email's edition: rendered once, compiled once, and each person's copy.

:class:`AutomationEditions` is the batch loop's :class:`~newsletter.delivery.ports.MessageSource`
for automated emails (a list's welcome, the steps of its sequence, its goodbye: see
:mod:`subscribers.automations`). What an automation sends is rendered once, when it is set up,
through the same path as a send (:mod:`newsletter.content.rendering`: Jinja2 layout, Markdown,
CSS inlined once) and frozen on its row (:func:`freeze`), as a send freezes its issue: an issue
edited later (the admin editor autosaves into it) changes nothing until the automation is
refreshed (:func:`refresh`). Each worker process compiles the frozen content once
(:mod:`newsletter.mail.messages`) per version, and each copy is a join of its personal parts.

Without an issue, the welcome and the goodbye send the shipped text: the templates
``welcome.subject.txt``, ``welcome.html``, ``welcome.txt`` (and ``goodbye.*``) of
``templates/email/``, overridable in ``NEWSLETTER_TEMPLATE_DIR`` like every email template.
They extend the issue layouts and see what an issue's templates see (``list_name``,
``from_name``, ``postal_address``, ``base_url``, ``personal.name_or(_("there"))`` ...); the subject
comes from ``.subject.txt``, rendered with the list's values, and the preheader (the inbox preview) from :data:`PREHEADERS`.
Like a notice they are written in the list's language (``mailing_lists.language``, newsletter.locales):
the templates mark their words (``{% trans %}``, ``_()``), the preheader is translatable, and the
layout's footer follows ``RenderContext.language``. What was frozen keeps the language it was frozen
in, so a change of the list's language freezes the shipped texts again (:func:`refresh_shipped`);
an issue's automated email keeps its frozen footer until :func:`refresh`.

An automated email has no archived copy of its own and is never tracked: its view-in-browser
link opens the list's archive (the home page for a private list), and its links stay as
written. Its envelope sender is the plain return path (VERP addresses name a send's
deliveries, which these are not).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from jinja2 import TemplateError
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from newsletter.content.issue_files import IssueSource
from newsletter.content.issues import RenderSettings
from newsletter.content.rendering import RenderedIssue, render_issue, template_environment
from newsletter.delivery.ports import Claimed, Copy
from newsletter.delivery.sending import message_headers
from newsletter.errors import NotFound, RenderError
from newsletter.locales.languages import translations
from newsletter.locales.translatable import Translatable, translatable
from newsletter.mail.messages import CompiledMessage, Recipient, ascii_address
from newsletter.mail.outbound import PLAIN, Outbound
from newsletter.store.models import Automation, Issue, MailingList, utcnow
from newsletter.store.states import AutomationKind
from subscribers.lists import get_list
from subscribers.tokens import TokenSigner

#: The shipped templates of an automated email without an issue of its own.
SHIPPED = {AutomationKind.WELCOME: "welcome", AutomationKind.GOODBYE: "goodbye"}
#: The inbox preview of each shipped email, given the list's name: said in the list's language.
PREHEADERS: dict[str, Callable[[str], Translatable]] = {
    "welcome": lambda list_name: translatable(
        "Your subscription to %(list_name)s is confirmed: here is what to expect.", list_name=list_name
    ),
    "goodbye": lambda list_name: translatable("You will not receive %(list_name)s any more.", list_name=list_name),
}


def render_automation(session: Session, automation: Automation, render: RenderSettings) -> RenderedIssue:
    """What ``automation`` sends, rendered once for all its recipients. Raises RenderError, NotFound."""
    mailing_list = session.get(MailingList, automation.list_id)
    if mailing_list is None:
        raise NotFound(f"no list {automation.list_id}")
    if automation.issue_id is not None:
        issue = session.get(Issue, automation.issue_id)
        if issue is None:
            raise NotFound(f"no issue {automation.issue_id}")
        return render.render(issue, mailing_list)
    template = SHIPPED.get(automation.kind)
    if template is None:
        raise RenderError(f"step {automation.id} has no issue to send")
    return render_shipped(template, mailing_list, render)


def render_shipped(template: str, mailing_list: MailingList, render: RenderSettings) -> RenderedIssue:
    """The shipped email ``template`` (``welcome``, ``goodbye``) for the list, rendered once. Raises RenderError."""
    context = render.context(mailing_list)  # its language: the list's, read while the session is open
    env = template_environment(tuple(str(d) for d in render.template_dirs), context.language)
    name = f"{template}.subject.txt"
    try:
        subject = env.get_template(name).render(
            list_name=context.list_name,
            list_slug=context.list_slug,
            from_name=context.from_name,
            base_url=context.base_url,
        )
    except TemplateError as exc:
        raise RenderError(f"template error: {exc.message or exc}", where=name) from None
    source = IssueSource(
        subject=" ".join(subject.split()),
        preheader=PREHEADERS[template](context.list_name).in_language(translations(context.language))
        if template in PREHEADERS
        else "",
        template=template,
        body_markdown="",
        source=f"the shipped {template} email",
    )
    return render_issue(source, context, template_dirs=render.template_dirs)


def freeze(session: Session, automation: Automation, render: RenderSettings) -> RenderedIssue:
    """Render what ``automation`` sends and freeze it on the row, as a send freezes its issue: edits of the
    issue after this (an autosaving editor) reach nobody until it is frozen again. Raises RenderError, NotFound
    (and the caller's transaction stores nothing)."""
    rendered = render_automation(session, automation, render)
    automation.subject, automation.html, automation.text = rendered.subject, rendered.html, rendered.text
    automation.rendered_at = utcnow()
    session.flush()
    return rendered


def freeze_if_on(session: Session, automation: Automation, render: RenderSettings) -> None:
    """:func:`freeze` an automation that is switched on; one switched off is frozen when it is switched on
    again (so a welcome whose issue no longer renders can always be switched off). Raises RenderError, NotFound."""
    if automation.enabled and automation.removed_at is None:
        freeze(session, automation, render)


def refresh(session: Session, list_slug: str, render: RenderSettings) -> list[Automation]:
    """Freeze again what each of the list's switched-on automated emails sends (its issue or shipped text as
    it is now); returns them. Raises NotFound, RenderError (nothing is changed)."""
    mailing_list = get_list(session, list_slug)
    found = list(
        session.scalars(
            select(Automation)
            .where(Automation.list_id == mailing_list.id, Automation.removed_at.is_(None), Automation.enabled)
            .order_by(Automation.id)
        )
    )
    for automation in found:
        freeze(session, automation, render)
    return found


def refresh_shipped(session: Session, mailing_list: MailingList, render: RenderSettings) -> list[Automation]:
    """Freeze again the list's switched-on welcome and goodbye that send the shipped text, in the list's
    language as it is now (after a change of it); returns them. An issue's automated email is left as it
    was frozen (its issue may be half-edited): :func:`refresh` renders those. Raises RenderError (and the
    caller's transaction stores nothing)."""
    found = list(
        session.scalars(
            select(Automation)
            .where(
                Automation.list_id == mailing_list.id,
                Automation.kind.in_(list(SHIPPED)),
                Automation.issue_id.is_(None),
                Automation.removed_at.is_(None),
                Automation.enabled,
            )
            .order_by(Automation.id)
        )
    )
    for automation in found:
        freeze(session, automation, render)
    return found


def message_tag(automation: Automation) -> str:
    """Names an automation's emails for good, across databases: Message-IDs ``<ROW.TAG@domain>`` and the
    journal in Redis (``auto`` keeps it apart from a send's ``ID.HEX``)."""
    return f"auto{automation.id}.{int(automation.created_at.timestamp()):x}"


class AutomationEdition:
    """One automation's compiled message and what its recipients' copies need (an Edition)."""

    def __init__(
        self,
        message: CompiledMessage,
        list_id: int,
        view_online_url: str,
        signer: TokenSigner,
        render: RenderSettings,
        outbound: Outbound,
    ) -> None:
        self.message = message
        self.list_id = list_id
        self.view_online_url = view_online_url
        self.signer = signer
        self.links = render.links
        self.outbound = outbound

    @property
    def key(self) -> str:
        return self.message.headers.message_id_tag

    def message_id(self, delivery_id: int) -> str:
        return self.message.message_id(delivery_id)

    def copy(self, row: Claimed) -> Copy:
        message = self.message
        unsubscribe = self.signer.make(row.subscriber_id, self.list_id, "unsubscribe")
        recipient = Recipient(
            delivery_id=row.delivery_id,
            email=row.email,
            name=row.name,
            unsubscribe_url=self.links.unsubscribe(unsubscribe),
            preferences_url=self.links.preferences(self.signer.make(row.subscriber_id, self.list_id, "preferences")),
            unsubscribe_mailto=f"mailto:unsubscribe+{unsubscribe}@{message.domain}?subject=unsubscribe",
            view_online_url=self.view_online_url,
        )
        message_id, data = message.build(recipient)
        return Copy(
            message_id, self.outbound.envelope_from(message), ascii_address(row.email), self.outbound.seal(data)
        )


@dataclass(frozen=True)
class _Version:
    """What an edition was made from: a change to any of these makes a new one."""

    rendered_at: datetime | None  # when its content was frozen (None: never: rendered as it is now)
    issue: datetime | None  # the issue's last change, for one never frozen
    sender: tuple[object, ...]  # the list's name, sender, Reply-To, slug and visibility


class AutomationEditions:
    """Each automation's edition, made once per process and version (a MessageSource)."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        signer: TokenSigner,
        render: RenderSettings,
        outbound: Outbound = PLAIN,
        *,
        keep: int = 32,
    ) -> None:
        self.sessions = sessions
        self.signer = signer
        self.render = render
        self.outbound = outbound
        self.message_id_key = signer.derived_key("message-id")
        self.keep = keep
        self._editions: dict[int, tuple[_Version, AutomationEdition]] = {}

    def edition(self, send_id: int) -> AutomationEdition:
        """The edition of automation ``send_id`` (the batch loop's name for it). Raises NotFound, RenderError."""
        with self.sessions() as session:
            automation = session.get(Automation, send_id)
            mailing_list = session.get(MailingList, automation.list_id) if automation is not None else None
            if automation is None or mailing_list is None:
                raise NotFound(f"no automated email {send_id}")
            issue_updated = (
                session.scalar(select(Issue.updated_at).where(Issue.id == automation.issue_id))
                if automation.rendered_at is None and automation.issue_id is not None
                else None
            )
            sender = (
                mailing_list.name,
                mailing_list.from_name,
                mailing_list.from_email,
                mailing_list.reply_to,
                mailing_list.slug,
                bool(mailing_list.private),
            )
            version = _Version(automation.rendered_at, issue_updated, sender)
            made = self._editions.get(send_id)
            if made is not None and made[0] == version:
                return made[1]
            edition = self._make(session, automation)
        if len(self._editions) >= self.keep:
            self._editions.clear()
        self._editions[send_id] = (version, edition)
        return edition

    def _make(self, session: Session, automation: Automation) -> AutomationEdition:
        if automation.rendered_at is not None and automation.html is not None and automation.text is not None:
            subject, html, text = automation.subject or "", automation.html, automation.text  # frozen
        else:
            rendered = render_automation(session, automation, self.render)
            subject, html, text = rendered.subject, rendered.html, rendered.text
        mailing_list = session.get(MailingList, automation.list_id)
        assert mailing_list is not None  # edition() found it
        message = CompiledMessage(
            message_headers(
                mailing_list,
                subject=subject,
                message_id_tag=message_tag(automation),
                feedback_id=f"auto{automation.id}:{mailing_list.slug}:automation",
            ),
            html,
            text,
            message_id_key=self.message_id_key,
        )
        base = self.render.base_url
        view_online = f"{base}/" if mailing_list.private else f"{base}/archive/{mailing_list.slug}"
        return AutomationEdition(message, mailing_list.id, view_online, self.signer, self.render, self.outbound)
