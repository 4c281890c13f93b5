"""CSV import edge cases, on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from newsletter.errors import InvalidInput, NotFound
from newsletter.store.db import transaction
from newsletter.store.models import Subscriber, Subscription
from subscribers import importing, lists, subscriptions
from subscribers.importing import ImportSummary, RejectedRow


def make_list(sessions: sessionmaker[Session], slug: str = "weekly") -> None:
    with transaction(sessions) as session:
        lists.create_list(session, slug, name="Weekly", from_email="news@example.org")


def run_import(
    sessions: sessionmaker[Session],
    path: Path,
    *,
    confirmed: bool = False,
    batch_size: int = 2000,
    slug: str = "weekly",
) -> tuple[ImportSummary, list[RejectedRow]]:
    rejected: list[RejectedRow] = []
    with transaction(sessions) as session:
        summary = importing.import_csv(
            session, slug, path, confirmed=confirmed, on_reject=rejected.append, batch_size=batch_size
        )
    return summary, rejected


def counts(sessions: sessionmaker[Session]) -> tuple[int, int]:
    with sessions() as session:
        subscribers = session.execute(select(func.count()).select_from(Subscriber)).scalar_one()
        subscriptions = session.execute(select(func.count()).select_from(Subscription)).scalar_one()
        return subscribers, subscriptions


def people(sessions: sessionmaker[Session]) -> dict[str, tuple[str, dict, str]]:
    with sessions() as session:
        rows = session.execute(
            select(Subscriber.email, Subscriber.name, Subscriber.attributes, Subscription.status).join(
                Subscription, Subscription.subscriber_id == Subscriber.id
            )
        ).all()
    return {email: (name, attrs, status) for email, name, attrs, status in rows}


def write(tmp_path: Path, content: str | bytes, name: str = "in.csv") -> Path:
    path = tmp_path / name
    if isinstance(content, str):
        path.write_text(content, encoding="utf-8", newline="")
    else:
        path.write_bytes(content)
    return path


def test_bom_crlf_quotes_any_case_header_and_attributes(sessions, tmp_path):
    make_list(sessions)
    content = (
        "\ufeffNote,EMAIL,Name,City\r\n"
        'x,Ann@Example.COM,"Smith, Ann",Zürich\r\n'
        '"two\nlines",bob@example.org,"Bob ""The Builder""",Kraków\r\n'
        "z,  chloé@exämple.net  ,Chloé,\r\n"
    )
    summary, rejected = run_import(sessions, write(tmp_path, content), confirmed=True)
    assert rejected == []
    assert (summary.imported, summary.updated, summary.unchanged, summary.rejected) == (3, 0, 0, 0)
    found = people(sessions)
    assert found["ann@example.com"] == ("Smith, Ann", {"Note": "x", "City": "Zürich"}, "confirmed")
    assert found["bob@example.org"] == ('Bob "The Builder"', {"Note": "two\nlines", "City": "Kraków"}, "confirmed")
    assert found["chloé@exämple.net"] == ("Chloé", {"Note": "z"}, "confirmed")  # empty values are not stored


def test_name_with_line_break_is_rejected_with_its_line(sessions, tmp_path):
    make_list(sessions)
    content = 'email,name\nann@example.com,Ann\nbob@example.org,"Bob\nJones"\ncat@example.org,Cat\n'
    summary, rejected = run_import(sessions, write(tmp_path, content))
    assert [(r.line, "control character" in r.reason) for r in rejected] == [(3, True)]
    assert summary.imported == 2
    assert set(people(sessions)) == {"ann@example.com", "cat@example.org"}


def test_lf_without_bom_and_unconfirmed_by_default(sessions, tmp_path):
    make_list(sessions)
    summary, _ = run_import(sessions, write(tmp_path, "email\nann@example.com\n"))
    assert summary.imported == 1
    assert people(sessions)["ann@example.com"][2] == "unconfirmed"


def test_invalid_rows_are_reported_with_line_numbers_and_the_rest_imported(sessions, tmp_path):
    make_list(sessions)
    content = (
        "email,name\n"
        "good@example.com,Good\n"
        "not-an-address,Bad\n"
        "\n"  # blank line: skipped, not an error
        ",No address\n"
        "two@@example.com,Bad\n"
        "extra@example.com,Too,Many\n"
        "last@example.com,Last\n"
    )
    summary, rejected = run_import(sessions, write(tmp_path, content))
    assert [r.line for r in rejected] == [3, 5, 6, 7]
    assert "not-an-address" in rejected[0].reason
    assert "empty" in rejected[1].reason
    assert "3 fields" in rejected[3].reason
    assert (summary.imported, summary.rejected) == (2, 4)
    assert set(people(sessions)) == {"good@example.com", "last@example.com"}


def test_duplicates_within_the_file_keep_the_first_even_across_batches(sessions, tmp_path):
    make_list(sessions)
    rows = [f"user{i}@example.com,User {i}" for i in range(10)]
    rows.insert(3, "USER1@example.com,Second One")  # same batch as the first
    rows.append("user2@EXAMPLE.com,Second Two")  # a later batch
    summary, rejected = run_import(sessions, write(tmp_path, "email,name\n" + "\n".join(rows) + "\n"), batch_size=4)
    assert summary.imported == 10
    assert [(r.line, r.reason.split(" (")[0]) for r in rejected] == [
        (5, "duplicate of line 3"),
        (13, "duplicate of line 4"),
    ]
    found = people(sessions)
    assert found["user1@example.com"][0] == "User 1"
    assert found["user2@example.com"][0] == "User 2"


