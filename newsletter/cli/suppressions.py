"""`newsletter suppressions`: addresses that are never mailed, on any list."""

from __future__ import annotations

import typer
from rich.table import Table

from newsletter.cli.runtime import out, runtime
from newsletter.models import SUPPRESSION_REASONS
from subscribers import suppressions

app = typer.Typer(help="Addresses that are never mailed, on any list.", no_args_is_help=True)


@app.command()
def add(
    email: str = typer.Argument(..., help="The address to suppress."),
    reason: str = typer.Option("admin", "--reason", help=f"One of: {', '.join(SUPPRESSION_REASONS)}."),
    note: str = typer.Option("", "--note", help="Free text kept with the suppression."),
) -> None:
    """Suppress an address: it is never mailed again, on any list."""
    with runtime.transaction() as session:
        row, created = suppressions.suppress(session, email, reason=reason, note=note)
    out.print(f"Suppressed {row.email} ({row.reason})." if created else f"{row.email} was already suppressed ({row.reason}).")


@app.command("ls")
def list_all() -> None:
    """List suppressed addresses."""
    with runtime.transaction() as session:
        rows = suppressions.all_suppressions(session)
    table = Table("email", "reason", "since", "note")
    for row in rows:
        table.add_row(row.email, row.reason, row.created_at.isoformat(timespec="seconds"), row.note)
    out.print(table)
    out.print(f"{len(rows)} suppressed address(es).")


@app.command()
def remove(email: str = typer.Argument(..., help="The address to allow again.")) -> None:
    """Lift a suppression."""
    with runtime.transaction() as session:
        suppressions.unsuppress(session, email)
    out.print(f"{email.strip()} is no longer suppressed.")
