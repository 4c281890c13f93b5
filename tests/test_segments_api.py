"""/api/segments and the send request's lists and segment, over HTTP on a real database (and Redis)."""

from __future__ import annotations

import pytest

from tests.apikit import (
    Api,
    api_with_broker,  # noqa: F401  (fixture)
    assert_error,
)

pytestmark = pytest.mark.redis


def _people(api: Api) -> None:
    api.make_list()
    api.make_list("monthly")
    for address in ("ann@gmail.com", "bob@gmail.com", "cid@example.org"):
        api.make_subscriber(address, name=address[:3].title())
    for address in ("bob@gmail.com", "dee@gmail.com"):
        api.make_subscriber(address, "monthly")


def test_segments_over_the_api(api_with_broker: Api):  # noqa: F811
    api = api_with_broker
    _people(api)
    gmail = 'domain = "gmail.com"'
    counted = api.post("/api/segments/count", json={"list": "weekly", "filter": gmail}, role="editor", expect=200)
    assert counted.json() == {"list": "weekly", "filter": gmail, "count": 2}
    bad = api.post("/api/segments/count", json={"list": "weekly", "filter": 'domain == "x"'}, role="editor")
    assert_error(bad, 400, field="filter", says="expected a value in double quotes")
    assert "at character 9" in bad.json()["error"]["message"]

    created = api.post(
        "/api/segments", json={"list": "weekly", "name": "gmail", "filter": gmail}, role="editor", expect=201
    )
    assert (created.json()["name"], created.json()["count"]) == ("gmail", 2)
    taken = api.post("/api/segments", json={"list": "weekly", "name": "gmail", "filter": gmail})
    assert_error(taken, 409, says="already has a segment named 'gmail'")
    tracking = api.post("/api/segments", json={"list": "weekly", "name": "e", "filter": "engaged in last 2 sends"})
    assert_error(tracking, 400, field="filter", says="tracking to be individual (it is off)")
    api.post("/api/segments", json={"list": "weekly", "name": "ann", "filter": 'name = "Ann"'}, expect=201)
    items = api.get("/api/segments?list=weekly", role="editor", expect=200).json()["items"]
    assert [(s["name"], s["count"]) for s in items] == [("ann", None), ("gmail", None)]
    assert api.get("/api/segments/weekly/ann", expect=200).json()["count"] == 1
    assert_error(api.get("/api/segments/weekly/nobody"), 404, says="weekly has no segment named 'nobody'")

    # A segment send, and a send to two lists at once (each address once).
    issue = api.make_issue()["id"]
    segment_send = api.post("/api/sends", json={"issue_id": issue, "segment": "gmail"}, expect=201).json()
    assert segment_send["total"] == 2 and segment_send["list"] == "weekly"
    second = api.post("/api/sends", json={"issue_id": issue, "lists": ["monthly", "weekly"]})
    assert_error(second, 409, says="already has a send to monthly, weekly")
    both = api.post(
        "/api/sends", json={"issue_id": issue, "lists": ["monthly", "weekly"], "repeat": "only_new"}, expect=201
    ).json()
    assert both["total"] == 2 and both["list"] == "monthly"  # cid and dee: ann and bob got it already
    assert_error(
        api.post("/api/sends", json={"issue_id": issue, "list": "weekly", "lists": ["monthly"]}),
        400,
        field="lists",
        says="not both",
    )
    assert_error(
        api.post("/api/sends", json={"issue_id": issue, "lists": ["monthly", "weekly"], "segment": "gmail"}),
        400,
        field="segment",  # the request's field, not the CLI's --segment
        says="a segment belongs to one list",
    )
    api.delete("/api/segments/weekly/gmail", role="editor", expect=204)
    assert [s["name"] for s in api.get("/api/segments", expect=200).json()["items"]] == ["ann"]
