"""`/docs`: the admin API's reference, browsable (Swagger UI), served entirely from the app.

Swagger UI's files come from the ``fastapi-offline`` package and are mounted under
``/static/swagger-ui/``; the page loads no third-party script, style, font or image. Its
start-up script is a file of ours (``static/docs.js``) rather than FastAPI's inline one,
so the page's CSP allows scripts from the app itself only.
"""

from __future__ import annotations

from pathlib import Path

import fastapi_offline
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from newsletter.http.context import web

router = APIRouter()

#: Swagger UI's own files (swagger-ui-bundle.js, swagger-ui.css).
SWAGGER_UI_DIR = Path(fastapi_offline.__file__).resolve().parent / "static"

#: Scripts, styles and images from the app only (Swagger UI's icons are data: URLs in its CSS);
#: "Try it out" calls this app's API.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'none'; base-uri 'none'; frame-ancestors 'none'"
)


@router.get("/docs")
def docs(request: Request) -> HTMLResponse:
    """The API reference: every operation of /openapi.json, with "Try it out" against this app."""
    w = web(request)
    return w.page(
        request,
        "docs.html",
        language="en",  # the API reference is for developers, in English only
        headers={"Content-Security-Policy": CSP},
        title=request.app.title,
        version=request.app.version,
    )
