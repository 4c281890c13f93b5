"""/api/lists/{slug}/confirmation-requests: ask a list's unconfirmed subscribers to confirm, read the log.

The same rules as `newsletter lists request-confirmation` (see
``subscribers.confirmation_requests``). The role that may send may ask: the "sends"
permission, so an editor told that a send would reach nobody can act on it. A request to
confirm changes no one's consent; only the subscriber's own click does. The per-recipient
log names every address asked, so, like a send's delivery log, it is for admins
("sends:log"); editors see a run's counts.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from pydantic import BaseModel, Field

from newsletter.access.accounts import DELIVERY_LOG, Caller, Forbidden
from newsletter.delivery.send_queue import queue_confirmation_run
from newsletter.http.api.auth import SendEditor, api_caller
from newsletter.http.api.common import errors, path_id
from newsletter.http.api.schemas import SLUG_PATTERN, Strict
from newsletter.http.context import web
from newsletter.store.states import ConfirmationMailStatus, ConfirmationRunStatus
from subscribers import confirmation_requests
from subscribers.confirmation_requests import RunStarted, RunSummary

router = APIRouter(prefix="/lists", tags=["lists"])

SlugPath = Annotated[str, Path(pattern=SLUG_PATTERN, max_length=64, description="The list's slug.")]
RunId = Annotated[int, path_id("request to confirm")]
AGAIN_HINT = 'send "again": true'


def log_reader(caller: Annotated[Caller, Depends(api_caller)], slug: SlugPath, run_id: RunId) -> Caller:
    """The caller, when their role may read a per-recipient log (admins). Raises Forbidden (403)."""
    if not caller.may(DELIVERY_LOG):
        raise Forbidden(
            f"the {caller.role} role may not read a request to confirm's recipients (needs {DELIVERY_LOG!r}): they are "
            f"subscribers' addresses, so the log is for admins. GET /api/lists/{slug}/confirmation-requests/{run_id} "
            "gives the run's counts; ask an admin for the log or for an admin token",
            action=DELIVERY_LOG,
        )
    return caller


class ConfirmationRequestIn(Strict):
    again: bool = Field(False, strict=True, description="Also ask those asked in the last 7 days.")


class LeftOut(BaseModel):
    asked_recently: int = Field(description="Asked in the last 7 days (asked anyway with again).")
    suppressed: int = Field(description="Suppressed addresses: never asked.")
    already_queued: int = Field(description="Still queued by an earlier request that is not finished.")


class ConfirmationRunOut(BaseModel):
    id: int
    list: str
    status: ConfirmationRunStatus
    again: bool
    queued: int = Field(description="Recipients of this request.")
    left_out: LeftOut = Field(description="Unconfirmed subscribers left out when it started, by reason.")
    sent: int
    failed: int
    skipped: int = Field(description="Confirmed, left or suppressed before their email went out.")
    pending: int
    created_by: str
    created_at: datetime
    finished_at: datetime | None


class ConfirmationRequestOut(BaseModel):
    list: str
    queued: int = Field(description="How many confirmation emails were queued.")
    left_out: LeftOut
    message: str = Field(description="What happened, in one sentence.")
    run: ConfirmationRunOut | None = Field(description="The request's run, or null when nobody was queued.")


class ConfirmationRunsOut(BaseModel):
    items: list[ConfirmationRunOut]


class ConfirmationMailOut(BaseModel):
    id: int
    email: str
    status: ConfirmationMailStatus
    attempts: int
    smtp_code: int | None
    smtp_reply: str | None = Field(description="The SMTP server's last reply, or why it was not sent.")
    message_id: str | None
    sent_at: datetime | None
    updated_at: datetime


class ConfirmationMailPage(BaseModel):
    total: int
    offset: int
    limit: int
    items: list[ConfirmationMailOut]


def run_out(summary: RunSummary) -> ConfirmationRunOut:
    return ConfirmationRunOut.model_validate(summary.as_json())


def _left_out(started: RunStarted) -> LeftOut:
    return LeftOut(
        asked_recently=started.asked_recently, suppressed=started.suppressed, already_queued=started.already_queued
    )


@router.post(
    "/{slug}/confirmation-requests",
    status_code=202,
    response_model=ConfirmationRequestOut,
    responses={
        200: {"model": ConfirmationRequestOut, "description": "Nobody to ask: nothing was queued."},
        **errors(404, 503),
    },
    summary="Ask the list's unconfirmed subscribers to confirm",
)
def request_confirmation(
    request: Request, response: Response, slug: SlugPath, caller: SendEditor, body: ConfirmationRequestIn | None = None
) -> ConfirmationRequestOut:
    """Queues the double opt-in email for every unconfirmed subscriber of the list, except those asked
    in the last 7 days (unless ``again``), suppressed addresses, and those still queued by an earlier
    request. Workers send them, rate-limited like a send; each outcome is in the run's log. 202 with
    the counts when some were queued, 200 when nobody was. 503 when the broker is unreachable: the
    request is stored and a running worker queues it by itself once the broker is back."""
    state = web(request)
    again = body.again if body is not None else False
    with state.transaction() as session:
        started = confirmation_requests.start_run(
            session, slug, batch_size=state.settings.batch_size, again=again, created_by=f"api:{caller.name}"
        )
    if started.run_id is not None:
        queue_confirmation_run(state.tasks, started.run_id, started.batches)
    run = None
    if started.run_id is not None:
        with state.reading() as session:
            run = run_out(confirmation_requests.get_run(session, slug, started.run_id))
    else:
        response.status_code = 200
    return ConfirmationRequestOut(
        list=started.list_slug,
        queued=started.queued,
        left_out=_left_out(started),
        message=started.describe(AGAIN_HINT),
        run=run,
    )


@router.get(
    "/{slug}/confirmation-requests",
    response_model=ConfirmationRunsOut,
    responses=errors(404),
    summary="The list's requests to confirm, newest first",
)
def all_runs(
    request: Request,
    slug: SlugPath,
    caller: SendEditor,
    limit: Annotated[int, Query(ge=1, le=500, description="How many.")] = 20,
) -> ConfirmationRunsOut:
    with web(request).reading() as session:
        return ConfirmationRunsOut(
            items=[run_out(r) for r in confirmation_requests.runs_of_list(session, slug, limit=limit)]
        )


@router.get(
    "/{slug}/confirmation-requests/{run_id}",
    response_model=ConfirmationRunOut,
    responses=errors(404),
    summary="One request to confirm and its counts",
)
def one_run(request: Request, slug: SlugPath, run_id: RunId, caller: SendEditor) -> ConfirmationRunOut:
    with web(request).reading() as session:
        return run_out(confirmation_requests.get_run(session, slug, run_id))


@router.get(
    "/{slug}/confirmation-requests/{run_id}/recipients",
    response_model=ConfirmationMailPage,
    responses=errors(404),
    summary="A page of a request to confirm's log",
)
def recipients(
    request: Request,
    slug: SlugPath,
    run_id: RunId,
    caller: Annotated[Caller, Depends(log_reader)],
    status: Annotated[ConfirmationMailStatus | None, Query(description="Only recipients in this status.")] = None,
    offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> ConfirmationMailPage:
    """Each recipient in id order: status, attempts, the SMTP server's last reply, Message-ID, times."""
    with web(request).reading() as session:
        summary = confirmation_requests.get_run(session, slug, run_id)
        total, rows = confirmation_requests.run_log(session, summary.run.id, status=status, offset=offset, limit=limit)
    return ConfirmationMailPage(
        total=total,
        offset=offset,
        limit=limit,
        items=[ConfirmationMailOut.model_validate(r.as_json()) for r in rows],
    )
