"""Header injection: a line break or other control character in any value that reaches a mail header
is refused where it comes in (an editor's issue, a list's settings, a subscriber's name from the CLI,
an import or the web form), with an error naming the field, and never reaches the wire.
"""

from __future__ import annotations

import re
from email.header import decode_header, make_header
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, update

from newsletter.config import Settings
from newsletter.content.issue_files import IssueSource, parse_issue_text
from newsletter.content.issues import RenderSettings, create_issue
from newsletter.errors import ConfigError, InvalidInput, RenderError
from newsletter.mail.messages import CompiledMessage, MessageHeaders
from newsletter.store import db
from newsletter.store.models import Issue, MailingList, Send, Subscriber
from subscribers import consent
from subscribers.importing import RejectedRow, import_csv
from subscribers.lists import create_list
from subscribers.subscriptions import add_subscriber
from tests.test_messages import HEADERS, RENDERED, recipient
from tests.test_web import Site, add, site  # noqa: F401 - the web app fixture

#: Each would end a header line, start a new one, or hide in one: CR LF, a lone LF or CR, NUL, tab,
#: ESC, DEL, NEL (C1), and the Unicode line and paragraph separators.
BAD = [
    "\r\nBcc: victim@example.com",
    "\nBcc: victim@example.com",
    "\rX",
    "\x00",
    "\t",
    "\x1b[31m",
    "\x7f",
    "\x85",
    "\u2028",
    "\u2029",
]
IDS = ["CRLF", "LF", "CR", "NUL", "TAB", "ESC", "DEL", "NEL", "LS", "PS"]


# --- the message itself: the last line of defence --------------------------------------------------


@pytest.mark.parametrize("bad", BAD, ids=IDS)
@pytest.mark.parametrize(
    "field, where",
    [
        ("subject", "subject"),
        ("from_name", "from name"),
        ("from_email", "from address"),
        ("reply_to", "reply-to"),
        ("list_name", "list name"),
        ("list_slug", "list slug"),
        ("feedback_id", "Feedback-ID"),
    ],
)
def test_a_message_with_an_unsafe_header_value_is_never_built(field, where, bad):
    headers = MessageHeaders(**{**HEADERS.__dict__, field: f"Hello{bad}World"})
    with pytest.raises(InvalidInput, match="line break or control character") as caught:
        CompiledMessage(headers, RENDERED.html, RENDERED.text)
    assert caught.value.where == where


def test_a_stored_name_with_a_line_break_stays_inside_an_encoded_word():
    # Input never lets such a name in; one stored anyway must not add a header.
    message = CompiledMessage(HEADERS, RENDERED.html, RENDERED.text)
    _, data = message.build(recipient("Eve\r\nBcc: victim@example.com"))
    lines = data.split(b"\r\n\r\n", 1)[0].decode("ascii").split("\r\n")
    assert not any(line.lower().startswith("bcc:") for line in lines)
    fields = [line for line in lines if not line.startswith((" ", "\t"))]
    assert sum(f.startswith("To: ") for f in fields) == 1
    to = "\r\n".join(lines[next(n for n, line in enumerate(lines) if line.startswith("To: ")) :]).split("\r\nDate:")[0]
    assert re.fullmatch(r"To: =\?utf-8\?b\?[A-Za-z0-9+/=]+\?= <ann@example\.com>", to)
    assert str(make_header(decode_header(to[4:].rsplit(" <", 1)[0]))) == "Eve\r\nBcc: victim@example.com"


# --- an editor's issue --------------------------------------------------------------------------

YAML_ESCAPES = {
    "CRLF": r"\r\nBcc: victim@example.com",
    "LF": r"\nBcc: x",
    "NUL": r"\0",
    "ESC": r"\e[31m",
    "TAB": r"\t",
    "NEL": r"\N",
    "LS": r"\L",
    "PS": r"\P",
    "DEL": r"\x7f",
}


@pytest.mark.parametrize("key", ["subject", "preheader"])
@pytest.mark.parametrize("escape", list(YAML_ESCAPES.values()), ids=list(YAML_ESCAPES))
def test_issue_files_refuse_control_characters_in_subject_and_preheader(key, escape):
    front = {"subject": '"A subject"', "preheader": '"A preheader"'}
    front[key] = f'"Hello{escape}World"'
    text = f"---\nsubject: {front['subject']}\npreheader: {front['preheader']}\n---\nBody.\n"
    with pytest.raises(InvalidInput, match=f"{key} must be a single line without control characters") as caught:
        parse_issue_text(text, source="issue.md")
    assert caught.value.where == f"issue.md:{2 if key == 'subject' else 3}"


