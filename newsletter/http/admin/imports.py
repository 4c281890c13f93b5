"""`/admin/imports` (admins only): upload a CSV, watch it import, download the report of rejected rows.

The upload is written to disk as it arrives (newsletter.http.uploads, at most
NEWSLETTER_IMPORT_MAX_MB) once the session, the role and the form's CSRF token (a field before
the file, or the X-CSRF-Token header) are checked, and its header is checked at once
(subscribers/import_jobs.py); the import runs in a background thread of this process, all rows
or nothing, and its page polls ``/admin/imports/{id}/progress`` (JSON) until it ends.
"""

from __future__ import annotations

import threading

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from newsletter.access import accounts
from newsletter.access.accounts import Caller, Forbidden
from newsletter.errors import InvalidInput
from newsletter.http.admin.auth import BAD_CSRF, CSRF_FIELD, CSRF_HEADER, authenticate, user
from newsletter.http.admin.pages import page, redirect
from newsletter.http.context import web
from newsletter.http.uploads import Upload, receive_upload
from newsletter.store.models import MailingList
from subscribers import import_jobs

router = APIRouter()
Admin = Depends(user("imports"))


@router.get("/imports")
def imports(request: Request, caller: Caller = Admin, list: str = "") -> HTMLResponse:
    return _imports_page(request, caller, list_slug=list)


def _imports_page(
    request: Request,
    caller: Caller,
    *,
    list_slug: str = "",
    status: int = 200,
    error: str | None = None,
    confirmed: bool = False,
) -> HTMLResponse:
    with web(request).transaction() as session:
        lists = session.scalars(select(MailingList).order_by(MailingList.slug)).all()
        jobs = [import_jobs.job_progress(job) for job in import_jobs.recent_jobs(session, 20)]
    return page(
        request,
        caller,
        "imports.html",
        status=status,
        lists=lists,
        jobs=jobs,
        list_slug=list_slug,
        error=error,
        confirmed=confirmed,
        max_mb=web(request).settings.import_max_mb,
    )


async def _importer(request: Request) -> Caller:
    """The logged-in admin, before the upload is read (user("imports") would parse the whole form for its CSRF token)."""
    caller = await run_in_threadpool(authenticate, request)
    request.state.caller = caller  # for the 403 page's navigation
    caller.require("imports")
    return caller


@router.post("/imports")
async def upload(request: Request, caller: Caller = Depends(_importer)) -> Response:
    w = web(request)

    def check_csrf(fields: dict[str, str]) -> None:  # the form's hidden field comes before its file
        if not accounts.csrf_ok(caller, request.headers.get(CSRF_HEADER) or fields.get(CSRF_FIELD)):
            raise Forbidden(BAD_CSRF)

    got = await receive_upload(
        request,
        new_path=lambda: import_jobs.new_upload_path(w.settings.var_dir),
        max_bytes=w.settings.import_max_mb * 1024 * 1024,
        before_file=check_csrf,
    )
    list_slug, confirmed = got.fields.get("list", ""), got.fields.get("confirmed", "") == "yes"
    try:
        check_csrf(got.fields)  # also when the form had no file
        if got.path is None:
            return await run_in_threadpool(
                _imports_page,
                request,
                caller,
                list_slug=list_slug,
                status=400,
                error="choose a CSV file to upload",
                confirmed=confirmed,
            )
        job_id = await run_in_threadpool(_queue, request, got, list_slug, confirmed, caller.name)
    except InvalidInput as exc:
        got.discard()
        return await run_in_threadpool(
            _imports_page, request, caller, list_slug=list_slug, status=400, error=str(exc), confirmed=confirmed
        )
    except BaseException:
        got.discard()
        raise
    threading.Thread(
        target=import_jobs.run_job, args=(w.sessions, job_id), name=f"import-{job_id}", daemon=True
    ).start()
    return redirect(request, f"/imports/{job_id}")


def _queue(request: Request, got: Upload, list_slug: str, confirmed: bool, created_by: str) -> int:
    assert got.path is not None
    with web(request).transaction() as session:
        job = import_jobs.queue_upload(
            session, list_slug, got.filename or "upload.csv", got.path, confirmed=confirmed, created_by=created_by
        )
        return job.id


@router.get("/imports/{job_id:int}")
def job_page(request: Request, job_id: int, caller: Caller = Admin) -> HTMLResponse:
    with web(request).transaction() as session:
        job = import_jobs.job_progress(import_jobs.get_job(session, job_id))
    return page(request, caller, "import.html", job=job)


@router.get("/imports/{job_id:int}/progress")
def progress(request: Request, job_id: int, caller: Caller = Admin) -> JSONResponse:
    with web(request).transaction() as session:
        return JSONResponse(import_jobs.job_progress(import_jobs.get_job(session, job_id)))


@router.get("/imports/{job_id:int}/report.csv")
def report(request: Request, job_id: int, caller: Caller = Admin) -> Response:
    with web(request).transaction() as session:
        text = import_jobs.report_csv(session, job_id)
    return Response(
        text or "line,reason\n",
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="import-{job_id}-rejected.csv"'},
    )
