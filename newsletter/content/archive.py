"""The public archive: the issues a list was sent, as readers can view them in a browser.

An issue is in a list's archive once at least one copy of it went out to that list (a
send of it to the list has a delivery logged as sent), so the view-in-browser link works
from the first message of a send, also of a send paused or cancelled later. The archived
copy is the HTML frozen on the newest such send, exactly what was mailed, personalised
for nobody: no name, and the unsubscribe and preferences links pointing to a page that
explains where the reader's own links are.

A private list has no public archive: its listing answers as if the list did not exist,
and an issue's copy opens only with the key its mails' view-in-browser links carry (see
``TokenSigner.archive_key``), so its readers keep that link and nobody can browse the rest.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Exists, exists, func, select
from sqlalchemy.orm import Session

from newsletter.content.rendering import PersonalFields, personalise
from newsletter.errors import NotFound
from newsletter.locales.languages import translations
from newsletter.locales.translatable import say, translatable
from newsletter.store.models import Delivery, MailingList, Send
from newsletter.store.states import DeliveryStatus
from subscribers.lists import get_list, get_public_list
from subscribers.tokens import TokenSigner

#: Stands in for the address in "you subscribed to ... as ..." of an archived copy (in the list's language).
ANONYMOUS_READER = translatable("a reader")


@dataclass(frozen=True)
class ArchivedIssue:
    issue_id: int
    subject: str
    sent_at: datetime


@dataclass(frozen=True)
class ArchivedCopy:
    list_slug: str
    list_name: str
    issue_id: int
    subject: str
    sent_at: datetime
    html: str
    private: bool = False  # a private list's copy: for its readers, not for shared caches


@dataclass(frozen=True)
class ArchiveLinks:
    """Where the personal links of an archived copy point instead, under ``root`` (the site's path)."""

    root: str

    def view_online(self, list_slug: str, issue_id: int, key: str | None) -> str:
        return f"{self.root}/archive/{list_slug}/{issue_id}" + (f"?key={key}" if key else "")

    def manage(self, mailing_list: MailingList) -> str:
        """Stands in for the unsubscribe and preferences links: a page saying where the reader's own are."""
        return f"{self.root}/#manage" if mailing_list.private else f"{self.root}/subscribe/{mailing_list.slug}#manage"


def all_lists(session: Session) -> list[MailingList]:
    """Every public list, by name: each has a public form and archive."""
    return list(
        session.scalars(
            select(MailingList).where(MailingList.private.is_(False)).order_by(MailingList.name, MailingList.slug)
        )
    )


def archived_issues(session: Session, list_slug: str) -> tuple[MailingList, list[ArchivedIssue]]:
    """The public list and the issues sent to it, newest first. Raises NotFound (also for a private list)."""
    mailing_list = get_public_list(session, list_slug)
    newest = (
        select(Send.issue_id, func.max(Send.id).label("send_id"))
        .where(Send.list_id == mailing_list.id, went_out())
        .group_by(Send.issue_id)
        .subquery()
    )
    rows = session.execute(
        select(Send.issue_id, Send.subject, Send.started_at, Send.created_at)
        .join(newest, newest.c.send_id == Send.id)
        .order_by(func.coalesce(Send.started_at, Send.created_at).desc(), Send.id.desc())
    ).all()
    return mailing_list, [
        ArchivedIssue(issue_id, subject, started or created) for issue_id, subject, started, created in rows
    ]


def archived_copy(
    session: Session,
    list_slug: str,
    issue_id: int,
    links: ArchiveLinks,
    *,
    signer: TokenSigner,
    key: str | None = None,
) -> ArchivedCopy:
    """The issue as it was mailed to the list, for nobody in particular.

    A private list's copy needs the issue's ``key``. Raises NotFound (also for a missing or
    wrong key: the answer does not tell whether the issue exists), RenderError.
    """
    mailing_list = get_list(session, list_slug)
    if mailing_list.private and not (key and signer.check_archive_key(mailing_list.id, issue_id, key)):
        raise NotFound(f"issue {issue_id} was not sent to {list_slug}")
    key = key if mailing_list.private else None
    send = session.scalar(
        select(Send)
        .where(Send.list_id == mailing_list.id, Send.issue_id == issue_id, went_out())
        .order_by(Send.id.desc())
        .limit(1)
    )
    if send is None:
        raise NotFound(f"issue {issue_id} was not sent to {list_slug}")
    html, _ = personalise(
        send.html,
        "",
        PersonalFields(
            name="",
            email=say(ANONYMOUS_READER, translations(mailing_list.language)),
            unsubscribe_url=links.manage(mailing_list),
            preferences_url=links.manage(mailing_list),
            view_online_url=links.view_online(mailing_list.slug, issue_id, key),
        ),
    )
    return ArchivedCopy(
        mailing_list.slug,
        mailing_list.name,
        issue_id,
        send.subject,
        send.started_at or send.created_at,
        html,
        mailing_list.private,
    )


def went_out() -> Exists:
    """A send is in the archive once a copy of it was logged as sent (also used by the feeds)."""
    return exists().where(Delivery.send_id == Send.id, Delivery.status == DeliveryStatus.SENT)
