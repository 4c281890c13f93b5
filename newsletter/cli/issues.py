"""`newsletter issues`: write, check and preview editions."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from newsletter.cli.runtime import err, out, print_last_line, render_settings, runtime
from newsletter.cli.tables import Col, listing
from newsletter.content import issues
from newsletter.content.issue_files import DEFAULT_TEMPLATE, read_issue_file

app = typer.Typer(help="Write, check and preview issues (Markdown with front matter).", no_args_is_help=True)


def _warn(warnings: tuple[str, ...] | list[str]) -> None:
    for warning in warnings:
        err.print(f"warning: {warning}")


@app.command()
def create(
    slug: str = typer.Argument(..., help="The list the issue is written for."),
    file: Path = typer.Argument(..., help="Markdown file with front matter: subject (required), preheader, template."),
) -> None:
    """Store an issue as a draft; prints its id alone on the last line.

    The issue is rendered first: template errors, undefined variables and relative links
    are refused (nothing is stored); warnings are printed and the draft kept.
    """
    source = read_issue_file(file)
    with runtime.transaction() as session:
        issue, rendered = issues.create_issue(session, slug, source, render_settings())
    _warn(rendered.warnings)
    out.print(f"Created draft issue {issue.id} for {slug}: {issue.subject}")
    print_last_line(issue.id)


@app.command()
def update(
    issue_id: int = typer.Argument(..., help="The issue's id."),
    file: Path = typer.Argument(..., help="Markdown file with front matter."),
) -> None:
    """Replace an issue's subject, preheader, template and body from a file (sends already made keep their copy)."""
    source = read_issue_file(file)
    with runtime.transaction() as session:
        issue, rendered = issues.update_issue(session, issue_id, source, render_settings())
    _warn(rendered.warnings)
    out.print(f"Updated issue {issue.id}: {issue.subject}")


@app.command()
def duplicate(issue_id: int = typer.Argument(..., help="The issue to copy (a draft or one already sent).")) -> None:
    """Make a new draft from an issue, for the same list; prints the new id alone on the last line.

    Subject, preheader, template and body are copied as they are; edit the copy with `newsletter issues update`.
    """
    with runtime.transaction() as session:
        issue, rendered = issues.duplicate_issue(session, issue_id, render_settings())
        _, mailing_list = issues.get_issue(session, issue.id)
    _warn(rendered.warnings)
    out.print(f"Created draft issue {issue.id} for {mailing_list.slug} from issue {issue_id}: {issue.subject}")
    print_last_line(issue.id)


@app.command()
def delete(issue_id: int = typer.Argument(..., help="The issue's id.")) -> None:
    """Delete an issue that was never sent: refused once it has a send, even a scheduled or cancelled one."""
    with runtime.transaction() as session:
        issues.delete_issue(session, issue_id)
    out.print(f"Deleted issue {issue_id}.")


@app.command("ls")
def list_all(
    slug: str | None = typer.Argument(None, help="Only this list's issues."),
    as_json: bool = typer.Option(False, "--json", help="A JSON array of objects instead of a table."),
) -> None:
    """List issues, newest first."""
    with runtime.transaction() as session:
        rows = [
            {
                "id": issue.id,
                "list": mailing_list.slug,
                "status": issue.status,
                "subject": issue.subject,
                "updated_at": issue.updated_at,
            }
            for issue, mailing_list in issues.all_issues(session, slug)
        ]
    columns = [
        Col("id", keep=True, right=True),
        Col("list", keep=True),
        Col("status"),
        Col("subject"),
        Col("updated_at", "updated"),
    ]
    listing(
        out,
        columns,
        rows,
        as_json=as_json,
        empty="No issues yet. Create one with: newsletter issues create SLUG FILE.md",
    )


