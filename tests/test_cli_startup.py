"""The CLI imports only what a command uses (issue 17, item 7).

Each command is a real process run with ``python -X importtime``; the modules it imported are
read from what that prints on stderr. Times are measured by bench/bench_startup.py, not here.
"""

from __future__ import annotations

import inspect
import subprocess
import sys

import pytest

from tests.sendkit import SAMPLE_ISSUE

#: Packages no command below may import: the worker's, the web app's and the renderer's.
HEAVY = ("celery", "kombu", "fastapi", "starlette", "uvicorn", "aiosmtpd", "premailer", "lxml", "cssutils")


def imported_modules(cli, *args: str) -> set[str]:
    """The modules `newsletter ARGS` imports, as ``-X importtime`` lists them on stderr."""
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "newsletter", *args],
        env=cli.env,
        cwd=cli.cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    modules = set()
    for line in proc.stderr.splitlines():
        if line.startswith("import time:") and line.count("|") == 2:
            name = line.rsplit("|", 1)[1].strip()
            if name != "package":  # the header line
                modules.add(name)
    assert "newsletter" in modules  # the output was read
    return modules


def heavy_imports(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if m.split(".")[0] in HEAVY)


@pytest.fixture
def send_id(cli) -> str:
    """One send stored (scheduled, so that no broker is needed to make it)."""
    cli("lists", "create", "weekly", "--name", "Weekly", "--from-email", "news@example.org")
    cli("subscribers", "add", "weekly", "ann@example.org", "--confirmed")
    issue = cli("issues", "create", "weekly", str(SAMPLE_ISSUE)).stdout.split()[-1]
    return cli("send", issue, "--at", "2099-01-04T08:00+00:00").stdout.split()[-1]


def test_help_imports_no_command(cli):
    modules = imported_modules(cli, "--help")
    assert heavy_imports(modules) == []
    commands = sorted(m for m in modules if m.startswith("newsletter.cli.") and m != "newsletter.cli.lazy")
    assert commands == []
    assert not any(m.split(".")[0] in ("sqlalchemy", "alembic", "redis", "jinja2") for m in modules)


def test_send_status_imports_no_worker_web_or_renderer(cli, send_id):
    modules = imported_modules(cli, "sends", "status", send_id, "--json")
    assert heavy_imports(modules) == []
    # A scheduled send's status needs neither Alembic (the schema check reads the version table) nor Redis.
    assert not any(m.split(".")[0] in ("alembic", "redis") for m in modules)
    assert not any(m.split(".")[0] == "rich" for m in modules)  # JSON is printed without rich
    # Nor SQLAlchemy (0.3 s alone) or the renderer: a bare DB-API connection runs the shared SQL (send_status).
    assert not any(m.split(".")[0] in ("sqlalchemy", "jinja2", "markdown_it", "email_validator") for m in modules)


def test_send_status_reads_each_database_without_sqlalchemy(cli_any_db, database_url):
    """On SQLite and PostgreSQL alike, `sends status --json` prints what the ORM's status read gives."""
    import json

    from newsletter.delivery import sending
    from newsletter.store import db

    cli_any_db("lists", "create", "weekly", "--name", "Weekly", "--from-email", "news@example.org")
    cli_any_db("subscribers", "add", "weekly", "ann@example.org", "--confirmed")
    issue = cli_any_db("issues", "create", "weekly", str(SAMPLE_ISSUE)).stdout.split()[-1]
    send_id = cli_any_db("send", issue, "--at", "2099-01-04T08:00+00:00").stdout.split()[-1]
    modules = imported_modules(cli_any_db, "sends", "status", send_id, "--json")
    assert sorted({m.split(".")[0] for m in modules} & {"sqlalchemy", "alembic", "redis", "jinja2"}) == []
    printed = json.loads(cli_any_db("sends", "status", send_id, "--json").stdout)
    engine = db.make_engine(database_url)
    with db.transaction(db.session_factory(engine)) as session:
        expected = {**sending.send_counts(session, int(send_id)).as_json(), "problem": None}  # scheduled, not due
    engine.dispose()
    assert printed == expected
    missing = cli_any_db("sends", "status", "999", "--json", check=False)
    assert missing.returncode == 1 and "no send 999" in missing.stderr


@pytest.mark.parametrize("args", [("lists", "ls"), ("subscribers", "ls", "weekly"), ("sends", "ls", "--json")])
def test_listings_import_no_worker_web_or_renderer(cli, send_id, args):
    assert heavy_imports(imported_modules(cli, *args)) == []


def test_each_command_is_listed_with_its_own_help():
    """`newsletter --help` shows the help kept in newsletter.cli's table: it must be the command's own."""
    from newsletter.cli import Commands

    group = Commands(name="newsletter")
    for name, entry in Commands.entries.items():
        command = group.load(name)
        own = inspect.cleandoc(command.short_help or command.help or "").split("\n\n")[0].strip()
        assert entry.help == own, f"newsletter.cli: the help listed for {name!r} is not its own"
        assert command.name == name


def test_schema_check_agrees_with_alembic(tmp_path):
    """The CLI's schema check reads the version table and the migration files without Alembic."""
    from newsletter.store import db

    assert db.written_head_revision() == db.head_revision()
    engine = db.make_engine(f"sqlite:///{tmp_path / 'check.db'}")
    assert not db.schema_is_current(engine)  # empty
    previous = db.head_revision()
    db.upgrade(engine, "0009")
    assert db.current_revision(engine) == "0009" != previous
    assert not db.schema_is_current(engine)
    db.upgrade(engine)
    assert db.schema_is_current(engine)
    engine.dispose()


def test_schema_check_on_each_database(database_url):
    from newsletter.store import db

    engine = db.make_engine(database_url)
    assert db.schema_is_current(engine) and db.current_revision(engine) == db.head_revision()
    engine.dispose()
