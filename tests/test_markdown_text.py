"""Markdown to plain text."""

from __future__ import annotations

from newsletter.content.markdown_text import markdown_to_text

LONG = (
    "Moscow does not want U.S. diplomacy to fail, but does not want it to succeed "
    "without Russian help, either. It also hopes that the Singapore summit will boost "
    "the chances of a similar meeting."
)


def test_headings_are_underlined() -> None:
    lines = markdown_to_text("# Big title\n\n## Section\n\n### Detail\n").splitlines()
    assert lines[:2] == ["Big title", "========="]
    assert lines[3:5] == ["Section", "-------"]
    assert lines[6] == "### Detail"


def test_paragraphs_wrap_at_78_columns() -> None:
    lines = markdown_to_text(LONG + " " + LONG).splitlines()
    assert len(lines) > 2
    assert all(len(line) <= 78 for line in lines)
    assert " ".join(lines) == LONG + " " + LONG


def test_unbreakable_url_stays_whole() -> None:
    url = "https://www.example.org/" + "a" * 90
    text = markdown_to_text(f"See {url} now")
    assert url in text.splitlines()


def test_bullets_have_hanging_indents() -> None:
    lines = markdown_to_text(f"- {LONG}\n- short\n").splitlines()
    assert lines[0].startswith("  * Moscow")
    continuation = lines[1 : lines.index("  * short")]
    assert continuation and all(line.startswith("    ") and line[4] != " " for line in continuation)
    assert all(len(line) <= 78 for line in lines)


def test_numbered_list_keeps_numbers_and_aligns() -> None:
    source = "".join(f"{n}. item {n}\n" for n in range(1, 11))
    lines = markdown_to_text(source).splitlines()
    assert lines[0] == "   1. item 1"
    assert lines[9] == "  10. item 10"


def test_ordered_list_start_number() -> None:
    assert markdown_to_text("3. three\n4. four\n").splitlines() == ["  3. three", "  4. four"]


def test_nested_list_is_indented_further() -> None:
    lines = markdown_to_text("- outer\n  - inner\n").splitlines()
    assert lines == ["  * outer", "      * inner"]


def test_loose_list_items_are_separated_by_blank_lines() -> None:
    assert markdown_to_text("- one\n\n- two\n").splitlines() == ["  * one", "", "  * two"]


def test_block_quotes_are_prefixed() -> None:
    lines = markdown_to_text(f"> {LONG}\n>\n> Second.\n").splitlines()
    assert len(lines) > 3
    assert all(line.startswith(">") for line in lines)
    assert "> Second." in lines
    assert ">" in lines  # the blank line between the quoted paragraphs


def test_emphasis_becomes_plain_words() -> None:
    assert markdown_to_text("a *very* **bold** `code` claim\n") == "a very bold code claim\n"


def test_horizontal_rule_is_a_line() -> None:
    lines = markdown_to_text("above\n\n---\n\nbelow\n").splitlines()
    assert lines[2] == "-" * 78


def test_images_show_their_alt_text() -> None:
    text = markdown_to_text(
        "![Kim and Trump shaking hands](https://example.org/a.jpg) and ![](https://example.org/b.jpg)"
    )
    assert text == "[image: Kim and Trump shaking hands] and [image]\n"


def test_links_are_numbered_and_listed_at_the_end() -> None:
    text = markdown_to_text(
        "Read [the report](https://example.org/r) and [the reply](https://example.org/s), "
        "then [the report](https://example.org/r) again.\n"
    )
    body, links = text.split("\nLinks:\n")
    assert "the report [1]" in body and "the reply [2]" in body
    assert body.count("[1]") == 2
    assert links.splitlines() == ["[1] https://example.org/r", "[2] https://example.org/s"]


def test_link_number_never_starts_a_line() -> None:
    words = " ".join(["word"] * 14)
    text = markdown_to_text(f"{words} [linked words here](https://example.org/x) {words}\n")
    assert not any(line.startswith("[1]") for line in text.split("Links:")[0].splitlines())


def test_autolinks_are_shown_once_without_a_number() -> None:
    text = markdown_to_text("Visit <https://example.org/> or <mailto:desk@example.org>\n")
    assert text == "Visit https://example.org/ or mailto:desk@example.org\n"


def test_tables_are_aligned_text() -> None:
    text = markdown_to_text("| Country | Votes |\n|:--|--:|\n| Russia | 1 |\n| United States | 120 |\n")
    lines = text.splitlines()
    assert lines == [
        "Country        Votes",
        "-------------  -----",
        "Russia             1",
        "United States    120",
    ]


def test_typographic_characters_are_kept() -> None:
    source = "“Quoted” – ‘single’ — dash… and Federation Council’s"
    assert markdown_to_text(source) == source + "\n"


def test_raw_html_is_shown_as_text() -> None:
    assert markdown_to_text("<b>not bold</b>\n") == "<b>not bold</b>\n"


def test_hard_break_starts_a_new_line() -> None:
    assert markdown_to_text("first line  \nsecond line\n") == "first line\nsecond line\n"


def test_code_blocks_keep_their_lines() -> None:
    text = markdown_to_text("```\nx = 1\n    y = 2\n```\n")
    assert text == "    x = 1\n        y = 2\n"


def test_merge_tags_are_filled_by_the_caller_or_kept_as_written() -> None:
    source = "Hello *|NAME:there|*, *so* `*|NAME|*`\n"
    assert markdown_to_text(source) == "Hello *|NAME:there|*, so *|NAME|*\n"
    filled = markdown_to_text(source, merge_tag=lambda name, fallback: f"<{name}/{fallback}>")
    assert filled == "Hello <NAME/there>, so *|NAME|*\n"  # not in code
