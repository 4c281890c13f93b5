"""/api/lists/{slug}/automations: a list's welcome, the steps of its sequence, its goodbye, and their log.

The same rules as `newsletter automations` (see ``subscribers.automations``). Editors and admins
set them up (the "sends" permission: they send email); the per-recipient log names every
address, so, like a send's delivery log, it is for admins ("sends:log").
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from pydantic import BaseModel, Field

from newsletter.access.accounts import DELIVERY_LOG, Caller, Forbidden
from newsletter.delivery.automation_editions import freeze_if_on
from newsletter.delivery.automation_editions import refresh as refresh_all
from newsletter.http.api.auth import SendEditor, api_caller
from newsletter.http.api.common import errors, field_names, path_id, render_settings
from newsletter.http.api.schemas import MAX_ID, SLUG_PATTERN, Id, JsonInteger, Strict
from newsletter.http.context import web
from newsletter.store.states import AutomationKind, AutomationMailStatus
from subscribers import automation_mails, automations

router = APIRouter(prefix="/lists", tags=["automations"])

SlugPath = Annotated[str, Path(pattern=SLUG_PATTERN, max_length=64, description="The list's slug.")]
StepId = Annotated[int, path_id("step")]
IssueId = Annotated[Id, Field(description="An issue of the list.")]
Day = Annotated[
    int, Field(ge=0, le=automations.MAX_OFFSET_DAYS, description="Days after each person confirmed."), JsonInteger
]
#: The domain names CLI options; the API's fields have plain names.
FIELDS = {"--issue": "issue", "ISSUE": "issue", "--day": "day", "--kind": "kind", "--status": "status"}


def log_reader(caller: Annotated[Caller, Depends(api_caller)], slug: SlugPath) -> Caller:
    """The caller, when their role may read a per-recipient log (admins). Raises Forbidden (403)."""
    if not caller.may(DELIVERY_LOG):
        raise Forbidden(
            f"the {caller.role} role may not read the automated emails' recipients (needs {DELIVERY_LOG!r}): they are "
            f"subscribers' addresses, so the log is for admins. GET /api/lists/{slug}/automations gives the counts",
            action=DELIVERY_LOG,
        )
    return caller


class Counts(BaseModel):
    pending: int
    sent: int
    failed: int
    skipped: int = Field(description="Left the list or was suppressed first, or the email was switched off.")


class WelcomeOut(BaseModel):
    enabled: bool
    issue: int | None = Field(description="The issue it sends; null: the shipped text (templates/email/welcome.*).")
    subject: str | None = Field(description="That issue's subject; null for the shipped text.")
    also_added: bool = Field(description="Also for subscribers an editor adds as confirmed, not only the opt-in link.")
    issue_changed: bool = Field(description="The issue was edited after the welcome was set up: refresh to send it.")
    counts: Counts


class GoodbyeOut(BaseModel):
    enabled: bool
    counts: Counts


class StepOut(BaseModel):
    id: int
    day: int = Field(description="Days after each person confirmed.")
    issue: int
    subject: str
    added_at: datetime = Field(description="Only people who confirmed since then get it.")
    issue_changed: bool = Field(description="The issue was edited after the step was set up: refresh to send it.")
    counts: Counts


Steps = list[StepOut]  # named before AutomationsOut, whose field "list" hides the builtin in its body


class AutomationsOut(BaseModel):
    list: str
    welcome: WelcomeOut
    steps: Steps = Field(description="In the order they go out.")
    goodbye: GoodbyeOut


class WelcomeIn(Strict):
    """Only the fields given change."""

    enabled: bool | None = Field(None, strict=True, description="Switch the welcome on or off.")
    issue: IssueId | None = Field(
        None, description="An issue of the list to send as the welcome; null for the shipped text. Absent: unchanged."
    )
    also_added: bool | None = Field(
        None, strict=True, description="Also welcome subscribers an editor adds as confirmed (never CSV imports)."
    )


class GoodbyeIn(Strict):
    enabled: bool = Field(strict=True, description="Switch the goodbye (the shipped text) on or off.")


class StepIn(Strict):
    issue: IssueId
    day: Day


class AutomationMailOut(BaseModel):
    id: int
    email: str
    what: str = Field(description='"welcome", "day N" (a step) or "goodbye".')
    automation: int
    issue: int | None
    subject: str | None
    status: AutomationMailStatus
    attempts: int
    smtp_code: int | None
    smtp_reply: str | None = Field(description="The SMTP server's last reply, or why it was not sent.")
    message_id: str | None
    due_at: datetime = Field(description="When it became due (confirmed, left, or the step's day came).")
    sent_at: datetime | None
    updated_at: datetime


class AutomationMailPage(BaseModel):
    total: int
    offset: int
    limit: int
    items: list[AutomationMailOut] = Field(description="Newest first.")


def _counts(view: automations.AutomationView) -> Counts:
    return Counts(**{str(s): view.counts.get(s, 0) for s in AutomationMailStatus})


def _out(view: automations.Overview) -> AutomationsOut:
    welcome, goodbye = view.welcome, view.goodbye
    return AutomationsOut(
        list=view.list_slug,
        welcome=WelcomeOut(
            enabled=welcome.enabled,
            issue=welcome.issue_id,
            subject=welcome.subject,
            also_added=welcome.also_added,
            issue_changed=welcome.issue_changed,
            counts=_counts(welcome),
        ),
        steps=[
            StepOut(
                id=s.id or 0,
                day=s.offset_days or 0,
                issue=s.issue_id or 0,
                subject=s.subject or "",
                added_at=s.created_at or datetime.min,
                issue_changed=s.issue_changed,
                counts=_counts(s),
            )
            for s in view.steps
        ],
        goodbye=GoodbyeOut(enabled=goodbye.enabled, counts=_counts(goodbye)),
    )


@router.get(
    "/{slug}/automations",
    response_model=AutomationsOut,
    responses=errors(404),
    summary="The list's welcome, sequence steps and goodbye",
)
def show(request: Request, slug: SlugPath, caller: SendEditor) -> AutomationsOut:
    """Each with its emails counted by status."""
    with web(request).reading() as session:
        return _out(automations.overview(session, slug))


@router.put(
    "/{slug}/automations/welcome",
    response_model=AutomationsOut,
    responses=errors(400, 404),
    summary="Set the list's welcome email",
)
def set_welcome(request: Request, slug: SlugPath, body: WelcomeIn, caller: SendEditor) -> AutomationsOut:
    """On or off, the issue it sends (null: the shipped text), and whether subscribers an editor adds as
    confirmed get it too. The welcome goes once per person and list, when they confirm. 400 for an issue of
    another list, or one that does not render (nothing is changed)."""
    given = body.model_fields_set
    with web(request).transaction() as session, field_names(FIELDS):
        changed = automations.set_welcome(
            session,
            slug,
            enabled=body.enabled,
            issue_id=body.issue,
            shipped_text="issue" in given and body.issue is None,
            also_added=body.also_added,
        )
        freeze_if_on(session, changed, render_settings(request))
        return _out(automations.overview(session, slug))


@router.put(
    "/{slug}/automations/goodbye",
    response_model=AutomationsOut,
    responses=errors(400, 404),
    summary="Switch the list's goodbye email on or off",
)
def set_goodbye(request: Request, slug: SlugPath, body: GoodbyeIn, caller: SendEditor) -> AutomationsOut:
    """The shipped text, sent once to whoever leaves the list by themselves (never after a bounce, a
    complaint, an editor's removal or "leave everything")."""
    with web(request).transaction() as session:
        changed = automations.set_goodbye(session, slug, enabled=body.enabled)
        freeze_if_on(session, changed, render_settings(request))
        return _out(automations.overview(session, slug))


@router.post(
    "/{slug}/automations/steps",
    status_code=201,
    response_model=AutomationsOut,
    responses=errors(400, 404),
    summary="Add a step to the list's sequence",
)
def add_step(request: Request, slug: SlugPath, body: StepIn, caller: SendEditor) -> AutomationsOut:
    """The issue goes to each person ``day`` days after they confirmed, once, after the steps before it;
    only people who confirm from now on get it. 201 with the list's automations (the new step among the
    steps). 400 for an issue of another list, or one that does not render."""
    with web(request).transaction() as session, field_names(FIELDS):
        step = automations.add_step(session, slug, body.issue, body.day)
        freeze_if_on(session, step, render_settings(request))
        return _out(automations.overview(session, slug))


@router.post(
    "/{slug}/automations/refresh",
    response_model=AutomationsOut,
    responses=errors(400, 404),
    summary="Send the issues as they are now",
)
def refresh(request: Request, slug: SlugPath, caller: SendEditor) -> AutomationsOut:
    """What each automated email sends is rendered when it is set up and frozen, as a send freezes its
    issue, so an issue edited since (``issue_changed``) reaches nobody until this renders them all again.
    400 when one no longer renders (nothing is changed)."""
    with web(request).transaction() as session:
        refresh_all(session, slug, render_settings(request))
        return _out(automations.overview(session, slug))


@router.delete(
    "/{slug}/automations/steps/{step_id}",
    status_code=204,
    response_class=Response,
    responses=errors(404),
    summary="Remove a step from the list's sequence",
)
def remove_step(request: Request, slug: SlugPath, step_id: StepId, caller: SendEditor) -> Response:
    """Nobody gets it any more (those still waiting for it are skipped); its log stays."""
    with web(request).transaction() as session:
        automations.remove_step(session, slug, step_id)
    return Response(status_code=204)


@router.get(
    "/{slug}/automations/log",
    response_model=AutomationMailPage,
    responses=errors(404),
    summary="A page of the list's automated emails",
)
def mail_log(
    request: Request,
    slug: SlugPath,
    caller: Annotated[Caller, Depends(log_reader)],
    kind: Annotated[AutomationKind | None, Query(description="Only the welcome, the steps or the goodbye.")] = None,
    step: Annotated[int | None, Query(ge=1, le=MAX_ID, description="Only this step's emails.")] = None,
    status: Annotated[AutomationMailStatus | None, Query(description="Only emails in this status.")] = None,
    offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> AutomationMailPage:
    """Each automated email, newest first: to whom, what, when it became due and was sent, the SMTP server's
    last reply and the Message-ID."""
    with web(request).reading() as session:
        if step is not None:
            automations.get_automation(session, slug, step)
        total, rows = automation_mails.mail_log(
            session, slug, kind=kind, automation_id=step, status=status, offset=offset, limit=limit
        )
    return AutomationMailPage(
        total=total,
        offset=offset,
        limit=limit,
        items=[AutomationMailOut.model_validate(r.as_json()) for r in rows],
    )
