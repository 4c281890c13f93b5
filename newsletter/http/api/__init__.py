"""The JSON admin API under /api/, described by the app's OpenAPI schema at /openapi.json.

One module per resource (lists, subscribers, imports, suppressions, issues, media, sends, segments,
templates, confirmation requests, automations), each a thin layer over the domain functions; ``auth`` checks the API
token and its role, ``schemas`` holds what goes in and out, ``common`` what the resources share.
Errors become JSON in ``newsletter.http.errors``. It may import what newsletter.http shares below
it (context, errors, uploads, headers, ratelimit), the runtime, the domain, the store and the
foundation; never its siblings newsletter.http.site and newsletter.http.admin, nor
newsletter.http.app, which mounts it.
"""

from __future__ import annotations

from collections.abc import Callable

from fastapi import APIRouter, HTTPException
from fastapi.routing import APIRoute

from newsletter.http.api import (
    automations,
    confirmation_requests,
    imports,
    issues,
    lists,
    media,
    segments,
    sends,
    subscribers,
    suppressions,
    templates,
)
from newsletter.http.api.common import errors

METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def _method_not_allowed(allow: str) -> Callable[[], None]:
    def method_not_allowed() -> None:
        raise HTTPException(405, f"this resource answers {allow} only", headers={"Allow": allow})

    return method_not_allowed


def _answer_other_methods(resource: APIRouter) -> None:
    """Answer any other method with 405 and an ``Allow`` header naming every method of the path.

    Starlette would name only the methods of the first route matching the path, and FastAPI
    makes one route per operation, so ``OPTIONS /api/lists`` would say ``Allow: GET``. HEAD is
    not answered (FastAPI's routes do not add it), so it gets a 405 too.
    """
    by_path: dict[str, set[str]] = {}
    for route in resource.routes:
        if isinstance(route, APIRoute):
            by_path.setdefault(route.path, set()).update(route.methods or ())
    for path, methods in by_path.items():
        allow = ", ".join(m for m in METHODS if m in methods)
        others = [m for m in METHODS if m not in methods]
        resource.add_api_route(
            path.removeprefix(resource.prefix),
            _method_not_allowed(allow),
            methods=others,
            include_in_schema=False,
            status_code=405,
        )


def _document_body_limit(resource: APIRouter) -> None:
    """Every operation that takes a body may answer 413 (newsletter.http.body_limits caps it before it is read)."""
    for route in resource.routes:
        if isinstance(route, APIRoute) and route.methods and route.methods & {"POST", "PUT", "PATCH"}:
            route.responses.setdefault(413, errors(413)[413])


router = APIRouter(prefix="/api")
for _module in (
    lists,
    confirmation_requests,
    automations,
    subscribers,
    imports,
    suppressions,
    issues,
    media,
    sends,
    segments,
    templates,
):
    _document_body_limit(_module.router)
    _answer_other_methods(_module.router)
    router.include_router(_module.router)
