"""/api/issues: write, check, preview and test-send issues (editors and admins)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Query, Request, Response

from newsletter.content import issues
from newsletter.content.issue_files import IssueSource, check_header_text, parse_issue_text
from newsletter.content.rendering import Problem, RenderedIssue
from newsletter.delivery import scheduling
from newsletter.errors import Conflict, DeliveryError, InvalidInput
from newsletter.http.api.auth import IssueEditor
from newsletter.http.api.common import errors, field_names, path_id, render_settings
from newsletter.http.api.schemas import (
    SLUG_PATTERN,
    IssueCreate,
    IssueFields,
    IssueOut,
    IssuesOut,
    IssueSummary,
    IssueText,
    IssueTextCreate,
    IssueTextUpdate,
    IssueUpdate,
    TestCopyOut,
    TestSendIn,
    TestSendOut,
)
from newsletter.http.context import web
from newsletter.store.models import Issue, MailingList

router = APIRouter(prefix="/issues", tags=["issues"])

IssueId = Annotated[int, path_id("issue")]
PREVIEW_TYPES = {"html": "text/html; charset=utf-8", "text": "text/plain; charset=utf-8"}


def summary(issue: Issue, mailing_list: MailingList) -> dict[str, object]:
    return {
        "id": issue.id,
        "list": mailing_list.slug,
        "status": issue.status,
        "subject": issue.subject,
        "created_at": issue.created_at,
        "updated_at": issue.updated_at,
    }


def issue_out(issue: Issue, mailing_list: MailingList, problems: list[Problem]) -> IssueOut:
    return IssueOut.model_validate(
        {
            **summary(issue, mailing_list),
            "revision": issue.revision,
            "preheader": issue.preheader,
            "template": issue.template,
            "body_markdown": issue.body_markdown,
            "problems": [{"level": p.level, "message": p.message, "where": p.where} for p in problems],
        }
    )


def _warnings(rendered: RenderedIssue) -> list[Problem]:
    return [Problem("warning", w) for w in rendered.warnings]


def _from_fields(body: IssueFields) -> IssueSource:
    subject, preheader = body.subject.strip(), body.preheader.strip()
    if not subject:
        raise InvalidInput("the subject is empty", where="subject")
    for field, value in (("subject", subject), ("preheader", preheader)):
        problem = check_header_text(field, value)
        if problem:
            raise InvalidInput(problem, where=field)
    return IssueSource(
        subject=subject,
        preheader=preheader,
        template=body.template,
        body_markdown=body.body_markdown,
        source="body_markdown",
    )


def _from_text(body: IssueText) -> IssueSource:
    return parse_issue_text(body.markdown, source="markdown")


def _create(request: Request, list_slug: str, source: IssueSource) -> IssueOut:
    with web(request).transaction() as session:
        issue, rendered = issues.create_issue(session, list_slug, source, render_settings(request))
        _, mailing_list = issues.get_issue(session, issue.id)
        return issue_out(issue, mailing_list, _warnings(rendered))


def _update(request: Request, issue_id: int, source: IssueSource, revision: int | None) -> IssueOut:
    with web(request).transaction() as session:
        issue, rendered = issues.update_issue(session, issue_id, source, render_settings(request), revision=revision)
        _, mailing_list = issues.get_issue(session, issue.id)
        return issue_out(issue, mailing_list, _warnings(rendered))


@router.get("", response_model=IssuesOut, responses=errors(404), summary="Issues, newest first")
def all_issues(
    request: Request,
    caller: IssueEditor,
    list: Annotated[
        str | None, Query(pattern=SLUG_PATTERN, max_length=64, description="Only this list's issues.")
    ] = None,
) -> IssuesOut:
    with web(request).reading() as session:
        rows = issues.all_issues(session, list)
        return IssuesOut(items=[IssueSummary.model_validate(summary(i, m)) for i, m in rows])


@router.post("", status_code=201, response_model=IssueOut, responses=errors(400, 404), summary="Create a draft issue")
def create_issue(request: Request, body: IssueCreate, caller: IssueEditor) -> IssueOut:
    """The issue is rendered before it is stored: a template error, an undefined variable or a
    relative link is refused (400, nothing stored); warnings are returned in ``problems``."""
    return _create(request, body.list, _from_fields(body))


@router.post(
    "/markdown",
    status_code=201,
    response_model=IssueOut,
    responses=errors(400, 404),
    summary="Create a draft issue from an issue file (Markdown with front matter)",
)
def create_issue_from_markdown(request: Request, body: IssueTextCreate, caller: IssueEditor) -> IssueOut:
    """``markdown`` holds what `newsletter issues create` reads from a file; errors name ``markdown:LINE``."""
    return _create(request, body.list, _from_text(body))


@router.get("/{issue_id}", response_model=IssueOut, responses=errors(404), summary="One issue and its problems")
def get_issue(request: Request, issue_id: IssueId, caller: IssueEditor) -> IssueOut:
    settings = render_settings(request)
    with web(request).reading() as session:
        issue, mailing_list = issues.get_issue(session, issue_id)
        problems = issues.check_stored_issue(session, issue_id, settings)
        # A stored issue's checks name "issue ID:LINE"; to the API it is the body_markdown field.
        prefix = f"{issues.source_of(issue).source}:"
        problems = [
            Problem(p.level, p.message, "body_markdown:" + p.where.removeprefix(prefix))
            if p.where and p.where.startswith(prefix)
            else p
            for p in problems
        ]
        return issue_out(issue, mailing_list, problems)


@router.put(
    "/{issue_id}", response_model=IssueOut, responses=errors(400, 404, 409), summary="Replace an issue's content"
)
def update_issue(request: Request, issue_id: IssueId, body: IssueUpdate, caller: IssueEditor) -> IssueOut:
    """Sends already made keep their frozen copy. Refused like a create when it does not render.
    With ``revision``, refused (409, nothing written) when the issue was saved since that revision."""
    return _update(request, issue_id, _from_fields(body), body.revision)


@router.put(
    "/{issue_id}/markdown",
    response_model=IssueOut,
    responses=errors(400, 404, 409),
    summary="Replace an issue's content from an issue file (Markdown with front matter)",
)
def update_issue_from_markdown(
    request: Request, issue_id: IssueId, body: IssueTextUpdate, caller: IssueEditor
) -> IssueOut:
    """``revision`` as for PUT /api/issues/{id}."""
    return _update(request, issue_id, _from_text(body), body.revision)


@router.delete(
    "/{issue_id}",
    status_code=204,
    response_class=Response,
    responses=errors(404, 409),
    summary="Delete an issue that was never sent",
)
def delete_issue(request: Request, issue_id: IssueId, caller: IssueEditor) -> Response:
    """Refused (409, naming the sends) once the issue has a send, even a scheduled or cancelled
    one: a send's log needs its issue. Duplicate it to start again from it."""
    try:
        with web(request).transaction() as session:
            issues.delete_issue(session, issue_id)
    except issues.IssueKept as exc:
        raise Conflict(
            f"{exc.summary}. To start again from it, make a new draft with POST /api/issues/{issue_id}/duplicate"
        ) from None
    return Response(status_code=204)


