"""A list's welcome, sequence steps and goodbye: the forms on the list page, and the log of its automated emails.

The forms post here (the "sends" permission, as in the API: automated emails are email sent to
the list) and go back to the list page, which shows each one's counts; a refused change shows the
list page again with the error, nothing changed. ``/admin/lists/{slug}/automations`` is the log:
each automated email's recipient, what it was, when, and the SMTP server's reply (admins only, like
a send's delivery log; editors see the counts).
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Form, Query, Request
from fastapi.responses import HTMLResponse, Response

from newsletter.access.accounts import DELIVERY_LOG, Caller
from newsletter.content.issues import RenderSettings
from newsletter.delivery.automation_editions import freeze_if_on
from newsletter.delivery.automation_editions import refresh as refresh_all
from newsletter.errors import InvalidInput
from newsletter.http.admin.auth import user
from newsletter.http.admin.lists import list_page
from newsletter.http.admin.pages import page, redirect
from newsletter.http.context import web
from newsletter.store.states import AutomationKind, AutomationMailStatus
from subscribers import automation_mails, automations
from subscribers.lists import get_list

router = APIRouter()
Sender = Depends(user("sends"))
PAGE_SIZE = 50


def _render(request: Request) -> RenderSettings:
    return web(request).runtime.render_settings


def _number(value: str, field: str, what: str) -> int:
    try:
        number = int(value.strip())
    except ValueError:
        raise InvalidInput(f"{what} must be a whole number, not {value.strip()!r}", where=field) from None
    if not 0 <= number <= 2**53 - 1:
        raise InvalidInput(f"{what} is out of range", where=field)
    return number


@router.post("/lists/{slug}/automations/welcome")
def welcome(
    request: Request,
    slug: str,
    caller: Caller = Sender,
    enabled: str = Form(""),
    issue: str = Form(""),
    who: str = Form("opt-in"),
) -> Response:
    """On or off, the issue it sends ("" for the shipped text), and who gets it ("opt-in" or "added")."""
    try:
        if who not in ("opt-in", "added"):
            raise InvalidInput("choose who gets the welcome", where="welcome-who")
        issue_id = _number(issue, "welcome-issue", "the issue") if issue.strip() else None
        with web(request).transaction() as session:
            changed = automations.set_welcome(
                session,
                slug,
                enabled=enabled == "1",
                issue_id=issue_id,
                shipped_text=issue_id is None,
                also_added=who == "added",
            )
            freeze_if_on(session, changed, _render(request))
    except InvalidInput as exc:
        return _refused(request, caller, slug, exc, "welcome")
    return redirect(request, f"/lists/{slug}", "automations-saved")


@router.post("/lists/{slug}/automations/goodbye")
def goodbye(request: Request, slug: str, caller: Caller = Sender, enabled: str = Form("")) -> Response:
    try:
        with web(request).transaction() as session:
            changed = automations.set_goodbye(session, slug, enabled=enabled == "1")
            freeze_if_on(session, changed, _render(request))
    except InvalidInput as exc:
        return _refused(request, caller, slug, exc, "goodbye")
    return redirect(request, f"/lists/{slug}", "automations-saved")


@router.post("/lists/{slug}/automations/steps")
def add_step(
    request: Request, slug: str, caller: Caller = Sender, issue: str = Form(""), day: str = Form("")
) -> Response:
    try:
        if not issue.strip():
            raise InvalidInput("choose the issue the step sends", where="step-issue")
        issue_id = _number(issue, "step-issue", "the issue")
        days = _number(day, "step-day", "the day") if day.strip() else -1
        with web(request).transaction() as session:
            step = automations.add_step(session, slug, issue_id, days)
            freeze_if_on(session, step, _render(request))
    except InvalidInput as exc:
        return _refused(request, caller, slug, exc, "step", {"issue": issue, "day": day})
    return redirect(request, f"/lists/{slug}", "step-added")


@router.post("/lists/{slug}/automations/refresh")
def refresh(request: Request, slug: str, caller: Caller = Sender) -> Response:
    """Render every automated email of the list again from its issue (or shipped text) as it is now."""
    try:
        with web(request).transaction() as session:
            refresh_all(session, slug, _render(request))
    except InvalidInput as exc:
        return _refused(request, caller, slug, exc, "refresh")
    return redirect(request, f"/lists/{slug}", "automations-refreshed")


@router.post("/lists/{slug}/automations/steps/{step_id}/remove")
def remove_step(request: Request, slug: str, step_id: int, caller: Caller = Sender) -> Response:
    with web(request).transaction() as session:
        automations.remove_step(session, slug, step_id)
    return redirect(request, f"/lists/{slug}", "step-removed")


def _refused(
    request: Request,
    caller: Caller,
    slug: str,
    exc: InvalidInput,
    form: str,
    values: dict[str, str] | None = None,
) -> HTMLResponse:
    """The list page again, with the error by the form that was refused (nothing was changed)."""
    fields = {"--issue": f"{form}-issue", "ISSUE": "step-issue", "--day": "step-day"}
    return list_page(
        request,
        caller,
        slug,
        status=400,
        automation_error=(form, fields.get(exc.where or "", exc.where or ""), exc.message),
        step_form=values,
    )


@router.get("/lists/{slug}/automations")
def log(
    request: Request,
    slug: str,
    caller: Caller = Sender,
    kind: str = "",
    status: str = "",
    step: int | None = Query(None, ge=1, le=2**53 - 1),
    page_number: int = Query(1, alias="page", ge=1, le=2**31 - 1),
) -> HTMLResponse:
    """The list's automated emails, newest first, with filters by kind, step and status."""
    chosen_kind = kind if kind in tuple(AutomationKind) else None
    chosen_status = status if status in tuple(AutomationMailStatus) else None
    may_read_log = caller.may(DELIVERY_LOG)  # the log names every recipient: admins only
    with web(request).transaction() as session:  # not reading(): its rollback would expire what the page shows
        mailing_list = get_list(session, slug)
        view = automations.overview(session, slug)
        if step is not None:
            automations.get_automation(session, slug, step)  # NotFound for another list's
        total, rows = 0, list[automation_mails.LogRow]()
        if may_read_log:
            total, rows = automation_mails.mail_log(
                session,
                slug,
                kind=chosen_kind,
                automation_id=step,
                status=chosen_status,
                offset=(page_number - 1) * PAGE_SIZE,
                limit=PAGE_SIZE,
            )
    query = "&".join(
        f"{k}={v}" for k, v in (("kind", chosen_kind), ("status", chosen_status), ("step", step)) if v is not None
    )
    return page(
        request,
        caller,
        "automations.html",
        mailing_list=mailing_list,
        automations=view,
        rows=rows,
        total=total,
        kinds=tuple(AutomationKind),
        statuses=tuple(AutomationMailStatus),
        chosen_kind=chosen_kind or "",
        chosen_status=chosen_status or "",
        step=step,
        page_number=page_number,
        pages=max(1, -(-total // PAGE_SIZE)),
        first=(page_number - 1) * PAGE_SIZE + 1,
        pager_url=f"?{query}&" if query else "?",
        may_read_log=may_read_log,
    )
