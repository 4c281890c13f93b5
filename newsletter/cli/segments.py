"""`newsletter segments`: saved segments of a list, written in the filter language of subscribers.segments."""

from __future__ import annotations

import json

import typer

from newsletter.cli.runtime import out, runtime
from newsletter.cli.tables import Col, listing
from subscribers import segments

app = typer.Typer(
    help="Saved segments of a list: filters on attributes, name, domain, subscription and engagement.",
    no_args_is_help=True,
)

FILTER_HELP = (
    'The filter, e.g. \'domain = "gmail.com" and attribute.plan in ("pro", "team") and subscribed after '
    "2026-01-01' (README, section Segments)."
)


@app.command()
def create(
    list_slug: str = typer.Argument(..., metavar="LIST", help="The list's slug."),
    name: str = typer.Argument(..., help="The segment's name, unique on the list."),
    filter_text: str = typer.Argument(..., metavar="FILTER", help=FILTER_HELP),
    replace: bool = typer.Option(False, "--replace", help="Change the filter of an existing segment of that name."),
) -> None:
    """Save a segment of a list; prints how many it matches now. A bad filter names the part at fault."""
    with runtime.transaction() as session:
        segment = segments.create_segment(session, list_slug, name, filter_text, replace=replace)
        view = segments.show_segment(session, list_slug, segment.name)
    out.print(f"Saved segment {view.name} of {list_slug}: {_matches(view.count or 0)} now.")


@app.command("ls")
def list_all(
    list_slug: str | None = typer.Argument(None, metavar="[LIST]", help="Only this list's segments."),
    as_json: bool = typer.Option(False, "--json", help="As a JSON array."),
) -> None:
    """List saved segments (of every list, or of one) with their filters."""
    with runtime.reading() as session:
        rows = [v.as_json() for v in segments.all_segments(session, list_slug)]
    columns = [Col("list", keep=True), Col("name", keep=True), Col("filter")]
    listing(out, columns, rows, as_json=as_json, empty="No segments yet.")


@app.command()
def show(
    list_slug: str = typer.Argument(..., metavar="LIST", help="The list's slug."),
    name: str = typer.Argument(..., help="The segment's name."),
    as_json: bool = typer.Option(False, "--json", help="As a JSON object."),
) -> None:
    """Show a segment: its filter, and how many confirmed, unsuppressed subscribers it matches now."""
    with runtime.reading() as session:
        view = segments.show_segment(session, list_slug, name)
    if as_json:
        out.print(json.dumps(view.as_json()))
        return
    out.print(f"Segment {view.name} of {view.list_slug}")
    out.print(f"Filter:  {view.filter}")
    out.print(f"Matches: {_matches(view.count or 0)} (confirmed, not suppressed)")


@app.command()
def count(
    list_slug: str = typer.Argument(..., metavar="LIST", help="The list's slug."),
    filter_text: str = typer.Argument(..., metavar="FILTER", help=FILTER_HELP),
) -> None:
    """Try a filter without saving it: how many confirmed, unsuppressed subscribers of the list it matches.

    Prints the number alone on the last line.
    """
    from subscribers.lists import get_list

    with runtime.reading() as session:
        matched = segments.count_matching(session, get_list(session, list_slug), filter_text)
    out.print(matched)


@app.command()
def delete(
    list_slug: str = typer.Argument(..., metavar="LIST", help="The list's slug."),
    name: str = typer.Argument(..., help="The segment's name."),
) -> None:
    """Delete a saved segment. Sends that used it keep its name and filter."""
    with runtime.transaction() as session:
        segments.delete_segment(session, list_slug, name)
    out.print(f"Deleted segment {name} of {list_slug}.")


def _matches(n: int) -> str:
    return f"matches {n} subscriber{'' if n == 1 else 's'}"
