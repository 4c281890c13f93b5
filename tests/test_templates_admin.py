"""The template pages of the admin UI over HTTP: list, copy, create, edit, preview, delete, and the
layout of a list and of an issue; CSRF and roles. On SQLite and PostgreSQL (see test_admin_ui.py)."""

from __future__ import annotations

import html as html_lib
import re

from sqlalchemy import select

from newsletter.store.models import EmailTemplate, Issue, MailingList
from tests.test_admin_ui import admin, make_issue, token  # noqa: F401
from tests.test_email_templates import pair


def form_value(page: str, field: str) -> str:
    match = re.search(rf'<textarea id="template-{field}" name="{field}"[^>]*>(.*?)</textarea>', page, re.S)
    assert match, f"no {field} textarea"
    return html_lib.unescape(match.group(1))


def test_an_admin_copies_the_shipped_layout_creates_edits_and_deletes_a_template(admin):  # noqa: F811
    client = admin.logged_in()
    listing = client.get("/admin/templates")
    assert listing.status_code == 200 and 'href="/admin/templates/issue"' in listing.text
    assert "shipped, read-only" in listing.text and 'id="new-template"' in listing.text
    assert 'href="/admin/templates"' in listing.text  # in the navigation

    # The shipped layout is shown read-only, with a copy link; the copy prefills a new template.
    shipped = client.get("/admin/templates/issue")
    assert shipped.status_code == 200 and "readonly" in shipped.text and 'id="template-save"' not in shipped.text
    assert 'href="/admin/templates/new?copy=issue"' in shipped.text
    new = client.get("/admin/templates/new?copy=issue")
    assert new.status_code == 200 and "Started from a copy of issue" in new.text
    copied_html, copied_text = form_value(new.text, "html"), form_value(new.text, "text")
    assert "{{ body_html }}" in copied_html and "{{ body_text }}" in copied_text

    # A syntax error is refused with its part and line; nothing stored; the sources stay in the form.
    broken = copied_html.replace("{{ list_name }}</a>", "{{ list_name }</a>")
    line = next(i for i, row in enumerate(broken.splitlines(), 1) if "{{ list_name }</a>" in row)
    answer = client.post(
        "/admin/templates/new", data={"csrf_token": token(client), "name": "house", "html": broken, "text": copied_text}
    )
    assert answer.status_code == 400
    assert (
        f'data-part="html" data-line="{line}">HTML, line {line}</a>: template syntax error: unexpected' in answer.text
    )
    assert form_value(answer.text, "html") == broken
    assert admin.one(select(EmailTemplate.id)) is None
    taken = client.post(
        "/admin/templates/new",
        data={"csrf_token": token(client), "name": "issue", "html": copied_html, "text": copied_text},
    )
    assert taken.status_code == 400 and "the shipped layout&#39;s name" in taken.text

    # Stored; then edited (the page shows who changed it).
    created = client.post(
        "/admin/templates/new",
        data={"csrf_token": token(client), "name": "house", "html": copied_html, "text": copied_text},
    )
    assert created.status_code == 303 and created.headers["location"] == "/admin/templates/house?done=created"
    mine_html, mine_text = pair("MINE")
    saved = client.post(
        "/admin/templates/house", data={"csrf_token": token(client), "html": mine_html, "text": mine_text}
    )
    assert saved.status_code == 303 and saved.headers["location"] == "/admin/templates/house?done=saved"
    page = client.get("/admin/templates/house")
    assert "by admin:ann" in page.text and form_value(page.text, "html") == mine_html
    refused = client.post(
        "/admin/templates/house",
        data={"csrf_token": token(client), "html": mine_html.replace("{{ body_html }}", ""), "text": mine_text},
    )
    assert refused.status_code == 400 and "the HTML template does not show the issue" in refused.text
    assert admin.one(select(EmailTemplate.html).where(EmailTemplate.name == "house")) == mine_html

    # The list's form chooses it; the issue page offers it; an issue chooses its own.
    list_page = client.get("/admin/lists/weekly")
    assert '<option value="house">house</option>' in list_page.text
    form = {
        "csrf_token": token(client),
        "name": "The Weekly",
        "description": "",
        "from_name": "Weekly Desk",
        "from_email": "news@example.org",
        "reply_to": "",
        "visibility": "public",
        "tracking": "off",
        "template": "house",
    }
    assert client.post("/admin/lists/weekly", data=form).status_code == 303
    assert admin.one(select(MailingList.template).where(MailingList.slug == "weekly")) == "house"
    assert "MINE The Weekly" in client.get(f"/admin/issues/{make_issue(admin)}/preview").text
    daily = make_issue(admin, "daily")
    issue_page = client.get(f"/admin/issues/{daily}")
    assert '<option value="issue" selected>The list&#39;s: issue (shipped)</option>' in issue_page.text
    chosen = client.post(f"/admin/issues/{daily}/template", data={"csrf_token": token(client), "template": "house"})
    assert chosen.status_code == 303 and chosen.headers["location"] == f"/admin/issues/{daily}?done=layout-chosen"
    assert admin.one(select(Issue.template).where(Issue.id == daily)) == "house"
    assert "MINE The Daily" in client.get(f"/admin/issues/{daily}/preview").text
    missing = client.post(f"/admin/issues/{daily}/template", data={"csrf_token": token(client), "template": "nope"})
    assert missing.status_code == 400 and "cannot use the layout nope" in missing.text
    assert admin.one(select(Issue.template).where(Issue.id == daily)) == "house"

    # In use: refused, naming the users; the shipped one never.
    in_use = client.post("/admin/templates/house/delete", data={"csrf_token": token(client)})
    assert in_use.status_code == 409
    assert f"in use by the list weekly and the issue {daily} (" in html_lib.unescape(in_use.text)
    assert client.post("/admin/templates/issue/delete", data={"csrf_token": token(client)}).status_code == 409
    client.post(f"/admin/issues/{daily}/template", data={"csrf_token": token(client), "template": "issue"})
    assert client.post("/admin/lists/weekly", data=dict(form, template="issue")).status_code == 303
    deleted = client.post("/admin/templates/house/delete", data={"csrf_token": token(client)})
    assert deleted.status_code == 303 and deleted.headers["location"] == "/admin/templates?done=template-deleted"
    assert admin.one(select(EmailTemplate.id)) is None


