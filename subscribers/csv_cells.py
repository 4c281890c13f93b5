"""CSV cells a spreadsheet will not run: the one place every export writes through, and the import reads back.

A cell that begins with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return is taken by
Excel, LibreOffice and Google Sheets as a formula (``=HYPERLINK(...)``, ``-2+3+cmd|...``,
``@SUM(...)``). Following OWASP's CSV-injection guidance, such a cell is written with a
leading ``'``, which makes the spreadsheet show it as text. The rule has no exceptions:

* a cell made only of such characters (``-``, ``==``) gets the mark too;
* so does a number like ``-1`` held in a text field (an attribute, a name): OWASP says to
  prefix every such cell, and telling a harmless number from ``-1+cmd|...`` is exactly the
  guessing a spreadsheet does. The service's own numeric columns (ids, counts, SMTP codes)
  are never negative, so they never carry it.

To keep the mark reversible, a value that already begins with one or more ``'`` followed by
a trigger gets one ``'`` more. :func:`read_cell` takes exactly one ``'`` off a cell that
begins with ``'`` (one or more) and then a trigger, and leaves every other cell alone, so
``read_cell(safe_cell(v)) == v`` for every string.

The writer also quotes every cell that holds a CR or LF anywhere. Python's csv module quotes
only the characters of its line terminator, so with ``"\n"`` a bare CR inside a cell (an SMTP
reply, an attribute) went out unquoted: a spreadsheet, and the csv reader, then start a new
row there, and the text after the CR becomes a cell of its own that nothing has checked.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from typing import Any, Protocol

#: The first characters that make a spreadsheet evaluate a cell.
TRIGGERS = frozenset("=+-@\t\r")
MARK = "'"


class _Writable(Protocol):
    def write(self, text: str, /) -> Any: ...


def _needs_mark(text: str) -> bool:
    rest = text.lstrip(MARK)
    return bool(rest) and rest[0] in TRIGGERS


def safe_cell(value: object) -> str:
    """``value`` as a CSV cell no spreadsheet evaluates (None is an empty cell)."""
    text = "" if value is None else str(value)
    return MARK + text if _needs_mark(text) else text


def read_cell(text: str) -> str:
    """The value :func:`safe_cell` was given: one ``'`` less before a trigger character."""
    return text[1:] if text.startswith(MARK) and _needs_mark(text) else text


class _Terminated:
    """Writes each row with ``terminator`` in place of the CRLF the csv writer was given."""

    def __init__(self, out: _Writable, terminator: str) -> None:
        self.out, self.terminator = out, terminator

    def write(self, line: str) -> Any:
        # A cell with a CR or LF in it is quoted, so a row's own CRLF is always its last two characters.
        return self.out.write(line[:-2] + self.terminator if line.endswith("\r\n") else line)


class SafeWriter:
    """``csv.writer`` whose every cell goes through :func:`safe_cell`, and whose cells holding a CR
    or LF are always quoted, whatever the line terminator."""

    def __init__(self, out: _Writable, *, lineterminator: str = "\n", **options: Any) -> None:
        target = out if lineterminator == "\r\n" else _Terminated(out, lineterminator)
        self._writer = csv.writer(target, lineterminator="\r\n", **options)

    def writerow(self, row: Iterable[object]) -> Any:
        return self._writer.writerow([safe_cell(cell) for cell in row])

    def writerows(self, rows: Iterable[Iterable[object]]) -> None:
        for row in rows:
            self.writerow(row)


def writer(out: _Writable, *, lineterminator: str = "\n", **options: Any) -> SafeWriter:
    """A CSV writer for an export: like ``csv.writer(out, lineterminator=...)``, every cell made safe."""
    return SafeWriter(out, lineterminator=lineterminator, **options)
