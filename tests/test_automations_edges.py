"""Automated emails at the edges: the API, the admin UI's panel on the list page and its log page (over HTTP,
and in Chromium), on SQLite and PostgreSQL. The CLI's commands are run in tests/test_automations_journey.py."""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect
from sqlalchemy import select, update

from newsletter.access import accounts
from newsletter.config import Settings
from newsletter.content.issue_files import read_issue_file
from newsletter.content.issues import create_issue
from newsletter.store import db
from newsletter.store.models import Automation, AutomationMail
from subscribers.lists import create_list
from subscribers.subscriptions import add_subscriber
from tests.apikit import (
    api_with_broker,  # noqa: F401  (fixture)
    assert_error,
)
from tests.bouncekit import RENDER
from tests.sendkit import SAMPLE_ISSUE
from tests.test_admin_journey import DESKTOP, create_user, log_in, watch_console
from tests.test_web_journey import SCREENSHOT_DIR, chromium, free_port, start_web  # noqa: F401
from tests.textkit import must_match

ZERO = {"pending": 0, "sent": 0, "failed": 0, "skipped": 0}


@pytest.mark.redis
def test_the_api_sets_up_the_welcome_steps_and_goodbye_and_admins_read_the_log(api_with_broker):  # noqa: F811
    api = api_with_broker
    api.make_list()
    api.make_list("monthly")
    issue = api.make_issue()["id"]
    foreign = api.make_issue("monthly")["id"]
    shown = api.get("/api/lists/weekly/automations", role="editor", expect=200).json()
    assert shown == {
        "list": "weekly",
        "welcome": {
            "enabled": False,
            "issue": None,
            "subject": None,
            "also_added": False,
            "issue_changed": False,
            "counts": ZERO,
        },
        "steps": [],
        "goodbye": {"enabled": False, "counts": ZERO},
    }
    url = "/api/lists/weekly/automations"
    on = api.put(f"{url}/welcome", json={"enabled": True, "issue": issue}, role="editor", expect=200).json()
    assert on["welcome"] == {
        "enabled": True,
        "issue": issue,
        "subject": "This Week: the API",
        "also_added": False,
        "issue_changed": False,
        "counts": ZERO,
    }
    # Only what is given changes; a null issue is the shipped text.
    added = api.put(f"{url}/welcome", json={"also_added": True, "issue": None}, role="editor", expect=200).json()
    assert added["welcome"]["enabled"] and added["welcome"]["also_added"] and added["welcome"]["issue"] is None
    assert_error(api.put(f"{url}/welcome", json={"issue": foreign}), 400, field="issue", says="an issue of monthly")
    assert_error(api.put(f"{url}/welcome", json={"issue": 999}), 400, field="issue", says="no issue 999")
    assert_error(api.put(f"{url}/welcome", json={"enabled": "yes"}), 422, field="enabled")
    assert_error(api.put("/api/lists/nope/automations/welcome", json={"enabled": True}), 404)
    assert api.get(url, expect=200).json()["welcome"]["issue"] is None  # the refused changes changed nothing

    step = api.post(f"{url}/steps", json={"issue": issue, "day": 3}, role="editor", expect=201).json()["steps"]
    assert [(s["day"], s["issue"], s["subject"], s["counts"]) for s in step] == [(3, issue, "This Week: the API", ZERO)]
    assert_error(api.post(f"{url}/steps", json={"issue": issue, "day": -1}), 422, field="day")
    assert_error(api.post(f"{url}/steps", json={"issue": foreign, "day": 1}), 400, field="issue")
    assert api.put(f"{url}/goodbye", json={"enabled": True}, expect=200).json()["goodbye"]["enabled"] is True
    # The step sends its issue as it was when it was added; an edit reaches nobody until a refresh.
    edited = '---\nsubject: "This Week: the API, edited"\n---\nHello *|NAME:there|*, edited.\n'
    api.put(f"/api/issues/{issue}/markdown", json={"markdown": edited}, expect=200)
    assert [s["issue_changed"] for s in api.get(url, expect=200).json()["steps"]] == [True]
    refreshed = api.post(f"{url}/refresh", role="editor", expect=200).json()
    assert [(s["subject"], s["issue_changed"]) for s in refreshed["steps"]] == [("This Week: the API, edited", False)]

    api.make_subscriber("ann@example.com")  # added as confirmed: welcomed, since also_added is on
    assert api.get(url, expect=200).json()["welcome"]["counts"]["pending"] == 1
    refused = api.get(f"{url}/log", role="editor")
    assert_error(refused, 403, says="the log is for admins")
    page = api.get(f"{url}/log", expect=200).json()
    assert page["total"] == 1 and page["items"][0]["email"] == "ann@example.com"
    assert page["items"][0]["what"] == "welcome" and page["items"][0]["status"] == "pending"
    assert api.get(f"{url}/log?kind=step", expect=200).json()["total"] == 0
    step_id = step[0]["id"]
    api.delete(f"{url}/steps/{step_id}", role="editor", expect=204)
    assert_error(api.delete(f"{url}/steps/{step_id}"), 404)
    assert api.get(url, expect=200).json()["steps"] == []
    assert_error(api.get(f"{url}/log?step={step_id + 100}"), 404)