@pytest.mark.parametrize("bad", BAD, ids=IDS)
def test_issues_made_without_a_file_are_refused_too(sessions, bad):
    # The admin API builds an IssueSource from JSON: rendering checks the fields again.
    settings = RenderSettings.create(base_url="https://news.example.org", postal_address="", user_template_dir=None)
    with db.transaction(sessions) as s:
        create_list(s, "weekly", name="Weekly", from_email="news@example.org")
    for field in ("subject", "preheader"):
        values = {"subject": "Fine", "preheader": "", field: f"Hello{bad}World"}
        source = IssueSource(
            subject=values["subject"],
            preheader=values["preheader"],
            template="issue",
            body_markdown="Body.",
            source="api",
        )
        with pytest.raises(RenderError, match=f"{field} must be a single line"):
            with db.transaction(sessions) as s:
                create_issue(s, "weekly", source, settings)
    with sessions() as s:
        assert s.scalar(select(func.count()).select_from(Issue)) == 0


def test_issue_create_update_and_a_rendered_subject_through_the_cli(cli, tmp_path):
    cli("lists", "create", "weekly", "--name", "Weekly", "--from-email", "news@example.org")
    good, bad = tmp_path / "good.md", tmp_path / "bad.md"
    good.write_text('---\nsubject: "Fine"\n---\nBody.\n')
    bad.write_text('---\nsubject: "Fine"\npreheader: "Hi\\r\\nBcc: victim@example.com"\n---\nBody.\n')
    created = cli("issues", "create", "weekly", str(bad), check=False)
    assert created.returncode == 1
    assert f"{bad}:3: preheader must be a single line without control characters" in created.stderr
    issue_id = cli("issues", "create", "weekly", str(good)).stdout.strip().splitlines()[-1]
    updated = cli("issues", "update", issue_id, str(bad), check=False)
    assert updated.returncode == 1 and f"{bad}:3: preheader must be a single line" in updated.stderr
    assert "Fine" in cli("issues", "show", issue_id).stdout
    # A template that renders the subject with a control character in it (a theme's subject template).
    templates = tmp_path / "templates"
    templates.mkdir()
    (templates / "issue.subject.txt").write_text("{{ subject }}\x07 ding")
    themed = cli.__class__(env={**cli.env, "NEWSLETTER_TEMPLATE_DIR": str(templates)}, cwd=cli.cwd)
    refused = themed("issues", "create", "weekly", str(good), check=False)
    assert refused.returncode == 1 and "the rendered subject must be a single line" in refused.stderr


# --- a list's settings ----------------------------------------------------------------------------


@pytest.mark.parametrize("bad", BAD, ids=IDS)
def test_list_settings_refuse_control_characters(sessions, bad):
    fields = {"name": "--name", "from_name": "--from-name", "from_email": "--from-email", "reply_to": "--reply-to"}
    for field, where in fields.items():
        values: dict[str, Any] = {
            "name": "Weekly",
            "from_email": "news@example.org",
            "from_name": "Desk",
            "reply_to": "desk@example.org",
        }
        values[field] = f"news{bad}@example.org" if "email" in field or "reply" in field else f"Weekly{bad}Desk"
        with pytest.raises(InvalidInput) as caught:
            with db.transaction(sessions) as s:
                create_list(s, "weekly", **values)
        assert caught.value.where == where, field
    with sessions() as s:
        assert s.scalar(select(func.count()).select_from(MailingList)) == 0


def test_list_create_through_the_cli_names_the_option(cli):
    for option in ("--name", "--from-name", "--reply-to", "--from-email"):
        args = {
            "--name": "Weekly",
            "--from-email": "news@example.org",
            "--from-name": "Desk",
            "--reply-to": "r@example.org",
        }
        args[option] = (
            "Weekly\r\nBcc: victim@example.com" if "name" in option else "news@example.org\r\nBcc: v@example.com"
        )
        result = cli("lists", "create", "weekly", *[x for pair in args.items() for x in pair], check=False)
        assert result.returncode == 1 and f"error: {option}: " in result.stderr, result.stderr
    assert "weekly" not in cli("lists", "ls").stdout