@app.command()
def show(issue_id: int = typer.Argument(..., help="The issue's id.")) -> None:
    """Show an issue's details and every problem the checks find."""
    settings = render_settings()
    with runtime.transaction() as session:
        issue, mailing_list = issues.get_issue(session, issue_id)
        problems = issues.check_stored_issue(session, issue_id, settings)
        list_layout = mailing_list.template  # deferred: read while the session is open
    table = Table(show_header=False, box=None)
    table.add_row("id", str(issue.id))
    table.add_row("list", f"{mailing_list.slug} ({mailing_list.name})")
    table.add_row("status", issue.status)
    table.add_row("subject", issue.subject)
    table.add_row("preheader", issue.preheader or "(none)")
    own = issue.template != DEFAULT_TEMPLATE
    table.add_row("template", issue.template if own or not list_layout else f"{list_layout} (the list's layout)")
    table.add_row("revision", str(issue.revision))
    table.add_row("words", str(len(issue.body_markdown.split())))
    table.add_row("created", issue.created_at.isoformat(timespec="seconds"))
    table.add_row("updated", issue.updated_at.isoformat(timespec="seconds"))
    table.add_row("checks", "no problems" if not problems else f"{len(problems)} problem(s), listed below")
    out.print(table)
    for problem in problems:
        out.print(f"{problem.level}: {problem}")


@app.command()
def preview(
    issue_id: int = typer.Argument(..., help="The issue's id."),
    html: Path | None = typer.Option(None, "--html", help="Write the HTML part here."),
    text: Path | None = typer.Option(None, "--text", help="Write the plain-text part here."),
) -> None:
    """Render an issue for a sample recipient and write its HTML and text parts.

    Without --html or --text, both go to $NEWSLETTER_VAR_DIR/preview/ and their paths are printed.
    """
    with runtime.transaction() as session:
        html_part, text_part, rendered = issues.preview_issue(session, issue_id, render_settings())
    _warn(rendered.warnings)
    if html is None and text is None:
        folder = runtime.settings.var_dir / "preview"
        folder.mkdir(parents=True, exist_ok=True)
        html, text = folder / f"issue-{issue_id}.html", folder / f"issue-{issue_id}.txt"
    for path, content in ((html, html_part), (text, text_part)):
        if path is not None:
            path.write_text(content, encoding="utf-8")
            out.print(f"Wrote {path.resolve()}")


@app.command("test-send")
def test_send(
    issue_id: int = typer.Argument(..., help="The issue's id."),
    to: list[str] = typer.Option(
        ..., "--to", help="Where the test goes (usually yourself); give it again for more addresses (at most 10)."
    ),
) -> None:
    """Send a copy of an issue now to each --to address, marked [TEST] in the subject; not logged as a delivery.

    Every address is checked first: one that is not an address stops the command before
    anything is sent. The copies go out over one SMTP connection; each address's result is
    printed, and the exit status is 1 when any address got no copy.
    """
    from newsletter.delivery.test_copies import compile_test_copies, not_sent, send_test_copies
    from subscribers.tokens import TokenSigner

    settings = runtime.settings
    signer = TokenSigner(settings.secret_key, settings.old_secret_keys)
    with runtime.transaction() as session:
        message, recipients = compile_test_copies(session, issue_id, to, render_settings(), signer)
    results = send_test_copies(message, recipients, settings)
    for result in results:
        if result.sent:
            out.print(
                f"Test of issue {issue_id} sent to {result.to}: {result.smtp_code} {result.smtp_reply} ({result.message_id})"
            )
        else:
            err.print(f"Test of issue {issue_id} NOT sent to {result.to}: {result.smtp_reply}")
    if failed := not_sent(results):
        err.print(
            f"error: {sum(not r.sent for r in results)} of {len(results)} test copies were not sent ({failed}); "
            "check those addresses or the mail server and try again"
        )
        raise typer.Exit(1)


@app.command()
def ready(issue_id: int = typer.Argument(..., help="The issue's id.")) -> None:
    """Mark an issue ready: the scheduler sends it in its list's next weekly slot (`newsletter lists slot`)."""
    from newsletter.delivery import scheduling

    with runtime.transaction() as session:
        issue = scheduling.mark_ready(session, issue_id, render_settings())
        _, mailing_list = issues.get_issue(session, issue.id)
        slot = scheduling.slot_of(mailing_list)
    assert slot is not None
    out.print(f"Issue {issue_id} is ready; it goes out in {mailing_list.slug}'s next slot ({slot.describe()}).")
