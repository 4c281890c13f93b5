"""`/subscribe/{list}`: the public form, and the start of the double opt-in.

A private list has no form: it answers 404, the same page as a list that does not exist.
"""

from __future__ import annotations

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse
from sqlalchemy.exc import IntegrityError

from newsletter.errors import InvalidInput
from newsletter.http.context import client_ip, user_agent, web
from newsletter.http.errors import status_for
from subscribers import consent
from subscribers.consent import ConfirmationRequest
from subscribers.lists import get_public_list

router = APIRouter()

#: The honeypot: a field people never see (hidden by the stylesheet) and bots fill in.
HONEYPOT = "website"


@router.get("/subscribe/{slug}")
def form(request: Request, slug: str) -> HTMLResponse:
    w = web(request)
    with w.transaction() as session:
        mailing_list = get_public_list(session, slug)
        language = mailing_list.language  # deferred: read while the session is open
    return w.page(
        request,
        "subscribe.html",
        list_language=language,
        mailing_list=mailing_list,
        values={"email": "", "name": ""},
        error=None,
    )


@router.post("/subscribe/{slug}")
def submit(
    request: Request,
    slug: str,
    email: str = Form(""),
    name: str = Form(""),
    website: str = Form("", alias=HONEYPOT),
) -> HTMLResponse:
    """Record the request and queue the confirmation email.

    The answer is the same page whether the address was new, known, confirmed, or
    suppressed, and for a filled-in honeypot, so the form tells nobody who is subscribed.
    """
    w = web(request)
    w.limiter.check_ip(client_ip(request))
    with w.transaction() as session:
        mailing_list = get_public_list(session, slug)
        language = mailing_list.language  # deferred: read while the session is open
    if website.strip():
        return w.page(request, "subscribe_sent.html", list_language=language, mailing_list=mailing_list)
    try:
        asked = _request(request, slug, email, name)
    except InvalidInput as exc:
        return w.page(
            request,
            "subscribe.html",
            list_language=language,
            status=status_for(exc),
            mailing_list=mailing_list,
            values={"email": email, "name": name},
            error=exc,
        )
    if asked is not None and w.limiter.allow_confirmation(asked.email):
        w.send_confirmation(asked)
    return w.page(request, "subscribe_sent.html", list_language=language, mailing_list=mailing_list)


def _request(request: Request, slug: str, email: str, name: str) -> ConfirmationRequest | None:
    w = web(request)
    for attempt in (1, 2):
        try:
            with w.transaction() as session:
                return consent.request_subscription(
                    session, slug, email, name=name, ip=client_ip(request), user_agent=user_agent(request)
                )
        except IntegrityError:
            # Two requests for a new address at once (PostgreSQL): the second sees the first's rows.
            if attempt == 2:
                raise
    return None
