"""`/confirm/{token}`: the link in the confirmation email.

GET only shows a button (mail scanners open links; they must not subscribe anyone);
the POST of that button confirms and shows the welcome page, and queues the list's welcome
email if it has one (``subscribers.automations``).
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from newsletter.http.context import client_ip, user_agent, web
from subscribers import consent

router = APIRouter()


@router.get("/confirm/{token}")
def page(request: Request, token: str) -> HTMLResponse:
    w = web(request)
    with w.transaction() as session:
        view = consent.check_confirmation(session, w.signer, token, max_age=w.confirm_max_age)
    if view.already:
        return _welcome(request, view)
    return w.page(request, "confirm.html", list_language=view.list_language, view=view, token=token)


@router.post("/confirm/{token}")
def confirm(request: Request, token: str) -> HTMLResponse:
    w = web(request)
    with w.transaction() as session:
        view = consent.confirm(
            session, w.signer, token, max_age=w.confirm_max_age, ip=client_ip(request), user_agent=user_agent(request)
        )
    if not view.already:
        w.queue_automated(view.list_id, view.subscriber_id)  # the list's welcome email, if it has one
    return _welcome(request, view)


def _welcome(request: Request, view: consent.SubscriptionView) -> HTMLResponse:
    w = web(request)
    return w.page(
        request,
        "welcome.html",
        list_language=view.list_language,
        view=view,
        preferences_url=w.preferences_path(view.subscriber_id, view.list_id),
    )
