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

Both are async and touch the database only the first time a send is seen (per process and
half-minute): links and keys come from :class:`~newsletter.engagement.recorder.TrackedSends`,
and events go to the :class:`~newsletter.engagement.recorder.EventRecorder`, written in bulk.
"""

from __future__ import annotations

import base64
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from newsletter.engagement import machines
from newsletter.engagement.recorder import TrackedSend
from newsletter.errors import NotFound
from newsletter.http.context import Web, client_ip, user_agent, web
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
    return int(value) if value.isascii() and value.isdigit() and len(value) <= 18 else None


async def _tracked(w: Web, send_id: int) -> TrackedSend | None:
    assert w.tracked_sends is not None
    known, send = w.tracked_sends.cached(send_id)
    if not known:
        send = await run_in_threadpool(w.tracked_sends.read, send_id)
    return send


@router.api_route("/t/c/{send_id}/{position}/{token}", methods=["GET", "HEAD"])
async def click(request: Request, send_id: str, position: str, token: str) -> Response:
    send_number, place = _number(send_id), _number(position)
    if send_number is None or place is None:
        raise NotFound("no such link")
    w = web(request)
    delivery_id = w.signer.tracked_delivery(send_number, token)
    if delivery_id is None:
        raise NotFound("no such link")
    send = await _tracked(w, send_number)
    url = send.urls.get(place) if send is not None else None
    if send is None or url is None:
        raise NotFound("no such link")
    assert w.recorder is not None
    machine = machines.is_machine_click(request.method, user_agent(request))
    w.recorder.add(send, delivery_id, EngagementKind.CLICK, machine=machine, position=place)
    # The address as the issue had it; only what a header cannot carry (spaces, controls, non-ASCII) is escaped.
    return Response(status_code=302, headers={**NO_STORE, "Location": quote(url, safe=_PRINTABLE)})


@router.get("/t/o/{send_id}/{token}")
async def open_image(request: Request, send_id: str, token: str) -> Response:
    send_number = _number(send_id)
    w = web(request)
    delivery_id = w.signer.tracked_delivery(send_number, token) if send_number is not None else None
    if send_number is not None and delivery_id is not None:
        send = await _tracked(w, send_number)
        if send is not None:
            path = w.settings.privacy_proxy_ranges
            ranges = machines.proxy_ranges(str(path)) if path is not None else None
            machine = machines.is_machine_open(user_agent(request), client_ip(request), ranges)
            assert w.recorder is not None
            w.recorder.add(send, delivery_id, EngagementKind.OPEN, machine=machine)
    return Response(GIF, media_type="image/gif", headers=NO_STORE)
