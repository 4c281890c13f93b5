"""Background CSV import jobs: upload, header check, run, progress, report; SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import io
import threading
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from newsletter.errors import InvalidInput, NotFound
from newsletter.store.db import transaction
from newsletter.store.models import ImportJob, Subscriber, Subscription
from newsletter.store.states import ImportStatus
from subscribers import import_jobs, importing, lists, subscriptions


def make_list(sessions: sessionmaker[Session]) -> None:
    with transaction(sessions) as session:
        lists.create_list(session, "weekly", name="Weekly", from_email="news@example.org")


def upload(sessions, var_dir: Path, content: bytes, filename: str = "people.csv", **kwargs) -> int:
    with transaction(sessions) as session:
        job = import_jobs.create_job(session, "weekly", filename, io.BytesIO(content), var_dir=var_dir, **kwargs)
        return job.id


def uploads(var_dir: Path) -> list[Path]:
    folder = var_dir / "imports"
    return sorted(folder.iterdir()) if folder.exists() else []


def subscriber_count(sessions: sessionmaker[Session]) -> int:
    with sessions() as session:
        return session.execute(select(func.count()).select_from(Subscriber)).scalar_one()


def view(sessions: sessionmaker[Session], job_id: int) -> dict:
    with sessions() as session:
        return import_jobs.job_progress(import_jobs.get_job(session, job_id))


def test_good_file_finishes_with_counts_and_a_report_naming_lines(sessions, tmp_path):
    make_list(sessions)
    with transaction(sessions) as session:
        subscriptions.add_subscriber(session, "weekly", "old@example.com", name="Old")
        subscriptions.unsubscribe(session, "weekly", "old@example.com", reason="left")
    content = (
        b"email,name,city\n"
        b"ann@example.com,Ann,Paris\n"
        b"not-an-address,Bob,Rome\n"
        b"cat@example.net,Cat\n"
        b"ANN@example.com,Ann again,Lyon\n"
        b"old@example.com,Old,\n"
        b'dan@example.org,"Dan, ""the man""",Oslo\n'
    )
    job_id = upload(
        sessions, tmp_path, content, filename="C:\\fakepath\\people.csv", confirmed=True, created_by="alice"
    )
    queued = view(sessions, job_id)
    assert (queued["status"], queued["list"], queued["filename"], queued["size_bytes"]) == (
        "queued",
        "weekly",
        "people.csv",
        len(content),
    )
    assert len(uploads(tmp_path)) == 1

    job = import_jobs.run_job(sessions, job_id)
    assert job.status == "finished"
    done = view(sessions, job_id)
    assert {k: done[k] for k in ("imported", "updated", "unchanged", "kept_unsubscribed", "rejected", "rows_read")} == {
        "imported": 2,
        "updated": 0,
        "unchanged": 0,
        "kept_unsubscribed": 1,
        "rejected": 3,
        "rows_read": 6,
    }
    assert (done["error"], done["has_report"], done["created_by"]) == (None, True, "alice")
    assert done["started_at"] and done["finished_at"] and done["created_at"]
    with sessions() as session:
        report = list(csv.reader(io.StringIO(import_jobs.report_csv(session, job_id))))
        statuses = dict(
            session.execute(
                select(Subscriber.email, Subscription.status).join(
                    Subscription, Subscription.subscriber_id == Subscriber.id
                )
            ).all()
        )
    assert report[0] == ["line", "reason"]
    assert [row[0] for row in report[1:]] == ["3", "4", "5"]
    assert "not-an-address" in report[1][1] and "fields" in report[2][1] and "duplicate of line 2" in report[3][1]
    assert statuses == {
        "ann@example.com": "confirmed",
        "dan@example.org": "confirmed",
        "old@example.com": "unsubscribed",
    }
    assert uploads(tmp_path) == []  # the upload is deleted once imported
    assert import_jobs.run_job(sessions, job_id).status == "finished"  # not run twice


def test_header_problems_fail_at_upload_naming_line_1(sessions, tmp_path):
    make_list(sessions)
    cases = {
        b"name,city\nann@example.com,Paris\n": "no 'email' column",
        b"": "empty",
        b"\xef\xbb\xbf": "empty",
        b"em\xffail,name\nann@example.com,Ann\n": "UTF-8",
        b"email,Email\nann@example.com,x\n": "more than once",
    }
    for content, message in cases.items():
        with pytest.raises(InvalidInput) as error, transaction(sessions) as session:
            import_jobs.create_job(session, "weekly", "bad.csv", io.BytesIO(content), var_dir=tmp_path)
        assert error.value.where == "bad.csv:1" and message in error.value.message, content
    with pytest.raises(NotFound), transaction(sessions) as session:
        import_jobs.create_job(session, "monthly", "a.csv", io.BytesIO(b"email\n"), var_dir=tmp_path)
    assert uploads(tmp_path) == []
    with sessions() as session:
        assert import_jobs.recent_jobs(session) == []


def test_too_large_upload_is_refused_and_not_kept(sessions, tmp_path):
    make_list(sessions)
    content = b"email\n" + b"".join(f"p{i}@example.com\n".encode() for i in range(1000))
    with pytest.raises(InvalidInput) as error, transaction(sessions) as session:
        import_jobs.create_job(session, "weekly", "big.csv", io.BytesIO(content), var_dir=tmp_path, max_bytes=10_000)
    assert error.value.where == "big.csv" and "limit" in error.value.message
    assert uploads(tmp_path) == []
    job_id = upload(sessions, tmp_path, content, max_bytes=len(content))  # exactly at the limit is fine
    assert view(sessions, job_id)["size_bytes"] == len(content)


