"""`/archive/{list}` and `/archive/{list}/{issue}`: what a list was sent, readable by anyone.

An issue's page is the email itself (the HTML frozen on its send, personal links
neutralised), so it keeps its inline styles: it gets its own, still script-free, CSP.
It is also every issue's view-in-browser link.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from newsletter import archive
from newsletter.errors import NotFound
from newsletter.web.context import web

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
def issue(request: Request, slug: str, issue_id: str) -> HTMLResponse:
    w = web(request)
    if not issue_id.isdigit() or len(issue_id) > 18:
        raise NotFound(f"no issue {issue_id!r}")
    links = archive.ArchiveLinks(
        view_online_url=f"{w.root}/archive/{slug}/{int(issue_id)}",
        manage_url=f"{w.root}/subscribe/{slug}#manage",
    )
    with w.transaction() as session:
        copy = archive.archived_copy(session, slug, int(issue_id), links)
    return HTMLResponse(copy.html, headers={"Content-Security-Policy": ISSUE_CSP, "Cache-Control": PUBLIC_CACHE})
