"""`/admin/templates`: the email layouts admins store, edited with a live preview; and the layout of one issue.

The edit page holds the HTML and the text template. While an admin types, ``static/admin/templates.js``
posts both to ``/admin/templates/check`` (problems with their part and line, and the text part) and
to ``/admin/templates/preview`` into two sandboxed frames (600 and 375 px wide): a sample issue
rendered with the template, served with the preview CSP as the issue editor's preview is. Nothing is
stored until Save, and a save is refused with the same problems. The shipped layout (``issue``) is
shown read-only, with a link that copies it into a new template. Admins write ("templates"); editors
may look ("templates:read"), and choose an issue's layout (``POST /admin/issues/ID/template``).
"""

from __future__ import annotations

from dataclasses import dataclass
from html import escape

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response

from newsletter.access.accounts import Caller
from newsletter.content import email_templates, issues
from newsletter.content.email_templates import SHIPPED, Checked, TemplateView
from newsletter.content.issues import RenderSettings
from newsletter.content.rendering import PersonalFields, Problem, personalise
from newsletter.errors import Conflict, InvalidInput, NotFound
from newsletter.http.admin.auth import user
from newsletter.http.admin.pages import PREVIEW_HEADERS, page, redirect
from newsletter.http.context import web

router = APIRouter()
Reader = Depends(user("templates:read"))
Writer = Depends(user("templates"))
IssueWriter = Depends(user("issues"))


def render_settings(request: Request) -> RenderSettings:
    s = web(request).settings
    return RenderSettings.create(base_url=s.base_url, postal_address=s.postal_address, user_template_dir=s.template_dir)


@dataclass(frozen=True)
class PartProblem:
    """A problem as the page shows it: which part (html, text, or none) and which line."""

    level: str
    message: str
    part: str | None
    line: int | None

    def as_json(self) -> dict[str, object]:
        return {"level": self.level, "message": self.message, "part": self.part, "line": self.line}


def _shown(problem: Problem) -> PartProblem:
    part, _, line = (problem.where or "").partition(":")
    if part in ("html", "text"):
        return PartProblem(problem.level, problem.message, part, int(line) if line.isdigit() else None)
    return PartProblem(problem.level, problem.message if not problem.where else str(problem), None, None)


def _refusal(exc: InvalidInput | Conflict | NotFound) -> tuple[PartProblem, ...]:
    if isinstance(exc, InvalidInput):
        return (_shown(Problem("error", exc.message, exc.where if exc.where != "name" else None)),)
    return (PartProblem("error", str(exc), None, None),)


# --- the list ------------------------------------------------------------------------------


@router.get("/templates")
def all_templates(request: Request, caller: Caller = Reader) -> HTMLResponse:
    with web(request).reading() as session:
        views = email_templates.all_templates(session, render_settings(request).template_dirs)
    return page(request, caller, "templates.html", views=views, may_edit=caller.may("templates"))


# --- the live check and preview (before /templates/{name}: these paths are not template names) ----


def _check(request: Request, html: str, text: str) -> tuple[Checked, str, str]:
    """The pair rendered with the sample issue, and the sample recipient's HTML and text ("" when refused)."""
    settings = render_settings(request)
    checked = email_templates.check_template("new", html, text, settings.sample())
    if checked.rendered is None:
        return checked, "", ""
    sample = settings.links
    fields = PersonalFields(
        name="Ann Example",
        email="ann@example.com",
        unsubscribe_url=sample.unsubscribe("preview"),
        preferences_url=sample.preferences("preview"),
        view_online_url=sample.view_online("sample", 0),
    )
    shown_html, shown_text = personalise(checked.rendered.html, checked.rendered.text, fields)
    return checked, shown_html, shown_text


@router.post("/templates/check")
def check(request: Request, caller: Caller = Reader, html: str = Form(""), text: str = Form("")) -> JSONResponse:
    """``{"ok", "problems": [{"level", "message", "part", "line"}], "text"}`` for the page's script."""
    checked, _, shown_text = _check(request, html, text)
    return JSONResponse(
        {"ok": checked.ok, "problems": [_shown(p).as_json() for p in checked.problems], "text": shown_text}
    )


@router.post("/templates/preview")
def preview(request: Request, caller: Caller = Reader, html: str = Form(""), text: str = Form("")) -> HTMLResponse:
    """The sample issue in the template, for a preview frame (the script posts the editor's sources here)."""
    checked, shown_html, _ = _check(request, html, text)
    if checked.ok:
        return HTMLResponse(shown_html, headers=PREVIEW_HEADERS)
    items = "".join(
        f"<li>{escape(_where(p))}{escape(p.message)}</li>" for p in map(_shown, checked.problems) if p.level == "error"
    )
    body = (
        "<!doctype html><html lang=en><meta charset=utf-8><title>Cannot preview</title>"
        '<body style="font:16px/1.5 system-ui,sans-serif;margin:1.5rem;color:#24211c">'
        f"<p><strong>This template cannot be rendered yet:</strong></p><ul>{items}</ul></body></html>"
    )
    return HTMLResponse(body, status_code=400, headers=PREVIEW_HEADERS)


