"""Stored email templates in the domain: the sandbox, the checks a save makes, which layout an issue
gets, what may be deleted, and that a send keeps what it rendered; on SQLite and PostgreSQL."""

from __future__ import annotations

import re
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest
from sqlalchemy import func, inspect, select, text

from newsletter.content import email_templates
from newsletter.content.email_templates import SHIPPED, Sample
from newsletter.content.issue_files import parse_issue_text
from newsletter.content.issues import RenderSettings, create_issue, set_issue_template, update_issue
from newsletter.content.rendering import StoredLayout, check_layout, default_template_dir, render_issue
from newsletter.delivery import sending
from newsletter.errors import Conflict, InvalidInput, NotFound, RenderError
from newsletter.store import db
from newsletter.store.models import EmailTemplate, Issue, MailingList, Send
from newsletter.store.states import IssueStatus
from subscribers.lists import create_list
from subscribers.subscriptions import add_subscriber
from tests.test_migrations import _downgrade, empty_database_url  # noqa: F401

RENDER = RenderSettings.create(
    base_url="https://news.example.org", postal_address="1 Example Street\nExample City", user_template_dir=None
)
DIRS = RENDER.template_dirs
SAMPLE = RENDER.sample()

#: A small template that shows everything a template must: the body, the unsubscribe link, the address.
HTML = """<!DOCTYPE html>
<html>
<head><style>
.frame { border: 3px solid #123456; padding: 8px; }
p { margin: 0 0 12px 0; }
</style></head>
<body>
<div class="frame">
<p class="mast">{{ mark }} {{ list_name }}</p>
{{ body_html }}
<p class="foot"><a href="{{ personal.unsubscribe_url }}">Leave</a> {{ postal_address }}</p>
</div>
</body>
</html>
"""
TEXT = """{{ mark }} {{ list_name }}

{{ body_text }}

Leave: {{ personal.unsubscribe_url }}
{{ postal_address }}
"""


def pair(mark: str) -> tuple[str, str]:
    """A working HTML and text template whose masthead says ``mark``."""
    return HTML.replace("{{ mark }}", mark), TEXT.replace("{{ mark }}", mark)


ISSUE = """---
subject: "Hello there"
{template}---
Hello *|NAME:there|*,

The body of the issue, with [a link](https://example.org/).
"""


def issue_text(template: str | None = None) -> str:
    return ISSUE.format(template=f"template: {template}\n" if template else "")


def store(s, name: str, mark: str | None = None) -> EmailTemplate:
    html, text = pair(mark or name.upper())
    return email_templates.create_template(s, name, html, text, sample=SAMPLE, template_dirs=DIRS, by="test")


def errors_of(html: str, text: str = TEXT.replace("{{ mark }}", "T")) -> list[str]:
    return [str(p) for p in email_templates.check_template("t", html, text, SAMPLE).problems if p.level == "error"]


# --- the sandbox ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "expression",
    [
        "{{ ''.__class__.__mro__ }}",
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ cycler.__init__.__globals__ }}",
        "{{ self.__dict__ }}",
        "{{ personal._slots }}",
        "{{ personal.name_or.__func__.__globals__ }}",
        "{{ body_html.__html__.__self__.__class__ }}",
        "{% set x = joiner.__init__ %}{{ x }}",
        "{{ range.__call__ }}",
    ],
)
def test_python_behind_a_template_is_out_of_reach(expression):
    html = HTML.replace("{{ mark }}", "\n" + expression)  # on line 9 of the template
    found = errors_of(html)
    assert len(found) == 1 and found[0].startswith("html:10: template error: access to attribute"), found
    assert "is unsafe" in found[0]


def test_a_template_cannot_read_files_settings_or_other_templates():
    found = errors_of(HTML.replace("{{ mark }}", "{% include 'layout.html' %}"))
    assert found == [
        "html:9: a stored template stands alone: it cannot include, extend or import 'layout.html'; "
        "paste what it needs into the template itself"
    ]
    assert errors_of(HTML.replace("{{ mark }}", "{% extends '/etc/passwd' %}")) == [
        "html:9: a stored template stands alone: it cannot include, extend or import '/etc/passwd'; "
        "paste what it needs into the template itself"
    ]
    for name in ("config", "settings", "lipsum", "request", "environ"):
        assert errors_of(HTML.replace("{{ mark }}", "{{ " + name + " }}")) == [
            f"html:9: undefined variable in template: '{name}' is undefined"
        ]