def test_the_live_check_and_preview_answer_for_the_sources_given(admin):  # noqa: F811
    client = admin.logged_in("eddie")  # editors may look
    html, text = pair("LIVE")
    check = client.post("/admin/templates/check", data={"csrf_token": token(client), "html": html, "text": text})
    assert check.status_code == 200 and check.json()["ok"] is True and check.json()["problems"] == []
    assert "LIVE The Sample List" in check.json()["text"] and "Hello Ann Example," in check.json()["text"]
    preview = client.post("/admin/templates/preview", data={"csrf_token": token(client), "html": html, "text": text})
    assert preview.status_code == 200 and "LIVE The Sample List" in preview.text
    assert '<div class="frame" style="border:3px solid #123456; padding:8px">' in preview.text  # inlined
    assert "sandbox" in preview.headers["content-security-policy"]
    assert "https://news.example.org/unsubscribe/preview" in preview.text
    broken = html.replace("{{ body_html }}", "{{ body_html.__class__ }}")
    check = client.post("/admin/templates/check", data={"csrf_token": token(client), "html": broken, "text": text})
    assert check.json()["ok"] is False
    assert check.json()["problems"][0] == {
        "level": "error",
        "message": "template error: access to attribute '__class__' of 'Markup' object is unsafe.",
        "part": "html",
        "line": 10,
    }
    preview = client.post("/admin/templates/preview", data={"csrf_token": token(client), "html": broken, "text": text})
    assert preview.status_code == 400 and "HTML, line 10: template error: access to attribute" in html_lib.unescape(
        preview.text
    )


def test_template_forms_need_the_csrf_token_and_the_templates_role(admin):  # noqa: F811
    html, text = pair("X")
    client = admin.logged_in()
    editor = admin.logged_in("eddie")
    before = admin.snapshot()
    for path, data in (
        ("/admin/templates/new", {"name": "x", "html": html, "text": text}),
        ("/admin/templates/check", {"html": html, "text": text}),
        ("/admin/templates/preview", {"html": html, "text": text}),
        ("/admin/templates/issue/delete", {}),
    ):
        for csrf in (None, "wrong"):
            answer = client.post(path, data=dict(data, **({"csrf_token": csrf} if csrf else {})))
            assert answer.status_code == 403 and "did not come from this site" in answer.text, path
    assert editor.get("/admin/templates").status_code == 200
    page = editor.get("/admin/templates/issue")
    assert page.status_code == 200 and 'id="copy-template"' not in page.text
    assert editor.get("/admin/templates/new").status_code == 403
    created = editor.post(
        "/admin/templates/new", data={"csrf_token": token(editor), "name": "x", "html": html, "text": text}
    )
    assert created.status_code == 403 and "it needs the admin role" in created.text
    assert admin.snapshot() == before and admin.one(select(EmailTemplate.id)) is None
