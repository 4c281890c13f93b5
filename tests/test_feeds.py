"""The archive's feeds: Atom and RSS 2.0 per public list and for every public list, read as a feed reader does.

The web app runs on a real database (SQLite and PostgreSQL); each feed is parsed twice: by
feedparser (which must find it well formed) and with lxml against the rules of RSS 2.0 and
Atom (RFC 4287): the required elements, dates in RFC 822 and RFC 3339, unique ids, absolute
links. Only what the public archive shows may be in a feed: issues sent to a public list.
"""

from __future__ import annotations

import re
import time
from datetime import datetime
from email.utils import parsedate_to_datetime

import feedparser
import pytest
from lxml import etree
from sqlalchemy import update

from newsletter.content import feeds
from newsletter.content.issue_files import IssueSource
from newsletter.content.issues import RenderSettings, create_issue
from newsletter.delivery import sending
from newsletter.store import db
from newsletter.store.models import Delivery
from subscribers.lists import create_list, update_list
from tests.test_web import BASE, add
from tests.test_web import site as site  # the fixture

ATOM = "{http://www.w3.org/2005/Atom}"
RFC_3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")
RFC_822 = re.compile(r"^(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d{2} [A-Z][a-z]{2} \d{4} \d{2}:\d{2}:\d{2} ([+-]\d{4}|GMT)$")
RENDER = RenderSettings.create(base_url=BASE, postal_address="1 Example Street", user_template_dir=None)


def issue(room, subject: str, *, slug: str = "weekly", preheader: str = "", body: str = "", sent: bool = True) -> int:
    """An issue of ``slug``, sent (one copy logged as sent) unless ``sent`` is False (a draft)."""
    source = IssueSource(
        subject=subject,
        preheader=preheader,
        template="issue",
        body_markdown=body or f"Hello *|NAME:there|*,\n\nAll about {subject}, and *why* it matters.\n\nMore.",
    )
    with db.transaction(room.sessions) as s:
        made, _ = create_issue(s, slug, source, RENDER)
        if sent:
            send, _ = sending.start_send(s, made.id, RENDER, batch_size=100)
            s.execute(update(Delivery).where(Delivery.send_id == send.id).values(status="sent"))
    time.sleep(0.01)  # each send its own start time: the feed's order is by it
    return made.id


@pytest.fixture
def archive(site):
    """weekly: three issues sent and a draft; daily: one sent; hidden (private): one sent."""
    with db.transaction(site.sessions) as s:
        create_list(s, "hidden", name="Hidden Letters", from_email="news@example.org", private=True)
        update_list(s, "weekly", language="de")
    for slug in ("weekly", "daily", "hidden"):
        add(site, "ann@example.com", slug)
    ids = {
        "first": issue(site, "First <edition> & more", preheader="A preheader, as the inbox shows it."),
        "daily": issue(site, "Daily one", slug="daily"),
        "second": issue(site, "Second edition", body="Hello *|NAME:there|*,\n\n" + "Long text goes on. " * 40),
        "secret": issue(site, "Private matters", slug="hidden"),
        "third": issue(site, "Third edition", body="# Heading\n\nFirst paragraph of the third."),
        "draft": issue(site, "Draft only", sent=False),
    }
    return site, ids


def rss_items(body: bytes) -> tuple[etree._Element, list[etree._Element]]:
    root = etree.fromstring(body)
    assert root.tag == "rss" and root.get("version") == "2.0"
    (channel,) = root.findall("channel")
    return channel, channel.findall("item")


def check_rss(body: bytes, self_url: str) -> list[etree._Element]:
    """The RSS 2.0 rules; returns the items."""
    channel, items = rss_items(body)
    for required in ("title", "link", "description"):
        assert (channel.findtext(required) or "").strip(), f"channel has no {required}"
    assert channel.findtext("link", "").startswith("https://")
    self_links = [e for e in channel if e.tag == f"{ATOM}link" and e.get("rel") == "self"]
    assert [e.get("href") for e in self_links] == [self_url]
    assert RFC_822.match(channel.findtext("lastBuildDate", "")), channel.findtext("lastBuildDate")
    guids = []
    for item in items:
        assert item.findtext("title") or item.findtext("description"), "an item needs a title or a description"
        link = item.findtext("link", "")
        assert link.startswith(f"{BASE}/archive/"), link
        guid = item.find("guid")
        assert guid is not None and guid.get("isPermaLink") == "true" and guid.text == link
        guids.append(guid.text)
        published = item.findtext("pubDate", "")
        assert RFC_822.match(published), published
        assert parsedate_to_datetime(published).tzinfo is not None
    assert len(guids) == len(set(guids)), "guids must be unique"
    parsed = feedparser.parse(body)
    assert not parsed.bozo, parsed.get("bozo_exception")
    assert parsed.version == "rss20"
    return items


