"""`newsletter lists`: create and inspect mailing lists."""

from __future__ import annotations

from datetime import datetime

import typer
from rich.table import Table

from newsletter.cli import confirmations
from newsletter.cli.runtime import out, render_settings, runtime
from newsletter.cli.tables import Col, listing
from newsletter.locales.languages import SHIPPED, SOURCE
from subscribers import lists

app = typer.Typer(help="Create and inspect mailing lists.", no_args_is_help=True)


@app.command()
def create(
    slug: str = typer.Argument(..., help="Short name used in URLs and commands, e.g. 'weekly'."),
    name: str = typer.Option(..., "--name", help="The list's name as readers see it."),
    from_email: str = typer.Option(..., "--from-email", help="Sender address of the list's emails."),
    from_name: str = typer.Option("", "--from-name", help="Sender name shown in mail clients."),
    reply_to: str | None = typer.Option(None, "--reply-to", help="Where replies go, if not the sender."),
    description: str = typer.Option("", "--description", help="What the list is about (shown on its pages)."),
    private: bool = typer.Option(
        False, "--private", help="Not on the public home page; no public form or archive (add people yourself)."
    ),
    tracking: str = typer.Option(
        "off",
        "--tracking",
        help="Count opens and clicks: off (no pixel, links as written), anonymous (counts only) or individual "
        "(per subscriber, kept NEWSLETTER_TRACKING_RETENTION_DAYS).",
    ),
    language: str = typer.Option(
        "en",
        "--language",
        help="Language of the list's emails and pages: en (English), de (Deutsch), fr (Français) or es (Español).",
    ),
) -> None:
    """Create a mailing list."""
    with runtime.transaction() as session:
        created = lists.create_list(
            session,
            slug,
            name=name,
            from_email=from_email,
            from_name=from_name,
            reply_to=reply_to,
            description=description,
            private=private,
            tracking=tracking,
            language=language,
        )
        sender = f"{created.from_name} <{created.from_email}>" if created.from_name else created.from_email
        counted = f", tracking {created.tracking}" if created.tracking != "off" else ""
        written = f", in {SHIPPED[created.language]}" if created.language != SOURCE else ""
        out.print(
            f"Created {'private ' if private else ''}list {created.slug} ({created.name}), "
            f"sending as {sender}{counted}{written}."
        )


@app.command()
def update(
    slug: str = typer.Argument(..., help="The list's slug (it cannot change: links in sent mail use it)."),
    name: str | None = typer.Option(None, "--name", help="The list's name as readers see it."),
    description: str | None = typer.Option(None, "--description", help="What the list is about."),
    from_name: str | None = typer.Option(None, "--from-name", help="Sender name shown in mail clients."),
    from_email: str | None = typer.Option(None, "--from-email", help="Sender address of the list's emails."),
    reply_to: str | None = typer.Option(None, "--reply-to", help="Where replies go, if not the sender."),
    no_reply_to: bool = typer.Option(False, "--no-reply-to", help="Remove the reply-to: replies go to the sender."),
    make_private: bool = typer.Option(
        False,
        "--private",
        help="Off the public home page, no public form or archive (admins and the API still add people).",
    ),
    make_public: bool = typer.Option(False, "--public", help="Back on the home page, with its form and archive."),
    tracking: str | None = typer.Option(
        None,
        "--tracking",
        help="off, anonymous or individual: what sends started from now on count of opens and clicks.",
    ),
    language: str | None = typer.Option(
        None,
        "--language",
        help="en, de, fr or es: the language of the list's emails from now on, and of its pages for readers "
        "whose browser asks for none of these.",
    ),
    template: str | None = typer.Option(
        None,
        "--template",
        help="The email layout of the list's issues: a stored template (`newsletter templates ls`), or 'issue' "
        "for the shipped one. An issue naming its own template keeps it.",
    ),
) -> None:
    """Change a list's settings; only the options given change. Sends already made keep their copy."""
    from newsletter.delivery.automation_editions import refresh_shipped
    from newsletter.errors import InvalidInput

    if no_reply_to and reply_to is not None:
        raise InvalidInput("give --reply-to ADDRESS or --no-reply-to, not both", where="--no-reply-to")
    if make_private and make_public:
        raise InvalidInput("give --private or --public, not both", where="--public")
    private = True if make_private else False if make_public else None
    if no_reply_to:
        reply_to = ""
    changes = (name, description, from_name, from_email, reply_to, private, tracking, language, template)
    if all(v is None for v in changes):
        raise InvalidInput(
            "nothing to change: give at least one of --name, --description, --from-name, --from-email, --reply-to, "
            "--no-reply-to, --private, --public, --template, --tracking or --language"
        )
    with runtime.transaction() as session:
        before = lists.get_list(session, slug).language
        changed = lists.update_list(
            session,
            slug,
            name=name,
            from_email=from_email,
            from_name=from_name,
            reply_to=reply_to,
            description=description,
            private=private,
            tracking=tracking,
            language=language,
        )
        if template is not None:
            from newsletter.content.email_templates import set_list_template

            set_list_template(session, slug, template)
        # The shipped welcome and goodbye are frozen in the list's language: frozen again in the new one
        # (refused, and nothing stored, if they no longer render).
        texts = refresh_shipped(session, changed, render_settings()) if changed.language != before else []
        sender = f"{changed.from_name} <{changed.from_email}>" if changed.from_name else changed.from_email
        visibility = "private" if changed.private else "public"
        out.print(
            f"Updated list {changed.slug} ({changed.name}): sending as {sender}, "
            f"replies to {changed.reply_to or 'the sender'}, {visibility}, tracking {changed.tracking}, "
            f"in {SHIPPED[changed.language]}."
        )
        if texts:
            kinds = " and ".join(str(a.kind) for a in texts)
            out.print(f"Rendered its shipped {kinds} again, in {SHIPPED[changed.language]}.")
        if template is not None:
            out.print(f"Its issues are mailed in the layout {changed.template or 'issue (the shipped one)'}.")


