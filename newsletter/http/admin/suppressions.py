"""`/admin/suppressions` (admins only): addresses never mailed on any list; add and lift them."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, Response

from newsletter.access.accounts import Caller
from newsletter.errors import InvalidInput, NotFound
from newsletter.http.admin.auth import user
from newsletter.http.admin.pages import page, redirect
from newsletter.http.context import web
from newsletter.store.states import SuppressionReason
from subscribers.suppressions import all_suppressions, suppress, unsuppress

router = APIRouter()
Admin = Depends(user("suppressions"))
SHOWN = 500  # rows on the page; the filter finds the others


@router.get("/suppressions")
def suppressions(request: Request, caller: Caller = Admin, q: str = "") -> HTMLResponse:
    return _page(request, caller, q=q)


def _page(
    request: Request,
    caller: Caller,
    *,
    q: str = "",
    status: int = 200,
    error: str | None = None,
    form: dict[str, str] | None = None,
) -> HTMLResponse:
    with web(request).transaction() as session:
        rows = all_suppressions(session)
    text = q.strip().lower()
    matching = [r for r in rows if text in r.email] if text else list(rows)
    return page(
        request,
        caller,
        "suppressions.html",
        status=status,
        rows=matching[:SHOWN],
        matching=len(matching),
        total=len(rows),
        q=q,
        reasons=tuple(SuppressionReason),
        error=error,
        form=form or {"email": "", "reason": SuppressionReason.ADMIN, "note": ""},
    )


@router.post("/suppressions")
def add(
    request: Request,
    caller: Caller = Admin,
    email: str = Form(""),
    reason: str = Form(SuppressionReason.ADMIN),
    note: str = Form(""),
) -> Response:
    try:
        with web(request).transaction() as session:
            _, new = suppress(session, email, reason=reason, note=note.strip())
    except InvalidInput as exc:
        return _page(
            request, caller, status=400, error=exc.message, form={"email": email, "reason": reason, "note": note}
        )
    return redirect(request, "/suppressions", "suppressed" if new else "already-suppressed")


@router.post("/suppressions/remove")
def remove(request: Request, caller: Caller = Admin, email: str = Form("")) -> Response:
    try:
        with web(request).transaction() as session:
            unsuppress(session, email)
    except (InvalidInput, NotFound) as exc:
        return _page(
            request,
            caller,
            status=404 if isinstance(exc, NotFound) else 400,
            error=exc.message if isinstance(exc, InvalidInput) else str(exc),
        )
    return redirect(request, "/suppressions", "unsuppressed")
