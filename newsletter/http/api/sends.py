"""/api/sends: start or schedule sends and steer them (editors and admins); read their delivery log (admins).

The delivery log names every recipient's address, so it needs the "sends:log" permission, which
only admins have; an editor sees a send's counts (GET /api/sends/{id}) and gets a 403 saying so.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import Field

from newsletter.access.accounts import DELIVERY_LOG, Caller, Forbidden
from newsletter.delivery import scheduling, sending, subject_tests, subject_variants
from newsletter.delivery.audience import Repeat, SendRefused, scheduled_for_everyone
from newsletter.delivery.send_queue import queue_batches, queue_resumed
from newsletter.delivery.subject_variants import UntrackedLists
from newsletter.engagement.report import send_report
from newsletter.errors import Conflict, InvalidInput
from newsletter.http.api import schemas
from newsletter.http.api.auth import SendEditor, api_caller
from newsletter.http.api.common import errors, path_id, render_settings
from newsletter.http.api.schemas import (
    DeliveryOut,
    DeliveryPage,
    SendCreate,
    SendOut,
    SendReschedule,
    SendsOut,
    Slug,
    SubjectTestDecide,
    SubjectTestIn,
    Text,
)
from newsletter.http.context import web
from newsletter.store.states import DeliveryStatus
from subscribers import csv_cells

router = APIRouter(prefix="/sends", tags=["sends"])

SendId = Annotated[int, path_id("send")]
StatusFilter = Annotated[DeliveryStatus | None, Query(description="Only deliveries in this status.")]
CSV_COLUMNS = sending.LOG_COLUMNS
TEST_FIELDS = ("subject_test.subject", "subject_test.share", "subject_test.decide_after")
EXPORT_CHUNK = 5000


def delivery_log_reader(caller: Annotated[Caller, Depends(api_caller)], send_id: SendId) -> Caller:
    """The caller, when their role may read a send's per-recipient log (admins). Raises Forbidden (403)."""
    if not caller.may(DELIVERY_LOG):
        raise Forbidden(
            f"the {caller.role} role may not read a send's delivery log (needs {DELIVERY_LOG!r}): it lists every "
            f"recipient's address, so it is for admins. GET /api/sends/{send_id} gives the send's counts; "
            "ask an admin for the log or for an admin token",
            action=DELIVERY_LOG,
        )
    return caller


DeliveryLogReader = Annotated[Caller, Depends(delivery_log_reader)]


def send_out(counts: sending.SendCounts, problem: str | None = None) -> SendOut:
    s = counts.send
    return SendOut.model_validate(
        {
            "id": s.id,
            "issue_id": s.issue_id,
            "list": counts.list_slug,
            "status": s.status,
            "status_reason": s.status_reason,
            "audience": s.audience,
            "subject": s.subject,
            "total": counts.total,
            **{status: counts.counts.get(status, 0) for status in DeliveryStatus},
            "scheduled_at": s.scheduled_at,
            "created_at": s.created_at,
            "started_at": s.started_at,
            "finished_at": s.finished_at,
            "subject_test": counts.test.as_json() if counts.test is not None else None,
            "problem": problem,
        }
    )


def _status(request: Request, send_id: int) -> SendOut:
    state = web(request)
    with state.reading() as session, state.send_health() as health:
        counts = sending.send_counts(session, send_id)
        return send_out(counts, health.problem(session, counts.send))


class SendTo(SendCreate):
    """A send's request: the issue, and whom it goes to (its list, several lists, a segment)."""

    lists: list[Slug] | None = Field(
        None,
        min_length=1,
        max_length=50,
        description=(
            "Send to all of these lists at once instead of the issue's own: every confirmed, unsuppressed "
            "subscriber of any of them gets one copy, with the unsubscribe link of a list they are on. The "
            "first list is the send's own (sender, List-Id, archive). Not with `list`."
        ),
    )
    segment: Annotated[str, Text(100, 1)] | None = Field(
        None, description="Only the subscribers of this saved segment of the list (GET /api/segments); one list only."
    )
    subject_test: SubjectTestIn | None = Field(
        None,
        description=(
            "Test another subject first: `share` % of the recipients (at random) get the issue's subject or this one, "
            "half each, and after `decide_after` the subject whose copies got the larger share of unique human "
            "clickers (openers breaking a tie; the issue's on a tie) goes to the rest. Every list must track "
            "clicks (409 otherwise). Works with `lists`, `segment`, `repeat` and `at`."
        ),
    )


