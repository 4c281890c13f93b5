"""Looking after issues and lists in the admin UI over HTTP (with CSRF), on SQLite and
PostgreSQL: duplicate an issue, delete a draft after a confirm step (refused once it has a
send), and change a list's settings and visibility on its page."""

from __future__ import annotations

import re

from sqlalchemy import func, select

from newsletter.store.models import Issue, MailingList
from tests.test_admin_ui import admin, make_issue, start_send, token  # noqa: F401  (admin is a fixture)


def issue_count(admin) -> int:  # noqa: F811
    return admin.one(select(func.count()).select_from(Issue))


def test_duplicate_opens_the_editor_on_a_new_draft(admin):  # noqa: F811
    original = make_issue(admin)
    client = admin.logged_in("eddie")  # editors look after issues too
    editor = client.get(f"/admin/issues/{original}")
    assert 'id="duplicate-button"' in editor.text and f'action="/admin/issues/{original}/duplicate"' in editor.text

    assert client.post(f"/admin/issues/{original}/duplicate", data={"csrf_token": "wrong"}).status_code == 403
    assert issue_count(admin) == 1
    answer = client.post(f"/admin/issues/{original}/duplicate", data={"csrf_token": token(client)})
    assert answer.status_code == 303
    match = re.fullmatch(r"/admin/issues/(\d+)\?done=duplicated", answer.headers["location"])
    assert match, answer.headers["location"]
    copy_id = int(match.group(1))
    assert copy_id != original
    with admin.sessions() as s:
        first, copy = s.get(Issue, original), s.get(Issue, copy_id)
        assert copy is not None and first is not None
        assert (copy.subject, copy.body_markdown, copy.list_id, copy.status) == (
            first.subject,
            first.body_markdown,
            first.list_id,
            "draft",
        )
    shown = client.get(answer.headers["location"])
    assert shown.status_code == 200 and "a new draft, copied from the issue you were on" in shown.text
    assert client.post("/admin/issues/999/duplicate", data={"csrf_token": token(client)}).status_code == 404


def test_a_draft_is_deleted_after_a_confirm_step(admin):  # noqa: F811
    issue_id = make_issue(admin)
    client = admin.logged_in()
    editor = client.get(f"/admin/issues/{issue_id}")
    assert f'href="/admin/issues/{issue_id}/delete"' in editor.text

    confirm = client.get(f"/admin/issues/{issue_id}/delete")  # the confirm step changes nothing
    assert confirm.status_code == 200 and 'id="delete-confirm"' in confirm.text
    assert f'action="/admin/issues/{issue_id}/delete"' in confirm.text and "cannot be undone" in confirm.text
    assert issue_count(admin) == 1

    for csrf in (None, "wrong"):
        data = {} if csrf is None else {"csrf_token": csrf}
        assert client.post(f"/admin/issues/{issue_id}/delete", data=data).status_code == 403
    assert issue_count(admin) == 1

    answer = client.post(f"/admin/issues/{issue_id}/delete", data={"csrf_token": token(client)})
    assert answer.status_code == 303 and answer.headers["location"] == "/admin/issues?done=issue-deleted"
    assert issue_count(admin) == 0
    assert "The issue is deleted." in client.get(answer.headers["location"]).text
    assert client.get(f"/admin/issues/{issue_id}/delete").status_code == 404
    assert client.post(f"/admin/issues/{issue_id}/delete", data={"csrf_token": token(client)}).status_code == 404


def test_an_issue_with_a_send_is_kept_and_the_page_says_why(admin):  # noqa: F811
    issue_id = make_issue(admin)
    client = admin.logged_in()
    send_id = start_send(client, issue_id)
    editor = client.get(f"/admin/issues/{issue_id}")
    assert f'href="/admin/issues/{issue_id}/delete"' not in editor.text and "It has sends, so it is kept" in editor.text

    page = client.get(f"/admin/issues/{issue_id}/delete")
    assert page.status_code == 200 and 'id="delete-refused"' in page.text and 'id="delete-confirm"' not in page.text
    assert f'href="/admin/sends/{send_id}"' in page.text
    assert f'action="/admin/issues/{issue_id}/duplicate"' in page.text  # what to do instead

    refused = client.post(f"/admin/issues/{issue_id}/delete", data={"csrf_token": token(client)})
    assert refused.status_code == 409 and 'role="alert"' in refused.text
    assert f"send {send_id} to weekly (sending)" in refused.text
    assert issue_count(admin) == 1


def test_an_admin_edits_a_list_and_makes_it_private(admin):  # noqa: F811
    client = admin.logged_in()
    page = client.get("/admin/lists/weekly")
    assert 'id="edit-list"' in page.text and 'value="Weekly Desk"' in page.text
    assert re.search(r'id="edit-public" name="visibility" value="public" checked', page.text)
    csrf = token(client)
    form = {
        "csrf_token": csrf,
        "name": "The Friday Weekly",
        "description": "Every Friday.",
        "from_name": "Friday Desk",
        "from_email": "Friday@Example.ORG",
        "reply_to": "letters@example.org",
        "visibility": "private",
    }

    answer = client.post("/admin/lists/weekly", data=form)
    assert answer.status_code == 303 and answer.headers["location"] == "/admin/lists/weekly?done=saved"
    with admin.sessions() as s:
        weekly = s.scalar(select(MailingList).where(MailingList.slug == "weekly"))
        assert weekly is not None
        assert (
            weekly.name,
            weekly.description,
            weekly.from_name,
            weekly.from_email,
            weekly.reply_to,
            weekly.private,
        ) == ("The Friday Weekly", "Every Friday.", "Friday Desk", "friday@example.org", "letters@example.org", True)
    shown = client.get("/admin/lists/weekly")
    assert 'id="private-badge"' in shown.text and re.search(
        r'id="edit-private" name="visibility" value="private" checked', shown.text
    )

    # The public side of the same app: off the home page, no form.
    public = admin.client()
    assert "/subscribe/weekly" not in public.get("/").text and "/subscribe/daily" in public.get("/").text
    assert public.get("/subscribe/weekly").status_code == 404

    # An empty Reply-To removes it; public again.
    client.post("/admin/lists/weekly", data=dict(form, reply_to="", visibility="public"))
    assert admin.one(select(MailingList.reply_to).where(MailingList.slug == "weekly")) is None
    assert admin.one(select(MailingList.private).where(MailingList.slug == "weekly")) is False
    assert public.get("/subscribe/weekly").status_code == 200

    editor = admin.logged_in("eddie")
    before = admin.snapshot()
    for field, value, message in (
        ("from_email", "not an address", ""),
        ("name", "Line\nbreak", "control character"),
        ("reply_to", "@example.org", ""),
        ("visibility", "secret", "public or private"),
    ):
        bad = client.post("/admin/lists/weekly", data=dict(form, **{field: value}))
        assert bad.status_code == 400, field
        assert 'id="edit-error"' in bad.text and message in bad.text, field
        if field != "visibility":
            assert re.search(rf'id="edit-{field}"[^>]*aria-invalid="true"', bad.text), field
        assert "Line\nbreak" in bad.text or field != "name"  # the form keeps what was typed
    assert admin.snapshot() == before

    assert client.post("/admin/lists/weekly", data=dict(form, csrf_token="wrong")).status_code == 403
    assert 'id="edit-list"' not in editor.get("/admin/lists/weekly").text
    assert editor.post("/admin/lists/weekly", data=dict(form, csrf_token=token(editor))).status_code == 403
    assert client.post("/admin/lists/nope", data=form).status_code == 404
    assert admin.snapshot() == before
