"""Logging in and out of the admin UI, and the check every admin request passes.

The session cookie holds a random id (the database keeps its hash, see
newsletter/accounts.py); it is HttpOnly, SameSite=Strict, Secure when the app's base URL
is https, and limited to the /admin path. Every POST must carry the session's CSRF token
(form field ``csrf_token``, or the ``X-CSRF-Token`` header for the script's requests),
otherwise it is refused with 403 before anything is read or changed. The login form,
made before there is a session, is protected the same way by a token kept in a
short-lived cookie of its own (double submit).
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Awaitable, Callable
from typing import Literal, TypedDict

from fastapi import APIRouter, Depends, Form, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from newsletter.access import accounts
from newsletter.access.accounts import Caller, Forbidden, Unauthenticated
from newsletter.http.admin.pages import admin_path, page, redirect
from newsletter.http.callers import ADMIN_CALLER_STATE as CALLER_STATE
from newsletter.http.callers import SESSION_COOKIE, session_caller
from newsletter.http.context import client_ip, web

router = APIRouter()

LOGIN_COOKIE = "newsletter_admin_login"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"
BAD_CSRF = "this form has expired or did not come from this site; nothing was changed. Reload the page and try again"


class _CookieOptions(TypedDict):
    """The admin cookies' attributes, as set_cookie and delete_cookie take them."""

    path: str
    httponly: bool
    samesite: Literal["strict"]
    secure: bool


def _cookie_options(request: Request) -> _CookieOptions:
    w = web(request)
    return {
        "path": f"{w.root}/admin",
        "httponly": True,
        "samesite": "strict",
        "secure": w.settings.base_url.startswith("https://"),
    }


def authenticate(request: Request) -> Caller:
    """The logged-in user of this request. Raises Unauthenticated (the login page follows)."""
    known: Caller | None = getattr(request.state, CALLER_STATE, None)  # a POST's, checked before its body
    if known is not None:
        return known
    return session_caller(web(request), request.cookies.get(SESSION_COOKIE))


async def _submitted_csrf(request: Request) -> str | None:
    header = request.headers.get(CSRF_HEADER)
    if header:
        return header
    content_type = request.headers.get("content-type", "")
    if content_type.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
        value = (await request.form()).get(CSRF_FIELD)  # parsed once; handlers' Form() fields reuse it
        return value if isinstance(value, str) else None
    return None


def user(action: str | None = None) -> Callable[[Request], Awaitable[Caller]]:
    """Dependency: the logged-in caller, who may do ``action``; a POST must carry the CSRF token.

    Not logged in: Unauthenticated (a redirect to the login page). Wrong or missing CSRF
    token, or a role that may not do ``action``: Forbidden (403).
    """

    async def dependency(request: Request) -> Caller:
        caller = await run_in_threadpool(authenticate, request)
        request.state.caller = caller  # for the 403 page's navigation (newsletter.http.admin.pages.forbidden_page)
        if request.method not in ("GET", "HEAD") and not accounts.csrf_ok(caller, await _submitted_csrf(request)):
            raise Forbidden(BAD_CSRF)
        if action is not None:
            caller.require(action)
        return caller

    return dependency


LoggedIn = Depends(user())  # any logged-in user; the page checks its own action


def _safe_next(request: Request, value: str | None) -> str:
    """Only a path inside the admin UI: never an open redirect elsewhere."""
    home = admin_path(request)
    if value and (value == home or value.startswith(home + "/")) and "//" not in value and "\\" not in value:
        return value
    return home


@router.get("/login")
def login_form(request: Request, next: str | None = None) -> Response:
    try:
        authenticate(request)
        return RedirectResponse(_safe_next(request, next), status_code=303)
    except Unauthenticated:
        pass
    return _login_page(request, next=next)


def _login_page(
    request: Request, *, next: str | None, status: int = 200, error: str | None = None, username: str = ""
) -> HTMLResponse:
    token = secrets.token_urlsafe(24)
    response = page(
        request, None, "login.html", status=status, login_token=token, next=next or "", error=error, username=username
    )
    response.set_cookie(LOGIN_COOKIE, token, max_age=3600, **_cookie_options(request))
    return response


@router.post("/login")
def login(
    request: Request,
    username: str = Form(""),
    password: str = Form(""),
    csrf_token: str = Form(""),
    next: str = Form(""),
) -> Response:
    expected = request.cookies.get(LOGIN_COOKIE, "")
    if not expected or not csrf_token or not hmac.compare_digest(expected, csrf_token):
        raise Forbidden(BAD_CSRF)
    w = web(request)
    limiter = w.login_limiter
    # Counted as a failure before the password is checked, atomically with the limits (429 past them):
    # parallel guesses get no more checks than the limit. See newsletter.http.ratelimit.
    attempt = limiter.reserve(client_ip(request), username) if limiter is not None else None
    try:
        with w.transaction() as session:
            session_id, _ = accounts.log_in(session, username, password)
    except Unauthenticated:
        return _login_page(request, next=next, status=401, error="Wrong username or password.", username=username)
    if limiter is not None and attempt is not None:
        limiter.succeeded(attempt)  # not a failure; this address is now known to the account
    response = RedirectResponse(_safe_next(request, next), status_code=303)
    response.set_cookie(SESSION_COOKIE, session_id, max_age=accounts.SESSION_DAYS * 86400, **_cookie_options(request))
    response.delete_cookie(LOGIN_COOKIE, **_cookie_options(request))
    return response


@router.post("/logout")
def logout(request: Request, caller: Caller = LoggedIn) -> Response:
    with web(request).transaction() as session:
        accounts.log_out(session, request.cookies.get(SESSION_COOKIE, ""))
    response = redirect(request, "/login", "logged-out")
    response.delete_cookie(SESSION_COOKIE, **_cookie_options(request))
    return response