@router.post(
    "",
    status_code=201,
    response_model=SendOut,
    responses=errors(400, 404, 409, 503),
    summary="Send an issue now, or schedule it",
)
def start_send(request: Request, body: SendTo, caller: SendEditor) -> SendOut:
    """Without ``at``: render the issue once, snapshot the list's confirmed, unsuppressed subscribers
    and queue the batches for the workers (status "sending"). With ``at`` (ISO 8601 with a UTC
    offset, in the future): store a "scheduled" send that the scheduler starts then; the recipients
    are taken when it starts. ``lists`` sends to several lists at once (each address once),
    ``segment`` to a saved segment of the one list. 409 when a list already has a send of the issue
    and ``repeat`` is not given, or when the send would reach no one (the message says why and what
    to do). 400 for ``segment`` with several lists, or ``list`` with ``lists``. ``subject_test`` tests another
    subject on a share of the recipients first (only its batches are queued now; the scheduler queues the
    rest's with the winner); 409 when a list counts no clicks (its tracking is off), 400 when the share leaves
    a subject without a reader. 503 when the broker is unreachable: the send is stored, resume it later."""
    state = web(request)
    settings = render_settings(request)
    repeat = Repeat(body.repeat) if body.repeat else Repeat.NO
    if body.list is not None and body.lists is not None:
        raise InvalidInput("give either list (one list) or lists (several), not both", where="lists")
    slugs = body.lists or ([body.list] if body.list else [])
    test = (
        subject_variants.plan(
            body.subject_test.subject, body.subject_test.share, body.subject_test.decide_after, fields=TEST_FIELDS
        )
        if body.subject_test is not None
        else None
    )
    with state.transaction() as session, _refusals_for_the_api(repeat):
        if body.at is not None:
            send = scheduling.schedule_send(
                session,
                body.issue_id,
                body.at,
                settings,
                list_slugs=slugs,
                segment=body.segment,
                repeat=repeat,
                subject_test=test,
            )
            batches: list[sending.Batch] = []
        else:
            send, batches = sending.start_send(
                session,
                body.issue_id,
                settings,
                list_slugs=slugs,
                segment=body.segment,
                batch_size=state.settings.batch_size,
                repeat=repeat,
                subject_test=test,
            )
    queue_batches(state.tasks, send.id, batches)
    return _status(request, send.id)


@contextmanager
def _refusals_for_the_api(repeat: Repeat) -> Iterator[None]:
    """A refused send (see newsletter.delivery.audience) says how to go on in the API's own terms."""
    try:
        yield
    except SendRefused as exc:
        scheduled = scheduled_for_everyone(exc.earlier)
        if exc.reason == "already_sent" and repeat is Repeat.NO:
            hint = (
                'to send it anyway, repeat the request with "repeat": "again" (everyone again) or '
                '"repeat": "only_new" (only the confirmed subscribers who got no copy yet)'
            )
        elif exc.reason == "already_sent" and scheduled is not None:
            # "only_new" beside a send scheduled for everyone: repeating the request cannot help.
            hint = f"to send now instead, cancel it with POST /api/sends/{scheduled.id}/cancel and send again"
        elif exc.counts is not None and exc.counts.confirmed:
            hint = ""  # everyone confirmed already got it: the summary says so
        elif exc.counts is not None and exc.counts.askable:
            hint = f"ask the unconfirmed to confirm with POST /api/lists/{exc.list_slug}/confirmation-requests"
        else:
            hint = (
                f'add subscribers with POST /api/subscribers ("list": "{exc.list_slug}") '
                "or import a CSV file with POST /api/imports"
            )
        raise Conflict(f"{exc.summary}: {hint}" if hint else exc.summary) from None
    except UntrackedLists as exc:
        turn_on = "; ".join(f'PATCH /api/lists/{slug} with {{"tracking": "anonymous"}}' for slug in exc.slugs)
        raise Conflict(f"{exc.summary}: turn it on ({turn_on}), or send without subject_test") from None
    except InvalidInput as exc:
        if exc.where in ("--segment", "--list"):  # the domain names the CLI's options; here they are fields
            exc.where = exc.where.removeprefix("--")
        elif exc.where in subject_variants.CLI_FIELDS:
            exc.where = TEST_FIELDS[subject_variants.CLI_FIELDS.index(exc.where)]
        raise


