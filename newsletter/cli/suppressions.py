"""`newsletter suppressions`: addresses that are never mailed, on any list."""

from __future__ import annotations

import typer

from newsletter.cli.runtime import out, runtime
from newsletter.cli.tables import Col, listing
from newsletter.store.states import SuppressionReason
from subscribers import suppressions

app = typer.Typer(help="Addresses that are never mailed, on any list.", no_args_is_help=True)


@app.command()
def add(
    email: str = typer.Argument(..., help="The address to suppress."),
    reason: str = typer.Option(
        SuppressionReason.ADMIN.value, "--reason", help=f"One of: {', '.join(SuppressionReason)}."
    ),
    note: str = typer.Option("", "--note", help="Free text kept with the suppression."),
) -> None:
    """Suppress an address: it is never mailed again, on any list."""
    with runtime.transaction() as session:
        row, created = suppressions.suppress(session, email, reason=reason, note=note)
    out.print(
        f"Suppressed {row.email} ({row.reason})." if created else f"{row.email} was already suppressed ({row.reason})."
    )


@app.command("ls")
def list_all(
    as_json: bool = typer.Option(False, "--json", help="A JSON array of objects instead of a table."),
) -> None:
    """List suppressed addresses."""
    with runtime.transaction() as session:
        rows = suppressions.all_suppressions(session)
    columns = [Col("email", keep=True), Col("reason"), Col("since"), Col("note")]
    listing(
        out,
        columns,
        ({"email": r.email, "reason": r.reason, "since": r.created_at, "note": r.note} for r in rows),
        as_json=as_json,
    )
    if not as_json:
        out.print(f"{len(rows)} suppressed address(es).")


@app.command()
def remove(email: str = typer.Argument(..., help="The address to allow again.")) -> None:
    """Lift a suppression."""
    with runtime.transaction() as session:
        suppressions.unsuppress(session, email)
    out.print(f"{email.strip()} is no longer suppressed.")
