"""What every handler shares: the runtime (settings, sessions, signer, broker), page templates and limits.

Below site/, api/ and admin/ (which never import each other); built by newsletter.http.app
from one newsletter.runtime.Runtime, the composition root.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, StrictUndefined
from prometheus_client import CollectorRegistry
from sqlalchemy.orm import Session, sessionmaker

from newsletter.config import Settings
from newsletter.http.ratelimit import LoginLimiter, SubscribeLimiter
from newsletter.locales import languages
from newsletter.locales.negotiation import negotiate
from newsletter.locales.templates import teach
from newsletter.locales.translatable import say
from newsletter.resources import shipped
from newsletter.runtime import Runtime, TaskQueue
from subscribers.consent import ConfirmationRequest
from subscribers.tokens import TokenSigner

if TYPE_CHECKING:
    from newsletter.delivery.send_health import SendHealth
    from newsletter.engagement.recorder import EventRecorder, TrackedSends

log = logging.getLogger("newsletter.web")

TEMPLATE_DIR = shipped("web")
STATIC_DIR = TEMPLATE_DIR / "static"

ConfirmationSender = Callable[[ConfirmationRequest], None]


@dataclass
class Web:
    runtime: Runtime  # settings, sessions, signer, broker: built once for the app
    templates: PageTemplates
    limiter: SubscribeLimiter
    send_confirmation: ConfirmationSender
    root: str  # the path of NEWSLETTER_BASE_URL ("" or e.g. "/news"): every route lives under it
    metrics: CollectorRegistry | None = None  # what GET /metrics reports
    login_limiter: LoginLimiter | None = None  # failed admin logins per IP and per username
    health_client: list[Any] = field(default_factory=list)  # SendHealth's Redis client, made on first use, kept
    tracked_sends: TrackedSends | None = None  # tracked sends' links and keys, read once (set by create_app)
    recorder: EventRecorder | None = None  # opens and clicks, written in bulk (set by create_app)

    @property
    def settings(self) -> Settings:
        return self.runtime.settings

    @property
    def sessions(self) -> sessionmaker[Session]:
        return self.runtime.sessions

    @property
    def signer(self) -> TokenSigner:
        return self.runtime.signer

    @property
    def tasks(self) -> TaskQueue:
        """Queues work for the Celery workers (newsletter.delivery.send_queue)."""
        return self.runtime.tasks

    def send_health(self) -> SendHealth:
        """Why sends are stuck, for this request: one Redis client for all requests and progress polls."""
        from newsletter.delivery.send_health import SendHealth

        return SendHealth(self.settings, self.runtime.broker, shared=self.health_client)

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        with self.runtime.transaction() as session:
            yield session

    @contextmanager
    def reading(self) -> Iterator[Session]:
        """Read-only work (page views, lookups): on SQLite it never waits behind a long import."""
        with self.runtime.reading() as session:
            yield session

    @property
    def confirm_max_age(self) -> float:
        return self.settings.confirm_days * 86400

    def page(
        self,
        request: Request,
        template: str,
        *,
        list_language: str | None = None,
        language: str | None = None,
        status: int = 200,
        headers: dict[str, str] | None = None,
        **values: Any,
    ) -> HTMLResponse:
        """A subscriber page in the reader's language: the shipped one their browser asks for most, else
        ``list_language`` (the language of the list the page is about), else English. It says which in
        ``<html lang>`` and ``Content-Language``, and varies by ``Accept-Language`` for caches.
        ``language`` fixes it instead (a page written in one language only)."""
        language = language or page_language(request, list_language)
        html = self.templates.get(language).get_template(template).render(**values)
        response = HTMLResponse(html, status_code=status, headers=headers)
        response.headers["Content-Language"] = language
        response.headers.append("Vary", "Accept-Language")
        return response

    def queue_automated(self, list_id: int | None, subscriber_id: int) -> None:
        """Queue the subscriber's automated emails of the list (None: of every list) not sent yet (a welcome just
        written, a goodbye),
        once the transaction that wrote them has committed. A broker that cannot be reached only delays them:
        a worker's reconciler queues them once it is back."""
        from newsletter.delivery.send_queue import queue_automation_batches
        from subscribers.automation_mails import pending_for

        try:
            with self.reading() as session:
                batches = pending_for(session, list_id, subscriber_id)
            queue_automation_batches(self.tasks, batches)
        except Exception as exc:
            log.warning(
                "automated emails of subscriber %s not queued now (%s); the reconciler will", subscriber_id, exc
            )

    def preferences_path(self, subscriber_id: int, list_id: int, *, issued_at: int | None = None) -> str:
        """A preferences link; ``issued_at`` (default now) starts its NEWSLETTER_PREFERENCES_DAYS."""
        token = self.signer.make(subscriber_id, list_id, "preferences", issued_at=issued_at)
        return f"{self.root}/preferences/{token}"


