"""`/admin/sends`: every send, a live progress view with pause/resume/cancel, and the delivery log.

The progress page polls ``/admin/sends/{id}/progress`` (JSON) every second while the send
is scheduled, sending or paused; the buttons are plain forms, so they work without script.

Everything that names a recipient (the delivery log, its CSV export, the latest errors with their
addresses) is for admins ("sends:log"): editors steer sends and see their counts only.
"""

from __future__ import annotations

import io
import itertools
from collections.abc import Callable, Iterator
from datetime import datetime

import redis
from fastapi import APIRouter, Depends, Form, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from sqlalchemy import select
from sqlalchemy.orm import Session

from newsletter.access.accounts import DELIVERY_LOG, Caller, Forbidden
from newsletter.delivery import send_status, sending
from newsletter.delivery.relay_state import relay_report
from newsletter.delivery.scheduling import reschedule_send
from newsletter.delivery.send_health import SendHealth
from newsletter.delivery.send_queue import QueueUnavailable, queue_resumed
from newsletter.errors import Conflict, InvalidInput
from newsletter.http.admin.auth import user
from newsletter.http.admin.issues import parse_local_time
from newsletter.http.admin.pages import page, redirect
from newsletter.http.context import web
from newsletter.store import db
from newsletter.store.models import Delivery, Issue, Send, utcnow
from newsletter.store.states import DeliveryStatus, SendStatus
from subscribers import csv_cells

router = APIRouter()
Sender = Depends(user("sends"))
PAGE_SIZE = 50
LOG_COLUMNS = sending.LOG_COLUMNS

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


@router.get("/sends/{send_id:int}")
def one_send(request: Request, send_id: int, caller: Caller = Sender) -> HTMLResponse:
    with web(request).transaction() as session, web(request).send_health() as health:
        data = progress(session, send_id, health, recipients=caller.may(DELIVERY_LOG))
        issue = session.get(Issue, data["issue_id"])
    return page(request, caller, "send.html", send=data, issue=issue, statuses=tuple(DeliveryStatus))


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
    with web(request).transaction() as session, web(request).send_health() as health:
        data = progress(session, send_id, health, recipients=caller.may(DELIVERY_LOG))
        issue = session.get(Issue, data["issue_id"])
    return page(
        request, caller, "send.html", status=409, send=data, issue=issue, statuses=tuple(DeliveryStatus), error=message
    )


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
