"""Markdown to readable plain text, for the text/plain part of a message.

Works on markdown-it-py's syntax tree rather than on rendered HTML, so every
construct gets a plain-text form a reader would write by hand: underlined
headings, ``  * `` bullets with hanging indents, ``> `` quotes, ``text [1]``
links with the targets listed at the end, ``[image: alt]`` for images and
aligned columns for tables. Paragraphs are wrapped at 78 columns; only words
longer than a line (URLs) stay unbroken.

The dialect has one addition to CommonMark: merge tags, ``*|NAME|*`` or
``*|NAME:fallback|*``, in the text of the body (not in code, not in link
addresses; ``\\*|`` writes a literal ``*|``). The parser only recognises them,
as ``merge_tag`` tokens with ``meta["name"]`` as written and ``meta["fallback"]``
(None without a colon); which names exist and what they become is the
renderer's business (:func:`fill_merge_tags`).
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from markdown_it import MarkdownIt
from markdown_it.rules_inline import StateInline
from markdown_it.token import Token
from markdown_it.tree import SyntaxTreeNode

__all__ = ["MERGE_TAG", "WIDTH", "fill_merge_tags", "markdown_parser", "markdown_to_text"]

WIDTH = 78

# Joins two words so textwrap never puts a line break between them ("text [1]").
# markdown-it turns NUL from the input into U+FFFD, so content cannot contain it.
_GLUE = "\x00"


def markdown_parser() -> MarkdownIt:
    """The one Markdown dialect of the service: CommonMark plus tables, raw HTML off.

    Raw HTML is disabled because an editor's content is data: ``<script>`` in an
    issue is shown as text, never passed through.
    """
    md = MarkdownIt("commonmark", {"html": False}).enable("table")
    # Before emphasis, which would otherwise read the tag's asterisks as <em>.
    md.inline.ruler.before("emphasis", "merge_tag", _merge_tag)
    return md


# A merge tag: "*|" NAME [":" FALLBACK] "|*" on one line, no "|" inside.
MERGE_TAG = re.compile(r"\*\|([^|\n]{1,200})\|\*")


def _merge_tag(state: StateInline, silent: bool) -> bool:
    if not state.src.startswith("*|", state.pos):
        return False
    match = MERGE_TAG.match(state.src, state.pos, state.posMax)
    if match is None:
        return False
    if not silent:
        name, colon, fallback = match.group(1).partition(":")
        token = state.push("merge_tag", "", 0)
        token.content = match.group(0)
        token.meta = {"name": name.strip(), "fallback": fallback.strip() if colon else None}
    state.pos = match.end()
    return True


def fill_merge_tags(tokens: Sequence[Token], value: Callable[[str, str | None], str] | None) -> None:
    """Turn every merge tag token into a text token holding ``value(name, fallback)``, or the tag as written."""
    for token in tokens:
        if token.type == "merge_tag":
            token.type = "text"
            if value is not None:
                token.content = value(token.meta["name"], token.meta["fallback"])
        if token.children:
            fill_merge_tags(token.children, value)


@dataclass
class _Links:
    """Numbered link targets, in order of first appearance; a repeated URL keeps its number."""

    urls: list[str] = field(default_factory=list)

    def number(self, url: str) -> int:
        if url not in self.urls:
            self.urls.append(url)
        return self.urls.index(url) + 1


def markdown_to_text(
    markdown: str, *, width: int = WIDTH, merge_tag: Callable[[str, str | None], str] | None = None
) -> str:
    """Render Markdown as plain text wrapped at ``width`` columns.

    Links become ``text [n]`` with a numbered list of targets at the end. Each
    merge tag becomes ``merge_tag(name, fallback)``, or stays as written without
    ``merge_tag``; lines are wrapped around what it returned. Never raises for
    any input string (Markdown has no syntax errors).
    """
    tokens = markdown_parser().parse(markdown)
    fill_merge_tags(tokens, merge_tag)
    root = SyntaxTreeNode(tokens)
    links = _Links()
    lines = _blocks(root.children, width, links)
    if links.urls:
        lines += ["", "Links:"]
        lines += [f"[{n}] {url}" for n, url in enumerate(links.urls, start=1)]
    text = "\n".join(line.rstrip() for line in lines)
    return text.replace(_GLUE, " ").strip("\n") + "\n"


def _blocks(nodes: list[SyntaxTreeNode], width: int, links: _Links, *, tight: bool = False) -> list[str]:
    """Render sibling block nodes; blank lines between them unless ``tight``."""
    out: list[str] = []
    for node in nodes:
        lines = _block(node, width, links)
        if not lines:
            continue
        if out and not tight:
            out.append("")
        out += lines
    return out


def _block(node: SyntaxTreeNode, width: int, links: _Links) -> list[str]:
    kind = node.type
    if kind == "paragraph":
        return _wrap(_inline(node.children[0], links), width)
    if kind == "heading":
        return _heading(node, width, links)
    if kind in ("bullet_list", "ordered_list"):
        return _list(node, width, links)
    if kind == "blockquote":
        inner = _blocks(node.children, max(width - 2, 20), links)
        return [f"> {line}" if line else ">" for line in inner]
    if kind == "hr":
        return ["-" * min(width, WIDTH)]
    if kind in ("fence", "code_block"):
        # Code keeps its own line breaks: rewrapping would change its meaning.
        return ["    " + line for line in node.content.rstrip("\n").split("\n")]
    if kind == "table":
        return _table(node, links)
    if kind == "html_block":  # unreachable with raw HTML off; shown as text if enabled
        return node.content.rstrip("\n").split("\n")
    return _blocks(node.children, width, links)


def _heading(node: SyntaxTreeNode, width: int, links: _Links) -> list[str]:
    level = int(node.tag[1])
    text = _inline(node.children[0], links)
    if level >= 3:
        return _wrap("#" * level + _GLUE + text, width)
    lines = _wrap(text, width)
    underline = "=" if level == 1 else "-"
    return [*lines, underline * max(len(line) for line in lines)]


def _list(node: SyntaxTreeNode, width: int, links: _Links) -> list[str]:
    ordered = node.type == "ordered_list"
    items = node.children
    if ordered:
        start = int(node.attrs.get("start", 1))
        markers = [f"{n}." for n in range(start, start + len(items))]
    else:
        markers = ["*"] * len(items)
    marker_width = max(len(m) for m in markers)
    indent = 2 + marker_width + 1
    # A tight list (no blank lines in the source) has hidden paragraphs.
    tight = all(child.hidden for item in items for child in item.children if child.type == "paragraph")
    out: list[str] = []
    for marker, item in zip(markers, items, strict=True):
        body = _blocks(item.children, max(width - indent, 20), links, tight=tight) or [""]
        if out and not tight:
            out.append("")
        first = "  " + marker.rjust(marker_width) + " "
        out.append(first + body[0])
        out += [(" " * indent + line) if line else "" for line in body[1:]]
    return out


def _table(node: SyntaxTreeNode, links: _Links) -> list[str]:
    rows: list[list[str]] = []
    aligns: list[str] = []
    header_rows = 0
    for section in node.children:
        for tr in section.children:
            cells = []
            for cell in tr.children:
                text = _inline(cell.children[0], links) if cell.children else ""
                cells.append(text.replace(_GLUE, " "))
                if len(aligns) < len(tr.children):
                    aligns.append(str(cell.attrs.get("style", "")))
            rows.append(cells)
            if section.type == "thead":
                header_rows += 1
    columns = max((len(r) for r in rows), default=0)
    widths = [max((len(r[i]) for r in rows if i < len(r)), default=0) for i in range(columns)]

    def line(cells: list[str]) -> str:
        parts = []
        for i, w in enumerate(widths):
            text = cells[i] if i < len(cells) else ""
            style = aligns[i] if i < len(aligns) else ""
            if "right" in style:
                parts.append(text.rjust(w))
            elif "center" in style:
                parts.append(text.center(w))
            else:
                parts.append(text.ljust(w))
        return "  ".join(parts)

    out = []
    for index, cells in enumerate(rows):
        out.append(line(cells))
        if index + 1 == header_rows:
            out.append("  ".join("-" * w for w in widths))
    return out


def _inline(node: SyntaxTreeNode, links: _Links) -> str:
    """Flatten inline nodes to one string; hard breaks stay as newlines."""
    parts: list[str] = []
    for child in node.children:
        kind = child.type
        if kind in ("text", "code_inline", "html_inline"):
            parts.append(child.content)
        elif kind == "softbreak":
            parts.append(" ")
        elif kind == "hardbreak":
            parts.append("\n")
        elif kind == "image":
            alt = _inline(child, links).strip()
            parts.append(f"[image:{_GLUE}{alt}]" if alt else "[image]")
        elif kind == "link":
            href = str(child.attrs.get("href", ""))
            label = _inline(child, links)
            if child.info == "auto" or label.strip() in (href, href.removeprefix("mailto:")):
                parts.append(label)
            else:
                parts.append(f"{label}{_GLUE}[{links.number(href)}]")
        else:  # em, strong, s: the words without the emphasis marks
            parts.append(_inline(child, links))
    return "".join(parts)


def _wrap(text: str, width: int) -> list[str]:
    lines: list[str] = []
    for segment in text.split("\n"):
        lines += textwrap.wrap(segment, width=width, break_long_words=False, break_on_hyphens=False) or [""]
    return lines
