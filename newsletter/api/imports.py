"""/api/imports: CSV imports that run in the background, their progress and reports (admins)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, BackgroundTasks, File, Form, Query, Request, Response, UploadFile

from newsletter.api.auth import ImportAdmin
from newsletter.api.common import errors, path_id
from newsletter.api.schemas import SLUG_PATTERN, ImportJobOut, ImportJobsOut
from newsletter.models import ImportJob
from newsletter.web.context import web
from subscribers import import_jobs

router = APIRouter(prefix="/imports", tags=["imports"])

JobId = Annotated[int, path_id("import job")]


def job_out(request: Request, job: ImportJob) -> ImportJobOut:
    return ImportJobOut.model_validate(
        {**import_jobs.job_progress(job), "report_url": f"{web(request).root}/api/imports/{job.id}/report.csv"}
    )


@router.post(
    "", status_code=202, response_model=ImportJobOut, responses=errors(400, 404),
    summary="Upload a CSV file to import into a list",
)
def start_import(
    request: Request,
    background: BackgroundTasks,
    caller: ImportAdmin,
    file: Annotated[UploadFile, File(description="UTF-8 CSV with a header row holding an 'email' column.")],
    list: Annotated[str, Form(pattern=SLUG_PATTERN, max_length=64, description="The list's slug.")],
    confirmed: Annotated[bool, Form(description="The addresses have confirmed already (consent on record).")] = False,
) -> ImportJobOut:
    """The header row is checked at once (400 naming ``FILE:1``); the rows are imported in the
    background, all or nothing, like `newsletter subscribers import`. Poll ``GET /api/imports/{id}``
    for progress; rejected rows are listed in its ``report_url``."""
    state = web(request)
    with state.transaction() as session:
        job = import_jobs.create_job(
            session, list, file.filename or "upload.csv", file.file, var_dir=state.settings.var_dir,
            confirmed=confirmed, created_by=f"token {caller.name}",
        )
        out = job_out(request, job)
    background.add_task(import_jobs.run_job, state.sessions, job.id)
    return out


@router.get("", response_model=ImportJobsOut, responses=errors(), summary="Recent imports, newest first")
def recent_imports(
    request: Request, caller: ImportAdmin, limit: Annotated[int, Query(ge=1, le=500)] = 20
) -> ImportJobsOut:
    with web(request).reading() as session:
        return ImportJobsOut(items=[job_out(request, job) for job in import_jobs.recent_jobs(session, limit)])


@router.get("/{job_id}", response_model=ImportJobOut, responses=errors(404), summary="An import's progress")
def get_import(request: Request, job_id: JobId, caller: ImportAdmin) -> ImportJobOut:
    with web(request).reading() as session:
        return job_out(request, import_jobs.get_job(session, job_id))


@router.get(
    "/{job_id}/report.csv",
    response_class=Response,
    responses={
        200: {"description": "The rejected rows: line, reason.", "content": {"text/csv": {"schema": {"type": "string"}}}},
        **errors(404),
    },
    summary="The rejected rows of an import, as CSV",
)
def import_report(request: Request, job_id: JobId, caller: ImportAdmin) -> Response:
    with web(request).reading() as session:
        report = import_jobs.report_csv(session, job_id)
    return Response(
        report or "line,reason\n", media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="import-{job_id}-rejected.csv"'},
    )
