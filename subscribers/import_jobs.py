"""CSV imports that run in the background, with live progress and a report of rejected rows.

An upload is streamed to ``$NEWSLETTER_VAR_DIR/imports/<random>.csv`` as it arrives (by the
web app, newsletter.http.uploads; or ``create_job`` from a file object) and its header row
checked at once (``queue_upload``); the import itself (``run_job``, typically in a
background thread) is ``subscribers.importing.import_csv`` in one transaction: all rows
or nothing. The uploaded file is deleted when the job ends.

Progress while a job runs lives in this process's memory, not in the database: on SQLite
the import holds the write lock for its whole transaction, so writing progress rows would
block on it. A job left queued or running by a process that stopped is marked failed by
``fail_interrupted_jobs`` when the web app starts.
"""

from __future__ import annotations

import codecs
import csv
import io
import logging
import secrets
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from newsletter.errors import InvalidInput, NotFound
from newsletter.store.db import rowcount, transaction
from newsletter.store.models import ImportJob, MailingList, utcnow
from newsletter.store.states import ImportStatus
from subscribers import csv_cells, importing
from subscribers.lists import get_list

log = logging.getLogger(__name__)

MAX_BYTES = 200 * 1024 * 1024
HEADER_LIMIT = 2 * 1024 * 1024  # the header row must end within the file's first 2 MB
CHUNK = 1024 * 1024
REPORT_LIMIT = 100_000  # rejected rows listed in a job's report; further ones are only counted
INTERRUPTED = "interrupted (the web process restarted); upload the file again"

# Jobs running in this process: job id -> rows read so far, and a detached copy of the job
# as it was when it started (served by get_job without touching the database, see below).
_progress: dict[int, int] = {}
_running: dict[int, ImportJob] = {}
_progress_lock = threading.Lock()


def _set_progress(job_id: int, rows: int) -> None:
    with _progress_lock:
        _progress[job_id] = rows


def _start_progress(job: ImportJob) -> None:
    columns = {c.key: getattr(job, c.key) for c in ImportJob.__mapper__.column_attrs}
    with _progress_lock:
        _progress[job.id] = 0
        _running[job.id] = ImportJob(**columns)  # transient: never attached to a session


def running_job(job_id: int) -> ImportJob | None:
    """The job if it is running in this process (a detached copy; read no database for it)."""
    with _progress_lock:
        return _running.get(job_id)


def _live_progress(job_id: int) -> int | None:
    with _progress_lock:
        return _progress.get(job_id)


def _clear_progress(job_id: int) -> None:
    with _progress_lock:
        _progress.pop(job_id, None)
        _running.pop(job_id, None)


def _clean_filename(filename: str) -> str:
    # Browsers may send a full path (C:\fakepath\people.csv); keep the last part, printable only.
    name = (filename or "").replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(c for c in name if ord(c) >= 32 and ord(c) != 127).strip()
    return (name or "upload.csv")[:300]


def create_job(
    session: Session,
    list_slug: str,
    filename: str,
    data: BinaryIO,
    *,
    var_dir: Path,
    confirmed: bool = False,
    created_by: str = "",
    max_bytes: int = MAX_BYTES,
) -> ImportJob:
    """Save the upload and queue its import; the header row is checked now.

    Raises NotFound for an unknown list; InvalidInput naming ``filename`` when the file is
    larger than ``max_bytes``, and ``filename:1`` when it is empty, not UTF-8 in its header
    row, or has no ``email`` column. The saved file is removed on any error.
    """
    get_list(session, list_slug)  # an unknown list is refused before anything is written
    path = new_upload_path(var_dir)
    try:
        size = 0
        with open(path, "xb") as out:
            while chunk := data.read(CHUNK):
                size += len(chunk)
                if size > max_bytes:
                    raise InvalidInput(
                        f"the file is larger than the {_megabytes(max_bytes)} limit for an import",
                        where=_clean_filename(filename),
                    )
                out.write(chunk)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return queue_upload(session, list_slug, filename, path, confirmed=confirmed, created_by=created_by)


def new_upload_path(var_dir: Path) -> Path:
    """A fresh file name under ``var_dir/imports`` for an upload (the web app streams one there as it arrives)."""
    folder = Path(var_dir) / "imports"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{secrets.token_hex(16)}.csv"