@pytest.mark.parametrize(
    ("expression", "says"),
    [
        ("{% for i in range(10000) %}{% for j in range(10000) %}{% endfor %}{% endfor %}", "2,000,000 steps"),
        ("{{ range(100000) | length }}", "range() of 100,000 numbers"),
        ("{{ 'x' * 100000000 }}", "the repeated text would be 100,000,000 characters"),
        (
            "{% set ns = namespace(v='xx') %}{% for i in range(40) %}{% set ns.v = ns.v ~ ns.v %}{% endfor %}",
            "the joined text would be 2,097,152 characters",
        ),
        ("{{ 'x' | center(1000000000) }}", "the center filter's argument 1,000,000,000 is too large"),
        ("{{ 'x'.ljust(1000000000) }}", "the argument of ljust() 1,000,000,000 is too large"),
        ("{{ '{:>999999999}'.format(1) }}", "a width or precision of 999,999,999 is too large"),
        ("{{ '%999999999d' % 1 }}", "a width or precision of 999,999,999 is too large"),
        ("{{ 'ab'.replace('', 'y' * 1000000) }}", "the replaced text would be 3,000,002 characters"),
        ("{{ _('%(n)999999999s', n=1) }}", "a width or precision of 999,999,999 is too large"),
        ("{{ '%(n)999999999s' % {'n': 1} }}", "a width or precision of 999,999,999 is too large"),
        # One power of big numbers would hold the process for minutes, past any step count.
        ("{{ ((9999 ** 1000) ** 1000) ** 1000 }}", "the power would be a number of about 4,214 digits"),
        (
            "{% set ns = namespace(v=9999) %}{% for i in range(20) %}{% set ns.v = ns.v * ns.v %}{% endfor %}",
            "the product would be a number of about",
        ),
    ],
)
def test_a_template_that_would_cost_too_much_is_refused_at_its_line(expression, says):
    found = errors_of(HTML.replace("{{ mark }}", "\n" + expression))
    assert len(found) == 1 and found[0].startswith("html:10: template refused: "), found
    assert says in found[0], found


def test_a_template_whose_whole_output_is_too_long_is_refused_for_that():
    """Each piece is allowed, their sum (100,000,000 characters) is not: refused as it passes the limit,
    not after lxml has cut the huge document short (which read as a missing postal address)."""
    found = errors_of(HTML.replace("{{ mark }}", "\n{% for i in range(10000) %}{{ 'x' * 10000 }}{% endfor %}"))
    assert found == [
        "html: template refused: the template's output passes 2,000,000 characters; a template may make at most that"
    ]


def test_the_sandbox_still_lets_a_template_do_ordinary_things():
    html = HTML.replace(
        "{{ mark }}",
        "{{ '%s-%d' % ('a', 3) }} {{ '{}!'.format('hi') }} {{ [1, 2] | join('+') }} {{ 'a b' | replace(' ', '_') }} "
        "{{ list_name | upper }} {% for i in range(3) %}{{ i }}{% endfor %} {{ 2 ** 10 }} {{ personal.name_or('friend') }}",
    )
    checked = email_templates.check_template("t", html, TEXT.replace("{{ mark }}", "x"), SAMPLE)
    assert checked.ok, checked.problems
    assert checked.rendered is not None
    assert "a-3 hi! 1+2 a_b THE SAMPLE LIST 012 1024 " in checked.rendered.html


def test_a_personal_field_cannot_be_tested_in_a_stored_template_either():
    found = errors_of(HTML.replace("{{ mark }}", "\n{% if personal.name %}hi{% endif %}"))
    assert len(found) == 1 and found[0].startswith("html:10: a personal field cannot be tested"), found


