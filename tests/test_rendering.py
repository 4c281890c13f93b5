"""Rendering once per issue, personalising per recipient, and the issue checks."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import lxml.html
import pytest

from newsletter.content.issue_files import IssueSource, read_issue_file
from newsletter.content.rendering import (
    PersonalFields,
    RenderContext,
    check_issue,
    default_template_dir,
    personalise,
    render_issue,
)
from newsletter.errors import InvalidInput, RenderError

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "examples" / "issues" / "this-week-in-info-war.md"
SEED = ROOT / "tests" / "data" / "this-week-in-info-war.txt"  # copy of shared/seed, the original article
TEMPLATES = [default_template_dir()]

CONTEXT = RenderContext(
    list_name="This Week in Info War",
    list_slug="info-war",
    from_name="Info War Desk",
    postal_address="Example Institute\n1234 Market Street\nPhiladelphia, PA 19103",
    base_url="https://www.example.org/info-war/",
)

EVERY_ELEMENT = """\
# Title

## Section

### Detail

A paragraph with [a link](https://example.org/a), *emphasis* and **strong** words.

- bullet one
- bullet two

1. first
2. second

> A quote worth quoting.

![A chart of votes](https://example.org/chart.png)

---

| Country | Votes |
|---------|------:|
| Russia  | 1     |
"""


def _issue(body: str = "Hello **world**.\n", **changes: str) -> IssueSource:
    fields = {"subject": "Subject", "preheader": "Teaser", "template": "issue"} | changes
    return IssueSource(body_markdown=body, source="test.md", body_line=5, **fields)


def _fields(**changes: str) -> PersonalFields:
    values = {
        "name": "Ann",
        "email": "ann@example.net",
        "unsubscribe_url": "https://www.example.org/u/tok?list=info-war&x=1",
        "preferences_url": "https://www.example.org/p/tok",
        "view_online_url": "https://www.example.org/v/tok",
    } | changes
    return PersonalFields(**values)


def _words(text: str) -> set[str]:
    return {word.lower() for word in re.findall(r"\w+", text)}


def _write_templates(folder: Path, **files: str) -> list[Path]:
    for name, content in files.items():
        (folder / name).write_text(content, encoding="utf-8")
    return [folder, default_template_dir()]


# --- the rendered result ---------------------------------------------------


def test_every_body_element_carries_an_inline_style() -> None:
    rendered = render_issue(_issue(EVERY_ELEMENT), CONTEXT, template_dirs=TEMPLATES)
    html, _ = personalise(rendered.html, rendered.text, _fields())
    content = lxml.html.fromstring(html).find_class("content")[0]
    tags = [
        "h1",
        "h2",
        "h3",
        "p",
        "a",
        "ul",
        "ol",
        "li",
        "blockquote",
        "img",
        "hr",
        "table",
        "th",
        "td",
        "em",
        "strong",
    ]
    for tag in tags:
        elements = content.findall(f".//{tag}")
        assert elements, f"no <{tag}> in the rendered body"
        for element in elements:
            assert element.get("style", "").strip(), f"<{tag}> has no inline style"


def test_sample_issue_body_elements_are_styled() -> None:
    rendered = render_issue(read_issue_file(SAMPLE), CONTEXT, template_dirs=TEMPLATES)
    content = lxml.html.fromstring(rendered.html).find_class("content")[0]
    styled = [el for el in content.iter("h1", "p", "a", "ul", "li")]
    assert len(styled) > 10
    assert all(el.get("style") for el in styled)
    assert "color:#8c2f1b" in content.find(".//a").get("style").replace(" ", "")


def test_media_queries_stay_in_a_style_element() -> None:
    rendered = render_issue(_issue(), CONTEXT, template_dirs=TEMPLATES)
    styles = lxml.html.fromstring(rendered.html).findall(".//head/style")
    css = "".join(style.text or "" for style in styles)
    assert "@media" in css and "max-width: 620px" in css
    assert ".content p {" not in css  # inlined rules are gone from <style>


def test_text_part_carries_every_word_of_the_sample_article() -> None:
    rendered = render_issue(read_issue_file(SAMPLE), CONTEXT, template_dirs=TEMPLATES)
    _, text = personalise(rendered.html, rendered.text, _fields())
    seed = SEED.read_text(encoding="utf-8")
    missing = _words(seed) - _words(text)
    assert not missing
    assert "Share on Facebook [1]" in text
    assert "[1] https://www.facebook.com/sharer/sharer.php?u=https%3A%2F%2F" in text


def test_sample_issue_keeps_every_paragraph_and_bullet_word_for_word() -> None:
    rendered = render_issue(read_issue_file(SAMPLE), CONTEXT, template_dirs=TEMPLATES)
    _, text = personalise(rendered.html, rendered.text, _fields())
    flowing = " ".join(text.replace("\n  * ", "\n").split())
    pieces = [p.strip().lstrip("•").strip() for p in re.split(r"\n\s*\n|\n\s*•", SEED.read_text(encoding="utf-8"))]
    assert len(pieces) == 11
    for piece in pieces:
        assert " ".join(piece.split()) in flowing, piece[:60]


def test_html_part_carries_every_word_of_the_sample_article() -> None:
    rendered = render_issue(read_issue_file(SAMPLE), CONTEXT, template_dirs=TEMPLATES)
    html, _ = personalise(rendered.html, rendered.text, _fields())
    body_text = lxml.html.fromstring(html).find_class("content")[0].text_content()
    seed_body = SEED.read_text(encoding="utf-8").split("\n", 1)[1]  # the series name is the masthead
    assert not _words(seed_body) - _words(body_text)


def test_sample_share_links_are_absolute() -> None:
    rendered = render_issue(read_issue_file(SAMPLE), CONTEXT, template_dirs=TEMPLATES)
    hrefs = [a.get("href") for a in lxml.html.fromstring(rendered.html).find_class("content")[0].iter("a")]
    assert any(h.startswith("https://www.facebook.com/sharer/sharer.php?u=https%3A%2F%2F") for h in hrefs)
    assert any(h.startswith("https://twitter.com/intent/tweet?url=https%3A%2F%2F") for h in hrefs)


def test_text_lines_wrap_at_78_columns_except_urls() -> None:
    rendered = render_issue(read_issue_file(SAMPLE), CONTEXT, template_dirs=TEMPLATES)
    _, text = personalise(rendered.html, rendered.text, _fields())
    long_lines = [line for line in text.splitlines() if len(line) > 78]
    assert long_lines  # the share links are longer than a line
    for line in long_lines:
        assert any("://" in word and len(word) > 60 for word in line.split()), line


def test_footer_says_why_and_links_out() -> None:
    rendered = render_issue(_issue(), CONTEXT, template_dirs=TEMPLATES)
    fields = _fields()
    html, text = personalise(rendered.html, rendered.text, fields)
    page = lxml.html.fromstring(html)
    footer = " ".join(page.find_class("footer")[0].text_content().split())
    assert "You are receiving this because you subscribed to This Week in Info War as ann@example.net." in footer
    assert "1234 Market Street" in footer
    hrefs = {a.text_content(): a.get("href") for a in page.find_class("footer")[0].iter("a")}
    assert hrefs["Unsubscribe"] == fields.unsubscribe_url
    assert hrefs["Update your preferences"] == fields.preferences_url
    assert hrefs["View in your browser"] == fields.view_online_url
    assert "You are receiving this because you subscribed to This Week in Info War as\nann@example.net." in text
    tail = text[text.index("\n-- \n") :]
    for url in (fields.view_online_url, fields.unsubscribe_url, fields.preferences_url):
        assert url in tail.splitlines()
    assert tail.rstrip().endswith("Philadelphia, PA 19103")


def test_preheader_is_hidden_text_at_the_top() -> None:
    rendered = render_issue(_issue(preheader="Moscow wants a seat"), CONTEXT, template_dirs=TEMPLATES)
    div = lxml.html.fromstring(rendered.html).find_class("preheader")[0]
    assert div.text_content().startswith("Moscow wants a seat")
    style = div.get("style").replace(" ", "")
    assert "display:none" in style and "max-height:0" in style and "mso-hide:all" in style
    # Not hidden by the tricks spam filters score (tests/test_spam_score.py): no tiny font, no colour.
    assert "font-size" not in style and "color" not in style
    assert rendered.preheader == "Moscow wants a seat"


def test_subject_comes_from_the_subject_template(tmp_path: Path) -> None:
    assert render_issue(_issue(), CONTEXT, template_dirs=TEMPLATES).subject == "Subject"
    dirs = _write_templates(tmp_path, **{"issue.subject.txt": "[{{ list_name }}]\n{{ subject }}\n"})
    assert render_issue(_issue(), CONTEXT, template_dirs=dirs).subject == "[This Week in Info War] Subject"


def test_a_user_folder_overrides_a_template(tmp_path: Path) -> None:
    dirs = _write_templates(
        tmp_path, **{"issue.html": '{% extends "layout.html" %}{% block content %}CUSTOM {{ body_html }}{% endblock %}'}
    )
    rendered = render_issue(_issue(), CONTEXT, template_dirs=dirs)
    assert "CUSTOM" in rendered.html
    assert "You are receiving this" in rendered.html  # the default layout still applies


def test_raw_html_in_markdown_is_escaped() -> None:
    rendered = render_issue(_issue("<script>alert(1)</script>\n\n<b>x</b>\n"), CONTEXT, template_dirs=TEMPLATES)
    page = lxml.html.fromstring(rendered.html)
    assert not page.findall(".//script") and not page.findall(".//b")
    assert "<script>alert(1)</script>" in page.find_class("content")[0].text_content()
    assert "<script>alert(1)</script>" in rendered.text


def test_jinja_syntax_in_content_is_not_evaluated() -> None:
    rendered = render_issue(
        _issue("Total: {{ 7*7 }} {% if x %}", subject="{{ 7*7 }}"), CONTEXT, template_dirs=TEMPLATES
    )
    assert "{{ 7*7 }} {% if x %}" in rendered.text
    assert "49" not in rendered.text
    assert rendered.subject == "{{ 7*7 }}"


# --- merge tags ----------------------------------------------------------------


def test_the_templates_add_no_greeting_of_their_own() -> None:
    rendered = render_issue(_issue("Body only.\n"), CONTEXT, template_dirs=TEMPLATES)
    html, text = personalise(rendered.html, rendered.text, _fields(name="Ann"))
    assert "Hello" not in text and "Ann" not in text
    assert _greeting(html) == "Body only."


def test_merge_tags_print_the_name_or_fallback_and_the_email_anywhere_in_the_text() -> None:
    body = "# Hi *|name:friend|*\n\nWe write to *|EMAIL|* as **\u201c*|Name:you & <yours>|*\u201d**.\n\n![A card for *|NAME:you|*](https://example.org/c.png)\n"
    rendered = render_issue(_issue(body), CONTEXT, template_dirs=TEMPLATES)
    assert rendered.warnings == ()
    html, text = personalise(rendered.html, rendered.text, _fields(name="Ann & <Bo>"))
    assert "Hi Ann & <Bo>\n" in text and "We write to ann@example.net as \u201cAnn & <Bo>\u201d." in text
    assert "[image: A card for Ann & <Bo>]" in text
    content = lxml.html.fromstring(html).find_class("content")[0]
    assert content.find(".//h1").text_content() == "Hi Ann & <Bo>"
    assert content.find(".//strong").text_content() == "\u201cAnn & <Bo>\u201d"
    assert content.find(".//img").get("alt") == "A card for Ann & <Bo>"
    assert "Ann &amp; &lt;Bo&gt;" in html and "<Bo>" not in html
    # No name: each tag's own fallback, escaped in the HTML like a value.
    html, text = personalise(rendered.html, rendered.text, _fields(name=""))
    assert "Hi friend\n" in text and "as \u201cyou & <yours>\u201d." in text
    assert (
        lxml.html.fromstring(html).find_class("content")[0].find(".//strong").text_content()
        == "\u201cyou & <yours>\u201d"
    )
    assert "you &amp; &lt;yours&gt;" in html


def test_merge_tags_in_code_or_escaped_are_printed_as_written() -> None:
    body = "Write `*|NAME|*` or \\*|NAME|* for the name.\n\n```\n*|NAME|*\n```\n"
    rendered = render_issue(_issue(body), CONTEXT, template_dirs=TEMPLATES)
    html, text = personalise(rendered.html, rendered.text, _fields(name="Ann"))
    assert "Write *|NAME|* or *|NAME|* for the name." in text and "    *|NAME|*" in text
    assert "Ann" not in text.split("\n-- \n")[0]
    assert lxml.html.fromstring(html).find_class("content")[0].text_content().count("*|NAME|*") == 3


def test_an_unknown_merge_tag_is_an_error_naming_its_line() -> None:
    issue = _issue("Intro.\n\nHello\n*|FIRSTNAME:there|*, and *|NAME:x|*.\n")
    assert _errors(issue) == [
        "test.md:8: unknown merge tag *|FIRSTNAME:there|*: the merge tags are *|NAME|* (with a fallback for "
        "people without a name: *|NAME:there|*) and *|EMAIL|*; write \\*| for a *| that is not a merge tag"
    ]
    with pytest.raises(RenderError, match=r"FIRSTNAME") as info:
        render_issue(issue, CONTEXT, template_dirs=TEMPLATES)
    assert info.value.where == "test.md:8"


def test_merge_tags_outside_the_body_text_are_errors() -> None:
    assert _errors(_issue("[you](https://example.org/?who=*|EMAIL|*)")) == [
        "test.md:5: merge tag in the link address 'https://example.org/?who=*|EMAIL|*': merge tags work in the text only"
    ]
    for field in ("subject", "preheader"):
        assert _errors(_issue(**{field: "For *|NAME:you|*"})) == [
            f"test.md: merge tag *|NAME:you|* in the {field}: merge tags work in the body only, "
            f"the {field} is the same for every reader"
        ]


def test_a_name_without_fallback_and_template_code_are_warnings() -> None:
    assert _warnings(_issue("Hello *|NAME|*,\n")) == [
        "test.md:5: *|NAME|* has no fallback, so readers without a name get nothing there; write e.g. *|NAME:there|*"
    ]
    warned = _warnings(_issue("Intro.\n\nHello {{ personal.name }}, `{{ code }}` is fine.\n"))
    assert warned == [
        "test.md:7: '{{ personal.name }}' is printed as written: the body is not a template; the merge tags are "
        "*|NAME|* (with a fallback for people without a name: *|NAME:there|*) and *|EMAIL|*"
    ]


# --- personalisation ---------------------------------------------------------


GREETING = "Hello *|NAME:there|*,\n\nHello **world**.\n"


def _greeting(html: str) -> str:
    return lxml.html.fromstring(html).find_class("content")[0].find(".//p").text_content()


def test_personal_fields_are_escaped_in_html_and_raw_in_text() -> None:
    rendered = render_issue(_issue(GREETING), CONTEXT, template_dirs=TEMPLATES)
    for name in ("{{ 7*7 }}", "<script>alert(1)</script>", "Tom & Jerry", 'Ann "the Quill" O\'Neil', "*|EMAIL|*"):
        html, text = personalise(rendered.html, rendered.text, _fields(name=name))
        assert f"Hello {name}," in text
        assert _greeting(html) == f"Hello {name},"
        assert not lxml.html.fromstring(html).findall(".//script")
    html, _ = personalise(rendered.html, rendered.text, _fields(name="<script>&"))
    assert "Hello &lt;script&gt;&amp;," in html
    assert "49" not in personalise(rendered.html, rendered.text, _fields(name="{{ 7*7 }}"))[1]


def test_urls_with_quotes_cannot_break_out_of_the_attribute() -> None:
    rendered = render_issue(_issue(), CONTEXT, template_dirs=TEMPLATES)
    evil = 'https://www.example.org/u?a="><script>x</script>&b=1'
    html, _ = personalise(rendered.html, rendered.text, _fields(unsubscribe_url=evil))
    page = lxml.html.fromstring(html)
    assert not page.findall(".//script")
    assert evil in [a.get("href") for a in page.iter("a")]


def test_empty_name_gets_the_fallback() -> None:
    rendered = render_issue(_issue(GREETING), CONTEXT, template_dirs=TEMPLATES)
    html, text = personalise(rendered.html, rendered.text, _fields(name=""))
    assert "Hello there," in text
    assert _greeting(html) == "Hello there,"
    html, text = personalise(rendered.html, rendered.text, _fields(name="Ann"))
    assert "Hello Ann," in text and "there" not in text.split("\n\n")[1]


def test_placeholders_survive_storage_as_plain_text() -> None:
    rendered = render_issue(read_issue_file(SAMPLE), CONTEXT, template_dirs=TEMPLATES)
    assert "\x00" not in rendered.html + rendered.text  # PostgreSQL text cannot hold NUL
    assert "NLSLOT" not in rendered.html + rendered.text
    db = sqlite3.connect(":memory:")
    db.execute("create table sends (html text, text text)")
    db.execute("insert into sends values (?, ?)", (rendered.html, rendered.text))
    html, text = db.execute("select html, text from sends").fetchone()
    assert (html, text) == (rendered.html, rendered.text)
    assert html is not rendered.html
    fields = _fields(name="Zoë")
    assert personalise(html, text, fields) == personalise(rendered.html, rendered.text, fields)
    personal_html, personal_text = personalise(html, text, fields)
    for value in ("Zoë", fields.email, fields.view_online_url, fields.preferences_url):
        assert value in personal_text and value in personal_html
    assert fields.unsubscribe_url.replace("&", "&amp;") in personal_html
    assert not re.search("[\ue000-\ue002]", personal_html + personal_text)


def test_content_cannot_fake_a_placeholder() -> None:
    fake = "\ue000unsubscribe_url\ue001"
    rendered = render_issue(
        _issue(f"Hello *|NAME|*,\n\nClick {fake} now", preheader=f"pre{fake}"),
        RenderContext(**{**CONTEXT.__dict__, "list_name": f"List{fake}"}),
        template_dirs=TEMPLATES,
    )
    html, text = personalise(rendered.html, rendered.text, _fields(name=fake))
    assert "Click unsubscribe_url now" in text
    assert "Click unsubscribe_url now" in html
    assert "Hello unsubscribe_url," in text
    assert "Listunsubscribe_url" in text
    assert "preunsubscribe_url" in html
    assert rendered.preheader == "preunsubscribe_url"


def test_stored_string_with_unknown_placeholder_is_an_error() -> None:
    with pytest.raises(RenderError, match="shoe_size"):
        personalise("Hi \ue000shoe_size\ue001", "", _fields())
    with pytest.raises(RenderError, match="not closed"):
        personalise("Hi \ue000name", "", _fields())


def test_a_personal_field_cannot_be_tested_or_filtered(tmp_path: Path) -> None:
    dirs = _write_templates(
        tmp_path,
        **{
            "tested.html": '{% extends "layout.html" %}{% block content %}\n{% if personal.name %}x{% endif %}{% endblock %}',
            "tested.txt": "x",
            "filtered.html": '{% extends "layout.html" %}{% block content %}{{ personal.name | upper }}{% endblock %}',
            "filtered.txt": "x",
        },
    )
    tested = check_issue(_issue(template="tested"), CONTEXT, template_dirs=dirs)
    assert [p.where for p in tested if p.level == "error"] == [f"{tmp_path / 'tested.html'}:2"]
    assert "name_or" in tested[0].message
    filtered = check_issue(_issue(template="filtered"), CONTEXT, template_dirs=dirs)
    assert any("filter" in p.message for p in filtered if p.level == "error")


# --- checks ----------------------------------------------------------------


def _errors(issue: IssueSource, dirs: list[Path] = TEMPLATES, context: RenderContext = CONTEXT) -> list[str]:
    return [str(p) for p in check_issue(issue, context, template_dirs=dirs) if p.level == "error"]


def _warnings(issue: IssueSource, dirs: list[Path] = TEMPLATES) -> list[str]:
    return [str(p) for p in check_issue(issue, CONTEXT, template_dirs=dirs) if p.level == "warning"]


def test_the_sample_issue_has_no_problems() -> None:
    assert check_issue(read_issue_file(SAMPLE), CONTEXT, template_dirs=TEMPLATES) == []


def test_missing_subject() -> None:
    assert any("subject is empty" in e for e in _errors(_issue(subject="  ")))
    with pytest.raises(RenderError, match="subject"):
        render_issue(_issue(subject=""), CONTEXT, template_dirs=TEMPLATES)


def test_subject_with_a_line_break() -> None:
    with pytest.raises(RenderError, match="control characters"):
        render_issue(_issue(subject="Hi\r\nBcc: x@example.org"), CONTEXT, template_dirs=TEMPLATES)


def test_template_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    dirs = _write_templates(
        tmp_path, **{"issue.html": '{% extends "layout.html" %}\n{% block content %}\n{{ body_html }\n{% endblock %}\n'}
    )
    errors = _errors(_issue(), dirs)
    assert errors == [f"{tmp_path / 'issue.html'}:3: template syntax error: unexpected '}}'"]
    with pytest.raises(RenderError) as info:
        render_issue(_issue(), CONTEXT, template_dirs=dirs)
    assert info.value.where == f"{tmp_path / 'issue.html'}:3"
    assert isinstance(info.value, InvalidInput)


def test_syntax_error_in_a_parent_layout_names_the_layout(tmp_path: Path) -> None:
    dirs = _write_templates(tmp_path, **{"layout.txt": "line one\n{% block content %}{% endblok %}\n"})
    assert any(e.startswith(f"{tmp_path / 'layout.txt'}:2:") for e in _errors(_issue(), dirs))


def test_undefined_variable_names_file_and_line(tmp_path: Path) -> None:
    dirs = _write_templates(
        tmp_path,
        **{"issue.txt": '{% extends "layout.txt" %}\n{% block content %}\n\n{{ body_txt }}\n{% endblock %}\n'},
    )
    errors = _errors(_issue(), dirs)
    assert errors == [f"{tmp_path / 'issue.txt'}:4: undefined variable in template: 'body_txt' is undefined"]


def test_missing_template() -> None:
    errors = _errors(_issue(template="digest"))
    assert any("'digest.html' not found" in e for e in errors)
    assert any("'digest.txt' not found" in e for e in errors)


def test_relative_link_is_named_with_its_line() -> None:
    issue = _issue("Intro.\n\nRead\n[the report](reports/2018.html) today.\n")
    assert _errors(issue) == [
        "test.md:8: relative link URL 'reports/2018.html': links in an email need an absolute URL "
        "such as https://example.org/page"
    ]
    with pytest.raises(RenderError, match=re.escape("reports/2018.html")):
        render_issue(issue, CONTEXT, template_dirs=TEMPLATES)


def test_link_without_scheme_is_relative() -> None:
    assert any("'www.example.org/x'" in e for e in _errors(_issue("[x](www.example.org/x)")))


def test_relative_image_src() -> None:
    errors = _errors(_issue("![Chart](/img/chart.png)"))
    assert len(errors) == 1 and "'/img/chart.png'" in errors[0]
    with pytest.raises(RenderError, match=re.escape("/img/chart.png")):
        render_issue(_issue("![Chart](/img/chart.png)"), CONTEXT, template_dirs=TEMPLATES)


def test_relative_base_url_is_an_error() -> None:
    context = RenderContext(**{**CONTEXT.__dict__, "base_url": "/info-war"})
    assert any("base URL" in e for e in _errors(_issue(), context=context))


def test_image_without_alt_text_is_a_warning() -> None:
    issue = _issue("![](https://example.org/chart.png)\n")
    assert _errors(issue) == []
    assert _warnings(issue) == [
        "test.md:5: image 'https://example.org/chart.png' has no alt text; readers who block images see nothing"
    ]
    rendered = render_issue(issue, CONTEXT, template_dirs=TEMPLATES)
    assert rendered.warnings == tuple(_warnings(issue))


def test_html_over_102_kb_is_a_warning() -> None:
    small = render_issue(_issue("word " * 100), CONTEXT, template_dirs=TEMPLATES)
    assert small.warnings == ()
    paragraph = "word " * 40 + "\n\n"
    big = render_issue(_issue(paragraph * 600), CONTEXT, template_dirs=TEMPLATES)
    assert len(big.html.encode()) > 102_000
    assert len(big.warnings) == 1 and "Gmail clips" in big.warnings[0]


def test_check_reports_every_problem_at_once(tmp_path: Path) -> None:
    dirs = _write_templates(tmp_path, **{"issue.txt": "{{ nope }}"})
    problems = check_issue(_issue("[a](rel) ![](/x.png)", subject=""), CONTEXT, template_dirs=dirs)
    errors = [p.message for p in problems if p.level == "error"]
    warnings = [p.message for p in problems if p.level == "warning"]
    assert len(errors) == 4  # subject, link, image, undefined variable
    assert len(warnings) == 1  # alt text
