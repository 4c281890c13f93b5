"""The admin UI over HTTP: logging in and out, CSRF on every form, roles, and every page and action.

The app is built from real Settings on a real database (SQLite and PostgreSQL), with the
machine's Redis as the broker (sends are queued there; no worker runs here, see
test_admin_journey.py for that) and a capture SMTP server for test sends.
"""

from __future__ import annotations

import html
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from pathlib import Path
from urllib.parse import quote

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from newsletter.access import accounts
from newsletter.config import Settings
from newsletter.content.issue_files import parse_issue_text
from newsletter.content.issues import RenderSettings, create_issue
from newsletter.devtools.smtp_capture import CaptureServer
from newsletter.store import db
from newsletter.store.models import (
    AdminSession,
    ImportJob,
    Issue,
    MailingList,
    Send,
    Subscriber,
    Subscription,
    Suppression,
)
from subscribers.lists import create_list
from subscribers.subscriptions import add_subscriber
from subscribers.suppressions import suppress
from tests.conftest import ROOT
from tests.textkit import must_match

BASE = "https://news.example.org"
PASSWORD = "correct horse battery"
SAMPLE_ISSUE = (ROOT / "examples" / "issues" / "this-week-in-info-war.md").read_text(encoding="utf-8")
CSRF_INPUT = re.compile(r'<input type="hidden" name="csrf_token" value="([^"]+)">')


@dataclass
class Admin:
    settings: Settings
    sessions: sessionmaker[Session]
    capture: CaptureServer
    environ: dict[str, str]

    def client(self, **settings_overrides: str):
        from fastapi.testclient import TestClient

        from newsletter.http.app import create_app

        settings = (
            Settings.from_environ({**self.environ, **settings_overrides}) if settings_overrides else self.settings
        )
        base = "https://testserver" if settings.base_url.startswith("https") else "http://testserver"
        return TestClient(
            create_app(settings, sessions=self.sessions),
            base_url=base,
            follow_redirects=False,
            raise_server_exceptions=False,
        )

    def logged_in(self, username: str = "ann"):
        client = self.client()
        login(client, username)
        return client

    def snapshot(self) -> list[tuple]:
        """Everything the admin UI can change, to prove a refused request changed nothing."""
        with self.sessions() as s:
            rows: list[tuple] = []
            for model in (MailingList, Subscriber, Subscription, Suppression, Issue, Send, ImportJob):
                table = model.__table__
                rows += [(table.name, *r) for r in s.execute(select(table).order_by(table.c.id)).all()]
            rows += [("sessions", r) for r in s.scalars(select(AdminSession.token_hash).order_by(AdminSession.id))]
        return rows

    def one(self, query):
        with self.sessions() as s:
            return s.scalar(query)


@pytest.fixture
def admin(tmp_path: Path, database_url: str, redis_url: str) -> Iterator[Admin]:
    capture = CaptureServer(port=0)
    capture.start()
    environ = {
        "NEWSLETTER_VAR_DIR": str(tmp_path / "var"),
        "NEWSLETTER_DATABASE_URL": database_url,
        "NEWSLETTER_BROKER_URL": redis_url,
        "NEWSLETTER_SMTP_URL": f"smtp://127.0.0.1:{capture.port}",
        "NEWSLETTER_BASE_URL": BASE,
        "NEWSLETTER_SECRET_KEY": "test-secret-key-0123456789abcdef",
        "NEWSLETTER_POSTAL_ADDRESS": "1 Example Street, Example City",
    }
    engine = db.make_engine(database_url)
    sessions = db.session_factory(engine)
    with db.transaction(sessions) as s:
        accounts.create_user(s, "ann", PASSWORD, "admin")
        accounts.create_user(s, "eddie", PASSWORD, "editor")
        create_list(s, "weekly", name="The Weekly", from_email="news@example.org", from_name="Weekly Desk")
        create_list(s, "daily", name="The Daily", from_email="news@example.org")
        for i in range(4):
            add_subscriber(s, "weekly", f"reader{i}@example.com", name=f"Reader {i}", confirmed=True)
        add_subscriber(s, "weekly", "pending@example.com", confirmed=False)
        add_subscriber(s, "weekly", "bounced@example.com", confirmed=True)
        suppress(s, "bounced@example.com", reason="hard_bounce")
    yield Admin(Settings.from_environ(environ), sessions, capture, environ)
    capture.stop()
    engine.dispose()


def csrf_of(page_html: str) -> str:
    match = CSRF_INPUT.search(page_html)
    assert match, "no CSRF field on the page"
    return html.unescape(match.group(1))


def login(client, username: str = "ann", password: str = PASSWORD):
    form = client.get("/admin/login")
    assert form.status_code == 200
    answer = client.post(
        "/admin/login", data={"username": username, "password": password, "csrf_token": csrf_of(form.text)}
    )
    assert answer.status_code == 303, answer.text
    return answer


def token(client) -> str:
    return csrf_of(client.get("/admin").text)


def make_issue(admin: Admin, slug: str = "weekly") -> int:
    render = RenderSettings.create(base_url=BASE, postal_address="1 Example Street", user_template_dir=None)
    with db.transaction(admin.sessions) as s:
        issue, _ = create_issue(s, slug, parse_issue_text(SAMPLE_ISSUE), render)
        return issue.id


def start_send(client, issue_id: int, slug: str = "weekly") -> int:
    answer = client.post(
        f"/admin/issues/{issue_id}/send", data={"csrf_token": token(client), "list": slug, "when": "now"}
    )
    assert answer.status_code == 303, answer.text
    match = re.match(r"/admin/sends/(\d+)\?done=started$", answer.headers["location"])
    assert match, answer.headers["location"]
    return int(match.group(1))


def wait_for(predicate, what: str, timeout: float = 30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"{what} did not happen within {timeout} s")


