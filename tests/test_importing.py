"""CSV import edge cases, on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from newsletter.errors import InvalidInput, NotFound
from newsletter.store.db import transaction
from newsletter.store.models import Subscriber, Subscription
from subscribers import importing, lists, subscriptions, suppressions
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
        (b"email,ci\x00ty\nann@example.com,x\n", "NUL character"),
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
    # The line itself (header, 5,000 rows, then the bad one), not where the decoder's read-ahead was.
    assert f"{path}:5002: not valid UTF-8 (invalid start byte at character 17 of the line)" in str(caught.value)
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


# --- at scale: staging table and set-based merge -------------------------------------------------------


def subscriber_rows(sessions: sessionmaker[Session]) -> dict[str, tuple[str, dict]]:
    with sessions() as session:
        rows = session.execute(select(Subscriber.email, Subscriber.name, Subscriber.attributes)).all()
    return {email: (name, attrs) for email, name, attrs in rows}


@pytest.mark.parametrize(
    ("rows", "line", "problem"),
    [
        # An open quote used to swallow the next row into this one's name, silently.
        ('ann@example.com,Ann\nq1@example.com,"Quinn\nq2@example.com,Bea\n', 3, "is never closed"),
        ('ann@example.com,Ann\nq1@example.com,"Quinn" Lee\nq2@example.com,Bea\n', 3, "text after the closing"),
    ],
)
def test_a_quote_left_open_or_misplaced_names_its_line_and_stores_nothing(sessions, tmp_path, rows, line, problem):
    make_list(sessions)
    path = write(tmp_path, "email,name\n" + rows)
    with pytest.raises(InvalidInput) as caught:
        run_import(sessions, path)
    assert caught.value.where == f"{path}:{line}" and problem in caught.value.message, caught.value
    assert counts(sessions) == (0, 0)


def test_an_unreadable_row_at_the_end_of_a_large_file_stores_nothing(sessions, tmp_path):
    make_list(sessions)
    with transaction(sessions) as session:
        subscriptions.add_subscriber(session, "weekly", "user7@example.com", name="Kept Name", confirmed=False)
    good = "".join(f"user{i}@example.com,User {i}\n" for i in range(30_000))
    # The last row's second cell is longer than the csv module reads (2 MB): the file cannot be read.
    path = write(tmp_path, "email,name\n" + good + "last@example.com," + "x" * 2_200_000 + "\n")
    with pytest.raises(InvalidInput) as caught:
        run_import(sessions, path, batch_size=1000)
    assert "unreadable CSV: a field longer than 2,097,151 characters (is a quote left open?)" in caught.value.message
    assert caught.value.where == f"{path}:30002"
    # Nothing of the 30,000 good rows is stored; what was there before is as it was.
    assert counts(sessions) == (1, 1)
    assert people(sessions)["user7@example.com"] == ("Kept Name", {}, "unconfirmed")
    # The same file without its broken row imports in full.
    fixed = write(tmp_path, "email,name\n" + good, "fixed.csv")
    summary, rejected = run_import(sessions, fixed, batch_size=1000, confirmed=True)
    assert (summary.imported, summary.updated, summary.unchanged, rejected) == (29_999, 1, 0, [])
    assert counts(sessions) == (30_000, 30_000)


def test_rejected_rows_name_their_line_and_column(sessions, tmp_path):
    make_list(sessions)
    content = (
        "EMAIL,Name,City\n"
        "ann@example.com,Ann,Oslo\n"  # 2
        "broken,Bob,Rome\n"  # 3: the address
        '"cat@example.com","Cat\nWrapped",Lima\n'  # 4-5: the name (a line break in it)
        "dan@example.com,Dan\n"  # 6: two fields of three
        "ANN@example.com,Ann Again,Oslo\n"  # 7: a duplicate of line 2
        "eve@example.com,Eve,Na\x00ples\n"  # 8: a NUL byte in an attribute
        '"fay@example.com","Fay\nSmith",\n'  # 9-10
        "gus@example.com,Gus,Kyiv\n"  # 11: after the wrapped line, its true line number
    )
    path = write(tmp_path, content)
    summary, rejected = run_import(sessions, path)
    assert [(r.line, r.field) for r in rejected] == [
        (3, "EMAIL"),
        (4, "Name"),
        (6, None),
        (7, "EMAIL"),
        (8, "City"),
        (9, "Name"),
    ]
    reasons = [r.reason for r in rejected]
    assert reasons[0].startswith("invalid email address 'broken'")
    assert "control character" in reasons[1]
    assert reasons[2] == "has 2 fields, the header has 3"
    assert reasons[3] == "duplicate of line 2 (ann@example.com); the first one is kept"
    assert "NUL" in reasons[4] and "'City'" in reasons[4]
    assert (summary.imported, summary.rejected) == (2, 6)
    assert set(people(sessions)) == {"ann@example.com", "gus@example.com"}


def test_the_command_line_names_file_line_and_problem(cli_any_db, tmp_path):
    cli_any_db("lists", "create", "weekly", "--name", "Weekly", "--from-email", "news@example.org")
    path = write(tmp_path, "email,name\nann@example.com,Ann\nnot an address,Bob\nann@example.com,Ann 2\n")
    result = cli_any_db("subscribers", "import", "weekly", str(path))
    assert "Imported 1, updated 0, unchanged 0, rejected 2" in result.stdout
    lines = result.stderr.splitlines()
    assert lines[0].startswith(f"{path}:3: rejected: invalid email address 'not an address'")
    assert lines[1] == f"{path}:4: rejected: duplicate of line 2 (ann@example.com); the first one is kept"
    bad = write(tmp_path, b"email\nann@example.com\nb\xffb@example.com\n", "bad.csv")
    failed = cli_any_db("subscribers", "import", "weekly", str(bad), check=False)
    assert failed.returncode != 0 and str(bad) in failed.stderr and "UTF-8" in failed.stderr


def test_duplicates_keep_the_first_valid_row_across_many_batches(sessions, tmp_path):
    make_list(sessions)
    rows = [f"p{i}@example.com,P{i}" for i in range(3000)]
    rows[10] = "p5@example.com,Again"  # line 12 repeats line 7
    rows.append("P2999@Example.COM,Last again")  # line 3002 repeats line 3001
    rows.append("p0@example.com,First again")  # line 3003 repeats line 2
    summary, rejected = run_import(sessions, write(tmp_path, "email,name\n" + "\n".join(rows) + "\n"), batch_size=100)
    assert [(r.line, r.reason.split(" (")[0], r.field) for r in rejected] == [
        (12, "duplicate of line 7", "email"),
        (3002, "duplicate of line 3001", "email"),
        (3003, "duplicate of line 2", "email"),
    ]
    assert (summary.imported, summary.rejected) == (2999, 3)
    found = subscriber_rows(sessions)
    assert found["p5@example.com"][0] == "P5" and found["p2999@example.com"][0] == "P2999"
    assert found["p0@example.com"][0] == "P0"


def test_reimport_into_existing_subscribers_of_every_kind(sessions, tmp_path):
    make_list(sessions, "weekly")
    make_list(sessions, "daily")
    with transaction(sessions) as session:
        add = subscriptions.add_subscriber
        add(session, "weekly", "same@example.com", name="Same", confirmed=True)
        add(session, "weekly", "renamed@example.com", name="Old Name", confirmed=True)
        add(session, "weekly", "pending@example.com", name="Pending")
        add(session, "weekly", "gone@example.com", name="Gone", confirmed=True)
        subscriptions.unsubscribe(session, "weekly", "gone@example.com", reason="left")
        add(session, "daily", "elsewhere@example.com", name="Elsewhere", confirmed=True)
        add(session, "weekly", "typed@example.com", name="Typed")
        for email, attributes in (("same", {"plan": "free"}), ("typed", {"age": 30, "plan": "free"})):
            stored = session.scalars(select(Subscriber).where(Subscriber.email == f"{email}@example.com")).one()
            stored.attributes = attributes
    content = (
        "email,name,plan,age\n"
        "same@example.com,,free,\n"  # nothing new: unchanged
        "renamed@example.com,New Name,,\n"  # a new name: updated
        "pending@example.com,,,\n"  # unconfirmed, and the import confirms: updated
        "gone@example.com,Gone Again,patron,\n"  # left the list: stays out, but the subscriber is updated
        "elsewhere@example.com,,,\n"  # on another list only: imported here
        "typed@example.com,,free,30\n"  # the stored 30 is a number, the file's a string: updated
        "new@example.com,New,free,\n"  # imported
    )
    summary, rejected = run_import(sessions, write(tmp_path, content), confirmed=True)
    assert rejected == []
    assert (summary.imported, summary.updated, summary.unchanged, summary.kept_unsubscribed) == (2, 3, 1, 1)
    found = people(sessions)
    assert found["same@example.com"] == ("Same", {"plan": "free"}, "confirmed")
    assert found["renamed@example.com"] == ("New Name", {}, "confirmed")
    assert found["pending@example.com"] == ("Pending", {}, "confirmed")
    assert found["gone@example.com"] == ("Gone Again", {"plan": "patron"}, "unsubscribed")
    assert found["typed@example.com"] == ("Typed", {"age": "30", "plan": "free"}, "confirmed")
    assert found["new@example.com"] == ("New", {"plan": "free"}, "confirmed")
    with sessions() as session:
        on_lists = session.execute(
            select(Subscriber.email, func.count())
            .join(Subscription, Subscription.subscriber_id == Subscriber.id)
            .group_by(Subscriber.email)
        ).all()
    assert dict(on_lists)["elsewhere@example.com"] == 2
    assert counts(sessions) == (7, 8)
    # And again: now everything is as the file says.
    again, _ = run_import(sessions, write(tmp_path, content, "again.csv"), confirmed=True)
    assert (again.imported, again.updated, again.unchanged, again.kept_unsubscribed) == (0, 0, 6, 1)


def test_a_suppressed_address_is_imported_and_stays_suppressed(sessions, tmp_path):
    # An import does not look at suppressions (as before): the address joins the list, and the
    # suppression, which every send checks, stays in place.
    make_list(sessions)
    with transaction(sessions) as session:
        suppressions.suppress(session, "Blocked@Example.com", reason="complaint")
    summary, rejected = run_import(
        sessions, write(tmp_path, "email,name\nblocked@example.com,Blocked\nfree@example.com,Free\n"), confirmed=True
    )
    assert (summary.imported, rejected) == (2, [])
    assert people(sessions)["blocked@example.com"] == ("Blocked", {}, "confirmed")
    with sessions() as session:
        assert suppressions.is_suppressed(session, "blocked@example.com")
        assert [s.email for s in suppressions.all_suppressions(session)] == ["blocked@example.com"]


def test_progress_is_reported_per_batch_and_at_the_end(sessions, tmp_path):
    make_list(sessions)
    body = "".join(f"p{i}@example.com\n" for i in range(2500)) + "\n\nbad\n"
    seen: list[int] = []
    with transaction(sessions) as session:
        importing.import_csv(
            session, "weekly", write(tmp_path, "email\n" + body), batch_size=1000, on_progress=seen.append
        )
    assert seen == [1000, 2000, 2501]  # blank lines are not rows; the rejected one is


HARD_ADDRESSES = [
    "ann@example.com",
    "Ann.Lee+news@Example.COM",
    "  padded@example.org  ",
    "o'brien@example.ie",
    "a!#$%&'*+-/=?^_`{|}~z@example.com",
    "Info@Example.com",  # a role name email-validator lower-cases itself
    "x@sub.domain.example.co.uk",
    "x@xn--exmple-cua.net",  # Punycode: normalised to its Unicode form
    "x@XN--EXMPLE-CUA.NET",
    "x@xn--a.com",  # not valid Punycode
    "x@exämple.net",
    "chloé@example.net",
    "x@localhost",
    "x@example",
    "x@example.local",
    "x@example.test",
    "x@example.123",
    "x@-example.com",
    "x@example-.com",
    "x@ab--cd.com",
    "x@example..com",
    "x@.example.com",
    "x@example.com.",
    ".x@example.com",
    "x.@example.com",
    "x..y@example.com",
    "x@@example.com",
    "x@",
    "@example.com",
    "x",
    "",
    "   ",
    "x y@example.com",
    '"quoted"@example.com',
    "Ann <ann@example.com>",
    "x@[192.0.2.1]",
    "l" * 64 + "@example.com",
    "l" * 65 + "@example.com",
    "x@" + "d" * 63 + ".com",
    "x@" + "d" * 64 + ".com",
    "x@" + ".".join(["d" * 60] * 4) + ".com",  # the domain too long
    "l" * 200 + "@" + "d" * 49 + ".com",  # 254 characters: the longest allowed
    "l" * 200 + "@" + "d" * 50 + ".com",  # 255: one too many
    "l" * 200 + "@xn--exmple-cua" + "d" * 35 + ".net",
    "x@example.com\u0301",
    "x\u0301@example.com",
    "x＠example.com",
]


@pytest.mark.parametrize("raw", HARD_ADDRESSES)
def test_the_fast_address_check_answers_as_normalise_email_does(raw):
    from subscribers.addresses import normalise_email

    def answer(check) -> tuple[str, str]:
        try:
            return "ok", check(raw)
        except InvalidInput as exc:
            return "error", exc.message

    fast = importing._Checks()
    assert answer(fast.email) == answer(normalise_email)
    assert answer(fast.email) == answer(normalise_email)  # and again, from its cache


@pytest.mark.parametrize(
    "raw",
    ["Ann", "  Ann Lee  ", "Zoë", "a\tb", "a\nb", "a\u2028b", "a\x85b", "x" * 200, "x" * 201, " " + "x" * 200, ""],
)
def test_the_fast_name_check_answers_as_check_display_name_does(raw):
    from subscribers.addresses import check_display_name

    def answer(check) -> tuple[str, str]:
        try:
            return "ok", check(raw)
        except InvalidInput as exc:
            return "error", exc.message

    assert answer(importing._Checks.name) == answer(check_display_name)


@pytest.mark.parametrize("bulk_rows", [10**9, 100])  # the small-import plans, and the bulk ones (hash joins only)
def test_a_confirmed_reimport_confirms_every_unconfirmed_row(sessions, tmp_path, monkeypatch, bulk_rows):
    from subscribers import import_staging

    monkeypatch.setattr(import_staging, "BULK_ROWS", bulk_rows)
    make_list(sessions)
    body = "".join(f"p{i}@example.com,P{i}\n" for i in range(300))
    first, _ = run_import(sessions, write(tmp_path, "email,name\n" + body), batch_size=64)
    assert first.imported == 300 and set(s for _, _, s in people(sessions).values()) == {"unconfirmed"}
    with transaction(sessions) as session:
        subscriptions.unsubscribe(session, "weekly", "p7@example.com", reason="left")
    again, _ = run_import(sessions, write(tmp_path, "email,name\n" + body, "again.csv"), batch_size=64, confirmed=True)
    assert (again.imported, again.updated, again.unchanged, again.kept_unsubscribed) == (0, 299, 0, 1)
    statuses = [s for _, _, s in people(sessions).values()]
    assert (statuses.count("confirmed"), statuses.count("unsubscribed")) == (299, 1)