def queue_upload(
    session: Session, list_slug: str, filename: str, path: Path, *, confirmed: bool = False, created_by: str = ""
) -> ImportJob:
    """Queue the import of an upload already saved at ``path`` (see new_upload_path); its header is checked now.

    Raises like create_job; the file is removed on any error, and belongs to the job otherwise.
    """
    try:
        mailing_list = get_list(session, list_slug)
        filename = _clean_filename(filename)
        check_header(path, filename)
        job = ImportJob(
            list_id=mailing_list.id,
            filename=filename,
            path=str(path),
            confirmed=bool(confirmed),
            status=ImportStatus.QUEUED,
            size_bytes=path.stat().st_size,
            created_by=(created_by or "")[:100],
            created_at=utcnow(),
        )
        session.add(job)
        session.flush()
        _remember_slug(mailing_list.id, mailing_list.slug)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return job


def _megabytes(count: int) -> str:
    return f"{count / (1024 * 1024):g} MB"


def check_header(path: Path, source: str) -> list[str]:
    """The header row's column names; InvalidInput(where=f"{source}:1") if it is unusable.

    Only the header row has to be valid UTF-8 here: a bad byte on a later line is reported
    with its line number when the import runs.
    """
    with open(path, "rb") as handle:
        head = handle.read(HEADER_LIMIT)
        whole = len(head) < HEADER_LIMIT or not handle.read(1)
    where = f"{source}:1"
    decoder = codecs.getincrementaldecoder("utf-8-sig")()
    bad: UnicodeDecodeError | None = None
    try:
        text = decoder.decode(head, final=whole)
    except UnicodeDecodeError as exc:
        bad = exc
        # Decode the valid prefix: the header may well end before the bad byte.
        text = codecs.getincrementaldecoder("utf-8-sig")().decode(head[: exc.start], final=False)
    last_line = ""

    def lines() -> Iterator[str]:
        nonlocal last_line
        for line in io.StringIO(text, newline=""):
            last_line = line
            yield line

    try:
        header = next(csv.reader(lines()), None)
    except csv.Error as exc:
        raise InvalidInput(f"unreadable CSV: {exc}", where=where) from None
    complete = header is not None and (last_line.endswith(("\n", "\r")) or (whole and bad is None))
    if header is None or not complete:
        if bad is not None:
            raise InvalidInput(f"not valid UTF-8 ({bad.reason} at byte {bad.start})", where=where)
        if header is None and whole:
            raise InvalidInput("the file is empty; expected a header row with an 'email' column", where=where)
        raise InvalidInput(f"the header row does not end within the first {_megabytes(HEADER_LIMIT)}", where=where)
    importing._Columns(header, source)  # raises InvalidInput(where=f"{source}:1") without an email column
    return header


def run_job(sessions: sessionmaker[Session], job_id: int, *, batch_size: int = importing.BATCH_SIZE) -> ImportJob:
    """Run a queued job to its end and return it, finished or failed.

    A bad file is recorded on the job (status "failed", ``error`` naming the file and line,
    nothing imported); nothing is raised for it, so this can run in a background thread.
    Raises NotFound only for an unknown job id. A job that is not queued is returned as it is.
    """
    job, started, slug = _mark_running(sessions, job_id)
    if not started:
        return job
    _start_progress(job)
    report = _Report()
    summary, error = _import_file(sessions, job, slug, report, batch_size)
    rows_read = _live_progress(job_id) or 0
    try:
        return _record_outcome(sessions, job, summary, error, report, rows_read)
    finally:
        _clear_progress(job_id)


def _mark_running(sessions: sessionmaker[Session], job_id: int) -> tuple[ImportJob, bool, str | None]:
    """Mark the job running if it is queued: the job, whether this call started it, and its list's slug."""
    with transaction(sessions) as session:
        started = rowcount(
            session.execute(
                update(ImportJob)
                .where(ImportJob.id == job_id, ImportJob.status == ImportStatus.QUEUED)
                .values(status=ImportStatus.RUNNING, started_at=utcnow(), rows_read=0)
                .execution_options(synchronize_session=False)
            )
        )
        job = session.get(ImportJob, job_id)
        if job is None:
            raise NotFound(f"no import job {job_id}")
        if not started:
            return job, False, None
        slug = session.scalar(select(MailingList.slug).where(MailingList.id == job.list_id))
        if slug is not None:
            _remember_slug(job.list_id, slug)
        return job, True, slug