# --- the admin UI over HTTP -------------------------------------------------------------------

PASSWORD = "correct horse battery"
CSRF_INPUT = re.compile(r'<input type="hidden" name="csrf_token" value="([^"]+)">')


@pytest.fixture
def admin_app(tmp_path: Path, database_url: str, redis_url: str) -> Iterator[Any]:
    environ = {
        "NEWSLETTER_VAR_DIR": str(tmp_path / "var"),
        "NEWSLETTER_DATABASE_URL": database_url,
        "NEWSLETTER_BROKER_URL": redis_url,
        "NEWSLETTER_BASE_URL": "https://news.example.org",
        "NEWSLETTER_SECRET_KEY": "test-secret-key-0123456789abcdef",
    }
    engine = db.make_engine(database_url)
    sessions = db.session_factory(engine)
    with db.transaction(sessions) as s:
        accounts.create_user(s, "eddie", PASSWORD, "editor")
        accounts.create_user(s, "ada", PASSWORD, "admin")
        create_list(s, "weekly", name="The Weekly", from_email="news@example.org")
        create_issue(s, "weekly", read_issue_file(SAMPLE_ISSUE), RENDER)
    from fastapi.testclient import TestClient

    from newsletter.http.app import create_app

    app = create_app(Settings.from_environ(environ), sessions=sessions)
    clients = {}
    for name in ("eddie", "ada"):
        client = TestClient(app, base_url="https://testserver", follow_redirects=False)
        form = client.get("/admin/login")
        csrf = html.unescape(must_match(CSRF_INPUT.search(form.text)).group(1))
        login = client.post("/admin/login", data={"username": name, "password": PASSWORD, "csrf_token": csrf})
        assert login.status_code == 303
        clients[name] = client
    yield clients, sessions
    for client in clients.values():
        client.close()
    engine.dispose()


def _csrf(page: str) -> str:
    return html.unescape(must_match(CSRF_INPUT.search(page)).group(1))


