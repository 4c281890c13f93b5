"""The security headers every response carries, unless it sets its own.

When the app's public URL (NEWSLETTER_BASE_URL) is https, every response also carries
``Strict-Transport-Security: max-age=31536000`` (:data:`HSTS`): a browser that has seen it goes
to the site over https only, for a year, whatever link it is given. Not ``includeSubDomains``:
the app speaks for its own host only (it may live at https://example.org/news beside other
subdomains still on http); a proxy in front of a domain that is all https can add it there.
Over http it is never sent: a browser would ignore it, and it would promise what is not there.
"""

from __future__ import annotations

from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: Pages need no script at all, and style only from the app's own stylesheet.
CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS: tuple[tuple[str, str], ...] = (
    ("Content-Security-Policy", CSP),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "no-referrer"),  # tokens are in our URLs: never leak them to other sites
    ("X-Content-Type-Options", "nosniff"),
    ("Cross-Origin-Opener-Policy", "same-origin"),
    ("Cache-Control", "no-store"),  # pages with tokens and personal data; public pages say otherwise
)
STATIC_CACHE = "public, max-age=3600"
HSTS = ("Strict-Transport-Security", "max-age=31536000")


def security_headers(base_url: str) -> tuple[tuple[str, str], ...]:
    """:data:`SECURITY_HEADERS`, with :data:`HSTS` when ``base_url`` is https."""
    return SECURITY_HEADERS + ((HSTS,) if base_url.lower().startswith("https://") else ())


def response_headers(request: Request) -> dict[str, str]:
    """The headers for a response made outside this middleware (the 500 page), from the app's settings."""
    state = getattr(request.app.state, "web", None)
    return dict(security_headers(state.settings.base_url) if state is not None else SECURITY_HEADERS)


class SecurityHeaders:
    """ASGI middleware adding :data:`SECURITY_HEADERS` (and :data:`HSTS` when ``base_url`` is https)
    to every response that lacks them.

    A 500 page is made outside all middleware (by Starlette's ServerErrorMiddleware), so
    the error handler adds the same headers itself (:func:`response_headers`).
    """

    def __init__(self, app: ASGIApp, *, static_prefix: str, base_url: str = "") -> None:
        self.app = app
        self.static_prefix = static_prefix
        self.headers = security_headers(base_url)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        static = scope["path"].startswith(self.static_prefix)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in self.headers:
                    headers.setdefault(name, STATIC_CACHE if static and name == "Cache-Control" else value)
            await send(message)

        await self.app(scope, receive, send_with_headers)
