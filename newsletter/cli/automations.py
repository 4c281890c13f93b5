"""`newsletter automations`: a list's welcome, the steps of its sequence and its goodbye, and their log."""

from __future__ import annotations

import json

import typer

from newsletter.cli.runtime import out, print_last_line, render_settings, runtime
from newsletter.cli.tables import Col, listing, show
from newsletter.store.states import AutomationKind, AutomationMailStatus
from subscribers import automation_mails, automations

app = typer.Typer(
    help="Welcome, sequence and goodbye emails of a list: sent by the workers, once per person.",
    no_args_is_help=True,
)

LIST_HELP = "The list's slug."


@app.command("show")
def show_list(
    list_slug: str = typer.Argument(..., metavar="LIST", help=LIST_HELP),
    as_json: bool = typer.Option(False, "--json", help="One JSON object: welcome, steps, goodbye."),
) -> None:
    """Show a list's welcome, sequence steps and goodbye, each with its emails counted by status."""
    with runtime.reading() as session:
        view = automations.overview(session, list_slug)
    if as_json:
        print(json.dumps(view.as_json(), ensure_ascii=False))
        return
    out.print(f"Welcome:  {_welcome(view.welcome)}")
    out.print(f"Goodbye:  {_goodbye(view.goodbye)}")
    changed = [automations.describe(v.kind, v.offset_days) for v in [view.welcome, *view.steps] if v.issue_changed]
    if changed:
        out.print(
            f"Changed:  the issue of {', '.join(changed)} was edited after it was set up; it sends the version it had "
            f"until you run: newsletter automations refresh {list_slug}"
        )
    if not view.steps:
        out.print(f"Sequence: no steps (add one with: newsletter automations add-step {list_slug} ISSUE --day N)")
        return
    out.print(f"Sequence: {len(view.steps)} step{'s' if len(view.steps) != 1 else ''}, days after confirming:")
    columns = [
        Col("id", "step", keep=True, right=True),
        Col("day", right=True),
        Col("issue", keep=True, right=True),
        Col("subject"),
        *(Col(str(s), right=True) for s in AutomationMailStatus),
    ]
    show(out, columns, (s.as_json() for s in view.steps))


def _counts(view: automations.AutomationView) -> str:
    return ", ".join(f"{view.counts.get(s, 0)} {s}" for s in AutomationMailStatus)


def _content(view: automations.AutomationView) -> str:
    return "the shipped text" if view.issue_id is None else f"issue {view.issue_id} ({view.subject})"


def _welcome(view: automations.AutomationView) -> str:
    if not view.enabled:
        return "off" + (f" ({_counts(view)})" if view.id is not None else "")
    who = (
        "who confirm through the opt-in link or are added as confirmed"
        if view.also_added
        else "who confirm through the opt-in link"
    )
    return f"on, {_content(view)}, to those {who} ({_counts(view)})"


def _goodbye(view: automations.AutomationView) -> str:
    if not view.enabled:
        return "off" + (f" ({_counts(view)})" if view.id is not None else "")
    return f"on, the shipped text, to those who leave by themselves ({_counts(view)})"


@app.command()
def welcome(
    list_slug: str = typer.Argument(..., metavar="LIST", help=LIST_HELP),
    on: bool = typer.Option(False, "--on", help="Switch the welcome on."),
    off: bool = typer.Option(False, "--off", help="Switch it off: nobody else gets it (no one gets it twice anyway)."),
    issue: int | None = typer.Option(None, "--issue", help="Send this issue of the list as the welcome."),
    shipped_text: bool = typer.Option(
        False, "--shipped-text", help="Send the shipped text (templates/email/welcome.*) instead of an issue."
    ),
    also_added: bool = typer.Option(
        False, "--also-added", help="Welcome subscribers an editor adds as confirmed too (not CSV imports)."
    ),
    opt_in_only: bool = typer.Option(
        False, "--opt-in-only", help="Welcome only those who confirm through the opt-in link (the default)."
    ),
) -> None:
    """Set a list's welcome email: on or off, the issue it sends (or the shipped text), and who gets it.

    Only the options given change. The welcome goes once per person and list, when they confirm.
    """
    from newsletter.delivery.automation_editions import freeze_if_on
    from newsletter.errors import InvalidInput

    if on and off:
        raise InvalidInput("give --on or --off, not both", where="--off")
    if also_added and opt_in_only:
        raise InvalidInput("give --also-added or --opt-in-only, not both", where="--opt-in-only")
    enabled = True if on else False if off else None
    added = True if also_added else False if opt_in_only else None
    if enabled is None and added is None and issue is None and not shipped_text:
        raise InvalidInput(
            "nothing to change: give at least one of --on, --off, --issue, --shipped-text, --also-added, --opt-in-only"
        )
    with runtime.transaction() as session:
        changed = automations.set_welcome(
            session, list_slug, enabled=enabled, issue_id=issue, shipped_text=shipped_text, also_added=added
        )
        freeze_if_on(session, changed, render_settings())  # refused (and nothing stored) if it cannot render
        view = automations.overview(session, list_slug).welcome
    out.print(f"Welcome of {list_slug}: {_welcome(view)}.")


