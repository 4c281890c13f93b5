"""`/archive/{list}` and `/archive/{list}/{issue}`: what a public list was sent, readable by anyone; and its feeds.

An issue's page is the email itself (the HTML frozen on its send, personal links
neutralised), so it keeps its inline styles: it gets its own, still script-free, CSP.
It is also every issue's view-in-browser link.

A private list's archive is not public: its listing is a 404 like an unknown list's, and
an issue's copy opens only with the ``?key=`` its mails' view-in-browser link carries (a
wrong or missing key is the same 404), so readers of the list keep that link working.

Feeds (newsletter.content.feeds): ``/archive/{list}/feed.xml`` (Atom) and ``/archive/{list}/rss.xml``
(RSS 2.0) follow one public list, ``/archive/feed.xml`` and ``/archive/rss.xml`` every public list.
Their links are absolute (NEWSLETTER_BASE_URL); they are cached publicly for a few minutes, carry
an ETag and Last-Modified, and answer 304 to a reader that already has them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from email.utils import format_datetime

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from newsletter.content import archive, feeds
from newsletter.errors import NotFound
from newsletter.http.context import page_language, web
from newsletter.locales.languages import translations
from newsletter.locales.translatable import translatable

router = APIRouter()

PUBLIC_CACHE = "public, max-age=300"
#: The email's own look: inline styles and remote images, and still no scripts, forms or framing.
ISSUE_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src https: http: data:; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)

Format = Callable[[feeds.Feed, str, str], bytes]
FORMATS: dict[str, tuple[Format, str]] = {
    "feed.xml": (feeds.atom, feeds.ATOM_TYPE),
    "rss.xml": (feeds.rss, feeds.RSS_TYPE),
}


# The feeds come first: "/archive/feed.xml" is no list (a slug has no dot), "/archive/x/feed.xml" no issue.
@router.get("/archive/feed.xml")
@router.get("/archive/rss.xml")
def every_list_feed(request: Request) -> Response:
    """Every public list's issues: the feed's own words are in the reader's language."""
    w = web(request)
    with w.reading() as session:
        entries = feeds.entries(session)
    catalogue = translations(page_language(request))
    base = w.settings.base_url
    feed = feeds.Feed(
        title=translatable("Our newsletters").in_language(catalogue),
        subtitle=translatable("The issues of every newsletter here, newest first.").in_language(catalogue),
        page=f"{base}/",
        language=None,
        updated=feeds.newest(entries, feeds.EPOCH),
        entries=entries,
    )
    return _feed(request, feed, vary_language=True)


@router.get("/archive/{slug}/feed.xml")
@router.get("/archive/{slug}/rss.xml")
def list_feed(request: Request, slug: str) -> Response:
    """One public list's issues, in its language (404 for a private or unknown list)."""
    w = web(request)
    with w.reading() as session:
        listed = feeds.public_list(session, slug)
        entries = feeds.entries(session, listed.slug)
    catalogue = translations(listed.language)
    feed = feeds.Feed(
        title=listed.name,
        subtitle=listed.description
        or translatable("Past issues of %(list_name)s", list_name=listed.name).in_language(catalogue),
        page=f"{w.settings.base_url}/archive/{listed.slug}",
        language=listed.language,
        updated=feeds.newest(entries, listed.created_at),
        entries=entries,
        author=listed.author,
    )
    return _feed(request, feed)


@router.get("/archive/{slug}")
def issues(request: Request, slug: str) -> HTMLResponse:
    w = web(request)
    with w.transaction() as session:
        mailing_list, entries = archive.archived_issues(session, slug)
        language = mailing_list.language  # deferred: read while the session is open
    return w.page(
        request,
        "archive.html",
        list_language=language,
        mailing_list=mailing_list,
        entries=entries,
        headers={"Cache-Control": PUBLIC_CACHE},
    )


@router.get("/archive/{slug}/{issue_id}")
def issue(request: Request, slug: str, issue_id: str, key: str | None = None) -> HTMLResponse:
    """``key``: a private list's issue opens only with the key its mails' view-in-browser link carries."""
    w = web(request)
    if not issue_id.isdigit() or len(issue_id) > 18:
        raise NotFound(f"no issue {issue_id!r}")
    with w.transaction() as session:
        copy = archive.archived_copy(
            session, slug, int(issue_id), archive.ArchiveLinks(w.root), signer=w.signer, key=(key or "")[:100] or None
        )
    # A private list's copy keeps the default no-store, and stays out of search engines.
    extra = {"X-Robots-Tag": "noindex"} if copy.private else {"Cache-Control": PUBLIC_CACHE}
    return HTMLResponse(copy.html, headers={"Content-Security-Policy": ISSUE_CSP, **extra})


def _feed(request: Request, feed: feeds.Feed, *, vary_language: bool = False) -> Response:
    """The feed in the format its path names, with its cache headers; 304 when the reader has this one."""
    w = web(request)
    make, media_type = FORMATS[request.url.path.rsplit("/", 1)[1]]
    # Its own address under the public URL, whatever address a proxy in front used to reach the app.
    self_url = w.settings.base_url + request.url.path.removeprefix(w.root)
    body = make(feed, self_url, w.settings.base_url)
    etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
    headers = {
        "Cache-Control": PUBLIC_CACHE,
        "ETag": etag,
        "Last-Modified": format_datetime(feed.updated, usegmt=True),
    }
    if vary_language:
        headers["Vary"] = "Accept-Language"
    if etag in {tag.strip() for tag in request.headers.get("if-none-match", "").split(",")}:
        return Response(status_code=304, headers=headers)
    return Response(body, media_type=media_type, headers=headers)