# --- the checks a save makes --------------------------------------------------------------------


def test_a_syntax_error_is_refused_with_its_part_and_line():
    html, text = pair("T")
    assert errors_of(html.replace("{{ body_html }}", "{{ body_html }\n")) == [
        "html:10: template syntax error: unexpected '}'"
    ]
    assert [
        str(p) for p in email_templates.check_template("t", html, text.replace("Leave:", "{% if %}"), SAMPLE).problems
    ] == ["text:5: template syntax error: Expected an expression, got 'end of statement block'"]


def test_a_css_syntax_error_is_refused_with_its_line():
    html, _ = pair("T")
    assert errors_of(html.replace("padding: 8px;", "padding 8px;")) == [
        'html:4: CSS error: Property: No ":" after name found: padding 8px'
    ]


def test_a_template_must_show_the_body_the_unsubscribe_link_and_the_postal_address():
    html, text = pair("T")
    found = [
        str(p)
        for p in email_templates.check_template(
            "t",
            html.replace("{{ body_html }}", "").replace("{{ personal.unsubscribe_url }}", "https://example.org/"),
            text.replace("{{ postal_address }}", ""),
            SAMPLE,
        ).problems
    ]
    assert found == [
        "html: the HTML template does not show the issue: print {{ body_html }} where its body goes",
        'html: the HTML template has no unsubscribe link, which every email needs; add <a href="{{ '
        'personal.unsubscribe_url }}">Unsubscribe</a>',
        "text: the text template does not print the postal address, which every email needs (CAN-SPAM); "
        "add {{ postal_address }}",
    ]
    # Without a postal address set, the check uses a sample one: leaving it out is still refused.
    no_address = Sample(base_url="https://news.example.org", postal_address="")
    checked = email_templates.check_template("t", html, text.replace("{{ postal_address }}", ""), no_address)
    assert [p.where for p in checked.problems] == ["text"]


def test_empty_oversized_and_nul_sources_are_refused():
    html, _ = pair("T")
    assert errors_of("  \n") == ["html: the HTML template is empty"]
    assert errors_of(html + "x" * 200_000) == ["html: the HTML template is 200,327 characters; at most 200,000"]
    assert errors_of(html.replace("</body>", "\x00</body>")) == [
        "html:13: the HTML template holds a NUL or an unpaired surrogate"
    ]
    assert errors_of("{{ '' }}") == ["html: the HTML template renders nothing"]


def test_the_shipped_layout_copied_into_a_template_renders_exactly_as_the_shipped_one():
    html, text = email_templates.shipped_sources(DIRS)
    assert "{% extends" not in html and "{{ body_html }}" in html and "{{ body_text }}" in text
    checked = email_templates.check_template("copy", html, text, SAMPLE)
    assert checked.ok, checked.problems
    source = parse_issue_text(issue_text())
    for language, unsubscribe in (("en", ">Unsubscribe</a>"), ("de", ">Abmelden</a>")):  # its words translated too
        context = RENDER.context(MailingList(slug="weekly", name="The Weekly", from_name="Desk", language=language))
        shipped = render_issue(source, context, template_dirs=DIRS)
        copied = render_issue(source, context, template_dirs=DIRS, layout=StoredLayout("copy", html, text))
        assert (copied.html, copied.text, copied.subject) == (shipped.html, shipped.text, shipped.subject)
        assert unsubscribe in copied.html and f'<html lang="{language}"' in copied.html


def test_check_layout_reports_every_error_and_still_renders_past_a_css_error():
    html, text = pair("T")
    rendered, problems = check_layout(
        StoredLayout("t", html.replace("padding: 8px;", "padding 8px;"), text), SAMPLE.issue("t"), SAMPLE.context()
    )
    assert rendered is not None and "T The Sample List" in rendered.html
    assert [p.where for p in problems] == ["t.html:4"]


# --- storing, and which layout an issue gets -------------------------------------------------------


