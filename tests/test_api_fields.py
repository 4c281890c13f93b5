"""Every 422 of the admin API names the field as the client sent it (issue 16, item 8).

A body field by its path (``slot.weekday``, ``to[1]``, ``attributes["my key"]``), ``body`` for
the body as a whole (not JSON, not an object, missing), a parameter by where it goes
(``query.limit``, ``path.send_id``): never pydantic's internal names of union members and
validators, nor a character offset.
"""

from __future__ import annotations

from typing import Any

from tests.apikit import (
    api,  # noqa: F401  (fixture)
    assert_error,
)


def test_each_422_names_the_field_the_client_sent(api):  # noqa: F811
    api.make_list()
    issue = api.make_issue()
    ann = api.make_subscriber("ann@example.com")
    json_type = {"Content-Type": "application/json"}
    cases: list[tuple[str, str, dict[str, Any], str, str]] = [
        # (method, path, request, field, words in the message)
        (
            "POST",
            "/api/issues",
            {"content": '{"list": "weekly",\n "subject": }', "headers": json_type},
            "body",
            "not valid JSON: Expecting value at line 2, column 13",
        ),
        ("POST", "/api/issues", {"json": [1, 2]}, "body", "valid dictionary"),
        ("POST", "/api/issues", {"headers": json_type}, "body", "needs a body"),
        ("POST", "/api/issues", {"json": {"list": "weekly", "subject": "S"}}, "body_markdown", "required"),
        ("POST", f"/api/issues/{issue['id']}/test-send", {"json": {"to": ["a@example.org", 7]}}, "to[1]", "string"),
        (
            "PATCH",
            f"/api/subscribers/{ann['id']}",
            {"json": {"attributes": {"city": {"name": "Lyon"}}}},
            "attributes.city",
            "valid string",
        ),
        (
            "PATCH",
            f"/api/subscribers/{ann['id']}",
            {"json": {"attributes": {"my key": "a\x00b"}}},
            'attributes["my key"]',
            "must not contain NUL",
        ),
        (
            "PATCH",
            f"/api/subscribers/{ann['id']}",
            {"json": {"attributes": {"": "empty name"}}},
            'attributes[""]',
            "the key",
        ),
        (
            "PATCH",
            "/api/lists/weekly",
            {"json": {"slot": {"weekday": "x", "time": "08:00", "timezone": "UTC"}}},
            "slot.weekday",
            "at least 2",
        ),
        (
            "PATCH",
            "/api/lists/weekly",
            {"json": {"slot": {"weekday": "monday", "time": "08:00", "timezone": "UTC", "hour": 8}}},
            "slot.hour",
            "Extra inputs",
        ),
        (
            "POST",
            "/api/sends",
            {"json": {"issue_id": issue["id"], "repeat": "thrice"}},
            "repeat",
            "'again' or 'only_new'",
        ),
        # Wrong JSON types are refused, not coerced ("1" or true is no issue id).
        ("POST", "/api/sends", {"json": {"issue_id": str(issue["id"])}}, "issue_id", "integer"),
        ("POST", "/api/sends", {"json": {"issue_id": True}}, "issue_id", "integer"),
        (
            "POST",
            "/api/subscribers",
            {"json": {"list": "weekly", "email": "b@example.com", "confirmed": "yes"}},
            "confirmed",
            "boolean",
        ),
        ("GET", "/api/subscribers", {"params": {"limit": "many"}}, "query.limit", "integer"),
        ("GET", "/api/sends/abc", {}, "path.send_id", "integer"),
        (
            "POST",
            "/api/imports",
            {"data": {"list": "weekly", "confirmed": "maybe"}, "files": {"file": ("a.csv", b"email\n", "text/csv")}},
            "confirmed",
            "boolean",
        ),
        (
            "POST",
            "/api/imports",
            {"data": {"list": "Weekly!"}, "files": {"file": ("a.csv", b"email\n", "text/csv")}},
            "list",
            "pattern",
        ),
        ("POST", "/api/imports", {"data": {"list": "weekly"}}, "file", "required"),
    ]
    for method, path, request, field, says in cases:
        error = assert_error(api.call(method, path, **request), 422, field=field)
        assert says in error["message"], (method, path, error)
        assert not error["message"].startswith("Value error"), error
