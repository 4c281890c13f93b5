"""How admin pages are made: their templates, headers, navigation and one-line notices.

Admin pages allow the admin script (``static/admin/admin.js``), JSON polling and the
issue preview frame from the app itself, and nothing else; everything is autoescaped.
"""

from __future__ import annotations

from datetime import datetime
from functools import lru_cache
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse
from jinja2 import Environment

from newsletter import __version__
from newsletter.access.accounts import Caller, Forbidden, roles_allowed
from newsletter.http.context import html_templates, web
from newsletter.resources import shipped

TEMPLATE_DIR = shipped("admin")

#: Admin pages: their own script, style and frames (the preview), JSON from the app.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "frame-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
#: The issue preview, shown in a sandboxed frame of the editor: the email's inline styles
#: and remote images, no script, no forms.
PREVIEW_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src https: http: data:; font-src https:; "
    "form-action 'none'; base-uri 'none'; frame-ancestors 'self'; sandbox allow-popups allow-popups-to-escape-sandbox"
)
#: Admin URLs hold no secrets, and a 403 page offers a way back to the page that linked it (its
#: Referer): sent within the app only, never to other sites.
PAGE_HEADERS = {"Content-Security-Policy": CSP, "Referrer-Policy": "same-origin"}
PREVIEW_HEADERS = {"Content-Security-Policy": PREVIEW_CSP, "X-Frame-Options": "SAMEORIGIN"}

#: The navigation: (path under /admin, label, action needed to see it).
NAV: tuple[tuple[str, str, str], ...] = (
    ("", "Dashboard", "lists:read"),
    ("/issues", "Issues", "issues"),
    ("/media", "Media", "media"),
    ("/sends", "Sends", "sends"),
    ("/lists", "Lists", "lists:read"),
    ("/templates", "Templates", "templates:read"),
    ("/subscribers", "Subscribers", "subscribers"),
    ("/imports", "Imports", "imports"),
    ("/suppressions", "Suppressions", "suppressions"),
    ("/bounces", "Bounces", "suppressions"),
)

#: What a redirect after a form says on the next page (``?done=KEY``): fixed sentences only.
NOTICES = {
    "created": "Created.",
    "saved": "Saved.",
    "test-sent": "Test sent.",
    "duplicated": "This is a new draft, copied from the issue you were on; that one is unchanged.",
    "issue-deleted": "The issue is deleted.",
    "template-deleted": "The template is deleted.",
    "layout-chosen": "The issue's layout is changed; the preview shows it.",
    "paused": "Paused. Workers stop within a second and keep their place.",
    "resumed": "Resumed.",
    "cancelled": "Cancelled. Nothing more goes out; the rest is logged as cancelled.",
    "rescheduled": "Rescheduled.",
    "started": "The send has started: workers are delivering it.",
    "scheduled": "Scheduled.",
    "decided": "The subject test is decided: the winner goes to the rest.",
    "remainder-cancelled": "The subject test's rest is cancelled: only the test share gets the issue.",
    "not-queued": "The send is stored, but the broker could not be reached to queue it; press Resume once it is back.",
    "automations-saved": "Saved. It applies to the automated emails not sent yet.",
    "automations-refreshed": "Refreshed: the list's automated emails send their issues as they are now.",
    "step-added": "Step added. People who confirm from now on get it, that many days after they confirm.",
    "step-removed": "Step removed. Nobody gets it any more; its log stays.",
    "confirmations-not-queued": "The request to confirm is stored, but the broker could not be reached to queue it; "
    "a running worker queues it by itself once the broker is back.",
    "subscribed": "Subscribed to the list.",
    "unsubscribed": "Unsubscribed from the list.",
    "deleted": "Deleted; the consent history is kept.",
    "erased": "Erased, with the consent history.",
    "suppressed": "Suppressed: this address is never mailed.",
    "unsuppressed": "The suppression is lifted.",
    "already-suppressed": "That address was suppressed already.",
    "logged-out": "You are logged out.",
    "media-uploaded": "Uploaded: the image is in the library.",
    "media-known": "That image was in the library already; nothing was added.",
    "media-deleted": "The image is deleted.",
}


@lru_cache(maxsize=8)
def templates(root: str) -> Environment:
    env = html_templates(
        TEMPLATE_DIR, root=root, admin=f"{root}/admin", static=f"{root}/static/admin", version=__version__
    )
    env.filters["when"] = when
    env.filters["iso"] = lambda value: value.isoformat(timespec="seconds") if value else ""
    env.filters["number"] = lambda value: f"{value:,}"
    return env


def when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M UTC") if value else ""


def admin_path(request: Request, path: str = "") -> str:
    return f"{web(request).root}/admin{path}"


def page(
    request: Request,
    caller: Caller | None,
    template: str,
    *,
    status: int = 200,
    headers: dict[str, str] | None = None,
    **values: Any,
) -> HTMLResponse:
    """An admin page for ``caller`` (None on the login page), with the admin CSP."""
    root = web(request).root
    here = request.url.path.removeprefix(f"{root}/admin").rstrip("/")
    nav = []
    if caller is not None:
        for path, label, action in NAV:
            if caller.may(action):
                current = here == path if path == "" else here == path or here.startswith(path + "/")
                nav.append({"href": f"{root}/admin{path}", "label": label, "current": current})
    notice = values.pop("notice", None) or NOTICES.get(request.query_params.get("done", ""))
    html = (
        templates(root)
        .get_template(template)
        .render(
            caller=caller,
            csrf_token=caller.csrf_token if caller else "",
            nav=nav,
            notice=notice,
            **values,
        )
    )
    return HTMLResponse(html, status_code=status, headers={**PAGE_HEADERS, **(headers or {})})


def forbidden_page(request: Request, exc: Forbidden) -> HTMLResponse:
    """The admin's own 403 page: what was refused and which role it needs, a link back to the page
    the reader came from (when that is an admin page of this app) and one to the dashboard."""
    caller: Caller | None = getattr(request.state, "caller", None)
    needed = roles_allowed(exc.action) if exc.action else []
    message = str(exc).strip()  # a lower-case clause: shown as a sentence
    message = message[:1].upper() + message[1:] + ("" if message.endswith(".") else ".")
    return page(request, caller, "forbidden.html", status=403, message=message, needed=needed, back=_back_link(request))


def _back_link(request: Request) -> str | None:
    """The Referer as a path, when it is another admin page of this app (else None: never a link
    to another site, nor back to the refused page itself)."""
    from urllib.parse import urlsplit

    referer = request.headers.get("referer", "")
    try:
        parts = urlsplit(referer)
    except ValueError:
        return None
    ours = {(request.url.scheme, request.url.netloc), urlsplit(web(request).settings.base_url)[:2]}
    home = admin_path(request)
    path = parts.path
    if (parts.scheme, parts.netloc) not in ours or not (path == home or path.startswith(home + "/")):
        return None
    if "//" in path or "\\" in path or path == f"{home}/login":
        return None
    if request.method == "GET" and path == request.url.path:  # reloading the refused page (a form's page is fine)
        return None
    return path + (f"?{parts.query}" if parts.query else "")


def redirect(request: Request, path: str, done: str | None = None, **query: str) -> RedirectResponse:
    """303 to ``/admin{path}`` (after a POST: the browser GETs it), saying ``NOTICES[done]``."""
    from urllib.parse import urlencode

    params = {**({"done": done} if done else {}), **{k: v for k, v in query.items() if v}}
    url = admin_path(request, path) + (f"?{urlencode(params)}" if params else "")
    return RedirectResponse(url, status_code=303)
