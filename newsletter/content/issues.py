"""Issues: editions of a newsletter stored as drafts, checked, and previewed.

An issue is stored only when it renders: a template error, an undefined variable or a
relative link is refused with the file and line; warnings are reported and kept.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, object_session

from newsletter.content import email_templates
from newsletter.content.issue_files import DEFAULT_TEMPLATE, IssueSource, valid_template_name
from newsletter.content.rendering import (
    PersonalFields,
    Problem,
    RenderContext,
    RenderedIssue,
    StoredLayout,
    check_issue,
    default_template_dir,
    personalise,
    render_issue,
)
from newsletter.errors import Conflict, InvalidInput, NotFound
from newsletter.locales.formats import either_of
from newsletter.store.db import rowcount
from newsletter.store.models import Issue, MailingList, Send, utcnow
from newsletter.store.states import IssueStatus, SendStatus
from subscribers.automations import uses_of_issue
from subscribers.lists import get_list


@dataclass(frozen=True)
class Links:
    """Where an email's links point; built from the public base URL."""

    base_url: str

    def view_online(self, list_slug: str, issue_id: int, key: str | None = None) -> str:
        """The issue's archived copy; a private list's copies open only with their ``key``."""
        return f"{self.base_url}/archive/{list_slug}/{issue_id}" + (f"?key={key}" if key else "")

    def unsubscribe(self, token: str) -> str:
        return f"{self.base_url}/unsubscribe/{token}"

    def preferences(self, token: str) -> str:
        return f"{self.base_url}/preferences/{token}"


@dataclass(frozen=True)
class RenderSettings:
    """The settings rendering needs, taken once from the service's Settings."""

    base_url: str
    postal_address: str
    template_dirs: tuple[Path, ...]

    @classmethod
    def create(cls, *, base_url: str, postal_address: str, user_template_dir: Path | None) -> RenderSettings:
        """The user's template folder comes first (its files override), then the built-in one."""
        dirs = (user_template_dir, default_template_dir()) if user_template_dir else (default_template_dir(),)
        return cls(base_url=base_url, postal_address=postal_address, template_dirs=dirs)

    @property
    def links(self) -> Links:
        return Links(self.base_url)

    def context(self, mailing_list: MailingList, also: Sequence[MailingList] = ()) -> RenderContext:
        """``also``: the other lists of a send to several (the footer names them all)."""
        names = [mailing_list.name, *(m.name for m in also)]
        language = mailing_list.language  # deferred: the caller has read it, or its session is still open
        return RenderContext(
            list_name=mailing_list.name,
            list_slug=mailing_list.slug,
            from_name=mailing_list.from_name or mailing_list.name,
            postal_address=self.postal_address,
            base_url=self.base_url,
            subscribed_to=either_of(names, language),
            language=language,
        )

    def render(
        self, issue: Issue | IssueSource, mailing_list: MailingList, also: Sequence[MailingList] = ()
    ) -> RenderedIssue:
        """The issue rendered in the layout it gets on ``mailing_list`` (its own template, else the
        list's, else the shipped one: :func:`newsletter.content.email_templates.layout_for`).
        Raises RenderError."""
        source = source_of(issue) if isinstance(issue, Issue) else issue
        return render_issue(
            source,
            self.context(mailing_list, also),
            template_dirs=self.template_dirs,
            layout=self.layout(source.template, mailing_list),
        )

    def check(self, issue: Issue | IssueSource, mailing_list: MailingList) -> list[Problem]:
        """Every error and warning of the issue in the layout it gets on ``mailing_list``."""
        source = source_of(issue) if isinstance(issue, Issue) else issue
        return check_issue(
            source,
            self.context(mailing_list),
            template_dirs=self.template_dirs,
            layout=self.layout(source.template, mailing_list),
        )

    def layout(self, template: str, mailing_list: MailingList) -> StoredLayout | None:
        """The stored layout an issue naming ``template`` gets on the list (None: a file set), read
        through the session the list was loaded in."""
        session = object_session(mailing_list)
        if session is None:
            raise RuntimeError(f"list {mailing_list.slug!r} is not attached to a session: its layout cannot be read")
        return email_templates.layout_for(session, template, mailing_list)

    def sample(self) -> email_templates.Sample:
        """What stored templates are checked and previewed with, under these settings."""
        return email_templates.Sample(base_url=self.base_url, postal_address=self.postal_address)

    def render_beside(
        self, issue: Issue, mailing_list: MailingList, also: Sequence[MailingList] = ()
    ) -> Callable[[], RenderedIssue]:
        """Start :meth:`render` in a thread and return the call that waits for it (raising RenderError).

        For a caller with a long database statement to run meanwhile (a send's snapshot): the render
        is Python's work, the statement the database's, so they overlap. The thread gets plain copies
        of what it reads (taken now), never the ORM objects, whose session stays the caller's alone.
        """
        from concurrent.futures import ThreadPoolExecutor

        source, context = source_of(issue), self.context(mailing_list, also)
        layout = self.layout(source.template, mailing_list)  # a plain copy too, read here
        pool = ThreadPoolExecutor(1, thread_name_prefix="render")
        future = pool.submit(render_issue, source, context, template_dirs=self.template_dirs, layout=layout)
        pool.shutdown(wait=False)  # the thread ends with its one job
        return future.result


