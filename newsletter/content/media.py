"""The media library: images uploaded once, served from the app's own URL, reused in issues.

An image is checked and prepared by newsletter.content.images (by its content; resized to email
width; metadata stripped), then kept in a :class:`~newsletter.content.media_stores.MediaStore`
under ``<sha256>.<ext>``: a name made from the stored bytes, never the client's. The same image
uploaded twice is one item. Its URL is ``$NEWSLETTER_BASE_URL/media/<sha256>.<ext>``, whose bytes
never change (so it is served with a year-long, immutable cache).

An item cannot be deleted while an issue that was sent (one with a send, even scheduled or
cancelled, like ``issues delete``) refers to it, in its Markdown or in a send's frozen HTML:
the mail already out shows it. The refusal names those issues. Drafts that refer to it do not
stop a deletion; it reports them.

Order of writes, so nothing is half-stored: a new file is stored before its row is inserted
(a failed insert leaves an unused file under a content name, which the next upload of the same
image reuses); a row is deleted, and committed by the caller, before its file (a failed file
deletion leaves an unlisted file, logged by the caller).
"""

from __future__ import annotations

import hashlib
import re
import secrets
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import exists, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from newsletter.content.images import CONTENT_TYPES, PreparedImage, prepare
from newsletter.content.media_stores import MediaStore
from newsletter.errors import Conflict, InvalidInput, NotFound
from newsletter.store.models import Issue, MediaItem, Send

#: A stored file's name: the SHA-256 of its bytes and its type's extension.
STORED_NAME = re.compile(r"([0-9a-f]{64})\.(png|jpg|gif|webp)")
#: Where the app serves the library, under NEWSLETTER_BASE_URL.
URL_PATH = "/media/"
MAX_FILENAME = 255


@dataclass(frozen=True)
class Usage:
    """The issues that refer to an item: ``sent`` ones (with a send) keep it; ``drafts`` do not."""

    sent: list[tuple[int, str]]
    drafts: list[tuple[int, str]]


def stored_name(item: MediaItem) -> str:
    return f"{item.hash}.{item.ext}"


def url(item: MediaItem, base_url: str) -> str:
    """Where readers' mail clients fetch it: ``{base_url}/media/<hash>.<ext>``."""
    return f"{base_url.rstrip('/')}{URL_PATH}{stored_name(item)}"


def alt_text(item: MediaItem) -> str:
    """A first alt text for the image: its file name without the extension, as words."""
    stem = item.filename.rsplit(".", 1)[0] if "." in item.filename else item.filename
    words = re.sub(r"[_\-]+", " ", stem).strip()
    return re.sub(r"[\[\]\\]", "", words) or "image"


def markdown(item: MediaItem, base_url: str) -> str:
    """The Markdown that shows it in an issue: ``![alt](url)``."""
    return f"![{alt_text(item)}]({url(item, base_url)})"


def shown_filename(name: str | None) -> str:
    """The client's file name made safe to show: its last path part, no control characters, at most 255."""
    name = (name or "").replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(c for c in unicodedata.normalize("NFC", name) if unicodedata.category(c)[0] != "C").strip()
    return name[:MAX_FILENAME] or "image"


def new_upload_path(var_dir: Path) -> Path:
    """A fresh path for an upload as it arrives (under ``$NEWSLETTER_VAR_DIR/media-incoming``); the caller removes it."""
    folder = var_dir / "media-incoming"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{secrets.token_hex(16)}.part"


def add_file(
    session: Session, store: MediaStore, path: Path, *, filename: str, uploader: str
) -> tuple[MediaItem, bool]:
    """Check and prepare the image at ``path``, store it and list it; (the item, whether it is new).

    ``filename`` is the name shown (and named in errors). Raises InvalidInput for a file that is
    not a PNG, JPEG, GIF or WebP image (or is too large in pixels), MediaStoreUnavailable when the
    store cannot take it.
    """
    shown = shown_filename(filename)
    return add_prepared(session, store, prepare(path, shown_name=shown), filename=shown, uploader=uploader)