def test_bad_bytes_on_a_later_line_fail_the_run_and_import_nothing(sessions, tmp_path):
    make_list(sessions)
    good = "".join(f"p{i}@example.com,P{i}\n" for i in range(5000)).encode()
    content = b"email,name\n" + good + b"bad\xff@example.com,X\n" + b"last@example.com,Last\n"
    job_id = upload(sessions, tmp_path, content, filename="later.csv")  # the header is fine
    job = import_jobs.run_job(sessions, job_id, batch_size=1000)
    assert job.status == "failed" and job.error is not None
    assert job.error.startswith("later.csv:") and "UTF-8" in job.error
    assert str(tmp_path) not in job.error  # names the upload, not where it was saved
    done = view(sessions, job_id)
    assert (done["imported"], done["rejected"], done["has_report"], done["status"]) == (0, 0, False, "failed")
    assert subscriber_count(sessions) == 0
    assert uploads(tmp_path) == []


def test_header_check_reads_only_the_header(sessions, tmp_path):
    make_list(sessions)
    # The bad byte is in the first block read, but on line 3: the upload is accepted and the run names line 3.
    job_id = upload(sessions, tmp_path, b"email\nann@example.com\nb\xffb@example.com\n", filename="x.csv")
    job = import_jobs.run_job(sessions, job_id)
    assert (job.status, (job.error or "").split(" ")[0]) == ("failed", "x.csv:3:")


def test_progress_is_readable_while_a_background_thread_runs_the_job(sessions, tmp_path, monkeypatch):
    make_list(sessions)
    rows = 20_000
    content = b"email,name\n" + b"".join(f"user{i}@example.com,User {i}\n".encode() for i in range(rows))
    job_id = upload(sessions, tmp_path, content)

    # Hold the import after its second batch so the reader sees it mid-way, deterministically.
    batches = 0
    held = threading.Event()
    release = threading.Event()
    real_write = importing._stage_batch

    def write_then_hold(*args, **kwargs):
        nonlocal batches
        real_write(*args, **kwargs)
        batches += 1
        if batches == 2:
            held.set()
            release.wait(120)

    monkeypatch.setattr(importing, "_stage_batch", write_then_hold)
    finished: list[ImportJob] = []
    thread = threading.Thread(target=lambda: finished.append(import_jobs.run_job(sessions, job_id, batch_size=1000)))
    thread.start()
    try:
        assert held.wait(120)
        # Read from another session while the import holds its transaction open.
        mid = view(sessions, job_id)
    finally:
        release.set()
        thread.join(120)
    # The hold is after the batch is written but before on_progress reports it.
    assert (mid["status"], mid["rows_read"], mid["imported"]) == ("running", 1000, 0)
    assert finished and finished[0].status == "finished"
    done = view(sessions, job_id)
    assert (done["status"], done["rows_read"], done["imported"], done["has_report"]) == ("finished", rows, rows, False)
    assert subscriber_count(sessions) == rows
    with sessions() as session:
        assert import_jobs.report_csv(session, job_id) == ""


def test_report_is_capped(sessions, tmp_path, monkeypatch):
    make_list(sessions)
    monkeypatch.setattr(import_jobs, "REPORT_LIMIT", 3)
    content = b"email\n" + b"".join(f"bad{i}\n".encode() for i in range(10)) + b"ok@example.com\n"
    job = import_jobs.run_job(sessions, upload(sessions, tmp_path, content))
    assert (job.status, job.rejected, job.imported) == ("finished", 10, 1)
    report = list(csv.reader(io.StringIO(job.report_csv)))
    assert [r[0] for r in report] == ["line", "2", "3", "4", ""]
    assert "7 more" in report[-1][1]


def test_fail_interrupted_jobs(sessions, tmp_path):
    make_list(sessions)
    queued = upload(sessions, tmp_path, b"email\nann@example.com\n")
    running = upload(sessions, tmp_path, b"email\nbob@example.com\n")
    done = upload(sessions, tmp_path, b"email\ncat@example.com\n")
    import_jobs.run_job(sessions, done)
    with transaction(sessions) as session:
        running_job = session.get(ImportJob, running)
        assert running_job is not None
        running_job.status = ImportStatus.RUNNING
    with transaction(sessions) as session:
        assert import_jobs.fail_interrupted_jobs(session) == 2
    with sessions() as session:
        jobs = {job.id: job for job in import_jobs.recent_jobs(session)}
        assert list(jobs) == [done, running, queued]  # newest first
        assert [jobs[i].status for i in (queued, running, done)] == ["failed", "failed", "finished"]
        assert "interrupted" in (jobs[queued].error or "") and "upload the file again" in (jobs[running].error or "")
        assert import_jobs.fail_interrupted_jobs(session) == 0
    assert uploads(tmp_path) == []
    assert import_jobs.run_job(sessions, queued).status == "failed"  # a failed job is not run
    assert subscriber_count(sessions) == 1


def test_unknown_job(sessions):
    with sessions() as session:
        with pytest.raises(NotFound):
            import_jobs.get_job(session, 42)
        with pytest.raises(NotFound):
            import_jobs.report_csv(session, 42)
    with pytest.raises(NotFound):
        import_jobs.run_job(sessions, 42)
