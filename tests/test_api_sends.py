"""/api/sends over HTTP: a send started through the API and delivered by a real worker into a
capture SMTP server, its log and CSV export; pause, resume, cancel; scheduling."""

from __future__ import annotations

import csv
import io
import time
from datetime import UTC, datetime, timedelta

import pytest

from tests.apikit import (
    Api,
    api_with_broker,  # noqa: F401  (fixture)
    assert_error,
)
from tests.conftest import Cli, clean_environ
from tests.sendkit import Newsroom

pytestmark = pytest.mark.redis


@pytest.fixture
def room(api_with_broker: Api, tmp_path):  # noqa: F811
    """Worker processes with the same settings as the app under test."""
    newsroom = Newsroom(
        cli=Cli(env=clean_environ(**api_with_broker.environ), cwd=tmp_path),
        capture=api_with_broker.capture,
        tmp=tmp_path,
    )
    yield newsroom
    newsroom.stop_all()


def readers(api: Api, count: int) -> list[str]:
    api.make_list()
    addresses = [f"reader{i:02d}@example.com" for i in range(count)]
    for i, address in enumerate(addresses):
        api.make_subscriber(address, name=f"Reader {i}")
    return addresses


def wait_for(api: Api, send_id: int, statuses: tuple[str, ...], timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = api.get(f"/api/sends/{send_id}", role="editor", expect=200).json()
        if status["status"] in statuses:
            return status
        time.sleep(0.3)
    raise AssertionError(f"send {send_id} still {status} after {timeout}s")


def test_a_send_started_through_the_api_is_delivered_by_a_worker(api_with_broker, room):  # noqa: F811
    api = api_with_broker
    addresses = readers(api, 23)
    api.make_subscriber("maybe@example.com", confirmed=False)  # not confirmed: not mailed
    api.make_subscriber("trap@example.com")
    api.post("/api/suppressions", json={"email": "trap@example.com"}, expect=201)  # suppressed: not mailed
    issue = api.make_issue()

    started = api.post("/api/sends", json={"issue_id": issue["id"]}, role="editor", expect=201).json()
    assert started["status"] == "sending" and started["list"] == "weekly" and started["issue_id"] == issue["id"]
    assert started["total"] == 23 and started["pending"] == 23 and started["sent"] == 0
    assert started["subject"] == "This Week: the API" and started["started_at"] and started["scheduled_at"] is None
    assert api.get(f"/api/issues/{issue['id']}", expect=200).json()["status"] == "sent"

    room.start_worker()
    done = wait_for(api, started["id"], ("finished", "paused", "cancelled"))
    assert done["status"] == "finished", done
    assert (done["sent"], done["failed"], done["pending"], done["total"]) == (23, 0, 0, 23)
    room.wait_received(23)
    assert sorted(room.received()) == addresses and set(room.received().values()) == {1}
    mail = room.parsed("reader07@example.com")
    assert mail["Subject"] == "This Week: the API"
    assert "Hello Reader 7" in mail.get_body(("plain",)).get_content()
    assert [s["id"] for s in api.get("/api/sends", expect=200).json()["items"]] == [started["id"]]

    log = api.get(f"/api/sends/{started['id']}/deliveries", params={"limit": 10, "offset": 20}, expect=200).json()
    assert (log["total"], log["offset"], log["limit"]) == (23, 20, 10)
    assert [d["email"] for d in log["items"]] == addresses[20:]
    assert all(
        d["status"] == "sent" and d["smtp_code"] == 250 and d["message_id"] and d["sent_at"] for d in log["items"]
    )
    assert (
        api.get(f"/api/sends/{started['id']}/deliveries", params={"status": "failed"}, expect=200).json()["total"] == 0
    )

    export = api.get(f"/api/sends/{started['id']}/deliveries.csv", expect=200)
    assert export.headers["content-type"].startswith("text/csv")
    assert "attachment" in export.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(export.text)))
    assert [r["email"] for r in rows] == addresses and {r["status"] for r in rows} == {"sent"}
    assert all(r["message_id"] and r["smtp_code"] == "250" for r in rows)
    only_failed = api.get(f"/api/sends/{started['id']}/deliveries.csv", params={"status": "failed"}, expect=200)
    assert only_failed.text.splitlines() == [
        ",".join(
            [
                "delivery_id",
                "email",
                "status",
                "attempts",
                "smtp_code",
                "smtp_reply",
                "message_id",
                "sent_at",
                "updated_at",
            ]
        )
    ]

    assert_error(api.post(f"/api/sends/{started['id']}/pause"), 409, says="finished")
    assert_error(api.post(f"/api/sends/{started['id']}/cancel"), 409, says="already finished")


