"""/api/issues over HTTP: create (JSON or an issue file), update, check, preview, test-send."""

from __future__ import annotations

from email import message_from_bytes, policy

from tests.apikit import (
    api,  # noqa: F401  (fixture)
    assert_error,
)
from tests.textkit import body_text


def test_create_an_issue_from_fields_and_from_an_issue_file(api):  # noqa: F811
    api.make_list()
    fields = api.post(
        "/api/issues",
        role="editor",
        expect=201,
        json={"list": "weekly", "subject": "  Fields  ", "preheader": "Pre", "body_markdown": "# Hi\n\nText."},
    ).json()
    assert fields["list"] == "weekly" and fields["status"] == "draft"
    assert (fields["subject"], fields["preheader"], fields["template"]) == ("Fields", "Pre", "issue")
    assert fields["body_markdown"] == "# Hi\n\nText." and fields["problems"] == []

    from_file = api.make_issue()
    assert from_file["subject"] == "This Week: the API"
    assert from_file["preheader"] == "Everything the CLI does, over HTTP."
    assert from_file["body_markdown"].startswith("# Hello *|NAME:there|*")

    listed = api.get("/api/issues", role="editor", expect=200).json()["items"]
    assert [i["id"] for i in listed] == [from_file["id"], fields["id"]]  # newest first
    assert api.get("/api/issues", params={"list": "weekly"}, expect=200).json()["items"] == listed
    assert_error(api.get("/api/issues", params={"list": "nope"}), 404)


def test_warnings_are_kept_and_errors_refused_naming_where(api):  # noqa: F811
    api.make_list()
    warned = api.post(
        "/api/issues",
        expect=201,
        json={"list": "weekly", "subject": "Pics", "body_markdown": "Intro\n\n![](https://example.org/a.png)"},
    ).json()
    assert [p["level"] for p in warned["problems"]] == ["warning"] and "alt text" in warned["problems"][0]["message"]
    shown = api.get(f"/api/issues/{warned['id']}", expect=200).json()
    assert [(p["level"], p["where"]) for p in shown["problems"]] == [("warning", "body_markdown:3")]

    relative = {"list": "weekly", "subject": "Bad", "body_markdown": "Line one\n\nSee [here](/page)."}
    assert_error(api.post("/api/issues", json=relative), 400, field="body_markdown:3", says="relative link")
    bad_file = "---\nsubject: Ok\n---\nFirst\n\n[x](page.html)\n"
    assert_error(
        api.post("/api/issues/markdown", json={"list": "weekly", "markdown": bad_file}),
        400,
        field="markdown:6",
        says="relative link",
    )
    assert_error(
        api.post("/api/issues/markdown", json={"list": "weekly", "markdown": "---\nsubjet: typo\n---\nx"}),
        400,
        field="markdown:2",
        says="unknown front matter key",
    )
    assert_error(
        api.post("/api/issues/markdown", json={"list": "weekly", "markdown": "no front matter"}),
        400,
        field="markdown:1",
    )
    assert_error(
        api.post("/api/issues", json={**relative, "subject": "Two\nlines", "body_markdown": "x"}), 400, field="subject"
    )
    assert_error(
        api.post("/api/issues", json={**relative, "subject": "   ", "body_markdown": "x"}), 400, field="subject"
    )
    assert_error(api.post("/api/issues", json={**relative, "template": "../../etc/passwd"}), 422, field="template")
    assert_error(
        api.post("/api/issues", json={**relative, "template": "nosuch", "body_markdown": "x"}), 400, says="nosuch"
    )
    assert_error(api.post("/api/issues", json={**relative, "list": "nope", "body_markdown": "x"}), 404)
    assert_error(api.post("/api/issues", json={"list": "weekly", "subject": "No body"}), 422, field="body_markdown")
    assert_error(api.post("/api/issues", json={**relative, "body_markdown": "x", "extra": 1}), 422, field="extra")
    assert [i["id"] for i in api.get("/api/issues", expect=200).json()["items"]] == [
        warned["id"]
    ]  # nothing else stored


