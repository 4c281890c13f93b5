"""The admin API's doors: bearer tokens (missing, wrong, revoked), roles, and the error shape."""

from __future__ import annotations

import pytest

from newsletter.access import accounts
from newsletter.store import db
from tests.apikit import (
    api,  # noqa: F401  (fixture)
    assert_error,
)
from tests.conftest import Cli, clean_environ

# One operation of each resource, with a body that would pass validation.
EVERY_RESOURCE = [
    ("GET", "/api/lists", None),
    ("GET", "/api/subscribers", None),
    ("GET", "/api/imports", None),
    ("GET", "/api/suppressions", None),
    ("GET", "/api/issues", None),
    ("GET", "/api/sends", None),
    ("POST", "/api/lists", {"slug": "x", "name": "X", "from_email": "x@example.org"}),
    ("DELETE", "/api/subscribers/1", None),
    ("POST", "/api/sends/1/pause", None),
]


@pytest.mark.parametrize(("method", "path", "body"), EVERY_RESOURCE)
def test_no_token_is_401_with_a_bearer_challenge(api, method, path, body):  # noqa: F811
    response = api.client.request(method, path, json=body)
    assert_error(response, 401, says="Authorization: Bearer")
    assert response.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize(
    "authorization",
    [
        "Bearer nl_not-a-real-token",
        "Bearer not-even-shaped-like-one",
        "Basic YWRtaW46cGFzc3dvcmQ=",
        "Bearer ",
        "nl_token-without-scheme",
    ],
)
def test_wrong_tokens_are_401(api, authorization):  # noqa: F811
    api.token("admin")  # a real token exists; these are not it
    response = api.client.get("/api/lists", headers={"Authorization": authorization})
    assert_error(response, 401)
    assert response.headers["www-authenticate"] == "Bearer"


def test_a_revoked_token_stops_working_at_once(api):  # noqa: F811
    api.get("/api/lists", expect=200)
    with db.transaction(api.sessions) as session:
        accounts.revoke_token(session, "test-admin")
    assert_error(api.get("/api/lists"), 401, says="revoked")


def test_a_token_made_by_the_cli_opens_the_api(api, tmp_path):  # noqa: F811
    cli = Cli(env=clean_environ(**api.environ), cwd=tmp_path)
    result = cli("admin", "create-token", "--name", "ci", "--role", "editor")
    token = result.stdout.strip().splitlines()[-1]
    assert token.startswith("nl_")
    listed = api.client.get("/api/lists", headers={"Authorization": f"Bearer {token}"})
    assert listed.status_code == 200 and listed.json() == {"items": []}
    # An editor token: lists are read-only for it.
    refused = api.client.post(
        "/api/lists",
        headers={"Authorization": f"Bearer {token}"},
        json={"slug": "weekly", "name": "W", "from_email": "news@example.org"},
    )
    assert_error(refused, 403, says="editor")
    with db.transaction(api.sessions) as session:
        [row] = [t for t in accounts.all_tokens(session) if t.name == "ci"]
        assert row.last_used_at is not None  # the API recorded the use