def test_reimporting_the_same_file_changes_nothing(sessions, tmp_path):
    make_list(sessions)
    path = write(tmp_path, "email,name,plan\nann@example.com,Ann,free\nbob@example.com,Bob,patron\n")
    run_import(sessions, path, confirmed=True)
    before = people(sessions), counts(sessions)
    summary, rejected = run_import(sessions, path, confirmed=True)
    assert (summary.imported, summary.updated, summary.unchanged, rejected) == (0, 0, 2, [])
    assert (people(sessions), counts(sessions)) == before


def test_reimport_updates_changed_names_and_attributes_and_confirms(sessions, tmp_path):
    make_list(sessions)
    run_import(sessions, write(tmp_path, "email,name,plan\nann@example.com,Ann,free\nbob@example.com,Bob,free\n"))
    summary, _ = run_import(
        sessions,
        write(tmp_path, "email,name,city\nann@example.com,Ann Lee,Oslo\nbob@example.com,,\n", "b.csv"),
        confirmed=True,
    )
    assert (summary.imported, summary.updated, summary.unchanged) == (0, 2, 0)
    found = people(sessions)
    assert found["ann@example.com"] == ("Ann Lee", {"plan": "free", "city": "Oslo"}, "confirmed")
    assert found["bob@example.com"] == ("Bob", {"plan": "free"}, "confirmed")  # a blank name keeps the old one


def test_import_never_resubscribes_someone_who_left(sessions, tmp_path):
    make_list(sessions)
    path = write(tmp_path, "email\nann@example.com\n")
    run_import(sessions, path, confirmed=True)
    with transaction(sessions) as session:
        subscriptions.unsubscribe(session, "weekly", "ann@example.com", reason="test")
    summary, _ = run_import(sessions, path, confirmed=True)
    assert (summary.imported, summary.kept_unsubscribed) == (0, 1)
    assert people(sessions)["ann@example.com"][2] == "unsubscribed"


def test_same_subscriber_on_two_lists(sessions, tmp_path):
    make_list(sessions, "weekly")
    make_list(sessions, "daily")
    path = write(tmp_path, "email\nann@example.com\n")
    run_import(sessions, path, slug="weekly")
    summary, _ = run_import(sessions, path, slug="daily")
    assert summary.imported == 1
    assert counts(sessions) == (1, 2)


def test_export_columns_are_not_imported_as_attributes(sessions, tmp_path):
    make_list(sessions)
    content = "email,name,status,source,subscribed_at,confirmed_at,unsubscribed_at,plan\na@example.com,A,unsubscribed,form,,,,free\n"
    run_import(sessions, write(tmp_path, content), confirmed=True)
    assert people(sessions)["a@example.com"] == ("A", {"plan": "free"}, "confirmed")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "the file is empty"),
        (b"name,city\nAnn,Oslo\n", "no 'email' column"),
        (b"email,Email\nann@example.com,x\n", "appears more than once"),
    ],
)
def test_bad_header_imports_nothing_and_names_file_and_problem(sessions, tmp_path, content, message):
    make_list(sessions)
    path = write(tmp_path, content)
    with pytest.raises(InvalidInput) as caught:
        run_import(sessions, path)
    assert message in str(caught.value)
    assert str(path) in str(caught.value)
    assert counts(sessions) == (0, 0)


def test_invalid_utf8_late_in_the_file_rolls_back_everything(sessions, tmp_path):
    make_list(sessions)
    good = "".join(f"user{i}@example.com,User {i}\n" for i in range(5000)).encode()
    path = write(tmp_path, b"email,name\n" + good + b"bad@example.com,\xff\xfe broken\n")
    with transaction(sessions) as session:
        subscriptions.add_subscriber(session, "weekly", "kept@example.com", confirmed=True)
    with pytest.raises(InvalidInput) as caught:
        run_import(sessions, path, batch_size=500)
    assert "not valid UTF-8" in str(caught.value)
    assert str(path) in str(caught.value)
    # Batches already written were undone; what was stored before is intact.
    assert counts(sessions) == (1, 1)
    assert people(sessions)["kept@example.com"][2] == "confirmed"


def test_unreadable_file_and_unknown_list(sessions, tmp_path):
    make_list(sessions)
    with pytest.raises(InvalidInput, match="cannot read the file"):
        run_import(sessions, tmp_path / "missing.csv")
    with pytest.raises(NotFound, match="no list 'nope'"):
        run_import(sessions, write(tmp_path, "email\na@example.com\n"), slug="nope")


def test_a_thousand_rows_in_small_batches_all_arrive(sessions, tmp_path):
    make_list(sessions)
    body = "".join(f"Reader.{i}@Example.com,Reader {i}\n" for i in range(1000))
    summary, rejected = run_import(sessions, write(tmp_path, "email,name\n" + body), batch_size=128, confirmed=True)
    assert (summary.imported, rejected) == (1000, [])
    assert counts(sessions) == (1000, 1000)
    assert "reader.999@example.com" in people(sessions)