def test_update_replaces_the_content_or_changes_nothing(api):  # noqa: F811
    api.make_list()
    issue = api.make_issue()
    path = f"/api/issues/{issue['id']}"
    updated = api.put(
        path, json={"subject": "New subject", "body_markdown": "New body."}, role="editor", expect=200
    ).json()
    assert (updated["subject"], updated["preheader"], updated["body_markdown"]) == ("New subject", "", "New body.")
    assert updated["updated_at"] >= issue["updated_at"]

    from_file = api.put(
        f"{path}/markdown", json={"markdown": "---\nsubject: From a file\n---\nBody."}, expect=200
    ).json()
    assert from_file["subject"] == "From a file" and from_file["body_markdown"] == "Body."

    assert_error(
        api.put(path, json={"subject": "Broken", "body_markdown": "[x](nope.html)"}),
        400,
        field="body_markdown:1",
        says="nope.html",
    )
    assert api.get(path, expect=200).json()["subject"] == "From a file"  # unchanged by the refused update
    assert_error(
        api.put("/api/issues/999999", json={"subject": "S", "body_markdown": "B"}), 404, says="no issue 999999"
    )
    assert_error(api.put(path, json={"list": "weekly", "subject": "S", "body_markdown": "B"}), 422, field="list")


def test_preview_returns_each_part_for_a_sample_reader(api):  # noqa: F811
    api.make_list()
    issue = api.make_issue()
    html = api.get(f"/api/issues/{issue['id']}/preview", role="editor", expect=200)
    assert html.headers["content-type"] == "text/html; charset=utf-8"
    assert "<html" in html.text and "Hello Ann Example" in html.text and "https://example.org/a" in html.text
    text = api.get(f"/api/issues/{issue['id']}/preview", params={"format": "text"}, expect=200)
    assert text.headers["content-type"] == "text/plain; charset=utf-8"
    assert "Hello Ann Example" in text.text and "<html" not in text.text and "1 Example Street" in text.text
    assert_error(api.get(f"/api/issues/{issue['id']}/preview", params={"format": "pdf"}), 422, field="query.format")
    assert_error(api.get("/api/issues/999999/preview"), 404)


def test_test_send_mails_one_marked_copy(api):  # noqa: F811
    api.make_list()
    issue = api.make_issue()
    answer = api.post(f"/api/issues/{issue['id']}/test-send", json={"to": "Me@Example.org"}, role="editor", expect=200)
    [sent] = answer.json()["copies"]
    assert sent["to"] == "me@example.org" and sent["sent"] and sent["smtp_code"] == 250 and sent["message_id"]
    [captured] = api.capture.messages
    assert list(captured.rcpt_tos) == ["me@example.org"]
    mail = message_from_bytes(captured.data, policy=policy.default)
    assert mail["Subject"] == "[TEST] This Week: the API"
    assert mail["Message-ID"] == sent["message_id"]
    assert "Hello there" in body_text(mail)  # the test address has no name
    assert api.get("/api/sends", expect=200).json()["items"] == []  # not a send, nothing logged

    assert_error(api.post(f"/api/issues/{issue['id']}/test-send", json={"to": "nobody"}), 400, field="to")
    assert_error(api.post("/api/issues/999999/test-send", json={"to": "me@example.org"}), 404)
    api.capture.replies["refused@example.org"] = "550 5.1.1 No such user"
    refused = api.post(f"/api/issues/{issue['id']}/test-send", json={"to": "refused@example.org"})
    assert_error(refused, 502, says="550")
    assert len(api.capture.messages) == 1


def test_test_send_takes_a_list_of_addresses_and_reports_each(api):  # noqa: F811
    api.make_list()
    issue = api.make_issue()
    url = f"/api/issues/{issue['id']}/test-send"
    api.capture.replies["refused@example.org"] = "550 5.1.1 No such user"
    before = api.capture.connections
    answer = api.post(
        url,
        json={"to": ["a@example.org", "Refused@example.org", "b@example.org", "A@example.org"]},
        role="editor",
        expect=200,
    ).json()
    assert [(c["to"], c["sent"], c["smtp_code"]) for c in answer["copies"]] == [
        ("a@example.org", True, 250),
        ("refused@example.org", False, 550),
        ("b@example.org", True, 250),
    ]
    assert "No such user" in answer["copies"][1]["smtp_reply"]
    assert [m.rcpt_tos for m in api.capture.messages] == [("a@example.org",), ("b@example.org",)]
    assert api.capture.connections - before == 1  # one SMTP connection for all of them

    # A bad address anywhere in the list: 400 naming it, and nothing is sent.
    bad = assert_error(api.post(url, json={"to": ["c@example.org", "nobody"]}), 400, field="to", says="'nobody'")
    assert "nothing was sent" in bad["message"]
    assert_error(
        api.post(url, json={"to": [f"t{i}@example.org" for i in range(11)]}), 422, field="to", says="at most 10"
    )
    assert_error(api.post(url, json={"to": []}), 422, field="to")
    assert_error(api.post(url, json={"to": ["c@example.org", 7]}), 422, field="to[1]")
    assert len(api.capture.messages) == 2
    # Every address refused: 502 naming each.
    api.capture.replies["gone@example.org"] = "550 5.1.1 Gone away"
    assert_error(
        api.post(url, json={"to": ["refused@example.org", "gone@example.org"]}), 502, says="gone@example.org: "
    )


