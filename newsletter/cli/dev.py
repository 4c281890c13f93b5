"""Development helpers: the capture SMTP server and the embedded Redis."""

from __future__ import annotations

from pathlib import Path

import typer

from newsletter.cli.runtime import out, runtime
from newsletter.devtools import embedded_redis

broker_app = typer.Typer(help="The embedded Redis used when NEWSLETTER_BROKER_URL is unset.", no_args_is_help=True)


def smtp_capture(
    port: int = typer.Option(1025, "--port", help="Port to listen on (127.0.0.1)."),
    maildir: Path = typer.Option(Path("var/outbox"), "--maildir", help="Folder where every message is kept as a file."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on."),
) -> None:
    """Run a development SMTP server that keeps every message and prints a line for each."""
    from newsletter.devtools.smtp_capture import main_loop

    main_loop(host=host, port=port, maildir=maildir)


@broker_app.command("start")
def broker_start() -> None:
    """Start the embedded Redis (if it is not running) and print its URL."""
    path = embedded_redis.ensure_running(runtime.settings.var_dir)
    out.print(f"Embedded Redis running at redis+socket://{path}")


@broker_app.command("stop")
def broker_stop() -> None:
    """Stop the embedded Redis, saving what it holds."""
    stopped = embedded_redis.stop(runtime.settings.var_dir)
    out.print("Embedded Redis stopped." if stopped else "Embedded Redis was not running.")