@router.post(
    "/{issue_id}/duplicate",
    status_code=201,
    response_model=IssueOut,
    responses=errors(400, 404),
    summary="Make a new draft from an issue",
)
def duplicate_issue(request: Request, issue_id: IssueId, caller: IssueEditor) -> IssueOut:
    """A new draft for the same list with the issue's subject, preheader, template and body
    (400 when the issue no longer renders, e.g. its template is gone)."""
    with web(request).transaction() as session:
        issue, rendered = issues.duplicate_issue(session, issue_id, render_settings(request))
        _, mailing_list = issues.get_issue(session, issue.id)
        return issue_out(issue, mailing_list, _warnings(rendered))


@router.get(
    "/{issue_id}/preview",
    response_class=Response,
    responses={
        200: {
            "description": "The HTML or plain-text part, as a sample recipient (Ann Example) would get it.",
            "content": {"text/html": {"schema": {"type": "string"}}, "text/plain": {"schema": {"type": "string"}}},
        },
        **errors(400, 404),
    },
    summary="Preview an issue",
)
def preview_issue(
    request: Request,
    issue_id: IssueId,
    caller: IssueEditor,
    format: Annotated[Literal["html", "text"], Query(description="Which part.")] = "html",
) -> Response:
    with web(request).reading() as session:
        html, text, _ = issues.preview_issue(session, issue_id, render_settings(request))
    return Response(html if format == "html" else text, media_type=PREVIEW_TYPES[format])


@router.post(
    "/{issue_id}/test-send",
    response_model=TestSendOut,
    responses=errors(400, 404, 502),
    summary="Send one test copy now",
)
def test_send(request: Request, issue_id: IssueId, body: TestSendIn, caller: IssueEditor) -> TestSendOut:
    """A copy to each address of ``to``, "[TEST]" in the subject, handed to the SMTP server now over one
    connection; not logged as a delivery. Every address is checked first: one that is not an address is a
    400 naming it, and nothing is sent. ``copies`` says what became of each (a refused address does not stop
    the others); when the server took none of them the answer is 502 with its reply."""
    from newsletter.delivery.test_copies import compile_test_copies, not_sent, send_test_copies

    state = web(request)
    with state.reading() as session, field_names({"": "to"}):
        message, recipients = compile_test_copies(session, issue_id, body.to, render_settings(request), state.signer)
    try:
        copies = send_test_copies(message, recipients, state.settings, timeout=15)
    except DeliveryError as exc:
        raise HTTPException(502, f"the SMTP server did not take the test message: {exc}") from None
    if not any(copy.sent for copy in copies):
        raise HTTPException(502, f"the SMTP server did not take the test message: {not_sent(copies)}")
    return TestSendOut(copies=[TestCopyOut.model_validate(copy, from_attributes=True) for copy in copies])


@router.post(
    "/{issue_id}/ready",
    response_model=IssueOut,
    responses=errors(400, 404, 409),
    summary="Mark an issue ready for its list's next weekly slot",
)
def mark_ready(request: Request, issue_id: IssueId, caller: IssueEditor) -> IssueOut:
    """The scheduler sends a ready issue in its list's next free weekly slot (409 when the list has none)."""
    with web(request).transaction() as session:
        issue = scheduling.mark_ready(session, issue_id, render_settings(request))
        _, mailing_list = issues.get_issue(session, issue.id)
        return issue_out(issue, mailing_list, [])