def check_atom(body: bytes, self_url: str) -> list[etree._Element]:
    """RFC 4287's rules; returns the entries."""
    root = etree.fromstring(body)
    assert root.tag == f"{ATOM}feed"
    for required in ("id", "title", "updated"):
        assert (root.findtext(f"{ATOM}{required}") or "").strip(), f"feed has no {required}"
    assert RFC_3339.match(root.findtext(f"{ATOM}updated", ""))
    links = {(e.get("rel", "alternate"), e.get("href")) for e in root.findall(f"{ATOM}link")}
    assert ("self", self_url) in links and any(rel == "alternate" and h.startswith(BASE) for rel, h in links)
    feed_has_author = root.find(f"{ATOM}author/{ATOM}name") is not None
    ids = []
    for entry in root.findall(f"{ATOM}entry"):
        for required in ("id", "title", "updated"):
            assert (entry.findtext(f"{ATOM}{required}") or "").strip(), f"entry has no {required}"
        for when in ("updated", "published"):
            assert RFC_3339.match(entry.findtext(f"{ATOM}{when}", "")), entry.findtext(f"{ATOM}{when}")
        # A link without rel is the alternate one (RFC 4287, 4.2.7.2).
        (alternate,) = [e for e in entry.findall(f"{ATOM}link") if e.get("rel", "alternate") == "alternate"]
        assert alternate.get("href", "").startswith(f"{BASE}/archive/")
        assert feed_has_author or entry.find(f"{ATOM}author/{ATOM}name") is not None, "an entry needs an author"
        ids.append(entry.findtext(f"{ATOM}id"))
    assert len(ids) == len(set(ids)), "entry ids must be unique"
    parsed = feedparser.parse(body)
    assert not parsed.bozo, parsed.get("bozo_exception")
    assert parsed.version == "atom10"
    return root.findall(f"{ATOM}entry")


def test_a_lists_feeds_have_its_sent_issues_newest_first_with_summaries(archive):
    room, ids = archive
    client = room.client()
    atom = client.get("/archive/weekly/feed.xml")
    assert atom.status_code == 200
    assert atom.headers["content-type"] == "application/atom+xml; charset=utf-8"
    assert atom.headers["cache-control"] == "public, max-age=300"
    entries = check_atom(atom.content, f"{BASE}/archive/weekly/feed.xml")
    expected = [ids["third"], ids["second"], ids["first"]]  # sent ones only, newest first: no draft
    assert [e.findtext(f"{ATOM}id") for e in entries] == [f"{BASE}/archive/weekly/{i}" for i in expected]
    assert [e.findtext(f"{ATOM}title") for e in entries] == [
        "Third edition",
        "Second edition",
        "First <edition> & more",
    ]
    summaries = [e.findtext(f"{ATOM}summary") for e in entries]
    assert summaries[0] == "First paragraph of the third."  # the first paragraph (the heading is no paragraph)
    assert summaries[1].startswith("Long text goes on.") and summaries[1].endswith("…")  # not the greeting
    assert len(summaries[1]) <= feeds.SUMMARY_MAX
    assert summaries[2] == "A preheader, as the inbox shows it."  # the preheader, when there is one
    feed = etree.fromstring(atom.content)
    assert feed.findtext(f"{ATOM}title") == "The Weekly"
    assert feed.findtext(f"{ATOM}subtitle") == "Every Friday: what <b>mattered</b>."  # its description, as text
    assert feed.findtext(f"{ATOM}author/{ATOM}name") == "Weekly Desk"

    rss = client.get("/archive/weekly/rss.xml")
    assert rss.status_code == 200 and rss.headers["content-type"] == "application/rss+xml; charset=utf-8"
    items = check_rss(rss.content, f"{BASE}/archive/weekly/rss.xml")
    assert [i.findtext("guid") for i in items] == [f"{BASE}/archive/weekly/{i}" for i in expected]
    assert [i.findtext("description") for i in items] == summaries
    channel, _ = rss_items(rss.content)
    assert channel.findtext("language") == "de" and channel.findtext("link") == f"{BASE}/archive/weekly"
    # The same dates in both: when the send started.
    atom_dates = [datetime.fromisoformat(e.findtext(f"{ATOM}published")) for e in entries]
    rss_dates = [parsedate_to_datetime(i.findtext("pubDate")) for i in items]
    assert [d.replace(microsecond=0) for d in atom_dates] == rss_dates
    assert rss_dates == sorted(rss_dates, reverse=True)


