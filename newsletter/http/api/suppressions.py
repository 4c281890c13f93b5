"""/api/suppressions: addresses never mailed, on any list (admins)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, Response

from newsletter.http.api.auth import SuppressionAdmin
from newsletter.http.api.common import errors, field_names
from newsletter.http.api.schemas import NO_NUL, SuppressionIn, SuppressionOut, SuppressionsOut
from newsletter.http.context import web
from newsletter.store.models import Suppression
from subscribers import suppressions

router = APIRouter(prefix="/suppressions", tags=["suppressions"])


def suppression_out(row: Suppression) -> SuppressionOut:
    return SuppressionOut(email=row.email, reason=row.reason, note=row.note, created_at=row.created_at)


@router.get("", response_model=SuppressionsOut, responses=errors(), summary="Suppressed addresses, oldest first")
def all_suppressions(
    request: Request,
    caller: SuppressionAdmin,
    offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> SuppressionsOut:
    with web(request).reading() as session:
        rows = suppressions.all_suppressions(session)
        return SuppressionsOut(
            total=len(rows),
            offset=offset,
            limit=limit,
            items=[suppression_out(r) for r in rows[offset : offset + limit]],
        )


@router.post(
    "",
    status_code=201,
    response_model=SuppressionOut,
    responses={
        200: {"model": SuppressionOut, "description": "The address was suppressed already; the stored suppression."},
        **errors(400),
    },
    summary="Suppress an address",
)
def add_suppression(
    request: Request, response: Response, body: SuppressionIn, caller: SuppressionAdmin
) -> SuppressionOut:
    """201 with the new suppression, or 200 with the existing one when the address was suppressed already."""
    with web(request).transaction() as session, field_names({"--reason": "reason", "": "email"}):
        row, created = suppressions.suppress(session, body.email, reason=body.reason, note=body.note)
        if not created:
            response.status_code = 200
        return suppression_out(row)


@router.delete(
    "/{email}", status_code=204, response_class=Response, responses=errors(400, 404), summary="Lift a suppression"
)
def remove_suppression(
    request: Request,
    email: Annotated[str, Path(min_length=1, max_length=320, pattern=NO_NUL, description="The suppressed address.")],
    caller: SuppressionAdmin,
) -> Response:
    with web(request).transaction() as session, field_names({"": "email"}):
        suppressions.unsuppress(session, email)
    return Response(status_code=204)
