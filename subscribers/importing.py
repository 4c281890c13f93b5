"""CSV import of subscribers into a list: streamed, validated, set-based, all or nothing.

The file is read row by row; each row is checked in Python and written, kept or rejected, to
a temporary staging table in batches (subscribers.import_staging: COPY on PostgreSQL,
executemany on SQLite), so memory stays flat however long the file is. Once the whole file
has been read, a fixed handful of set-based statements merge the staging table into the
store: duplicates within the file, stored subscribers updated, new ones inserted, the list's
subscriptions added or confirmed. The cost is linear in the file's length. The caller owns
the transaction: when this raises, roll back and nothing is imported.

Rejected rows (an invalid address or name, a wrong number of fields, an address repeated
from an earlier line) are reported with their line, the column at fault and why, in line
order, once the file has been read; the other rows are imported. A file that cannot be read
(not UTF-8, broken CSV quoting) raises InvalidInput naming the file and line: nothing is imported.

Every cell (header included) is read through :func:`subscribers.csv_cells.read_cell`: the
``'`` an export puts before a leading ``=``, ``+``, ``-``, ``@``, tab or CR is taken off again,
so an export imports back to the same values.
"""

from __future__ import annotations

import csv
import json
import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from email_validator import EmailNotValidError, validate_email
from sqlalchemy.orm import Session

from newsletter.errors import InvalidInput
from newsletter.store.models import utcnow
from subscribers import import_staging
from subscribers.addresses import check_display_name, normalise_email
from subscribers.csv_cells import read_cell
from subscribers.import_staging import StagedRow, Stager
from subscribers.lists import get_list

#: Columns written by ``subscribers export`` that describe the subscription, not the
#: subscriber: ignored on import so an export can be imported again.
EXPORT_ONLY_COLUMNS = frozenset({"status", "source", "subscribed_at", "confirmed_at", "unsubscribed_at"})
#: Rows held in memory before they are written to the staging table (and progress reported).
BATCH_SIZE = 5000

csv.field_size_limit(min(sys.maxsize, 2**31 - 1) // 1024)  # 2 MB: room for long attributes, not a runaway quote


@dataclass(frozen=True)
class RejectedRow:
    line: int
    reason: str
    #: The column at fault, as the header row names it; None when the row as a whole is (its number of fields).
    field: str | None = None


@dataclass
class ImportSummary:
    imported: int = 0  # newly on the list
    updated: int = 0  # already on the list; name, attributes or status changed
    unchanged: int = 0
    kept_unsubscribed: int = 0  # had left the list: an import does not subscribe them again
    rejected: int = 0  # invalid rows and in-file duplicates, each reported with its line


class _Columns:
    def __init__(self, header: list[str], source: str) -> None:
        names = [read_cell(h.strip()) for h in header]
        if any("\x00" in n for n in names):
            raise InvalidInput("the header row contains a NUL character", where=f"{source}:1")
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
        self.email_name = names[self.email]
        self.name = lowered.index("name") if "name" in lowered else None
        self.name_name = names[self.name] if self.name is not None else None
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

    Rejected rows are reported in line order once the whole file has been read.
    ``on_progress``, when given, is called after each batch of ``batch_size`` rows is staged
    and at the end with the number of data rows read so far (blank lines not counted).

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
    # strict: a quoted field left open, or text after a closing quote, is an error at its row's line,
    # not a row silently swallowed into the one before it.
    reader = csv.reader(handle, strict=True)
    columns = _read_header(reader, source, handle)
    stager = import_staging.open_stager(session)
    read = 0
    try:
        batch: list[StagedRow] = []
        for row in _rows(reader, columns, source, handle):
            read += 1
            batch.append(row)
            if len(batch) >= batch_size:
                _stage_batch(stager, batch)
                batch = []
                if on_progress is not None:
                    on_progress(read)
        _stage_batch(stager, batch)
    except BaseException:
        import_staging.abort(stager)
        raise
    stager.finish()
    if on_progress is not None:
        on_progress(read)
    counts, rejected = import_staging.merge(
        session, list_id, staged=read, email_field=columns.email_name, confirmed=confirmed, now=utcnow()
    )
    for bad in rejected:
        on_reject(RejectedRow(bad.line, bad.reason, bad.field))
    import_staging.drop(session)
    return ImportSummary(
        imported=counts.imported,
        updated=counts.updated,
        unchanged=counts.unchanged,
        kept_unsubscribed=counts.kept_unsubscribed,
        rejected=counts.rejected,
    )


def _stage_batch(stager: Stager, batch: list[StagedRow]) -> None:
    """Write one batch of checked rows (kept and rejected) to the staging table."""
    if batch:
        stager.write(batch)


def _read_header(reader: Iterator[list[str]], source: str, handle: TextIO) -> _Columns:
    with _read_errors(source, lambda: 1, handle):
        header = next(reader, None)
    if header is None:
        raise InvalidInput("the file is empty; expected a header row with an 'email' column", where=source)
    return _Columns(header, source)


class _read_errors:
    """Turns an error reading the file into InvalidInput naming the file and the line being read."""

    def __init__(self, source: str, line: Callable[[], int], handle: TextIO | None = None) -> None:
        self.source, self.line, self.handle = source, line, handle

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: object, exc: BaseException | None, _tb: object) -> None:
        where = f"{self.source}:{self.line()}"
        if isinstance(exc, UnicodeDecodeError):
            found = _first_bad_utf8(self.handle)
            if found is not None:  # the reader decodes ahead of the CSV rows: find the line itself
                line, column, reason = found
                raise InvalidInput(
                    f"not valid UTF-8 ({reason} at character {column} of the line); save the file as UTF-8",
                    where=f"{self.source}:{line}",
                ) from None
            raise InvalidInput(f"not valid UTF-8 ({exc.reason}); save the file as UTF-8", where=where) from None
        if isinstance(exc, csv.Error):
            raise InvalidInput(f"unreadable CSV: {_csv_problem(str(exc))}", where=where) from None
        if isinstance(exc, OSError):
            raise InvalidInput(f"cannot read the file: {exc.strerror}", where=self.source) from None


