"""The one place where errors become HTTP status codes, error pages and JSON errors.

    Unauthenticated -> 401   Forbidden -> 403
    NotFound -> 404    InvalidInput -> 400 (LinkExpired offers the form again)
    Conflict -> 409    TooManyRequests -> 429 (with Retry-After)
    Unavailable, QueueUnavailable, MediaStoreUnavailable -> 503    BodyTooLarge -> 413    anything else -> 500

Under /api/ every error is JSON: ``{"error": {"status": 404, "message": "...", "field": ...}}``.
A 422 (the request does not match the schema) names the part at fault as the client sent it:
a body field by its path (``subject``, ``slot.weekday``, ``to[1]``, ``attributes["my key"]``),
``body`` for the body as a whole, and a parameter by where it goes (``query.limit``,
``path.issue_id``); see :func:`validation_error`. A 413 is JSON under /webhooks/ too.
Under /admin/ a request that is not logged in is sent to the login page, and a refused one
gets the admin UI's own 403 page (see newsletter.http.admin.pages.forbidden_page).

Pages never show a NotFound's message (it may name other lists or CLI commands); the
InvalidInput and Conflict messages of the consent functions are written for subscribers.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any
from urllib.parse import urlencode

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from newsletter.access.accounts import Forbidden, Unauthenticated
from newsletter.content.media_stores import MediaStoreUnavailable
from newsletter.delivery.send_queue import QueueUnavailable
from newsletter.errors import Conflict, InvalidInput, NewsletterError, NotFound
from newsletter.http.context import web
from newsletter.http.headers import response_headers
from newsletter.http.ratelimit import TooManyRequests, Unavailable
from newsletter.locales.translatable import Translatable, translatable, translatable_plural
from subscribers.consent import LinkExpired

log = logging.getLogger("newsletter.web")

STATUS: tuple[tuple[type[Exception], int], ...] = (
    (Unauthenticated, 401),
    (Forbidden, 403),
    (NotFound, 404),
    (InvalidInput, 400),
    (Conflict, 409),
    (TooManyRequests, 429),
    (Unavailable, 503),
    (QueueUnavailable, 503),
    (MediaStoreUnavailable, 503),
)


class BodyTooLarge(Exception):
    """A request body past its limit (413); raised by newsletter.http.body_limits before the app reads more."""

    def __init__(self, limit: int, what: str) -> None:
        self.limit = limit
        self.what = what
        super().__init__(f"the request body is larger than {size_text(limit)}, the limit for {what}")


def size_text(count: int) -> str:
    """``2 MB``, ``64 KB``, ``1500 bytes``."""
    for unit, name in ((1024 * 1024, "MB"), (1024, "KB")):
        if count >= unit and count % unit == 0:
            return f"{count // unit} {name}"
    return f"{count} bytes"


def status_for(exc: Exception) -> int:
    for kind, status in STATUS:
        if isinstance(exc, kind):
            return status
    return 500


def error_page(
    request: Request,
    status: int,
    *,
    message: str | None = None,
    subscribe_slug: str | None = None,
    headers: dict[str, str] | None = None,
) -> HTMLResponse:
    """The error page in the reader's language; a translatable ``message`` is said in it."""
    return web(request).page(
        request,
        "error.html",
        status=status,
        headers=headers,
        status_code=status,
        message=message,
        subscribe_slug=subscribe_slug,
    )


def is_api(request: Request) -> bool:
    return request.url.path.startswith(f"{web(request).root}/api/")


def is_webhook(request: Request) -> bool:
    return request.url.path.startswith(f"{web(request).root}/webhooks/")


def too_large(request: Request, exc: BodyTooLarge) -> Response:
    """413 naming the limit: JSON for the API and the webhooks, the error page for the rest."""
    if is_api(request) or is_webhook(request):
        return json_error(413, str(exc))
    if is_admin(request) or exc.what != "a form":
        return error_page(request, 413, message=str(exc))
    # A subscriber's form: the same words, in the page's language.
    return error_page(
        request,
        413,
        message=translatable(
            "the request body is larger than %(size)s, the limit for a form", size=size_text(exc.limit)
        ),
    )


