"""/api/subscribers and /api/imports over HTTP, on SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import io

from sqlalchemy import select

from newsletter.store.models import Subscriber, Subscription
from tests.apikit import (
    api,  # noqa: F401  (fixture)
    assert_error,
)


def test_add_search_and_page_through_subscribers(api):  # noqa: F811
    api.make_list()
    api.make_list("daily", name="The Daily")
    ann = api.make_subscriber("Ann@Example.com", name="Ann Lee")
    assert ann["email"] == "ann@example.com" and ann["name"] == "Ann Lee" and ann["suppressed"] is None
    [sub] = ann["subscriptions"]
    assert (sub["list"], sub["status"], sub["source"]) == ("weekly", "confirmed", "api")
    assert sub["confirmed_at"] is not None and sub["requested_at"] is not None
    for i in range(5):
        api.make_subscriber(f"reader{i}@example.com", "daily", confirmed=i % 2 == 0)
    again = api.post("/api/subscribers", json={"list": "weekly", "email": "ann@example.com"}, expect=200).json()
    assert again["id"] == ann["id"]  # 200: already on the list, nothing new

    everyone = api.get("/api/subscribers", expect=200).json()
    assert everyone["total"] == 6 and everyone["offset"] == 0 and everyone["limit"] == 50
    assert everyone["items"][0]["email"] == "ann@example.com"

    by_name = api.get("/api/subscribers", params={"q": "LEE"}, expect=200).json()
    assert [s["email"] for s in by_name["items"]] == ["ann@example.com"]
    by_address = api.get("/api/subscribers", params={"q": "reader3@"}, expect=200).json()
    assert [s["email"] for s in by_address["items"]] == ["reader3@example.com"]
    unconfirmed_daily = api.get(
        "/api/subscribers", params={"list": "daily", "status": "unconfirmed"}, expect=200
    ).json()
    assert sorted(s["email"] for s in unconfirmed_daily["items"]) == ["reader1@example.com", "reader3@example.com"]

    page = api.get("/api/subscribers", params={"list": "daily", "offset": 2, "limit": 2}, expect=200).json()
    assert page["total"] == 5 and [s["email"] for s in page["items"]] == ["reader2@example.com", "reader3@example.com"]
    beyond = api.get("/api/subscribers", params={"offset": 100}, expect=200).json()
    assert beyond["total"] == 6 and beyond["items"] == []
    # LIKE wildcards are matched literally.
    assert api.get("/api/subscribers", params={"q": "%"}, expect=200).json()["total"] == 0


def test_search_errors(api):  # noqa: F811
    api.make_list()
    assert_error(api.get("/api/subscribers", params={"list": "nope"}), 404, says="no list 'nope'")
    assert_error(api.get("/api/subscribers", params={"status": "bouncing"}), 422, field="query.status")
    assert_error(api.get("/api/subscribers", params={"limit": 501}), 422, field="query.limit")
    assert_error(api.get("/api/subscribers", params={"offset": -1}), 422, field="query.offset")
    assert_error(api.get("/api/subscribers", params={"offset": 10**30}), 422, field="query.offset")
    assert_error(api.get("/api/subscribers", params={"q": "a\x00b"}), 422, field="query.q")
    assert api.get("/api/subscribers", params={"q": "é👍 \u202e"}, expect=200).json()["total"] == 0


def test_edit_a_subscriber(api):  # noqa: F811
    api.make_list()
    ann = api.make_subscriber("ann@example.com")
    api.make_subscriber("bob@example.com")
    path = f"/api/subscribers/{ann['id']}"

    edited = api.patch(
        path, json={"name": "Ann Lee", "attributes": {"city": "Lyon", "age": 41, "vip": True}}, expect=200
    ).json()
    assert edited["name"] == "Ann Lee" and edited["attributes"] == {"city": "Lyon", "age": 41, "vip": True}
    moved = api.patch(path, json={"email": "Ann.Lee@Example.com"}, expect=200).json()
    assert moved["email"] == "ann.lee@example.com" and moved["name"] == "Ann Lee"  # others untouched

    assert_error(api.patch(path, json={"email": "bob@example.com"}), 409, says="already has the address")
    assert_error(api.patch(path, json={"email": "not an address"}), 400, field="email")
    assert_error(api.patch(path, json={"name": "Two\nlines"}), 400, field="name")
    assert_error(api.patch(path, json={"attributes": {"nested": {"a": 1}}}), 422)
    assert_error(api.patch(path, json={"attributes": {"": "empty name"}}), 422)
    assert_error(api.patch(path, json={"nickname": "Annie"}), 422, field="nickname")
    assert api.get(path, expect=200).json()["email"] == "ann.lee@example.com"

    assert_error(api.get("/api/subscribers/999999"), 404, says="no subscriber 999999")
    assert_error(api.patch("/api/subscribers/999999", json={"name": "X"}), 404)
    for bad in ("0", "-1", str(2**63), "1e3", "abc"):
        assert_error(api.get(f"/api/subscribers/{bad}"), 422, field="path.subscriber_id")


def test_subscribe_and_unsubscribe_keeps_the_consent_record(api):  # noqa: F811
    api.make_list()
    api.make_list("daily", name="The Daily")
    ann = api.make_subscriber("ann@example.com")
    lists_path = f"/api/subscribers/{ann['id']}/lists"

    joined = api.put(f"{lists_path}/daily", expect=200).json()
    assert {(s["list"], s["status"], s["source"]) for s in joined["subscriptions"]} == {
        ("daily", "confirmed", "api"),
        ("weekly", "confirmed", "api"),
    }
    left = api.delete(f"{lists_path}/weekly", expect=200).json()
    weekly = next(s for s in left["subscriptions"] if s["list"] == "weekly")
    assert weekly["status"] == "unsubscribed" and weekly["ended_at"] and weekly["end_reason"]
    assert weekly["confirmed_at"] is not None  # the consent record is kept

    assert_error(api.put(f"{lists_path}/nope"), 404, says="no list 'nope'")
    api.post("/api/suppressions", json={"email": "ann@example.com"}, expect=201)
    assert_error(api.put(f"{lists_path}/weekly"), 409, says="suppressed")


def test_delete_keeps_consent_and_erase_removes_everything(api):  # noqa: F811
    api.make_list()
    ann = api.make_subscriber("ann@example.com", name="Ann")
    bob = api.make_subscriber("bob@example.com", name="Bob")

    api.delete(f"/api/subscribers/{ann['id']}", expect=204)
    kept = api.get(f"/api/subscribers/{ann['id']}", expect=200).json()
    assert [s["status"] for s in kept["subscriptions"]] == ["unsubscribed"] and kept["name"] == "Ann"

    api.delete(f"/api/subscribers/{bob['id']}", params={"erase": "true"}, expect=204)
    assert_error(api.get(f"/api/subscribers/{bob['id']}"), 404)
    with api.sessions() as session:
        assert session.scalar(select(Subscriber).where(Subscriber.email == "bob@example.com")) is None
        assert session.scalar(select(Subscription).where(Subscription.subscriber_id == bob["id"])) is None
    assert_error(api.delete(f"/api/subscribers/{bob['id']}", params={"erase": "true"}), 404)
    assert_error(api.delete(f"/api/subscribers/{ann['id']}", params={"erase": "maybe"}), 422, field="query.erase")
    assert [s["email"] for s in api.get("/api/subscribers", expect=200).json()["items"]] == ["ann@example.com"]


# --- imports ----------------------------------------------------------------------------------


def upload(api, data: bytes, *, slug: str = "weekly", name: str = "people.csv", confirmed: bool = False):  # noqa: F811
    fields = {"list": slug, "confirmed": "true" if confirmed else "false"}
    return api.post("/api/imports", data=fields, files={"file": (name, data, "text/csv")})


def test_an_import_runs_in_the_background_and_reports_rejected_rows(api):  # noqa: F811
    api.make_list()
    api.make_subscriber("old@example.com", confirmed=False)
    data = (
        b"email,name,city\n"
        b"ann@example.com,Ann,Lyon\n"
        b"not-an-address,Nobody,\n"
        b"old@example.com,Old Timer,\n"
        b"bob@example.com,Bob\n"
        b"ann@example.com,Ann again,\n"
    )
    started = upload(api, data, confirmed=True)
    assert started.status_code == 202, started.text
    job = started.json()
    assert job["list"] == "weekly" and job["filename"] == "people.csv" and job["confirmed"] is True
    assert job["status"] == "queued" and job["size_bytes"] == len(data)
    assert job["report_url"] == f"/api/imports/{job['id']}/report.csv"

    done = api.get(f"/api/imports/{job['id']}", expect=200).json()
    assert done["status"] == "finished", done
    assert (done["imported"], done["updated"], done["rejected"]) == (1, 1, 3)
    assert done["has_report"] is True and done["error"] is None and done["finished_at"]
    assert done["created_by"] == "token test-admin"

    report = api.get(job["report_url"], expect=200)
    assert report.headers["content-type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(report.text)))
    assert rows[0] == ["line", "reason"]
    assert [row[0] for row in rows[1:]] == ["3", "5", "6"]
    assert "not-an-address" in rows[1][1]

    confirmed = api.get("/api/subscribers", params={"list": "weekly", "status": "confirmed"}, expect=200).json()
    assert sorted(s["email"] for s in confirmed["items"]) == ["ann@example.com", "old@example.com"]
    ann = next(s for s in confirmed["items"] if s["email"] == "ann@example.com")
    assert ann["attributes"] == {"city": "Lyon"}
    assert [j["id"] for j in api.get("/api/imports", expect=200).json()["items"]] == [job["id"]]


def test_a_bad_file_is_refused_at_once_naming_file_and_line(api):  # noqa: F811
    api.make_list()
    assert_error(upload(api, b"name,city\nAnn,Lyon\n", name="people.csv"), 400, field="people.csv:1", says="email")
    assert_error(upload(api, b"", name="empty.csv"), 400, field="empty.csv:1")
    assert_error(upload(api, b"\xff\xfeemail\n", name="utf16.csv"), 400, field="utf16.csv:1", says="UTF-8")
    assert_error(upload(api, b"email\na@example.com\n", slug="nope"), 404, says="no list 'nope'")
    assert_error(upload(api, b"email\n", slug="Not A Slug"), 422, field="list")
    assert_error(api.post("/api/imports", data={"list": "weekly"}), 422, field="file")
    assert api.get("/api/imports", expect=200).json()["items"] == []


def test_a_file_bad_past_its_header_fails_the_job_with_the_line(api):  # noqa: F811
    api.make_list()
    job = upload(api, b"email\nann@example.com\nbob@example.com\n\xff\xff\n").json()
    failed = api.get(f"/api/imports/{job['id']}", expect=200).json()
    assert failed["status"] == "failed" and "people.csv:4" in failed["error"], failed
    assert failed["imported"] == 0
    assert api.get("/api/subscribers", expect=200).json()["total"] == 0  # all or nothing
    assert api.get(f"/api/imports/{job['id']}/report.csv", expect=200).text == "line,reason\n"
    assert_error(api.get("/api/imports/424242"), 404)
    assert_error(api.get("/api/imports/424242/report.csv"), 404)
