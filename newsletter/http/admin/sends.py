"""`/admin/sends`: every send, a live progress view with pause/resume/cancel, its report, and the delivery log.

The progress page polls ``/admin/sends/{id}/progress`` (JSON) every second while the send
is scheduled, sending or paused; the buttons are plain forms, so they work without script. A send
with a subject test says where it stands, shows each subject's figures (in its report) and, while it
tests, offers to decide it now (by the figures or a chosen winner) or to cancel the rest.
Once a send has started its page also shows its report (``newsletter.engagement.report``): the
delivery figures and, when its list tracked it, opens, clicks, rates, links and a chart of the
first days drawn as inline SVG by the template; ``report.csv`` exports the per-link table.

Everything that names a recipient (the delivery log, its CSV export, the latest errors with their
addresses) is for admins ("sends:log"): editors steer sends and see their counts only.
"""

from __future__ import annotations

import io
import itertools
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import redis
from fastapi import APIRouter, Depends, Form, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from sqlalchemy import select
from sqlalchemy.orm import Session

from newsletter.access.accounts import DELIVERY_LOG, Caller, Forbidden
from newsletter.delivery import send_status, sending, subject_tests
from newsletter.delivery.relay_state import relay_report
from newsletter.delivery.scheduling import reschedule_send
from newsletter.delivery.send_health import SendHealth
from newsletter.delivery.send_queue import QueueUnavailable, queue_batches, queue_resumed
from newsletter.engagement.report import SendReport, send_report
from newsletter.errors import Conflict, InvalidInput
from newsletter.http.admin.auth import user
from newsletter.http.admin.issues import parse_local_time
from newsletter.http.admin.pages import page, redirect
from newsletter.http.context import web
from newsletter.store import db
from newsletter.store.models import Delivery, Issue, Send, utcnow
from newsletter.store.states import DeliveryStatus, SendStatus, SubjectTestState, Tracking
from subscribers import csv_cells

router = APIRouter()
Sender = Depends(user("sends"))
PAGE_SIZE = 50
LOG_COLUMNS = sending.LOG_COLUMNS
LINK_COLUMNS = ("position", "url", "unique_clicks", "total_clicks", "machine_clicks")

# A send that may still mail someone: it can be cancelled, and its page follows it live.
_LIVE = (SendStatus.SCHEDULED, SendStatus.SENDING, SendStatus.PAUSED)


def recent_failures(session: Session, send_id: int, limit: int = 5) -> list[dict[str, object]]:
    """The send's latest failed deliveries with the server's reply (newest first)."""
    rows = session.execute(
        select(Delivery.email, Delivery.smtp_code, Delivery.smtp_reply, Delivery.updated_at)
        .where(Delivery.send_id == send_id, Delivery.status == DeliveryStatus.FAILED)
        .order_by(Delivery.id.desc())
        .limit(limit)
    ).all()
    return [
        {"email": r.email, "code": r.smtp_code, "reply": r.smtp_reply or "", "at": _iso(r.updated_at)} for r in rows
    ]


def progress(session: Session, send_id: int, health: SendHealth, *, recipients: bool = False) -> dict[str, object]:
    """What the progress view shows: the counts, elapsed time, average rate, latest errors, and
    why the send is stuck (``problem``, None while it moves). The latest errors name their
    recipients: they are listed only with ``recipients`` (for an admin). Raises NotFound."""
    counts = sending.send_counts(session, send_id)
    data = counts.as_json()
    send = counts.send
    end = send.finished_at or utcnow()
    elapsed = (end - send.started_at).total_seconds() if send.started_at else 0.0
    done = counts.total - counts.pending
    data.update(
        done=done,
        elapsed=round(elapsed, 1),
        rate=round(counts.counts.get(DeliveryStatus.SENT, 0) / elapsed, 1) if elapsed > 0 else 0.0,
        scheduled_at=_iso(send.scheduled_at),
        errors=recent_failures(session, send_id) if data[DeliveryStatus.FAILED] and recipients else [],
        log_allowed=recipients,
        can_pause=send.status == SendStatus.SENDING,
        can_resume=send.status == SendStatus.PAUSED,
        can_cancel=send.status in _LIVE,
        # A subject test still testing may be decided early, or its rest cancelled.
        can_decide=counts.test is not None and counts.test.state == SubjectTestState.TESTING,
        live=send.status in _LIVE,
        problem=health.problem(session, send),
        relays=_relays(health, send),
    )
    return data


