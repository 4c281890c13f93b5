"""`/preferences/{token}`: the subscriber's lists, their name, leaving one list or everything.

Each action is a POST authorised by the signed token in the URL and answers with the
preferences page itself (no redirect), saying what changed.

A preferences link works for NEWSLETTER_PREFERENCES_DAYS from the email it came in. An
expired one (well signed, only old) shows a page that changes nothing and offers to mail a
fresh link to the address it names (``POST .../renew``, counted against that address's
emails a day like a confirmation, sent by a worker); a tampered one is refused as before.
Joining a list again is never done at once: it mails a confirmation link (double opt-in).
"""

from __future__ import annotations

from collections.abc import Callable

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse

from newsletter.delivery.notices import link_lifetime
from newsletter.errors import InvalidInput
from newsletter.http.context import client_ip, user_agent, web
from newsletter.http.errors import status_for
from newsletter.locales.translatable import translatable
from subscribers import consent
from subscribers.tokens import TokenExpired

router = APIRouter()

#: Queues the email with a fresh preferences link: (subscriber id, list id).
LinkSender = Callable[[int, int], None]

EXPIRED_STATUS = 410


@router.get("/preferences/{token}")
def page(request: Request, token: str) -> HTMLResponse:
    w = web(request)
    try:
        with w.transaction() as session:
            prefs = consent.preferences(session, w.signer, token, max_age=_max_age(request))
    except TokenExpired:
        return _expired(request, token)
    return _page(request, token, prefs)


@router.post("/preferences/{token}/name")
def rename(request: Request, token: str, name: str = Form("")) -> HTMLResponse:
    w = web(request)
    try:
        with w.transaction() as session:
            prefs = consent.rename(session, w.signer, token, name, max_age=_max_age(request))
    except TokenExpired:
        return _expired(request, token)
    except InvalidInput as exc:
        if exc.where != "name":
            raise
        with w.transaction() as session:
            prefs = consent.preferences(session, w.signer, token, max_age=_max_age(request))
        return _page(request, token, prefs, status=status_for(exc), error=exc, name_value=name)
    saved = translatable("Your name is saved.") if prefs.name else translatable("Your name is removed.")
    return _page(request, token, prefs, notice=saved)


@router.post("/preferences/{token}/leave")
def leave(request: Request, token: str, list_slug: str = Form("", alias="list")) -> HTMLResponse:
    w = web(request)
    try:
        with w.transaction() as session:
            prefs = consent.leave(session, w.signer, token, list_slug, max_age=_max_age(request))
    except TokenExpired:
        return _expired(request, token)
    for listed in prefs.lists:
        if listed.slug == list_slug and listed.list_id is not None:
            w.queue_automated(listed.list_id, prefs.subscriber_id)  # the list's goodbye email, if it has one
    left = next((s.name for s in prefs.lists if s.slug == list_slug), list_slug)
    return _page(request, token, prefs, notice=translatable("You left %(list)s. You won't get it any more.", list=left))


@router.post("/preferences/{token}/join")
def join(request: Request, token: str, list_slug: str = Form("", alias="list")) -> HTMLResponse:
    """Ask to join a list again: a confirmation email, whose link alone subscribes (double opt-in)."""
    w = web(request)
    try:
        with w.transaction() as session:
            prefs, asked = consent.rejoin(
                session,
                w.signer,
                token,
                list_slug,
                ip=client_ip(request),
                user_agent=user_agent(request),
                max_age=_max_age(request),
            )
    except TokenExpired:
        return _expired(request, token)
    joined = next((s.name for s in prefs.lists if s.slug == list_slug), list_slug)
    if asked is None:
        notice = translatable("You're on %(list)s already.", list=joined)
    elif w.limiter.allow_confirmation(asked.email):
        w.send_confirmation(asked)
        notice = translatable(
            "To join %(list)s again, follow the link in the email we've just sent to %(email)s. "
            "Until then you stay off the list.",
            list=joined,
            email=asked.email,
        )
    else:
        notice = translatable(
            "We've sent %(email)s several emails today already: to join %(list)s again, follow the link "
            "in the last confirmation email, or try again tomorrow.",
            email=asked.email,
            list=joined,
        )
    return _page(request, token, prefs, notice=notice)


@router.post("/preferences/{token}/leave-all")
def leave_all(request: Request, token: str) -> HTMLResponse:
    w = web(request)
    try:
        with w.transaction() as session:
            prefs = consent.leave_everything(session, w.signer, token, max_age=_max_age(request))
    except TokenExpired:
        return _expired(request, token)
    return _page(request, token, prefs, notice=translatable("You left every list. We won't email you again."))


@router.post("/preferences/{token}/renew")
def renew(request: Request, token: str) -> HTMLResponse:
    """Mail a fresh preferences link to the address a (well-signed, perhaps expired) link names.

    The answer is the same whether or not an email goes out (the address is suppressed, or
    got its emails for the day), and never names the address.
    """
    w = web(request)
    w.limiter.check_ip(client_ip(request))
    with w.transaction() as session:
        target = consent.fresh_link_for(session, w.signer, token)
        language = consent.link_language(session, w.signer, token, "preferences")
    if target is not None:
        subscriber_id, list_id, email = target
        if w.limiter.allow_confirmation(email):
            request.app.state.send_preferences_link(subscriber_id, list_id)
    return w.page(
        request,
        "preferences_renewed.html",
        list_language=language,
        lifetime=link_lifetime(w.settings.preferences_days),
    )


def _max_age(request: Request) -> float:
    return web(request).settings.preferences_days * 86400


def _expired(request: Request, token: str) -> HTMLResponse:
    """The page of an expired link: it shows no address or list, and offers a fresh link."""
    w = web(request)
    with w.reading() as session:
        language = consent.link_language(session, w.signer, token, "preferences")
    return w.page(
        request,
        "preferences_expired.html",
        list_language=language,
        status=EXPIRED_STATUS,
        token=token,
        lifetime=link_lifetime(w.settings.preferences_days),
    )


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
        request,
        "preferences.html",
        list_language=prefs.language,
        status=status,
        prefs=prefs,
        token=token,
        notice=notice,
        error=error,
        name_value=prefs.name if name_value is None else name_value,
    )
