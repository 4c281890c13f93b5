"""Build the subscriber web app from Settings (no global settings: tests build their own).

Its parts (sessions, signer, the broker and its Redis, the Celery client that queues emails)
come from one newsletter.runtime.Runtime, the composition root the CLI and the worker use too.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import urlsplit

import redis
from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from prometheus_client import CollectorRegistry
from sqlalchemy.orm import Session, sessionmaker
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from newsletter import __version__
from newsletter.config import Settings
from newsletter.delivery import send_queue
from newsletter.engagement.recorder import EventRecorder, TrackedSends
from newsletter.http import admin, api, errors
from newsletter.http.body_limits import BodyLimits
from newsletter.http.context import STATIC_DIR, ConfirmationSender, Web, page_templates, trusted_proxy_networks
from newsletter.http.headers import SecurityHeaders
from newsletter.http.ratelimit import LoginLimiter, SubscribeLimiter, Unavailable
from newsletter.http.site import (
    archive,
    confirm,
    docs,
    home,
    media,
    metrics,
    preferences,
    subscribe,
    tracking,
    unsubscribe,
    webhooks,
)
from newsletter.runtime import QUEUE, Broker, Runtime, TaskQueue
from subscribers.consent import ConfirmationRequest


def create_app(
    settings: Settings,
    *,
    sessions: sessionmaker[Session] | None = None,
    send_confirmation: ConfirmationSender | None = None,
    send_preferences_link: preferences.LinkSender | None = None,
) -> FastAPI:
    """The app for ``settings``; ``send_confirmation`` and ``send_preferences_link`` default to queueing a Celery task."""
    root = urlsplit(settings.base_url).path.rstrip("/")
    runtime = Runtime(settings, sessions=sessions)
    broker = runtime.broker
    state = Web(
        runtime=runtime,
        templates=page_templates(root, settings.postal_address),
        limiter=SubscribeLimiter(lambda: _redis(broker), per_ip=settings.subscribe_limit),
        login_limiter=LoginLimiter(lambda: _redis(broker)),
        send_confirmation=send_confirmation or celery_confirmations(runtime.tasks),
        root=root,
    )
    recorder = EventRecorder(state.sessions)
    state.tracked_sends, state.recorder = TrackedSends(state.sessions), recorder

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        recorder.close()  # the opens and clicks still buffered go to the database before the process ends

    app = FastAPI(
        lifespan=lifespan,
        title="newsletter admin API",
        version=__version__,
        description="Lists, subscribers, imports, suppressions, issues and sends. "
        "Authenticate with `Authorization: Bearer <token>` (`newsletter admin create-token`).",
        docs_url=None,
        redoc_url=None,
        openapi_url=f"{root}/openapi.json",
        redirect_slashes=False,
    )
    state.metrics = metrics_registry(broker, state.sessions)
    app.state.web = state
    app.state.send_preferences_link = send_preferences_link or celery_preferences_links(runtime.tasks)
    for module in (
        home,
        subscribe,
        confirm,
        unsubscribe,
        preferences,
        archive,
        tracking,
        webhooks,
        metrics,
        docs,
        media,
    ):
        app.include_router(module.router, prefix=root, include_in_schema=False)
    app.include_router(api.router, prefix=root)
    app.include_router(admin.router, prefix=root)
    app.mount(f"{root}/static/swagger-ui", StaticFiles(directory=docs.SWAGGER_UI_DIR), name="swagger-ui")
    app.mount(f"{root}/static", StaticFiles(directory=STATIC_DIR), name="static")
    errors.install(app, admin_forbidden=admin.pages.forbidden_page)
    # Inside SecurityHeaders (so its 401/413 carry them): the sender, then the body's size, before the app reads it.
    app.add_middleware(BodyLimits, web=state)
    app.add_middleware(SecurityHeaders, static_prefix=f"{root}/static/", base_url=settings.base_url)
    # The one judge of X-Forwarded-For / -Proto (newsletter web runs uvicorn with proxy_headers=False).
    app.add_middleware(ProxyHeadersMiddleware, trusted_hosts=trusted_proxy_networks(settings))
    return app


def metrics_registry(broker: Broker, sessions: sessionmaker[Session]) -> CollectorRegistry:
    from newsletter.http.site.figures import NewsletterCollector

    client: list[redis.Redis] = []

    def queue_depth() -> int:
        if not client:
            client.append(_redis(broker))
        return int(client[0].llen(QUEUE))

    registry = CollectorRegistry(auto_describe=False)
    registry.register(NewsletterCollector(sessions, queue_depth))
    return registry


def celery_confirmations(tasks: TaskQueue) -> ConfirmationSender:
    """Queue each confirmation email for the workers (``newsletter.send_confirmation``)."""

    def send(request: ConfirmationRequest) -> None:
        try:
            send_queue.queue_confirmation_email(tasks, request.subscription_id, request.requested_at)
        except Exception as exc:
            raise Unavailable(f"could not queue the confirmation email: {exc}") from None

    return send


def celery_preferences_links(tasks: TaskQueue) -> preferences.LinkSender:
    """Queue each fresh preferences link for the workers (``newsletter.send_preferences_link``)."""

    def send(subscriber_id: int, list_id: int) -> None:
        try:
            send_queue.queue_preferences_link(tasks, subscriber_id, list_id)
        except Exception as exc:
            raise Unavailable(f"could not queue the preferences link: {exc}") from None

    return send


def _redis(broker: Broker) -> redis.Redis:
    return broker.redis(timeout=5)
