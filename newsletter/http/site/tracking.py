"""`/t/c/{send}/{position}/{token}` and `/t/o/{send}/{token}`: a tracked send's link redirects and open image.

A click answers 302 to exactly the link's address as the issue had it, and records the click
(a HEAD request, a scanner's user agent: a machine click; bursts are told apart in the
report). A token that is not the send's, a send or position that does not exist: 404, and
never a redirect anywhere (the address comes only from the send's own links, never from the
request). The links keep redirecting after the send's report is rolled up; nothing more is
counted then.

The image is a 1×1 transparent GIF, never cached (``no-store``), so each open fetches it;
an unknown or forged token gets the same image and counts nothing, so the image never breaks.
Neither keeps the request's address or user agent: they classify the event, then are dropped.
"""

from __future__ import annotations

import base64
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import Response

from newsletter.engagement import events, machines
from newsletter.errors import NotFound
from newsletter.http.context import client_ip, user_agent, web
from newsletter.store.states import EngagementKind

router = APIRouter()

GIF = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")
NO_STORE = {
    "Cache-Control": "no-store, no-cache, must-revalidate, max-age=0",
    "Pragma": "no-cache",
    "Expires": "0",
    "Referrer-Policy": "no-referrer",
}
_PRINTABLE = "".join(chr(c) for c in range(0x21, 0x7F))


def _number(value: str) -> int | None:
    return int(value) if value.isdigit() and len(value) <= 18 else None


@router.api_route("/t/c/{send_id}/{position}/{token}", methods=["GET", "HEAD"])
def click(request: Request, send_id: str, position: str, token: str) -> Response:
    send, place = _number(send_id), _number(position)
    if send is None or place is None:
        raise NotFound("no such link")
    w = web(request)
    with w.transaction() as session:
        target = events.resolve_click(session, w.signer, send, place, token)
        if target is None:
            raise NotFound("no such link")
        machine = machines.is_machine_click(request.method, user_agent(request))
        events.record(session, target, EngagementKind.CLICK, machine=machine, position=place)
    # The address as the issue had it; only what a header cannot carry (spaces, controls, non-ASCII) is escaped.
    location = quote(target.url, safe=_PRINTABLE)
    return Response(status_code=302, headers={**NO_STORE, "Location": location})


@router.get("/t/o/{send_id}/{token}")
def open_image(request: Request, send_id: str, token: str) -> Response:
    send = _number(send_id)
    if send is not None:
        w = web(request)
        with w.transaction() as session:
            tracked = events.resolve_open(session, w.signer, send, token)
            if tracked is not None:
                path = w.settings.privacy_proxy_ranges
                ranges = machines.proxy_ranges(str(path)) if path is not None else None
                machine = machines.is_machine_open(user_agent(request), client_ip(request), ranges)
                events.record(session, tracked, EngagementKind.OPEN, machine=machine)
    return Response(GIF, media_type="image/gif", headers=NO_STORE)