# --- logging in and out ------------------------------------------------------------------------


def test_logged_out_requests_go_to_the_login_page(admin):
    client = admin.client()
    for path in ("/admin", "/admin/"):
        answer = client.get(path)
        assert (answer.status_code, answer.headers["location"]) == (303, "/admin/login"), path
    for path in ("/admin/issues", "/admin/sends/1", "/admin/subscribers", "/admin/sends/1/progress"):
        answer = client.get(path)
        assert (answer.status_code, answer.headers["location"]) == (303, "/admin/login?next=" + quote(path, safe="")), (
            path
        )
    posted = client.post("/admin/suppressions", data={"email": "x@example.com", "csrf_token": "anything"})
    assert posted.status_code == 303 and posted.headers["location"] == "/admin/login"
    assert admin.one(select(Suppression.id).where(Suppression.email == "x@example.com")) is None


def test_login_sets_a_strict_session_cookie_and_logout_ends_the_session(admin):
    client = admin.client()
    form = client.get("/admin/login")
    assert 'name="username"' in form.text and 'autocomplete="current-password"' in form.text
    login_cookie = form.headers["set-cookie"]
    for flag in ("HttpOnly", "Path=/admin", "SameSite=strict", "Secure"):
        assert flag in login_cookie

    answer = client.post(
        "/admin/login", data={"username": "ann", "password": PASSWORD, "csrf_token": csrf_of(form.text)}
    )
    assert (answer.status_code, answer.headers["location"]) == (303, "/admin")
    cookie = next(c for c in answer.headers.get_list("set-cookie") if c.startswith("newsletter_admin="))
    for flag in ("HttpOnly", "Path=/admin", "SameSite=strict", "Secure", "Max-Age=604800"):
        assert flag in cookie
    session_id = client.cookies.get("newsletter_admin")
    dashboard = client.get("/admin")
    assert dashboard.status_code == 200 and "ann" in dashboard.text and "The Weekly" in dashboard.text
    assert admin.one(select(AdminSession.token_hash)) != session_id  # only its hash is stored

    assert client.post("/admin/logout").status_code == 403  # no CSRF token: still logged in
    assert client.get("/admin").status_code == 200
    out = client.post("/admin/logout", data={"csrf_token": token(client)})
    assert (out.status_code, out.headers["location"]) == (303, "/admin/login?done=logged-out")
    assert 'newsletter_admin=""' in out.headers["set-cookie"] or "Max-Age=0" in out.headers["set-cookie"]
    assert admin.one(select(AdminSession.id)) is None
    replay = admin.client()
    replay.cookies.set("newsletter_admin", session_id, path="/admin")  # the old cookie, sent again
    assert replay.get("/admin").status_code == 303
    assert "You are logged out." in client.get("/admin/login?done=logged-out").text


def test_wrong_password_unknown_user_and_forged_login_form_are_refused(admin):
    client = admin.client()
    form = client.get("/admin/login")
    for username, password in (("ann", "wrong password!"), ("nobody", PASSWORD), ("", "")):
        answer = client.post(
            "/admin/login", data={"username": username, "password": password, "csrf_token": csrf_of(form.text)}
        )
        assert answer.status_code == 401 and "Wrong username or password." in answer.text
        assert "newsletter_admin=" not in answer.headers.get("set-cookie", "").replace("newsletter_admin_login=", "")
        form = answer  # the page sets a fresh login token each time
    assert client.get("/admin").status_code == 303
    # A login posted from elsewhere has no matching token cookie.
    fresh = admin.client()
    forged = fresh.post("/admin/login", data={"username": "ann", "password": PASSWORD, "csrf_token": "guess"})
    assert forged.status_code == 403 and "newsletter_admin=" not in forged.headers.get("set-cookie", "")
    assert admin.one(select(AdminSession.id)) is None


def test_repeated_failed_logins_lock_the_username_out_for_a_while(admin):
    client = admin.client()
    form = client.get("/admin/login")
    for _ in range(10):
        form = client.post(
            "/admin/login", data={"username": "ann", "password": "guess guess guess", "csrf_token": csrf_of(form.text)}
        )
        assert form.status_code == 401
    # Now even the right password is refused until the window ends, with Retry-After.
    locked = client.post(
        "/admin/login", data={"username": "ann", "password": PASSWORD, "csrf_token": csrf_of(form.text)}
    )
    assert locked.status_code == 429 and 0 < int(locked.headers["retry-after"]) <= 900
    assert admin.one(select(AdminSession.id)) is None
    login(admin.client(), "eddie")  # another user is not locked out


def test_after_login_only_admin_paths_are_followed(admin):
    for wanted, landed in (
        ("/admin/sends", "/admin/sends"),
        ("//evil.example.org/admin", "/admin"),
        ("https://evil.example.org/", "/admin"),
        ("/admin/..//evil", "/admin"),
    ):
        client = admin.client()
        form = client.get(f"/admin/login?next={wanted}")
        answer = client.post(
            "/admin/login",
            data={"username": "ann", "password": PASSWORD, "next": wanted, "csrf_token": csrf_of(form.text)},
        )
        assert answer.headers["location"] == landed, wanted


def test_login_returns_to_the_page_asked_for(admin):
    client = admin.client()
    asked = client.get("/admin/subscribers?q=ann&page=2")
    assert asked.status_code == 303
    assert asked.headers["location"] == "/admin/login?next=%2Fadmin%2Fsubscribers%3Fq%3Dann%26page%3D2"
    form = client.get(asked.headers["location"])
    assert 'value="/admin/subscribers?q=ann&amp;page=2"' in form.text
    answer = client.post(
        "/admin/login",
        data={
            "username": "ann",
            "password": PASSWORD,
            "csrf_token": csrf_of(form.text),
            "next": "/admin/subscribers?q=ann&page=2",
        },
    )
    assert answer.headers["location"] == "/admin/subscribers?q=ann&page=2"
    # The dashboard itself, and anything that is not a GET, go to the plain login page.
    assert admin.client().get("/admin").headers["location"] == "/admin/login"
    assert admin.client().post("/admin/logout").headers["location"] == "/admin/login"


