"""`/admin/issues`: write an issue with a live preview, test it, send or schedule it.

The editor is one textarea holding the issue as a file (Markdown with front matter, see
newsletter/issue_files.py), so a file pasted in is an issue. While the editor types, its
script (``static/admin/editor.js``) posts the draft to ``/admin/issues/check`` (problems with
their lines, and the plain text) and to ``/admin/issues/preview`` into two sandboxed frames
(600 and 375 px wide): the preview is the email's own HTML, served with a CSP of its own that
allows its inline styles and remote images and nothing else.

A saved issue saves itself as the editor types (``/admin/issues/{id}/autosave``, JSON). Every
save, that one and the form's **Save**, carries the issue's revision the page was loaded with
(or last saved); a save based on an older revision than the stored one is refused (409) and the
page keeps the editor's text, so two tabs or two editors never silently overwrite each other.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Annotated

import yaml
from fastapi import APIRouter, Depends, Form, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from newsletter.access.accounts import Caller
from newsletter.config import Settings
from newsletter.content import email_templates, issues
from newsletter.content.issue_files import DEFAULT_TEMPLATE, IssueSource, parse_issue_text
from newsletter.content.issues import RenderSettings, StaleRevision
from newsletter.content.rendering import personalise
from newsletter.delivery import audience, sending, subject_variants
from newsletter.delivery.audience import Repeat, SendRefused
from newsletter.delivery.scheduling import schedule_send
from newsletter.delivery.send_queue import QueueUnavailable, queue_batches
from newsletter.delivery.subject_variants import DEFAULT_DECIDE_AFTER, DEFAULT_SHARE, SubjectTestPlan, UntrackedLists
from newsletter.errors import Conflict, DeliveryError, InvalidInput, NotFound, RenderError
from newsletter.http.admin.auth import user
from newsletter.http.admin.pages import PREVIEW_HEADERS, page, redirect
from newsletter.http.context import Web, web
from newsletter.store.models import Issue, MailingList, Send
from newsletter.store.states import SendAudience, Tracking
from subscribers.lists import all_lists_with_counts, get_list
from subscribers.segments import all_segments

router = APIRouter()
Writer = Depends(user("issues"))
Sender = Depends(user("sends"))

DRAFT = "draft"  # the source name in a draft's problems: "draft:LINE"
_WHERE_LINE = re.compile(rf"^{DRAFT}:(\d+)$")
_WARNING = re.compile(rf"^{DRAFT}:(\d+): (.*)$", re.S)
Batches = list[sending.Batch]  # (the send form has a field named list)
TEST_FIELDS = ("test_subject", "test_share", "test_decide_after")  # the send form's subject test
TEST_LABELS = dict(zip(TEST_FIELDS, ("Other subject (B)", "Test share", "Decide after"), strict=True))
NEW_ISSUE = """---
subject: "Your subject"
preheader: "The line mail clients show after the subject."
---
Hello *|NAME:there|*,

# A headline

