"""Looking after issues and lists through the API, on SQLite and PostgreSQL: DELETE and
duplicate an issue, PATCH a list's settings and visibility; and what a private list means
for the public pages, checked with a real send delivered by a real worker."""

from __future__ import annotations

import re
import time
from urllib.parse import urlsplit

import pytest

from tests.apikit import Api, api, api_with_broker, assert_error  # noqa: F401  (fixtures)
from tests.conftest import Cli, clean_environ
from tests.sendkit import Newsroom
from tests.textkit import body_text, must_match


def test_duplicate_makes_a_new_draft_and_a_never_sent_issue_can_be_deleted(api):  # noqa: F811
    api.make_list()
    original = api.make_issue()
    copy = api.post(f"/api/issues/{original['id']}/duplicate", role="editor", expect=201).json()
    assert copy["id"] != original["id"] and copy["status"] == "draft" and copy["list"] == "weekly"
    for field in ("subject", "preheader", "template", "body_markdown"):
        assert copy[field] == original[field], field
    assert [i["id"] for i in api.get("/api/issues", expect=200).json()["items"]] == [copy["id"], original["id"]]

    api.delete(f"/api/issues/{copy['id']}", role="editor", expect=204)
    assert_error(api.get(f"/api/issues/{copy['id']}"), 404, says=f"no issue {copy['id']}")
    assert_error(api.delete(f"/api/issues/{copy['id']}"), 404)
    assert_error(api.post(f"/api/issues/{copy['id']}/duplicate"), 404)
    assert [i["id"] for i in api.get("/api/issues", expect=200).json()["items"]] == [original["id"]]
    assert_error(api.delete("/api/issues/0"), 422, field="path.issue_id")


def test_an_issue_with_a_scheduled_or_cancelled_send_is_kept_with_the_reason(api):  # noqa: F811
    api.make_list()
    api.make_subscriber("ann@example.com")
    issue = api.make_issue()
    send = api.post("/api/sends", json={"issue_id": issue["id"], "at": "2099-01-04T08:00:00+00:00"}, expect=201).json()
    error = assert_error(api.delete(f"/api/issues/{issue['id']}"), 409)
    assert f"send {send['id']} to weekly (scheduled)" in error["message"]
    api.post(f"/api/sends/{send['id']}/cancel", expect=200)
    error = assert_error(api.delete(f"/api/issues/{issue['id']}"), 409)
    assert f"send {send['id']} to weekly (cancelled)" in error["message"]
    assert f"POST /api/issues/{issue['id']}/duplicate" in error["message"] and "newsletter " not in error["message"]
    assert api.get(f"/api/issues/{issue['id']}", expect=200).json()["subject"] == issue["subject"]


def test_patch_changes_sender_reply_to_description_and_visibility(api):  # noqa: F811
    created = api.make_list(reply_to="desk@example.org")
    assert created["private"] is False
    changed = api.patch(
        "/api/lists/weekly",
        json={
            "name": "The Friday Weekly",
            "description": "Every Friday.",
            "from_name": "Friday Desk",
            "from_email": "Friday@Example.ORG",
            "reply_to": "",
            "private": True,
        },
        expect=200,
    ).json()
    assert (changed["name"], changed["description"], changed["from_name"], changed["from_email"]) == (
        "The Friday Weekly",
        "Every Friday.",
        "Friday Desk",
        "friday@example.org",
    )
    assert changed["reply_to"] is None and changed["private"] is True
    assert api.get("/api/lists", expect=200).json()["items"][0]["private"] is True
    # Fields not given stay; private: null leaves the visibility as it is.
    assert api.patch("/api/lists/weekly", json={"private": None}, expect=200).json()["private"] is True
    assert api.patch("/api/lists/weekly", json={"private": False}, expect=200).json()["private"] is False

    before = api.get("/api/lists/weekly", expect=200).json()
    for body, status, field in (
        ({"from_email": "not an address"}, 400, "from_email"),
        ({"reply_to": "@example.org"}, 400, "reply_to"),
        ({"name": "Line\nbreak"}, 400, "name"),
        ({"from_name": "Desk\r\nBcc: evil@example.com"}, 400, "from_name"),
        ({"name": "   "}, 400, "name"),
        ({"description": "nul\x00"}, 422, "description"),
        ({"private": "maybe"}, 422, "private"),
        ({"name": "Good", "from_email": "bad"}, 400, "from_email"),  # one bad field: nothing changes
    ):
        assert_error(api.patch("/api/lists/weekly", json=body), status, field=field)
    assert api.get("/api/lists/weekly", expect=200).json() == before
    assert_error(api.patch("/api/lists/weekly", json={"private": True}, role="editor"), 403)

    staff = api.make_list("staff", private=True)
    assert staff["private"] is True


