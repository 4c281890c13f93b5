"""`newsletter media`: the media library's images: add, list, remove."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from newsletter.cli.runtime import err, out, print_last_line, runtime
from newsletter.cli.tables import Col, listing
from newsletter.content import media
from newsletter.content.media_stores import MediaStoreUnavailable
from newsletter.errors import InvalidInput
from newsletter.store.models import MediaItem

app = typer.Typer(
    help="The media library: images for issues, served from NEWSLETTER_BASE_URL/media/.", no_args_is_help=True
)


@app.command()
def add(
    file: Path = typer.Argument(..., help="A PNG, JPEG, GIF or WebP image (checked by its content, not its name)."),
    name: str = typer.Option("", "--name", help="The name shown in the library (default: the file's name)."),
    as_json: bool = typer.Option(False, "--json", help="Print the item as a JSON object."),
) -> None:
    """Add an image; prints its URL alone on the last line.

    Wider than 1200 px it is scaled down; its EXIF orientation is applied and its metadata
    removed. The same image added twice is one item.
    """
    shown = name or file.name
    try:
        size = file.stat().st_size
    except OSError as exc:
        raise InvalidInput(f"cannot read the file: {exc.strerror}", where=str(file)) from None
    media.check_upload_size(size, runtime.settings.media_max_mb * 1024 * 1024, str(file))
    store = runtime.media_store
    with runtime.transaction() as session:
        item, created = media.add_file(session, store, file, filename=shown, uploader="cli")
        row = _row(item)
    if as_json:
        print(json.dumps({**row, "created": created}, ensure_ascii=False))
        return
    said = "Added" if created else "Already in the library:"
    out.print(f"{said} {row['filename']} ({row['width']} × {row['height']} px, {row['bytes']:,} bytes), id {row['id']}")
    out.print(f"Markdown: {row['markdown']}")
    print_last_line(row["url"])


@app.command("ls")
def list_all(
    as_json: bool = typer.Option(False, "--json", help="A JSON array of objects instead of a table."),
) -> None:
    """List the library's images, newest first."""
    with runtime.reading() as session:
        items = media.all_items(session)
        rows = [_row(item) for item in items]
        added = [item.created_at for item in items]
    if as_json:
        print(json.dumps(rows, ensure_ascii=False))
        return
    columns = [
        Col("id", keep=True, right=True),
        Col("filename"),
        Col("pixels", right=True),
        Col("bytes", right=True),
        Col("added"),
        Col("name", keep=True),
    ]
    table = [
        {**row, "pixels": f"{row['width']}×{row['height']}", "bytes": f"{row['bytes']:,}", "added": when}
        for row, when in zip(rows, added, strict=True)
    ]
    if listing(out, columns, table, as_json=False, empty="No images in the library."):
        out.print(f"{len(rows)} image(s).")


@app.command("rm")
def remove(
    item: str = typer.Argument(..., help="The image's id, stored name (<hash>.<ext>) or URL."),
) -> None:
    """Delete an image; refused while an issue that was sent refers to it."""
    with runtime.transaction() as session:
        deleted, used = media.delete_item(session, item)
        name, filename = media.stored_name(deleted), deleted.filename
    try:
        media.delete_file(runtime.media_store, deleted)
    except MediaStoreUnavailable as exc:
        err.print(f"warning: {name} is deleted from the library, but its file stays: {exc}")
    out.print(f"Deleted {name} ({filename}).")
    for issue_id, subject in used.drafts:
        err.print(f"warning: draft issue {issue_id} ({subject}) still refers to it: change its image")


def _row(item: MediaItem) -> dict[str, object]:
    base = runtime.settings.base_url
    return {
        "id": item.id,
        "name": media.stored_name(item),
        "filename": item.filename,
        "url": media.url(item, base),
        "markdown": media.markdown(item, base),
        "content_type": item.content_type,
        "width": item.width,
        "height": item.height,
        "bytes": item.size,
        "uploader": item.uploader,
        "created_at": item.created_at.isoformat(timespec="seconds"),
    }