@pytest.fixture
def weekly(sessions):
    with db.transaction(sessions) as s:
        create_list(s, "weekly", name="The Weekly", from_email="news@example.org")
        create_list(s, "daily", name="The Daily", from_email="news@example.org")
        add_subscriber(s, "weekly", "ann@example.com", confirmed=True)
    return sessions


def test_a_refused_template_stores_nothing_and_names_are_checked(weekly):
    html, text = pair("T")
    for name, broken_html, where, says in (
        ("fine", html.replace("{{ list_name }}", "{{ list_name }"), "html:9", "template syntax error"),
        ("Caps", html, "name", "lower-case letters"),
        ("issue", html, "name", "the shipped layout's name"),
        ("layout", html, "name", "the name of the template file"),
        ("new", html, "name", "a word the admin UI's addresses use"),
    ):
        with pytest.raises(InvalidInput) as refused, db.transaction(weekly) as s:
            email_templates.create_template(s, name, broken_html, text, sample=SAMPLE, template_dirs=DIRS, by="t")
        assert refused.value.where == where and says in refused.value.message
    with db.transaction(weekly) as s:
        store(s, "fine")
    with pytest.raises(Conflict, match="exists already"), db.transaction(weekly) as s:
        store(s, "fine")
    with pytest.raises(InvalidInput) as refused, db.transaction(weekly) as s:
        email_templates.update_template(s, "fine", html=html.replace("{{ body_html }}", ""), sample=SAMPLE, by="x")
    assert refused.value.where == "html"
    with weekly() as s:
        assert s.scalar(select(func.count()).select_from(EmailTemplate)) == 1
        row = s.scalar(select(EmailTemplate))
        assert row is not None and (row.name, row.html, row.updated_by) == ("fine", pair("FINE")[0], "test")


def test_an_issue_gets_its_own_template_else_its_lists_else_the_shipped_one(weekly):
    with db.transaction(weekly) as s:
        store(s, "brand")
        store(s, "special")
        plain, _ = create_issue(s, "weekly", parse_issue_text(issue_text()), RENDER)
        own, _ = create_issue(s, "weekly", parse_issue_text(issue_text("special")), RENDER)
        ids = plain.id, own.id

    def masthead(issue_id: int) -> str:
        with weekly() as s:
            issue = s.get(Issue, issue_id)
            mailing_list = s.get(MailingList, issue.list_id)
            html = RENDER.render(issue, mailing_list).html
        return "BRAND" if "BRAND The Weekly" in html else "SPECIAL" if "SPECIAL The Weekly" in html else "shipped"

    assert [masthead(i) for i in ids] == ["shipped", "SPECIAL"]
    with db.transaction(weekly) as s:
        email_templates.set_list_template(s, "weekly", "brand")
    assert [masthead(i) for i in ids] == ["BRAND", "SPECIAL"]  # the issue's own beats the list's
    with db.transaction(weekly) as s:
        set_issue_template(s, ids[1], "issue", RENDER)  # back to the list's
    assert [masthead(i) for i in ids] == ["BRAND", "BRAND"]
    with db.transaction(weekly) as s:
        email_templates.set_list_template(s, "weekly", "issue")
    assert [masthead(i) for i in ids] == ["shipped", "shipped"]
    with pytest.raises(InvalidInput, match="no stored template 'nope'"), db.transaction(weekly) as s:
        email_templates.set_list_template(s, "weekly", "nope")
    with pytest.raises(RenderError, match=r"'nope\.html' not found"), db.transaction(weekly) as s:
        set_issue_template(s, ids[0], "nope", RENDER)
    with weekly() as s:
        assert s.get(Issue, ids[0]).template == "issue"


def test_the_shipped_template_is_read_only_and_cannot_be_deleted(weekly):
    with pytest.raises(Conflict, match="cannot be deleted"), db.transaction(weekly) as s:
        email_templates.delete_template(s, SHIPPED)
    with pytest.raises(Conflict, match="cannot be changed"), db.transaction(weekly) as s:
        email_templates.update_template(s, SHIPPED, html=HTML, sample=SAMPLE, by="x")
    with weekly() as s:
        view = email_templates.get_template(s, SHIPPED, DIRS)
        assert view.shipped and (view.html, view.text) == email_templates.shipped_sources(DIRS)
        assert [v.name for v in email_templates.all_templates(s, DIRS)] == [SHIPPED]
    with pytest.raises(NotFound), weekly() as s:
        email_templates.get_template(s, "nope", DIRS)


