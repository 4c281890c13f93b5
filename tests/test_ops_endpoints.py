"""Headers and operational endpoints (issue 16, item 7).

* HSTS on every response (pages, API errors, static files, 404, 401, 500) when the base URL is
  https; none when it is http.
* /metrics is not for the public: 404 while NEWSLETTER_METRICS_TOKEN is unset, 401 without the
  token or with a wrong one, the figures with it. (tests/test_deployment_files.py scrapes a real
  `newsletter web` the way the compose stack's Prometheus does.)
* A send's per-recipient delivery log (API page and CSV, admin UI page, CSV and latest errors) is
  for admins; an editor gets the counts, and a 403 that says what to do instead.
"""

from __future__ import annotations

import html
import re
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from newsletter.config import Settings
from newsletter.errors import ConfigError
from newsletter.http.app import create_app
from newsletter.store import db
from newsletter.store.models import Delivery
from tests.apikit import (
    Api,
    api_with_broker,  # noqa: F401  (fixture)
    assert_error,
)
from tests.test_admin_ui import (
    Admin,
    admin,  # noqa: F401  (fixture)
    make_issue,
    start_send,
)
from tests.textkit import must_match

HSTS = "max-age=31536000"
TOKEN = "metrics-token-0123456789-abcdefghijklmnop"


def app_client(tmp_path: Path, base_url: str, migrated: bool = True, **settings: str) -> TestClient:
    environ = {
        "NEWSLETTER_VAR_DIR": str(tmp_path / "var"),
        "NEWSLETTER_BASE_URL": base_url,
        "NEWSLETTER_SECRET_KEY": "ops-test-secret-key-0123456789abcdefghij",
        "NEWSLETTER_BROKER_URL": "redis://127.0.0.1:9/0",  # nothing here needs a broker
        **settings,
    }
    config = Settings.from_environ(environ)
    if migrated:
        db.upgrade(db.make_engine(config.database_url))
    scheme = "https" if base_url.startswith("https") else "http"
    return TestClient(
        create_app(config), base_url=f"{scheme}://testserver", follow_redirects=False, raise_server_exceptions=False
    )


def responses(client: TestClient) -> dict[str, httpx.Response]:
    return {
        "home": client.get("/"),
        "admin login": client.get("/admin/login"),
        "API 401": client.get("/api/lists"),
        "static": client.get("/static/site.css"),
        "404": client.get("/no-such-page"),
        "metrics 401": client.get("/metrics"),
    }


# --- HSTS -----------------------------------------------------------------------------------------


def test_every_response_carries_hsts_when_the_base_url_is_https(tmp_path):
    client = app_client(tmp_path, "https://news.example.org", NEWSLETTER_METRICS_TOKEN=TOKEN)
    answers = responses(client)
    assert [answers[k].status_code for k in answers] == [200, 200, 401, 200, 404, 401]
    for name, answer in answers.items():
        assert answer.headers.get("strict-transport-security") == HSTS, name
    # A 500 is made outside the middleware (here: a database nobody migrated); it carries HSTS too.
    crash = app_client(tmp_path / "empty", "https://news.example.org", migrated=False).get("/archive/weekly")
    assert crash.status_code == 500 and crash.headers["strict-transport-security"] == HSTS


def test_no_hsts_when_the_base_url_is_http(tmp_path):
    client = app_client(tmp_path, "http://localhost:8000", NEWSLETTER_METRICS_TOKEN=TOKEN)
    for name, answer in responses(client).items():
        assert "strict-transport-security" not in answer.headers, name
        assert answer.headers["x-content-type-options"] == "nosniff", name


# --- /metrics ----------------------------------------------------------------------------------------


def test_metrics_is_not_served_without_a_token_setting(tmp_path):
    client = app_client(tmp_path, "https://news.example.org")
    unknown = client.get("/no-such-page")
    for headers in ({}, {"Authorization": f"Bearer {TOKEN}"}):
        answer = client.get("/metrics", headers=headers)
        assert answer.status_code == 404 and answer.text == unknown.text  # like any page that does not exist
        assert "newsletter_" not in answer.text


def test_metrics_needs_the_bearer_token(tmp_path):
    client = app_client(tmp_path, "https://news.example.org/news", NEWSLETTER_METRICS_TOKEN=TOKEN)
    for headers in (
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": f"Bearer {TOKEN}x"},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": TOKEN},
    ):
        refused = client.get("/news/metrics", headers=headers)
        assert refused.status_code == 401, headers
        assert refused.headers["www-authenticate"] == 'Bearer realm="metrics"'
        assert "Authorization: Bearer <NEWSLETTER_METRICS_TOKEN>" in refused.text and "newsletter_" not in refused.text
    scraped = client.get("/news/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert scraped.status_code == 200 and scraped.headers["content-type"].startswith("text/plain")
    assert "newsletter_sends" in scraped.text and scraped.headers["cache-control"] == "no-store"


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("short-token", "too short (11 characters); use at least 32"),
        ("   ", "only whitespace"),
        ("a" * 31 + " b", "use only letters, digits"),
        ("ä" * 40, "use only letters, digits"),
    ],
)
def test_a_weak_metrics_token_is_refused_at_start(value, says):
    with pytest.raises(ConfigError) as refused:
        Settings.from_environ({"NEWSLETTER_METRICS_TOKEN": value, "NEWSLETTER_SECRET_KEY": "k" * 40})
    assert str(refused.value).startswith("NEWSLETTER_METRICS_TOKEN: ") and says in str(refused.value)
    assert "secrets.token_urlsafe" in str(refused.value)


