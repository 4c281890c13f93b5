"""The database side of a CSV import: a staging table filled in bulk, then a set-based merge.

Every data row of the file, kept or rejected, is written to a temporary table
``import_rows`` as it is read (PostgreSQL: one ``COPY ... FROM STDIN`` for the whole file;
SQLite: one ``executemany`` per batch), so Python holds one batch at a time, never the file.
When the file has been read, a fixed handful of set-based statements merge the table into
the store, whatever its length:

1. rows repeating an address met on an earlier line are marked duplicates (the first is kept);
2. stored subscribers whose name or attributes the file changes are noted (``import_changed``)
   and updated: a non-blank name replaces theirs, the row's attributes are merged over theirs;
3. the file's new addresses are inserted as subscribers (``ON CONFLICT DO NOTHING``: one
   that a concurrent writer inserted first is picked up like any stored one);
4. each kept row's subscriber and its current status on the list are listed
   (``import_targets``), and counted for the summary;
5. those not on the list yet are subscribed (source "import"; confirmed if asked), the
   unconfirmed ones confirmed if asked; one who left the list is never subscribed again.

No statement ever names a list of ids or addresses, so no statement grows with the file
or with the transaction (the old batch-wise ``... IN (...)`` lookups slowed down as the one
big transaction grew, most of all on PostgreSQL). On PostgreSQL the staging table is
ANALYZEd once loaded, so the planner knows its size (temporary tables are never analysed
by autovacuum). Everything happens in the caller's transaction: a rollback undoes it all,
temporary tables included.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import Connection, bindparam, text
from sqlalchemy.orm import Session

from newsletter.store.models import UTCDateTime
from newsletter.store.states import SubscriptionStatus

#: A staged row: (line, email, name, attributes as JSON text, field, reason). A rejected row has
#: no email, name or attributes, and says which column (when one) and why; a kept row has no reason.
StagedRow = tuple[int, str | None, str | None, str | None, str | None, str | None]

_TABLES = ("import_targets", "import_changed", "import_rows")
PG_WORK_MEM = "64MB"
#: From this many staged rows on, the merge on PostgreSQL uses hash joins only (see merge).
BULK_ROWS = 10_000


@dataclass(frozen=True)
class Rejected:
    line: int
    field: str | None
    reason: str


@dataclass(frozen=True)
class MergeCounts:
    imported: int
    updated: int
    unchanged: int
    kept_unsubscribed: int
    rejected: int


class Stager(Protocol):
    """Writes staged rows to ``import_rows``; ``finish`` ends the load (before any other statement)."""

    def write(self, rows: Sequence[StagedRow]) -> None: ...

    def finish(self) -> None: ...


def open_stager(session: Session) -> Stager:
    """Create the staging table in the session's transaction and return a loader for it."""
    connection = session.connection()
    if connection.dialect.name == "postgresql":
        return _PostgresStager(connection)
    return _SqliteStager(connection)


class _SqliteStager:
    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        _drop_tables(connection)
        connection.exec_driver_sql(
            "CREATE TEMPORARY TABLE import_rows (line INTEGER PRIMARY KEY, email TEXT, name TEXT,"
            " attributes TEXT, field TEXT, reason TEXT, duplicate_of INTEGER)"
        )
        raw = connection.connection.driver_connection
        assert isinstance(raw, sqlite3.Connection)
        self.cursor = raw.cursor()

    def write(self, rows: Sequence[StagedRow]) -> None:
        self.cursor.executemany(
            "INSERT INTO import_rows (line, email, name, attributes, field, reason) VALUES (?, ?, ?, ?, ?, ?)", rows
        )

    def finish(self) -> None:
        self.cursor.close()


class _PostgresStager:
    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        # The merge's sorts, hash joins and hash aggregates run over the whole file: give them room to
        # run in memory (the 4 MB default spills a million rows to disk). For this transaction only.
        connection.exec_driver_sql(f"SET LOCAL work_mem = '{PG_WORK_MEM}'")
        _drop_tables(connection)
        connection.exec_driver_sql(
            "CREATE TEMPORARY TABLE import_rows (line integer PRIMARY KEY, email text, name text,"
            " attributes jsonb, field text, reason text, duplicate_of integer) ON COMMIT DROP"
        )
        raw = connection.connection.driver_connection
        self.cursor = raw.cursor()  # type: ignore[union-attr]
        self.copy_context = self.cursor.copy(
            "COPY import_rows (line, email, name, attributes, field, reason) FROM STDIN"
        )
        self.copy = self.copy_context.__enter__()

    def write(self, rows: Sequence[StagedRow]) -> None:
        write = self.copy.write_row
        for row in rows:
            write(row)

    def finish(self) -> None:
        self.copy_context.__exit__(None, None, None)
        self.cursor.close()
        self.connection.exec_driver_sql("ANALYZE import_rows")

    def abort(self) -> None:
        """End the COPY after an error so the connection can roll back."""
        try:
            self.copy_context.__exit__(RuntimeError, RuntimeError("import aborted"), None)
        except Exception:  # the COPY fails as asked; the caller's own error is the one to raise
            pass
        self.cursor.close()