Write in Markdown: *emphasis*, [links](https://example.org), lists, quotes and images.
`*|NAME:there|*` is each reader's name, or "there" for someone without one (see the greeting).
"""


def render_settings(settings: Settings) -> RenderSettings:
    return RenderSettings.create(
        base_url=settings.base_url, postal_address=settings.postal_address, user_template_dir=settings.template_dir
    )


# --- drafts: check and preview ---------------------------------------------------------------


@dataclass(frozen=True)
class DraftProblem:
    level: str  # "error" or "warning"
    message: str
    where: str | None
    line: int | None  # the line of the editor's text, when the problem is in it

    def as_json(self) -> dict[str, object]:
        return {"level": self.level, "message": self.message, "where": self.where, "line": self.line}


@dataclass(frozen=True)
class Draft:
    problems: tuple[DraftProblem, ...]
    subject: str = ""
    html: str = ""
    text: str = ""

    @property
    def ok(self) -> bool:
        return not any(p.level == "error" for p in self.problems)


def _problem(level: str, message: str, where: str | None) -> DraftProblem:
    match = _WHERE_LINE.match(where or "")
    return DraftProblem(level, message, None if match else where, int(match.group(1)) if match else None)


def _warning(warning: str) -> DraftProblem:
    """A renderer's warning ("draft:LINE: message") as a problem with its line."""
    match = _WARNING.match(warning)
    return (
        DraftProblem("warning", match.group(2), None, int(match.group(1)))
        if match
        else DraftProblem("warning", warning, None, None)
    )


def parse_draft(text: str) -> IssueSource:
    """The editor's text as an issue. A form posts a textarea's line breaks as CRLF (HTML says so), a
    script as LF: stored as LF either way, so the text reads back as it was written. Raises InvalidInput."""
    return parse_issue_text(text.replace("\r\n", "\n"), source=DRAFT)


def render_draft(session: Session, list_slug: str, text: str, settings: RenderSettings, issue_id: int = 0) -> Draft:
    """The editor's text rendered for a sample recipient, or every problem that stops it. Raises NotFound (list)."""
    mailing_list = get_list(session, list_slug)
    try:
        source = parse_draft(text)
    except InvalidInput as exc:
        return Draft((_problem("error", exc.message, exc.where),))
    try:
        rendered = settings.render(source, mailing_list)
    except RenderError:
        found = settings.check(source, mailing_list)
        return Draft(tuple(_problem(p.level, p.message, p.where) for p in found))
    warnings = [_warning(w) for w in rendered.warnings]
    fields = issues.sample_personal_fields(settings.links, mailing_list, issue_id)
    html, plain = personalise(rendered.html, rendered.text, fields)
    return Draft(tuple(warnings), rendered.subject, html, plain)


def issue_text(issue: Issue) -> str:
    """A stored issue as the file it could have come from (front matter and body)."""
    front: dict[str, str] = {"subject": issue.subject}
    if issue.preheader:
        front["preheader"] = issue.preheader
    if issue.template != DEFAULT_TEMPLATE:
        front["template"] = issue.template
    dumped = yaml.safe_dump(front, allow_unicode=True, sort_keys=False, width=10**9, default_style='"')
    dumped = re.sub(r'^"(\w+)":', r"\1:", dumped, flags=re.M)  # quoted values, plain keys
    return f"---\n{dumped}---\n{issue.body_markdown}"


# --- pages -----------------------------------------------------------------------------------


@router.get("/issues")
def all_issues(request: Request, caller: Caller = Writer, list: str | None = None) -> HTMLResponse:
    with web(request).transaction() as session:
        rows = issues.all_issues(session, list or None)
    return page(request, caller, "issues.html", rows=rows, list_slug=list or "")


@router.get("/issues/new")
def new_issue(request: Request, caller: Caller = Writer, list: str | None = None) -> HTMLResponse:
    return _editor(request, caller, None, NEW_ISSUE, list_slug=list or "")


def _editor(
    request: Request,
    caller: Caller,
    issue_id: int | None,
    text: str,
    *,
    list_slug: str,
    status: int = 200,
    problems: tuple[DraftProblem, ...] = (),
    test_to: str = "",
    test_error: str | None = None,
    notice: str | None = None,
    revision: int | None = None,
    conflict: StaleRevision | None = None,
) -> HTMLResponse:
    """``revision``: what the page's text is based on (after a refused save, the one that was sent,
    not the stored one: saving that text again must be refused again); default the stored one."""
    with web(request).transaction() as session:
        lists = [c.mailing_list for c in all_lists_with_counts(session)]
        issue, mailing_list = issues.get_issue(session, issue_id) if issue_id is not None else (None, None)
        sends = _sends_of(session, issue_id) if issue_id is not None else []
        layouts = (
            email_templates.layout_choices(session, issue.template, mailing_list) if issue and mailing_list else []
        )
    if issue is not None and revision is None:
        revision = issue.revision
    if mailing_list is not None:
        list_slug = mailing_list.slug
    elif not list_slug and lists:
        list_slug = lists[0].slug
    return page(
        request,
        caller,
        "issue_edit.html",
        status=status,
        issue=issue,
        text=text,
        lists=lists,
        list_slug=list_slug,
        problems=problems,
        test_to=test_to,
        test_error=test_error,
        sends=sends,
        may_send=caller.may("sends"),
        notice=notice,
        revision=revision if revision is not None else "",
        conflict=conflict,
        layouts=layouts,
    )


def _sends_of(session: Session, issue_id: int) -> list[sending.SendCounts]:
    ids = session.scalars(select(Send.id).where(Send.issue_id == issue_id).order_by(Send.id.desc()).limit(10)).all()
    return [sending.send_counts(session, i) for i in ids]


def _save_problems(exc: InvalidInput | NotFound | Conflict) -> tuple[DraftProblem, ...]:
    if isinstance(exc, InvalidInput):
        return (_problem("error", exc.message, exc.where),)
    return (DraftProblem("error", str(exc), None, None),)


@router.post("/issues/new")
def create(request: Request, caller: Caller = Writer, list: str = Form(""), source: str = Form("")) -> Response:
    w = web(request)
    try:
        parsed = parse_draft(source)
        with w.transaction() as session:
            issue, _ = issues.create_issue(session, list, parsed, render_settings(w.settings))
    except (InvalidInput, NotFound) as exc:
        return _editor(request, caller, None, source, list_slug=list, status=400, problems=_save_problems(exc))
    return redirect(request, f"/issues/{issue.id}", "created")


@router.get("/issues/{issue_id:int}")
def edit(request: Request, issue_id: int, caller: Caller = Writer, test_to: str = "") -> HTMLResponse:
    with web(request).transaction() as session:
        issue, _ = issues.get_issue(session, issue_id)
        text, revision = issue_text(issue), issue.revision  # read together: the text is that revision's
    sent_to = f"Test sent to {test_to}." if test_to and request.query_params.get("done") == "test-sent" else None
    return _editor(request, caller, issue_id, text, list_slug="", test_to=test_to, notice=sent_to, revision=revision)


@router.post("/issues/{issue_id:int}")
def save(
    request: Request, issue_id: int, caller: Caller = Writer, source: str = Form(""), revision: str = Form("")
) -> Response:
    """The form's Save. ``revision`` (the page's) is checked as the autosave checks it; a form without
    one (a script of old) saves over whatever is stored."""
    w = web(request)
    based_on: int | None = None
    try:
        based_on = _revision(revision, required=False)
        parsed = parse_draft(source)
        with w.transaction() as session:
            issues.update_issue(session, issue_id, parsed, render_settings(w.settings), revision=based_on)
    except InvalidInput as exc:
        return _editor(
            request,
            caller,
            issue_id,
            source,
            list_slug="",
            status=400,
            problems=_save_problems(exc),
            revision=based_on,
        )
    except StaleRevision as exc:  # the text stays in the editor, with the reason and a way to reload
        return _editor(request, caller, issue_id, source, list_slug="", status=409, revision=based_on, conflict=exc)
    return redirect(request, f"/issues/{issue_id}", "saved")


@router.post("/issues/{issue_id:int}/autosave")
def autosave(
    request: Request, issue_id: int, caller: Caller = Writer, source: str = Form(""), revision: str = Form("")
) -> JSONResponse:
    """The editor's autosave: the draft stored when it renders, if ``revision`` is still the stored one.

    200 ``{saved, revision, saved_at, problems}`` (the new revision, for the next save); 400
    ``{saved: false, error, problems}`` when it does not render (nothing stored); 409 ``{saved: false,
    conflict: true, error, revision, changed_at}`` when the issue was saved since that revision; 404.
    """
    w = web(request)
    try:
        based_on = _revision(revision, required=True)
        parsed = parse_draft(source)
        with w.transaction() as session:
            issue, rendered = issues.update_issue(
                session, issue_id, parsed, render_settings(w.settings), revision=based_on
            )
            saved_revision, saved_at = issue.revision, issue.updated_at
    except InvalidInput as exc:
        problem = _save_problems(exc)[0]
        where = f"line {problem.line}: " if problem.line else (f"{problem.where}: " if problem.where else "")
        return JSONResponse(
            {"saved": False, "error": where + problem.message, "problems": [problem.as_json()]}, status_code=400
        )
    except StaleRevision as exc:
        return JSONResponse(
            {
                "saved": False,
                "conflict": True,
                "error": str(exc),
                "revision": exc.current,
                "changed_at": _iso(exc.changed_at),
            },
            status_code=409,
        )
    except NotFound:
        return JSONResponse({"saved": False, "error": "this issue no longer exists (deleted?)"}, status_code=404)
    warnings = [_warning(warning).as_json() for warning in rendered.warnings]
    return JSONResponse({"saved": True, "revision": saved_revision, "saved_at": _iso(saved_at), "problems": warnings})


def _revision(value: str, *, required: bool) -> int | None:
    """The form's ``revision`` field. Raises InvalidInput."""
    if not value.strip() and not required:
        return None
    try:
        number = int(value.strip())
    except ValueError:
        number = 0
    if number < 1:
        raise InvalidInput(
            "the page did not say which revision of the issue it was editing; reload it", where="revision"
        )
    return number


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat(timespec="seconds")


# --- duplicate and delete --------------------------------------------------------------------


@router.post("/issues/{issue_id:int}/duplicate")
def duplicate(request: Request, issue_id: int, caller: Caller = Writer) -> Response:
    """A new draft from the saved issue, for the same list; the editor opens on the copy."""
    w = web(request)
    try:
        with w.transaction() as session:
            copy, _ = issues.duplicate_issue(session, issue_id, render_settings(w.settings))
    except RenderError as exc:
        with w.transaction() as session:
            issue, _ = issues.get_issue(session, issue_id)
            text, revision = issue_text(issue), issue.revision
        return _editor(
            request,
            caller,
            issue_id,
            text,
            list_slug="",
            status=400,
            problems=_save_problems(exc),
            revision=revision,
        )
    return redirect(request, f"/issues/{copy.id}", "duplicated")


@router.get("/issues/{issue_id:int}/delete")
def confirm_delete(request: Request, issue_id: int, caller: Caller = Writer) -> HTMLResponse:
    """The confirm step: what would be deleted, or why it cannot be (its sends)."""
    return _delete_page(request, caller, issue_id)


def _delete_page(
    request: Request, caller: Caller, issue_id: int, *, status: int = 200, error: str | None = None
) -> HTMLResponse:
    with web(request).transaction() as session:
        issue, mailing_list = issues.get_issue(session, issue_id)
        sends = _sends_of(session, issue_id)
    return page(
        request,
        caller,
        "issue_delete.html",
        status=status,
        issue=issue,
        mailing_list=mailing_list,
        sends=sends,
        error=error,
    )


@router.post("/issues/{issue_id:int}/delete")
def delete(request: Request, issue_id: int, caller: Caller = Writer) -> Response:
    try:
        with web(request).transaction() as session:
            issues.delete_issue(session, issue_id)
    except issues.IssueKept as exc:  # the page offers the copy itself
        return _delete_page(request, caller, issue_id, status=409, error=f"{exc.summary}.")
    except Conflict as exc:
        return _delete_page(request, caller, issue_id, status=409, error=str(exc))
    return redirect(request, "/issues", "issue-deleted")


@router.post("/issues/check")
def check(
    request: Request, caller: Caller = Writer, list: str = Form(""), source: str = Form(""), issue_id: int = Form(0)
) -> JSONResponse:
    """The draft's problems (with their lines) and its plain text, for the editor's script."""
    w = web(request)
    with w.transaction() as session:
        draft = render_draft(session, list, source, render_settings(w.settings), issue_id)
    return JSONResponse(
        {
            "ok": draft.ok,
            "subject": draft.subject,
            "text": draft.text,
            "problems": [p.as_json() for p in draft.problems],
        }
    )


@router.post("/issues/preview")
def preview_draft(
    request: Request, caller: Caller = Writer, list: str = Form(""), source: str = Form(""), issue_id: int = Form(0)
) -> HTMLResponse:
    """The draft's HTML for a preview frame (the script posts the editor's text here)."""
    w = web(request)
    with w.transaction() as session:
        draft = render_draft(session, list, source, render_settings(w.settings), issue_id)
    if not draft.ok:
        return _preview_problem(request, draft.problems)
    return HTMLResponse(draft.html, headers=PREVIEW_HEADERS)


@router.get("/issues/{issue_id:int}/preview")
def preview_saved(request: Request, issue_id: int, caller: Caller = Writer, part: str = "html") -> Response:
    """The saved issue as a sample recipient gets it: its HTML (for the frames), or ``?part=text``."""
    w = web(request)
    try:
        with w.transaction() as session:
            html, text, _ = issues.preview_issue(session, issue_id, render_settings(w.settings))
    except RenderError as exc:
        return _preview_problem(request, (_problem("error", exc.message, exc.where),))
    if part == "text":
        return Response(text, media_type="text/plain; charset=utf-8", headers=PREVIEW_HEADERS)
    return HTMLResponse(html, headers=PREVIEW_HEADERS)


def _preview_problem(request: Request, problems: tuple[DraftProblem, ...]) -> HTMLResponse:
    from html import escape

    items = "".join(
        f"<li>{'Line ' + str(p.line) + ': ' if p.line else ''}{escape(p.message)}</li>"
        for p in problems
        if p.level == "error"
    )
    body = (
        f"<!doctype html><html lang=en><meta charset=utf-8><title>Cannot preview</title>"
        f'<body style="font:16px/1.5 system-ui,sans-serif;margin:1.5rem;color:#24211c">'
        f"<p><strong>This draft cannot be rendered yet:</strong></p><ul>{items}</ul></body></html>"
    )
    return HTMLResponse(body, status_code=400, headers=PREVIEW_HEADERS)


# --- test send -----------------------------------------------------------------------------


@router.post("/issues/{issue_id:int}/test")
def test_send(request: Request, issue_id: int, caller: Caller = Writer, to: str = Form("")) -> Response:
    """A copy of the saved issue to each address of ``to`` (separated by commas or spaces, at most
    10) now, "[TEST]" in the subject; not logged as a delivery. A bad address sends nothing."""
    from newsletter.delivery.test_copies import compile_test_copies, not_sent, send_test_copies, split_addresses

    w = web(request)
    try:
        with w.transaction() as session:
            message, recipients = compile_test_copies(
                session, issue_id, split_addresses(to), render_settings(w.settings), w.signer
            )
        copies = send_test_copies(message, recipients, w.settings, timeout=15)
    except (InvalidInput, DeliveryError) as exc:
        reason = (
            exc.message
            if isinstance(exc, InvalidInput)
            else f"the mail server refused it or could not be reached: {exc}"
        )
        return _test_failed(request, caller, issue_id, to, reason)
    sent = ", ".join(copy.to for copy in copies if copy.sent)
    if failed := not_sent(copies):
        reason = f"Not sent to {failed}." + (f" Sent to {sent}." if sent else "")
        return _test_failed(request, caller, issue_id, to, reason)
    return redirect(request, f"/issues/{issue_id}", "test-sent", test_to=sent)


def _test_failed(request: Request, caller: Caller, issue_id: int, to: str, reason: str) -> HTMLResponse:
    with web(request).transaction() as session:
        issue, _ = issues.get_issue(session, issue_id)
        text, revision = issue_text(issue), issue.revision
    return _editor(
        request,
        caller,
        issue_id,
        text,
        list_slug="",
        status=400,
        test_to=to,
        test_error=reason,
        revision=revision,
    )


# --- send or schedule ------------------------------------------------------------------------


@router.get("/issues/{issue_id:int}/send")
def confirm_send(
    request: Request,
    issue_id: int,
    caller: Caller = Sender,
    list: str | None = None,
    also: Annotated[list[str] | None, Query()] = None,
    segment: str = "",
    repeat: str = "",
) -> HTMLResponse:
    return _send_page(request, caller, issue_id, _slugs(list, also), segment or None, repeat=repeat)


def _slugs(first: str | None, also: list[str] | None) -> tuple[str, ...]:
    """The form's lists: ``list`` (the send's own list) first, then each ``also`` once."""
    slugs = [first] if first else []
    for slug in also or []:
        if slug and slug not in slugs:
            slugs.append(slug)
    return tuple(slugs)


def _send_page(
    request: Request,
    caller: Caller,
    issue_id: int,
    list_slugs: tuple[str, ...],
    segment: str | None = None,
    *,
    status: int = 200,
    error: str | None = None,
    at: str = "",
    repeat: str = "",
    test: dict[str, str] | None = None,
) -> HTMLResponse:
    """The send form: who it reaches (one list, several at once, or a saved segment of one), and, when a
    list already has a send of the issue, the earlier sends and an explicit choice (only the new ones, or
    everyone again) with both counts. A send that would reach no one says why instead of offering a button."""
    with web(request).transaction() as session:  # not reading(): its rollback would expire what the page shows
        issue, issue_list = issues.get_issue(session, issue_id)
        try:
            target = audience.choose_target(session, issue_list, list_slugs, segment)
        except (InvalidInput, NotFound) as exc:  # a segment with several lists, of another list, or out of date
            error = error or (exc.message if isinstance(exc, InvalidInput) else str(exc))
            target = audience.choose_target(session, issue_list, list_slugs)
        earlier = audience.earlier_sends(session, issue.id, target.list_ids)
        count = audience.target_count(session, target)
        new_count = audience.target_count(session, target, issue.id, SendAudience.NEW) if earlier else count
        # A scheduled send for everyone would mail the new ones again when it starts: no "only new" now.
        scheduled_all = audience.scheduled_for_everyone(earlier)
        if scheduled_all is not None:
            new_count = 0
        empty = None if count else audience.target_refusal(session, target, issue.id, SendAudience.ALL)
        lists = session.scalars(select(MailingList).order_by(MailingList.slug)).all()
        list_segments = [] if target.several else [s.name for s in all_segments(session, target.primary.slug)]
        untracked = [m.slug for m in target.lists if m.tracking == Tracking.OFF]  # no subject test for them
    if repeat not in (Repeat.AGAIN, Repeat.ONLY_NEW) or not earlier:
        repeat = ""
    chosen = new_count if repeat == Repeat.ONLY_NEW else count
    names = [m.name for m in target.lists]
    who = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
    if target.segment_name:
        who = f"{target.primary.name} in the segment {target.segment_name}"
    return page(
        request,
        caller,
        "issue_send.html",
        status=status,
        issue=issue,
        target=target.primary,
        also=[m.slug for m in target.lists[1:]],
        segment=target.segment_name or "",
        segment_filter=target.segment_filter or "",
        segments=list_segments,
        who=who,
        count=count,
        new_count=new_count,
        chosen=chosen,
        scheduled_all=scheduled_all,
        earlier=earlier,
        empty=empty,
        lists=lists,
        error=error,
        at=at,
        repeat=repeat,
        untracked=untracked,
        test=test or {"subject": "", "share": str(DEFAULT_SHARE), "decide_after": DEFAULT_DECIDE_AFTER},
    )


def parse_local_time(value: str, offset_minutes: str) -> datetime:
    """A ``datetime-local`` value and the browser's offset (JavaScript's getTimezoneOffset, minutes
    *behind* UTC) as a UTC time; without an offset the time is taken as UTC. Raises InvalidInput."""
    try:
        naive = datetime.fromisoformat(value.strip())
    except ValueError:
        raise InvalidInput("pick a date and a time", where="at") from None
    if naive.tzinfo is not None:
        return naive.astimezone(UTC)
    try:
        offset = -int(offset_minutes) if offset_minutes.strip() else 0
    except ValueError:
        offset = 0
    if abs(offset) > 24 * 60:
        offset = 0
    return naive.replace(tzinfo=timezone(timedelta(minutes=offset))).astimezone(UTC)


@router.post("/issues/{issue_id:int}/send")
def send(
    request: Request,
    issue_id: int,
    caller: Caller = Sender,
    list: str = Form(""),
    also: Annotated[list[str] | None, Form()] = None,
    segment: str = Form(""),
    at: str = Form(""),
    tz_offset: str = Form(""),
    when: str = Form("now"),
    repeat: str = Form(""),
    test_subject: str = Form(""),
    test_share: str = Form(""),
    test_decide_after: str = Form(""),
) -> Response:
    """Send now (snapshot the recipients, queue the batches), or schedule for ``at``.

    ``also``: more lists the send goes to at once; ``segment``: a saved segment of the (one) list.
    ``repeat`` is the editor's choice for an issue a list already has a send of ("only_new"
    or "again"); without it such a send is refused and the page asks."""
    chosen = Repeat(repeat) if repeat in (Repeat.AGAIN, Repeat.ONLY_NEW) else Repeat.NO
    batches: Batches = []  # none to queue for a scheduled send
    slugs, seg = _slugs(list, also), segment or None
    typed = {"subject": test_subject, "share": test_share, "decide_after": test_decide_after}
    try:
        test = _subject_test(test_subject, test_share, test_decide_after)
        if when == "later":
            send_id = _schedule(web(request), issue_id, slugs, seg, chosen, at, tz_offset, test)
        else:
            send_id, batches = _start(web(request), issue_id, slugs, seg, chosen, test)
    except SendRefused as exc:
        error = f"{exc.summary}: {_refusal_hint(exc)}."
        return _send_page(request, caller, issue_id, slugs, seg, status=409, error=error, at=at, test=typed)
    except (InvalidInput, Conflict) as exc:
        message = exc.message if isinstance(exc, InvalidInput) else str(exc)
        if isinstance(exc, UntrackedLists):
            message = f"{exc.summary}: turn it on on the list's page (Tracking: anonymous), or send without a test"
        return _send_page(
            request,
            caller,
            issue_id,
            slugs,
            None
            if isinstance(exc, InvalidInput) and exc.where not in (*TEST_FIELDS, *subject_variants.CLI_FIELDS)
            else seg,
            status=400 if isinstance(exc, InvalidInput) else 409,
            error=message,
            at=at,
            test=typed,
        )
    try:
        queue_batches(web(request).tasks, send_id, batches)
    except QueueUnavailable:
        return redirect(request, f"/sends/{send_id}", "not-queued")
    return redirect(request, f"/sends/{send_id}", "scheduled" if when == "later" else "started")


def _subject_test(subject: str, share: str, decide_after: str) -> SubjectTestPlan | None:
    """The form's subject test (none when the other subject is left empty). Raises InvalidInput naming the field."""
    if not subject.strip():
        return None
    try:
        percent = int(share) if share.strip() else None
    except ValueError:
        raise InvalidInput(f"the test share is a whole percentage, got {share!r}", where=TEST_FIELDS[1]) from None
    try:
        return subject_variants.plan(subject, percent, decide_after.strip() or None, fields=TEST_FIELDS)
    except InvalidInput as exc:
        exc.message = f"{TEST_LABELS[exc.where]}: {exc.message}" if exc.where in TEST_LABELS else exc.message
        raise


def _start(
    w: Web,
    issue_id: int,
    list_slugs: tuple[str, ...],
    segment: str | None,
    repeat: Repeat,
    test: SubjectTestPlan | None = None,
) -> tuple[int, list[sending.Batch]]:
    """Start the send now (one transaction): its id and the batches to queue after the commit."""
    with w.transaction() as session:
        started, batches = sending.start_send(
            session,
            issue_id,
            render_settings(w.settings),
            list_slugs=list_slugs,
            segment=segment,
            batch_size=w.settings.batch_size,
            repeat=repeat,
            subject_test=test,
        )
        return started.id, batches


def _schedule(
    w: Web,
    issue_id: int,
    list_slugs: tuple[str, ...],
    segment: str | None,
    repeat: Repeat,
    at: str,
    tz_offset: str,
    test: SubjectTestPlan | None = None,
) -> int:
    """Schedule the send for the form's local time ``at`` (one transaction); its id."""
    with w.transaction() as session:
        scheduled = schedule_send(
            session,
            issue_id,
            parse_local_time(at, tz_offset),
            render_settings(w.settings),
            list_slugs=list_slugs,
            segment=segment,
            repeat=repeat,
            subject_test=test,
        )
        return scheduled.id


def _refusal_hint(exc: SendRefused) -> str:
    """What the send page tells the editor after a refused send."""
    if exc.reason == "already_sent":
        return "choose below who gets it this time"
    if not exc.counts or not exc.counts.askable:
        return "nothing was sent"
    return "nothing was sent; ask the unconfirmed to confirm from the list's page"