def _import_file(
    sessions: sessionmaker[Session], job: ImportJob, slug: str | None, report: _Report, batch_size: int
) -> tuple[importing.ImportSummary | None, str | None]:
    """Import the job's file in one transaction, then delete the file: the summary, or the error to record."""
    job_id, path, filename, confirmed = job.id, Path(job.path), job.filename, job.confirmed
    summary: importing.ImportSummary | None = None
    error: str | None = None
    try:
        with transaction(sessions) as session:
            summary = importing.import_csv(
                session,
                slug or "",
                path,
                confirmed=confirmed,
                on_reject=report.add,
                on_progress=lambda rows: _set_progress(job_id, rows),
                batch_size=batch_size,
            )
    except (InvalidInput, NotFound) as exc:
        error = _first_bad_utf8(path, filename) if isinstance(exc, InvalidInput) and "UTF-8" in exc.message else None
        error = error or _name_upload(str(exc), path, filename)
    except Exception as exc:  # recorded on the job: a background thread has nobody to raise to
        log.exception("import job %s failed", job_id)
        summary = None  # the commit itself may have failed after import_csv returned: nothing was stored
        error = f"the import failed unexpectedly: {type(exc).__name__}: {exc}"
    finally:
        path.unlink(missing_ok=True)
    return summary, error


def _record_outcome(
    sessions: sessionmaker[Session],
    job: ImportJob,
    summary: importing.ImportSummary | None,
    error: str | None,
    report: _Report,
    rows_read: int,
) -> ImportJob:
    """Store how the job ended (finished with its counts and report, or failed with its error); return it."""
    job_id = job.id
    try:
        with transaction(sessions) as session:
            stored = session.get(ImportJob, job_id)
            if stored is None:  # its list was deleted meanwhile, and the job with it
                job.status, job.error = ImportStatus.FAILED, error or "the list was deleted during the import"
                return job
            job = stored
            job.finished_at = utcnow()
            job.rows_read = rows_read
            if summary is not None:
                job.status = ImportStatus.FINISHED
                job.imported, job.updated, job.unchanged = summary.imported, summary.updated, summary.unchanged
                job.kept_unsubscribed, job.rejected = summary.kept_unsubscribed, summary.rejected
                job.report_csv = report.text()
                job.error = None
            else:
                job.status = ImportStatus.FAILED
                job.imported = job.updated = job.unchanged = job.kept_unsubscribed = job.rejected = 0
                job.report_csv = ""
                job.error = error
    except Exception:  # the database went away: the job stays "running" until fail_interrupted_jobs
        log.exception("import job %s: could not record its outcome", job_id)
    return job


def _name_upload(message: str, path: Path, filename: str) -> str:
    """import_csv names the saved file; the person who uploaded it knows it by its own name."""
    return message.replace(str(path), filename)


def _first_bad_utf8(path: Path, source: str) -> str | None:
    """Where the file's first invalid UTF-8 byte is, by line (import_csv can only name the block it read)."""
    decoder = codecs.getincrementaldecoder("utf-8-sig")()
    line = 1
    try:
        with open(path, "rb") as handle:
            while True:
                chunk = handle.read(CHUNK)
                try:
                    decoder.decode(chunk, final=not chunk)
                except UnicodeDecodeError as exc:
                    before = exc.object[: exc.start]
                    line += before.count(b"\n")
                    column = len(before) - (before.rfind(b"\n") + 1) + 1
                    return f"{source}:{line}: not valid UTF-8 ({exc.reason} at byte {column} of the line)"
                if not chunk:
                    return None
                line += chunk.count(b"\n")
    except OSError:
        return None


class _Report:
    """The rejected rows as CSV ("line,reason"), at most REPORT_LIMIT of them, then a count of the rest.
    A reason quotes the row's own text: its cells are made safe to open (subscribers.csv_cells)."""

    def __init__(self) -> None:
        self.buffer = io.StringIO()
        self.writer = csv_cells.writer(self.buffer)
        self.writer.writerow(["line", "reason"])
        self.listed = 0
        self.more = 0

    def add(self, row: importing.RejectedRow) -> None:
        if self.listed < REPORT_LIMIT:
            self.writer.writerow([row.line, row.reason])
            self.listed += 1
        else:
            self.more += 1

    def text(self) -> str:
        if not self.listed:
            return ""
        if self.more:
            self.writer.writerow(["", f"... and {self.more} more rejected rows, not listed"])
        return self.buffer.getvalue()