def abort(stager: Stager) -> None:
    """Give up a load midway (an unreadable file): leave the connection able to roll back."""
    if isinstance(stager, _PostgresStager):
        stager.abort()
    else:
        stager.finish()


def _drop_tables(connection: Connection) -> None:
    for table in _TABLES:
        connection.exec_driver_sql(f"DROP TABLE IF EXISTS {table}")


# --- the merge ----------------------------------------------------------------------------------------

# Whether a stored subscriber changes: a non-blank name that differs, or a row attribute the stored
# ones lack or hold another value for (what `{**stored, **row} != stored` says in Python).
_CHANGED = {
    "postgresql": (
        "(r.name <> '' AND r.name <> s.name)"
        " OR (COALESCE(s.attributes, '{}'::jsonb) || r.attributes) <> COALESCE(s.attributes, '{}'::jsonb)"
    ),
    # The row's attributes are all strings: one changes the subscriber unless the stored ones hold
    # the same key with the same string.
    "sqlite": (
        "(r.name <> '' AND r.name <> s.name) OR EXISTS (SELECT 1 FROM json_each(r.attributes) n"
        " WHERE NOT EXISTS (SELECT 1 FROM json_each(COALESCE(s.attributes, '{}')) o"
        " WHERE o.key = n.key AND o.type = n.type AND o.atom = n.atom))"
    ),
}

# The stored attributes with the row's merged over them (the row's are strings: json_patch then
# only replaces and adds keys, exactly like `{**stored, **row}`).
_MERGED = {
    "postgresql": "COALESCE(subscribers.attributes, '{}'::jsonb) || r.attributes",
    "sqlite": "json_patch(COALESCE(subscribers.attributes, '{}'), r.attributes)",
}

_TEMP = {"postgresql": "ON COMMIT DROP", "sqlite": ""}
_BOOL = {"postgresql": "boolean", "sqlite": "INTEGER"}


def merge(
    session: Session, list_id: int, *, staged: int, email_field: str, confirmed: bool, now: datetime
) -> tuple[MergeCounts, Iterator[Rejected]]:
    """Merge the loaded staging table (``staged`` rows) into the store; return the counts and the
    rejected rows in line order.

    The rejected rows are read from the staging table as they are iterated: iterate them before
    the transaction ends (and before :func:`drop`).
    """
    connection = session.connection()
    dialect = connection.dialect.name
    run = _runner(connection)
    if dialect == "postgresql" and staged >= BULK_ROWS:
        # Every statement below is a bulk join; the statistics of subscribers and subscriptions do
        # not see this transaction's own rows, so an estimate of "one row" there could pick a nested
        # loop that scans a table once per row (quadratic). Hash joins are the right plans at this
        # size whatever the estimates say. For this transaction only.
        run("SET LOCAL enable_nestloop = off")
    _mark_duplicates(run, email_field)
    run(
        f"CREATE TEMPORARY TABLE import_changed (line INTEGER PRIMARY KEY, subscriber_id BIGINT NOT NULL) {_TEMP[dialect]}"
    )
    run(
        "INSERT INTO import_changed (line, subscriber_id) SELECT r.line, s.id FROM import_rows r"
        f" JOIN subscribers s ON s.email = r.email WHERE r.reason IS NULL AND ({_CHANGED[dialect]})"
    )
    run(
        "UPDATE subscribers SET name = CASE WHEN r.name <> '' THEN r.name ELSE subscribers.name END,"
        f" attributes = {_MERGED[dialect]}, updated_at = :now"
        " FROM import_changed c JOIN import_rows r ON r.line = c.line WHERE subscribers.id = c.subscriber_id",
        now=now,
    )
    run(
        "INSERT INTO subscribers (email, name, attributes, created_at, updated_at)"
        " SELECT r.email, r.name, r.attributes, :now, :now FROM import_rows r"
        " WHERE r.reason IS NULL AND NOT EXISTS (SELECT 1 FROM subscribers s WHERE s.email = r.email)"
        " ON CONFLICT (email) DO NOTHING",
        now=now,
    )
    run(
        "CREATE TEMPORARY TABLE import_targets (line INTEGER PRIMARY KEY, subscriber_id BIGINT NOT NULL,"
        f" status VARCHAR(16), changed {_BOOL[dialect]} NOT NULL) {_TEMP[dialect]}"
    )
    run(
        "INSERT INTO import_targets (line, subscriber_id, status, changed)"
        " SELECT r.line, s.id, subs.status, c.line IS NOT NULL FROM import_rows r"
        " JOIN subscribers s ON s.email = r.email"
        " LEFT JOIN subscriptions subs ON subs.list_id = :list_id AND subs.subscriber_id = s.id"
        " LEFT JOIN import_changed c ON c.line = r.line"
        " WHERE r.reason IS NULL",
        list_id=list_id,
    )
    if dialect == "postgresql":
        run("ANALYZE import_targets")
    counts, unconfirmed = _count(run, confirmed)
    status = SubscriptionStatus.CONFIRMED if confirmed else SubscriptionStatus.UNCONFIRMED
    run(
        "INSERT INTO subscriptions (list_id, subscriber_id, status, source, requested_at, confirmed_at, updated_at)"
        " SELECT :list_id, t.subscriber_id, :status, 'import', :now, :confirmed_at, :now FROM import_targets t"
        " WHERE t.status IS NULL ON CONFLICT (list_id, subscriber_id) DO NOTHING",
        list_id=list_id,
        status=str(status),
        now=now,
        confirmed_at=now if confirmed else None,
    )
    if confirmed and unconfirmed:
        # Driven by the staged rows, through the unique index on (list_id, subscriber_id).
        run(
            "UPDATE subscriptions SET status = :confirmed, confirmed_at = :now, updated_at = :now"
            " FROM import_targets t WHERE t.status = :unconfirmed AND subscriptions.list_id = :list_id"
            " AND subscriptions.subscriber_id = t.subscriber_id AND subscriptions.status = :unconfirmed",
            list_id=list_id,
            now=now,
            confirmed=str(SubscriptionStatus.CONFIRMED),
            unconfirmed=str(SubscriptionStatus.UNCONFIRMED),
        )
    return counts, _rejected(connection)