@router.get("", response_model=SendsOut, responses=errors(), summary="Recent sends, newest first")
def all_sends(
    request: Request, caller: SendEditor, limit: Annotated[int, Query(ge=1, le=500, description="How many.")] = 50
) -> SendsOut:
    state = web(request)
    with state.reading() as session, state.send_health() as health:
        return SendsOut(
            items=[send_out(row, health.problem(session, row.send)) for row in sending.all_sends(session, limit)]
        )


@router.get("/{send_id}", response_model=SendOut, responses=errors(404), summary="A send's status and counts")
def get_send(request: Request, send_id: SendId, caller: SendEditor) -> SendOut:
    return _status(request, send_id)


@router.patch(
    "/{send_id}", response_model=SendOut, responses=errors(400, 404, 409), summary="Reschedule a scheduled send"
)
def reschedule_send(request: Request, send_id: SendId, body: SendReschedule, caller: SendEditor) -> SendOut:
    with web(request).transaction() as session:
        scheduling.reschedule_send(session, send_id, body.at)
    return _status(request, send_id)


@router.post("/{send_id}/pause", response_model=SendOut, responses=errors(404, 409), summary="Pause a sending send")
def pause_send(request: Request, send_id: SendId, caller: SendEditor) -> SendOut:
    """Workers stop within a second and keep their place."""
    with web(request).transaction() as session:
        sending.pause_send(session, send_id)
    return _status(request, send_id)


@router.post(
    "/{send_id}/resume", response_model=SendOut, responses=errors(404, 409, 503), summary="Resume a paused send"
)
def resume_send(request: Request, send_id: SendId, caller: SendEditor) -> SendOut:
    """Continues with what is pending (also re-queues a sending send whose tasks were lost)."""
    state = web(request)
    with state.transaction() as session:
        send, batches = sending.resume_send(session, send_id, state.settings.batch_size)
        key = sending.send_key(send)
    queue_resumed(state.tasks, send_id, key, batches)
    return _status(request, send_id)


@router.post("/{send_id}/cancel", response_model=SendOut, responses=errors(404, 409), summary="Cancel a send")
def cancel_send(request: Request, send_id: SendId, caller: SendEditor) -> SendOut:
    """Nothing more goes out; what was pending is logged as cancelled. Also cancels a scheduled send."""
    with web(request).transaction() as session:
        sending.cancel_send(session, send_id)
    return _status(request, send_id)


@router.post(
    "/{send_id}/subject-test/decide",
    response_model=SendOut,
    responses=errors(400, 404, 409, 503),
    summary="Decide a send's subject test now",
)
def decide_subject_test(
    request: Request, send_id: SendId, caller: SendEditor, body: SubjectTestDecide | None = None
) -> SendOut:
    """Before its time: by the figures so far (unique human clickers, then openers, then A), or the ``winner``
    given; the winner goes to the rest at once (their batches are queued; a paused send's when it resumes).
    409 when the send has no test, or it is decided or cancelled already. 503 when the broker is unreachable:
    the decision stands and a worker queues the rest by itself once it is back."""
    state = web(request)
    winner = subject_tests.parse_winner(body.winner if body else None, where="winner")
    with state.transaction() as session:
        decided = subject_tests.decide_now(
            session, send_id, batch_size=state.settings.batch_size, by=f"api:{caller.name}", winner=winner
        )
    queue_batches(state.tasks, send_id, decided.batches)
    return _status(request, send_id)


