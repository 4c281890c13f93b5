"""Mail in a stored layout, through the real path: the CLI, a Celery worker, Redis, the aiosmtpd capture.

A list's template lays out its issues; an issue's own template wins over the list's; each copy is
still personalised (name, unsubscribe link); and a send keeps the layout it started with when the
template is changed before the worker delivers it. On SQLite and PostgreSQL.
"""

from __future__ import annotations

from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

import pytest

from tests.test_email_templates import issue_text, pair

pytestmark = [pytest.mark.redis, pytest.mark.slow]


def parts(message: EmailMessage) -> tuple[str, str]:
    html = message.get_body(("html",))
    text = message.get_body(("plain",))
    assert html is not None and text is not None
    return html.get_content().replace("\r\n", "\n"), text.get_content().replace("\r\n", "\n")


def write_pair(folder: Path, name: str, mark: str) -> tuple[str, str]:
    html, text = pair(mark)
    (folder / f"{name}.html").write_text(html, encoding="utf-8")
    (folder / f"{name}.txt").write_text(text, encoding="utf-8")
    return str(folder / f"{name}.html"), str(folder / f"{name}.txt")


def test_a_list_with_its_own_template_gets_mail_in_it_and_an_issue_can_choose_another(newsroom_any_db, tmp_path):
    room = newsroom_any_db
    readers = room.setup_list(3)
    html, text = write_pair(tmp_path, "brand", "BRAND-BEFORE")
    room.cli("templates", "create", "brand", "--html", html, "--text", text)
    html, text = write_pair(tmp_path, "special", "SPECIAL")
    room.cli("templates", "create", "special", "--html", html, "--text", text)
    room.cli("lists", "update", "weekly", "--template", "brand")
    (tmp_path / "plain.md").write_text(issue_text())
    (tmp_path / "own.md").write_text(issue_text("special"))
    plain = room.cli("issues", "create", "weekly", str(tmp_path / "plain.md")).stdout.split()[-1]
    own = room.cli("issues", "create", "weekly", str(tmp_path / "own.md")).stdout.split()[-1]

    # The send is made (rendered and frozen) before any worker runs; the template changes after.
    first = room.send(plain)
    html, text = write_pair(tmp_path, "brand-after", "BRAND-AFTER")
    room.cli("templates", "update", "brand", "--html", html, "--text", text)
    room.start_worker(concurrency=2)
    assert room.wait_status(first)["sent"] == 3
    room.wait_received(3)
    for index, address in enumerate(readers):
        message = room.parsed(address)
        body_html, body_text = parts(message)
        assert '<p class="mast" style="margin:0 0 12px 0">BRAND-BEFORE Info War Weekly</p>' in body_html
        assert body_text.startswith("BRAND-BEFORE Info War Weekly\n")
        assert "AFTER" not in body_html + body_text
        assert f"Hello Reader Ünï {index}," in body_html and f"Hello Reader Ünï {index}," in body_text
        # The layout's own unsubscribe link is this reader's, the same as the List-Unsubscribe header's.
        unsubscribe = message["List-Unsubscribe"].split("<")[1].split(">")[0]
        assert unsubscribe.startswith("https://news.example.org/unsubscribe/")
        assert f'<a href="{unsubscribe}">Leave</a>' in body_html and f"Leave: {unsubscribe}" in body_text
        assert "1 Example Street, Example City" in body_html

    # The issue that names its own template gets it; the list's (now changed) does not apply to it.
    second = room.send(own)
    assert room.wait_status(second)["sent"] == 3
    room.wait_received(6)
    mails = [m for m in room.capture.messages if readers[0] in m.rcpt_tos]
    assert len(mails) == 2
    body_html, body_text = parts(message_from_bytes(mails[1].data, policy=policy.default))
    assert (
        '<p class="mast" style="margin:0 0 12px 0">SPECIAL Info War Weekly</p>' in body_html
        and body_text.startswith("SPECIAL Info War")
    )
    assert "BRAND" not in body_html + body_text

    # Now deleting either is refused: the list uses brand; special's issue is sent, so special goes.
    refused = room.cli("templates", "rm", "brand", check=False)
    assert refused.returncode == 1 and "in use by the list weekly" in refused.stderr
    assert room.cli("templates", "rm", "special").stdout.strip() == "Deleted template special."