@app.command("ls")
def list_all(
    as_json: bool = typer.Option(False, "--json", help="A JSON array of objects instead of a table."),
) -> None:
    """List every mailing list with its subscriber counts and visibility."""
    with runtime.transaction() as session:
        rows = [
            {
                "slug": r.mailing_list.slug,
                "name": r.mailing_list.name,
                "from_email": r.mailing_list.from_email,
                "visibility": "private" if r.mailing_list.private else "public",
                "language": r.mailing_list.language,  # deferred: read while the session is open
                **r.counts,
            }
            for r in lists.all_lists_with_counts(session)
        ]
    columns = [
        Col("slug", keep=True),
        Col("name"),
        Col("from_email", "from", keep=True),
        Col("visibility"),
        Col("language"),
        Col("confirmed", right=True),
        Col("unconfirmed", right=True),
        Col("unsubscribed", right=True),
    ]
    listing(
        out,
        columns,
        rows,
        as_json=as_json,
        empty="No lists yet. Create one with: newsletter lists create SLUG --name NAME --from-email ADDR",
    )


@app.command()
def show(slug: str = typer.Argument(..., help="The list's slug.")) -> None:
    """Show a list's settings and its subscriptions counted by status."""
    with runtime.transaction() as session:
        row = lists.list_with_counts(session, slug)
        tracking = row.mailing_list.tracking  # deferred: read while the session is open
        language = row.mailing_list.language
        template = row.mailing_list.template  # deferred too
    m = row.mailing_list
    table = Table(show_header=False, box=None)
    table.add_row("slug", m.slug)
    table.add_row("name", m.name)
    table.add_row("from", f"{m.from_name} <{m.from_email}>" if m.from_name else m.from_email)
    table.add_row("reply-to", m.reply_to or "(the sender)")
    table.add_row("tracking", tracking)
    table.add_row("language", f"{language} ({SHIPPED.get(language, '?')})")
    table.add_row("layout", template or "issue (the shipped one)")
    table.add_row("visibility", "private (no public form or archive)" if m.private else "public")
    if m.description:
        table.add_row("description", m.description)
    table.add_row("created", m.created_at.isoformat(timespec="seconds"))
    for status, count in row.counts.items():
        table.add_row(status, str(count))
    table.add_row("total", str(row.total))
    out.print(table)


@app.command()
def slot(
    slug: str = typer.Argument(..., help="The list."),
    weekday: str | None = typer.Option(None, "--weekday", help="monday ... sunday."),
    time: str | None = typer.Option(None, "--time", help="24-hour local time, e.g. 08:00."),
    timezone: str | None = typer.Option(None, "--timezone", help="IANA time zone, e.g. Europe/Paris."),
    clear: bool = typer.Option(False, "--clear", help="Remove the list's weekly slot."),
) -> None:
    """Set the list's weekly slot: an issue marked ready (`newsletter issues ready ID`) goes out at the next one."""
    from newsletter.delivery import scheduling
    from newsletter.errors import InvalidInput

    if clear:
        new_slot = None
    elif weekday and time and timezone:
        new_slot = scheduling.parse_slot(weekday, time, timezone)
    else:
        raise InvalidInput("give --weekday, --time and --timezone together, or --clear", where="slot")
    with runtime.transaction() as session:
        scheduling.set_weekly_slot(session, slug, new_slot)
    if new_slot is None:
        out.print(f"List {slug} has no weekly slot now.")
    else:
        out.print(
            f"List {slug} goes out {new_slot.describe()}; next slot {new_slot.next_after(_now()).isoformat(timespec='minutes')}."
        )


def _now() -> datetime:
    from newsletter.store.models import utcnow

    return utcnow()


# Asking a list's unconfirmed subscribers to confirm lives in its own module, under `newsletter lists`.
app.command("request-confirmation")(confirmations.request_confirmation)
app.command("confirmation-log")(confirmations.confirmation_log)
app.command("confirmation-runs")(confirmations.confirmation_runs)