def html_templates(folder: Path, **globals: Any) -> Environment:
    """HTML page templates from ``folder``: autoescaped everywhere, so subscriber data is always data."""
    env = Environment(
        loader=FileSystemLoader(str(folder)),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.globals.update(globals)
    return env


class PageTemplates:
    """The subscriber pages' templates, one environment per shipped language (newsletter.locales)."""

    def __init__(self, root: str, postal_address: str) -> None:
        self._by_language = {
            language: _page_environment(language, root, postal_address) for language in languages.SHIPPED
        }

    def get(self, language: str) -> Environment:
        """The templates in ``language`` (a shipped one). Raises KeyError for another."""
        return self._by_language[language]


def page_templates(root: str, postal_address: str) -> PageTemplates:
    """The subscriber pages' templates."""
    return PageTemplates(root, postal_address)


def page_language(request: Request, list_language: str | None = None) -> str:
    """The language of a page: the shipped one the reader's browser asks for most, else the list's, else English."""
    fallback = list_language if list_language in languages.SHIPPED else languages.SOURCE
    return negotiate(request.headers.get("accept-language"), fallback)


def _page_environment(language: str, root: str, postal_address: str) -> Environment:
    env = teach(html_templates(TEMPLATE_DIR, root=root, postal_address=postal_address), language)
    catalogue = languages.translations(language)
    # A translatable message (an error raised in the domain, a notice) printed as it is: in the page's language.
    env.finalize = lambda value: say(value, catalogue)
    env.filters["sentence"] = _sentence
    return env


def web(request: Request) -> Web:
    state: Web = request.app.state.web  # set by create_app
    return state


def client_ip(request: Request) -> str | None:
    """The client's address: the TCP peer, or, when the peer is one of NEWSLETTER_TRUSTED_PROXIES, the
    right-most address of X-Forwarded-For that is not a trusted proxy (the app's ProxyHeadersMiddleware,
    see create_app, has put it in the request's scope). Rate limits and consent records use it."""
    return request.client.host if request.client else None


def trusted_proxy_networks(settings: Settings) -> list[str]:
    """NEWSLETTER_TRUSTED_PROXIES for uvicorn's ProxyHeadersMiddleware: each IPv4 network also as the
    IPv4-mapped IPv6 network (::ffff:a.b.c.d), the form its peers take when the app listens on ``::``."""
    networks = list(settings.trusted_proxies)
    for network in map(ipaddress.ip_network, settings.trusted_proxies):
        if isinstance(network, ipaddress.IPv4Network):
            networks.append(f"::ffff:{network.network_address}/{96 + network.prefixlen}")
    return networks


def user_agent(request: Request) -> str | None:
    return request.headers.get("user-agent")


def _sentence(value: str) -> str:
    """Domain messages are lower-case clauses; a page shows them as a sentence."""
    value = value.strip()
    if not value:
        return value
    value = value[0].upper() + value[1:]
    return value if value.endswith((".", "!", "?")) else value + "."
