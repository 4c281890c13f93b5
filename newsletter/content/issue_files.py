"""Issue files: Markdown with a YAML front matter block.

::

    ---
    subject: This Week in Info War: Qualified Support in Moscow
    preheader: Moscow wants a seat at the table.
    template: issue
    ---
    # Qualified Support in Moscow for Korean Summit
    ...

``subject`` is required; ``preheader`` (default empty) and ``template``
(default ``issue``) are optional; any other key is an error, so a typo such as
``subjet:`` is caught instead of silently ignored. Every error is an
:class:`~newsletter.errors.InvalidInput` whose ``where`` is ``FILE:LINE``.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from newsletter.errors import InvalidInput

__all__ = [
    "DEFAULT_TEMPLATE",
    "IssueSource",
    "check_header_text",
    "parse_issue_text",
    "read_issue_file",
    "valid_template_name",
]

DEFAULT_TEMPLATE = "issue"
_KEYS = ("subject", "preheader", "template")
_FENCE = "---"
_TEMPLATE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*\Z")


@dataclass(frozen=True)
class IssueSource:
    """One issue as the editor wrote it.

    ``source`` names where it came from and ``body_line`` is the line of the
    file where ``body_markdown`` starts, so later checks can point at a line.
    """

    subject: str
    preheader: str
    template: str
    body_markdown: str
    source: str = "<issue>"
    body_line: int = 1


def valid_template_name(name: str) -> bool:
    """True if ``name`` can name a template set (letters, digits, ``-``, ``_``; no paths)."""
    return bool(_TEMPLATE_NAME.match(name))


def check_header_text(field: str, value: str) -> str | None:
    """Why ``value`` cannot go into a mail header, or None if it can.

    Rejects CR, LF and every other control or line/paragraph separator
    character, which could otherwise inject extra headers.
    """
    for char in value:
        if unicodedata.category(char) in ("Cc", "Zl", "Zp"):
            return f"{field} must be a single line without control characters (found {char!r})"
    return None


def read_issue_file(path: Path) -> IssueSource:
    """Read and parse an issue file.

    Raises InvalidInput naming the file when it cannot be read, is not UTF-8,
    or its front matter is invalid (see :func:`parse_issue_text`).
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InvalidInput(f"cannot read the issue file: {exc.strerror or exc}", where=str(path)) from exc
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise InvalidInput(
            f"the issue file is not UTF-8 text (byte 0x{data[exc.start]:02x} cannot be decoded); save it as UTF-8",
            where=f"{path}:{line}",
        ) from exc
    return parse_issue_text(text, source=str(path))


def parse_issue_text(text: str, *, source: str = "<issue>") -> IssueSource:
    """Parse the text of an issue file.

    Raises InvalidInput with ``where="SOURCE:LINE"`` when the front matter is
    missing, unclosed, not valid YAML, not a mapping, has an unknown key, lacks
    a non-empty ``subject``, has a non-text value, has control characters in
    the subject or preheader, or names an invalid template.
    """
    lines = text.removeprefix("\ufeff").splitlines(keepends=True)
    if not lines or lines[0].rstrip() != _FENCE:
        raise InvalidInput(
            "an issue file must start with a '---' line, then front matter such as "
            "'subject: ...', then another '---' line",
            where=f"{source}:1",
        )
    end = next((i for i in range(1, len(lines)) if lines[i].rstrip() == _FENCE), None)
    if end is None:
        raise InvalidInput("the front matter is not closed by a '---' line", where=f"{source}:1")
    front = "".join(lines[1:end])
    data = _load_yaml(front, source)

    def where(key: str | None = None) -> str:
        return f"{source}:{_key_line(front, key) if key else 1}"

    for key in data:
        if key not in _KEYS:
            raise InvalidInput(f"unknown front matter key {key!r} (allowed: {', '.join(_KEYS)})", where=where(str(key)))
    values: dict[str, str] = {}
    for key in _KEYS:
        value = data.get(key)
        if value is None:
            continue
        if not isinstance(value, str):
            raise InvalidInput(
                f"{key} must be text, not {type(value).__name__}; put the value in quotes", where=where(key)
            )
        values[key] = value.strip()
    subject = values.get("subject", "")
    if not subject:
        raise InvalidInput(
            "the front matter needs a non-empty 'subject'", where=where("subject" if "subject" in data else None)
        )
    for key in ("subject", "preheader"):
        problem = check_header_text(key, values.get(key, ""))
        if problem:
            raise InvalidInput(problem, where=where(key))
    template = values.get("template") or DEFAULT_TEMPLATE
    if not valid_template_name(template):
        raise InvalidInput(
            f"template {template!r} is not a template name (letters, digits, '-' and '_' only)", where=where("template")
        )
    return IssueSource(
        subject=subject,
        preheader=values.get("preheader", ""),
        template=template,
        body_markdown="".join(lines[end + 1 :]),
        source=source,
        body_line=end + 2,
    )


def _load_yaml(front: str, source: str) -> dict[Any, Any]:
    try:
        data = yaml.safe_load(front)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        line = mark.line + 2 if mark is not None else 1  # +1 for 1-based, +1 for the opening fence
        problem = getattr(exc, "problem", None) or str(exc)
        if "mapping values are not allowed" in problem:
            problem += " (put a value that contains ': ' in quotes)"
        raise InvalidInput(f"front matter is not valid YAML: {problem}", where=f"{source}:{line}") from exc
    except RecursionError:
        raise InvalidInput("front matter nests too deeply; use plain 'key: value' lines", where=f"{source}:2") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise InvalidInput("front matter must be 'key: value' lines", where=f"{source}:2")
    return data


def _key_line(front: str, key: str) -> int:
    """File line of ``key`` in the front matter (1 = the opening fence if not found)."""
    node = yaml.compose(front, Loader=yaml.SafeLoader)
    if isinstance(node, yaml.MappingNode):
        for key_node, _ in node.value:
            if str(key_node.value) == key:
                line: int = key_node.start_mark.line  # 0-based, in the text after the opening fence
                return line + 2
    return 1
