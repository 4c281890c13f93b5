"""`/media/<sha256>.<ext>`: the media library's images, served from the app's own URL to mail clients and pages.

A file's name is the SHA-256 of its bytes, so what a URL shows never changes: it is served with
``Cache-Control: public, max-age=31536000, immutable`` (mail clients' image proxies, browsers and
any CDN keep it), its hash as the ETag (a revalidation is a 304 without touching the store), the
Content-Type of its checked format and ``X-Content-Type-Options: nosniff``. The name is checked
against the one pattern the library makes before the store is asked; no database read is needed.

With an S3 store the app reads the object and streams it on (a proxy, not a redirect to the
bucket): the bucket stays private, the URL in mail already sent keeps working if the store moves,
every response carries the headers above whatever the bucket's metadata says, and the admin
pages' CSP (``img-src 'self'``) still holds. The cost, the bytes passing through the app, is paid
once per cache: the responses are immutable.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, Response, StreamingResponse

from newsletter.content import media
from newsletter.errors import NotFound
from newsletter.http.context import web

router = APIRouter()

IMMUTABLE = "public, max-age=31536000, immutable"


@router.api_route("/media/{name}", methods=["GET", "HEAD"])
def media_file(request: Request, name: str) -> Response:
    content_type = media.content_type_of(name)
    if content_type is None:
        raise NotFound(f"no media file {name!r}")
    etag = f'"{name.split(".", 1)[0]}"'
    headers = {
        "Cache-Control": IMMUTABLE,
        "ETag": etag,
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": "default-src 'none'; sandbox",
        "Cross-Origin-Resource-Policy": "cross-origin",  # mail clients and web mail show it from other sites
    }
    if etag in {tag.strip() for tag in request.headers.get("if-none-match", "").split(",")}:
        return Response(status_code=304, headers=headers)
    blob = web(request).runtime.media_store.open(name)
    if blob is None:
        raise NotFound(f"no media file {name!r}")
    if request.method == "HEAD":
        blob.close()
        return Response(headers={**headers, "Content-Length": str(blob.size)}, media_type=content_type)
    if blob.path is not None:
        return FileResponse(blob.path, headers=headers, media_type=content_type)
    return StreamingResponse(
        blob.chunks, headers={**headers, "Content-Length": str(blob.size)}, media_type=content_type
    )
