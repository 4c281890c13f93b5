"""The admin API over HTTP for tests: the real app on a real database, with real tokens.

``Api`` holds the app built from real Settings (SQLite or PostgreSQL through the
``database_url`` fixture), a capture SMTP server for test sends, and one admin and one
editor API token made by ``newsletter.access.accounts``. Import the fixtures into a test module
with ``from tests.apikit import api, api_with_broker  # noqa: F401``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.orm import Session, sessionmaker

from newsletter.access import accounts
from newsletter.config import Settings
from newsletter.devtools.smtp_capture import CaptureServer
from newsletter.store import db

BASE = "https://news.example.org"
KEY = "api-test-secret-key-0123456789abcdef"
ISSUE_MD = """---
subject: "This Week: the API"
preheader: Everything the CLI does, over HTTP.
---
# Hello *|NAME:there|*

A [link](https://example.org/a) and a paragraph.
"""


@dataclass
class Api:
    settings: Settings
    sessions: sessionmaker[Session]
    capture: CaptureServer
    environ: dict[str, str]
    tokens: dict[str, str] = field(default_factory=dict)
    _client: Any = None

    @property
    def client(self):
        if self._client is None:
            from fastapi.testclient import TestClient

            from newsletter.http.app import create_app

            app = create_app(self.settings, sessions=self.sessions, send_confirmation=lambda request: None)
            self._client = TestClient(app, follow_redirects=False)
        return self._client

    def token(self, role: str) -> str:
        if role not in self.tokens:
            with db.transaction(self.sessions) as session:
                _, self.tokens[role] = accounts.create_token(session, f"test-{role}", role)
        return self.tokens[role]

    def headers(self, role: str = "admin") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(role)}"}

    def call(self, method: str, path: str, *, role: str = "admin", expect: int | None = None, **kwargs: Any):
        response = self.client.request(
            method, path, headers={**self.headers(role), **kwargs.pop("headers", {})}, **kwargs
        )
        if expect is not None:
            assert response.status_code == expect, f"{method} {path}: {response.status_code} {response.text}"
        return response

    def get(self, path: str, **kwargs: Any):
        return self.call("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any):
        return self.call("POST", path, **kwargs)

    def put(self, path: str, **kwargs: Any):
        return self.call("PUT", path, **kwargs)

    def patch(self, path: str, **kwargs: Any):
        return self.call("PATCH", path, **kwargs)

    def delete(self, path: str, **kwargs: Any):
        return self.call("DELETE", path, **kwargs)

    # --- fixtures through the API itself --------------------------------------------------

    def make_list(self, slug: str = "weekly", **fields: Any) -> dict[str, Any]:
        body = {
            "slug": slug,
            "name": "The Weekly",
            "from_email": "news@example.org",
            "from_name": "Weekly Desk",
            **fields,
        }
        return self.post("/api/lists", json=body, expect=201).json()

    def make_list_raw(self, body: dict[str, Any]):
        return self.post("/api/lists", json=body)

    def make_subscriber(
        self, email: str, slug: str = "weekly", *, confirmed: bool = True, name: str = ""
    ) -> dict[str, Any]:
        body = {"list": slug, "email": email, "name": name, "confirmed": confirmed}
        return self.post("/api/subscribers", json=body, expect=201).json()

    def make_issue(self, slug: str = "weekly", markdown: str = ISSUE_MD) -> dict[str, Any]:
        return self.post("/api/issues/markdown", json={"list": slug, "markdown": markdown}, expect=201).json()


def assert_error(response, status: int, *, field: str | None = None, says: str | None = None) -> dict[str, Any]:
    """The response is the API's JSON error: ``{"error": {"status", "message", "field"}}``."""
    assert response.status_code == status, f"{response.status_code} {response.text}"
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"status", "message", "field"}, body
    error = body["error"]
    assert error["status"] == status and isinstance(error["message"], str) and error["message"], body
    if field is not None:
        assert error["field"] == field, body
    if says is not None:
        assert says in error["message"], body
    return error


def environ_for(tmp_path: Path, database_url: str, smtp_port: int, broker_url: str | None = None) -> dict[str, str]:
    environ = {
        "NEWSLETTER_VAR_DIR": str(tmp_path / "var"),
        "NEWSLETTER_DATABASE_URL": database_url,
        "NEWSLETTER_SMTP_URL": f"smtp://127.0.0.1:{smtp_port}",
        "NEWSLETTER_BASE_URL": BASE,
        "NEWSLETTER_SECRET_KEY": KEY,
        "NEWSLETTER_POSTAL_ADDRESS": "1 Example Street, Example City",
        "NEWSLETTER_BATCH_SIZE": "10",
    }
    if broker_url:
        environ["NEWSLETTER_BROKER_URL"] = broker_url
    return environ


def _api(tmp_path: Path, database_url: str, broker_url: str | None) -> Iterator[Api]:
    capture = CaptureServer(port=0)
    capture.start()
    environ = environ_for(tmp_path, database_url, capture.port, broker_url)
    engine = db.make_engine(database_url)
    api = Api(Settings.from_environ(environ), db.session_factory(engine), capture, environ)
    try:
        yield api
    finally:
        if api._client is not None:
            api._client.close()
        capture.stop()
        engine.dispose()


@pytest.fixture
def api(tmp_path: Path, database_url: str) -> Iterator[Api]:
    """The API on SQLite and PostgreSQL; no broker (nothing here queues)."""
    yield from _api(tmp_path, database_url, None)


@pytest.fixture
def api_with_broker(tmp_path: Path, database_url: str, redis_url: str) -> Iterator[Api]:
    """The API with the machine's Redis as its broker: sends started through it are queued."""
    yield from _api(tmp_path, database_url, redis_url)
