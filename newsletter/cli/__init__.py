"""The `newsletter` command: a thin Typer edge over the domain modules.

One module per command group (``database``, ``lists``, ``subscribers``, ``suppressions``,
``segments``, ``issues``, ``templates``, ``media``, ``automations``, ``sends``, ``confirmations``, ``admin``, ``dkim``,
``doctor``, ``inbound``, ``web``, ``dev``); ``runtime`` is what every command shares (the composition root's runtime, the
consoles, the error edge), ``tables`` how listings print, ``lazy`` the group that imports a
command's module only when it runs. The top of the import graph, the program's entry point:
it may import every room below it, the web app (newsletter.http) and the worker
(newsletter.worker) among them, since ``newsletter web``, ``worker`` and ``scheduler`` start
them; nothing in the project imports it.

Each command is imported only when it runs (:mod:`newsletter.cli.lazy`): ``newsletter --help``
imports no command module, and a command imports what it uses, so none pays for Celery, the
web app or the renderer unless it needs them. The table below lists the commands in the
order ``newsletter --help`` shows them, with the first paragraph of each one's help.
"""

from __future__ import annotations

import sys
from typing import ClassVar

import typer

from newsletter.cli.lazy import Entry, LazyGroup


class Commands(LazyGroup):
    entries: ClassVar[dict[str, Entry]] = {
        # One command each
        "send": Entry(
            "sends",
            "start",
            "Send an issue: render it once, snapshot the list's confirmed subscribers, queue the batches.",
        ),
        "worker": Entry("sends", "worker", "Run a Celery worker that delivers queued batches (Ctrl-C to stop)."),
        "scheduler": Entry(
            "sends",
            "scheduler",
            "Run the scheduler (Celery beat): it starts due sends, plans weekly slots and sequence steps, decides subject tests.",
        ),
        "smtp-capture": Entry(
            "dev", "smtp_capture", "Run a development SMTP server that keeps every message and prints a line for each."
        ),
        "web": Entry(
            "web",
            "web",
            "Serve the subscriber pages, the admin UI (/admin/), the admin API (/api/) and /metrics (Ctrl-C to stop).",
        ),
        "doctor": Entry(
            "doctor",
            "doctor",
            "Check DKIM, alignment, return path, postal address, https, secret key, unsubscribe, SMTP relays; "
            "exit 1 naming gaps.",
        ),
        "inbound": Entry(
            "inbound",
            "inbound",
            "Receive bounces, complaints (ARF) and List-Unsubscribe mail over SMTP, and act on them.",
        ),
        # Groups of commands
        "db": Entry("database", "app", "Create or migrate the database schema."),
        "lists": Entry("lists", "app", "Create and inspect mailing lists."),
        "subscribers": Entry("subscribers", "app", "Add, remove, list, import and export a list's subscribers."),
        "suppressions": Entry("suppressions", "app", "Addresses that are never mailed, on any list."),
        "segments": Entry(
            "segments",
            "app",
            "Saved segments of a list: filters on attributes, name, domain, subscription and engagement.",
        ),
        "issues": Entry("issues", "app", "Write, check and preview issues (Markdown with front matter)."),
        "templates": Entry(
            "templates",
            "app",
            "Email templates: the layouts of lists and issues, checked when stored (the shipped one is read-only).",
        ),
        "media": Entry("media", "app", "The media library: images for issues, served from NEWSLETTER_BASE_URL/media/."),
        "automations": Entry(
            "automations",
            "app",
            "Welcome, sequence and goodbye emails of a list: sent by the workers, once per person.",
        ),
        "sends": Entry("sends", "app", "Watch and steer sends: status, delivery log, pause, resume, cancel."),
        "broker": Entry("dev", "broker_app", "The embedded Redis used when NEWSLETTER_BROKER_URL is unset."),
        "admin": Entry("admin", "app", "API tokens and admin UI users (roles: admin, editor)."),
        "dkim": Entry("dkim", "app", "DKIM: the key that signs every message."),
        "bounces": Entry("inbound", "bounces_app", "Bounces, complaints and unsubscribe requests received."),
    }


app = typer.Typer(
    cls=Commands,
    help="Run an email newsletter: lists, subscribers, issues and sends.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.callback()
def _group() -> None:
    # Makes `app` a group although its commands are registered by Commands, not on it.
    pass


def main() -> None:
    """Entry point: domain errors become one clear line on stderr and exit status 1."""
    try:
        app()
    except Exception as exc:
        line = _error_line(exc)
        if line is None:
            raise
        from rich.text import Text

        from newsletter.cli.runtime import err

        err.print(Text.assemble((line[0], "red"), line[1]))
        sys.exit(1)


def _error_line(exc: Exception) -> tuple[str, str] | None:
    """The prefix and text of the one line shown for an error the CLI expects, or None."""
    from newsletter.errors import ConfigError, NewsletterError

    if isinstance(exc, ConfigError):
        return "configuration error: ", str(exc)
    if isinstance(exc, NewsletterError):
        return "error: ", str(exc)
    # Only a command that imported SQLAlchemy can raise this (so --help need not import it):
    # the database went away or is locked beyond the busy timeout.
    sqlalchemy_exc = sys.modules.get("sqlalchemy.exc")
    if sqlalchemy_exc is not None and isinstance(exc, sqlalchemy_exc.OperationalError):
        return "database error: ", str(exc.orig).strip().splitlines()[0]
    return None
