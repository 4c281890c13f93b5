"""Subject tests through the admin API, on SQLite and PostgreSQL: a send request's subject_test, refusals that
name the field or the list, the test in the send's status and report, deciding early and cancelling the rest."""

from __future__ import annotations

import pytest

from tests.apikit import (
    Api,
    api_with_broker,  # noqa: F401  (fixture)
    assert_error,
)

pytestmark = [pytest.mark.redis]

B = "The other subject"


def _setup(api: Api, tracking: str = "anonymous", readers: int = 20) -> int:
    api.make_list(tracking=tracking)
    for i in range(readers):
        api.make_subscriber(f"reader{i:02d}@example.com")
    return int(api.make_issue()["id"])


def test_a_send_request_with_a_subject_test_and_its_refusals(api_with_broker: Api):  # noqa: F811
    api = api_with_broker
    issue = _setup(api, tracking="off")
    test = {"subject": B, "share": 50, "decide_after": "2h"}

    refused = api.post("/api/sends", json={"issue_id": issue, "subject_test": test})
    assert_error(refused, 409, says="weekly has tracking off")
    assert 'PATCH /api/lists/weekly with {"tracking": "anonymous"}' in refused.json()["error"]["message"]
    assert api.get("/api/sends", expect=200).json()["items"] == []  # nothing stored
    api.patch("/api/lists/weekly", json={"tracking": "anonymous"}, expect=200)

    for body, status, field, says in [
        ({**test, "decide_after": "soon"}, 400, "subject_test.decide_after", "not a duration"),
        ({**test, "share": 5}, 400, "subject_test.share", "each subject needs at least one reader"),
        ({**test, "subject": "This Week: the API"}, 400, "subject_test.subject", "the issue's own"),
        ({**test, "subject": "B\nBcc: x@example.com"}, 400, "subject_test.subject", "control character"),
        ({**test, "share": 0}, 422, "subject_test.share", None),
        ({**test, "winner": "A"}, 422, "subject_test.winner", None),
    ]:
        assert_error(
            api.post("/api/sends", json={"issue_id": issue, "subject_test": body}), status, field=field, says=says
        )
    assert api.get("/api/sends", expect=200).json()["items"] == []

    started = api.post("/api/sends", json={"issue_id": issue, "subject_test": test}, role="editor", expect=201).json()
    tested = started["subject_test"]
    assert (started["status"], started["total"], started["pending"]) == ("sending", 20, 20)
    assert (tested["state"], tested["share"], tested["decide_after_seconds"]) == ("testing", 50, 7200)
    assert (tested["recipients_a"], tested["recipients_b"], tested["remainder"]) == (5, 5, 10)
    assert (tested["subject_a"], tested["subject_b"], tested["winner"]) == ("This Week: the API", B, None)
    assert "then the winning subject goes to 10 more" in tested["line"]

    report = api.get(f"/api/sends/{started['id']}/report", role="editor", expect=200).json()["subject_test"]
    assert report["state"] == "testing" and [v["recipients"] for v in report["variants"]] == [5, 5]
    assert report["decided_on"] is None

    assert_error(api.post(f"/api/sends/{started['id']}/subject-test/decide", json={"winner": "C"}), 422, field="winner")
    decided = api.post(
        f"/api/sends/{started['id']}/subject-test/decide", json={"winner": "b"}, role="editor", expect=200
    ).json()["subject_test"]
    assert (decided["state"], decided["winner"], decided["decided_by"]) == ("decided", "B", "api:test-editor")
    assert decided["reason"].startswith("B chosen by api:test-editor; by the figures A would have won.")
    assert_error(api.post(f"/api/sends/{started['id']}/subject-test/decide"), 409, says="decided already (B won)")
    assert_error(api.post(f"/api/sends/{started['id']}/subject-test/cancel-remainder"), 409, says="decided already")


def test_the_rest_cancelled_through_the_api_and_sends_without_a_test(api_with_broker: Api):  # noqa: F811
    api = api_with_broker
    issue = _setup(api)
    plain = api.post("/api/sends", json={"issue_id": issue}, expect=201).json()
    assert plain["subject_test"] is None
    assert api.get(f"/api/sends/{plain['id']}/report", expect=200).json()["subject_test"] is None
    assert_error(api.post(f"/api/sends/{plain['id']}/subject-test/decide"), 409, says="has no subject test")
    assert_error(api.post("/api/sends/999/subject-test/cancel-remainder"), 404)

    body = {"issue_id": issue, "repeat": "again", "subject_test": {"subject": B, "share": 20}}
    tested = api.post("/api/sends", json=body, expect=201).json()
    assert tested["subject_test"]["decide_after_seconds"] == 4 * 3600  # the defaults: 20 %, 4 h
    assert (tested["subject_test"]["recipients_a"], tested["subject_test"]["recipients_b"]) == (2, 2)
    after = api.post(f"/api/sends/{tested['id']}/subject-test/cancel-remainder", expect=200).json()
    assert after["cancelled"] == 16 and after["subject_test"]["state"] == "cancelled"
    assert "cancelled by api:test-admin" in after["subject_test"]["line"]
