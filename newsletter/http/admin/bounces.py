"""`/admin/bounces` (admins only): the newest bounces, complaints and unsubscribe reports, proven or not.

A report is acted on only when it proved that we mailed the address (see
:mod:`subscribers.bounces`); the others are listed as unproven, for an admin to review:
they changed nothing. Read-only: a suppression is added or lifted on the Suppressions page.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse

from newsletter.access.accounts import Caller
from newsletter.errors import InvalidInput
from newsletter.http.admin.auth import user
from newsletter.http.admin.pages import page
from newsletter.http.context import web
from newsletter.store.states import BounceKind
from subscribers.bounces import recent_events

router = APIRouter()
Admin = Depends(user("suppressions"))  # the same people who manage suppressions: admins
SHOWN = 200
PROOF_CHOICES = ("", "proven", "unproven")


@router.get("/bounces")
def bounces(request: Request, caller: Caller = Admin, kind: str = "", proof: str = "", email: str = "") -> HTMLResponse:
    error = None
    rows = []
    try:
        if proof not in PROOF_CHOICES:
            raise InvalidInput("choose proven, unproven or any", where="proof")
        with web(request).transaction() as session:
            rows = recent_events(
                session,
                limit=SHOWN,
                kind=kind or None,
                email=email.strip() or None,
                proven=None if not proof else proof == "proven",
            )
    except InvalidInput as exc:
        error = exc.message
    return page(
        request,
        caller,
        "bounces.html",
        status=400 if error else 200,
        rows=rows,
        kinds=tuple(BounceKind),
        kind=kind,
        proof=proof,
        email=email,
        error=error,
        shown=SHOWN,
    )