def test_cookies_are_not_marked_secure_for_a_plain_http_base_url(admin):
    client = admin.client(NEWSLETTER_BASE_URL="http://localhost:8000")
    assert "Secure" not in client.get("/admin/login").headers["set-cookie"]


def test_the_admin_ui_lives_under_the_base_urls_path(admin):
    client = admin.client(NEWSLETTER_BASE_URL="https://example.org/news")
    form = client.get("/news/admin/login")
    assert "Path=/news/admin" in form.headers["set-cookie"] and 'action="/news/admin/login"' in form.text
    answer = client.post(
        "/news/admin/login", data={"username": "ann", "password": PASSWORD, "csrf_token": csrf_of(form.text)}
    )
    assert answer.headers["location"] == "/news/admin"
    page = client.get("/news/admin/issues")
    assert page.status_code == 200 and 'href="/news/static/admin/admin.css' in page.text
    assert client.get("/news/static/admin/admin.js").status_code == 200
    assert client.get("/admin/issues").status_code == 404


# --- every page, every form ------------------------------------------------------------------------


def test_every_page_renders_with_the_admin_csp_and_every_form_carries_the_csrf_token(admin):
    issue_id = make_issue(admin)
    client = admin.logged_in()
    send_id = start_send(client, issue_id)
    subscriber_id = admin.one(select(Subscriber.id).where(Subscriber.email == "reader0@example.com"))
    pages = [
        "/admin",
        "/admin/",
        "/admin/issues",
        "/admin/issues?list=weekly",
        "/admin/issues/new",
        "/admin/issues/new?list=daily",
        f"/admin/issues/{issue_id}",
        f"/admin/issues/{issue_id}/send",
        f"/admin/issues/{issue_id}/send?list=daily",
        "/admin/sends",
        f"/admin/sends/{send_id}",
        f"/admin/sends/{send_id}/log",
        f"/admin/sends/{send_id}/log?status=pending&page=2",
        "/admin/lists",
        "/admin/lists/weekly",
        "/admin/subscribers",
        "/admin/subscribers?q=reader&list=weekly&status=confirmed",
        f"/admin/subscribers/{subscriber_id}",
        "/admin/imports",
        "/admin/suppressions",
        "/admin/suppressions?q=bounced",
    ]
    for path in pages:
        answer = client.get(path)
        assert answer.status_code == 200, (path, answer.text[:500])
        csp = answer.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp, path
        assert answer.headers["x-frame-options"] == "DENY" and answer.headers["cache-control"] == "no-store"
        forms = re.findall(r"<form\b[^>]*>.*?</form>", answer.text, re.S)
        for form in forms:
            if 'method="post"' in form:
                assert f'name="csrf_token" value="{csrf_of(answer.text)}"' in form, (path, form[:200])
        scripts = re.sub(
            r'<script src="/static/admin/(admin|editor|media|segments)\.js\?v=[^"]*" defer></script>', "", answer.text
        )
        assert "<script" not in scripts, path  # no inline script
    assert client.get("/admin/issues/999").status_code == 404
    assert client.get("/admin/sends/999").status_code == 404
    assert client.get("/admin/lists/nope").status_code == 404
    assert client.get("/admin/subscribers/99999").status_code == 404


def test_a_missing_or_wrong_csrf_token_is_403_and_changes_nothing(admin):
    issue_id = make_issue(admin)
    client = admin.logged_in()
    send_id = start_send(client, issue_id)
    subscriber_id = admin.one(select(Subscriber.id).where(Subscriber.email == "reader0@example.com"))
    posts = [
        ("/admin/issues/new", {"list": "weekly", "source": SAMPLE_ISSUE}),
        (f"/admin/issues/{issue_id}", {"source": "---\nsubject: Changed\n---\nBody\n"}),
        (f"/admin/issues/{issue_id}/test", {"to": "me@example.org"}),
        (f"/admin/issues/{issue_id}/send", {"list": "weekly", "when": "now"}),
        ("/admin/issues/check", {"list": "weekly", "source": SAMPLE_ISSUE}),
        ("/admin/issues/preview", {"list": "weekly", "source": SAMPLE_ISSUE}),
        (f"/admin/sends/{send_id}/pause", {}),
        (f"/admin/sends/{send_id}/cancel", {}),
        ("/admin/lists", {"slug": "new", "name": "New", "from_email": "a@example.org"}),
        ("/admin/suppressions", {"email": "spam@example.com", "reason": "admin"}),
        ("/admin/suppressions/remove", {"email": "bounced@example.com"}),
        (f"/admin/subscribers/{subscriber_id}", {"email": "changed@example.com", "name": "X"}),
        (f"/admin/subscribers/{subscriber_id}/subscription", {"list": "weekly", "status": "unsubscribed"}),
        (f"/admin/subscribers/{subscriber_id}/delete", {"erase": "yes"}),
        ("/admin/logout", {}),
    ]
    before = admin.snapshot()
    for path, data in posts:
        for csrf in (None, "wrong-token", ""):
            sent = dict(data, **({"csrf_token": csrf} if csrf is not None else {}))
            answer = client.post(path, data=sent)
            assert answer.status_code == 403, (path, csrf, answer.status_code)
            assert "did not come from this site" in answer.text
        # The header the script uses is checked the same way.
        assert client.post(path, data=data, headers={"X-CSRF-Token": "wrong-token"}).status_code == 403
    upload = client.post(
        "/admin/imports",
        data={"list": "weekly", "csrf_token": "wrong"},
        files={"file": ("people.csv", b"email\nnew@example.com\n", "text/csv")},
    )
    assert upload.status_code == 403
    assert admin.snapshot() == before
    assert admin.capture.messages == []
    # Another user's token does not work either.
    other = admin.logged_in("eddie")
    assert client.post(f"/admin/sends/{send_id}/pause", data={"csrf_token": token(other)}).status_code == 403
    assert admin.one(select(Send.status).where(Send.id == send_id)) == "sending"


