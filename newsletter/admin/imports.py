"""`/admin/imports` (admins only): upload a CSV, watch it import, download the report of rejected rows.

The upload is saved and its header checked at once (subscribers/import_jobs.py); the import
runs in a background thread of this process, all rows or nothing, and its page polls
``/admin/imports/{id}/progress`` (JSON) until it ends.
"""

from __future__ import annotations

import threading

from fastapi import APIRouter, Depends, File, Form, Request, UploadFile
from fastapi.responses import HTMLResponse, JSONResponse, Response
from sqlalchemy import select

from newsletter.accounts import Caller
from newsletter.admin.auth import user
from newsletter.admin.pages import page, redirect
from newsletter.errors import InvalidInput
from newsletter.models import MailingList
from newsletter.web.context import web
from subscribers import import_jobs

router = APIRouter()
Admin = Depends(user("imports"))


@router.get("/imports")
def imports(request: Request, caller: Caller = Admin, list: str = "") -> HTMLResponse:  # noqa: A002
    return _imports_page(request, caller, list_slug=list)


def _imports_page(request: Request, caller: Caller, *, list_slug: str = "", status: int = 200,
                  error: str | None = None, confirmed: bool = False) -> HTMLResponse:
    with web(request).transaction() as session:
        lists = session.scalars(select(MailingList).order_by(MailingList.slug)).all()
        jobs = [import_jobs.job_progress(job) for job in import_jobs.recent_jobs(session, 20)]
    return page(request, caller, "imports.html", status=status, lists=lists, jobs=jobs, list_slug=list_slug,
                error=error, confirmed=confirmed, max_mb=import_jobs.MAX_BYTES // (1024 * 1024))


@router.post("/imports")
def upload(
    request: Request,
    caller: Caller = Admin,
    list: str = Form(""),  # noqa: A002
    confirmed: str = Form(""),
    file: UploadFile = File(...),
) -> Response:
    w = web(request)
    try:
        with w.transaction() as session:
            job = import_jobs.create_job(session, list, file.filename or "upload.csv", file.file,
                                         var_dir=w.settings.var_dir, confirmed=confirmed == "yes", created_by=caller.name)
    except InvalidInput as exc:
        return _imports_page(request, caller, list_slug=list, status=400, error=str(exc), confirmed=confirmed == "yes")
    threading.Thread(target=import_jobs.run_job, args=(w.sessions, job.id), name=f"import-{job.id}", daemon=True).start()
    return redirect(request, f"/imports/{job.id}")


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
    return Response(text or "line,reason\n", media_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": f'attachment; filename="import-{job_id}-rejected.csv"'})
