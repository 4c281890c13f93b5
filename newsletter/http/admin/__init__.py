"""The admin UI under /admin/: server-rendered pages for editors and admins.

One module per area (dashboard, issues, media, sends, segments, templates, lists, confirmations, automations,
subscribers, imports, suppressions, bounces); auth.py logs people in and checks every request (session cookie, CSRF
token, role); pages.py renders the templates of templates/admin/ with the admin CSP. It may import
what newsletter.http shares below it (context, errors, uploads, headers, ratelimit), the runtime,
the domain, the store and the foundation; never its siblings newsletter.http.site and
newsletter.http.api, nor newsletter.http.app, which mounts it.
"""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(prefix="/admin", include_in_schema=False)

from newsletter.http.admin import (  # noqa: E402 - the areas add their routes to the router above
    auth,
    automations,
    bounces,
    confirmations,
    dashboard,
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

for _area in (
    auth,
    dashboard,
    issues,
    media,
    sends,
    segments,
    templates,
    lists,
    confirmations,
    automations,
    subscribers,
    imports,
    suppressions,
    bounces,
):
    router.include_router(_area.router)
# "/admin" itself (a router included without a prefix cannot have an empty path).
router.add_api_route("", dashboard.dashboard, methods=["GET"])
