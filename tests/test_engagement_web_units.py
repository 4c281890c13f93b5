"""The report chart's buckets and the SVG the chart macro draws, without a server: pure functions and a template."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from newsletter.engagement.growth import WeekGrowth
from newsletter.engagement.report import Figures, HourFigures, SendReport
from newsletter.http.admin.dashboard import growth_chart
from newsletter.http.admin.pages import templates
from newsletter.http.admin.sends import timeline_chart

START = datetime(2026, 12, 1, 9, 40, tzinfo=UTC)


def _report(timeline: list[HourFigures], tracking: str = "anonymous") -> SendReport:
    nothing = Figures(0, 0, 0, 0)
    return SendReport(
        send_id=1,
        list="weekly",
        subject="S",
        status="finished",
        tracking=tracking,
        started_at=START,
        recipients=10,
        delivered=10,
        pending=0,
        failed=0,
        bounced=0,
        complaints=0,
        unsubscribes=0,
        opens=nothing,
        clicks=nothing,
        open_rate=0.0,
        click_through_rate=0.0,
        click_to_open_rate=None,
        links=[],
        timeline=timeline,
        rolled_up=False,
    )


def _hour(offset: int, opens: int, clicks: int) -> HourFigures:
    hour = START.replace(minute=0) + timedelta(hours=offset)
    return HourFigures(hour, opens, opens, clicks, clicks)


def _draw(chart: dict[str, object]) -> str:
    macro = templates("").from_string('{% from "_charts.html" import bar_chart %}{{ bar_chart("c", chart) }}')
    return macro.render(chart=chart)


def test_a_first_two_days_chart_has_a_bar_per_hour_and_series_with_anything():
    chart = timeline_chart(_report([_hour(0, 5, 2), _hour(3, 1, 0), _hour(47, 0, 4)]))
    assert chart is not None
    assert len(chart["buckets"]) == 48
    opens, clicks = (s["values"] for s in chart["series"])
    assert (opens[0], opens[3], clicks[0], clicks[47], sum(opens), sum(clicks)) == (5, 1, 2, 4, 6, 6)
    svg = _draw(chart)
    assert len(re.findall(r'<rect class="chart-bar', svg)) == 4
    assert '<title id="c-title">Opens and clicks per hour, first 2 days</title>' in svg
    assert "the busiest hour was 0-1 h after the start, with 5 opens and 2 clicks" in svg
    assert [int(t) for t in re.findall(r'class="chart-y"[^>]*>(\d+)<', svg)] == [0, 2, 4, 6, 8]  # 4 steps of 2


def test_later_activity_turns_the_chart_to_six_hour_bars_over_seven_days():
    chart = timeline_chart(_report([_hour(1, 3, 0), _hour(5, 1, 1), _hour(48, 2, 0), _hour(167, 0, 7)]))
    assert chart is not None
    assert len(chart["buckets"]) == 28 and chart["title"] == "Opens and clicks per 6 hours, first 7 days"
    opens, clicks = (s["values"] for s in chart["series"])
    assert (opens[0], clicks[0], opens[8], clicks[27]) == (4, 1, 2, 7)
    ticks = [b["tick"] for b in chart["buckets"] if b["tick"]]
    assert ticks == [f"day {d}" for d in range(1, 8)]
    assert len(re.findall(r'<rect class="chart-bar', _draw(chart))) == 4


def test_no_chart_without_tracking_and_an_empty_chart_says_so():
    assert timeline_chart(_report([], tracking="off")) is None
    chart = timeline_chart(_report([]))
    assert chart is not None
    svg = _draw(chart)
    assert '<rect class="chart-bar' not in svg and "0 opens and 0 clicks in all" in svg and "busiest" not in svg


def test_the_growth_chart_has_a_bar_per_week_and_series_with_anything():
    start = datetime(2026, 6, 8, tzinfo=UTC).date()
    weeks = [WeekGrowth(start + timedelta(weeks=i), i % 3, 1 if i == 25 else 0, 0) for i in range(26)]
    chart = growth_chart(weeks)
    svg = _draw(chart)
    assert len(re.findall(r'data-series="confirmed"', svg)) == sum(1 for w in weeks if w.confirmed)
    assert len(re.findall(r'data-series="unsubscribed"', svg)) == 1
    assert "week of 30 Nov 2026: 1 unsubscribed" in svg
    assert "net +" in chart["desc"]
    assert svg.count("<text") >= 5 + 7 + 2 + 3  # y labels, a tick every 4 weeks, axis titles, legend
