"""The one place where errors become HTTP status codes and error pages.

    NotFound -> 404    InvalidInput -> 400 (LinkExpired offers the form again)
    Conflict -> 409    TooManyRequests -> 429 (with Retry-After)
    Unavailable -> 503 anything else -> 500

Pages never show a NotFound's message (it may name other lists or CLI commands); the
InvalidInput and Conflict messages of the consent functions are written for subscribers.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from newsletter.errors import Conflict, InvalidInput, NewsletterError, NotFound
from newsletter.web.context import web
from newsletter.web.headers import SECURITY_HEADERS
from newsletter.web.ratelimit import TooManyRequests, Unavailable
from subscribers.consent import LinkExpired

log = logging.getLogger("newsletter.web")

STATUS: tuple[tuple[type[Exception], int], ...] = (
    (NotFound, 404),
    (InvalidInput, 400),
    (Conflict, 409),
    (TooManyRequests, 429),
    (Unavailable, 503),
)


def status_for(exc: Exception) -> int:
    for kind, status in STATUS:
        if isinstance(exc, kind):
            return status
    return 500


def error_page(request: Request, status: int, *, message: str | None = None, subscribe_slug: str | None = None,
               headers: dict[str, str] | None = None) -> HTMLResponse:
    return web(request).page(
        "error.html", status=status, headers=headers, status_code=status, message=message, subscribe_slug=subscribe_slug
    )


def install(app: FastAPI) -> None:
    """Register the handlers that turn errors into pages."""

    @app.exception_handler(NewsletterError)
    async def domain_error(request: Request, exc: NewsletterError) -> HTMLResponse:
        status = status_for(exc)
        if status == 500:
            log.error("unexpected error on %s: %s", request.url.path, exc)
        message = str(exc.message) if isinstance(exc, InvalidInput) else str(exc)
        return error_page(
            request,
            status,
            message=message if status in (400, 409) else None,
            subscribe_slug=exc.list_slug if isinstance(exc, LinkExpired) else None,
        )

    @app.exception_handler(TooManyRequests)
    async def too_many(request: Request, exc: TooManyRequests) -> HTMLResponse:
        return error_page(request, 429, headers={"Retry-After": str(exc.retry_after)},
                          message=f"please wait about {max(1, round(exc.retry_after / 60))} minutes and try again")

    @app.exception_handler(Unavailable)
    async def unavailable(request: Request, exc: Unavailable) -> HTMLResponse:
        log.error("service unavailable on %s: %s", request.url.path, exc)
        return error_page(request, 503, headers={"Retry-After": "60"})

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError) -> HTMLResponse:
        return error_page(request, 400, message="this request is not one we understand")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> HTMLResponse:
        return error_page(request, exc.status_code, headers=dict(exc.headers or {}))

    @app.exception_handler(Exception)
    async def crash(request: Request, exc: Exception) -> HTMLResponse:
        log.exception("error on %s", request.url.path)
        return error_page(request, 500, headers=dict(SECURITY_HEADERS))
