"""`/admin`: the lists with their subscriber counts, their growth week by week, and the recent sends with their rates.

The growth chart (new confirmed, unsubscribed and bounced per week over the last 26 weeks, from
``newsletter.engagement.growth``) is drawn as inline SVG by the template; the last 10 sends' rates
come from each send's report (``newsletter.engagement.report``).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from newsletter.access.accounts import Caller
from newsletter.delivery import sending
from newsletter.engagement.growth import WeekGrowth, weekly_growth
from newsletter.engagement.report import SendReport, send_report
from newsletter.http.admin.auth import LoggedIn
from newsletter.http.admin.pages import page
from newsletter.http.context import web
from newsletter.store.models import utcnow
from subscribers.lists import all_lists_with_counts

router = APIRouter()
GROWTH_WEEKS = 26
RECENT_SENDS = 10


def growth_chart(weeks: list[WeekGrowth]) -> dict[str, Any]:
    """The buckets and series the chart macro (templates/admin/_charts.html) draws: one bucket a week."""
    confirmed, unsubscribed, bounced = (
        sum(getattr(w, name) for w in weeks) for name in ("confirmed", "unsubscribed", "bounced")
    )
    first, last = weeks[0].start, weeks[-1].start
    return {
        "title": f"List growth per week, last {len(weeks)} weeks",
        "desc": (
            f"Per week from the week of {first:%d %b %Y} to the week of {last:%d %b %Y}, every list together: "
            f"{confirmed} new confirmed subscriptions, {unsubscribed} unsubscribed, {bounced} lost to bounces; net {confirmed - unsubscribed - bounced:+d}."
        ),
        "x_title": "Week (starting Monday, UTC)",
        "y_title": "Subscriptions",
        "buckets": [
            {"label": f"week of {w.start:%d %b %Y}", "tick": f"{w.start:%d %b}" if i % 4 == 0 else ""}
            for i, w in enumerate(weeks)
        ],
        "series": [
            {"name": "new confirmed", "key": "confirmed", "values": [w.confirmed for w in weeks]},
            {"name": "unsubscribed", "key": "unsubscribed", "values": [w.unsubscribed for w in weeks]},
            {"name": "bounced", "key": "bounced", "values": [w.bounced for w in weeks]},
        ],
    }


@router.get("/")
def dashboard(request: Request, caller: Caller = LoggedIn) -> HTMLResponse:
    caller.require("lists:read")
    with web(request).transaction() as session, web(request).send_health() as health:
        lists = all_lists_with_counts(session)
        weeks = weekly_growth(session, now=utcnow(), weeks=GROWTH_WEEKS)
        sends = sending.all_sends(session, RECENT_SENDS) if caller.may("sends") else []
        problems = {row.send.id: health.problem(session, row.send) for row in sends}  # why a send is stuck
        reports: dict[int, SendReport] = {
            row.send.id: send_report(session, row.send.id) for row in sends if row.send.started_at is not None
        }
    return page(
        request,
        caller,
        "dashboard.html",
        lists=lists,
        sends=sends,
        problems=problems,
        reports=reports,
        weeks=weeks,
        growth=growth_chart(weeks),
    )