def _relays(health: SendHealth, send: Send) -> list[dict[str, object]] | None:
    """With several SMTP relays: each one's share of the send's messages and its state now (else None)."""
    relays = health.settings.smtp_relays
    if len(relays) < 2:
        return None
    key = send_status.send_key(send)
    report = relay_report(health.client(), relays, key, broker_error=health.broker_error) or []
    return [{**r.as_json(), "line": r.state_line()} for r in report]


@router.get("/sends")
def all_sends(request: Request, caller: Caller = Sender) -> HTMLResponse:
    with web(request).transaction() as session, web(request).send_health() as health:
        rows = sending.all_sends(session, 50)
        problems = {row.send.id: health.problem(session, row.send) for row in rows}
    return page(request, caller, "sends.html", rows=rows, problems=problems)


def timeline_chart(report: SendReport) -> dict[str, Any] | None:
    """People's opens and clicks per hour over the first 2 days when everything happened then, else per
    6 hours over the first 7 days (``report.timeline``): the buckets and series the chart macro draws."""
    if report.started_at is None or report.tracking == Tracking.OFF:
        return None
    first = report.started_at.replace(minute=0, second=0, microsecond=0)
    offsets = [int((h.hour - first).total_seconds() // 3600) for h in report.timeline]
    hourly = all(o < 48 for o in offsets)
    step, span = (1, 48) if hourly else (6, 7 * 24)
    count = span // step
    opens, clicks = [0] * count, [0] * count
    for offset, hour in zip(offsets, report.timeline, strict=True):
        if 0 <= offset // step < count:
            opens[offset // step] += hour.opens
            clicks[offset // step] += hour.clicks
    buckets = []
    for i in range(count):
        if hourly:
            tick = f"{i} h" if i % 6 == 0 else ""
        else:
            tick = f"day {i // 4 + 1}" if i % 4 == 0 else ""
        buckets.append({"label": f"{i * step}-{(i + 1) * step} h after the start", "tick": tick})
    unit = "hour" if hourly else "6 hours"
    busiest = max(range(count), key=lambda i: (opens[i] + clicks[i], -i))
    summary = (
        f"People's opens and clicks per {unit} over the first {span // 24} days after the send started "
        f"({report.started_at:%Y-%m-%d %H:%M} UTC): {sum(opens)} opens and {sum(clicks)} clicks in all"
    )
    if opens[busiest] + clicks[busiest]:
        summary += (
            f"; the busiest {unit} was {buckets[busiest]['label']}, "
            f"with {opens[busiest]} opens and {clicks[busiest]} clicks"
        )
    return {
        "title": f"Opens and clicks per {unit}, first {span // 24} days",
        "desc": summary + ". Machines' opens and clicks are left out.",
        "x_title": f"Hours after the send started (one bar per {unit})",
        "y_title": "Count",
        "buckets": buckets,
        "series": [
            {"name": "opens", "key": "opens", "values": opens},
            {"name": "clicks", "key": "clicks", "values": clicks},
        ],
    }


@router.get("/sends/{send_id:int}")
def one_send(request: Request, send_id: int, caller: Caller = Sender) -> HTMLResponse:
    return _send_page(request, caller, send_id)


def _send_page(
    request: Request, caller: Caller, send_id: int, *, status: int = 200, error: str | None = None
) -> HTMLResponse:
    with web(request).transaction() as session, web(request).send_health() as health:
        data = progress(session, send_id, health, recipients=caller.may(DELIVERY_LOG))
        issue = session.get(Issue, data["issue_id"])
        report = send_report(session, send_id)
    return page(
        request,
        caller,
        "send.html",
        status=status,
        send=data,
        issue=issue,
        statuses=tuple(DeliveryStatus),
        error=error,
        report=report if report.started_at else None,
        report_note=report.as_json()["note"],
        chart=timeline_chart(report),
    )


@router.get("/sends/{send_id:int}/report.csv")
def report_csv(request: Request, send_id: int, caller: Caller = Sender) -> Response:
    """The report's per-link table as CSV (most clicked first); no cell starts a spreadsheet formula
    (subscribers.csv_cells). It names no recipient, so editors may export it too."""
    with web(request).transaction() as session:
        report = send_report(session, send_id)
    buffer = io.StringIO()
    writer = csv_cells.writer(buffer, lineterminator="\r\n")
    writer.writerow(LINK_COLUMNS)
    for link in report.links:
        writer.writerow([link.position, link.url, link.unique, link.total, link.machine])
    return Response(
        buffer.getvalue(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="send-{send_id}-links.csv"'},
    )


@router.get("/sends/{send_id:int}/progress")
def progress_json(request: Request, send_id: int, caller: Caller = Sender) -> JSONResponse:
    with web(request).transaction() as session, web(request).send_health() as health:
        return JSONResponse(progress(session, send_id, health, recipients=caller.may(DELIVERY_LOG)))


@router.post("/sends/{send_id:int}/pause")
def pause(request: Request, send_id: int, caller: Caller = Sender) -> Response:
    return _steer(request, caller, send_id, "paused", lambda s: sending.pause_send(s, send_id))


@router.post("/sends/{send_id:int}/cancel")
def cancel(request: Request, send_id: int, caller: Caller = Sender) -> Response:
    return _steer(request, caller, send_id, "cancelled", lambda s: sending.cancel_send(s, send_id))


@router.post("/sends/{send_id:int}/resume")
def resume(request: Request, send_id: int, caller: Caller = Sender) -> Response:
    settings = web(request).settings
    try:
        with web(request).transaction() as session:
            send, batches = sending.resume_send(session, send_id, settings.batch_size)
    except Conflict as exc:
        return _conflict(request, caller, send_id, str(exc))
    try:
        queue_resumed(web(request).tasks, send_id, sending.send_key(send), batches)
    except (QueueUnavailable, redis.RedisError):
        return redirect(request, f"/sends/{send_id}", "not-queued")
    return redirect(request, f"/sends/{send_id}", "resumed")


@router.post("/sends/{send_id:int}/decide")
def decide(request: Request, send_id: int, caller: Caller = Sender, winner: str = Form("")) -> Response:
    """Decide the send's subject test now: by the figures so far, or the winner chosen; the rest gets it."""
    w = web(request)
    try:
        chosen = subject_tests.parse_winner(winner, where="winner")
        with w.transaction() as session:
            decided = subject_tests.decide_now(
                session, send_id, batch_size=w.settings.batch_size, by=f"admin:{caller.name}", winner=chosen
            )
    except (InvalidInput, Conflict) as exc:
        return _conflict(request, caller, send_id, exc.message if isinstance(exc, InvalidInput) else str(exc))
    try:
        queue_batches(w.tasks, send_id, decided.batches)
    except QueueUnavailable:
        return redirect(request, f"/sends/{send_id}", "not-queued")
    return redirect(request, f"/sends/{send_id}", "decided")


@router.post("/sends/{send_id:int}/cancel-remainder")
def cancel_remainder(request: Request, send_id: int, caller: Caller = Sender) -> Response:
    """Cancel the rest of the send's undecided subject test: only the test share gets the issue."""
    by = f"admin:{caller.name}"
    return _steer(
        request, caller, send_id, "remainder-cancelled", lambda s: subject_tests.cancel_rest(s, send_id, by=by)
    )


@router.post("/sends/{send_id:int}/reschedule")
def reschedule(
    request: Request, send_id: int, caller: Caller = Sender, at: str = Form(""), tz_offset: str = Form("")
) -> Response:
    try:
        when = parse_local_time(at, tz_offset)
        with web(request).transaction() as session:
            reschedule_send(session, send_id, when)
    except (InvalidInput, Conflict) as exc:
        return _conflict(request, caller, send_id, exc.message if isinstance(exc, InvalidInput) else str(exc))
    return redirect(request, f"/sends/{send_id}", "rescheduled")


def _steer(request: Request, caller: Caller, send_id: int, done: str, action: Callable[[Session], object]) -> Response:
    try:
        with web(request).transaction() as session:
            action(session)
    except Conflict as exc:
        return _conflict(request, caller, send_id, str(exc))
    return redirect(request, f"/sends/{send_id}", done)


def _conflict(request: Request, caller: Caller, send_id: int, message: str) -> HTMLResponse:
    return _send_page(request, caller, send_id, status=409, error=message)


# --- the delivery log ------------------------------------------------------------------------


def _status_filter(status: str | None) -> str | None:
    return status if status in tuple(DeliveryStatus) else None


def _log_reader(caller: Caller) -> None:
    """Only admins read the log: it lists every recipient's address. Raises Forbidden (the 403 page
    shows this message, which says what an editor can do instead)."""
    if not caller.may(DELIVERY_LOG):
        raise Forbidden(
            f"a send's delivery log lists every recipient's address, so only admins may open it or export it "
            f"(you are logged in as {caller.name}, an {caller.role}). The send's own page shows its counts; "
            "ask an admin if you need the log"
        )


@router.get("/sends/{send_id:int}/log")
def log(
    request: Request,
    send_id: int,
    caller: Caller = Sender,
    status: str | None = None,
    page_number: int = Query(1, alias="page"),
) -> HTMLResponse:
    _log_reader(caller)
    chosen = _status_filter(status)
    page_number = max(1, page_number)
    with web(request).transaction() as session:
        counts = sending.send_counts(session, send_id)
        total = counts.counts.get(chosen, 0) if chosen else counts.total
        start = (page_number - 1) * PAGE_SIZE
        rows = list(itertools.islice(sending.delivery_log(session, send_id, status=chosen), start, start + PAGE_SIZE))
    pages = max(1, -(-total // PAGE_SIZE))
    return page(
        request,
        caller,
        "send_log.html",
        counts=counts,
        rows=rows,
        chosen=chosen or "",
        statuses=tuple(DeliveryStatus),
        page_number=page_number,
        pages=pages,
        total=total,
        first=start + 1,
    )


@router.get("/sends/{send_id:int}/log.csv")
def log_csv(request: Request, send_id: int, caller: Caller = Sender, status: str | None = None) -> StreamingResponse:
    """The delivery log as CSV, streamed (the same columns as `newsletter sends log --csv`); no cell
    starts a spreadsheet formula (subscribers.csv_cells)."""
    _log_reader(caller)
    chosen = _status_filter(status)
    w = web(request)
    with w.transaction() as session:
        sending.get_send(session, send_id)  # a 404 now, not halfway through a stream

    def rows() -> Iterator[str]:
        buffer = io.StringIO()
        writer = csv_cells.writer(buffer, lineterminator="\r\n")
        writer.writerow(LOG_COLUMNS)
        with db.transaction(w.sessions) as session:
            for n, r in enumerate(sending.delivery_log(session, send_id, status=chosen), 1):
                writer.writerow(
                    [
                        r.delivery_id,
                        r.email,
                        r.status,
                        r.attempts,
                        r.smtp_code or "",
                        r.smtp_reply or "",
                        r.message_id or "",
                        _iso(r.sent_at) or "",
                        _iso(r.updated_at) or "",
                    ]
                )
                if n % 1000 == 0:
                    yield buffer.getvalue()
                    buffer.seek(0)
                    buffer.truncate()
        yield buffer.getvalue()

    name = f"send-{send_id}-log{'-' + chosen if chosen else ''}.csv"
    return StreamingResponse(
        rows(), media_type="text/csv; charset=utf-8", headers={"Content-Disposition": f'attachment; filename="{name}"'}
    )


def _iso(value: datetime | None) -> str | None:
    return value.isoformat(timespec="seconds") if value else None