def test_an_empty_metrics_token_leaves_metrics_off():
    assert (
        Settings.from_environ({"NEWSLETTER_METRICS_TOKEN": "", "NEWSLETTER_SECRET_KEY": "k" * 40}).metrics_token is None
    )
    assert (
        Settings.from_environ(
            {"NEWSLETTER_METRICS_TOKEN": f" {TOKEN} ", "NEWSLETTER_SECRET_KEY": "k" * 40}
        ).metrics_token
        == TOKEN
    )


# --- the delivery log: admins only --------------------------------------------------------------------


def fail_one(sessions, send_id: int, email: str) -> None:
    with db.transaction(sessions) as session:
        session.execute(
            update(Delivery)
            .where(Delivery.send_id == send_id, Delivery.email == email)
            .values(status="failed", smtp_code=550, smtp_reply=f"550 5.1.1 <{email}>: user unknown")
        )


@pytest.mark.redis
def test_the_api_gives_editors_a_sends_counts_but_not_its_delivery_log(api_with_broker: Api):  # noqa: F811
    api = api_with_broker
    api.make_list()
    for i in range(3):
        api.make_subscriber(f"reader{i}@example.com")
    issue = api.make_issue()
    send_id = api.post("/api/sends", json={"issue_id": issue["id"]}, role="editor", expect=201).json()["id"]

    counts = api.get(f"/api/sends/{send_id}", role="editor", expect=200).json()
    assert (counts["total"], counts["pending"]) == (3, 3) and "@" not in str(counts)
    for path in (f"/api/sends/{send_id}/deliveries", f"/api/sends/{send_id}/deliveries.csv"):
        refused = assert_error(api.get(path, role="editor"), 403)
        assert "example.com" not in refused["message"]
        assert refused["message"] == (
            "the editor role may not read a send's delivery log (needs 'sends:log'): it lists every recipient's "
            f"address, so it is for admins. GET /api/sends/{send_id} gives the send's counts; ask an admin for the "
            "log or for an admin token"
        )
    page = api.get(f"/api/sends/{send_id}/deliveries", expect=200).json()
    assert sorted(d["email"] for d in page["items"]) == [f"reader{i}@example.com" for i in range(3)]
    assert api.get(f"/api/sends/{send_id}/deliveries.csv", expect=200).text.count("@example.com") == 3
    # The schema says so too.
    operations = api.client.get("/openapi.json").json()["paths"]
    assert "(admins)" in operations["/api/sends/{send_id}/deliveries"]["get"]["summary"]
    assert "(admins)" in operations["/api/sends/{send_id}/deliveries.csv"]["get"]["summary"]


@pytest.mark.redis
def test_the_admin_ui_gives_editors_counts_and_admins_the_log(admin: Admin):  # noqa: F811
    issue_id = make_issue(admin)
    editor = admin.logged_in("eddie")
    send_id = start_send(editor, issue_id)
    fail_one(admin.sessions, send_id, "reader1@example.com")

    page = editor.get(f"/admin/sends/{send_id}")
    assert page.status_code == 200 and "@example.com" not in page.text
    assert f"/admin/sends/{send_id}/log" not in page.text and 'id="log-admins-only"' in page.text
    progress = editor.get(f"/admin/sends/{send_id}/progress").json()
    assert (progress["failed"], progress["errors"], progress["log_allowed"]) == (1, [], False)
    for path in (
        f"/admin/sends/{send_id}/log",
        f"/admin/sends/{send_id}/log?status=failed",
        f"/admin/sends/{send_id}/log.csv",
    ):
        refused = editor.get(path, headers={"Referer": f"https://testserver/admin/sends/{send_id}"})
        assert refused.status_code == 403, path
        text = html.unescape(refused.text)
        assert "@example.com" not in text
        reason = must_match(re.search(r'<p id="forbidden-reason">(.*?)</p>', text, re.S)).group(1)
        assert reason == (
            "A send's delivery log lists every recipient's address, so only admins may open it or export it "
            "(you are logged in as eddie, an editor). The send's own page shows its counts; ask an admin "
            "if you need the log."
        )
        assert f'href="/admin/sends/{send_id}" id="back-link"' in text

    ann = admin.logged_in()
    page = ann.get(f"/admin/sends/{send_id}")
    assert f'href="/admin/sends/{send_id}/log"' in page.text and 'id="log-admins-only"' not in page.text
    progress = ann.get(f"/admin/sends/{send_id}/progress").json()
    assert [e["email"] for e in progress["errors"]] == ["reader1@example.com"] and progress["log_allowed"] is True
    assert ann.get(f"/admin/sends/{send_id}/log").text.count("@example.com</td>") == 4
    assert len(ann.get(f"/admin/sends/{send_id}/log.csv").text.splitlines()) == 1 + 4
