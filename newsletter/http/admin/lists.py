"""`/admin/lists`: every list with its counts; an admin creates lists here and changes them on their page."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, Response

from newsletter.access.accounts import Caller
from newsletter.content import email_templates, issues
from newsletter.delivery.automation_editions import refresh_shipped
from newsletter.errors import Conflict, InvalidInput
from newsletter.http.admin.auth import LoggedIn, user
from newsletter.http.admin.pages import page, redirect
from newsletter.http.context import web
from newsletter.locales.languages import SHIPPED, SOURCE
from subscribers import automations
from subscribers.lists import all_lists_with_counts, create_list, get_list, list_with_counts, update_list

router = APIRouter()

#: create_list names its fields as CLI options; the form's fields have plain names.
_FIELDS = {
    "SLUG": "slug",
    "--name": "name",
    "--from-email": "from_email",
    "--from-name": "from_name",
    "--reply-to": "reply_to",
    "--description": "description",
    "visibility": "visibility",
    "--tracking": "tracking",
    "--language": "language",
    "--template": "template",
}

#: The tracking choices, each with the one sentence the forms show.
TRACKING_CHOICES = (
    ("off", "Off: no image and every link exactly as written; reports show delivery figures only."),
    (
        "anonymous",
        "Anonymous: opens and clicks are counted per send and per link, tied to no subscriber.",
    ),
    (
        "individual",
        "Individual: as anonymous, and each subscriber's opens and clicks are kept on their page for a while.",
    ),
)


@router.get("/lists")
def all_lists(request: Request, caller: Caller = LoggedIn) -> HTMLResponse:
    caller.require("lists:read")
    return _lists_page(request, caller)


def _lists_page(
    request: Request,
    caller: Caller,
    *,
    status: int = 200,
    error: InvalidInput | Conflict | None = None,
    form: dict[str, str] | None = None,
) -> HTMLResponse:
    with web(request).transaction() as session:
        lists = all_lists_with_counts(session)
    field = _FIELDS.get(error.where or "", "") if isinstance(error, InvalidInput) else ("slug" if error else "")
    message = (error.message if isinstance(error, InvalidInput) else str(error)) if error else None
    return page(
        request,
        caller,
        "lists.html",
        status=status,
        lists=lists,
        error=message,
        error_field=field,
        form=form or {"tracking": "off", "language": SOURCE},
        tracking_choices=TRACKING_CHOICES,
        languages=SHIPPED,
    )


@router.post("/lists")
def new_list(
    request: Request,
    caller: Caller = Depends(user("lists:write")),
    slug: str = Form(""),
    name: str = Form(""),
    from_email: str = Form(""),
    from_name: str = Form(""),
    reply_to: str = Form(""),
    description: str = Form(""),
    tracking: str = Form("off"),
    language: str = Form(SOURCE),
) -> Response:
    form = {
        "slug": slug,
        "name": name,
        "from_email": from_email,
        "from_name": from_name,
        "reply_to": reply_to,
        "description": description,
        "tracking": tracking,
        "language": language,
    }
    try:
        with web(request).transaction() as session:
            create_list(
                session,
                slug.strip(),
                name=name.strip(),
                from_email=from_email,
                from_name=from_name.strip(),
                reply_to=reply_to.strip() or None,
                description=description.strip(),
                tracking=tracking,
                language=language,
            )
    except (InvalidInput, Conflict) as exc:
        return _lists_page(request, caller, status=400 if isinstance(exc, InvalidInput) else 409, error=exc, form=form)
    return redirect(request, f"/lists/{slug.strip()}", "created")


@router.get("/lists/{slug}")
def one_list(request: Request, slug: str, caller: Caller = LoggedIn) -> HTMLResponse:
    caller.require("lists:read")
    return _list_page(request, caller, slug)


def _list_page(
    request: Request,
    caller: Caller,
    slug: str,
    *,
    status: int = 200,
    error: InvalidInput | None = None,
    form: dict[str, str] | None = None,
    automation_error: tuple[str, str, str] | None = None,
    step_form: dict[str, str] | None = None,
) -> HTMLResponse:
    """The list's page; ``automation_error``: (form, field, message) of a refused change to its automated emails."""
    with web(request).transaction() as session:
        counts = list_with_counts(session, slug)
        every_issue = [i for i, _ in issues.all_issues(session, slug)] if caller.may("issues") else []
        list_issues = every_issue[:20]
        m = counts.mailing_list
        tracking = str(m.tracking)  # deferred columns: read while the session is open
        language = m.language
        automated = automations.overview(session, slug) if caller.may("sends") else None
        template = m.template or email_templates.SHIPPED
        layouts = email_templates.template_names(session) if caller.may("lists:write") else []
    current = {
        "name": m.name,
        "description": m.description,
        "from_name": m.from_name,
        "from_email": m.from_email,
        "reply_to": m.reply_to or "",
        "visibility": "private" if m.private else "public",
        "tracking": tracking,
        "language": language,
        "template": template,
    }
    return page(
        request,
        caller,
        "list.html",
        status=status,
        counts=counts,
        mailing_list=m,
        tracking=tracking,
        tracking_choices=TRACKING_CHOICES,
        language=language,
        languages=SHIPPED,
        layout=template,
        layouts=layouts,
        issues=list_issues,
        edit=form or current,
        edit_error=error.message if error else None,
        edit_error_field=_FIELDS.get(error.where or "", "") if error else "",
        automations=automated,
        issue_choices=[(i.id, i.subject) for i in every_issue],
        automation_error=automation_error,
        step_form=step_form or {},
    )


list_page = _list_page  # the list page, for the forms of its other panels (newsletter.http.admin.automations)


@router.post("/lists/{slug}")
def update(
    request: Request,
    slug: str,
    caller: Caller = Depends(user("lists:write")),
    name: str = Form(""),
    description: str = Form(""),
    from_name: str = Form(""),
    from_email: str = Form(""),
    reply_to: str = Form(""),
    visibility: str = Form(""),
    tracking: str = Form(""),
    language: str = Form(""),
    template: str = Form(""),
) -> Response:
    """Change the list's settings from its page's form; an empty Reply-To removes it. Tracking applies to
    the sends started from now on (each send keeps the choice it started with), the language to the emails
    rendered from now on, the layout (``template``) to issues not sent yet that do not name their own."""
    form = {
        "name": name,
        "description": description,
        "from_name": from_name,
        "from_email": from_email,
        "reply_to": reply_to,
        "visibility": visibility,
        "tracking": tracking,
        "language": language,
        "template": template,
    }
    try:
        if visibility not in ("public", "private"):
            raise InvalidInput("choose whether the list is public or private", where="visibility")
        with web(request).transaction() as session:
            before = get_list(session, slug).language
            changed = update_list(
                session,
                slug,
                name=name,
                description=description,
                from_name=from_name,
                from_email=from_email,
                reply_to=reply_to,
                private=visibility == "private",
                tracking=tracking or None,  # a form without the choice (an older page) leaves it as it is
                language=language or None,  # likewise
            )
            if template:  # likewise
                email_templates.set_list_template(session, slug, template)
            if changed.language != before:  # the shipped welcome and goodbye, frozen again in the new language
                refresh_shipped(session, changed, web(request).runtime.render_settings)
    except InvalidInput as exc:  # a RenderError too: the welcome or goodbye no longer renders
        return _list_page(request, caller, slug, status=400, error=exc, form=form)
    return redirect(request, f"/lists/{slug}", "saved")
