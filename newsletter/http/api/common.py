"""What the API's resource modules share: documented error responses, settings, field names."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from fastapi import Path, Request

from newsletter.content.issues import RenderSettings
from newsletter.errors import InvalidInput
from newsletter.http.api.schemas import MAX_ID, ErrorResponse
from newsletter.http.context import web

_MEANING = {
    400: "Invalid input: the message says what, `field` names the field (or FILE:LINE).",
    401: "No API token, or an unknown or revoked one (`Authorization: Bearer <token>`).",
    403: "The token's role may not do this.",
    404: "Not found.",
    409: "Conflicts with what is stored (a duplicate, or the wrong state for this).",
    413: "The request body is larger than this endpoint takes (2 MB; a CSV import NEWSLETTER_IMPORT_MAX_MB, "
    "an image NEWSLETTER_MEDIA_MAX_MB); "
    "the message names the limit.",
    422: "The request does not match the schema; `field` names the part at fault.",
    502: "The SMTP server refused the message or could not be reached.",
    503: "The broker (Redis), or the media store, could not be reached; try again later.",
}


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for the error statuses an operation can answer (401, 403 and 422 always)."""
    return {code: {"model": ErrorResponse, "description": _MEANING[code]} for code in sorted({401, 403, 422, *codes})}


def path_id(what: str) -> Any:
    return Path(ge=1, le=MAX_ID, description=f"The {what}'s id.")


def render_settings(request: Request) -> RenderSettings:
    s = web(request).settings
    return RenderSettings.create(base_url=s.base_url, postal_address=s.postal_address, user_template_dir=s.template_dir)


@contextmanager
def field_names(names: dict[str, str]) -> Iterator[None]:
    """Re-raise InvalidInput with the API's name for the field (the domain names CLI options)."""
    try:
        yield
    except InvalidInput as exc:
        where = names.get(exc.where or "", exc.where)
        if where == exc.where:
            raise
        raise InvalidInput(exc.message, where=where) from None