def _mark_duplicates(run: Callable[..., Any], email_field: str) -> None:
    """Reject each row whose address an earlier line of the file already has (the first is kept)."""
    run(
        "UPDATE import_rows SET duplicate_of = f.first, field = :field, reason = 'duplicate'"
        " FROM (SELECT email, MIN(line) AS first FROM import_rows WHERE reason IS NULL"
        " GROUP BY email HAVING COUNT(*) > 1) f"
        " WHERE import_rows.email = f.email AND import_rows.line > f.first AND import_rows.reason IS NULL",
        field=email_field,
    )


def _count(run: Callable[..., Any], confirmed: bool) -> tuple[MergeCounts, int]:
    """The summary's counts, and how many kept rows are unconfirmed on the list."""
    imported = updated = unchanged = kept_unsubscribed = unconfirmed = 0
    for status, changed, count in run(
        "SELECT status, changed, COUNT(*) FROM import_targets GROUP BY status, changed"
    ).all():
        if status == SubscriptionStatus.UNCONFIRMED:
            unconfirmed += count
        if status is None:
            imported += count
        elif status == SubscriptionStatus.UNSUBSCRIBED:
            kept_unsubscribed += count
        elif (confirmed and status == SubscriptionStatus.UNCONFIRMED) or changed:
            updated += count
        else:
            unchanged += count
    rejected = run("SELECT COUNT(*) FROM import_rows WHERE reason IS NOT NULL").scalar_one()
    return MergeCounts(imported, updated, unchanged, kept_unsubscribed, rejected), unconfirmed


def _rejected(connection: Connection) -> Iterator[Rejected]:
    result = connection.exec_driver_sql(
        "SELECT line, field, reason, duplicate_of, email FROM import_rows WHERE reason IS NOT NULL ORDER BY line",
        execution_options={"stream_results": True, "yield_per": 2000},
    )
    with result:
        for line, field, reason, duplicate_of, email in result:
            if duplicate_of is not None:
                reason = f"duplicate of line {duplicate_of} ({email}); the first one is kept"
            yield Rejected(line, field, reason)


def drop(session: Session) -> None:
    """Drop the staging tables (PostgreSQL drops them at commit anyway)."""
    _drop_tables(session.connection())


def _runner(connection: Connection) -> Callable[..., Any]:
    def run(sql: str, **params: Any) -> Any:
        statement = text(sql)
        if "now" in params:
            statement = statement.bindparams(bindparam("now", type_=UTCDateTime()))
        if "confirmed_at" in params:
            statement = statement.bindparams(bindparam("confirmed_at", type_=UTCDateTime()))
        return connection.execute(statement, params)

    return run
