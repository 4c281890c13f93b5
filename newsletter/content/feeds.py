"""Feeds of the public archive: Atom (RFC 4287) and RSS 2.0, made with feedgen.

Only what the archive shows: the issues sent to a public list (a send of them logged a copy
as sent), newest first, at most :data:`FEED_SIZE`. A list's feed has its issues; the feed of
every list has all public lists' issues, each naming its list. An entry is the subject, when
it went out, the absolute address of its archived copy (which is also its id: it never
changes), and a summary: the copy's preheader, or else its first paragraph that is not the
greeting (:func:`summary_of`). Private lists are never in a feed.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from newsletter.content.archive import went_out
from newsletter.store.models import MailingList, Send
from subscribers.lists import get_public_list

#: Entries in a feed: the newest issues (readers poll; the archive page has them all).
FEED_SIZE = 50
#: A summary's length at most, in characters, cut at a word.
SUMMARY_MAX = 300

#: When an empty feed of every list last changed: never.
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

ATOM_TYPE = "application/atom+xml; charset=utf-8"
RSS_TYPE = "application/rss+xml; charset=utf-8"

# The preheader's filler (combining grapheme joiner, zero-width non-joiner, no-break space: see
# templates/email/layout.html) and rendering's placeholder markers are no part of a summary.
_INVISIBLE = str.maketrans("", "", "\u034f\u200c\ue000\ue001\ue002")
_PLACEHOLDER = re.compile("\ue000[^\ue001]*\ue001")


@dataclass(frozen=True)
class FeedEntry:
    issue_id: int
    list_slug: str
    list_name: str
    author: str
    subject: str
    sent_at: datetime
    summary: str


@dataclass(frozen=True)
class Feed:
    """One feed: ``page`` is the archive page it follows, ``language`` its code or None (several)."""

    title: str
    subtitle: str
    page: str
    language: str | None
    updated: datetime
    entries: tuple[FeedEntry, ...]
    author: str | None = None


@dataclass(frozen=True)
class FeedList:
    """A public list as its feed describes it."""

    slug: str
    name: str
    description: str
    language: str
    author: str
    created_at: datetime


def public_list(session: Session, list_slug: str) -> FeedList:
    """The list a feed is of. Raises NotFound for an unknown or private list alike."""
    m = get_public_list(session, list_slug)
    return FeedList(m.slug, m.name, m.description, m.language, m.from_name or m.name, m.created_at)


def entries(session: Session, list_slug: str | None = None, *, limit: int = FEED_SIZE) -> tuple[FeedEntry, ...]:
    """The newest issues sent to one public list (or to any), newest first, with their summaries."""
    sends = (
        select(Send.issue_id, Send.list_id, func.max(Send.id).label("send_id"))
        .join(MailingList, MailingList.id == Send.list_id)
        .where(MailingList.private.is_(False), went_out())
        .group_by(Send.issue_id, Send.list_id)
    )
    if list_slug is not None:
        sends = sends.where(MailingList.slug == list_slug)
    latest = sends.subquery()
    when = func.coalesce(Send.started_at, Send.created_at)
    rows = session.execute(
        select(
            Send.issue_id,
            MailingList.slug,
            MailingList.name,
            MailingList.from_name,
            Send.subject,
            when,
            Send.html,
        )
        .join(latest, latest.c.send_id == Send.id)
        .join(MailingList, MailingList.id == Send.list_id)
        .order_by(when.desc(), Send.id.desc())
        .limit(limit)
    ).all()
    return tuple(
        FeedEntry(issue_id, slug, name, from_name or name, subject, sent_at, summary_of(html))
        for issue_id, slug, name, from_name, subject, sent_at, html in rows
    )


def summary_of(html: str) -> str:
    """What an archived copy is about: its preheader, else its first paragraph of the body that is not the
    greeting (nor holds a personal part), as plain text of at most :data:`SUMMARY_MAX` characters."""
    from lxml import html as lxml_html  # here: lxml costs a command that makes no feed

    if not html.strip():
        return ""
    document = lxml_html.document_fromstring(html)
    for element in document.xpath('//*[contains(concat(" ", normalize-space(@class), " "), " preheader ")]'):
        text = _plain(element.text_content())
        if text:
            return _shortened(text)
    bodies = document.xpath('//*[contains(concat(" ", normalize-space(@class), " "), " content ")]') or [document]
    for paragraph in bodies[0].iter("p"):
        classes = (paragraph.get("class") or "").split()
        raw = paragraph.text_content()
        if "greeting" in classes or _PLACEHOLDER.search(raw):
            continue
        text = _plain(raw)
        if text:
            return _shortened(text)
    return ""


def atom(feed: Feed, self_url: str, base_url: str) -> bytes:
    """The feed as Atom: ``self_url`` is its own address, ``base_url`` the site's (NEWSLETTER_BASE_URL)."""
    return _generator(feed, self_url, base_url, "application/atom+xml").atom_str(pretty=True)  # type: ignore[no-any-return]


def rss(feed: Feed, self_url: str, base_url: str) -> bytes:
    """The feed as RSS 2.0 (dates in RFC 822, each item's guid its permanent address)."""
    return _generator(feed, self_url, base_url, "application/rss+xml").rss_str(pretty=True)  # type: ignore[no-any-return]


def issue_url(base_url: str, entry: FeedEntry) -> str:
    return f"{base_url}/archive/{entry.list_slug}/{entry.issue_id}"


def _generator(feed: Feed, self_url: str, base_url: str, self_type: str) -> Any:
    from feedgen.feed import FeedGenerator  # here: only a feed needs it

    generator = FeedGenerator()
    generator.id(feed.page)
    generator.title(feed.title)
    generator.subtitle(feed.subtitle)  # RSS's required <description>, Atom's <subtitle>
    generator.link(href=self_url, rel="self", type=self_type)
    generator.link(href=feed.page, rel="alternate", type="text/html")  # the last link is RSS's <link>
    generator.updated(feed.updated)
    generator.lastBuildDate(feed.updated)
    generator.generator("newsletter", uri=f"{base_url}/")
    if feed.language:
        generator.language(feed.language)
    if feed.author:
        generator.author({"name": feed.author})
    for item in feed.entries:
        url = issue_url(base_url, item)
        entry = generator.add_entry(order="append")
        entry.id(url)
        entry.guid(url, permalink=True)
        entry.title(item.subject)
        entry.link(href=url, rel="alternate", type="text/html")
        entry.published(item.sent_at)
        entry.updated(item.sent_at)
        entry.author({"name": item.author})
        entry.category(term=item.list_slug, label=item.list_name)
        if item.summary:
            entry.summary(item.summary)
    return generator


def newest(entries: Sequence[FeedEntry], otherwise: datetime) -> datetime:
    """When a feed last changed: its newest entry's time, or ``otherwise`` for an empty one."""
    return max((e.sent_at for e in entries), default=otherwise)


def _plain(text: str) -> str:
    return " ".join(_PLACEHOLDER.sub("", text).translate(_INVISIBLE).split())


def _shortened(text: str) -> str:
    if len(text) <= SUMMARY_MAX:
        return text
    cut = text[: SUMMARY_MAX - 1]
    space = cut.rfind(" ")
    return (cut[:space] if space > SUMMARY_MAX // 2 else cut).rstrip(" ,;:.") + "…"