def add_prepared(
    session: Session, store: MediaStore, image: PreparedImage, *, filename: str, uploader: str
) -> tuple[MediaItem, bool]:
    """Store a prepared image and list it, unless the same bytes are listed already; (the item, whether new)."""
    digest = hashlib.sha256(image.data).hexdigest()
    found = session.scalar(select(MediaItem).where(MediaItem.hash == digest))
    if found is not None:
        return found, False
    item = MediaItem(
        hash=digest,
        ext=image.ext,
        filename=shown_filename(filename),
        content_type=image.content_type,
        width=image.width,
        height=image.height,
        size=len(image.data),
        uploader=uploader[:120],
    )
    store.put(stored_name(item), image.data, image.content_type)
    try:
        with session.begin_nested():
            session.add(item)
            session.flush()
    except IntegrityError:  # the same image, listed by another upload meanwhile
        found = session.scalar(select(MediaItem).where(MediaItem.hash == digest))
        if found is None:
            raise
        return found, False
    return item, True


def all_items(session: Session, *, limit: int | None = None, offset: int = 0) -> list[MediaItem]:
    """The library, newest first."""
    query = select(MediaItem).order_by(MediaItem.created_at.desc(), MediaItem.id.desc()).offset(offset)
    if limit is not None:
        query = query.limit(limit)
    return list(session.scalars(query))


def get_item(session: Session, ref: str | int) -> MediaItem:
    """An item by id, stored name (``<hash>.<ext>``), URL or hash. Raises NotFound."""
    text = str(ref).strip()
    item: MediaItem | None
    if text.isdecimal():
        item = session.get(MediaItem, int(text))
    else:
        name = text.rsplit("/", 1)[-1].lower()
        digest = name.split(".", 1)[0]
        item = session.scalar(select(MediaItem).where(MediaItem.hash == digest)) if len(digest) == 64 else None
    if item is None:
        raise NotFound(f"no media item {text!r}")
    return item


def usage(session: Session, item: MediaItem) -> Usage:
    """The issues whose Markdown, or whose sends' frozen HTML, refer to the item's URL path."""
    pattern = f"{URL_PATH}{stored_name(item)}"
    has_send = exists(select(Send.id).where(Send.issue_id == Issue.id))
    sent_html = exists(select(Send.id).where(Send.issue_id == Issue.id, Send.html.contains(pattern, autoescape=True)))
    rows = session.execute(
        select(Issue.id, Issue.subject, has_send)
        .where(or_(Issue.body_markdown.contains(pattern, autoescape=True), sent_html))
        .order_by(Issue.id)
    ).all()
    return Usage(
        sent=[(row[0], row[1]) for row in rows if row[2]],
        drafts=[(row[0], row[1]) for row in rows if not row[2]],
    )


def delete_item(session: Session, ref: str | int) -> tuple[MediaItem, Usage]:
    """Unlist an item (its file is the caller's to delete after the commit: :func:`delete_file`).

    Raises NotFound, or Conflict naming each sent issue that refers to it (nothing is changed).
    Returns the item and its usage (drafts that still refer to it).
    """
    item = get_item(session, ref)
    used = usage(session, item)
    if used.sent:
        issues = "; ".join(f'issue {issue_id} "{subject}"' for issue_id, subject in used.sent)
        raise Conflict(
            f"{stored_name(item)} ({item.filename}) is in use by a sent issue and cannot be deleted: {issues}"
        )
    session.delete(item)
    session.flush()
    return item, used


def delete_file(store: MediaStore, item: MediaItem) -> None:
    """Remove a deleted item's file from the store. Raises MediaStoreUnavailable."""
    store.delete(stored_name(item))


def content_type_of(name: str) -> str | None:
    """The Content-Type of a stored name (``<hash>.<ext>``), or None when it is not one."""
    match = STORED_NAME.fullmatch(name)
    return CONTENT_TYPES[match.group(2)] if match else None


def check_upload_size(size: int, max_bytes: int, filename: str) -> None:
    """Raises InvalidInput when a file on disk is larger than the library takes (the CLI's check; the web's is 413)."""
    if size > max_bytes:
        raise InvalidInput(f"the file is {size:,} bytes, more than the {max_bytes:,} taken", where=filename)
