"""`/admin/lists/{slug}/confirmations`: ask a list's unconfirmed subscribers to confirm, and each request's log.

The button on the list page posts here (the "sends" permission, as in the API); the page
shows what was queued and who was left out, the list's requests, and one request's log.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Form, Query, Request
from fastapi.responses import HTMLResponse, Response

from newsletter.access.accounts import DELIVERY_LOG, Caller
from newsletter.delivery.send_queue import QueueUnavailable, queue_confirmation_run
from newsletter.errors import NotFound
from newsletter.http.admin.auth import user
from newsletter.http.admin.pages import page, redirect
from newsletter.http.context import web
from newsletter.store.states import ConfirmationMailStatus
from subscribers import confirmation_requests
from subscribers.confirmation_requests import RunStarted
from subscribers.lists import list_with_counts

router = APIRouter()
Sender = Depends(user("sends"))
PAGE_SIZE = 50
AGAIN_HINT = "press “Ask them again anyway”"


@router.post("/lists/{slug}/confirmations")
def ask(request: Request, slug: str, caller: Caller = Sender, again: str = Form("")) -> Response:
    w = web(request)
    with w.transaction() as session:
        started = confirmation_requests.start_run(
            session, slug, batch_size=w.settings.batch_size, again=again == "1", created_by=f"admin:{caller.name}"
        )
    counts = {
        "queued": str(started.queued),
        "recent": str(started.asked_recently),
        "suppressed": str(started.suppressed),
        "already": str(started.already_queued),
        "again": "1" if started.again else "",
    }
    if started.run_id is None:
        return redirect(request, f"/lists/{slug}/confirmations", None, **counts)
    try:
        queue_confirmation_run(w.tasks, started.run_id, started.batches)
    except QueueUnavailable:
        return redirect(request, f"/lists/{slug}/confirmations", "confirmations-not-queued", run=str(started.run_id))
    return redirect(request, f"/lists/{slug}/confirmations", None, run=str(started.run_id), **counts)


@router.get("/lists/{slug}/confirmations")
def log(
    request: Request,
    slug: str,
    caller: Caller = Sender,
    run: int | None = Query(None, ge=1, le=2**53 - 1),
    status: str | None = None,
    page_number: int = Query(1, alias="page", ge=1, le=2**31 - 1),
    queued: int | None = Query(None, ge=0),
    recent: int = Query(0, ge=0),
    suppressed: int = Query(0, ge=0),
    already: int = Query(0, ge=0),
    again: str = "",
) -> HTMLResponse:
    chosen = status if status in tuple(ConfirmationMailStatus) else None
    with web(request).transaction() as session:  # not reading(): its rollback would expire what the page shows
        counts = list_with_counts(session, slug)
        runs = confirmation_requests.runs_of_list(session, slug)
        try:
            summary = confirmation_requests.get_run(session, slug, run) if runs else None
        except NotFound:
            if run is None:
                raise
            summary = None
        total = 0
        rows: list[confirmation_requests.LogRow] = []
        may_read_log = caller.may(DELIVERY_LOG)  # the log names every address asked: admins only
        if summary is not None and may_read_log:
            total, rows = confirmation_requests.run_log(
                session, summary.run.id, status=chosen, offset=(page_number - 1) * PAGE_SIZE, limit=PAGE_SIZE
            )
    if run is not None and summary is None:
        raise NotFound(f"no request to confirm {run} on this list")
    notice = None
    if queued is not None:  # just asked: say what happened, from the numbers the request returned
        notice = RunStarted(slug, run, queued, recent, suppressed, already, again == "1", []).describe(AGAIN_HINT)
    pages = max(1, -(-total // PAGE_SIZE))
    return page(
        request,
        caller,
        "confirmations.html",
        mailing_list=counts.mailing_list,
        counts=counts,
        runs=runs,
        summary=summary,
        rows=rows,
        total=total,
        chosen=chosen or "",
        statuses=tuple(ConfirmationMailStatus),
        page_number=page_number,
        pages=pages,
        first=(page_number - 1) * PAGE_SIZE + 1,
        notice=notice,
        offer_again=bool(recent) and again != "1",
        may_read_log=may_read_log,
    )
