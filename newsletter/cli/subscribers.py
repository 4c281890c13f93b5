"""`newsletter subscribers`: add, remove, list, import and export subscribers."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import typer

from newsletter.cli.runtime import err, out, runtime
from newsletter.cli.tables import Col, listing
from subscribers import exporting, importing, subscriptions

app = typer.Typer(help="Add, remove, list, import and export a list's subscribers.", no_args_is_help=True)


@app.command()
def add(
    slug: str = typer.Argument(..., help="The list's slug."),
    email: str = typer.Argument(..., help="The subscriber's address."),
    name: str = typer.Option("", "--name", help="The subscriber's name."),
    confirmed: bool = typer.Option(
        False, "--confirmed", help="Record consent as already confirmed (skip double opt-in)."
    ),
) -> None:
    """Put an address on a list (as unconfirmed unless --confirmed)."""
    with runtime.transaction() as session:
        result = subscriptions.add_subscriber(session, slug, email, name=name, confirmed=confirmed, source="admin")
        sub = result.subscription
        verb = "Added" if result.created else "Already on the list:"
        out.print(f"{verb} {email.strip()} to {slug} ({sub.status}).")


@app.command()
def remove(
    slug: str = typer.Argument(..., help="The list's slug."),
    email: str = typer.Argument(..., help="The subscriber's address."),
) -> None:
    """Unsubscribe an address from a list. Its consent history is kept."""
    with runtime.transaction() as session:
        subscriptions.unsubscribe(session, slug, email, reason="removed by an admin")
    out.print(f"Unsubscribed {email.strip()} from {slug}.")


@app.command("ls")
def list_subscribers(
    slug: str = typer.Argument(..., help="The list's slug."),
    status: str | None = typer.Option(None, "--status", help="Only unconfirmed, confirmed or unsubscribed."),
    as_json: bool = typer.Option(False, "--json", help="A JSON array of objects instead of a table."),
) -> None:
    """List a list's subscribers, ordered by address."""
    columns = [Col("email", keep=True), Col("name"), Col("status"), Col("source"), Col("since")]
    with runtime.transaction() as session:
        rows = (
            {
                "email": r.email,
                "name": r.name,
                "status": r.status,
                "source": r.source,
                "since": r.requested_at.date().isoformat(),
            }
            for r in subscriptions.iter_subscribers(session, slug, status=status)
        )
        count = listing(out, columns, rows, as_json=as_json)
    if not as_json:
        out.print(f"{count} subscriber(s).")


@app.command("import")
def import_(
    slug: str = typer.Argument(..., help="The list's slug."),
    file: Path = typer.Argument(..., help="CSV file with a header row containing an 'email' column."),
    confirmed: bool = typer.Option(
        False, "--confirmed", help="The addresses have already confirmed (consent on record)."
    ),
) -> None:
    """Import subscribers from a CSV file: all rows or nothing.

    The header row needs an 'email' column (any case); an optional 'name' column; every
    other column is kept as an attribute. Rejected rows are reported on stderr with their
    line numbers. Re-importing the same file changes nothing.
    """
    started = time.perf_counter()

    def report(row: importing.RejectedRow) -> None:
        print(f"{file}:{row.line}: rejected: {row.reason}", file=sys.stderr)

    with runtime.transaction() as session:
        summary = importing.import_csv(session, slug, file, confirmed=confirmed, on_reject=report)
    elapsed = time.perf_counter() - started
    out.print(
        f"Imported {summary.imported}, updated {summary.updated}, unchanged {summary.unchanged}, "
        f"rejected {summary.rejected}"
        + (f", kept unsubscribed {summary.kept_unsubscribed}" if summary.kept_unsubscribed else "")
        + f" ({elapsed:.1f} s)."
    )


@app.command()
def export(
    slug: str = typer.Argument(..., help="The list's slug."),
    output: Path | None = typer.Option(None, "-o", "--output", help="Write to this file instead of stdout."),
    status: str | None = typer.Option(None, "--status", help="Only unconfirmed, confirmed or unsubscribed."),
) -> None:
    """Export a list's subscribers as CSV: email,name,status,... then one column per attribute."""
    with runtime.transaction() as session:
        if output is None:
            exporting.export_csv(session, slug, sys.stdout, status=status)
            return
        with open(output, "w", encoding="utf-8", newline="") as handle:
            count = exporting.export_csv(session, slug, handle, status=status)
    err.print(f"Exported {count} subscriber(s) to {output}.")
