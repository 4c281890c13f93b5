"""`/preferences/{token}`: the subscriber's lists, their name, leaving one list or everything.

Each action is a POST authorised by the signed token in the URL and answers with the
preferences page itself (no redirect), saying what changed.
"""

from __future__ import annotations

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse

from newsletter.errors import InvalidInput
from newsletter.web.context import client_ip, user_agent, web
from newsletter.web.errors import status_for
from subscribers import consent

router = APIRouter()


@router.get("/preferences/{token}")
def page(request: Request, token: str) -> HTMLResponse:
    w = web(request)
    with w.transaction() as session:
        prefs = consent.preferences(session, w.signer, token)
    return _page(request, token, prefs)


@router.post("/preferences/{token}/name")
def rename(request: Request, token: str, name: str = Form("")) -> HTMLResponse:
    w = web(request)
    try:
        with w.transaction() as session:
            prefs = consent.rename(session, w.signer, token, name)
    except InvalidInput as exc:
        if exc.where != "name":
            raise
        with w.transaction() as session:
            prefs = consent.preferences(session, w.signer, token)
        return _page(request, token, prefs, status=status_for(exc), error=exc, name_value=name)
    return _page(request, token, prefs, notice="Your name is saved." if prefs.name else "Your name is removed.")


@router.post("/preferences/{token}/leave")
def leave(request: Request, token: str, list_slug: str = Form("", alias="list")) -> HTMLResponse:
    w = web(request)
    with w.transaction() as session:
        prefs = consent.leave(session, w.signer, token, list_slug)
    left = next((s.name for s in prefs.lists if s.slug == list_slug), list_slug)
    return _page(request, token, prefs, notice=f"You left {left}. You won't get it any more.")


@router.post("/preferences/{token}/join")
def join(request: Request, token: str, list_slug: str = Form("", alias="list")) -> HTMLResponse:
    w = web(request)
    with w.transaction() as session:
        prefs = consent.rejoin(session, w.signer, token, list_slug, ip=client_ip(request), user_agent=user_agent(request))
    joined = next((s.name for s in prefs.lists if s.slug == list_slug), list_slug)
    return _page(request, token, prefs, notice=f"You're on {joined} again.")


@router.post("/preferences/{token}/leave-all")
def leave_all(request: Request, token: str) -> HTMLResponse:
    w = web(request)
    with w.transaction() as session:
        prefs = consent.leave_everything(session, w.signer, token)
    return _page(request, token, prefs, notice="You left every list. We won't email you again.")


def _page(
    request: Request,
    token: str,
    prefs: consent.Preferences,
    *,
    status: int = 200,
    notice: str | None = None,
    error: InvalidInput | None = None,
    name_value: str | None = None,
) -> HTMLResponse:
    return web(request).page(
        "preferences.html", status=status, prefs=prefs, token=token, notice=notice, error=error,
        name_value=prefs.name if name_value is None else name_value,
    )