def validation_error(exc: RequestValidationError) -> tuple[str | None, str]:
    """The field at fault, named as the client sent it, and what is wrong with it (the first error).

    Pydantic's ``loc`` also holds the names of union members and validators (``str``,
    ``function-after[...]``) and ``[key]`` for a dictionary key; only the steps that are
    really in what the client sent are kept, by walking the body along them.
    """
    errors = exc.errors()
    if not errors:
        return "body", "the request does not match the schema"
    first = errors[0]
    loc = tuple(first.get("loc", ()))
    kind = str(first.get("type", ""))
    message = re.sub(r"^(Value|Assertion) error, ", "", str(first.get("msg", "invalid request")))
    if kind == "json_invalid":
        return "body", _json_problem(first, exc.body)
    if not loc:
        return "body", message
    if loc[0] != "body":
        return _path(str(loc[0]), loc[1:]), message
    steps: list[str | int] = []
    value: Any = exc.body
    key_error = False
    for i, step in enumerate(loc[1:]):
        if isinstance(value, Mapping) and isinstance(step, str) and step in value:
            steps.append(step)
            value = value[step]
        elif (
            isinstance(value, Sequence)
            and not isinstance(value, (str, bytes))
            and isinstance(step, int)
            and 0 <= step < len(value)
        ):
            steps.append(step)
            value = value[step]
        elif step == "[key]":
            key_error = True
        elif kind == "missing" and i == len(loc) - 2 and isinstance(step, str):
            steps.append(step)  # a required field the client left out
        # else: a union member's or validator's name, not a place in the body
    if not steps:
        return "body", message if kind != "missing" else "the request needs a body"
    if key_error:
        message = f"the key: {message}"
    return _path(None, steps), message


def _path(where: str | None, steps: Sequence[Any]) -> str:
    text = where or ""
    for step in steps:
        if isinstance(step, int):
            text += f"[{step}]"
        elif re.fullmatch(r"[A-Za-z_][A-Za-z0-9_-]*", str(step)):
            text += f".{step}" if text else str(step)
        else:
            text += f"[{json.dumps(str(step), ensure_ascii=False)}]"
    return text


def _json_problem(error: Mapping[str, Any], body: Any) -> str:
    problem = str((error.get("ctx") or {}).get("error") or "not valid JSON")
    position = error.get("loc", ("body", None))[-1]
    if isinstance(body, (str, bytes)) and isinstance(position, int):
        text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
        line = text.count("\n", 0, position) + 1
        column = position - (text.rfind("\n", 0, position) + 1) + 1
        return f"the body is not valid JSON: {problem} at line {line}, column {column}"
    return f"the body is not valid JSON: {problem}"


def is_admin(request: Request) -> bool:
    path = request.url.path
    return path == f"{web(request).root}/admin" or path.startswith(f"{web(request).root}/admin/")


def _login_url(request: Request) -> str:
    """The login page; after a GET it brings the reader back to the page asked for (the form re-checks ``next``)."""
    login = f"{web(request).root}/admin/login"
    wanted = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    if request.method != "GET" or wanted in (login, f"{web(request).root}/admin", f"{web(request).root}/admin/"):
        return login
    return f"{login}?{urlencode({'next': wanted})}"