def test_editors_see_no_admin_navigation_and_get_403_on_admin_pages(admin):
    make_issue(admin)
    client = admin.logged_in("eddie")
    dashboard = client.get("/admin")
    assert dashboard.status_code == 200
    for hidden in ("/admin/subscribers", "/admin/imports", "/admin/suppressions"):
        assert f'href="{hidden}"' not in dashboard.text
    for shown in ("/admin/issues", "/admin/sends", "/admin/lists"):
        assert f'href="{shown}"' in dashboard.text
    assert "New list" not in client.get("/admin/lists").text
    subscriber_id = admin.one(select(Subscriber.id).where(Subscriber.email == "reader0@example.com"))
    for path in (
        "/admin/subscribers",
        f"/admin/subscribers/{subscriber_id}",
        "/admin/imports",
        "/admin/suppressions",
        "/admin/imports/1",
        "/admin/imports/1/report.csv",
    ):
        answer = client.get(path)
        assert answer.status_code == 403, path
        assert "Not allowed" in answer.text and "editor role may not do this" in answer.text
    before = admin.snapshot()
    csrf = token(client)
    for path, data in (
        ("/admin/suppressions", {"email": "x@example.com"}),
        ("/admin/lists", {"slug": "x", "name": "X", "from_email": "a@example.org"}),
        (f"/admin/subscribers/{subscriber_id}/delete", {"erase": "yes"}),
    ):
        assert client.post(path, data=dict(data, csrf_token=csrf)).status_code == 403, path
    assert (
        client.post(
            "/admin/imports",
            data={"list": "weekly", "csrf_token": csrf},
            files={"file": ("p.csv", b"email\nx@example.com\n", "text/csv")},
        ).status_code
        == 403
    )
    assert admin.snapshot() == before
    assert client.get("/admin/issues").status_code == 200 and client.get("/admin/issues/new").status_code == 200


def test_a_refused_page_is_the_admins_own_403_page_with_the_role_needed_and_a_way_back(admin):
    client = admin.logged_in("eddie")
    refused = client.get("/admin/suppressions", headers={"Referer": "https://testserver/admin/issues?list=weekly"})
    assert refused.status_code == 403
    assert refused.headers["content-security-policy"].startswith(
        "default-src 'none'; script-src 'self'"
    )  # the admin CSP
    assert refused.headers["referrer-policy"] == "same-origin"
    page = html.unescape(refused.text)
    assert (
        '<link rel="stylesheet" href="/static/admin/admin.css' in page and 'href="/admin/issues"' in page
    )  # admin look, nav
    assert "<h1>Not allowed</h1>" in page
    assert (
        "The editor role may not do this: it needs the admin role." in page
        and "logged in as <strong>eddie</strong>" in page
    )
    assert (
        '<a href="/admin/issues?list=weekly" id="back-link">' in page
        and '<a href="/admin" id="dashboard-link">' in page
    )
    # The app's base URL is our origin too; any other site, or the refused page itself, gets no back link.
    assert (
        'href="/admin/lists" id="back-link"'
        in client.get("/admin/imports", headers={"Referer": f"{BASE}/admin/lists"}).text
    )
    for referer in (
        "https://elsewhere.example/admin/lists",
        "https://testserver//elsewhere.example/admin",
        "/admin/lists",
        "https://testserver/admin/suppressions",
        "https://testserver/unsubscribe/x",
        "http://[::1/admin",
        "",
    ):
        answer = client.get("/admin/suppressions", headers={"Referer": referer})
        assert (
            answer.status_code == 403 and 'id="back-link"' not in answer.text and 'id="dashboard-link"' in answer.text
        ), referer
    # A form without its CSRF token: the same page, saying why.
    expired = client.post("/admin/lists", data={"slug": "x"}, headers={"Referer": "https://testserver/admin/lists"})
    assert expired.status_code == 403 and "This form has expired or did not come from this site" in expired.text
    assert 'href="/admin/lists" id="back-link"' in expired.text
    # Not logged in: a forged login form gets the page without navigation, pointing at the login page.
    forged = admin.client().post("/admin/login", data={"username": "eddie", "password": PASSWORD, "csrf_token": "x"})
    assert forged.status_code == 403 and 'id="login-link"' in forged.text and 'href="/admin/issues"' not in forged.text
    # Elsewhere the subscriber pages' error page is unchanged, and the API answers JSON.
    assert client.get("/api/lists").json()["error"]["status"] == 401


# --- issues ------------------------------------------------------------------------------------------