def source_of(issue: Issue) -> IssueSource:
    return IssueSource(
        subject=issue.subject,
        preheader=issue.preheader,
        template=issue.template,
        body_markdown=issue.body_markdown,
        source=f"issue {issue.id}",
    )


def create_issue(
    session: Session, list_slug: str, source: IssueSource, settings: RenderSettings
) -> tuple[Issue, RenderedIssue]:
    """Store ``source`` as a draft issue of the list once it renders.

    Raises NotFound (list), RenderError (naming file and line) when it cannot be rendered.
    """
    mailing_list = get_list(session, list_slug)
    email_templates.hold(session, source.template)
    rendered = settings.render(source, mailing_list)
    issue = Issue(
        list_id=mailing_list.id,
        subject=source.subject,
        preheader=source.preheader,
        template=source.template,
        body_markdown=source.body_markdown,
        status=IssueStatus.DRAFT,
    )
    session.add(issue)
    session.flush()
    return issue, rendered


def update_issue(
    session: Session, issue_id: int, source: IssueSource, settings: RenderSettings, *, revision: int | None = None
) -> tuple[Issue, RenderedIssue]:
    """Replace an issue's content; its ``revision`` counts one up.

    ``revision``: the revision the new content was based on (what the editor loaded). When the stored
    issue has moved on since (another tab, another editor, the API or the CLI saved it), nothing is
    written and StaleRevision is raised: a save never overwrites text it did not see. None saves
    whatever is stored (the CLI's ``issues update``, an API call without a revision).

    Raises NotFound, RenderError, StaleRevision; the stored issue is unchanged on error.
    """
    issue, mailing_list = get_issue(session, issue_id)
    email_templates.hold(session, source.template)
    rendered = settings.render(source, mailing_list)
    # One conditional UPDATE: on PostgreSQL a concurrent save holds the row until it commits and this
    # one then sees its revision, so two saves based on the same revision never both succeed (SQLite
    # writers take turns: BEGIN IMMEDIATE, see newsletter.store.db).
    change = update(Issue).where(Issue.id == issue_id)
    if revision is not None:
        change = change.where(Issue.revision == revision)
    saved = session.execute(
        change.values(
            subject=source.subject,
            preheader=source.preheader,
            template=source.template,
            body_markdown=source.body_markdown,
            revision=Issue.revision + 1,
            updated_at=utcnow(),
        ).execution_options(synchronize_session=False)
    )
    session.refresh(issue)
    if rowcount(saved) == 0:
        raise StaleRevision(issue.id, based_on=revision or 0, current=issue.revision, changed_at=issue.updated_at)
    return issue, rendered


class StaleRevision(Conflict):
    """A save based on an older revision of an issue than the stored one: refused, nothing written.

    ``current`` and ``changed_at`` say which revision is stored and when it was saved."""

    def __init__(self, issue_id: int, *, based_on: int, current: int, changed_at: datetime) -> None:
        self.issue_id, self.based_on, self.current, self.changed_at = issue_id, based_on, current, changed_at
        super().__init__(
            f"issue {issue_id} was changed at {changed_at:%Y-%m-%d %H:%M} UTC (revision {current}) after the "
            f"revision {based_on} this change was based on; nothing was saved. Load the issue again and redo "
            "the change on the newer text"
        )


def set_issue_template(session: Session, issue_id: int, template: str, settings: RenderSettings) -> Issue:
    """Choose an issue's layout: a stored template or a template file set by name, or ``issue`` for its
    list's layout (else the shipped one). A change of the issue like any other: its revision counts one
    up, so an editor open on the older text is told before it saves over it. Raises NotFound,
    InvalidInput (not a template name), RenderError (the issue does not render in it); the stored
    issue is unchanged on error."""
    issue, mailing_list = get_issue(session, issue_id)
    template = template.strip() or DEFAULT_TEMPLATE
    if not valid_template_name(template) or len(template) > 100:
        raise InvalidInput(f"{template!r} is not a template name", where="template")
    source = replace(source_of(issue), template=template)
    email_templates.hold(session, template)
    settings.render(source, mailing_list)
    issue.template = template
    issue.revision += 1
    issue.updated_at = utcnow()
    return issue