def test_a_list_changed_behind_the_apps_back_cannot_be_sent(newsroom):
    """A From name made unsafe directly in the database: the send stores nothing and mails no one."""
    room = newsroom
    room.setup_list(3)
    issue_id = room.create_issue()
    engine = db.make_engine(room.cli.env["NEWSLETTER_DATABASE_URL"])
    with engine.begin() as conn:
        conn.execute(update(MailingList).values(from_name="Desk\r\nBcc: victim@example.com"))
    result = room.cli("send", issue_id, check=False)
    assert result.returncode == 1 and "from name: from name contains a line break or control character" in result.stderr
    with engine.connect() as conn:
        assert conn.scalar(select(func.count()).select_from(Send)) == 0
    engine.dispose()
    assert room.capture.messages == []


# --- subscribers' names: CLI, import, web form, preferences ----------------------------------------


@pytest.mark.parametrize("bad", BAD, ids=IDS)
def test_subscriber_names_refuse_control_characters(sessions, tmp_path, bad):
    with db.transaction(sessions) as s:
        create_list(s, "weekly", name="Weekly", from_email="news@example.org")
    with pytest.raises(InvalidInput, match="name contains a control character"):
        with db.transaction(sessions) as s:
            add_subscriber(s, "weekly", "ann@example.com", name=f"Ann{bad}Lee")
    with pytest.raises(InvalidInput, match="name contains a control character") as caught:
        with db.transaction(sessions) as s:
            consent.request_subscription(s, "weekly", "bob@example.com", name=f"Bob{bad}Lee")
    assert caught.value.where == "name"
    path = tmp_path / "people.csv"
    path.write_text(
        'email,name\ncat@example.com,"Cat' + bad + 'Lee"\ndan@example.com,Dan\n', encoding="utf-8", newline=""
    )
    rejected: list[RejectedRow] = []
    with db.transaction(sessions) as s:
        summary = import_csv(s, "weekly", path, on_reject=rejected.append)
    assert summary.imported == 1 and len(rejected) == 1
    assert rejected[0].line == 2 and "name contains a control character" in rejected[0].reason
    with sessions() as s:
        assert s.scalars(select(Subscriber.email)).all() == ["dan@example.com"]


def test_subscriber_add_and_import_through_the_cli(cli, tmp_path):
    cli("lists", "create", "weekly", "--name", "Weekly", "--from-email", "news@example.org")
    added = cli(
        "subscribers", "add", "weekly", "ann@example.com", "--name", "Ann\r\nBcc: victim@example.com", check=False
    )
    assert added.returncode == 1 and "name contains a control character" in added.stderr
    path = tmp_path / "people.csv"
    path.write_text('email,name\nbob@example.com,"Bob\r\nBcc: victim@example.com"\ncat@example.com,Cat\n', newline="")
    imported = cli("subscribers", "import", "weekly", str(path))
    assert f"{path}:2: rejected: name contains a control character" in imported.stderr
    listed = cli("subscribers", "ls", "weekly").stdout
    assert "cat@example.com" in listed and "bob@example.com" not in listed and "ann@example.com" not in listed


def test_the_web_form_and_preferences_refuse_such_names(site: Site):  # noqa: F811
    client = site.client()
    for bad in ("Eve\r\nBcc: victim@example.com", "Eve\x85", "Eve\u2028"):
        answer = client.post("/subscribe/weekly", data={"email": "eve@example.com", "name": bad})
        assert answer.status_code == 400 and "Please check your name" in answer.text
    assert site.capture.messages == []
    with site.sessions() as s:
        assert s.scalar(select(func.count()).select_from(Subscriber)) == 0
    add(site, "ann@example.com", name="Ann")
    token = site.token("ann@example.com", "preferences")
    renamed = client.post(f"/preferences/{token}/name", data={"name": "Ann\r\nBcc: victim@example.com"})
    assert renamed.status_code == 400 and "Please check your name" in renamed.text
    with site.sessions() as s:
        assert s.scalar(select(Subscriber.name)) == "Ann"


# --- settings ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        "https://news.example.org\r\nBcc: victim@example.com",
        "https://news.example.org/\tx",
        "https://news.example.org/a b",
    ],
)
def test_a_base_url_with_a_line_break_or_space_is_a_configuration_error(tmp_path: Path, value):
    with pytest.raises(ConfigError, match=r"^NEWSLETTER_BASE_URL: must not contain"):
        Settings.from_environ({"NEWSLETTER_VAR_DIR": str(tmp_path), "NEWSLETTER_BASE_URL": value})
