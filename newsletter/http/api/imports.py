"""/api/imports: CSV imports that run in the background, their progress and reports (admins).

The upload is received by newsletter.http.uploads, not by FastAPI's ``File()``/``Form()``: the
file goes to disk under ``$NEWSLETTER_VAR_DIR/imports`` as it arrives (at most
NEWSLETTER_IMPORT_MAX_MB, counted by newsletter.http.body_limits), after the token and its role
were checked. Its form is described in the OpenAPI schema by ``UPLOAD_SCHEMA`` and checked
here, field by field, with the same 422s FastAPI would give.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, BackgroundTasks, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field, ValidationError
from starlette.concurrency import run_in_threadpool

from newsletter.http.api.auth import ImportAdmin
from newsletter.http.api.common import errors, path_id
from newsletter.http.api.schemas import SLUG_PATTERN, ErrorResponse, ImportJobOut, ImportJobsOut
from newsletter.http.context import web
from newsletter.http.uploads import Upload, receive_upload
from newsletter.store.models import ImportJob
from subscribers import import_jobs

router = APIRouter(prefix="/imports", tags=["imports"])

JobId = Annotated[int, path_id("import job")]


def job_out(request: Request, job: ImportJob) -> ImportJobOut:
    return ImportJobOut.model_validate(
        {**import_jobs.job_progress(job), "report_url": f"{web(request).root}/api/imports/{job.id}/report.csv"}
    )


class ImportForm(BaseModel):
    list: str = Field(pattern=SLUG_PATTERN, max_length=64, description="The list's slug.")
    confirmed: bool = Field(False, description="The addresses have confirmed already (consent on record).")


UPLOAD_SCHEMA = {
    "type": "object",
    "required": ["file", "list"],
    "properties": {
        "file": {
            "type": "string",
            "contentMediaType": "application/octet-stream",
            "description": "UTF-8 CSV with a header row holding an 'email' column (at most NEWSLETTER_IMPORT_MAX_MB).",
        },
        **{
            name: {k: v for k, v in prop.items() if k != "title"}
            for name, prop in ImportForm.model_json_schema()["properties"].items()
        },
    },
}


@router.post(
    "",
    status_code=202,
    response_model=ImportJobOut,
    responses={
        **errors(400, 404),
        413: {
            "model": ErrorResponse,
            "description": "The upload is larger than NEWSLETTER_IMPORT_MAX_MB (the message names the limit).",
        },
    },
    summary="Upload a CSV file to import into a list",
    openapi_extra={"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": UPLOAD_SCHEMA}}}},
)
async def start_import(request: Request, background: BackgroundTasks, caller: ImportAdmin) -> ImportJobOut:
    """Multipart fields ``file``, ``list`` and ``confirmed``. The header row is checked at once
    (400 naming ``FILE:1``); the rows are imported in the background, all or nothing, like
    `newsletter subscribers import`. Poll ``GET /api/imports/{id}`` for progress; rejected rows
    are listed in its ``report_url``."""
    state = web(request)
    upload = await receive_upload(
        request,
        new_path=lambda: import_jobs.new_upload_path(state.settings.var_dir),
        max_bytes=state.settings.import_max_mb * 1024 * 1024,
    )
    try:
        form = _checked(upload)
        assert upload.path is not None  # _checked refuses a form without its file
        job_id, out = await run_in_threadpool(_queue, request, upload, form, f"token {caller.name}")
    except BaseException:
        upload.discard()
        raise
    background.add_task(import_jobs.run_job, state.sessions, job_id)
    return out


def _checked(upload: Upload) -> ImportForm:
    """The form's fields, or RequestValidationError (422) naming the first one at fault."""
    problems: list[dict[str, object]] = []
    if upload.path is None:
        problems.append({"type": "missing", "loc": ("body", "file"), "msg": "Field required", "input": None})
    values = {name: upload.fields[name] for name in ImportForm.model_fields if name in upload.fields}
    form = None
    try:
        form = ImportForm.model_validate(values)
    except ValidationError as exc:
        problems += [{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False, include_context=False)]
    if problems or form is None:
        raise RequestValidationError(problems, body=upload.fields)
    return form


def _queue(request: Request, upload: Upload, form: ImportForm, created_by: str) -> tuple[int, ImportJobOut]:
    assert upload.path is not None
    with web(request).transaction() as session:
        job = import_jobs.queue_upload(
            session,
            form.list,
            upload.filename or "upload.csv",
            upload.path,
            confirmed=form.confirmed,
            created_by=created_by,
        )
        return job.id, job_out(request, job)


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
        200: {
            "description": "The rejected rows: line, reason.",
            "content": {"text/csv": {"schema": {"type": "string"}}},
        },
        **errors(404),
    },
    summary="The rejected rows of an import, as CSV",
)
def import_report(request: Request, job_id: JobId, caller: ImportAdmin) -> Response:
    with web(request).reading() as session:
        report = import_jobs.report_csv(session, job_id)
    return Response(
        report or "line,reason\n",
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="import-{job_id}-rejected.csv"'},
    )
