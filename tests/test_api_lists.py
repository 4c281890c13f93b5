"""/api/lists and /api/suppressions over HTTP, on SQLite and PostgreSQL."""

from __future__ import annotations

from tests.apikit import (
    api,  # noqa: F401  (fixture)
    assert_error,
)


def test_create_read_update_delete_a_list(api):  # noqa: F811
    created = api.make_list(description="Every Friday.", reply_to="Editor@Example.org")
    assert created["slug"] == "weekly" and created["name"] == "The Weekly"
    assert created["reply_to"] == "editor@example.org"  # normalised like the CLI does
    assert created["counts"] == {"unconfirmed": 0, "confirmed": 0, "unsubscribed": 0} and created["total"] == 0
    assert created["slot"] is None

    api.make_subscriber("ann@example.com")
    api.make_subscriber("bob@example.com", confirmed=False)
    shown = api.get("/api/lists/weekly", expect=200).json()
    assert shown["counts"] == {"unconfirmed": 1, "confirmed": 1, "unsubscribed": 0} and shown["total"] == 2
    assert [row["slug"] for row in api.get("/api/lists", expect=200).json()["items"]] == ["weekly"]

    changed = api.patch("/api/lists/weekly", json={"name": "The Friday Weekly", "reply_to": ""}, expect=200).json()
    assert changed["name"] == "The Friday Weekly" and changed["reply_to"] is None
    assert changed["from_email"] == "news@example.org" and changed["description"] == "Every Friday."  # untouched

    api.delete("/api/lists/weekly", expect=204)
    assert_error(api.get("/api/lists/weekly"), 404, says="no list 'weekly'")
    assert_error(api.delete("/api/lists/weekly"), 404)


def test_list_errors_name_the_field(api):  # noqa: F811
    api.make_list()
    assert_error(api.make_list_raw({"slug": "Weekly!", "name": "X", "from_email": "x@example.org"}), 422, field="slug")
    assert_error(
        api.make_list_raw({"slug": "other", "name": "X", "from_email": "not an address"}), 400, field="from_email"
    )
    assert_error(
        api.make_list_raw({"slug": "other", "name": "X", "from_email": "x@example.org", "reply_to": "nope"}),
        400,
        field="reply_to",
    )
    assert_error(
        api.make_list_raw({"slug": "other", "name": "Line\nbreak", "from_email": "x@example.org"}), 400, field="name"
    )
    assert_error(api.make_list_raw({"slug": "other", "name": "", "from_email": "x@example.org"}), 422, field="name")
    assert_error(
        api.make_list_raw({"slug": "other", "name": "X", "from_email": "x@example.org", "colour": "red"}),
        422,
        field="colour",
    )
    assert_error(
        api.make_list_raw({"slug": "other", "name": "x" * 201, "from_email": "x@example.org"}), 422, field="name"
    )
    assert_error(
        api.make_list_raw({"slug": "other", "name": "Nul\x00", "from_email": "x@example.org"}), 422, field="name"
    )
    assert_error(
        api.make_list_raw({"slug": "weekly", "name": "Again", "from_email": "x@example.org"}),
        409,
        says="already exists",
    )
    assert_error(api.patch("/api/lists/weekly", json={"from_email": "@example.org"}), 400, field="from_email")
    assert_error(api.patch("/api/lists/weekly", json={"slug": "renamed"}), 422, field="slug")  # a slug is for good
    assert_error(api.get("/api/lists/NOT_A_SLUG"), 422, field="path.slug")
    assert [row["slug"] for row in api.get("/api/lists", expect=200).json()["items"]] == ["weekly"]


def test_a_list_with_issues_cannot_be_deleted(api):  # noqa: F811
    api.make_list()
    api.make_subscriber("ann@example.com")
    api.make_issue()
    assert_error(api.delete("/api/lists/weekly"), 409, says="1 issue(s)")
    assert api.get("/api/lists/weekly", expect=200).json()["total"] == 1


def test_weekly_slot_is_set_shown_and_cleared(api):  # noqa: F811
    api.make_list()
    slotted = api.patch(
        "/api/lists/weekly", json={"slot": {"weekday": "fri", "time": "08:30", "timezone": "Europe/Paris"}}, expect=200
    ).json()["slot"]
    assert slotted["weekday"] == "friday" and slotted["time"] == "08:30" and slotted["timezone"] == "Europe/Paris"
    assert "Fridays at 08:30" in slotted["description"] and slotted["next_at"]
    assert_error(
        api.patch("/api/lists/weekly", json={"slot": {"weekday": "fri", "time": "08:30", "timezone": "Mars/Olympus"}}),
        400,
        field="slot.timezone",
    )
    assert_error(
        api.patch("/api/lists/weekly", json={"slot": {"weekday": "fri", "time": "25:00", "timezone": "UTC"}}),
        400,
        field="slot.time",
    )
    assert api.get("/api/lists/weekly", expect=200).json()["slot"]["timezone"] == "Europe/Paris"  # unchanged
    assert api.patch("/api/lists/weekly", json={"slot": None}, expect=200).json()["slot"] is None


# --- suppressions ---------------------------------------------------------------------------------


def test_suppressions_add_list_and_lift(api):  # noqa: F811
    first = api.post("/api/suppressions", json={"email": "Spam@Example.COM", "note": "trap"}, expect=201).json()
    assert first["email"] == "spam@example.com" and first["reason"] == "admin" and first["note"] == "trap"
    again = api.post("/api/suppressions", json={"email": "spam@example.com", "reason": "complaint"}, expect=200).json()
    assert again["reason"] == "admin"  # the stored one, unchanged
    api.post("/api/suppressions", json={"email": "gone@example.com", "reason": "hard_bounce"}, expect=201)

    listed = api.get("/api/suppressions", expect=200).json()
    assert listed["total"] == 2 and [r["email"] for r in listed["items"]] == ["spam@example.com", "gone@example.com"]
    page = api.get("/api/suppressions", params={"offset": 1, "limit": 1}, expect=200).json()
    assert page["total"] == 2 and [r["email"] for r in page["items"]] == ["gone@example.com"]

    api.delete("/api/suppressions/SPAM@example.com", expect=204)
    assert_error(api.delete("/api/suppressions/spam@example.com"), 404, says="not suppressed")
    assert [r["email"] for r in api.get("/api/suppressions", expect=200).json()["items"]] == ["gone@example.com"]


def test_suppression_errors_name_the_field(api):  # noqa: F811
    assert_error(api.post("/api/suppressions", json={"email": "no-at-sign"}), 400, field="email")
    assert_error(
        api.post("/api/suppressions", json={"email": "a@example.com", "reason": "dislike"}), 422, field="reason"
    )
    assert_error(api.post("/api/suppressions", json={}), 422, field="email")
    assert_error(api.delete("/api/suppressions/no-at-sign"), 400, field="email")
    assert_error(api.get("/api/suppressions", params={"limit": 0}), 422, field="query.limit")
    assert api.get("/api/suppressions", expect=200).json()["total"] == 0
