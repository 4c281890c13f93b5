"""Issue files: front matter parsing and its errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from newsletter.content.issue_files import IssueSource, parse_issue_text, read_issue_file
from newsletter.errors import InvalidInput

SAMPLE = Path(__file__).resolve().parent.parent / "examples" / "issues" / "this-week-in-info-war.md"


def _error(text: str) -> InvalidInput:
    with pytest.raises(InvalidInput) as info:
        parse_issue_text(text, source="x.md")
    return info.value


def test_parses_front_matter_and_body() -> None:
    issue = parse_issue_text(
        "---\nsubject: Hello\npreheader: A short teaser\ntemplate: digest\n---\n# Title\n\nBody.\n", source="x.md"
    )
    assert issue == IssueSource(
        subject="Hello",
        preheader="A short teaser",
        template="digest",
        body_markdown="# Title\n\nBody.\n",
        source="x.md",
        body_line=6,
    )


def test_optional_fields_default() -> None:
    issue = parse_issue_text("---\nsubject: Hello\n---\nBody\n")
    assert (issue.preheader, issue.template, issue.source) == ("", "issue", "<issue>")


def test_byte_order_mark_and_crlf_line_endings_are_accepted() -> None:
    issue = parse_issue_text("\ufeff---\r\nsubject: Hello\r\n---\r\nBody\r\n")
    assert issue.subject == "Hello"
    assert issue.body_markdown.strip() == "Body"


def test_sample_issue_file() -> None:
    issue = read_issue_file(SAMPLE)
    assert issue.subject == "This Week in Info War: Qualified Support in Moscow for Korean Summit"
    assert issue.preheader
    assert issue.template == "issue"
    # The greeting is the editor's, written with the name's merge tag (the templates add none).
    assert issue.body_markdown.lstrip().startswith(
        "Hello *|NAME:there|*,\n\n# Qualified Support in Moscow for Korean Summit"
    )
    assert issue.source == str(SAMPLE)


def test_missing_front_matter_points_at_line_one() -> None:
    error = _error("# Just Markdown\n")
    assert error.where == "x.md:1"
    assert "---" in error.message


def test_unclosed_front_matter() -> None:
    error = _error("---\nsubject: Hello\n# Body\n")
    assert error.where == "x.md:1"
    assert "not closed" in error.message


def test_yaml_error_names_the_line() -> None:
    error = _error("---\npreheader: fine\nsubject: Week 3: the war\n---\nBody\n")
    assert error.where == "x.md:3"
    assert "YAML" in error.message and "quotes" in error.message


def test_front_matter_must_be_a_mapping() -> None:
    error = _error("---\n- subject\n---\nBody\n")
    assert "key: value" in error.message


def test_missing_subject_points_at_the_front_matter() -> None:
    error = _error("---\npreheader: Teaser\n---\nBody\n")
    assert error.where == "x.md:1"
    assert "subject" in error.message


def test_empty_subject_points_at_its_line() -> None:
    error = _error("---\npreheader: Teaser\nsubject: '   '\n---\nBody\n")
    assert error.where == "x.md:3"
    assert "subject" in error.message


def test_unknown_key_is_named_with_its_line() -> None:
    error = _error("---\nsubject: Hello\nsubjet: Typo\n---\nBody\n")
    assert "'subjet'" in error.message
    assert error.where == "x.md:3"


def test_non_text_subject_is_rejected() -> None:
    error = _error("---\nsubject: 1984\n---\nBody\n")
    assert "quotes" in error.message
    assert error.where == "x.md:2"


@pytest.mark.parametrize(
    "front",
    [
        'subject: "Hello\\r\\nBcc: victim@example.org"',
        'subject: "Hello\\nWorld"',
        "subject: |\n  two\n  lines",
        'subject: "Bell\\a"',
        'subject: Hello\npreheader: "line\\u2028separator"',
        'subject: Hello\npreheader: "tab\\there"',
    ],
)
def test_control_characters_in_headers_are_rejected(front: str) -> None:
    error = _error(f"---\n{front}\n---\nBody\n")
    assert "control characters" in error.message


@pytest.mark.parametrize("name", ["../secrets", "issue.html", "a/b", ""])
def test_template_must_be_a_plain_name(name: str) -> None:
    text = f"---\nsubject: Hello\ntemplate: '{name}'\n---\nBody\n"
    if name == "":
        assert parse_issue_text(text).template == "issue"
    else:
        assert "template" in _error(text).message


def test_unreadable_file_names_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.md"
    with pytest.raises(InvalidInput) as info:
        read_issue_file(missing)
    assert info.value.where == str(missing)


def test_non_utf8_file_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "latin1.md"
    path.write_bytes("---\nsubject: Hello\n---\nCaf\u00e9\n".encode("latin-1"))
    with pytest.raises(InvalidInput) as info:
        read_issue_file(path)
    assert info.value.where == f"{path}:4"
    assert "UTF-8" in info.value.message


def test_front_matter_error_from_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "issue.md"
    path.write_text("---\nsubject: Hello\ncolour: red\n---\nBody\n", encoding="utf-8")
    with pytest.raises(InvalidInput) as info:
        read_issue_file(path)
    assert info.value.where == f"{path}:3"
    assert str(info.value).startswith(f"{path}:3: ")
