"""A bare DB-API connection for a quick read, without SQLAlchemy (which alone costs a CLI command ~0.3 s).

`newsletter sends status` reads through it. SQLite: the file is opened as ``make_engine`` opens
it (its folder made, a busy timeout; WAL readers never wait for a writer); PostgreSQL: psycopg,
imported only then. Statements take named parameters (``:name``) on both. The schema is
checked as the engine's callers check it (``schema_is_current``): the version table Alembic
keeps, against the newest revision the migration files name.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from newsletter.errors import ConfigError

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
#: What every command that opens the database says when its schema is missing or old.
SCHEMA_OUT_OF_DATE = (
    "NEWSLETTER_DATABASE_URL: the database schema is missing or out of date; run `newsletter db upgrade`"
)


@dataclass(frozen=True)
class Reader:
    """An open connection: ``query(sql, params)`` runs one statement and returns its rows (aware
    datetimes in ``params`` are passed as :func:`sql_params` passes them)."""

    dialect: str  # "sqlite" or "postgresql", as SQLAlchemy names them
    query: Callable[[str, Mapping[str, object]], Sequence[Sequence[Any]]]


@contextmanager
def reading(url: str) -> Iterator[Reader]:
    """A connection to the database ``url`` names, its schema checked; rolled back and closed at the end.

    Raises ConfigError: cannot connect (as the engine's callers say it), the schema missing or out of date.
    """
    scheme = url.split(":", 1)[0].split("+", 1)[0]
    if scheme == "sqlite":
        with _sqlite(url) as reader:
            _check_schema(reader)
            yield reader
    elif scheme in ("postgresql", "postgres"):
        with _postgresql(url) as reader:
            _check_schema(reader)
            yield reader
    else:
        raise ConfigError(f"NEWSLETTER_DATABASE_URL: no quick reader for {scheme}:// URLs")


def pyformat(sql: str) -> str:
    """``:name`` parameters as psycopg's ``%(name)s`` (a literal ``%`` doubled)."""
    return re.sub(r"(?<![:\w]):([A-Za-z_]\w*)", r"%(\1)s", sql.replace("%", "%%"))


def sql_time(value: datetime, dialect: str) -> object:
    """An aware datetime as a parameter: SQLite compares the naive UTC text SQLAlchemy stores."""
    value = value.astimezone(UTC)
    if dialect == "sqlite":
        return value.replace(tzinfo=None).strftime("%Y-%m-%d %H:%M:%S.%f")
    return value


def sql_params(params: Mapping[str, object], dialect: str) -> dict[str, object]:
    """The parameters as the database compares them (aware datetimes through :func:`sql_time`)."""
    return {k: sql_time(v, dialect) if isinstance(v, datetime) else v for k, v in params.items()}


def written_head_revision() -> str | None:
    """The newest revision as the migration files name it: the one no other file revises (Alembic's own
    answer when the files name no single one; that loads Alembic and SQLAlchemy, never the case today)."""
    revisions: set[str] = set()
    revised: set[str] = set()
    for path in (MIGRATIONS_DIR / "versions").glob("*.py"):
        for down, value in _REVISION_LINE.findall(path.read_text(encoding="utf-8")):
            (revised if down else revisions).update(re.findall(r"[\"']([^\"']+)[\"']", value))
    heads = revisions - revised
    if len(heads) == 1:
        return heads.pop()
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return ScriptDirectory.from_config(config).get_current_head()


_REVISION_LINE = re.compile(r"^(down_)?revision\b[^=\n]*=(.*)$", re.MULTILINE)


def _check_schema(reader: Reader) -> None:
    if reader.dialect == "sqlite":
        found = reader.query("SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'alembic_version'", {})
    else:
        found = reader.query("SELECT to_regclass('alembic_version')", {})
        found = [row for row in found if row[0] is not None]
    stored = {row[0] for row in reader.query("SELECT version_num FROM alembic_version", {})} if found else set()
    if not found or stored != {written_head_revision()}:
        raise ConfigError(SCHEMA_OUT_OF_DATE)


@contextmanager
def _sqlite(url: str) -> Iterator[Reader]:
    import sqlite3

    path = unquote(url.split(":///", 1)[1]) if ":///" in url else ""
    path = path.split("?", 1)[0] or ":memory:"
    if path != ":memory:":
        try:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"NEWSLETTER_DATABASE_URL: cannot create {path}: {exc.strerror}") from None
    try:
        conn = sqlite3.connect(path, timeout=30, isolation_level=None)
    except sqlite3.OperationalError as exc:
        raise ConfigError(f"NEWSLETTER_DATABASE_URL: cannot connect: {exc}") from None
    try:
        try:
            conn.execute("PRAGMA busy_timeout=30000")
            conn.execute("BEGIN")  # one snapshot for the whole read (WAL: never waits for a writer)
        except sqlite3.OperationalError as exc:
            raise ConfigError(f"NEWSLETTER_DATABASE_URL: cannot connect: {exc}") from None

        def query(sql: str, params: Mapping[str, object]) -> Sequence[Sequence[Any]]:
            return conn.execute(sql, sql_params(params, "sqlite")).fetchall()

        yield Reader("sqlite", query)
    finally:
        conn.close()  # nothing was written: closing ends the read transaction


@contextmanager
def _postgresql(url: str) -> Iterator[Reader]:
    import psycopg

    parts = urlsplit(url)
    conninfo = parts._replace(scheme="postgresql").geturl()
    try:
        conn = psycopg.connect(conninfo)
    except psycopg.OperationalError as exc:
        raise ConfigError(f"NEWSLETTER_DATABASE_URL: cannot connect: {exc}") from None
    try:
        conn.read_only = True

        def query(sql: str, params: Mapping[str, object]) -> Sequence[Sequence[Any]]:
            with conn.cursor() as cursor:
                cursor.execute(pyformat(sql), sql_params(params, "postgresql"))
                return cursor.fetchall()

        yield Reader("postgresql", query)
    finally:
        conn.rollback()
        conn.close()
