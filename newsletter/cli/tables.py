"""How every CLI listing prints: a table that never cuts or folds an address, or JSON.

A listing names its columns once (:class:`Col`) and hands over plain rows (dicts). On a
terminal the columns marked ``keep`` (addresses, ids, slugs) keep their full width; the
other columns give way (shortened with an ellipsis or wrapped). When the terminal is too
narrow even for that, each row is printed as a block of ``key: value`` lines instead, so
no address is ever cut or folded. With ``--json`` the same rows are written as one JSON
array, streamed row by row (a delivery log of a million rows never sits in memory).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

#: What every column that gives way keeps at least, before the listing turns to blocks.
MIN_OTHER = 6


class Console(Protocol):
    """Where a listing prints: a rich Console, or the CLI's (newsletter.cli.runtime.LazyConsole)."""

    @property
    def width(self) -> int: ...

    def print(self, *objects: Any, soft_wrap: bool | None = None) -> None: ...


@dataclass(frozen=True)
class Col:
    key: str  # the row's key, and the JSON field
    header: str = ""  # defaults to the key
    keep: bool = False  # never cut or folded (addresses, ids, slugs)
    right: bool = False  # numbers

    @property
    def title(self) -> str:
        return self.header or self.key


def cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    return str(value)


def show(console: Console, columns: list[Col], rows: Iterable[Mapping[str, Any]]) -> int:
    """Print the rows as a table (or blocks, on a narrow terminal); returns how many."""
    rows = list(rows)
    texts = [[cell(row.get(c.key)) for c in columns] for row in rows]
    kept = [max([len(c.title), *(len(t[i]) for t in texts)]) for i, c in enumerate(columns) if c.keep]
    others = sum(1 for c in columns if not c.keep)
    # Borders and padding take 3 characters a column, plus one.
    needed = sum(kept) + MIN_OTHER * others + 3 * len(columns) + 1
    if needed > console.width:
        _blocks(console, columns, texts)
        return len(rows)
    # Where the terminal has room, the other columns keep at least their header whole.
    headers_fit = sum(kept) + sum(len(c.title) for c in columns if not c.keep) + 3 * len(columns) + 1 <= console.width
    from rich.table import Table  # here: a listing printed as JSON never imports it

    table = Table()
    for i, c in enumerate(columns):
        if c.keep:
            width = max([len(c.title), *(len(t[i]) for t in texts)])
            table.add_column(
                c.title, no_wrap=True, overflow="ignore", min_width=width, justify="right" if c.right else "left"
            )
        else:
            table.add_column(
                c.title,
                overflow="ellipsis",
                justify="right" if c.right else "left",
                min_width=len(c.title) if headers_fit else None,
            )
    for t in texts:
        table.add_row(*t)
    console.print(table)
    return len(rows)


def _blocks(console: Console, columns: list[Col], texts: list[list[str]]) -> None:
    label = max(len(c.title) for c in columns)
    for n, t in enumerate(texts):
        if n:
            console.print("")
        for c, value in zip(columns, t, strict=True):
            # soft_wrap: a long value runs on rather than being cut; the terminal shows all of it.
            console.print(f"{c.title.rjust(label)}: {value}", soft_wrap=True)


def write_json(columns: list[Col], rows: Iterable[Mapping[str, Any]]) -> int:
    """Write the rows (all their keys) as one JSON array on stdout, a row at a time; returns how many."""
    out = sys.stdout
    out.write("[")
    count = 0
    for row in rows:
        out.write(",\n" if count else "\n")
        # Every key of the row: a listing may carry more in JSON than its table shows.
        out.write(json.dumps({key: _json(value) for key, value in row.items()}, ensure_ascii=False))
        count += 1
    out.write("\n]\n" if count else "]\n")
    out.flush()
    return count


def listing(
    console: Console, columns: list[Col], rows: Iterable[Mapping[str, Any]], *, as_json: bool, empty: str = ""
) -> int:
    """The one way a listing prints: JSON when asked, else a table, or ``empty`` when there is nothing."""
    if as_json:
        return write_json(columns, rows)
    rows = list(rows)
    if not rows and empty:
        console.print(empty)
        return 0
    return show(console, columns, rows)


def _json(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat(timespec="seconds")
    return value