def duplicate_issue(session: Session, issue_id: int, settings: RenderSettings) -> tuple[Issue, RenderedIssue]:
    """A new draft for the same list with the issue's subject, preheader, template and body.

    Raises NotFound, RenderError (the issue no longer renders, e.g. its template was removed).
    """
    issue, mailing_list = get_issue(session, issue_id)
    return create_issue(session, mailing_list.slug, source_of(issue), settings)


def delete_issue(session: Session, issue_id: int) -> None:
    """Delete an issue that has never had a send.

    Raises NotFound, Conflict naming the issue's sends once any exists: a send's log and the
    archive need their issue, so even a scheduled or a cancelled send keeps it; likewise the
    automated emails that send it (a list's welcome or goodbye, a step of its sequence).
    """
    issue, _ = get_issue(session, issue_id)
    sends = session.execute(
        select(Send.id, Send.status, MailingList.slug)
        .join(MailingList, MailingList.id == Send.list_id)
        .where(Send.issue_id == issue_id)
        .order_by(Send.id)
    ).all()
    if sends:
        raise IssueKept(
            issue_id,
            [f"send {i} to {slug} ({status})" for i, status, slug in sends],
            any_cancelled=any(status == SendStatus.CANCELLED for _, status, _ in sends),
        )
    automated = uses_of_issue(session, issue_id)
    if automated:
        raise Conflict(
            f"issue {issue_id} cannot be deleted because it is {' and '.join(automated)}: a welcome's issue "
            "can be deleted once the welcome sends another (`newsletter automations welcome`); a step's issue is "
            "kept for the step's log, even once the step is removed, as a send's issue is"
        )
    session.delete(issue)
    try:
        session.flush()
    except IntegrityError:  # a send of it was started at this very moment
        raise IssueKept(issue_id, ["a send started just now"]) from None


class IssueKept(Conflict):
    """An issue with sends cannot be deleted. ``summary`` says why; ``str()`` adds the CLI's way on."""

    def __init__(self, issue_id: int, sends: list[str], *, any_cancelled: bool = False) -> None:
        shown = ", ".join(sends[:5]) + (f" and {len(sends) - 5} more" if len(sends) > 5 else "")
        self.issue_id = issue_id
        self.summary = (
            f"issue {issue_id} cannot be deleted because it has {len(sends)} send(s): {shown}; "
            f"a send's log needs its issue{', even when the send was cancelled' if any_cancelled else ''}"
        )
        super().__init__(
            f"{self.summary}. To start again from it, make a new draft with `newsletter issues duplicate {issue_id}`"
        )


def get_issue(session: Session, issue_id: int) -> tuple[Issue, MailingList]:
    """Raises NotFound."""
    row = session.execute(
        select(Issue, MailingList).join(MailingList, MailingList.id == Issue.list_id).where(Issue.id == issue_id)
    ).first()
    if row is None:
        raise NotFound(f"no issue {issue_id} (see `newsletter issues ls`)")
    return row[0], row[1]


def all_issues(session: Session, list_slug: str | None = None) -> list[tuple[Issue, MailingList]]:
    """Issues newest first, optionally of one list. Raises NotFound for an unknown list."""
    query = select(Issue, MailingList).join(MailingList, MailingList.id == Issue.list_id).order_by(Issue.id.desc())
    if list_slug is not None:
        query = query.where(Issue.list_id == get_list(session, list_slug).id)
    return [(i, m) for i, m in session.execute(query)]


def check_stored_issue(session: Session, issue_id: int, settings: RenderSettings) -> list[Problem]:
    """Every error and warning of a stored issue. Raises NotFound."""
    issue, mailing_list = get_issue(session, issue_id)
    return settings.check(issue, mailing_list)


def sample_personal_fields(links: Links, mailing_list: MailingList, issue_id: int) -> PersonalFields:
    """A made-up recipient for previews and test sends."""
    return PersonalFields(
        name="Ann Example",
        email="ann@example.com",
        unsubscribe_url=links.unsubscribe("preview"),
        preferences_url=links.preferences("preview"),
        view_online_url=links.view_online(mailing_list.slug, issue_id),
    )


def preview_issue(session: Session, issue_id: int, settings: RenderSettings) -> tuple[str, str, RenderedIssue]:
    """The issue's HTML and text as a sample recipient would get them. Raises NotFound, RenderError."""
    issue, mailing_list = get_issue(session, issue_id)
    rendered = settings.render(issue, mailing_list)
    html, text = personalise(
        rendered.html, rendered.text, sample_personal_fields(settings.links, mailing_list, issue.id)
    )
    return html, text, rendered