def test_test_send_is_signed_and_bounces_to_the_return_path_when_configured(api, tmp_path):  # noqa: F811
    import dkim
    from fastapi.testclient import TestClient

    from newsletter.config import Settings
    from newsletter.http.app import create_app
    from newsletter.mail import dkim_keys

    key = dkim_keys.generate_private_key()
    key_file = tmp_path / "dkim.pem"
    dkim_keys.write_private_key(key_file, key)
    settings = Settings.from_environ(
        {
            **api.environ,
            "NEWSLETTER_DKIM_DOMAIN": "example.org",
            "NEWSLETTER_DKIM_SELECTOR": "nl1",
            "NEWSLETTER_DKIM_PRIVATE_KEY_FILE": str(key_file),
            "NEWSLETTER_RETURN_PATH": "bounces@example.org",
        }
    )
    api.make_list()
    issue = api.make_issue()
    with TestClient(create_app(settings, sessions=api.sessions)) as client:
        sent = client.post(
            f"/api/issues/{issue['id']}/test-send", headers=api.headers("editor"), json={"to": "me@example.org"}
        )
    assert sent.status_code == 200, sent.text
    [captured] = api.capture.messages
    assert captured.mail_from == "bounces@example.org"
    record = dkim_keys.record_value(key)

    def dns(name: bytes, timeout: int = 5) -> bytes | None:
        return record.encode() if name == b"nl1._domainkey.example.org." else None

    assert dkim.verify(captured.data, dnsfunc=dns)


def test_mark_ready_needs_a_weekly_slot(api):  # noqa: F811
    api.make_list()
    issue = api.make_issue()
    assert_error(api.post(f"/api/issues/{issue['id']}/ready"), 409, says="no weekly slot")
    api.patch("/api/lists/weekly", json={"slot": {"weekday": "monday", "time": "08:00", "timezone": "UTC"}}, expect=200)
    ready = api.post(f"/api/issues/{issue['id']}/ready", role="editor", expect=200).json()
    assert ready["status"] == "ready"
    assert api.get(f"/api/issues/{issue['id']}", expect=200).json()["status"] == "ready"


def test_odd_input_is_refused_cleanly(api):  # noqa: F811
    api.make_list()
    base = {"list": "weekly", "subject": "S", "body_markdown": "B"}
    for bad_id in ("0", str(2**63), str(10**40), "-5", "1.5", "%F0%9F%91%8D"):
        assert_error(api.get(f"/api/issues/{bad_id}"), 422, field="path.issue_id")
    assert_error(api.post("/api/issues", json={**base, "subject": "a\x00b"}), 422, field="subject")
    assert_error(
        api.post(
            "/api/issues",
            content='{"list": "weekly", "subject": "\\ud800", "body_markdown": "B"}',
            headers={"Content-Type": "application/json"},
        ),
        422,
        field="subject",
    )
    assert_error(api.post("/api/issues", json={**base, "subject": "x" * 999}), 422, field="subject")
    assert_error(api.post("/api/issues", json={**base, "list": 12}), 422, field="list")
    assert_error(api.post("/api/issues", json=[1, 2]), 422)
    assert_error(api.post("/api/issues", content="{not json", headers={"Content-Type": "application/json"}), 422)
    assert_error(api.post("/api/issues", json={**base, "body_markdown": "x" * 200_001}), 422, field="body_markdown")
    deep = "---\n" + "subject: " + "[" * 5000 + "\n---\nBody"
    assert_error(
        api.post("/api/issues/markdown", json={"list": "weekly", "markdown": deep}),
        400,
        field="markdown:2",
        says="nests too deeply",
    )
    alias = "---\nsubject: &a [*a, *a]\n---\nBody"
    assert_error(api.post("/api/issues/markdown", json={"list": "weekly", "markdown": alias}), 400, field="markdown:2")
    tagged = "---\nsubject: !!python/object/apply:os.system [echo]\n---\nBody"
    assert_error(api.post("/api/issues/markdown", json={"list": "weekly", "markdown": tagged}), 400, field="markdown:2")
    odd = api.post(
        "/api/issues",
        expect=201,
        json={**base, "subject": "Ünïcødé 👍 \u202e RTL \u200b", "body_markdown": "ℌ𝔢𝔩𝔩𝔬 \ufeff"},
    ).json()
    assert odd["subject"] == "Ünïcødé 👍 \u202e RTL \u200b"
