"""`/admin/media` (editors and admins): the media library: upload images, copy their Markdown, delete them.

The page works as plain forms (a file button and Upload; a Delete form per image); its script
(``static/admin/media.js``) adds a drop zone, paste, and uploads as soon as a file is chosen,
posting each file with the ``X-CSRF-Token`` header and ``Accept: application/json``: it then
gets JSON (the item with its ``markdown``, or ``{"error": {"message": ...}}``) instead of a page.
The same script lets any ``<textarea data-media-upload="URL">`` take dropped and pasted images.

An upload is written to disk as it arrives (newsletter.http.uploads, at most
NEWSLETTER_MEDIA_MAX_MB) once the session, the role and the CSRF token (a field before the file,
or the header) are checked; newsletter.content.media checks it by its content and stores it.
"""

from __future__ import annotations

import logging

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from newsletter.access import accounts
from newsletter.access.accounts import Caller, Forbidden
from newsletter.content import media
from newsletter.content.media_stores import MediaStoreUnavailable
from newsletter.errors import Conflict, InvalidInput
from newsletter.http.admin.auth import BAD_CSRF, CSRF_FIELD, CSRF_HEADER, authenticate, user
from newsletter.http.admin.pages import page, redirect
from newsletter.http.context import web
from newsletter.http.errors import BodyTooLarge
from newsletter.http.uploads import Upload, receive_upload
from newsletter.store.models import MediaItem

log = logging.getLogger("newsletter.web")
router = APIRouter()
Editor = Depends(user("media"))
SHOWN = 500  # images on the page, newest first


@router.get("/media")
def library(request: Request, caller: Caller = Editor) -> HTMLResponse:
    return _library_page(request, caller)


def _library_page(
    request: Request, caller: Caller, *, status: int = 200, error: str | None = None, notice: str | None = None
) -> HTMLResponse:
    w = web(request)
    with w.reading() as session:
        items = [_card(item, w.settings.base_url) for item in media.all_items(session, limit=SHOWN)]
    return page(
        request,
        caller,
        "media.html",
        status=status,
        items=items,
        error=error,
        notice=notice,
        max_mb=w.settings.media_max_mb,
    )


def _card(item: MediaItem, base_url: str) -> dict[str, object]:
    return {
        "id": item.id,
        "name": media.stored_name(item),
        "filename": item.filename,
        "url": media.url(item, base_url),
        "src": media.URL_PATH + media.stored_name(item),
        "markdown": media.markdown(item, base_url),
        "width": item.width,
        "height": item.height,
        "size": item.size,
        "size_text": f"{item.size / 1024 / 1024:.1f} MB" if item.size >= 1024 * 1024 else f"{-(-item.size // 1024)} KB",
        "content_type": item.content_type,
        "uploader": item.uploader,
        "created_at": item.created_at.isoformat(timespec="seconds"),
    }


async def _uploader(request: Request) -> Caller:
    """The logged-in editor, before the upload is read (user("media") would parse the whole form for its CSRF token)."""
    caller = await run_in_threadpool(authenticate, request)
    request.state.caller = caller  # for the 403 page's navigation
    caller.require("media")
    return caller


def _wants_json(request: Request) -> bool:
    return "application/json" in request.headers.get("accept", "")


@router.post("/media")
async def upload(request: Request, caller: Caller = Depends(_uploader)) -> Response:
    w = web(request)
    as_json = _wants_json(request)

    def check_csrf(fields: dict[str, str]) -> None:  # the form's hidden field comes before its file
        if not accounts.csrf_ok(caller, request.headers.get(CSRF_HEADER) or fields.get(CSRF_FIELD)):
            raise Forbidden(BAD_CSRF)

    try:
        got = await receive_upload(
            request,
            new_path=lambda: media.new_upload_path(w.settings.var_dir),
            max_bytes=w.settings.media_max_mb * 1024 * 1024,
            before_file=check_csrf,
            what="an image upload",
        )
    except (InvalidInput, BodyTooLarge, Forbidden) as exc:
        if not as_json:
            raise
        status = 413 if isinstance(exc, BodyTooLarge) else 403 if isinstance(exc, Forbidden) else 400
        return _json_error(status, exc.message if isinstance(exc, InvalidInput) else str(exc))
    try:
        check_csrf(got.fields)  # also when the form had no file
        if got.path is None:
            raise InvalidInput("choose an image file to upload", where="file")
        card, created = await run_in_threadpool(_add, request, got, caller.name)
    except (InvalidInput, Conflict, MediaStoreUnavailable, Forbidden) as exc:
        if not as_json:
            if isinstance(exc, Forbidden):
                raise
            status = 503 if isinstance(exc, MediaStoreUnavailable) else 400
            return await run_in_threadpool(_library_page, request, caller, status=status, error=str(exc))
        status = 403 if isinstance(exc, Forbidden) else 503 if isinstance(exc, MediaStoreUnavailable) else 400
        return _json_error(status, str(exc))
    finally:
        got.discard()
    if as_json:
        return JSONResponse({**card, "created": created}, status_code=201 if created else 200)
    return redirect(request, "/media", "media-uploaded" if created else "media-known")


def _add(request: Request, got: Upload, uploader: str) -> tuple[dict[str, object], bool]:
    assert got.path is not None
    w = web(request)
    with w.transaction() as session:
        item, created = media.add_file(
            session, w.runtime.media_store, got.path, filename=got.filename or "", uploader=uploader
        )
        return _card(item, w.settings.base_url), created


def _json_error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": {"status": status, "message": message}}, status_code=status)


@router.post("/media/{media_id:int}/delete")
def delete(request: Request, media_id: int, caller: Caller = Editor) -> Response:
    w = web(request)
    try:
        with w.transaction() as session:
            item, used = media.delete_item(session, media_id)
            name = media.stored_name(item)
    except Conflict as exc:
        return _library_page(request, caller, status=409, error=str(exc))
    try:
        media.delete_file(w.runtime.media_store, item)
    except MediaStoreUnavailable as exc:
        log.warning("media item %s deleted, but its file stays: %s", name, exc)
    if used.drafts:
        drafts = ", ".join(f"#{issue_id}" for issue_id, _ in used.drafts)
        notice = f"Deleted {item.filename}. Draft issue(s) {drafts} still refer to it: change their image."
        return _library_page(request, caller, notice=notice)
    return redirect(request, "/media", "media-deleted")
