"""`/admin/segments`: a list's saved segments, and the segment builder with its live count.

The builder is a form (list, name, filter). Without script its "Count" button shows the count
(or the filter's error) on the page; with it, ``static/admin/segments.js`` asks
``/admin/segments/count`` (a GET: it changes nothing) after typing stops and shows the count,
or the error with the part at fault marked. Editors and admins, like sends (a segment is whom a
send goes to).
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from sqlalchemy import select

from newsletter.access.accounts import Caller
from newsletter.errors import Conflict, InvalidInput, NotFound
from newsletter.http.admin.auth import user
from newsletter.http.admin.pages import page, redirect
from newsletter.http.context import web
from newsletter.store.models import MailingList
from subscribers import segments
from subscribers.lists import SLUG_RE, get_list

router = APIRouter()
Sender = Depends(user("sends"))


@router.get("/segments")
def segments_page(request: Request, caller: Caller = Sender, list: str = "", saved: str = "") -> HTMLResponse:
    notice = f"Saved the segment {saved}." if saved else None
    return _page(request, caller, list, notice=notice)


def _page(
    request: Request,
    caller: Caller,
    list_slug: str,
    *,
    status: int = 200,
    form: dict[str, str] | None = None,
    error: InvalidInput | str | None = None,
    count: int | None = None,
    notice: str | None = None,
) -> HTMLResponse:
    with web(request).transaction() as session:  # not reading(): its rollback would expire what the page shows
        lists = session.scalars(select(MailingList).order_by(MailingList.slug)).all()
        chosen = next((m for m in lists if m.slug == list_slug), lists[0] if lists else None)
        rows = []
        if chosen is not None:
            for view in segments.all_segments(session, chosen.slug):
                try:
                    matched: int | str = segments.count_matching(session, chosen, view.filter)
                except segments.SegmentError as exc:  # e.g. the list's tracking was turned down since
                    matched = f"not usable: {exc.message}"
                rows.append({"name": view.name, "filter": view.filter, "count": matched})
        tracking = chosen.tracking if chosen is not None else ""
    problem = error if isinstance(error, segments.SegmentError) else None
    return page(
        request,
        caller,
        "segments.html",
        status=status,
        lists=lists,
        chosen=chosen,
        tracking=tracking,
        rows=rows,
        form=form or {"name": "", "filter": ""},
        error=error.message if isinstance(error, InvalidInput) else error,
        problem=problem,
        count=count,
        notice=notice,
    )


@router.get("/segments/count")
def live_count(request: Request, caller: Caller = Sender, list: str = "", filter: str = "") -> JSONResponse:
    """``{"count": N}``, or ``{"error", "reason", "text", "position"}`` for a filter that does not compile."""
    try:
        with web(request).reading() as session:
            matched = segments.count_matching(session, get_list(session, _slug(list)), filter)
    except segments.SegmentError as exc:
        return JSONResponse(exc.as_json())
    except NotFound as exc:
        return JSONResponse({"error": str(exc)}, status_code=404)
    return JSONResponse({"count": matched})


def _slug(value: str) -> str:
    """A list slug as typed into a URL; anything else (a NUL, say) cannot name a list."""
    return value if SLUG_RE.match(value) else "-"


@router.post("/segments")
def save(
    request: Request,
    caller: Caller = Sender,
    list: str = Form(""),
    name: str = Form(""),
    filter: str = Form(""),
    action: str = Form("save"),
    replace: str = Form(""),
) -> Response:
    """Save the segment (or, with ``action=count``, only show how many the filter matches)."""
    form = {"name": name, "filter": filter}
    try:
        if action == "count":
            with web(request).reading() as session:
                matched = segments.count_matching(session, get_list(session, list), filter)
            return _page(request, caller, list, form=form, count=matched)
        with web(request).transaction() as session:
            segments.create_segment(session, list, name, filter, replace=replace == "yes")
    except (InvalidInput, Conflict) as exc:
        error = exc if isinstance(exc, InvalidInput) else str(exc)
        return _page(
            request, caller, list, status=400 if isinstance(exc, InvalidInput) else 409, form=form, error=error
        )
    return redirect(request, "/segments", list=list, saved=name.strip())


@router.post("/segments/delete")
def delete(request: Request, caller: Caller = Sender, list: str = Form(""), name: str = Form("")) -> Response:
    try:
        with web(request).transaction() as session:
            segments.delete_segment(session, list, name)
    except NotFound as exc:
        return _page(request, caller, list, status=404, error=str(exc))
    return redirect(request, "/segments", list=list)
