"""CSV import of subscribers into a list: streamed, validated, set-based, all or nothing.

The file is read row by row and written in batches with a handful of set-based
statements per batch, so memory stays flat however long the file is. Addresses already
seen earlier in the same file are remembered in a temporary table, not in Python.
The caller owns the transaction: when this raises, roll back and nothing is imported.

Every cell (header included) is read through :func:`subscribers.csv_cells.read_cell`: the
``'`` an export puts before a leading ``=``, ``+``, ``-``, ``@``, tab or CR is taken off again,
so an export imports back to the same values.
"""

from __future__ import annotations

import csv
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

from sqlalchemy import Column, Integer, MetaData, String, Table, bindparam, select, update
from sqlalchemy.orm import Session

from newsletter.errors import InvalidInput
from newsletter.store.db import insert_on_conflict_ignore
from newsletter.store.models import Subscriber, Subscription, utcnow
from newsletter.store.states import SubscriptionStatus
from subscribers.addresses import check_display_name, normalise_email
from subscribers.csv_cells import read_cell
from subscribers.lists import get_list

#: Columns written by ``subscribers export`` that describe the subscription, not the
#: subscriber: ignored on import so an export can be imported again.
EXPORT_ONLY_COLUMNS = frozenset({"status", "source", "subscribed_at", "confirmed_at", "unsubscribed_at"})
BATCH_SIZE = 2000

