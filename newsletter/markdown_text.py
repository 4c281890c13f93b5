"""Markdown to readable plain text, for the text/plain part of a message.

Works on markdown-it-py's syntax tree rather than on rendered HTML, so every
construct gets a plain-text form a reader would write by hand: underlined
headings, ``  * `` bullets with hanging indents, ``> `` quotes, ``text [1]``
links with the targets listed at the end, ``[image: alt]`` for images and
aligned columns for tables. Paragraphs are wrapped at 78 columns; only words
longer than a line (URLs) stay unbroken.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass, field

from markdown_it import MarkdownIt
from markdown_it.tree import SyntaxTreeNode

__all__ = ["WIDTH", "markdown_parser", "markdown_to_text"]

WIDTH = 78

# Joins two words so textwrap never puts a line break between them ("text [1]").
# markdown-it turns NUL from the input into U+FFFD, so content cannot contain it.
_GLUE = "\x00"


def markdown_parser() -> MarkdownIt:
    """The one Markdown dialect of the service: CommonMark plus tables, raw HTML off.

    Raw HTML is disabled because an editor's content is data: ``<script>`` in an
    issue is shown as text, never passed through.
    """
    return MarkdownIt("commonmark", {"html": False}).enable("table")


@dataclass
class _Links:
    """Numbered link targets, in order of first appearance; a repeated URL keeps its number."""

    urls: list[str] = field(default_factory=list)

    def number(self, url: str) -> int:
        if url not in self.urls:
            self.urls.append(url)
        return self.urls.index(url) + 1


def markdown_to_text(markdown: str, *, width: int = WIDTH) -> str:
    """Render Markdown as plain text wrapped at ``width`` columns.

    Links become ``text [n]`` with a numbered list of targets at the end. Never
    raises for any input string (Markdown has no syntax errors).
    """
    root = SyntaxTreeNode(markdown_parser().parse(markdown))
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
    return lines + [underline * max(len(line) for line in lines)]


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
    for marker, item in zip(markers, items):
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
        lines += textwrap.wrap(
            segment, width=width, break_long_words=False, break_on_hyphens=False
        ) or [""]
    return lines