def test_only_public_lists_are_in_feeds_and_the_feed_of_every_list_names_each(archive):
    room, ids = archive
    client = room.client()
    for path in ("/archive/hidden/feed.xml", "/archive/hidden/rss.xml", "/archive/nope/feed.xml"):
        assert client.get(path).status_code == 404, path
    every = client.get("/archive/feed.xml", headers={"Accept-Language": "fr"})
    entries = check_atom(every.content, f"{BASE}/archive/feed.xml")
    titles = [e.findtext(f"{ATOM}title") for e in entries]
    assert titles == ["Third edition", "Second edition", "Daily one", "First <edition> & more"]
    assert "Private matters" not in every.text and "Hidden Letters" not in every.text and "Draft only" not in every.text
    categories = [e.find(f"{ATOM}category").get("label") for e in entries]
    assert categories == ["The Weekly", "The Weekly", "The Daily", "The Weekly"]
    assert etree.fromstring(every.content).findtext(f"{ATOM}title") == "Nos lettres d'information"  # the reader's
    assert "Accept-Language" in every.headers["vary"]
    items = check_rss(client.get("/archive/rss.xml").content, f"{BASE}/archive/rss.xml")
    assert {i.findtext("link") for i in items} == {
        f"{BASE}/archive/{s}/{ids[k]}"
        for s, k in (("weekly", "third"), ("weekly", "second"), ("daily", "daily"), ("weekly", "first"))
    }
    # A list with nothing sent yet still has a valid, empty feed.
    with db.transaction(room.sessions) as s:
        create_list(s, "fresh", name="Fresh", from_email="news@example.org")
    assert check_atom(client.get("/archive/fresh/feed.xml").content, f"{BASE}/archive/fresh/feed.xml") == []
    assert check_rss(client.get("/archive/fresh/rss.xml").content, f"{BASE}/archive/fresh/rss.xml") == []


def test_a_reader_that_has_the_feed_gets_304_and_a_new_issue_changes_it(archive):
    room, _ = archive
    client = room.client()
    first = client.get("/archive/weekly/rss.xml")
    etag, modified = first.headers["etag"], first.headers["last-modified"]
    assert etag.startswith('"') and parsedate_to_datetime(modified).tzinfo is not None
    again = client.get("/archive/weekly/rss.xml", headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b"" and again.headers["etag"] == etag
    issue(room, "Fourth edition")
    changed = client.get("/archive/weekly/rss.xml", headers={"If-None-Match": etag})
    assert changed.status_code == 200 and changed.headers["etag"] != etag and "Fourth edition" in changed.text


def test_feed_links_are_absolute_under_the_base_urls_path(archive):
    room, ids = archive
    client = room.client(NEWSLETTER_BASE_URL="https://example.org/news")
    atom = client.get("/news/archive/weekly/feed.xml")
    assert atom.status_code == 200
    root = etree.fromstring(atom.content)
    assert {e.get("href") for e in root.findall(f"{ATOM}link")} == {
        "https://example.org/news/archive/weekly",
        "https://example.org/news/archive/weekly/feed.xml",
    }
    assert root.find(f"{ATOM}entry/{ATOM}link").get("href") == f"https://example.org/news/archive/weekly/{ids['third']}"


def test_the_archive_pages_advertise_their_feeds(archive):
    room, _ = archive
    client = room.client()
    listing = client.get("/archive/weekly", headers={"Accept-Language": "en"}).text
    assert (
        '<link rel="alternate" type="application/atom+xml" title="The Weekly (Atom feed)" '
        'href="/archive/weekly/feed.xml">' in listing
    )
    assert (
        '<link rel="alternate" type="application/rss+xml" title="The Weekly (RSS feed)" href="/archive/weekly/rss.xml">'
        in listing
    )
    assert re.search(r'<a href="/archive/weekly/feed.xml" type="application/atom\+xml">Atom</a>', listing)
    assert re.search(r'<a href="/archive/weekly/rss.xml" type="application/rss\+xml">RSS</a>', listing)
    home = client.get("/", headers={"Accept-Language": "es"}).text
    assert 'type="application/atom+xml" title="Todos los boletines (canal Atom)" href="/archive/feed.xml"' in home
    assert '<a href="/archive/rss.xml" type="application/rss+xml">RSS</a>' in home
    # Every advertised feed answers.
    for path in re.findall(r'href="(/archive/[^"]*\.xml)"', listing + home):
        assert client.get(path).status_code == 200, path


def test_summary_of_a_copy_skips_the_greeting_and_personal_parts():
    html = (
        '<html><body><div class="preheader">  </div><table><tr><td class="masthead"><p>Masthead</p></td></tr>'
        '<tr><td class="card content"><p class="greeting">Hello \ue000name\ue001,</p><p>Hi \ue000name\ue002there\ue001!</p>'
        "<p>  The   real\n news.</p></td></tr></table></body></html>"
    )
    assert feeds.summary_of(html) == "The real news."
    filler = "\u034f\u200c\u00a0" * 60
    assert feeds.summary_of(f'<div class="preheader">Just this.{filler}</div><p>Not this.</p>') == "Just this."
    assert feeds.summary_of("") == "" and feeds.summary_of("<p></p>") == ""