@app.command()
def goodbye(
    list_slug: str = typer.Argument(..., metavar="LIST", help=LIST_HELP),
    on: bool = typer.Option(False, "--on", help="Switch the goodbye on."),
    off: bool = typer.Option(False, "--off", help="Switch it off (the default)."),
) -> None:
    """Switch a list's goodbye email on or off: the shipped text, sent once to whoever leaves by themselves.

    Never after a bounce, a complaint, an editor's removal or "leave everything".
    """
    from newsletter.delivery.automation_editions import freeze_if_on
    from newsletter.errors import InvalidInput

    if on == off:
        raise InvalidInput("give --on or --off", where="--on")
    with runtime.transaction() as session:
        changed = automations.set_goodbye(session, list_slug, enabled=on)
        freeze_if_on(session, changed, render_settings())
        view = automations.overview(session, list_slug).goodbye
    out.print(f"Goodbye of {list_slug}: {_goodbye(view)}.")


@app.command("add-step")
def add_step(
    list_slug: str = typer.Argument(..., metavar="LIST", help=LIST_HELP),
    issue: int = typer.Argument(..., metavar="ISSUE", help="The issue of the list this step sends."),
    day: int = typer.Option(..., "--day", help="Days after each person confirmed (0: right after the welcome)."),
) -> None:
    """Add a step to a list's sequence: an issue, sent to each person DAY days after they confirm.

    Only people who confirm from now on get it. Prints the step's id alone on the last line.
    """
    from newsletter.delivery.automation_editions import freeze_if_on

    with runtime.transaction() as session:
        step = automations.add_step(session, list_slug, issue, day)
        freeze_if_on(session, step, render_settings())
        step_id = step.id
    out.print(f"Added step {step_id} to {list_slug}'s sequence: issue {issue}, day {day} after confirming.")
    print_last_line(step_id)


@app.command()
def refresh(list_slug: str = typer.Argument(..., metavar="LIST", help=LIST_HELP)) -> None:
    """Have the list's welcome, steps and goodbye send their issues (and the shipped texts) as they are now.

    What an automated email sends is rendered when it is set up and frozen, as a send freezes its
    issue: an issue edited since reaches nobody until this.
    """
    from newsletter.delivery.automation_editions import refresh as refresh_all

    with runtime.transaction() as session:
        done = refresh_all(session, list_slug, render_settings())
        names = [automations.describe(a.kind, a.offset_days) for a in done]
    out.print(f"Refreshed {len(done)} automated email(s) of {list_slug}" + (f": {', '.join(names)}." if names else "."))


@app.command("remove-step")
def remove_step(
    list_slug: str = typer.Argument(..., metavar="LIST", help=LIST_HELP),
    step: int = typer.Argument(..., metavar="STEP", help="The step's id (see `newsletter automations show LIST`)."),
) -> None:
    """Remove a step from a list's sequence: nobody gets it any more; its log stays."""
    with runtime.transaction() as session:
        automations.remove_step(session, list_slug, step)
    out.print(f"Removed step {step} from {list_slug}'s sequence.")


@app.command("log")
def mail_log(
    list_slug: str = typer.Argument(..., metavar="LIST", help=LIST_HELP),
    kind: str | None = typer.Option(None, "--kind", help=f"Only one of: {', '.join(AutomationKind)}."),
    step: int | None = typer.Option(None, "--step", help="Only this step's emails."),
    status: str | None = typer.Option(None, "--status", help=f"Only one of: {', '.join(AutomationMailStatus)}."),
    limit: int = typer.Option(100, "--limit", min=1, help="How many, newest first."),
    as_json: bool = typer.Option(False, "--json", help="A JSON array of objects instead of a table."),
) -> None:
    """The list's automated emails, newest first: to whom, what, when, and the SMTP server's reply."""
    with runtime.reading() as session:
        if step is not None:
            automations.get_automation(session, list_slug, step)
        _, rows = automation_mails.mail_log(
            session, list_slug, kind=kind, automation_id=step, status=status, limit=limit
        )
    columns = [
        Col("id", keep=True, right=True),
        Col("email", keep=True),
        Col("what"),
        Col("status"),
        Col("attempts", "tries", right=True),
        Col("smtp_reply", "reply"),
        Col("message_id", "message-id", keep=True),
        Col("due_at", "due"),
        Col("sent_at", "sent"),
    ]
    shown = [r.as_json() if as_json else r.as_json() | {"due_at": r.created_at, "sent_at": r.sent_at} for r in rows]
    listing(out, columns, shown, as_json=as_json, empty="No automated emails yet.")
