"""The `newsletter` command: a thin Typer edge over the domain modules."""

from __future__ import annotations

import sys

import typer
from rich.text import Text
from sqlalchemy.exc import OperationalError

from newsletter.cli import admin, confirmations, database, dev, issues, lists, sends, subscribers, suppressions, web
from newsletter.cli import dkim as dkim_cli
from newsletter.cli import doctor as doctor_cli
from newsletter.cli import inbound as inbound_cli
from newsletter.cli.runtime import err
from newsletter.errors import ConfigError, NewsletterError

app = typer.Typer(
    help="Run an email newsletter: lists, subscribers, issues and sends.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(database.app, name="db")
app.add_typer(lists.app, name="lists")
# Asking a list's unconfirmed subscribers to confirm lives in its own module, under `newsletter lists`.
lists.app.command("request-confirmation")(confirmations.request_confirmation)
lists.app.command("confirmation-log")(confirmations.confirmation_log)
lists.app.command("confirmation-runs")(confirmations.confirmation_runs)
app.add_typer(subscribers.app, name="subscribers")
app.add_typer(suppressions.app, name="suppressions")
app.add_typer(issues.app, name="issues")
app.add_typer(sends.app, name="sends")
app.command("send")(sends.start)
app.command("worker")(sends.worker)
app.command("scheduler")(sends.scheduler)
app.command("smtp-capture")(dev.smtp_capture)
app.command("web")(web.web)
app.add_typer(dev.broker_app, name="broker")
app.add_typer(admin.app, name="admin")
app.add_typer(dkim_cli.app, name="dkim")
app.command("doctor")(doctor_cli.doctor)
app.command("inbound")(inbound_cli.inbound)
app.add_typer(inbound_cli.bounces_app, name="bounces")


def main() -> None:
    """Entry point: domain errors become one clear line on stderr and exit status 1."""
    try:
        app()
    except ConfigError as exc:
        err.print(Text.assemble(("configuration error: ", "red"), str(exc)))
        sys.exit(1)
    except NewsletterError as exc:
        err.print(Text.assemble(("error: ", "red"), str(exc)))
        sys.exit(1)
    except OperationalError as exc:
        # The database went away or is locked beyond the busy timeout: one line, not a traceback.
        err.print(Text.assemble(("database error: ", "red"), str(exc.orig).strip().splitlines()[0]))
        sys.exit(1)
