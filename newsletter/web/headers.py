"""The security headers every response carries, unless it sets its own."""

from __future__ import annotations

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: Pages need no script at all, and style only from the app's own stylesheet.
CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
    "base-uri 'none'; frame-ancestors 'none'"
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


class SecurityHeaders:
    """ASGI middleware adding :data:`SECURITY_HEADERS` to every response that lacks them.

    A 500 page is made outside all middleware (by Starlette's ServerErrorMiddleware), so
    the error handler adds the same headers itself.
    """

    def __init__(self, app: ASGIApp, *, static_prefix: str) -> None:
        self.app = app
        self.static_prefix = static_prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        static = scope["path"].startswith(self.static_prefix)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS:
                    headers.setdefault(name, STATIC_CACHE if static and name == "Cache-Control" else value)
            await send(message)

        await self.app(scope, receive, send_with_headers)