def test_the_editor_checks_previews_and_saves_a_draft(admin):
    client = admin.logged_in("eddie")
    csrf = token(client)
    checked = client.post(
        "/admin/issues/check", data={"csrf_token": csrf, "list": "weekly", "source": SAMPLE_ISSUE}
    ).json()
    assert checked["ok"] and checked["problems"] == [] and checked["subject"].startswith("This Week in Info War")
    assert "Hello Ann Example," in checked["text"] and "Qualified Support in Moscow" in checked["text"]

    broken = "---\nsubject: Hi\n---\n# Title\n\nA [relative link](/about).\n\n![](https://example.org/a.png)\n"
    result = client.post("/admin/issues/check", data={"csrf_token": csrf, "list": "weekly", "source": broken}).json()
    assert not result["ok"]
    [error] = [p for p in result["problems"] if p["level"] == "error"]
    assert error["line"] == 6 and "relative link URL '/about'" in error["message"]
    bad_front = client.post(
        "/admin/issues/check", data={"csrf_token": csrf, "list": "weekly", "source": "---\nsubjet: typo\n---\nBody\n"}
    ).json()
    assert (
        bad_front["problems"][0]["line"] == 2
        and "unknown front matter key 'subjet'" in bad_front["problems"][0]["message"]
    )
    tagged = client.post(
        "/admin/issues/check",
        data={
            "csrf_token": csrf,
            "list": "weekly",
            "source": "---\nsubject: Hi\n---\nHi *|FNAME|*,\n\nHello *|NAME|*.\n",
        },
    ).json()
    assert not tagged["ok"] and [(p["level"], p["line"]) for p in tagged["problems"]] == [("error", 4), ("warning", 6)]
    assert tagged["problems"][0]["message"].startswith("unknown merge tag *|FNAME|*: the merge tags are *|NAME|*")

    preview = client.post("/admin/issues/preview", data={"csrf_token": csrf, "list": "weekly", "source": SAMPLE_ISSUE})
    assert (
        preview.status_code == 200
        and "Qualified Support in Moscow" in preview.text
        and "Hello Ann Example" in preview.text
    )
    csp = preview.headers["content-security-policy"]
    assert "style-src 'unsafe-inline'" in csp and "frame-ancestors 'self'" in csp and "script-src" not in csp
    assert "sandbox" in csp and preview.headers["x-frame-options"] == "SAMEORIGIN"
    refused = client.post("/admin/issues/preview", data={"csrf_token": csrf, "list": "weekly", "source": broken})
    assert refused.status_code == 400 and "Line 6" in refused.text

    # Saving a broken draft stores nothing and shows the problem with its line.
    failed = client.post("/admin/issues/new", data={"csrf_token": csrf, "list": "weekly", "source": broken})
    assert failed.status_code == 400 and 'data-line="6"' in failed.text and "relative link" in failed.text
    assert "A [relative link](/about)." in html.unescape(failed.text)  # the text is kept for fixing
    assert admin.one(select(Issue.id)) is None

    created = client.post("/admin/issues/new", data={"csrf_token": csrf, "list": "weekly", "source": SAMPLE_ISSUE})
    assert created.status_code == 303
    issue_id = int(must_match(re.match(r"/admin/issues/(\d+)\?done=created$", created.headers["location"])).group(1))
    editor = client.get(created.headers["location"])
    assert "Created." in editor.text and f'src="/admin/issues/{issue_id}/preview"' in editor.text
    text = html.unescape(
        must_match(re.search(r'<textarea id="source"[^>]*>(.*?)</textarea>', editor.text, re.S)).group(1)
    )
    original = parse_issue_text(SAMPLE_ISSUE)
    again = parse_issue_text(text)
    assert (again.subject, again.preheader, again.template, again.body_markdown) == (
        original.subject,
        original.preheader,
        original.template,
        original.body_markdown,
    )

    saved = client.post(
        f"/admin/issues/{issue_id}",
        data={"csrf_token": csrf, "source": text.replace("Qualified Support", "Guarded Support")},
    )
    assert saved.status_code == 303 and saved.headers["location"] == f"/admin/issues/{issue_id}?done=saved"
    assert admin.one(select(Issue.subject).where(Issue.id == issue_id)).endswith(
        "Guarded Support in Moscow for Korean Summit"
    )
    stored = client.get(f"/admin/issues/{issue_id}/preview")
    assert (
        stored.status_code == 200
        and "Guarded Support" in stored.text
        and "frame-ancestors 'self'" in stored.headers["content-security-policy"]
    )
    assert "Guarded Support" in client.get(f"/admin/issues/{issue_id}/preview?part=text").text
    unchanged = client.post(f"/admin/issues/{issue_id}", data={"csrf_token": csrf, "source": broken})
    assert unchanged.status_code == 400
    assert admin.one(select(Issue.subject).where(Issue.id == issue_id)).endswith(
        "Guarded Support in Moscow for Korean Summit"
    )
    listing = client.get("/admin/issues")
    assert f'href="/admin/issues/{issue_id}"' in listing.text and "Guarded Support" in listing.text


def test_a_test_send_arrives_marked_test_and_a_bad_address_is_shown(admin):
    issue_id = make_issue(admin)
    client = admin.logged_in("eddie")
    csrf = token(client)
    answer = client.post(f"/admin/issues/{issue_id}/test", data={"csrf_token": csrf, "to": "Me@Example.org"})
    assert (
        answer.status_code == 303
        and answer.headers["location"] == f"/admin/issues/{issue_id}?done=test-sent&test_to=me%40example.org"
    )
    assert "Test sent to me@example.org." in client.get(answer.headers["location"]).text
    [message] = admin.capture.messages
    assert list(message.rcpt_tos) == ["me@example.org"]
    mail = message_from_bytes(message.data, policy=policy.default)
    assert mail["Subject"].startswith("[TEST] This Week in Info War")
    assert admin.one(select(Send.id)) is None  # a test is not a send

    bad = client.post(f"/admin/issues/{issue_id}/test", data={"csrf_token": csrf, "to": "not an address"})
    assert bad.status_code == 400 and 'aria-invalid="true"' in bad.text and 'id="test-error"' in bad.text
    down = admin.client(NEWSLETTER_SMTP_URL="smtp://127.0.0.1:9")
    login(down, "eddie")
    refused = down.post(f"/admin/issues/{issue_id}/test", data={"csrf_token": token(down), "to": "me@example.org"})
    assert refused.status_code == 400 and "could not be reached" in refused.text
    assert len(admin.capture.messages) == 1