def test_editor_reads_lists_writes_issues_and_sends_but_nothing_else(api):  # noqa: F811
    api.make_list()
    subscriber = api.make_subscriber("ann@example.com")
    editor = {"role": "editor"}

    assert api.get("/api/lists", **editor, expect=200).json()["items"][0]["slug"] == "weekly"
    api.get("/api/lists/weekly", **editor, expect=200)
    forbidden = [
        api.post("/api/lists", json={"slug": "other", "name": "O", "from_email": "o@example.org"}, **editor),
        api.patch("/api/lists/weekly", json={"name": "Renamed"}, **editor),
        api.delete("/api/lists/weekly", **editor),
        api.get("/api/subscribers", **editor),
        api.get(f"/api/subscribers/{subscriber['id']}", **editor),
        api.patch(f"/api/subscribers/{subscriber['id']}", json={"name": "Eve"}, **editor),
        api.delete(f"/api/subscribers/{subscriber['id']}", **editor),
        api.post("/api/subscribers", json={"list": "weekly", "email": "bob@example.com"}, **editor),
        api.get("/api/imports", **editor),
        api.post(
            "/api/imports", data={"list": "weekly"}, files={"file": ("a.csv", b"email\nx@example.com\n")}, **editor
        ),
        api.get("/api/suppressions", **editor),
        api.post("/api/suppressions", json={"email": "spam@example.com"}, **editor),
        api.delete("/api/suppressions/spam@example.com", **editor),
    ]
    for response in forbidden:
        assert_error(response, 403, says="the editor role may not do this")
    # Nothing changed behind the 403s.
    assert api.get("/api/lists/weekly", expect=200).json()["name"] == "The Weekly"
    assert api.get(f"/api/subscribers/{subscriber['id']}", expect=200).json()["name"] == ""
    assert api.get("/api/suppressions", expect=200).json()["total"] == 0

    issue = api.post(
        "/api/issues",
        **editor,
        expect=201,
        json={"list": "weekly", "subject": "Hi", "body_markdown": "Hello."},
    ).json()
    api.get(f"/api/issues/{issue['id']}", **editor, expect=200)
    api.get("/api/sends", **editor, expect=200)


def test_admin_may_do_everything_an_editor_may(api):  # noqa: F811
    for role in ("admin", "editor"):
        assert api.get("/api/issues", role=role).status_code == 200
        assert api.get("/api/sends", role=role).status_code == 200
        assert api.get("/api/lists", role=role).status_code == 200
    assert api.get("/api/subscribers", role="admin").status_code == 200


def test_auth_comes_before_validation_and_existence(api):  # noqa: F811
    # Without a token nothing is revealed: not whether the id exists, nor what the body lacks.
    assert_error(api.client.get("/api/issues/99999"), 401)
    assert_error(api.client.post("/api/lists", json={"nonsense": True}), 401)
    assert_error(api.get("/api/subscribers/99999", role="editor"), 403)


def test_every_operation_documents_its_errors_and_the_bearer_scheme(api):  # noqa: F811
    schema = api.client.get("/openapi.json").json()
    assert schema["components"]["securitySchemes"]["apiToken"] == {
        "type": "http",
        "scheme": "bearer",
        "description": schema["components"]["securitySchemes"]["apiToken"]["description"],
    }
    error_ref = {"$ref": "#/components/schemas/ErrorResponse"}
    operations = [(path, method, op) for path, ops in schema["paths"].items() for method, op in ops.items()]
    assert len(operations) >= 30
    for path, method, op in operations:
        assert path.startswith("/api/"), path
        assert op["security"] == [{"apiToken": []}], (method, path)
        for status in ("401", "403", "422"):
            content = op["responses"][status]["content"]["application/json"]["schema"]
            assert content == error_ref, (method, path, status)
        if "{" in path:
            assert "404" in op["responses"], (method, path)


def test_other_methods_get_405_naming_every_method_of_the_path(api):  # noqa: F811
    for method, path, allow in [
        ("OPTIONS", "/api/lists", "GET, POST"),
        ("PUT", "/api/lists", "GET, POST"),
        ("HEAD", "/api/lists/weekly", "GET, PATCH, DELETE"),
        ("POST", "/api/issues/1", "GET, PUT, DELETE"),
        ("GET", "/api/sends/1/pause", "POST"),
        ("DELETE", "/api/subscribers/1/lists/weekly", None),  # answered: that one exists
    ]:
        response = api.client.request(method, path, headers=api.headers())
        if allow is None:
            assert response.status_code != 405
            continue
        assert response.status_code == 405 and response.headers["allow"] == allow, (method, path, response.headers)
        if method != "HEAD":
            assert_error(response, 405, says=allow)
