"""`newsletter inbound` (the SMTP server for bounces and unsubscribe mail) and `newsletter bounces ls`."""

from __future__ import annotations

import typer

from newsletter.cli.runtime import out, runtime
from newsletter.cli.tables import Col, listing
from newsletter.store.states import BounceKind

bounces_app = typer.Typer(help="Bounces, complaints and unsubscribe requests received.", no_args_is_help=True)


def inbound(
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (0.0.0.0 for every interface)."),
    port: int = typer.Option(2525, "--port", help="Port to listen on (0 picks a free one, printed at start-up)."),
    max_size: int = typer.Option(10, "--max-size", min=1, help="Largest message accepted, in MB."),
) -> None:
    """Receive bounces, complaints (ARF) and List-Unsubscribe mail over SMTP, and act on them.

    Route here the mail for NEWSLETTER_RETURN_PATH and its + forms, and for the
    unsubscribe+TOKEN@ addresses of your lists' sender domains. Prints one line per
    event; Ctrl-C or SIGTERM stops it.
    """
    from newsletter import logs
    from newsletter.feedback.inbound import Receiver, mailboxes_for, main_loop

    settings = runtime.settings
    logs.configure(settings.log_format)
    receiver = Receiver(
        runtime.sessions,  # refuses a missing or outdated schema before listening
        mailboxes_for(settings, runtime.signer),
        soft_limit=settings.soft_bounce_limit,
        soft_days=settings.soft_bounce_days,
    )
    main_loop(
        receiver,
        host=host,
        port=port,
        data_size_limit=max_size * 1024 * 1024,
        print_events=settings.log_format != "json",
    )


@bounces_app.command("ls")
def list_events(
    kind: str = typer.Option(None, "--kind", help=f"Only events of one kind: {', '.join(BounceKind)}."),
    email: str = typer.Option(None, "--email", help="Only events for one address."),
    unproven: bool = typer.Option(
        False, "--unproven", help="Only reports that proved nothing (kept for review; they changed nothing)."
    ),
    proven: bool = typer.Option(False, "--proven", help="Only proven events (the ones acted on)."),
    limit: int = typer.Option(50, "--limit", help="How many of the newest events to show."),
    as_json: bool = typer.Option(False, "--json", help="A JSON array of objects instead of a table."),
) -> None:
    """The newest bounce, complaint and unsubscribe events, newest first.

    An event is acted on only when it proved that we mailed the address (a VERP return
    path, the Message-ID of our message, a signed link of ours); the others are listed
    with proven "no" and changed nothing.
    """
    from newsletter.errors import InvalidInput
    from subscribers.bounces import recent_events

    if unproven and proven:
        raise InvalidInput("use --proven or --unproven, not both", where="--unproven")
    with runtime.transaction() as session:
        rows = recent_events(
            session, limit=limit, kind=kind, email=email, proven=False if unproven else True if proven else None
        )
    columns = [
        Col("created_at", "when"),
        Col("email", keep=True),
        Col("kind"),
        Col("proven"),
        Col("source"),
        Col("delivery_id", "delivery", keep=True),
        Col("send_id", "send", keep=True),
        Col("detail"),
    ]
    listing(
        out,
        columns,
        (
            {
                "created_at": r.created_at,
                "email": r.email,
                "kind": r.kind,
                "proven": r.proven if as_json else ("yes" if r.proven else "no"),
                "source": r.source,
                "delivery_id": r.delivery_id,
                "send_id": r.send_id,
                "detail": r.detail,
            }
            for r in rows
        ),
        as_json=as_json,
    )
    if not as_json:
        shown = sum(not r.proven for r in rows)
        out.print(
            f"{len(rows)} event(s)." + (f" {shown} unproven: kept for review, they changed nothing." if shown else "")
        )
