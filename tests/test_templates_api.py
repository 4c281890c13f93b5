"""/api/templates and the layout of lists and issues over the API, on SQLite and PostgreSQL."""

from __future__ import annotations

from sqlalchemy import func, select

from newsletter.store.models import EmailTemplate
from tests.apikit import api, assert_error  # noqa: F401
from tests.test_email_templates import issue_text, pair


def test_templates_are_stored_checked_chosen_and_deleted_over_the_api(api):  # noqa: F811
    html, text = pair("HOUSE")
    listed = api.get("/api/templates", expect=200).json()["items"]
    assert [(t["name"], t["shipped"]) for t in listed] == [("issue", True)]
    shipped = api.get("/api/templates/issue", role="editor", expect=200).json()
    assert "{{ body_html }}" in shipped["html"] and "{{ personal.unsubscribe_url }}" in shipped["text"]

    # Refused with the part and line, nothing stored.
    broken = html.replace("{{ list_name }}", "{{ list_name }")
    assert_error(
        api.post("/api/templates", json={"name": "house", "html": broken, "text": text}),
        400,
        field="html:9",
        says="template syntax error: unexpected '}'",
    )
    assert_error(
        api.post(
            "/api/templates",
            json={"name": "house", "html": html.replace("{{ list_name }}", "{{ self.__init__ }}"), "text": text},
        ),
        400,
        field="html:9",
        says="access to attribute '__init__' of 'TemplateReference' object is unsafe",
    )
    assert_error(
        api.post("/api/templates", json={"name": "house", "html": html, "text": text.replace("{{ body_text }}", "")}),
        400,
        field="text",
        says="does not show the issue",
    )
    assert_error(api.post("/api/templates", json={"name": "issue", "html": html, "text": text}), 400, field="name")
    assert_error(api.post("/api/templates", json={"name": "Big", "html": html, "text": text}), 422, field="name")
    with api.sessions() as s:
        assert s.scalar(select(func.count()).select_from(EmailTemplate)) == 0
    check = api.post("/api/templates/check", json={"html": broken, "text": text}, role="editor", expect=200).json()
    assert check == {
        "ok": False,
        "problems": [{"level": "error", "message": "template syntax error: unexpected '}'", "where": "html:9"}],
    }

    # Editors read, admins write.
    assert_error(api.post("/api/templates", json={"name": "house", "html": html, "text": text}, role="editor"), 403)
    created = api.post("/api/templates", json={"name": "house", "html": html, "text": text}, expect=201).json()
    assert created["name"] == "house" and created["updated_by"] == "api:test-admin" and created["html"] == html
    assert_error(api.post("/api/templates", json={"name": "house", "html": html, "text": text}), 409)

    # A list uses it; an issue of another list chooses it for itself.
    api.make_list("weekly")
    api.make_list("daily", name="The Daily")
    assert api.get("/api/lists/weekly", expect=200).json()["template"] == "issue"
    assert api.patch("/api/lists/weekly", json={"template": "house"}, expect=200).json()["template"] == "house"
    assert_error(api.patch("/api/lists/daily", json={"template": "nope"}), 400, field="template")
    weekly_issue = api.make_issue("weekly", issue_text())
    daily_issue = api.make_issue("daily", issue_text("house"))
    assert daily_issue["template"] == "house"
    for issue in (weekly_issue, daily_issue):
        preview = api.get(f"/api/issues/{issue['id']}/preview", expect=200).text
        assert "HOUSE The " in preview
    summary = api.get("/api/templates/house", role="editor", expect=200).json()
    assert summary["lists"] == ["weekly"] and summary["issues"] == [daily_issue["id"]]

    # Changing it: checked again; in use, it cannot be deleted; the shipped one never.
    new_html, _ = pair("NEW")
    assert_error(api.patch("/api/templates/house", json={"html": broken}), 400, field="html:9")
    changed = api.patch("/api/templates/house", json={"html": new_html}, expect=200).json()
    assert changed["html"] == new_html and changed["text"] == text
    assert "NEW The Weekly" in api.get(f"/api/issues/{weekly_issue['id']}/preview", expect=200).text
    assert_error(api.patch("/api/templates/issue", json={"html": new_html}), 409, says="cannot be changed")
    assert_error(api.delete("/api/templates/issue"), 409, says="cannot be deleted")
    assert_error(api.delete("/api/templates/house", role="editor"), 403)
    error = assert_error(api.delete("/api/templates/house"), 409)
    assert error["message"] == (
        f"template 'house' is in use by the list weekly and the issue {daily_issue['id']} ('Hello there'); "
        "choose another layout for them first, then delete it"
    )
    api.patch("/api/lists/weekly", json={"template": "issue"}, expect=200)
    api.put(
        f"/api/issues/{daily_issue['id']}/markdown", json={"markdown": issue_text()}, expect=200
    )  # back to its list's layout
    api.delete("/api/templates/house", expect=204)
    assert_error(api.get("/api/templates/house"), 404)
    assert [t["name"] for t in api.get("/api/templates", expect=200).json()["items"]] == ["issue"]