def _where(problem: PartProblem) -> str:
    if problem.part is None:
        return ""
    label = "HTML" if problem.part == "html" else "Text"
    return f"{label}, line {problem.line}: " if problem.line else f"{label}: "


# --- the editor ----------------------------------------------------------------------------


def _editor(
    request: Request,
    caller: Caller,
    *,
    view: TemplateView | None,
    name: str,
    html: str,
    text: str,
    status: int = 200,
    problems: tuple[PartProblem, ...] = (),
    error: str | None = None,
    copied_from: str | None = None,
) -> HTMLResponse:
    """The edit page: a new template (``view`` None), a stored one, or the shipped one (read-only)."""
    read_only = (view is not None and view.shipped) or not caller.may("templates")
    return page(
        request,
        caller,
        "template_edit.html",
        status=status,
        view=view,
        name=name,
        html=html,
        text=text,
        problems=problems,
        error=error,
        read_only=read_only,
        copied_from=copied_from,
        may_edit=caller.may("templates"),
    )


@router.get("/templates/new")
def new_template(request: Request, caller: Caller = Writer, copy: str = "") -> HTMLResponse:
    """A new template, started from a copy of ``copy`` (the shipped layout when none is given)."""
    try:
        with web(request).reading() as session:
            source = email_templates.get_template(session, copy or SHIPPED, render_settings(request).template_dirs)
    except (NotFound, Conflict) as exc:
        return _editor(request, caller, view=None, name="", html="", text="", status=404, error=str(exc))
    name = f"{source.name}-copy" if not source.shipped else ""
    return _editor(request, caller, view=None, name=name, html=source.html, text=source.text, copied_from=source.name)


@router.post("/templates/new")
def create(
    request: Request,
    caller: Caller = Writer,
    name: str = Form(""),
    html: str = Form(""),
    text: str = Form(""),
) -> Response:
    settings = render_settings(request)
    try:
        with web(request).transaction() as session:
            email_templates.create_template(
                session,
                name,
                html,
                text,
                sample=settings.sample(),
                template_dirs=settings.template_dirs,
                by=f"admin:{caller.name}",
            )
    except (InvalidInput, Conflict) as exc:
        status = 409 if isinstance(exc, Conflict) else 400
        error = str(exc) if isinstance(exc, Conflict) or exc.where == "name" else None
        problems = () if error else _refusal(exc)
        return _editor(
            request, caller, view=None, name=name, html=html, text=text, status=status, problems=problems, error=error
        )
    return redirect(request, f"/templates/{name.strip()}", "created")


@router.get("/templates/{name}")
def edit(request: Request, name: str, caller: Caller = Reader) -> HTMLResponse:
    with web(request).reading() as session:
        view = email_templates.get_template(session, name, render_settings(request).template_dirs)
    return _editor(request, caller, view=view, name=view.name, html=view.html, text=view.text)


@router.post("/templates/{name}")
def save(
    request: Request,
    name: str,
    caller: Caller = Writer,
    html: str = Form(""),
    text: str = Form(""),
) -> Response:
    settings = render_settings(request)
    try:
        with web(request).transaction() as session:
            email_templates.update_template(
                session, name, html=html, text=text, sample=settings.sample(), by=f"admin:{caller.name}"
            )
    except (InvalidInput, Conflict) as exc:
        with web(request).reading() as session:
            view = email_templates.get_template(session, name, settings.template_dirs)
        status = 409 if isinstance(exc, Conflict) else 400
        return _editor(
            request, caller, view=view, name=name, html=html, text=text, status=status, problems=_refusal(exc)
        )
    return redirect(request, f"/templates/{name}", "saved")


@router.post("/templates/{name}/delete")
def delete(request: Request, name: str, caller: Caller = Writer) -> Response:
    """Delete a stored template; refused (the page says why) for the shipped one or one in use."""
    settings = render_settings(request)
    try:
        with web(request).transaction() as session:
            email_templates.delete_template(session, name)
    except Conflict as exc:
        with web(request).reading() as session:
            view = email_templates.get_template(session, name, settings.template_dirs)
        return _editor(
            request, caller, view=view, name=name, html=view.html, text=view.text, status=409, error=str(exc)
        )
    return redirect(request, "/templates", "template-deleted")


# --- one issue's layout ---------------------------------------------------------------------


@router.post("/issues/{issue_id:int}/template")
def choose_for_issue(
    request: Request, issue_id: int, caller: Caller = IssueWriter, template: str = Form("")
) -> Response:
    """Set the saved issue's layout (``issue``: its list's); refused, with the reason on the issue's
    page, when the issue does not render in it."""
    try:
        with web(request).transaction() as session:
            issues.set_issue_template(session, issue_id, template, render_settings(request))
    except InvalidInput as exc:
        return page(
            request, caller, "issue_layout.html", status=400, issue_id=issue_id, layout=template, error=str(exc)
        )
    return redirect(request, f"/issues/{issue_id}", "layout-chosen")