def test_pause_resume_and_cancel(api_with_broker):  # noqa: F811
    api = api_with_broker
    readers(api, 12)
    issue = api.make_issue()
    send = api.post("/api/sends", json={"issue_id": issue["id"], "list": "weekly"}, expect=201).json()
    path = f"/api/sends/{send['id']}"  # no worker runs: the batches wait in Redis

    paused = api.post(f"{path}/pause", role="editor", expect=200).json()
    assert paused["status"] == "paused" and paused["status_reason"] == "paused by an editor"
    assert_error(api.post(f"{path}/pause"), 409, says="only a sending send can be paused")
    resumed = api.post(f"{path}/resume", role="editor", expect=200).json()
    assert resumed["status"] == "sending" and resumed["status_reason"] is None and resumed["pending"] == 12

    cancelled = api.post(f"{path}/cancel", role="editor", expect=200).json()
    assert cancelled["status"] == "cancelled" and cancelled["cancelled"] == 12 and cancelled["pending"] == 0
    assert cancelled["finished_at"]
    assert_error(api.post(f"{path}/resume"), 409, says="cancelled")
    assert_error(api.post(f"{path}/cancel"), 409, says="already cancelled")
    log = api.get(f"{path}/deliveries", params={"status": "cancelled"}, expect=200).json()
    assert log["total"] == 12 and log["items"][0]["smtp_reply"] == "send cancelled before this delivery"


def test_schedule_reschedule_and_cancel_a_send(api_with_broker):  # noqa: F811
    api = api_with_broker
    readers(api, 2)
    issue = api.make_issue()
    at = (datetime.now(UTC) + timedelta(days=2)).replace(microsecond=0)
    local = at.astimezone(datetime.now().astimezone().tzinfo).isoformat()

    scheduled = api.post("/api/sends", json={"issue_id": issue["id"], "at": local}, role="editor", expect=201).json()
    assert scheduled["status"] == "scheduled" and scheduled["total"] == 0 and scheduled["started_at"] is None
    assert datetime.fromisoformat(scheduled["scheduled_at"]) == at
    assert_error(api.post("/api/sends", json={"issue_id": issue["id"], "at": local}), 409, says="already scheduled")

    later = (at + timedelta(hours=3)).isoformat()
    moved = api.patch(f"/api/sends/{scheduled['id']}", json={"at": later}, role="editor", expect=200).json()
    assert datetime.fromisoformat(moved["scheduled_at"]) == at + timedelta(hours=3) and moved["status"] == "scheduled"
    past = (datetime.now(UTC) - timedelta(minutes=5)).isoformat()
    assert_error(api.patch(f"/api/sends/{scheduled['id']}", json={"at": past}), 400, field="at", says="in the past")
    assert_error(api.patch(f"/api/sends/{scheduled['id']}", json={"at": "2030-01-01T08:00:00"}), 422, field="at")
    assert_error(api.patch(f"/api/sends/{scheduled['id']}", json={"at": "next friday"}), 422, field="at")
    assert_error(api.patch(f"/api/sends/{scheduled['id']}", json={"at": "9999-12-31T23:59:59-05:00"}), 422, field="at")
    assert_error(api.post("/api/sends", json={"issue_id": issue["id"], "at": past}), 400, field="at")

    cancelled = api.post(f"/api/sends/{scheduled['id']}/cancel", expect=200).json()
    assert cancelled["status"] == "cancelled"
    assert_error(api.patch(f"/api/sends/{scheduled['id']}", json={"at": later}), 409, says="only a scheduled send")


def test_send_errors(api_with_broker):  # noqa: F811
    api = api_with_broker
    api.make_list()
    issue = api.make_issue()
    assert_error(api.post("/api/sends", json={"issue_id": 999999}), 404, says="no issue 999999")
    assert_error(api.post("/api/sends", json={"issue_id": issue["id"], "list": "nope"}), 404, says="no list 'nope'")
    assert_error(api.post("/api/sends", json={"issue_id": 0}), 422, field="issue_id")
    assert_error(api.post("/api/sends", json={"issue_id": 2**63}), 422, field="issue_id")
    assert_error(api.post("/api/sends", json={"issue_id": "1; DROP TABLE sends"}), 422, field="issue_id")
    assert_error(api.post("/api/sends", json={"issue_id": issue["id"], "now": True}), 422, field="now")
    assert_error(api.get("/api/sends/999999"), 404, says="no send 999999")
    assert_error(api.get("/api/sends/999999/deliveries"), 404)
    assert_error(api.get("/api/sends/999999/deliveries.csv"), 404)
    assert_error(api.post("/api/sends/999999/resume"), 404)
    assert_error(api.get("/api/sends/1/deliveries", params={"status": "lost"}), 422, field="query.status")
    assert_error(api.get("/api/sends/1/deliveries", params={"limit": 1001}), 422, field="query.limit")
    assert_error(api.get("/api/sends", params={"limit": "many"}), 422, field="query.limit")

    # A list with nobody confirmed: the send is refused, saying why, and nothing is stored.
    assert_error(api.post("/api/sends", json={"issue_id": issue["id"]}), 409, says="has 0 confirmed subscribers")
    assert api.get("/api/sends", expect=200).json()["items"] == []
