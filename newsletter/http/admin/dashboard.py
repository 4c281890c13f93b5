"""`/admin`: the lists with their subscriber counts, their growth week by week, and the recent sends with their rates.

The growth chart (new confirmed, unsubscribed and bounced per week over the last 26 weeks, from
``newsletter.engagement.growth``) is drawn as inline SVG by the template; the last 10 sends' rates
come from each send's report (``newsletter.engagement.report``), the same figures as its page.

A tracked send's report reads all its events while its report window is open (about 3.5 s for
300,000 events on SQLite), so the dashboard keeps each report for a minute and, per request,
computes new ones only until REPORTS_BUDGET seconds are spent; the rows it skipped link to the
send's page instead, and the next load fills them in.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from sqlalchemy.orm import Session

from newsletter.access.accounts import Caller
from newsletter.delivery import sending
from newsletter.engagement.growth import WeekGrowth, weekly_growth
from newsletter.engagement.report import SendReport, send_report
from newsletter.http.admin.auth import LoggedIn
from newsletter.http.admin.pages import page
from newsletter.http.context import web
from newsletter.store.models import Send, utcnow
from subscribers.lists import all_lists_with_counts

router = APIRouter()
GROWTH_WEEKS = 26
RECENT_SENDS = 10
REPORTS_BUDGET = 1.5  # seconds a dashboard load may spend computing reports not kept from an earlier load
REPORT_KEPT = 60.0  # seconds a computed report is shown again without being read anew

# (database, send id, its start): (when computed, report). The start tells a send from another that got the
# same id in a database emptied meanwhile (tests do that).
_kept: dict[tuple[str, int, datetime | None], tuple[float, SendReport]] = {}
_kept_lock = threading.Lock()


def recent_reports(
    session: Session,
    sends: Iterable[Send],
    *,
    budget: float = REPORTS_BUDGET,
    clock: Callable[[], float] = time.monotonic,
) -> dict[int, SendReport]:
    """Each send's report, kept from the last minute or computed now while the budget lasts (a send
    left out has none: the page links to its report instead)."""
    start = clock()
    database = session.get_bind().engine.url.render_as_string(hide_password=True)
    found: dict[int, SendReport] = {}
    for send in sends:
        key = (database, send.id, send.started_at)
        with _kept_lock:
            kept = _kept.get(key)
        if kept is not None and clock() - kept[0] < REPORT_KEPT:
            found[send.id] = kept[1]
        elif clock() - start <= budget:
            found[send.id] = report = send_report(session, send.id)
            now = clock()
            with _kept_lock:
                _kept[key] = (now, report)
                for old in [k for k, (at, _) in _kept.items() if now - at >= REPORT_KEPT]:
                    del _kept[old]
    return found


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
        started = [row.send for row in sends if row.send.started_at is not None]
        reports = recent_reports(session, started)
    return page(
        request,
        caller,
        "dashboard.html",
        lists=lists,
        sends=sends,
        problems=problems,
        reports=reports,
        started={send.id for send in started},
        weeks=weeks,
        growth=growth_chart(weeks),
    )