@pytest.mark.redis
def test_the_list_page_sets_up_the_welcome_steps_and_goodbye_and_shows_each_steps_count(admin_app):
    clients, sessions = admin_app
    eddie = clients["eddie"]
    shown = eddie.get("/admin/lists/weekly")
    assert shown.status_code == 200
    panel = must_match(re.search(r'<section aria-labelledby="automations-h".*?</section>', shown.text, re.S)).group(0)
    assert 'id="f-welcome"' in panel and 'id="f-add-step"' in panel and 'id="f-goodbye"' in panel
    assert 'id="no-steps"' in panel
    csrf = _csrf(shown.text)
    base = "/admin/lists/weekly/automations"

    assert eddie.post(f"{base}/welcome", data={"enabled": "1", "csrf_token": "forged"}).status_code == 403
    saved = eddie.post(f"{base}/welcome", data={"enabled": "1", "issue": "", "who": "added", "csrf_token": csrf})
    assert saved.status_code == 303 and saved.headers["location"] == "/admin/lists/weekly?done=automations-saved"
    refused = eddie.post(f"{base}/steps", data={"issue": "1", "day": "soon", "csrf_token": csrf})
    assert refused.status_code == 400
    assert "the day must be a whole number, not &#39;soon&#39;" in refused.text
    assert re.search(r'id="step-day"[^>]*aria-invalid="true"', refused.text)
    assert eddie.post(f"{base}/steps", data={"issue": "1", "day": "2", "csrf_token": csrf}).status_code == 303
    assert eddie.post(f"{base}/goodbye", data={"enabled": "1", "csrf_token": csrf}).status_code == 303
    with sessions() as s:
        kinds = sorted((str(a.kind), a.enabled, a.also_added, a.offset_days) for a in s.scalars(select(Automation)))
    assert kinds == [("goodbye", True, False, None), ("step", True, False, 2), ("welcome", True, True, None)]

    with db.transaction(sessions) as s:  # two readers later, one of them already got the step
        add_subscriber(s, "weekly", "ann@example.com", confirmed=True)
        add_subscriber(s, "weekly", "bob@example.com", confirmed=True)
        s.execute(update(AutomationMail).where(AutomationMail.email == "ann@example.com").values(status="sent"))
    page = eddie.get("/admin/lists/weekly?done=automations-saved").text
    assert "Saved. It applies to the automated emails not sent yet." in page
    assert re.search(r'id="welcome-enabled"[^>]*checked', page) and re.search(
        r'id="welcome-who-added"[^>]*checked', page
    )
    row = must_match(re.search(r'<tr id="step-(\d+)">.*?</tr>', page, re.S))
    assert ">2</td>" in row.group(0) and "Qualified Support in Moscow" in row.group(0)
    assert 'id="welcome-counts">1 sent, 1 pending, 0 failed, 0 skipped.' in page

    # The log: editors see the counts, admins each recipient.
    log = eddie.get(base)
    assert log.status_code == 200 and 'id="log-admins-only"' in log.text and "ann@example.com" not in log.text
    full = clients["ada"].get(f"{base}?kind=welcome")
    table = must_match(re.search(r'<table class="log" id="automation-log">.*?</table>', full.text, re.S)).group(0)
    assert "ann@example.com" in table and "bob@example.com" in table and "welcome" in table
    assert clients["ada"].get(f"{base}?step=999").status_code == 404

    removed = eddie.post(f"{base}/steps/{row.group(1)}/remove", data={"csrf_token": csrf})
    assert removed.status_code == 303
    assert 'id="no-steps"' in eddie.get("/admin/lists/weekly").text


# --- the panel in Chromium --------------------------------------------------------------------


@pytest.fixture
def web(newsroom):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    newsroom.cli.env["NEWSLETTER_BASE_URL"] = base
    newsroom.cli("lists", "create", "weekly", "--name", "Info War Weekly", "--from-email", "news@example.org")
    newsroom.create_issue()
    create_user(newsroom, "edna", "editor")
    process = start_web(newsroom.cli.env, newsroom.tmp, port)
    yield base
    process.stop()


@pytest.mark.browser
@pytest.mark.redis
@pytest.mark.slow
def test_an_editor_switches_the_welcome_on_and_adds_and_removes_a_step_in_the_browser(
    chromium,  # noqa: F811
    newsroom,
    web,
):
    page = chromium.new_context(viewport=DESKTOP).new_page()
    problems = watch_console(page)
    log_in(page, web, "edna")
    page.goto(f"{web}/admin/lists/weekly")
    panel = page.locator("#automations")
    panel.get_by_label("Send a welcome to each person who confirms").check()
    panel.locator("#welcome-issue").select_option(
        label="Issue 1: This Week in Info War: Qualified Support in Moscow for Korean Summit"
    )
    panel.get_by_role("button", name="Save the welcome").click()
    expect(page.locator("#automations")).to_be_visible()
    expect(page.get_by_text("Saved. It applies to the automated emails not sent yet.")).to_be_visible()
    expect(page.locator("#welcome-enabled")).to_be_checked()

    page.locator("#step-issue").select_option("1")
    page.get_by_label("Days after confirming").fill("3")
    page.get_by_role("button", name="Add the step").click()
    expect(page.get_by_text("Step added.")).to_be_visible()
    step = page.locator("#steps tbody tr")
    expect(step).to_have_count(1)
    expect(step.locator("td").first).to_have_text("3")
    expect(step.locator(".step-sent")).to_have_text("0")
    if SCREENSHOT_DIR:
        page.locator("#automations").screenshot(path=str(Path(SCREENSHOT_DIR) / "automations-panel.png"))

    page.once("dialog", lambda dialog: dialog.accept())
    step.get_by_role("button", name="Remove").click()
    expect(page.get_by_text("Step removed.")).to_be_visible()
    expect(page.locator("#no-steps")).to_be_visible()
    shown = newsroom.cli("automations", "show", "weekly").stdout
    assert "Welcome:  on, issue 1" in shown and "no steps" in shown
    assert problems == []
    page.context.close()
