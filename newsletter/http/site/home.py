"""`/`: where an email's masthead link lands: the lists, with their forms and archives."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from newsletter.content import archive
from newsletter.http.context import web

router = APIRouter()


@router.get("/")
def home(request: Request) -> HTMLResponse:
    w = web(request)
    with w.transaction() as session:
        lists = archive.all_lists(session)
    return w.page(request, "home.html", lists=lists)
