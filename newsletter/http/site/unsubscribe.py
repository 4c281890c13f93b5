"""`/unsubscribe/{token}`: the link in every issue's footer and List-Unsubscribe header.

POST unsubscribes at once, with no cookie, session or CSRF token: the signed token in the
URL is the authority. A mail provider's one-click POST (RFC 8058: the form body
``List-Unsubscribe=One-Click``, urlencoded or multipart) gets 200 and a short page, never
a redirect. GET only shows a page with the button; it changes nothing (link scanners).

Unsubscribe links never expire, but the preferences link these pages offer is dated like
the one in the same email (from the unsubscribe token's time): an old email, forwarded or
found, does not open its reader's preferences page for ever.
"""

from __future__ import annotations

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse

from newsletter.http.context import Web, web
from subscribers import consent

router = APIRouter()


@router.get("/unsubscribe/{token}")
def page(request: Request, token: str) -> HTMLResponse:
    w = web(request)
    with w.transaction() as session:
        view = consent.unsubscribe_view(session, w.signer, token)
    template = "unsubscribed.html" if view.already else "unsubscribe.html"
    return w.page(
        request,
        template,
        list_language=view.list_language,
        view=view,
        token=token,
        preferences_url=_preferences(w, token, view),
    )


@router.post("/unsubscribe/{token}")
def unsubscribe(
    request: Request, token: str, one_click: str | None = Form(None, alias="List-Unsubscribe")
) -> HTMLResponse:
    w = web(request)
    how = consent.HOW_ONE_CLICK if one_click == "One-Click" else consent.HOW_PAGE
    with w.transaction() as session:
        view = consent.unsubscribe(session, w.signer, token, how=how)
    if not view.already:
        w.queue_automated(view.list_id, view.subscriber_id)  # the list's goodbye email, if it has one
    return w.page(
        request,
        "unsubscribed.html",
        list_language=view.list_language,
        view=view,
        preferences_url=_preferences(w, token, view),
    )


def _preferences(w: Web, token: str, view: consent.SubscriptionView) -> str:
    """The preferences link of the email the unsubscribe link came in: it expires when that one does."""
    issued_at = w.signer.verify(token, "unsubscribe").issued_at  # the view was made from it: it verifies
    return w.preferences_path(view.subscriber_id, view.list_id, issued_at=issued_at)
