"""`/archive/{list}` and `/archive/{list}/{issue}`: what a public list was sent, readable by anyone.

An issue's page is the email itself (the HTML frozen on its send, personal links
neutralised), so it keeps its inline styles: it gets its own, still script-free, CSP.
It is also every issue's view-in-browser link.

A private list's archive is not public: its listing is a 404 like an unknown list's, and
an issue's copy opens only with the ``?key=`` its mails' view-in-browser link carries (a
wrong or missing key is the same 404), so readers of the list keep that link working.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from newsletter.content import archive
from newsletter.errors import NotFound
from newsletter.http.context import web

router = APIRouter()

PUBLIC_CACHE = "public, max-age=300"
#: The email's own look: inline styles and remote images, and still no scripts, forms or framing.
ISSUE_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src https: http: data:; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


@router.get("/archive/{slug}")
def issues(request: Request, slug: str) -> HTMLResponse:
    w = web(request)
    with w.transaction() as session:
        mailing_list, entries = archive.archived_issues(session, slug)
    return w.page("archive.html", mailing_list=mailing_list, entries=entries, headers={"Cache-Control": PUBLIC_CACHE})


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
