"""`/admin`: the lists with their subscriber counts, and the recent sends."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from newsletter.access.accounts import Caller
from newsletter.delivery import sending
from newsletter.http.admin.auth import LoggedIn
from newsletter.http.admin.pages import page
from newsletter.http.context import web
from subscribers.lists import all_lists_with_counts

router = APIRouter()


@router.get("/")
def dashboard(request: Request, caller: Caller = LoggedIn) -> HTMLResponse:
    caller.require("lists:read")
    with web(request).transaction() as session, web(request).send_health() as health:
        lists = all_lists_with_counts(session)
        sends = sending.all_sends(session, 10) if caller.may("sends") else []
        problems = {row.send.id: health.problem(session, row.send) for row in sends}  # why a send is stuck
    return page(request, caller, "dashboard.html", lists=lists, sends=sends, problems=problems)
