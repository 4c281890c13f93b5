"""The `newsletter` command as a user runs it: a real process, a real database."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "examples" / "subscribers.csv"


def create_list(cli) -> None:
    cli(
        "lists", "create", "weekly", "--name", "The Weekly", "--from-email", "news@example.org", "--from-name", "Weekly"
    )


def test_help_explains_each_command(cli):
    top = cli("--help").stdout
    for group in ("db", "lists", "subscribers", "suppressions"):
        assert group in top
    sub = cli("subscribers", "import", "--help").stdout
    assert "email" in sub and "--confirmed" in sub


def test_lists_and_subscribers_commands(cli):
    create_list(cli)
    assert "weekly" in cli("lists", "ls").stdout
    cli("subscribers", "add", "weekly", "Ann@Example.com", "--name", "Ann Lee", "--confirmed")
    cli("subscribers", "add", "weekly", "bob@example.com")
    shown = cli("lists", "show", "weekly").stdout
    assert "confirmed     1" in shown.replace("\u2502", " ") or ("confirmed" in shown and "unconfirmed" in shown)
    listed = cli("subscribers", "ls", "weekly", "--status", "confirmed").stdout
    assert "ann@example.com" in listed and "bob@example.com" not in listed
    cli("subscribers", "remove", "weekly", "ann@example.com")
    assert "ann@example.com" in cli("subscribers", "ls", "weekly", "--status", "unsubscribed").stdout


def test_duplicate_list_and_unknown_list_fail_with_one_line(cli):
    create_list(cli)
    again = cli("lists", "create", "weekly", "--name", "X", "--from-email", "x@example.org", check=False)
    assert again.returncode == 1
    assert again.stderr.strip() == "error: a list with slug 'weekly' already exists"
    missing = cli("lists", "show", "nope", check=False)
    assert missing.returncode == 1 and "no list 'nope'" in missing.stderr and "Traceback" not in missing.stderr


def test_import_sample_report_rejects_and_reimport_is_a_no_op(cli, tmp_path):
    create_list(cli)
    first = cli("subscribers", "import", "weekly", str(SAMPLE), "--confirmed")
    assert "Imported 300, updated 0, unchanged 0, rejected 0" in first.stdout
    second = cli("subscribers", "import", "weekly", str(SAMPLE), "--confirmed")
    assert "Imported 0, updated 0, unchanged 300, rejected 0" in second.stdout
    bad = tmp_path / "bad.csv"
    bad.write_text("EMAIL,Name\nnew@example.com,New\nbroken,Nope\nnew@example.com,Again\n", encoding="utf-8")
    result = cli("subscribers", "import", "weekly", str(bad))
    assert "Imported 1, updated 0, unchanged 0, rejected 2" in result.stdout
    assert f"{bad}:3: rejected: invalid email address 'broken'" in result.stderr
    assert f"{bad}:4: rejected: duplicate of line 2" in result.stderr


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (b"name,city\nAnn,Oslo\n", ":1: no 'email' column in the header row (found: 'name', 'city')"),
        (b"email\nok@example.com\n\xff\n", ": not valid UTF-8"),
    ],
)
def test_bad_file_exits_non_zero_with_one_message_and_imports_nothing(cli, tmp_path, content, fragment):
    create_list(cli)
    path = tmp_path / "bad.csv"
    path.write_bytes(content)
    result = cli("subscribers", "import", "weekly", str(path), check=False)
    assert result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1
    assert str(path) in result.stderr and fragment in result.stderr
    assert "0 subscriber(s)" in cli("subscribers", "ls", "weekly").stdout


def test_missing_file(cli, tmp_path):
    create_list(cli)
    result = cli("subscribers", "import", "weekly", str(tmp_path / "nope.csv"), check=False)
    assert result.returncode == 1
    assert result.stderr.strip() == f"error: {tmp_path / 'nope.csv'}: cannot read the file: No such file or directory"


def test_export_to_stdout_and_file(cli, tmp_path):
    create_list(cli)
    cli("subscribers", "import", "weekly", str(SAMPLE), "--confirmed")
    rows = list(csv.DictReader(io.StringIO(cli("subscribers", "export", "weekly").stdout)))
    assert len(rows) == 300
    assert {"email", "name", "status", "city", "plan"} <= set(rows[0])
    sample_names = {r["name"] for r in csv.DictReader(SAMPLE.open(encoding="utf-8"))}
    assert {r["name"] for r in rows} == sample_names  # non-ASCII names survive the round trip
    out = tmp_path / "export.csv"
    result = cli("subscribers", "export", "weekly", "-o", str(out))
    assert "Exported 300" in result.stderr
    assert out.read_text(encoding="utf-8").splitlines()[0].startswith("email,name,status")


def test_suppressions_commands(cli):
    cli("suppressions", "add", "Spam@Example.com", "--reason", "complaint")
    assert "spam@example.com" in cli("suppressions", "ls").stdout
    cli("suppressions", "remove", "spam@example.com")
    assert "0 suppressed" in cli("suppressions", "ls").stdout
    bad = cli("suppressions", "add", "x@example.com", "--reason", "dislike", check=False)
    assert bad.returncode == 1 and "--reason: unknown reason 'dislike'" in bad.stderr


def test_config_error_is_one_line_not_a_traceback(cli):
    cli.env["NEWSLETTER_SMTP_URL"] = "http://mail.example.com"
    result = cli("lists", "ls", check=False)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "configuration error: NEWSLETTER_SMTP_URL: unsupported scheme 'http' in 'http://mail.example.com'; "
        "expected smtp://[user:pass@]host:port, smtp+starttls://... or smtps://..."
    ]


def test_commands_before_db_upgrade_say_what_to_do(tmp_path):
    from tests.conftest import Cli, clean_environ

    fresh = Cli(env=clean_environ(NEWSLETTER_VAR_DIR=str(tmp_path / "v")), cwd=tmp_path)
    result = fresh("lists", "ls", check=False)
    assert result.returncode == 1 and "run `newsletter db upgrade`" in result.stderr


def test_storage_commands_on_each_database(cli_any_db):
    cli_any_db("db", "upgrade")
    assert "up to date" in cli_any_db("db", "upgrade").stdout
    create_list(cli_any_db)
    assert "Imported 300" in cli_any_db("subscribers", "import", "weekly", str(SAMPLE), "--confirmed").stdout
    assert "300 subscriber(s)" in cli_any_db("subscribers", "ls", "weekly").stdout