csv.field_size_limit(min(sys.maxsize, 2**31 - 1) // 1024)  # 2 MB: room for long attributes, not a runaway quote


@dataclass(frozen=True)
class RejectedRow:
    line: int
    reason: str


@dataclass
class ImportSummary:
    imported: int = 0  # newly on the list
    updated: int = 0  # already on the list; name, attributes or status changed
    unchanged: int = 0
    kept_unsubscribed: int = 0  # had left the list: an import does not subscribe them again
    rejected: int = 0  # invalid rows and in-file duplicates, each reported with its line


@dataclass(frozen=True)
class _Row:
    line: int
    email: str
    name: str
    attributes: dict[str, str]


class _Columns:
    def __init__(self, header: list[str], source: str) -> None:
        names = [read_cell(h.strip()) for h in header]
        lowered = [n.lower() for n in names]
        if "email" not in lowered:
            found = ", ".join(repr(n) for n in names) or "nothing"
            raise InvalidInput(f"no 'email' column in the header row (found: {found})", where=f"{source}:1")
        duplicates = sorted({n for n in lowered if n and lowered.count(n) > 1})
        if duplicates:
            raise InvalidInput(
                f"column {duplicates[0]!r} appears more than once in the header row", where=f"{source}:1"
            )
        self.width = len(names)
        self.email = lowered.index("email")
        self.name = lowered.index("name") if "name" in lowered else None
        self.attributes = [
            (i, n)
            for i, (n, low) in enumerate(zip(names, lowered, strict=True))
            if n and low not in ("email", "name") and low not in EXPORT_ONLY_COLUMNS
        ]


def import_csv(
    session: Session,
    list_slug: str,
    path: Path,
    *,
    confirmed: bool = False,
    on_reject: Callable[[RejectedRow], None] = lambda _: None,
    batch_size: int = BATCH_SIZE,
    on_progress: Callable[[int], None] | None = None,
) -> ImportSummary:
    """Import the CSV file at ``path`` into the list; report each rejected row through ``on_reject``.

    ``on_progress``, when given, is called after each batch and at the end with the number
    of data rows read so far (blank lines not counted).

    Raises NotFound for an unknown list and InvalidInput (naming the file and line) when the
    file cannot be read, is not UTF-8, or has no ``email`` column. The caller must then roll
    back; rows already written in this transaction are undone with it.
    """
    mailing_list = get_list(session, list_slug)
    try:
        handle = open(path, encoding="utf-8-sig", newline="")
    except OSError as exc:
        raise InvalidInput(f"cannot read the file: {exc.strerror}", where=str(path)) from None
    with handle:
        return _import_stream(
            session, mailing_list.id, handle, str(path), confirmed, on_reject, batch_size, on_progress
        )


def _import_stream(
    session: Session,
    list_id: int,
    handle: TextIO,
    source: str,
    confirmed: bool,
    on_reject: Callable[[RejectedRow], None],
    batch_size: int,
    on_progress: Callable[[int], None] | None = None,
) -> ImportSummary:
    summary = ImportSummary()
    read = 0

    def reject(line: int, reason: str) -> None:
        summary.rejected += 1
        on_reject(RejectedRow(line, reason))

    def reject_read(line: int, reason: str) -> None:
        nonlocal read
        read += 1
        reject(line, reason)

    seen = _seen_table(session)
    try:
        batch: list[_Row] = []
        for row in _rows(handle, source, reject_read):
            read += 1
            batch.append(row)
            if len(batch) >= batch_size:
                _write_batch(session, list_id, batch, seen, confirmed, summary, reject)
                batch = []
                if on_progress is not None:
                    on_progress(read)
        if batch:
            _write_batch(session, list_id, batch, seen, confirmed, summary, reject)
        if on_progress is not None:
            on_progress(read)
    finally:
        seen.drop(session.connection())
    return summary


def _rows(handle: TextIO, source: str, reject: Callable[[int, str], None]) -> Iterator[_Row]:
    reader = csv.reader(handle)
    line = 1
    try:
        header = next(reader, None)
        if header is None:
            raise InvalidInput("the file is empty; expected a header row with an 'email' column", where=source)
        columns = _Columns(header, source)
        while True:
            line = reader.line_num + 1
            fields = next(reader, None)
            if fields is None:
                return
            if not any(f.strip() for f in fields):
                continue
            if len(fields) != columns.width:
                reject(line, f"has {len(fields)} fields, the header has {columns.width}")
                continue
            try:
                email = normalise_email(read_cell(fields[columns.email]))
                name = check_display_name(read_cell(fields[columns.name])) if columns.name is not None else ""
            except InvalidInput as exc:
                reject(line, exc.message)
                continue
            attributes = {key: read_cell(fields[i].strip()) for i, key in columns.attributes if fields[i].strip()}
            yield _Row(line, email, name, attributes)
    except UnicodeDecodeError as exc:
        raise InvalidInput(
            f"not valid UTF-8 ({exc.reason} at byte {exc.start} of a read block)", where=f"{source}:{line}"
        ) from None
    except csv.Error as exc:
        raise InvalidInput(f"unreadable CSV: {exc}", where=f"{source}:{line}") from None
    except OSError as exc:
        raise InvalidInput(f"cannot read the file: {exc.strerror}", where=source) from None


def _seen_table(session: Session) -> Table:
    table = Table(
        "import_seen",
        MetaData(),
        Column("email", String(320), primary_key=True),
        Column("line", Integer, nullable=False),
        prefixes=["TEMPORARY"],
    )
    connection = session.connection()
    table.drop(connection, checkfirst=True)
    table.create(connection)
    return table


def _write_batch(
    session: Session,
    list_id: int,
    batch: list[_Row],
    seen: Table,
    confirmed: bool,
    summary: ImportSummary,
    reject: Callable[[int, str], None],
) -> None:
    """Write one batch with the same handful of set-based statements whatever its size.

    Rows repeating an address met earlier in the file are rejected; the subscribers of the
    others are inserted or updated, then their subscriptions on the list.
    """
    rows = _first_in_file(session, batch, seen, reject)
    if not rows:
        return
    now = utcnow()
    ids, changed_subscribers = _write_subscribers(session, rows, now)
    _write_subscriptions(session, list_id, rows, ids, changed_subscribers, confirmed, summary, now)


def _first_in_file(
    session: Session, batch: list[_Row], seen: Table, reject: Callable[[int, str], None]
) -> dict[str, _Row]:
    """The batch's rows by address, less the duplicates (within the batch, then against earlier
    batches of the same file), which are rejected; the kept addresses are remembered in ``seen``."""
    rows: dict[str, _Row] = {}
    for row in batch:
        first = rows.get(row.email)
        if first is None:
            rows[row.email] = row
        else:
            reject(row.line, f"duplicate of line {first.line} ({row.email}); the first one is kept")
    for email, line in session.execute(select(seen.c.email, seen.c.line).where(seen.c.email.in_(list(rows)))):
        reject(rows.pop(email).line, f"duplicate of line {line} ({email}); the first one is kept")
    if rows:
        session.execute(seen.insert(), [{"email": r.email, "line": r.line} for r in rows.values()])
    return rows


#: A stored subscriber as an import compares it: (id, name, attributes).
_StoredSubscriber = tuple[int, str, dict[str, Any]]


def _write_subscribers(session: Session, rows: dict[str, _Row], now: datetime) -> tuple[dict[str, int], set[int]]:
    """Insert the new subscribers, update those whose name or attributes change.

    Returns every row's subscriber id by address, and the ids of the subscribers updated.
    """
    existing = _stored_subscribers(session, list(rows))
    ids = {email: sid for email, (sid, _, _) in existing.items()}
    ids.update(_insert_subscribers(session, [r for r in rows.values() if r.email not in existing], now))
    changed_subscribers = _update_subscribers(session, rows, existing, now)
    return ids, changed_subscribers


def _stored_subscribers(session: Session, emails: list[str]) -> dict[str, _StoredSubscriber]:
    table = Subscriber.__table__
    return {
        email: (sid, name, attributes or {})
        for sid, email, name, attributes in session.execute(
            select(table.c.id, table.c.email, table.c.name, table.c.attributes).where(table.c.email.in_(emails))
        )
    }


def _insert_subscribers(session: Session, new: list[_Row], now: datetime) -> dict[str, int]:
    """Insert a subscriber for each row; return their ids by address."""
    if not new:
        return {}
    table = Subscriber.__table__
    session.execute(
        insert_on_conflict_ignore(session, table, index_elements=["email"]),
        [
            {"email": r.email, "name": r.name, "attributes": r.attributes, "created_at": now, "updated_at": now}
            for r in new
        ],
    )
    # Read the ids back rather than relying on RETURNING with ON CONFLICT: a row that a
    # concurrent writer inserted first is then picked up too.
    inserted = select(table.c.email, table.c.id).where(table.c.email.in_([r.email for r in new]))
    return {email: sid for email, sid in session.execute(inserted)}


def _update_subscribers(
    session: Session, rows: dict[str, _Row], existing: dict[str, _StoredSubscriber], now: datetime
) -> set[int]:
    """Give stored subscribers the row's name (when it has one) and attributes (merged over
    theirs); return the ids of those that changed."""
    changed_subscribers: set[int] = set()
    updates: list[dict[str, Any]] = []
    for email, (sid, old_name, old_attributes) in existing.items():
        row = rows[email]
        name = row.name or old_name
        attributes = {**old_attributes, **row.attributes}
        if name != old_name or attributes != old_attributes:
            updates.append({"b_id": sid, "b_name": name, "b_attributes": attributes, "b_now": now})
            changed_subscribers.add(sid)
    if updates:
        table = Subscriber.__table__
        session.execute(
            update(table)
            .where(table.c.id == bindparam("b_id"))
            .values(name=bindparam("b_name"), attributes=bindparam("b_attributes"), updated_at=bindparam("b_now")),
            updates,
        )
    return changed_subscribers


def _write_subscriptions(
    session: Session,
    list_id: int,
    rows: dict[str, _Row],
    ids: dict[str, int],
    changed_subscribers: set[int],
    confirmed: bool,
    summary: ImportSummary,
    now: datetime,
) -> None:
    """Put each row's subscriber on the list: add the missing, confirm if asked, never
    resubscribe one who left; count each row in ``summary``."""
    status_by_subscriber = _subscription_statuses(session, list_id, list(ids.values()))
    to_add: list[int] = []
    to_confirm: list[int] = []
    for email in rows:
        sid = ids[email]
        current = status_by_subscriber.get(sid)
        if current is None:
            to_add.append(sid)
            summary.imported += 1
        elif current == SubscriptionStatus.UNSUBSCRIBED:
            summary.kept_unsubscribed += 1
        elif confirmed and current == SubscriptionStatus.UNCONFIRMED:
            to_confirm.append(sid)
            summary.updated += 1
        elif sid in changed_subscribers:
            summary.updated += 1
        else:
            summary.unchanged += 1
    _add_subscriptions(session, list_id, to_add, confirmed, now)
    _confirm_subscriptions(session, list_id, to_confirm, now)


def _subscription_statuses(session: Session, list_id: int, subscriber_ids: list[int]) -> dict[int, str]:
    """The status on the list of each of these subscribers who has a subscription there."""
    subs = Subscription.__table__
    return {
        sid: status
        for sid, status in session.execute(
            select(subs.c.subscriber_id, subs.c.status).where(
                subs.c.list_id == list_id, subs.c.subscriber_id.in_(subscriber_ids)
            )
        )
    }


def _add_subscriptions(
    session: Session, list_id: int, subscriber_ids: list[int], confirmed: bool, now: datetime
) -> None:
    if not subscriber_ids:
        return
    subs = Subscription.__table__
    status = SubscriptionStatus.CONFIRMED if confirmed else SubscriptionStatus.UNCONFIRMED
    values = {
        "list_id": list_id,
        "status": status,
        "source": "import",
        "requested_at": now,
        "confirmed_at": now if confirmed else None,
        "updated_at": now,
    }
    session.execute(
        insert_on_conflict_ignore(session, subs, index_elements=["list_id", "subscriber_id"]),
        [{**values, "subscriber_id": sid} for sid in subscriber_ids],
    )


def _confirm_subscriptions(session: Session, list_id: int, subscriber_ids: list[int], now: datetime) -> None:
    """Confirm these subscribers' subscriptions on the list that are still unconfirmed."""
    if not subscriber_ids:
        return
    subs = Subscription.__table__
    session.execute(
        update(subs)
        .where(
            subs.c.list_id == list_id,
            subs.c.subscriber_id == bindparam("b_sid"),
            subs.c.status == SubscriptionStatus.UNCONFIRMED,
        )
        .values(status=SubscriptionStatus.CONFIRMED, confirmed_at=bindparam("b_now"), updated_at=bindparam("b_now")),
        [{"b_sid": sid, "b_now": now} for sid in subscriber_ids],
    )
