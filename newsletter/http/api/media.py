"""/api/media: the media library's images: list, upload, look up, delete (editors and admins).

The upload is received by newsletter.http.uploads (the image goes to disk as it arrives, at most
NEWSLETTER_MEDIA_MAX_MB, counted by newsletter.http.body_limits), after the token and its role
were checked; newsletter.content.media checks it by its content and stores it.
"""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from starlette.concurrency import run_in_threadpool

from newsletter.content import media
from newsletter.content.media_stores import MediaStoreUnavailable
from newsletter.http.api.auth import MediaEditor
from newsletter.http.api.common import errors, path_id
from newsletter.http.api.schemas import ErrorResponse, IssueRef, MediaDeletedOut, MediaListOut, MediaOut
from newsletter.http.context import web
from newsletter.http.uploads import Upload, receive_upload
from newsletter.store.models import MediaItem

log = logging.getLogger("newsletter.web")
router = APIRouter(prefix="/media", tags=["media"])

MediaId = Annotated[int, path_id("media item")]

UPLOAD_SCHEMA = {
    "type": "object",
    "required": ["file"],
    "properties": {
        "file": {
            "type": "string",
            "contentMediaType": "application/octet-stream",
            "description": "A PNG, JPEG, GIF or WebP image (checked by its content), at most NEWSLETTER_MEDIA_MAX_MB.",
        }
    },
}


def media_out(request: Request, item: MediaItem) -> MediaOut:
    base = web(request).settings.base_url
    return MediaOut(
        id=item.id,
        name=media.stored_name(item),
        filename=item.filename,
        url=media.url(item, base),
        markdown=media.markdown(item, base),
        content_type=item.content_type,
        width=item.width,
        height=item.height,
        bytes=item.size,
        created_at=item.created_at,
        uploader=item.uploader,
    )


@router.get("", response_model=MediaListOut, responses=errors(), summary="The media library, newest first")
def all_media(
    request: Request,
    caller: MediaEditor,
    offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> MediaListOut:
    with web(request).reading() as session:
        items = media.all_items(session)
        return MediaListOut(
            total=len(items),
            offset=offset,
            limit=limit,
            items=[media_out(request, item) for item in items[offset : offset + limit]],
        )


@router.post(
    "",
    status_code=201,
    response_model=MediaOut,
    responses={
        200: {"model": MediaOut, "description": "The same image was in the library already: that item."},
        **errors(400, 503),
        413: {"model": ErrorResponse, "description": "The image is larger than NEWSLETTER_MEDIA_MAX_MB."},
    },
    summary="Upload an image",
    openapi_extra={"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": UPLOAD_SCHEMA}}}},
)
async def upload_media(request: Request, response: Response, caller: MediaEditor) -> MediaOut:
    """Multipart field ``file``: a PNG, JPEG, GIF or WebP image, checked by its content (its name and
    Content-Type are not trusted). Wider than 1200 px it is scaled down; EXIF orientation is applied
    and metadata stripped. 201 with the new item, or 200 with the item already holding the same image."""
    state = web(request)
    upload = await receive_upload(
        request,
        new_path=lambda: media.new_upload_path(state.settings.var_dir),
        max_bytes=state.settings.media_max_mb * 1024 * 1024,
        what="an image upload",
    )
    try:
        if upload.path is None:
            missing = {"type": "missing", "loc": ("body", "file"), "msg": "Field required", "input": None}
            raise RequestValidationError([missing], body=upload.fields)
        out, created = await run_in_threadpool(_add, request, upload, f"token {caller.name}")
    finally:
        upload.discard()
    response.status_code = 201 if created else 200
    return out


def _add(request: Request, upload: Upload, uploader: str) -> tuple[MediaOut, bool]:
    assert upload.path is not None
    state = web(request)
    with state.transaction() as session:
        item, created = media.add_file(
            session, state.runtime.media_store, upload.path, filename=upload.filename or "", uploader=uploader
        )
        return media_out(request, item), created


@router.get("/{media_id}", response_model=MediaOut, responses=errors(404), summary="One image of the library")
def get_media(request: Request, media_id: MediaId, caller: MediaEditor) -> MediaOut:
    with web(request).reading() as session:
        return media_out(request, media.get_item(session, media_id))


@router.delete(
    "/{media_id}",
    response_model=MediaDeletedOut,
    responses=errors(404, 409),
    summary="Delete an image (refused, 409, while a sent issue uses it)",
)
def delete_media(request: Request, media_id: MediaId, caller: MediaEditor) -> MediaDeletedOut:
    """Refused with 409 naming the issues when an issue that was sent refers to it (its Markdown or a
    send's frozen HTML); the draft issues that still refer to it are listed in the answer."""
    state = web(request)
    with state.transaction() as session:
        item, used = media.delete_item(session, media_id)
        out = MediaDeletedOut(
            deleted=media_out(request, item), drafts=[IssueRef(id=i, subject=s) for i, s in used.drafts]
        )
    try:
        media.delete_file(state.runtime.media_store, item)
    except MediaStoreUnavailable as exc:
        log.warning("media item %s deleted, but its file stays: %s", out.deleted.name, exc)
    return out