# --- a private list on the public pages, with a real send ---------------------------------------


@pytest.fixture
def room(api_with_broker: Api, tmp_path):  # noqa: F811
    newsroom = Newsroom(
        cli=Cli(env=clean_environ(**api_with_broker.environ), cwd=tmp_path),
        capture=api_with_broker.capture,
        tmp=tmp_path,
    )
    yield newsroom
    newsroom.stop_all()


def _send_and_wait(broker_api: Api, issue_id: int) -> dict:
    started = broker_api.post("/api/sends", json={"issue_id": issue_id}, expect=201).json()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        status = broker_api.get(f"/api/sends/{started['id']}", expect=200).json()
        if status["status"] in ("finished", "paused", "cancelled"):
            return status
        time.sleep(0.3)
    raise AssertionError(f"send {started['id']} did not finish: {status}")


@pytest.mark.redis
def test_a_private_list_is_off_the_public_pages_but_its_mail_and_the_api_still_work(api_with_broker, room):  # noqa: F811
    broker_api = api_with_broker
    web = broker_api.client
    broker_api.make_list()
    broker_api.make_list("daily")
    broker_api.make_subscriber("ann@example.com")
    assert broker_api.patch("/api/lists/weekly", json={"private": True}, expect=200).json()["private"] is True

    home = web.get("/")
    assert home.status_code == 200 and 'href="/subscribe/daily"' in home.text
    assert "/subscribe/weekly" not in home.text and "/archive/weekly" not in home.text

    # The public form: the same 404 page as a list that does not exist, and nothing stored.
    unknown = web.get("/subscribe/nope")
    form = web.get("/subscribe/weekly")
    assert form.status_code == 404 and form.text == unknown.text
    posted = web.post("/subscribe/weekly", data={"email": "eve@example.com", "name": "Eve"})
    assert (
        posted.status_code == 404 and posted.text == web.post("/subscribe/nope", data={"email": "eve@example.com"}).text
    )
    assert broker_api.get("/api/subscribers", params={"q": "eve@example.com"}, expect=200).json()["total"] == 0
    assert (
        web.post("/subscribe/daily", data={"email": "eve@example.com"}).status_code == 200
    )  # a public list still works

    # Admins and the API still add people.
    bob = broker_api.make_subscriber("bob@example.com")
    assert [s["list"] for s in bob["subscriptions"]] == ["weekly"] and bob["subscriptions"][0]["status"] == "confirmed"

    issue = broker_api.make_issue()
    room.start_worker()
    done = _send_and_wait(broker_api, issue["id"])
    assert done["status"] == "finished" and done["sent"] == 2
    room.wait_received(2)

    # An issue that went out is kept, naming its send.
    error = assert_error(broker_api.delete(f"/api/issues/{issue['id']}"), 409)
    assert f"send {done['id']} to weekly (finished)" in error["message"]

    # The mail's view-in-browser link carries the issue's key, the same for every reader.
    links = {
        address: must_match(
            re.search(r"https://news\.example\.org/archive/weekly/\d+\?key=[\w-]+", body_text(room.parsed(address)))
        ).group(0)
        for address in ("ann@example.com", "bob@example.com")
    }
    assert links["ann@example.com"] == links["bob@example.com"]
    link = urlsplit(links["ann@example.com"])
    copy = web.get(f"{link.path}?{link.query}")
    assert copy.status_code == 200 and "This Week: the API" in copy.text
    assert copy.headers["cache-control"] == "no-store" and copy.headers["x-robots-tag"] == "noindex"
    assert f"{link.path}?{link.query}" in copy.text  # its own view-in-browser link keeps the key
    assert "ann@example.com" not in copy.text and 'href="/#manage"' in copy.text

    not_found = web.get("/archive/nope").text
    for path in (link.path, f"{link.path}?key=wrong", f"{link.path}?key=é", "/archive/weekly"):
        response = web.get(path)
        assert response.status_code == 404 and response.text == not_found, path

    # Public again: the archive is open to everyone, key or not.
    broker_api.patch("/api/lists/weekly", json={"private": False}, expect=200)
    assert web.get("/archive/weekly").status_code == 200 and web.get(link.path).status_code == 200
    assert web.get("/subscribe/weekly").status_code == 200 and "/subscribe/weekly" in web.get("/").text