def test_a_test_send_goes_to_several_addresses_and_a_bad_one_sends_nothing(admin):
    issue_id = make_issue(admin)
    client = admin.logged_in("eddie")
    csrf = token(client)
    url = f"/admin/issues/{issue_id}/test"
    answer = client.post(url, data={"csrf_token": csrf, "to": "Me@Example.org, you@example.net\nthem@example.com"})
    assert answer.status_code == 303, answer.text
    assert (
        "Test sent to me@example.org, you@example.net, them@example.com." in client.get(answer.headers["location"]).text
    )
    assert [m.rcpt_tos for m in admin.capture.messages] == [
        ("me@example.org",),
        ("you@example.net",),
        ("them@example.com",),
    ]

    bad = client.post(url, data={"csrf_token": csrf, "to": "ok@example.org not-an-address"})
    assert bad.status_code == 400 and "'not-an-address'" in html.unescape(bad.text) and "nothing was sent" in bad.text
    assert 'value="ok@example.org not-an-address"' in bad.text  # kept for fixing
    many = client.post(url, data={"csrf_token": csrf, "to": " ".join(f"t{i}@example.org" for i in range(11))})
    assert many.status_code == 400 and "at most 10" in many.text
    assert len(admin.capture.messages) == 3

    admin.capture.replies["refused@example.org"] = "550 5.1.1 No such user"
    partly = client.post(url, data={"csrf_token": csrf, "to": "refused@example.org, me@example.org"})
    assert partly.status_code == 400
    error = html.unescape(
        must_match(re.search(r'<p class="error" role="alert" id="test-error">(.*?)</p>', partly.text, re.S)).group(1)
    )
    assert error.startswith("Not sent to refused@example.org: 550 5.1.1 No such user") and error.endswith(
        "Sent to me@example.org."
    )
    assert len(admin.capture.messages) == 4


# --- sends ---------------------------------------------------------------------------------------------


def test_sending_shows_the_recipient_count_then_progress_pause_resume_cancel_and_the_log(admin):
    issue_id = make_issue(admin)
    client = admin.logged_in("eddie")
    confirm = client.get(f"/admin/issues/{issue_id}/send")
    # 4 confirmed readers; not the unconfirmed one, not the suppressed one.
    assert re.search(r"<strong>4</strong> recipients", confirm.text) and "Send now to 4 recipients" in confirm.text
    empty = html.unescape(client.get(f"/admin/issues/{issue_id}/send?list=daily").text)
    assert (
        "daily has 0 confirmed subscribers who can be mailed (0 unconfirmed)" in empty and 'id="send-now"' not in empty
    )
    assert admin.one(select(Send.id)) is None  # the confirmation page sends nothing

    send_id = start_send(client, issue_id)
    assert admin.one(select(Send.total).where(Send.id == send_id)) == 4
    view = client.get(f"/admin/sends/{send_id}?done=started")
    assert view.status_code == 200 and "The send has started" in view.text
    assert f'data-send-progress="/admin/sends/{send_id}/progress"' in view.text and 'data-live="yes"' in view.text
    progress = client.get(f"/admin/sends/{send_id}/progress").json()
    assert (progress["status"], progress["total"], progress["pending"], progress["sent"]) == ("sending", 4, 4, 0)
    assert progress["can_pause"] and progress["can_cancel"] and not progress["can_resume"] and progress["live"]

    csrf = token(client)
    assert (
        client.post(f"/admin/sends/{send_id}/pause", data={"csrf_token": csrf}).headers["location"]
        == f"/admin/sends/{send_id}?done=paused"
    )
    paused = client.get(f"/admin/sends/{send_id}/progress").json()
    assert paused["status"] == "paused" and paused["can_resume"] and not paused["can_pause"]
    twice = client.post(f"/admin/sends/{send_id}/pause", data={"csrf_token": csrf})
    assert twice.status_code == 409 and "only a sending send can be paused" in twice.text
    assert (
        client.post(f"/admin/sends/{send_id}/resume", data={"csrf_token": csrf})
        .headers["location"]
        .endswith("done=resumed")
    )
    assert client.get(f"/admin/sends/{send_id}/progress").json()["status"] == "sending"

    # The delivery log names every recipient: an admin's (an editor gets 403, tests/test_ops_endpoints.py).
    ann = admin.logged_in()
    log = ann.get(f"/admin/sends/{send_id}/log")
    assert log.status_code == 200 and log.text.count("@example.com</td>") == 4 and "bounced@example.com" not in log.text
    assert ann.get(f"/admin/sends/{send_id}/log?status=sent").text.count("@example.com</td>") == 0
    exported = ann.get(f"/admin/sends/{send_id}/log.csv")
    assert exported.headers["content-type"].startswith("text/csv")
    assert f'filename="send-{send_id}-log.csv"' in exported.headers["content-disposition"]
    lines = exported.text.strip().splitlines()
    assert (
        lines[0].startswith("delivery_id,email,status")
        and len(lines) == 5
        and all(",pending," in line for line in lines[1:])
    )
    assert ann.get(f"/admin/sends/{send_id}/log.csv?status=failed").text.strip().count("\n") == 0

    cancelled = client.post(f"/admin/sends/{send_id}/cancel", data={"csrf_token": csrf})
    assert cancelled.headers["location"] == f"/admin/sends/{send_id}?done=cancelled"
    final = client.get(f"/admin/sends/{send_id}/progress").json()
    assert (final["status"], final["cancelled"], final["live"], final["can_cancel"]) == ("cancelled", 4, False, False)
    assert "cancelled" in client.get("/admin/sends").text
    assert f'href="/admin/sends/{send_id}"' in client.get("/admin").text


