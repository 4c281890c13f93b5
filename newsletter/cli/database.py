"""`newsletter db`: create and migrate the schema."""

from __future__ import annotations

import typer

from newsletter.cli.runtime import out, runtime
from newsletter.store import db

app = typer.Typer(help="Create or migrate the database schema.", no_args_is_help=True)


@app.command()
def upgrade() -> None:
    """Create the schema, or migrate it to the newest version. Safe to run again."""
    engine = runtime.engine
    before = db.current_revision(engine)
    db.upgrade(engine)
    after = db.current_revision(engine)
    where = engine.url.render_as_string(hide_password=True)
    if before == after:
        out.print(f"Database {where} is up to date (revision {after}).")
    else:
        out.print(f"Database {where} migrated from {before or 'empty'} to revision {after}.")