@router.post(
    "/{send_id}/subject-test/cancel-remainder",
    response_model=SendOut,
    responses=errors(404, 409),
    summary="Cancel the rest of a send's subject test",
)
def cancel_subject_test_remainder(request: Request, send_id: SendId, caller: SendEditor) -> SendOut:
    """Only the test share gets the issue: the rest's deliveries are logged as cancelled. 409 when the send has
    no test, or it is decided or cancelled already."""
    with web(request).transaction() as session:
        subject_tests.cancel_rest(session, send_id, by=f"api:{caller.name}")
    return _status(request, send_id)


@router.get(
    "/{send_id}/deliveries",
    response_model=DeliveryPage,
    responses=errors(404),
    summary="A page of the delivery log (admins)",
)
def deliveries(
    request: Request,
    send_id: SendId,
    caller: DeliveryLogReader,
    status: StatusFilter = None,
    offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> DeliveryPage:
    """Each recipient's delivery in id order: status, attempts, the SMTP server's last reply, Message-ID, times.
    Admins only (it lists every recipient's address): an editor's token gets 403."""
    with web(request).reading() as session:
        total, rows = sending.delivery_page(session, send_id, status=status, offset=offset, limit=limit)
    return DeliveryPage(
        total=total,
        offset=offset,
        limit=limit,
        items=[
            DeliveryOut(
                id=r.delivery_id,
                email=r.email,
                status=r.status,
                attempts=r.attempts,
                smtp_code=r.smtp_code,
                smtp_reply=r.smtp_reply,
                message_id=r.message_id,
                sent_at=r.sent_at,
                updated_at=r.updated_at,
            )
            for r in rows
        ],
    )


@router.get(
    "/{send_id}/deliveries.csv",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "The delivery log as CSV: " + ", ".join(CSV_COLUMNS) + ".",
            "content": {"text/csv": {"schema": {"type": "string"}}},
        },
        **errors(404),
    },
    summary="Export the delivery log as CSV (admins)",
)
def deliveries_csv(
    request: Request, send_id: SendId, caller: DeliveryLogReader, status: StatusFilter = None
) -> StreamingResponse:
    """Streamed in chunks, each read in its own short transaction, so a big export holds no lock. Admins only
    (an editor's token gets 403). A cell that would start with ``=``, ``+``, ``-``, ``@``, tab or CR starts with
    ``'`` instead, so a spreadsheet shows it as text and runs nothing."""
    state = web(request)
    with state.reading() as session:
        sending.get_send(session, send_id)  # 404 before the first byte

    def chunks() -> Iterator[str]:
        buffer = io.StringIO()
        writer = csv_cells.writer(buffer)
        writer.writerow(CSV_COLUMNS)
        after = 0
        while True:
            with state.reading() as session:
                rows = sending.delivery_rows_after(session, send_id, after, status=status, limit=EXPORT_CHUNK)
            for r in rows:
                writer.writerow(
                    [
                        r.delivery_id,
                        r.email,
                        r.status,
                        r.attempts,
                        r.smtp_code or "",
                        r.smtp_reply or "",
                        r.message_id or "",
                        _iso(r.sent_at),
                        _iso(r.updated_at),
                    ]
                )
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
            if len(rows) < EXPORT_CHUNK:
                return
            after = rows[-1].delivery_id

    return StreamingResponse(
        chunks(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="send-{send_id}-deliveries.csv"'},
    )


def _iso(value: datetime | None) -> str:
    return value.isoformat(timespec="seconds") if value else ""


@router.get(
    "/{send_id}/report",
    response_model=schemas.SendReportOut,
    responses=errors(404),
    summary="A send's report: delivery figures, opens, clicks, rates, links, timeline",
)
def report(request: Request, send_id: SendId, caller: SendEditor) -> dict[str, object]:
    """Exactly what ``newsletter sends report ID --json`` prints: the delivery figures and, when the send's
    list tracked it, people's and machines' opens and clicks apart, the rates, each link and the first 7
    days per hour. It names no recipient, so an editor's token reads it too. Open rates are estimates
    (``note`` says why)."""
    with web(request).reading() as session:
        return send_report(session, send_id).as_json()