def test_a_template_in_use_by_a_list_or_an_unsent_issue_cannot_be_deleted(weekly):
    with db.transaction(weekly) as s:
        store(s, "brand")
        email_templates.set_list_template(s, "daily", "brand")
        issue, _ = create_issue(s, "weekly", parse_issue_text(issue_text("brand")), RENDER)
        issue_id = issue.id
    with pytest.raises(Conflict) as refused, db.transaction(weekly) as s:
        email_templates.delete_template(s, "brand")
    assert str(refused.value) == (
        f"template 'brand' is in use by the list daily and the issue {issue_id} ('Hello there'); "
        "choose another layout for them first, then delete it"
    )
    with db.transaction(weekly) as s:
        email_templates.set_list_template(s, "daily", None)
        sending.start_send(s, issue_id, RENDER, batch_size=100)  # sent now: it no longer needs the template
    with weekly() as s:
        assert s.get(Issue, issue_id).status == IssueStatus.SENT
        assert not email_templates.users_of(s, "brand")
    with db.transaction(weekly) as s:
        email_templates.delete_template(s, "brand")
    with weekly() as s:
        assert email_templates.template_names(s) == []
    with pytest.raises(NotFound), db.transaction(weekly) as s:
        email_templates.delete_template(s, "brand")


@pytest.mark.parametrize("chooser", ["list", "issue"])
def test_a_delete_waits_for_a_list_or_an_issue_choosing_the_template_then_refuses(weekly, database_url, chooser):
    """PostgreSQL: choosing a template holds its row FOR SHARE, so a delete started meanwhile waits,
    then sees who chose it. (SQLite takes its write lock at BEGIN: two writers never overlap.)"""
    if database_url.startswith("sqlite"):
        pytest.skip("SQLite serialises write transactions at BEGIN IMMEDIATE")
    with db.transaction(weekly) as s:
        store(s, "brand")
        issue, _ = create_issue(s, "weekly", parse_issue_text(issue_text()), RENDER)
        issue_id = issue.id
    choosing = weekly()
    choosing.begin()
    if chooser == "list":
        email_templates.set_list_template(choosing, "weekly", "brand")
    else:
        set_issue_template(choosing, issue_id, "brand", RENDER)
    outcome: dict[str, str] = {}

    def delete() -> None:
        try:
            with db.transaction(weekly) as s:
                email_templates.delete_template(s, "brand")
            outcome["deleted"] = "yes"
        except Conflict as exc:
            outcome["refused"] = str(exc)

    deleting = threading.Thread(target=delete)
    deleting.start()
    waiting = text(
        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()"
    )
    deadline = time.monotonic() + 30
    with weekly() as s:
        while not s.scalar(waiting) and time.monotonic() < deadline:
            s.rollback()
            time.sleep(0.05)
        assert s.scalar(waiting) == 1, "the delete never waited for the choice"
    choosing.commit()
    choosing.close()
    deleting.join(30)
    user = "the list weekly" if chooser == "list" else f"the issue {issue_id} ('Hello there')"
    assert outcome == {
        "refused": f"template 'brand' is in use by {user}; choose another layout for them first, then delete it"
    }


def test_a_scheduled_send_keeps_its_issues_template_in_use(weekly):
    from datetime import timedelta

    from newsletter.delivery.scheduling import schedule_send
    from newsletter.store.models import utcnow

    with db.transaction(weekly) as s:
        store(s, "brand")
        issue, _ = create_issue(s, "weekly", parse_issue_text(issue_text("brand")), RENDER)
        schedule_send(s, issue.id, utcnow() + timedelta(days=1), RENDER)
        issue.status = IssueStatus.SENT  # as if an earlier send went out: the scheduled one re-renders it
    with pytest.raises(Conflict, match=r"in use by the issue \d+"), db.transaction(weekly) as s:
        email_templates.delete_template(s, "brand")