def _csv_problem(message: str) -> str:
    """The csv module's complaint, in words that say what to fix in the file."""
    if message == "unexpected end of data":
        return 'a quoted field opened on this line is never closed (a " without its closing ")'
    if message.startswith("',' expected after '\"'"):
        return 'text after the closing " of a quoted field (write a " inside a quoted field as "")'
    if message.startswith("field larger than field limit"):
        return f"a field longer than {csv.field_size_limit():,} characters (is a quote left open?)"
    return message


def _first_bad_utf8(handle: TextIO | None) -> tuple[int, int, str] | None:
    """The first line of ``handle``'s file that is not UTF-8: (line number, position in the line counted
    from 1, why), read again from the start in bytes; None when the file cannot be read again.

    A line is decoded on its own: no UTF-8 sequence holds a newline byte, so each line is whole.
    """
    raw = getattr(handle, "buffer", None)
    try:
        if raw is None or not raw.seekable():
            return None
        raw.seek(0)
        for number, line in enumerate(raw, 1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as exc:
                return number, len(line[: exc.start].decode("utf-8")) + 1, exc.reason
    except (OSError, ValueError):
        return None
    return None


def _rows(reader: Iterator[list[str]], columns: _Columns, source: str, handle: TextIO) -> Iterator[StagedRow]:
    """Each non-blank data row, checked: (line, email, name, attributes JSON, None, None) when it is
    kept, (line, None, None, None, column, reason) when it is rejected."""
    line_num = reader.line_num  # type: ignore[attr-defined]
    check = _Checks()
    email_at, email_name = columns.email, columns.email_name
    name_at, name_name = columns.name, columns.name_name
    attributes = columns.attributes
    width = columns.width
    dumps = json.JSONEncoder(ensure_ascii=True).encode
    line = line_num + 1
    with _read_errors(source, lambda: line, handle):
        while True:
            line = reader.line_num + 1  # type: ignore[attr-defined]
            fields = next(reader, None)
            if fields is None:
                return
            if len(fields) != width:
                if not any(f.strip() for f in fields):
                    continue
                yield (line, None, None, None, None, f"has {len(fields)} fields, the header has {width}")
                continue
            cell = fields[email_at]
            if not cell.strip() and not any(f.strip() for f in fields):
                continue
            try:
                email = check.email(read_cell(cell))
            except InvalidInput as exc:
                yield (line, None, None, None, email_name, exc.message)
                continue
            name = ""
            if name_at is not None:
                try:
                    name = check.name(read_cell(fields[name_at]))
                except InvalidInput as exc:
                    yield (line, None, None, None, name_name, exc.message)
                    continue
            values = {}
            for i, key in attributes:
                value = fields[i].strip()
                if value:
                    if "\x00" in value:
                        yield (line, None, None, None, key, f"column {key!r} contains a NUL character")
                        break
                    values[key] = read_cell(value)
            else:
                yield (line, email, name, dumps(values), None, None)


#: An address the fast path may handle: a plain ASCII dot-atom before the only ``@``, ASCII
#: letters, digits, dots and hyphens after it. The local part is email-validator's own
#: DOT_ATOM_TEXT (RFC 5322 atext); see :meth:`_Checks.email`.
_ATEXT = r"a-zA-Z0-9_!#$%&'*+\-/=?^`{|}~"
_PLAIN_ADDRESS = re.compile(rf"([{_ATEXT}]+(?:\.[{_ATEXT}]+)*)@([a-zA-Z0-9.\-]+)")
_DOMAINS_CACHED = 50_000
_MAX_ADDRESS = 254  # email-validator's EMAIL_MAX_LENGTH, in UTF-8 bytes


class _Checks:
    """The checks of subscribers.addresses, with the same answers, fast enough for a million rows.

    ``email`` gives exactly what ``normalise_email`` gives, and raises exactly what it raises.
    For an address matching ``_PLAIN_ADDRESS`` email-validator (2.x, syntax only) does this:
    ``split_email`` splits it at its only ``@`` (an ASCII string has nothing to compose with);
    the local part matches DOT_ATOM_TEXT and comes back as it is (or lower-cased, for a few
    role names: we lower-case anyway); the domain is checked by ``validate_email_domain_name``,
    a function of the domain alone; the normalised address is local part, ``@``, checked
    domain; then three lengths are checked: the address as given, the normalised one, and the
    one with the domain's ASCII form. So the domain's answer is computed once per domain (by
    validating ``a@<domain>``: "a" is a valid local part) and cached for this import, the
    lengths are checked here, and anything else (an invalid domain, an address too long, a
    quoted or internationalised one) goes to ``normalise_email`` itself, error messages and
    all. tests/test_importing.py compares both on a set of hard cases.

    ``name`` gives what ``check_display_name`` gives: a printable string
    (``str.isprintable``) has no character of categories Cc, Zl or Zp, so only its length is
    left to check; any other goes to ``check_display_name``.
    """

    def __init__(self) -> None:
        self.domains: dict[str, tuple[str, str] | None] = {}

    def email(self, raw: str) -> str:
        value = raw.strip()
        plain = _PLAIN_ADDRESS.fullmatch(value)
        if plain is not None:
            local, domain = plain.groups()
            checked = self._domain(domain)
            if checked is not None:
                normal_domain, ascii_domain = checked
                normalised = local + "@" + normal_domain
                if (
                    len(value) <= _MAX_ADDRESS
                    and len(normalised.encode()) <= _MAX_ADDRESS
                    and len(local) + 1 + len(ascii_domain) <= _MAX_ADDRESS
                ):
                    return normalised.lower()
        return normalise_email(raw)

    def _domain(self, domain: str) -> tuple[str, str] | None:
        try:
            return self.domains[domain]
        except KeyError:
            pass
        try:
            result = validate_email("a@" + domain, check_deliverability=False)
            checked: tuple[str, str] | None = (result.domain, result.ascii_domain)
        except EmailNotValidError:
            checked = None
        if len(self.domains) >= _DOMAINS_CACHED:
            self.domains.clear()
        self.domains[domain] = checked
        return checked

    @staticmethod
    def name(raw: str) -> str:
        if len(raw) <= 200 and raw.isprintable():
            return raw.strip()
        return check_display_name(raw)
