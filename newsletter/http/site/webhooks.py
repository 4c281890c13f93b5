"""Provider event webhooks (bounces and complaints): Amazon SES through SNS, and a generic JSON form.

Thin handlers over :mod:`newsletter.feedback.provider_events`; every answer is JSON. Each endpoint
is off (404) until its setting is there: NEWSLETTER_SES_TOPIC_ARNS for ``/webhooks/ses``,
NEWSLETTER_WEBHOOK_SECRET for ``/webhooks/events``. The SNS certificate fetcher and the
URL opener that confirms subscriptions live on ``app.state`` (``sns_certificates``,
``sns_open_url``), so a test can put its own there.

A body is at most 1 MB (``provider_events.MAX_BODY``): newsletter.http.body_limits refuses a
longer one with 413 (by its Content-Length, or by counting a chunked one as it comes) and
checks /webhooks/events's bearer secret before anything is read; the handlers read the body
through :func:`~newsletter.http.uploads.read_body`, which stops at that limit too.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from newsletter.access.accounts import Forbidden, Unauthenticated
from newsletter.errors import InvalidInput, NewsletterError
from newsletter.feedback.provider_events import (
    MAX_BODY,
    CertificateCache,
    ProviderEvent,
    UrlOpener,
    apply_events,
    check_bearer,
    confirm_subscription,
    fetch_certificate,
    generic_events,
    open_url,
    outcome_json,
    ses_events,
    verify_sns,
)
from newsletter.http.context import Web, web
from newsletter.http.errors import json_error, status_for
from newsletter.http.uploads import read_body

router = APIRouter(prefix="/webhooks", include_in_schema=False)
log = logging.getLogger("newsletter.webhooks")


@router.post("/ses")
async def ses(request: Request) -> Response:
    state = web(request)
    if not state.settings.ses_topic_arns:
        return json_error(404, "not found")
    body = await read_body(request, MAX_BODY, "a webhook")
    try:
        message = await run_in_threadpool(
            verify_sns,
            body,
            topics=state.settings.ses_topic_arns,
            certificates=_certificates(request),
            max_age=state.settings.ses_max_age,
        )
        if message.type == "SubscriptionConfirmation":
            try:
                await run_in_threadpool(confirm_subscription, message, _opener(request))
            except (NewsletterError, Forbidden):
                raise
            except Exception as exc:
                log.error("could not confirm the SNS subscription to %s: %s", message.topic_arn, exc)
                return json_error(502, f"could not confirm the subscription: {exc}")
            log.info("confirmed the SNS subscription to %s", message.topic_arn)
            return JSONResponse({"confirmed": message.topic_arn})
        if message.type != "Notification":
            return JSONResponse({"ignored": message.type})
        events = ses_events(message)
        outcomes = await run_in_threadpool(_apply, state, events, "ses")
    except (NewsletterError, Forbidden, Unauthenticated) as exc:
        return _error(exc)
    return JSONResponse({"received": len(events), "events": outcomes})


@router.post("/events")
async def events(request: Request) -> Response:
    state = web(request)
    secret = state.settings.webhook_secret
    if secret is None:
        return json_error(404, "not found")
    try:
        check_bearer(request.headers.get("authorization"), secret)
        parsed = generic_events(await read_body(request, MAX_BODY, "a webhook"))
        outcomes = await run_in_threadpool(_apply, state, parsed, "webhook")
    except (NewsletterError, Forbidden, Unauthenticated) as exc:
        return _error(exc)
    return JSONResponse({"received": len(parsed), "events": outcomes})


def _apply(state: Web, events: Sequence[ProviderEvent], source: str) -> list[dict[str, object]]:
    """All the events of one request in one transaction."""
    settings = state.settings
    with state.transaction() as session:
        outcomes = apply_events(
            session,
            events,
            source=source,
            return_path=settings.return_path,
            keys=(settings.secret_key, *settings.old_secret_keys),
            soft_limit=settings.soft_bounce_limit,
            soft_days=settings.soft_bounce_days,
        )
    for outcome in outcomes:
        log.info("%s: %s", source, outcome.summary())
    return [outcome_json(o) for o in outcomes]


def _certificates(request: Request) -> CertificateCache:
    cache: CertificateCache | None = getattr(request.app.state, "sns_certificates", None)
    if cache is None:
        cache = request.app.state.sns_certificates = CertificateCache(fetch_certificate)
    return cache


def _opener(request: Request) -> UrlOpener:
    return getattr(request.app.state, "sns_open_url", None) or open_url


def _error(exc: Exception) -> Response:
    status = status_for(exc)
    if isinstance(exc, InvalidInput):
        return json_error(status, exc.message, field=exc.where)
    if status == 403:
        log.warning("refused an SNS message: %s", exc)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return json_error(status, str(exc), headers=headers)