def test_a_send_keeps_what_it_rendered_when_its_template_changes(weekly):
    with db.transaction(weekly) as s:
        store(s, "brand", "BEFORE")
        email_templates.set_list_template(s, "weekly", "brand")
        issue, _ = create_issue(s, "weekly", parse_issue_text(issue_text()), RENDER)
        send, _ = sending.start_send(s, issue.id, RENDER, batch_size=100)
        send_id, issue_id = send.id, issue.id
    html, text = pair("AFTER")
    with db.transaction(weekly) as s:
        email_templates.update_template(s, "brand", html=html, text=text, sample=SAMPLE, by="someone")
    with weekly() as s:
        frozen = s.get(Send, send_id)
        assert "BEFORE The Weekly" in frozen.html and "BEFORE The Weekly" in frozen.text
        assert "AFTER" not in frozen.html + frozen.text
        issue = s.get(Issue, issue_id)
        assert "AFTER The Weekly" in RENDER.render(issue, s.get(MailingList, issue.list_id)).html
        row = s.scalar(select(EmailTemplate).where(EmailTemplate.name == "brand"))
        assert row is not None and row.updated_by == "someone" and row.updated_at >= row.created_at


def test_a_template_that_breaks_an_issue_on_update_is_refused_for_that_issue(weekly):
    """The sample issue passes, but an issue is checked with its own content when it is saved."""
    html, text = pair("T")
    with db.transaction(weekly) as s:
        email_templates.create_template(
            s,
            "picky",
            html.replace("{{ list_name }}", "{{ (subject | length) // (subject | length - 11) }}"),
            text,
            sample=SAMPLE,
            template_dirs=DIRS,
            by="t",
        )
        issue, _ = create_issue(s, "weekly", parse_issue_text(issue_text()), RENDER)
        issue_id = issue.id
    with pytest.raises(RenderError) as refused, db.transaction(weekly) as s:  # "Hello there" has 11 characters
        set_issue_template(s, issue_id, "picky", RENDER)
    assert refused.value.where == "picky.html:9" and "ZeroDivisionError" in refused.value.message
    with pytest.raises(RenderError), db.transaction(weekly) as s:
        update_issue(s, issue_id, replace(parse_issue_text(issue_text()), template="picky"), RENDER)


def test_a_user_template_file_name_is_not_taken_by_a_stored_one(weekly, tmp_path: Path):
    (tmp_path / "digest.html").write_text("x")
    dirs = (tmp_path, default_template_dir())
    html, text = pair("T")
    with pytest.raises(InvalidInput, match=re.escape(str(tmp_path / "digest.html"))), db.transaction(weekly) as s:
        email_templates.create_template(s, "digest", html, text, sample=SAMPLE, template_dirs=dirs, by="t")


# --- the migration --------------------------------------------------------------------------------


def test_0018_adds_email_templates_and_a_lists_template_and_walks_back(empty_database_url):  # noqa: F811
    engine = db.make_engine(empty_database_url)
    try:
        db.upgrade(engine)
        sessions = db.session_factory(engine)
        with db.transaction(sessions) as s:
            create_list(s, "weekly", name="The Weekly", from_email="news@example.org")
            store(s, "brand")
            email_templates.set_list_template(s, "weekly", "brand")
        with sessions() as s:
            assert s.scalar(select(MailingList.template)) == "brand"
        _downgrade(engine, "0020")
        schema = inspect(engine)
        assert "email_templates" not in schema.get_table_names()
        assert "template" not in {c["name"] for c in schema.get_columns("mailing_lists")}
        with sessions() as s:  # lists still load on the older schema: the column is deferred
            assert s.scalar(select(MailingList.slug)) == "weekly"
        db.upgrade(engine)
        assert db.schema_is_current(engine)
        with sessions() as s:
            assert s.scalar(select(MailingList.template)) is None  # the shipped layout, as for every list
            assert s.scalar(select(func.count()).select_from(EmailTemplate)) == 0
    finally:
        engine.dispose()