def json_error(
    status: int, message: str, *, field: str | None = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(
        {"error": {"status": status, "message": message, "field": field}}, status_code=status, headers=headers
    )


def install(app: FastAPI, *, admin_forbidden: Callable[[Request, Forbidden], Response] | None = None) -> None:
    """Register the handlers that turn errors into pages (or JSON under /api/).

    ``admin_forbidden`` makes the 403 page under /admin/ (the admin UI's own page, with its
    navigation and a way back); without it the subscriber pages' error page is shown.
    """
    app.exception_handler(Unauthenticated)(_unauthenticated)
    app.exception_handler(Forbidden)(_forbidden_handler(admin_forbidden))
    app.exception_handler(NewsletterError)(_domain_error)
    app.exception_handler(TooManyRequests)(_too_many)
    app.exception_handler(Unavailable)(_unavailable)
    app.exception_handler(RequestValidationError)(_bad_request)
    app.exception_handler(BodyTooLarge)(_body_too_large)
    app.exception_handler(StarletteHTTPException)(_http_error)
    app.exception_handler(Exception)(_crash)


async def _unauthenticated(request: Request, exc: Unauthenticated) -> Response:
    if is_api(request):
        return json_error(401, str(exc), headers={"WWW-Authenticate": "Bearer"})
    if is_admin(request):
        return RedirectResponse(_login_url(request), status_code=303)
    return error_page(request, 401)


def _forbidden_handler(
    admin_forbidden: Callable[[Request, Forbidden], Response] | None,
) -> Callable[[Request, Forbidden], Awaitable[Response]]:
    async def forbidden(request: Request, exc: Forbidden) -> Response:
        if is_api(request):
            return json_error(403, str(exc))
        if admin_forbidden is not None and is_admin(request):
            return admin_forbidden(request, exc)
        return error_page(request, 403, message=str(exc))

    return forbidden


async def _domain_error(request: Request, exc: NewsletterError) -> Response:
    if is_api(request):
        status = status_for(exc)
        if status == 500:
            log.error("unexpected error on %s: %s", request.url.path, exc)
            return json_error(500, "internal error; see the server log")
        if isinstance(exc, InvalidInput):
            return json_error(status, exc.message, field=exc.where)
        return json_error(status, str(exc), headers={"Retry-After": "60"} if status == 503 else None)
    return _domain_error_page(request, exc)


def _domain_error_page(request: Request, exc: NewsletterError) -> HTMLResponse:
    status = status_for(exc)
    if status == 500:
        log.error("unexpected error on %s: %s", request.url.path, exc)
    return error_page(
        request,
        status,
        message=_message(exc) if status in (400, 409) else None,
        subscribe_slug=exc.list_slug if isinstance(exc, LinkExpired) else None,
    )


def _message(exc: NewsletterError) -> str:
    """What the error says: its message as raised, so a translatable one is said in the page's language."""
    if isinstance(exc, InvalidInput):
        return exc.message
    first = exc.args[0] if len(exc.args) == 1 else None
    return first if isinstance(first, Translatable) else str(exc)


async def _too_many(request: Request, exc: TooManyRequests) -> Response:
    if is_api(request):
        return json_error(429, "too many requests", headers={"Retry-After": str(exc.retry_after)})
    return error_page(
        request,
        429,
        headers={"Retry-After": str(exc.retry_after)},
        message=translatable_plural(
            "please wait about %(count)d minute and try again",
            "please wait about %(count)d minutes and try again",
            max(1, round(exc.retry_after / 60)),
        ),
    )


async def _unavailable(request: Request, exc: Unavailable) -> Response:
    log.error("service unavailable on %s: %s", request.url.path, exc)
    if is_api(request):
        return json_error(503, str(exc), headers={"Retry-After": "60"})
    return error_page(request, 503, headers={"Retry-After": "60"})


async def _bad_request(request: Request, exc: RequestValidationError) -> Response:
    if is_api(request):
        field, message = validation_error(exc)
        return json_error(422, message, field=field)
    return error_page(request, 400, message=translatable("this request is not one we understand"))


async def _body_too_large(request: Request, exc: BodyTooLarge) -> Response:
    return too_large(request, exc)


async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
    if is_api(request):
        return json_error(exc.status_code, str(exc.detail), headers=dict(exc.headers or {}))
    return error_page(request, exc.status_code, headers=dict(exc.headers or {}))


async def _crash(request: Request, exc: Exception) -> Response:
    log.exception("error on %s", request.url.path)
    if is_api(request):
        return json_error(500, "internal error; see the server log", headers=response_headers(request))
    return error_page(request, 500, headers=response_headers(request))
