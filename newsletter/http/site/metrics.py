"""GET /metrics: the service's figures in Prometheus's text format, for Prometheus only.

The figures are not for the public (list names, how many subscribers, how sends go), and the web
app faces the internet, so /metrics asks for a bearer token, NEWSLETTER_METRICS_TOKEN, which
Prometheus sends with ``authorization: {credentials_file: ...}`` in its scrape config:

* unset: 404, the page any unknown path gets (nothing is served to anyone);
* set, and the request has no token or a wrong one: 401 with ``WWW-Authenticate: Bearer``,
  saying which header to send; the token is compared in constant time.
"""

from __future__ import annotations

import hmac

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from newsletter.http.context import web

router = APIRouter(include_in_schema=False)


def _token(request: Request) -> str:
    scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
    return credentials.strip() if scheme.lower() == "bearer" else ""


@router.get("/metrics")
def metrics(request: Request) -> Response:
    state = web(request)
    expected, registry = state.settings.metrics_token, state.metrics
    if expected is None or registry is None:
        raise HTTPException(status_code=404)  # the app's own 404 page, as for any path it does not serve
    if not hmac.compare_digest(_token(request).encode(), expected.encode()):
        return PlainTextResponse(
            "/metrics needs the metrics token: send 'Authorization: Bearer <NEWSLETTER_METRICS_TOKEN>'\n",
            status_code=401,
            headers={"WWW-Authenticate": 'Bearer realm="metrics"', "Cache-Control": "no-store"},
        )
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST, headers={"Cache-Control": "no-store"})