def test_the_delivery_log_pages_fifty_rows_at_a_time(admin):
    with db.transaction(admin.sessions) as s:
        for i in range(4, 60):
            add_subscriber(s, "weekly", f"reader{i}@example.com", confirmed=True)
    client = admin.logged_in()
    send_id = start_send(client, make_issue(admin))
    first = client.get(f"/admin/sends/{send_id}/log")
    assert first.text.count("@example.com</td>") == 50 and "Page 1 of 2" in first.text
    assert f'href="/admin/sends/{send_id}/log?page=2"' in first.text
    second = client.get(f"/admin/sends/{send_id}/log?page=2")
    assert second.text.count("@example.com</td>") == 10 and "51–60 of 60" in second.text
    filtered = client.get(f"/admin/sends/{send_id}/log?status=pending&page=2")
    assert f'href="/admin/sends/{send_id}/log?status=pending&amp;page=1"' in filtered.text


def test_a_send_can_be_scheduled_rescheduled_and_refuses_a_past_time(admin):
    issue_id = make_issue(admin)
    client = admin.logged_in("eddie")
    csrf = token(client)
    later = (datetime.now(UTC) + timedelta(days=2)).replace(second=0, microsecond=0)
    # A browser at UTC-1: its clock shows an hour less, and getTimezoneOffset() says 60 (UTC minus local).
    local = later.replace(tzinfo=None) - timedelta(hours=1)
    answer = client.post(
        f"/admin/issues/{issue_id}/send",
        data={
            "csrf_token": csrf,
            "list": "weekly",
            "when": "later",
            "at": local.strftime("%Y-%m-%dT%H:%M"),
            "tz_offset": "60",
        },
    )
    assert answer.status_code == 303 and answer.headers["location"].endswith("?done=scheduled")
    send_id = int(must_match(re.search(r"/sends/(\d+)", answer.headers["location"])).group(1))
    with admin.sessions() as s:
        send = s.get(Send, send_id)
        assert send is not None and send.status == "scheduled"
        assert send.scheduled_at == later
    view = client.get(f"/admin/sends/{send_id}")
    assert "Reschedule" in view.text and 'data-live="yes"' in view.text
    moved = client.post(
        f"/admin/sends/{send_id}/reschedule",
        data={"csrf_token": csrf, "at": (later + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M")},
    )
    assert moved.headers["location"].endswith("done=rescheduled")
    assert admin.one(select(Send.scheduled_at).where(Send.id == send_id)) == later + timedelta(days=1)

    past = client.post(
        f"/admin/issues/{issue_id}/send",
        data={"csrf_token": csrf, "list": "daily", "when": "later", "at": "2020-01-01T08:00"},
    )
    assert past.status_code == 400 and "is in the past" in past.text
    again = client.post(
        f"/admin/issues/{issue_id}/send",
        data={"csrf_token": csrf, "list": "weekly", "when": "later", "at": later.strftime("%Y-%m-%dT%H:%M")},
    )
    assert again.status_code == 409 and "already scheduled" in again.text
    assert admin.one(select(Send.id).where(Send.id != send_id)) is None
    assert (
        client.post(f"/admin/sends/{send_id}/cancel", data={"csrf_token": csrf})
        .headers["location"]
        .endswith("cancelled")
    )


# --- lists, subscribers, imports, suppressions ----------------------------------------------------------


def test_an_admin_creates_a_list_and_a_bad_field_is_shown(admin):
    client = admin.logged_in()
    csrf = token(client)
    bad = client.post(
        "/admin/lists", data={"csrf_token": csrf, "slug": "Bad Slug", "name": "X", "from_email": "a@example.org"}
    )
    assert bad.status_code == 400 and 'id="list-slug"' in bad.text and 'aria-invalid="true"' in bad.text
    taken = client.post(
        "/admin/lists", data={"csrf_token": csrf, "slug": "weekly", "name": "X", "from_email": "a@example.org"}
    )
    assert taken.status_code == 409 and "already exists" in taken.text
    made = client.post(
        "/admin/lists",
        data={"csrf_token": csrf, "slug": "monthly", "name": "The Monthly", "from_email": "News@Example.org"},
    )
    assert made.headers["location"] == "/admin/lists/monthly?done=created"
    assert "The Monthly" in client.get("/admin/lists/monthly").text
    assert admin.one(select(MailingList.from_email).where(MailingList.slug == "monthly")) == "news@example.org"


def test_an_admin_searches_edits_unsubscribes_deletes_and_erases_subscribers(admin):
    client = admin.logged_in()
    csrf = token(client)
    found = client.get("/admin/subscribers?q=READER&list=weekly&status=confirmed")
    assert "4 subscribers found." in found.text and "pending@example.com" not in found.text
    assert "1 subscriber found." in client.get("/admin/subscribers?status=unconfirmed").text
    assert "suppressed" in client.get("/admin/subscribers?q=bounced").text
    sid = admin.one(select(Subscriber.id).where(Subscriber.email == "reader1@example.com"))
    page = client.get(f"/admin/subscribers/{sid}")
    assert "Reader 1" in page.text and "via admin" in page.text

    edited = client.post(
        f"/admin/subscribers/{sid}", data={"csrf_token": csrf, "email": "Reader.One@Example.com", "name": "Reader One"}
    )
    assert edited.headers["location"] == f"/admin/subscribers/{sid}?done=saved"
    taken = client.post(
        f"/admin/subscribers/{sid}", data={"csrf_token": csrf, "email": "reader2@example.com", "name": "x"}
    )
    assert taken.status_code == 409 and "already has the address" in taken.text
    invalid = client.post(f"/admin/subscribers/{sid}", data={"csrf_token": csrf, "email": "nope", "name": "x"})
    assert (
        invalid.status_code == 400
        and 'id="s-email" name="email" type="email" required value="nope" aria-invalid="true"' in invalid.text
    )
    assert admin.one(select(Subscriber.name).where(Subscriber.id == sid)) == "Reader One"

    left = client.post(
        f"/admin/subscribers/{sid}/subscription", data={"csrf_token": csrf, "list": "weekly", "status": "unsubscribed"}
    )
    assert left.headers["location"].endswith("done=unsubscribed")
    assert admin.one(select(Subscription.end_reason).where(Subscription.subscriber_id == sid)) == "removed by an admin"
    joined = client.post(
        f"/admin/subscribers/{sid}/subscription", data={"csrf_token": csrf, "list": "daily", "status": "confirmed"}
    )
    assert joined.headers["location"].endswith("done=subscribed")
    suppressed = admin.one(select(Subscriber.id).where(Subscriber.email == "bounced@example.com"))
    refused = client.post(
        f"/admin/subscribers/{suppressed}/subscription",
        data={"csrf_token": csrf, "list": "daily", "status": "confirmed"},
    )
    assert refused.status_code == 409 and "is suppressed" in refused.text

    deleted = client.post(f"/admin/subscribers/{sid}/delete", data={"csrf_token": csrf})
    assert deleted.headers["location"] == f"/admin/subscribers/{sid}?done=deleted"
    with admin.sessions() as s:
        statuses = s.scalars(select(Subscription.status).where(Subscription.subscriber_id == sid)).all()
    assert sorted(statuses) == ["unsubscribed", "unsubscribed"]  # the consent history is kept
    erased = client.post(f"/admin/subscribers/{sid}/delete", data={"csrf_token": csrf, "erase": "yes"})
    assert erased.headers["location"] == "/admin/subscribers?done=erased"
    assert admin.one(select(Subscriber.id).where(Subscriber.email == "reader.one@example.com")) is None
    assert admin.one(select(Subscription.id).where(Subscription.subscriber_id == sid)) is None
    assert client.get(f"/admin/subscribers/{sid}").status_code == 404


def test_an_import_runs_in_the_background_and_reports_its_rejected_rows(admin):
    client = admin.logged_in()
    csrf = token(client)
    data = (
        "email,name,city\nnew1@example.com,New One,Oslo\nnot-an-address,Bad,X\nreader0@example.com,Reader Zero,Rome\n"
    )
    answer = client.post(
        "/admin/imports",
        data={"csrf_token": csrf, "list": "daily", "confirmed": "yes"},
        files={"file": ("people.csv", data.encode(), "text/csv")},
    )
    assert answer.status_code == 303
    job_url = answer.headers["location"]
    job_id = int(must_match(re.match(r"/admin/imports/(\d+)$", job_url)).group(1))
    assert f'data-import-progress="/admin/imports/{job_id}/progress"' in client.get(job_url).text
    done = wait_for(
        lambda: (p := client.get(f"{job_url}/progress").json())["status"] in ("finished", "failed") and p, "the import"
    )
    assert (done["status"], done["imported"], done["rejected"], done["has_report"]) == ("finished", 2, 1, True)
    page = client.get(job_url)
    assert 'data-live="no"' in page.text and "report of rejected rows" in page.text
    report = client.get(f"{job_url}/report.csv")
    assert report.headers["content-disposition"] == f'attachment; filename="import-{job_id}-rejected.csv"'
    assert report.text.splitlines()[0] == "line,reason" and report.text.splitlines()[1].startswith("3,")
    assert "people.csv" in client.get("/admin/imports").text
    with admin.sessions() as s:
        city = s.scalar(select(Subscriber.attributes).where(Subscriber.email == "new1@example.com"))
    assert city == {"city": "Oslo"}

    bad = client.post(
        "/admin/imports",
        data={"csrf_token": csrf, "list": "daily"},
        files={"file": ("nope.csv", b"name\nAnn\n", "text/csv")},
    )
    assert bad.status_code == 400 and "nope.csv:1" in bad.text and "email" in bad.text
    assert admin.one(select(ImportJob.id).where(ImportJob.filename == "nope.csv")) is None


def test_an_admin_adds_and_lifts_suppressions(admin):
    client = admin.logged_in()
    csrf = token(client)
    added = client.post(
        "/admin/suppressions",
        data={"csrf_token": csrf, "email": "Trap@Example.com", "reason": "admin", "note": "spam trap"},
    )
    assert added.headers["location"] == "/admin/suppressions?done=suppressed"
    listing = client.get("/admin/suppressions")
    assert "trap@example.com" in listing.text and "spam trap" in listing.text and "bounced@example.com" in listing.text
    assert (
        "already"
        in client.get(
            client.post("/admin/suppressions", data={"csrf_token": csrf, "email": "trap@example.com"}).headers[
                "location"
            ]
        ).text
    )
    bad = client.post("/admin/suppressions", data={"csrf_token": csrf, "email": "nope", "reason": "admin"})
    assert bad.status_code == 400 and 'value="nope"' in bad.text
    bad_reason = client.post(
        "/admin/suppressions", data={"csrf_token": csrf, "email": "a@example.com", "reason": "whim"}
    )
    assert bad_reason.status_code == 400 and "unknown reason" in bad_reason.text
    lifted = client.post("/admin/suppressions/remove", data={"csrf_token": csrf, "email": "bounced@example.com"})
    assert lifted.headers["location"] == "/admin/suppressions?done=unsuppressed"
    assert (
        client.post("/admin/suppressions/remove", data={"csrf_token": csrf, "email": "bounced@example.com"}).status_code
        == 404
    )
    with admin.sessions() as s:
        assert s.scalars(select(Suppression.email)).all() == ["trap@example.com"]
    assert "trap@example.com" not in client.get("/admin/suppressions?q=bounced").text
