"""/api/templates: the email layouts admins store (admins write, editors read).

A template is checked before it is stored (newsletter.content.email_templates): a Jinja2 or
CSS error is a 400 whose ``field`` is ``html:LINE`` or ``text:LINE``, a missing part (the body,
the unsubscribe link, the postal address) a 400 whose ``field`` is ``html`` or ``text``; nothing
is stored. ``issue`` is the shipped layout: read-only, never deleted.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Path, Request, Response
from pydantic import BaseModel, Field

from newsletter.content import email_templates
from newsletter.content.email_templates import SOURCE_MAX, TemplateView
from newsletter.http.api.auth import TemplateReader, TemplateWriter
from newsletter.http.api.common import errors, render_settings
from newsletter.http.api.schemas import Strict, Text
from newsletter.http.context import web

router = APIRouter(prefix="/templates", tags=["templates"])

NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"
Name = Annotated[
    str,
    Field(pattern=NAME_PATTERN, min_length=1, max_length=64, description="1-64 lower-case letters, digits, - or _."),
]
NamePath = Annotated[
    str, Path(pattern=NAME_PATTERN, max_length=64, description="The template's name; 'issue' is the shipped layout.")
]
HtmlSource = Annotated[
    str, Text(SOURCE_MAX, 1, description="The HTML template (Jinja2; README, section Email templates).")
]
TextSource = Annotated[str, Text(SOURCE_MAX, 1, description="The plain-text template (Jinja2, the same variables).")]


class TemplateIn(Strict):
    name: Name
    html: HtmlSource
    text: TextSource


class TemplateUpdate(Strict):
    """Only the parts given change; the pair must still work."""

    html: HtmlSource | None = None
    text: TextSource | None = None


class TemplateCheckIn(Strict):
    html: HtmlSource
    text: TextSource


class TemplateSummary(BaseModel):
    name: str
    shipped: bool = Field(description="The shipped layout: read-only, the default of every list and issue.")
    created_at: datetime | None
    updated_at: datetime | None
    updated_by: str = Field(description='Who changed it last: "admin:NAME", "api:NAME" or "cli".')
    lists: list[str] = Field(description="The lists whose issues get it.")
    issues: list[int] = Field(description="The issues not sent yet (or scheduled) that name it.")


class TemplatesOut(BaseModel):
    items: list[TemplateSummary]


class TemplateOut(TemplateSummary):
    html: str
    text: str


class CheckProblem(BaseModel):
    level: Literal["error", "warning"]
    message: str
    where: str | None = Field(description="html:LINE, text:LINE, html or text.")


class CheckOut(BaseModel):
    ok: bool = Field(description="True when the pair can be stored.")
    problems: list[CheckProblem]


def _summary(view: TemplateView) -> dict[str, object]:
    return {
        "name": view.name,
        "shipped": view.shipped,
        "created_at": view.created_at,
        "updated_at": view.updated_at,
        "updated_by": view.updated_by,
        "lists": list(view.users.lists),
        "issues": [i for i, _ in view.users.issues],
    }


def _out(view: TemplateView) -> TemplateOut:
    return TemplateOut.model_validate({**_summary(view), "html": view.html, "text": view.text})


@router.get(
    "", response_model=TemplatesOut, responses=errors(), summary="Every template: the shipped one, then by name"
)
def all_templates(request: Request, caller: TemplateReader) -> TemplatesOut:
    settings = render_settings(request)
    with web(request).reading() as session:
        views = email_templates.all_templates(session, settings.template_dirs)
    return TemplatesOut(items=[TemplateSummary.model_validate(_summary(v)) for v in views])


@router.post("", status_code=201, response_model=TemplateOut, responses=errors(400, 409), summary="Store a template")
def create_template(request: Request, body: TemplateIn, caller: TemplateWriter) -> TemplateOut:
    """Stored once it renders the sample issue and inlines without an error (400 naming
    ``html:LINE`` or ``text:LINE`` otherwise; nothing stored). 409 when the name is taken."""
    settings = render_settings(request)
    with web(request).transaction() as session:
        email_templates.create_template(
            session,
            body.name,
            body.html,
            body.text,
            sample=settings.sample(),
            template_dirs=settings.template_dirs,
            by=f"api:{caller.name}",
        )
        return _out(email_templates.get_template(session, body.name, settings.template_dirs))


@router.post("/check", response_model=CheckOut, responses=errors(400), summary="Check a template without storing it")
def check_template(request: Request, body: TemplateCheckIn, caller: TemplateReader) -> CheckOut:
    """Every problem a save would find, each with where it is (200 either way; 400 for a body that is not JSON)."""
    checked = email_templates.check_template("new", body.html, body.text, render_settings(request).sample())
    return CheckOut(
        ok=checked.ok,
        problems=[CheckProblem(level=p.level, message=p.message, where=p.where) for p in checked.problems],
    )


@router.get("/{name}", response_model=TemplateOut, responses=errors(404), summary="One template and its sources")
def get_template(request: Request, name: NamePath, caller: TemplateReader) -> TemplateOut:
    settings = render_settings(request)
    with web(request).reading() as session:
        return _out(email_templates.get_template(session, name, settings.template_dirs))


@router.patch(
    "/{name}", response_model=TemplateOut, responses=errors(400, 404, 409), summary="Change a template's sources"
)
def update_template(request: Request, name: NamePath, body: TemplateUpdate, caller: TemplateWriter) -> TemplateOut:
    """Checked as a create is. Sends already started keep what they rendered; issues not sent yet get the
    new layout. 409 for the shipped layout (copy it into a new template instead)."""
    settings = render_settings(request)
    with web(request).transaction() as session:
        email_templates.update_template(
            session, name, html=body.html, text=body.text, sample=settings.sample(), by=f"api:{caller.name}"
        )
        return _out(email_templates.get_template(session, name, settings.template_dirs))


@router.delete(
    "/{name}", status_code=204, response_class=Response, responses=errors(404, 409), summary="Delete a template"
)
def delete_template(request: Request, name: NamePath, caller: TemplateWriter) -> Response:
    """409 for the shipped layout, and for a template a list uses or an issue not sent yet names (the
    message names them)."""
    with web(request).transaction() as session:
        email_templates.delete_template(session, name)
    return Response(status_code=204)
