"""Database foundation: engines, sessions and schema migrations (Alembic).

SQLite is the embedded default (WAL journal, foreign keys on, a busy timeout so a CLI
command and a worker can share the file); PostgreSQL is the production database. The
same models and migrations serve both.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import Connection, CursorResult, Engine, Result, create_engine, event, func, inspect, select
from sqlalchemy.engine import make_url
from sqlalchemy.orm import InstrumentedAttribute, Session, sessionmaker
from sqlalchemy.sql import ColumnElement, TableClause
from sqlalchemy.sql.dml import Insert

from newsletter.errors import ConfigError
from newsletter.store import dbapi

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS_DIR = dbapi.MIGRATIONS_DIR


def make_engine(url: str, *, echo: bool = False) -> Engine:
    """Create an engine for ``url``; for SQLite, create the file's folder and set pragmas.

    Raises ConfigError when the SQLite folder cannot be created.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            try:
                Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise ConfigError(f"NEWSLETTER_DATABASE_URL: cannot create {parsed.database}: {exc.strerror}") from None
        engine = create_engine(url, echo=echo, connect_args={"timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        # pysqlite's own transaction handling defers BEGIN; take it over so that a whole
        # import or snapshot is one real transaction (see SQLAlchemy's pysqlite notes).
        # IMMEDIATE takes the write lock up front: a deferred transaction that reads and then
        # writes fails at once with "database is locked" when another process wrote in
        # between, whereas IMMEDIATE waits its turn (busy_timeout). WAL readers never block,
        # so read-only work (see :func:`reading`) begins deferred and never waits for a writer.
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    connect_args = {} if "options" in parsed.query else {"options": f"-c {IDLE_IN_TRANSACTION}"}
    return create_engine(url, echo=echo, pool_pre_ping=True, connect_args=connect_args)


#: Every PostgreSQL connection of ours ends a transaction left idle this long: no transaction of ours
#: waits on anything but the database (SMTP, Redis and reading files happen outside them, or between
#: a few statements), so one idle for a minute belongs to a process or a machine that vanished mid-way,
#: and its row locks (a batch's claim) would otherwise hold up the workers still running until the
#: server noticed the dead peer (up to 15 minutes when the peer vanished with data unacknowledged).
#: A URL that sets its own ``options`` keeps them.
IDLE_IN_TRANSACTION = "idle_in_transaction_session_timeout=60s"


def _sqlite_begin(conn: Connection) -> None:
    conn.exec_driver_sql("BEGIN" if conn.get_execution_options().get(READ_ONLY) else "BEGIN IMMEDIATE")


def _sqlite_pragmas(dbapi_connection: sqlite3.Connection, _record: object) -> None:
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


READ_ONLY = "newsletter_read_only"


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(bind=engine, expire_on_commit=False)


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One unit of work: commit when the block succeeds, roll back everything if it raises."""
    with factory() as session, session.begin():
        yield session


@contextmanager
def reading(factory: sessionmaker[Session]) -> Iterator[Session]:
    """Read-only work: on SQLite it does not queue behind a writer (a long import, a send's flush).

    Nothing written in the block is committed.
    """
    with factory() as session:
        session.connection(execution_options={READ_ONLY: True})
        try:
            yield session
        finally:
            session.rollback()


def _alembic_config(engine: Engine | None) -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["engine"] = engine
    return config


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Create or migrate the schema to ``revision``."""
    from alembic import command

    command.upgrade(_alembic_config(engine), revision)


def current_revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def head_revision() -> str | None:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(_alembic_config(None)).get_current_head()


def schema_is_current(engine: Engine) -> bool:
    """Whether the schema is at the newest migration, told without Alembic: loading it and every
    migration costs each CLI command ~0.1 s. The version table is read as Alembic keeps it, and
    the newest revision is found in the migration files' ``revision``/``down_revision`` lines
    (tests/test_cli_startup.py checks both answers against Alembic's)."""
    with engine.connect() as conn:
        if not inspect(conn).has_table("alembic_version"):
            return False
        stored = {row[0] for row in conn.exec_driver_sql("SELECT version_num FROM alembic_version")}
    return stored == {written_head_revision()}


#: The newest revision as the migration files name it, read without Alembic (newsletter.store.dbapi).
written_head_revision = dbapi.written_head_revision


def table_names(engine: Engine) -> list[str]:
    return inspect(engine).get_table_names()


def insert_on_conflict_ignore(session: Session, table: TableClause, *, index_elements: list[str]) -> Insert:
    """An INSERT that skips rows clashing with a unique key, on SQLite and PostgreSQL alike."""
    if session.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects import postgresql

        return postgresql.insert(table).on_conflict_do_nothing(index_elements=index_elements)
    from sqlalchemy.dialects import sqlite

    return sqlite.insert(table).on_conflict_do_nothing(index_elements=index_elements)


def rowcount(result: Result[Any]) -> int:
    """The rows an UPDATE or DELETE matched (Session.execute types its result as a plain Result; for those
    statements it is a CursorResult, which counts them)."""
    return cast("CursorResult[Any]", result).rowcount


def id_ranges(
    session: Session, id_column: InstrumentedAttribute[int], conditions: Iterable[ColumnElement[bool]], batch_size: int
) -> list[tuple[int, int]]:
    """The ids of the rows matching ``conditions``, in order, as inclusive ranges of ``batch_size`` rows
    each (a range may span ids of rows that do not match), computed in the database."""
    numbered = (
        select(id_column.label("row_id"), func.row_number().over(order_by=id_column).label("n"))
        .where(*conditions)
        .subquery()
    )
    row_id = numbered.c.row_id
    starts = list(session.scalars(select(row_id).where((numbered.c.n - 1) % batch_size == 0).order_by(row_id)))
    if not starts:
        return []
    last = session.scalar(select(func.max(row_id)))
    return [(start, (starts[i + 1] - 1) if i + 1 < len(starts) else last) for i, start in enumerate(starts)]