def job_progress(job: ImportJob, *, list_slug: str | None = None) -> dict[str, Any]:
    """A JSON-ready view of the job; rows_read is the live figure while it runs in this process.

    ``list`` is the list's slug: pass ``list_slug`` when you have it, else it is read from
    the job's session (the job must then still be attached to one).
    """
    rows_read = job.rows_read
    if job.status == ImportStatus.RUNNING:
        live = _live_progress(job.id)
        if live is not None:
            rows_read = live
    if list_slug is None:
        list_slug = _slug_of(job)
    return {
        "id": job.id,
        "list": list_slug,
        "filename": job.filename,
        "status": job.status,
        "confirmed": job.confirmed,
        "size_bytes": job.size_bytes,
        "rows_read": rows_read,
        "imported": job.imported,
        "updated": job.updated,
        "unchanged": job.unchanged,
        "kept_unsubscribed": job.kept_unsubscribed,
        "rejected": job.rejected,
        "error": job.error,
        "created_by": job.created_by,
        "created_at": _iso(job.created_at),
        "started_at": _iso(job.started_at),
        "finished_at": _iso(job.finished_at),
        "has_report": bool(job.report_csv),
    }


_slugs: dict[int, str] = {}  # list id -> slug, filled as jobs are read (slugs never change)
_slugs_lock = threading.Lock()


def _remember_slug(list_id: int, slug: str) -> None:
    with _slugs_lock:
        _slugs[list_id] = slug


def _slug_of(job: ImportJob) -> str | None:
    with _slugs_lock:
        slug = _slugs.get(job.list_id)
    if slug is not None:
        return slug
    from sqlalchemy.orm import object_session

    session = object_session(job)
    if session is None:
        return None
    slug = session.scalar(select(MailingList.slug).where(MailingList.id == job.list_id))
    if slug is not None:
        _remember_slug(job.list_id, slug)
    return slug


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def get_job(session: Session, job_id: int) -> ImportJob:
    """The job; raises NotFound.

    A job running in this process is answered from memory without a query: on SQLite the
    import holds the database's write lock, and every transaction here begins IMMEDIATE,
    so a query would wait for the whole import to end.
    """
    live = running_job(job_id)
    if live is not None:
        return live
    row = session.execute(
        select(ImportJob, MailingList.slug)
        .join(MailingList, MailingList.id == ImportJob.list_id)
        .where(ImportJob.id == job_id)
    ).first()
    if row is None:
        raise NotFound(f"no import job {job_id}")
    job, slug = row
    _remember_slug(job.list_id, slug)
    return job


def recent_jobs(session: Session, limit: int = 20) -> list[ImportJob]:
    """The newest jobs first."""
    rows = session.execute(
        select(ImportJob, MailingList.slug)
        .join(MailingList, MailingList.id == ImportJob.list_id)
        .order_by(ImportJob.id.desc())
        .limit(max(1, min(int(limit), 500)))
    ).all()
    for job, slug in rows:
        _remember_slug(job.list_id, slug)
    return [job for job, _ in rows]


def report_csv(session: Session, job_id: int) -> str:
    """The rejected-rows report ("line,reason" CSV; empty when no row was rejected). Raises NotFound."""
    if running_job(job_id) is not None:
        return ""  # not written until the job ends (and no query: see get_job)
    report = session.scalar(select(ImportJob.report_csv).where(ImportJob.id == job_id))
    if report is None:
        raise NotFound(f"no import job {job_id}")
    return report


def fail_interrupted_jobs(session: Session) -> int:
    """Mark failed the jobs a stopped process left queued or running, delete their files; return how many.

    Call it once at startup, before this process runs any job. With several web processes
    sharing a database, only call it when none of them is running an import.
    """
    jobs = session.scalars(
        select(ImportJob).where(ImportJob.status.in_((ImportStatus.QUEUED, ImportStatus.RUNNING)))
    ).all()
    now = utcnow()
    for job in jobs:
        if _live_progress(job.id) is not None:
            continue  # running in this very process
        job.status = ImportStatus.FAILED
        job.error = INTERRUPTED
        job.finished_at = now
        Path(job.path).unlink(missing_ok=True)
    session.flush()
    return sum(1 for job in jobs if job.status == ImportStatus.FAILED)
