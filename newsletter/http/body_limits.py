"""Every request body is capped, and its sender known, before the app reads a byte of it.

FastAPI reads and parses a body before any dependency (so before authentication) runs, and
Starlette buffers forms and JSON whole. This ASGI middleware stands in front of all that:

1. **Who is asking**, for the routes that need someone: ``/api/*`` needs a valid API token
   (checked in a thread; the caller is kept in ``request.state.api_caller`` for
   ``newsletter.http.api.auth``), an admin UI POST other than the login needs a valid session
   cookie (``request.state.admin_caller``; otherwise the usual redirect to the login page),
   both checked by newsletter.http.callers, as the API and the admin UI check them; and ``/webhooks/events`` its bearer secret. A request that fails gets its 401 (or 303) at
   once, whatever it sends and however large it says it is.
2. **How large it says it is**: a ``Content-Length`` over the route's limit gets 413 at once.
3. **How large it is**: the body is counted as the app receives it, chunk by chunk (a chunked
   upload has no length to trust), and the moment the count passes the limit the client gets
   413 and the app's read fails. Nothing is buffered here.

The limits, by route (:func:`limit_for`): the admin API and the admin's issue and template forms 2 MB; the
webhooks 1 MB; a CSV import (``POST /api/imports``, ``POST /admin/imports``)
NEWSLETTER_IMPORT_MAX_MB, streamed to disk by newsletter.http.uploads; an image for the media library
(``POST /api/media``, ``POST /admin/media``) NEWSLETTER_MEDIA_MAX_MB and 64 KB for its form; every other request
(the subscriber and admin forms) 64 KB. A 413 names the limit: JSON under /api/ and
/webhooks/, the error page elsewhere (``newsletter.http.errors.too_large``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.requests import HTTPConnection, Request
from starlette.responses import RedirectResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from newsletter.access.accounts import Unauthenticated
from newsletter.feedback.provider_events import MAX_BODY as WEBHOOK_MAX_BODY
from newsletter.feedback.provider_events import check_bearer
from newsletter.http.callers import ADMIN_CALLER_STATE, API_CALLER_STATE, SESSION_COOKIE, session_caller, token_caller
from newsletter.http.context import Web
from newsletter.http.errors import BodyTooLarge, json_error, too_large

log = logging.getLogger("newsletter.web")

KB = 1024
MB = 1024 * KB
API_LIMIT = 2 * MB  # the admin API's JSON (an issue's Markdown is at most 200,000 characters)
ISSUE_FORM_LIMIT = 2 * MB  # the admin UI's issue editor posts the whole Markdown source
TEMPLATE_FORM_LIMIT = 2 * MB  # the admin UI's template editor posts an HTML and a text source (200,000 characters each)
WEBHOOK_LIMIT = WEBHOOK_MAX_BODY  # 1 MB: SNS messages are at most 256 KB
FORM_LIMIT = 64 * KB  # subscribe, preferences, unsubscribe, and the admin UI's other forms


@dataclass(frozen=True)
class Limit:
    bytes: int
    what: str  # "the admin API": the 413 says "... the limit for the admin API"
    shown: int | None = None  # the limit the 413 names, when the body may carry more (an image's form)

    def error(self) -> BodyTooLarge:
        return BodyTooLarge(self.shown or self.bytes, self.what)


#: What a media upload's form may carry besides the image: the boundaries, part headers, the CSRF token.
MEDIA_FORM_OVERHEAD = 64 * KB


def limit_for(path: str, method: str, *, import_bytes: int, media_bytes: int = 10 * MB) -> Limit:
    """The body limit of a request to ``path`` (without the app's root path)."""
    if method == "POST" and path in ("/api/imports", "/admin/imports"):
        return Limit(import_bytes, "a CSV import")
    if method == "POST" and path in ("/api/media", "/admin/media"):
        return Limit(media_bytes + MEDIA_FORM_OVERHEAD, "an image upload", shown=media_bytes)
    if path.startswith("/api/"):
        return Limit(API_LIMIT, "the admin API")
    if path.startswith("/webhooks/"):
        return Limit(WEBHOOK_LIMIT, "a webhook")
    if path == "/admin/issues" or path.startswith("/admin/issues/"):
        return Limit(ISSUE_FORM_LIMIT, "an issue")
    if path == "/admin/templates" or path.startswith("/admin/templates/"):
        return Limit(TEMPLATE_FORM_LIMIT, "a template")
    return Limit(FORM_LIMIT, "a form")


class BodyLimits:
    """ASGI middleware: authentication, then the body limit, before the app (see the module's doc)."""

    def __init__(self, app: ASGIApp, *, web: Web) -> None:
        self.app = app
        self.web = web

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        root = self.web.root
        path: str = scope["path"]
        inside = path[len(root) :] if root and (path == root or path.startswith(root + "/")) else path
        method: str = scope["method"]
        settings = self.web.settings
        limit = limit_for(
            inside, method, import_bytes=settings.import_max_mb * MB, media_bytes=settings.media_max_mb * MB
        )

        refusal = await self._gate(scope, inside, method)
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        length = Headers(scope=scope).get("content-length", "")
        if length.isdigit() and int(length) > limit.bytes:
            await too_large(Request(scope), limit.error())(scope, receive, send)
            return
        await self._counted(scope, receive, send, limit)

    async def _gate(self, scope: Scope, path: str, method: str) -> Response | None:
        """The answer for a request whose sender is not who the route needs; None to go on."""
        connection = HTTPConnection(scope)
        state = scope.setdefault("state", {})
        if path.startswith("/api/"):
            try:
                state[API_CALLER_STATE] = await run_in_threadpool(
                    token_caller, self.web, connection.headers.get("authorization")
                )
            except Unauthenticated as exc:
                return json_error(401, str(exc), headers={"WWW-Authenticate": "Bearer"})
        elif path.startswith("/admin/") and method not in ("GET", "HEAD") and path != "/admin/login":
            try:
                state[ADMIN_CALLER_STATE] = await run_in_threadpool(
                    session_caller, self.web, connection.cookies.get(SESSION_COOKIE)
                )
            except Unauthenticated:
                return RedirectResponse(f"{self.web.root}/admin/login", status_code=303)  # as errors.unauthenticated
        elif path == "/webhooks/events" and self.web.settings.webhook_secret is not None:
            try:
                check_bearer(connection.headers.get("authorization"), self.web.settings.webhook_secret)
            except Unauthenticated as exc:
                return json_error(401, str(exc), headers={"WWW-Authenticate": "Bearer"})
        return None

    async def _counted(self, scope: Scope, receive: Receive, send: Send, limit: Limit) -> None:
        """Run the app, counting the body it receives; past the limit answer 413 at once."""
        received = 0
        started = False  # the app began its response
        refused = False  # our 413 went out: the app's own answer is dropped

        async def counted_receive() -> Message:
            nonlocal received, refused
            if refused:
                raise limit.error()
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit.bytes:
                    if not started:
                        refused = True
                        await too_large(Request(scope), limit.error())(scope, _disconnected, send)
                    raise limit.error()
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if refused:
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted_receive, guarded_send)
        except Exception as exc:
            if not refused:
                raise
            log.debug("%s %s: body refused past %s bytes (%s)", scope["method"], scope["path"], limit.bytes, exc)


async def _disconnected() -> Message:
    return {"type": "http.disconnect"}
