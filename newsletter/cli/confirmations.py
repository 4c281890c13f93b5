"""`newsletter lists request-confirmation`, `confirmation-log`, `confirmation-runs`: ask a list's
unconfirmed subscribers to confirm, and read what happened (registered on the `lists` group)."""

from __future__ import annotations

import json

import typer

from newsletter.cli.runtime import out, runtime
from newsletter.cli.tables import Col, show
from newsletter.store.states import ConfirmationMailStatus
from subscribers import confirmation_requests


def request_confirmation(
    slug: str = typer.Argument(..., help="The list."),
    again: bool = typer.Option(False, "--again", help="Also ask those asked in the last 7 days."),
) -> None:
    """Mail the double opt-in request to the list's unconfirmed subscribers (imported or added).

    Those asked in the last 7 days are left out (unless --again), and so is every suppressed
    address. Workers (`newsletter worker`) send the emails, rate-limited like a send; each
    recipient's outcome is logged (`newsletter lists confirmation-log SLUG`). Whoever confirms
    gets the list's next send.
    """
    from newsletter.delivery.send_queue import queue_confirmation_run

    settings = runtime.settings
    with runtime.transaction() as session:
        started = confirmation_requests.start_run(
            session, slug, batch_size=settings.batch_size, again=again, created_by="cli"
        )
    if started.run_id is not None:
        # Raises QueueUnavailable (an error line naming the stored run) before anything says "queued".
        queue_confirmation_run(runtime.tasks, started.run_id, started.batches)
    out.print(started.describe())
    if started.run_id is None:
        return
    out.print(
        f"Workers (`newsletter worker`) mail them; see each outcome with: newsletter lists confirmation-log {slug}"
    )


def confirmation_log(
    slug: str = typer.Argument(..., help="The list."),
    run_id: int | None = typer.Option(
        None, "--run", help="Which request (default: the latest; see confirmation-runs)."
    ),
    status: str | None = typer.Option(None, "--status", help=f"Only one of: {', '.join(ConfirmationMailStatus)}."),
    as_json: bool = typer.Option(False, "--json", help='One JSON object: {"run": {...}, "recipients": [...]}.'),
) -> None:
    """Each recipient of a request to confirm: status, attempts, the SMTP server's reply, Message-ID, time."""
    with runtime.transaction() as session:
        summary = confirmation_requests.get_run(session, slug, run_id)
        _, rows = confirmation_requests.run_log(session, summary.run.id, status=status)
    if as_json:
        print(json.dumps({"run": summary.as_json(), "recipients": [r.as_json() for r in rows]}, ensure_ascii=False))
        return
    out.print(_headline(summary))
    columns = [
        Col("id", keep=True, right=True),
        Col("email", keep=True),
        Col("status"),
        Col("attempts", "tries", right=True),
        Col("smtp_reply", "reply"),
        Col("message_id", "message-id", keep=True),
        Col("sent_at", "sent"),
    ]
    if rows:
        show(out, columns, (r.as_json() | {"sent_at": r.sent_at} for r in rows))
    out.print(f"{len(rows)} recipient{'s' if len(rows) != 1 else ''}{f' with status {status}' if status else ''}.")


def confirmation_runs(
    slug: str = typer.Argument(..., help="The list."),
    as_json: bool = typer.Option(False, "--json", help="A JSON array of objects instead of a table."),
) -> None:
    """The list's requests to confirm, newest first, with their counts."""
    with runtime.transaction() as session:
        runs = confirmation_requests.runs_of_list(session, slug)
    if as_json:
        print(json.dumps([r.as_json() for r in runs], ensure_ascii=False))
        return
    if not runs:
        out.print(f"No requests to confirm yet. Ask the unconfirmed with: newsletter lists request-confirmation {slug}")
        return
    columns = [
        Col("id", keep=True, right=True),
        Col("status"),
        Col("queued", right=True),
        Col("sent", right=True),
        Col("failed", right=True),
        Col("skipped", right=True),
        Col("pending", right=True),
        Col("left_out", "left out"),
        Col("created_by", "by"),
        Col("created_at", "started"),
    ]
    show(out, columns, (r.as_json() | {"left_out": _left_out(r), "created_at": r.run.created_at} for r in runs))


def _headline(summary: confirmation_requests.RunSummary) -> str:
    r, c = summary.run, summary.as_json()
    when = r.created_at.strftime("%Y-%m-%d %H:%M:%S UTC")
    head = (
        f"Request to confirm {r.id} for {summary.list_slug}, started {when}{' with --again' if r.again else ''}: "
        f"{r.status}; {r.total} queued: {c['sent']} sent, {c['failed']} failed, {c['skipped']} skipped, "
        f"{c['pending']} pending."
    )
    left = _left_out(summary)
    return head + (f" Left out: {left}." if left else "")


def _left_out(summary: confirmation_requests.RunSummary) -> str:
    r = summary.run
    parts = [
        f"{n} {what}"
        for n, what in (
            (r.asked_recently, "asked recently"),
            (r.suppressed, "suppressed"),
            (r.already_queued, "already queued"),
        )
        if n
    ]
    return ", ".join(parts)
