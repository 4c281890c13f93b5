"""`newsletter templates`: the email layouts admins store, checked before they are kept."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.text import Text

from newsletter.cli.runtime import err, out, render_settings, runtime
from newsletter.cli.tables import Col, listing
from newsletter.content import email_templates
from newsletter.errors import InvalidInput

app = typer.Typer(
    help="Email templates: the layouts of lists and issues, checked when stored (the shipped one is read-only).",
    no_args_is_help=True,
)

HTML_HELP = "The HTML template (Jinja2; README, section Email templates, lists its variables)."
TEXT_HELP = "The plain-text template (Jinja2, the same variables)."


@app.command("ls")
def list_all(as_json: bool = typer.Option(False, "--json", help="A JSON array of objects instead of a table.")) -> None:
    """List the templates: the shipped layout, then the stored ones with the lists and unsent issues using them."""
    settings = render_settings()
    with runtime.reading() as session:
        views = email_templates.all_templates(session, settings.template_dirs)
    rows = []
    for view in views:
        row = view.as_json(sources=False)
        if not as_json:  # the table's cells: words for the shipped layout, lists joined
            row |= {
                "updated_at": view.updated_at,
                "updated_by": "shipped, read-only" if view.shipped else view.updated_by,
                "lists": "(the default)" if view.shipped else ", ".join(view.users.lists),
                "issues": ", ".join(str(i) for i, _ in view.users.issues),
            }
        rows.append(row)
    columns = [
        Col("name", keep=True),
        Col("updated_at", "updated"),
        Col("updated_by", "by"),
        Col("lists", "used by lists"),
        Col("issues", "unsent issues"),
    ]
    listing(out, columns, rows, as_json=as_json, empty="No templates.")


@app.command()
def show(
    name: str = typer.Argument(..., help="The template's name ('issue': the shipped layout, as one template)."),
    part: str | None = typer.Option(
        None, "--part", help="Print only this part's source, html or text (to copy it: --part html > layout.html)."
    ),
    as_json: bool = typer.Option(False, "--json", help="As a JSON object, with both sources."),
) -> None:
    """Show a template: who uses it, and its HTML and text sources."""
    if part is not None and part not in ("html", "text"):
        raise InvalidInput(f"--part must be html or text, not {part!r}", where="--part")
    settings = render_settings()
    with runtime.reading() as session:
        view = email_templates.get_template(session, name, settings.template_dirs)
    if as_json:
        out.print(json.dumps(view.as_json()))
        return
    if part is not None:
        source = view.html if part == "html" else view.text
        typer.echo(source, nl=not source.endswith("\n"))
        return
    if view.shipped:
        out.print(f"Template {view.name}: the shipped layout, read-only; the default of every list and issue.")
    else:
        out.print(f"Template {view.name}: updated {view.updated_at:%Y-%m-%d %H:%M:%S} UTC by {view.updated_by}.")
        out.print(Text(f"Used by: {view.users.describe() or 'nothing'}."))  # subjects are data: no markup or emoji
    for label, source in (("HTML", view.html), ("Text", view.text)):
        # Sources as they are: through rich, "xmlns:o" would lose ":o" and ":office:" become an emoji.
        typer.echo(f"\n--- {label} ({len(source.splitlines())} lines) ---")
        typer.echo(source.rstrip("\n"))


def _read(path: Path, part: str) -> str:
    """A template file as text. Raises InvalidInput naming the file (and the line of a bad byte)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InvalidInput(f"cannot read the {part} template: {exc.strerror or exc}", where=str(path)) from exc
    try:
        return data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise InvalidInput(
            f"the {part} template is not UTF-8 text (byte 0x{data[exc.start]:02x} cannot be decoded); save it as UTF-8",
            where=f"{path}:{line}",
        ) from exc


def _in_files(exc: InvalidInput, html: Path | None, text: Path | None) -> InvalidInput:
    """The domain's ``html:LINE`` and ``text:LINE`` as the files given (``layout.html:LINE``), ``name`` as NAME."""
    where = exc.where or ""
    if where == "name":
        return InvalidInput(exc.message, where="NAME")
    for part, path in (("html", html), ("text", text)):
        if path is not None and (where == part or where.startswith(part + ":")):
            return InvalidInput(exc.message, where=str(path) + where[len(part) :])
    return exc


@app.command()
def create(
    name: str = typer.Argument(..., help="1-64 lower-case letters, digits, '-' or '_'; lists and issues name it."),
    html: Path = typer.Option(..., "--html", help=HTML_HELP),
    text: Path = typer.Option(..., "--text", help=TEXT_HELP),
) -> None:
    """Store a template once it renders a sample issue and inlines without an error.

    A Jinja2 or CSS error is refused with its file and line; so is a part that does not print the
    issue's body, the unsubscribe link or the postal address. Nothing is stored when it is refused.
    """
    html_source, text_source = _read(html, "HTML"), _read(text, "text")
    settings = render_settings()
    try:
        with runtime.transaction() as session:
            email_templates.create_template(
                session,
                name,
                html_source,
                text_source,
                sample=settings.sample(),
                template_dirs=settings.template_dirs,
                by="cli",
            )
    except InvalidInput as exc:
        raise _in_files(exc, html, text) from None
    out.print(f"Created template {name}. Use it for a list with: newsletter lists update LIST --template {name}")


@app.command()
def update(
    name: str = typer.Argument(..., help="The template's name."),
    html: Path | None = typer.Option(None, "--html", help=HTML_HELP),
    text: Path | None = typer.Option(None, "--text", help=TEXT_HELP),
) -> None:
    """Replace a template's HTML and/or text, once the pair still works; sends already started keep theirs."""
    if html is None and text is None:
        raise InvalidInput("nothing to change: give --html FILE, --text FILE or both")
    html_source = _read(html, "HTML") if html is not None else None
    text_source = _read(text, "text") if text is not None else None
    settings = render_settings()
    try:
        with runtime.transaction() as session:
            email_templates.update_template(
                session, name, html=html_source, text=text_source, sample=settings.sample(), by="cli"
            )
            users = email_templates.users_of(session, name)
    except InvalidInput as exc:
        raise _in_files(exc, html, text) from None
    out.print(Text(f"Updated template {name}." + (f" It is used by {users.describe()}." if users else "")))


@app.command()
def rm(name: str = typer.Argument(..., help="The template's name.")) -> None:
    """Delete a stored template; refused for the shipped one and for one a list or an unsent issue uses."""
    with runtime.transaction() as session:
        email_templates.delete_template(session, name)
    out.print(f"Deleted template {name}.")


@app.command()
def check(
    html: Path = typer.Option(..., "--html", help=HTML_HELP),
    text: Path = typer.Option(..., "--text", help=TEXT_HELP),
) -> None:
    """Check a pair of template files as a save would, storing nothing; every problem is printed with its line."""
    checked = email_templates.check_template(
        "new", _read(html, "HTML"), _read(text, "text"), render_settings().sample()
    )
    for problem in checked.problems:
        shown = _in_files(InvalidInput(problem.message, where=problem.where), html, text)
        err.print(Text(f"{problem.level}: {shown}"))  # a Text, not a str: rich would turn ":100:" into an emoji
    if not checked.ok:
        raise typer.Exit(1)
    out.print("No problems: the templates can be stored.")
