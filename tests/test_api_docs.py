"""`/docs`: the API reference, served by the app from its own files (no third-party CDN).

Over HTTP: every script, style and icon the page names is the app's own and is served. In
Debian's Chromium against a real `newsletter web` process: the operations are drawn, "Try it
out" calls the API with a token, and no request leaves the machine.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from fastapi.testclient import TestClient
from playwright.sync_api import expect

from newsletter.config import Settings
from newsletter.http.app import create_app
from tests.test_web_journey import chromium, free_port, start_web  # noqa: F401


class _Assets(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in ("src", "href") and value and tag in ("script", "link", "img", "iframe"):
                self.urls.append(value)


def assets_of(html: str) -> list[str]:
    parser = _Assets()
    parser.feed(html)
    return parser.urls


@pytest.mark.parametrize("base_url", ["https://news.example.org", "https://example.org/news"])
def test_docs_name_only_the_apps_own_files_and_each_is_served(tmp_path: Path, base_url: str):
    settings = Settings.from_environ(
        {
            "NEWSLETTER_VAR_DIR": str(tmp_path),
            "NEWSLETTER_DATABASE_URL": f"sqlite:///{tmp_path / 'n.db'}",
            "NEWSLETTER_BASE_URL": base_url,
            "NEWSLETTER_SECRET_KEY": "test-secret-key-0123456789abcdef",
        }
    )
    root = urlsplit(base_url).path
    client = TestClient(create_app(settings), base_url="https://testserver")
    page = client.get(f"{root}/docs")
    assert page.status_code == 200 and page.headers["content-type"] == "text/html; charset=utf-8"
    csp = dict(part.strip().split(" ", 1) for part in page.headers["content-security-policy"].split(";"))
    assert csp["default-src"] == "'none'" and csp["script-src"] == "'self'" and csp["connect-src"] == "'self'"
    assert "<script>" not in page.text  # no inline script: the start-up code is a file of ours
    urls = assets_of(page.text)
    assert {u.rsplit("/", 1)[-1] for u in urls} == {"favicon.png", "swagger-ui.css", "swagger-ui-bundle.js", "docs.js"}
    for url in urls:
        assert url.startswith(f"{root}/static/") and not url.startswith("//"), url
        served = client.get(url)
        kind = {"png": "image/png", "css": "text/css", "js": "text/javascript"}[url.rsplit(".", 1)[-1]]
        assert served.status_code == 200 and served.headers["content-type"].startswith(kind) and served.content, url
    css = client.get(next(u for u in urls if u.endswith(".css"))).text
    assert "@import" not in css and not re.search(r"url\((?![\"']?data:)", css)  # the style loads nothing more
    assert re.search(rf'data-openapi-url="{re.escape(root)}/openapi.json"', page.text)
    assert client.get(f"{root}/openapi.json").json()["paths"][f"{root}/api/issues"]


@pytest.mark.browser
@pytest.mark.redis
@pytest.mark.slow
def test_docs_draw_every_operation_and_try_it_out_without_leaving_the_machine(chromium, newsroom):  # noqa: F811
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    newsroom.cli.env["NEWSLETTER_BASE_URL"] = base
    newsroom.setup_list(1)
    token = newsroom.cli("admin", "create-token", "--name", "docs", "--role", "editor").stdout.strip().splitlines()[-1]
    web = start_web(newsroom.cli.env, newsroom.tmp, port)
    try:
        context = chromium.new_context(viewport={"width": 1280, "height": 900})
        requested: list[str] = []
        outside: list[str] = []

        def only_this_machine(route):
            url = route.request.url
            requested.append(url)
            if urlsplit(url).hostname != "127.0.0.1" and not url.startswith("data:"):
                outside.append(url)
                route.abort()
            else:
                route.continue_()

        context.route("**/*", only_this_machine)
        page = context.new_page()
        problems: list[str] = []
        page.on("console", lambda m: problems.append(m.text) if m.type in ("error", "warning") else None)
        page.on("pageerror", lambda e: problems.append(str(e)))
        page.goto(f"{base}/docs")
        expect(page.locator(".opblock-summary-path", has_text=re.compile(r"^/api/issues$")).first).to_be_visible()
        paths = set(page.locator(".opblock-summary-path").all_inner_texts())
        assert {"/api/lists", "/api/issues/{issue_id}/test-send", "/api/sends"} <= {p.strip() for p in paths}

        # Try it out: authorise with a token, list the lists.
        page.get_by_role("button", name=re.compile("Authorize")).first.click()
        page.get_by_label("auth-bearer-value").fill(token)
        page.locator(".modal-ux button.authorize").click()
        page.locator(".modal-ux button.btn-done").click()
        operation = page.locator("#operations-lists-all_lists_api_lists_get")
        operation.locator(".opblock-summary").click()
        operation.get_by_role("button", name="Try it out").click()
        operation.get_by_role("button", name="Execute").click()
        live = operation.locator(".live-responses-table tbody .response")
        expect(live.locator(".response-col_status")).to_have_text("200")
        expect(live.locator(".response-col_description").first).to_contain_text('"slug": "weekly"')

        assert outside == [] and requested, outside
        assert [p for p in problems if "Content Security Policy" in p or "Refused" in p] == [], problems
    finally:
        web.stop()
