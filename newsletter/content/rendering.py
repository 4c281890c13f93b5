"""Render an issue once, then personalise it per recipient for the cost of a join.

:func:`render_issue` runs the expensive part once per send: Markdown to HTML and
to plain text, the Jinja2 layouts, and premailer's CSS inlining. Its result
keeps the personal parts open as *placeholders*, so it can be frozen on the
send as two plain strings (SQLite or PostgreSQL text) and personalised later,
in another process, by :func:`personalise`.

A placeholder is ``"\\ue000FIELD\\ue001"`` or, with a fallback for an empty
value, ``"\\ue000FIELD\\ue002FALLBACK\\ue001"``: Unicode private-use characters,
valid text everywhere (no NUL), untouched by HTML escaping. Those three
characters are stripped from everything else in the rendered output, so no
editor content or setting can fake a placeholder. During rendering the
templates see random ASCII tokens instead, because lxml (inside premailer)
would percent-encode non-ASCII characters in ``href`` attributes.

Templates (``templates/email``; a folder earlier in ``template_dirs`` overrides
a same-named file) are ``TEMPLATE.html``, ``TEMPLATE.txt`` and optionally
``TEMPLATE.subject.txt``. They see ``subject``, ``preheader``, ``body_html``
(Markup), ``body_text``, ``list_name``, ``subscribed_to``, ``list_slug``, ``from_name``,
``postal_address``, ``base_url`` and ``personal`` with ``personal.name``,
``personal.email``, ``personal.unsubscribe_url``, ``personal.preferences_url``,
``personal.view_online_url`` and ``personal.name_or("fallback")``. A personal
field is known only per recipient, so it can be printed but not tested
(``{% if personal.name %}`` is an error) or transformed (``|upper`` is an error).

**Stored layouts.** Instead of a file set, an issue can be rendered with a :class:`StoredLayout`
(an admin's template, :mod:`newsletter.content.email_templates`): one HTML and one text
template that see the same variables, compiled in the sandbox of
:mod:`newsletter.content.template_sandbox` (no Python reachable, a bounded cost), with no
subject template (the issue's subject is used as written). Their errors name
``NAME.html:LINE`` or ``NAME.txt:LINE``; anything a stored template raises is such an error,
never a crash. :func:`check_layout` also checks the CSS of its ``<style>`` blocks, as a save does.

The templates add no greeting: the editor writes it in the Markdown body with a
merge tag, ``*|NAME|*`` or ``*|NAME:fallback|*`` (see :data:`MERGE_TAGS`). A
merge tag becomes the same placeholder a template's ``personal.name_or()``
makes, so it costs nothing per recipient, and its value is data like any
other: HTML-escaped in the html, as is in the text, never evaluated. The body
is never template code: ``{{ 7*7 }}`` in it is printed as written.
"""

from __future__ import annotations

import logging
import re
import secrets
import threading
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from html import escape as html_escape
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

from jinja2 import (
    Environment,
    FileSystemLoader,
    StrictUndefined,
    TemplateError,
    TemplateNotFound,
    TemplateSyntaxError,
    UndefinedError,
    select_autoescape,
)
from markupsafe import Markup

from newsletter.content.issue_files import IssueSource, check_header_text, valid_template_name
from newsletter.content.markdown_text import MERGE_TAG, fill_merge_tags, markdown_parser, markdown_to_text
from newsletter.content.template_sandbox import TooCostly, compiled, step_budget
from newsletter.errors import RenderError
from newsletter.locales.languages import SOURCE
from newsletter.locales.templates import teach
from newsletter.resources import shipped

__all__ = [
    "GMAIL_CLIP_BYTES",
    "MERGE_TAGS",
    "PERSONAL_FIELDS",
    "PersonalFields",
    "Problem",
    "RenderContext",
    "RenderedIssue",
    "StoredLayout",
    "check_issue",
    "check_layout",
    "default_template_dir",
    "has_placeholder",
    "inline_css",
    "personalise",
    "placeholder",
    "placeholder_parts",
    "render_issue",
    "template_environment",
]

# "tracking" is no template's to print: a tracked send's links and image carry it (newsletter.engagement).
PERSONAL_FIELDS = ("name", "email", "unsubscribe_url", "preferences_url", "view_online_url", "tracking")
# The merge tags an editor can write in the body (in any case), and the personal field each prints.
# ``*|NAME:there|*`` prints "there" for a subscriber without a name.
MERGE_TAGS = {"NAME": "name", "EMAIL": "email"}
_MERGE_TAG_HELP = (
    "the merge tags are *|NAME|* (with a fallback for people without a name: *|NAME:there|*) and *|EMAIL|*"
)
# Gmail hides everything past about 102 KB of HTML behind "View entire message",
# the footer with the unsubscribe link included.
GMAIL_CLIP_BYTES = 102_000

_OPEN, _CLOSE, _SEP = "\ue000", "\ue001", "\ue002"
_STRIP_MARKERS = str.maketrans("", "", _OPEN + _CLOSE + _SEP)
_IMAGE_SCHEMES = ("http", "https")


@dataclass(frozen=True)
class RenderContext:
    """What the layouts need besides the issue: the list and its sender."""

    list_name: str
    list_slug: str
    from_name: str
    postal_address: str
    base_url: str
    # What the footer says the reader subscribed to: the list's name, or, for a send to several lists,
    # all of theirs ("Weekly or Offers"): each copy goes to someone on one of them.
    subscribed_to: str = ""
    # The language of the layouts' own words (the footer's): the list's, a code of newsletter.locales.
    language: str = SOURCE


@dataclass(frozen=True)
class StoredLayout:
    """A layout stored by an admin: its name and its HTML and text Jinja2 sources (rendered sandboxed)."""

    name: str
    html: str
    text: str


@dataclass(frozen=True)
class RenderedIssue:
    """An issue rendered once, with placeholders left for the personal fields."""

    subject: str
    preheader: str
    html: str
    text: str
    warnings: tuple[str, ...]


@dataclass(frozen=True)
class PersonalFields:
    """One recipient's values for the placeholders."""

    name: str
    email: str
    unsubscribe_url: str
    preferences_url: str
    view_online_url: str
    tracking: str = ""  # a tracked send's ``<delivery>.<signature>``


@dataclass(frozen=True)
class Problem:
    """One finding of :func:`check_issue`."""

    level: Literal["error", "warning"]
    message: str
    where: str | None = None

    def __str__(self) -> str:
        return f"{self.where}: {self.message}" if self.where else self.message


def default_template_dir() -> Path:
    """The shipped ``templates/email`` folder, inside the installed package."""
    return shipped("email")


def check_issue(
    issue: IssueSource,
    context: RenderContext,
    *,
    template_dirs: Sequence[Path],
    layout: StoredLayout | None = None,
) -> list[Problem]:
    """Every problem that keeps the issue from rendering well, errors and warnings.

    Never raises for a problem with the issue or the templates: each becomes a
    :class:`Problem`. ``layout``: a stored layout instead of the issue's file set.
    """
    return _render(issue, context, template_dirs, layout)[1]


def check_layout(
    layout: StoredLayout, issue: IssueSource, context: RenderContext
) -> tuple[RenderedIssue | None, list[Problem]]:
    """``issue`` rendered with a stored layout as a save checks it: every problem, the CSS errors of
    its ``<style>`` blocks among them (``NAME.html:LINE``), and the rendering when nothing but CSS
    errors stands in its way (so the caller can check the rendering too)."""
    return _render(issue, context, (), layout, check_css=True)


def render_issue(
    issue: IssueSource,
    context: RenderContext,
    *,
    template_dirs: Sequence[Path],
    layout: StoredLayout | None = None,
) -> RenderedIssue:
    """Render ``issue`` once for all recipients of ``context``'s list (``layout``: with a stored
    layout instead of the issue's file set).

    Raises RenderError for the first error :func:`check_issue` finds: a
    template that is missing or has a syntax error (naming file and line), an
    undefined variable, a relative link or image URL (naming the URL), an
    empty or multi-line subject. Warnings (image without alt text, HTML over
    Gmail's clipping size) end up in ``RenderedIssue.warnings``.
    """
    rendered, problems = _render(issue, context, template_dirs, layout)
    for problem in problems:
        if problem.level == "error":
            raise RenderError(problem.message, where=problem.where)
    assert rendered is not None
    return rendered


def personalise(html: str, text: str, fields: PersonalFields) -> tuple[str, str]:
    """Fill the placeholders of a rendered (possibly stored) html and text.

    Values are HTML-escaped in the html and inserted raw in the text; they are
    never evaluated, so a name like ``{{ 7*7 }}`` comes out as written. The
    split of each template string is cached, so per recipient this is a join.
    Raises RenderError if a string holds a malformed or unknown placeholder.
    """
    raw = (
        _without_markers(fields.name),
        _without_markers(fields.email),
        _without_markers(fields.unsubscribe_url),
        _without_markers(fields.preferences_url),
        _without_markers(fields.view_online_url),
        _without_markers(fields.tracking),
    )
    escaped = tuple([html_escape(value, quote=True) for value in raw])
    return _fill(_split(html), escaped), _fill(_split(text), raw)


def placeholder(field: str) -> str:
    """The placeholder of a personal field, for code that rewrites a rendered issue (tracked links)."""
    if field not in PERSONAL_FIELDS:
        raise ValueError(f"unknown personal field {field!r}")
    return _OPEN + field + _CLOSE


def has_placeholder(value: str) -> bool:
    """Whether a piece of a rendered issue holds a placeholder (a personal link, say)."""
    return _OPEN in value


def placeholder_parts(rendered: str) -> tuple[str, tuple[tuple[int, str | None, str], ...]]:
    """The cached split of a rendered string, for code that assembles messages itself.

    Returns the first literal and, per placeholder, ``(index into PERSONAL_FIELDS,
    fallback for an empty value or None, the literal that follows)``. Raises RenderError.
    """
    return _split(rendered)


def _without_markers(value: str) -> str:
    # Checking first is ~40x cheaper than translate() on the usual clean value.
    if _OPEN in value or _CLOSE in value or _SEP in value:
        return value.translate(_STRIP_MARKERS)
    return value


# --- personalisation ---------------------------------------------------------

_Compiled = tuple[str, tuple[tuple[int, "str | None", str], ...]]


@lru_cache(maxsize=64)
def _split(template: str) -> _Compiled:
    """Split a template into its first literal and (field index, fallback, next literal) slots."""
    head, *rest = template.split(_OPEN)
    slots = []
    for part in rest:
        inside, closed, literal = part.partition(_CLOSE)
        if not closed:
            raise RenderError("a placeholder in the rendered issue is not closed")
        field, has_fallback, fallback = inside.partition(_SEP)
        if field not in PERSONAL_FIELDS:
            raise RenderError(f"unknown personal field {field!r} in the rendered issue")
        slots.append((PERSONAL_FIELDS.index(field), fallback if has_fallback else None, literal))
    return head, tuple(slots)


def _fill(compiled: _Compiled, values: tuple[str, ...]) -> str:
    head, slots = compiled
    pieces = [head]
    for index, fallback, literal in slots:
        value = values[index]
        pieces.append(fallback if fallback is not None and not value else value)
        pieces.append(literal)
    return "".join(pieces)


# --- rendering ---------------------------------------------------------------


class _PersonalFieldTested(Exception):
    """A template tested a personal field, whose value is unknown until sending."""


class _Token(str):
    """The stand-in for a personal field while the templates render."""

    __slots__ = ()

    def __bool__(self) -> bool:
        raise _PersonalFieldTested(
            "a personal field cannot be tested in a template (its value is only known per recipient); "
            "use personal.name_or('fallback') for text that depends on an empty name"
        )


class _Slots:
    """Hands out ASCII tokens to one template render and swaps them for placeholders after."""

    def __init__(self, *, html: bool) -> None:
        self._html = html
        self._nonce = secrets.token_hex(8)  # unguessable, so content cannot contain a token
        self._placeholders: list[str] = []
        self._pattern = re.compile(f"NLSLOT{self._nonce}N([0-9]+)E")

    def token(self, field: str, fallback: str | None = None) -> _Token:
        if fallback is None:
            placeholder = _OPEN + field + _CLOSE
        else:
            shown = html_escape(fallback, quote=True) if self._html else fallback
            placeholder = _OPEN + field + _SEP + shown.translate(_STRIP_MARKERS) + _CLOSE
        self._placeholders.append(placeholder)
        return _Token(f"NLSLOT{self._nonce}N{len(self._placeholders) - 1}E")

    def fill(self, rendered: str) -> str:
        """Strip stray marker characters, then turn tokens into placeholders.

        Raises RenderError if a token was altered (a filter applied to a personal field).
        """
        out = self._pattern.sub(lambda m: self._placeholders[int(m.group(1))], rendered.translate(_STRIP_MARKERS))
        if self._nonce in out.lower():
            raise RenderError(
                "a filter or expression was applied to a personal field; print personal fields as they are"
            )
        return out


class _Personal:
    """``personal`` in the templates."""

    def __init__(self, slots: _Slots) -> None:
        self._slots = slots

    @property
    def name(self) -> str:
        return self._slots.token("name")

    @property
    def email(self) -> str:
        return self._slots.token("email")

    @property
    def unsubscribe_url(self) -> str:
        return self._slots.token("unsubscribe_url")

    @property
    def preferences_url(self) -> str:
        return self._slots.token("preferences_url")

    @property
    def view_online_url(self) -> str:
        return self._slots.token("view_online_url")

    def name_or(self, fallback: str) -> str:
        """The subscriber's name, or ``fallback`` when the name is empty."""
        return self._slots.token("name", str(fallback))


@lru_cache(maxsize=32)
def template_environment(dirs: tuple[str, ...], language: str = SOURCE) -> Environment:
    """The Jinja2 environment of the email templates: autoescaped HTML, strict undefined variables, and
    the templates' own words (``{% trans %}``, ``_()``) in ``language`` (newsletter.locales.templates)."""
    env = Environment(
        loader=FileSystemLoader(list(dirs)),
        autoescape=select_autoescape(enabled_extensions=("html",), default_for_string=False, default=False),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    return teach(env, language)


def _render(
    issue: IssueSource,
    context: RenderContext,
    template_dirs: Sequence[Path],
    layout: StoredLayout | None = None,
    *,
    check_css: bool = False,
) -> tuple[RenderedIssue | None, list[Problem]]:
    problems = _check_fields(issue, context)
    md = markdown_parser()
    tokens = md.parse(issue.body_markdown)
    problems += _check_body(tokens, issue)
    html_slots, text_slots = _Slots(html=True), _Slots(html=False)
    fill_merge_tags(tokens, _merge_tag_value(html_slots))
    body_html = Markup(md.renderer.render(tokens, md.options, {}))
    body_text = markdown_to_text(issue.body_markdown, merge_tag=_merge_tag_value(text_slots))

    variables: dict[str, Any] = {
        "subject": issue.subject,
        "preheader": issue.preheader,
        "body_html": body_html,
        "body_text": body_text,
        "list_name": context.list_name,
        "subscribed_to": context.subscribed_to or context.list_name,
        "list_slug": context.list_slug,
        "from_name": context.from_name,
        "postal_address": context.postal_address,
        "base_url": context.base_url,
    }
    name = issue.template if valid_template_name(issue.template) else None
    html = text = subject = None
    css: list[Problem] = []  # reported, but a rendering is still returned: the checks after it run too
    if layout is not None:
        name = layout.name
        html = _render_stored(
            layout, "html", context.language, {**variables, "personal": _Personal(html_slots)}, problems
        )
        text = _render_stored(
            layout, "txt", context.language, {**variables, "personal": _Personal(text_slots)}, problems
        )
        if html is not None and check_css:
            css = [Problem("error", message, where) for message, where in css_problems(html, layout)]
        html = _inline_stored(html, layout, problems) if html is not None else None
        html = _fill_slots(html_slots, html, f"{name}.html", problems) if html is not None else None
        text = _fill_slots(text_slots, text, f"{name}.txt", problems) if text is not None else None
    elif name is not None:
        env = template_environment(tuple(str(d) for d in template_dirs), context.language)
        html = _render_template(env, f"{name}.html", {**variables, "personal": _Personal(html_slots)}, problems)
        text = _render_template(env, f"{name}.txt", {**variables, "personal": _Personal(text_slots)}, problems)
        subject = _render_template(env, f"{name}.subject.txt", variables, problems, optional=True)
        html = _fill_slots(html_slots, inline_css(html), f"{name}.html", problems) if html is not None else None
        text = _fill_slots(text_slots, text, f"{name}.txt", problems) if text is not None else None
    subject = issue.subject if subject is None else " ".join(subject.split())
    subject = subject.translate(_STRIP_MARKERS)
    if subject != issue.subject and (reason := check_header_text("the rendered subject", subject)):
        problems.append(Problem("error", reason, f"{name}.subject.txt"))
    if html is not None:
        size = len(html.encode("utf-8"))
        if size > GMAIL_CLIP_BYTES:
            problems.append(
                Problem(
                    "warning",
                    f"the HTML is {size / 1000:.0f} KB; Gmail clips messages over 102 KB, "
                    "hiding the rest and the unsubscribe link behind 'View entire message'",
                    issue.source,
                )
            )
    if any(p.level == "error" for p in problems) or html is None or text is None:
        return None, problems + css
    rendered = RenderedIssue(
        subject=subject,
        preheader=issue.preheader.translate(_STRIP_MARKERS),
        html=html,
        text=text,
        warnings=tuple(str(p) for p in problems if p.level == "warning"),
    )
    return rendered, problems + css


def _merge_tag_value(slots: _Slots) -> Callable[[str, str | None], str]:
    """What a merge tag of the body becomes: a slot for its field, or the tag as written if unknown
    (an unknown tag is an error of :func:`_check_body`, so such a render is never used)."""

    def value(name: str, fallback: str | None) -> str:
        field = MERGE_TAGS.get(name.upper())
        if field is None:
            return f"*|{name}|*"
        return slots.token(field, fallback)

    return value


def _render_template(
    env: Environment, name: str, variables: dict[str, Any], problems: list[Problem], *, optional: bool = False
) -> str | None:
    """Render one template; on failure add a Problem naming file and line and return None."""
    try:
        return env.get_template(name).render(variables)
    except TemplateNotFound as exc:
        if optional and exc.name == name:
            return None
        dirs = ", ".join(getattr(env.loader, "searchpath", []))
        needed_by = "" if exc.name == name else f" (needed by {name!r})"
        problems.append(Problem("error", f"template {exc.name!r}{needed_by} not found in {dirs}"))
    except TemplateSyntaxError as exc:
        problems.append(
            Problem("error", f"template syntax error: {exc.message}", f"{exc.filename or exc.name}:{exc.lineno}")
        )
    except UndefinedError as exc:
        problems.append(Problem("error", f"undefined variable in template: {exc.message}", _template_line(exc, name)))
    except _PersonalFieldTested as exc:
        problems.append(Problem("error", str(exc), _template_line(exc, name)))
    except TemplateError as exc:
        problems.append(Problem("error", f"template error: {exc.message or exc}", _template_line(exc, name)))
    return None


def _render_stored(
    layout: StoredLayout,
    kind: Literal["html", "txt"],
    language: str,
    variables: dict[str, Any],
    problems: list[Problem],
) -> str | None:
    """Render one part of a stored layout in the sandbox; on failure add a Problem naming NAME.KIND:LINE.

    A stored template is not code the service owns: whatever it raises (a sandbox refusal, a
    TypeError from adding a number to a text, a recursion) is a problem with its line, never a crash.
    """
    name = f"{layout.name}.{kind}"
    try:
        template = compiled(kind, language, name, layout.html if kind == "html" else layout.text)
        with step_budget():
            return template.render(variables)
    except TemplateSyntaxError as exc:
        problems.append(Problem("error", f"template syntax error: {exc.message}", f"{name}:{exc.lineno}"))
    except TemplateNotFound as exc:
        problems.append(Problem("error", exc.message or f"template {exc.name!r} not found", _template_line(exc, name)))
    except UndefinedError as exc:
        problems.append(Problem("error", f"undefined variable in template: {exc.message}", _template_line(exc, name)))
    except TooCostly as exc:
        problems.append(Problem("error", f"template refused: {exc.message}", _template_line(exc, name)))
    except _PersonalFieldTested as exc:
        problems.append(Problem("error", str(exc), _template_line(exc, name)))
    except TemplateError as exc:  # the sandbox's SecurityError among them
        problems.append(Problem("error", f"template error: {exc.message or exc}", _template_line(exc, name)))
    except RecursionError as exc:
        problems.append(Problem("error", "template error: it calls itself too deeply", _template_line(exc, name)))
    except Exception as exc:
        problems.append(Problem("error", f"template error: {type(exc).__name__}: {exc}", _template_line(exc, name)))
    return None


def _inline_stored(html: str, layout: StoredLayout, problems: list[Problem]) -> str | None:
    """Inline a stored layout's CSS; a page premailer cannot take is a Problem, not a crash."""
    if not html.strip():
        problems.append(Problem("error", "the HTML template renders nothing", f"{layout.name}.html"))
        return None
    try:
        return inline_css(html)
    except Exception as exc:
        problems.append(
            Problem(
                "error", f"the HTML cannot be inlined (premailer): {type(exc).__name__}: {exc}", f"{layout.name}.html"
            )
        )
        return None


def _fill_slots(slots: _Slots, rendered: str, name: str, problems: list[Problem]) -> str | None:
    try:
        return slots.fill(rendered)
    except RenderError as exc:
        problems.append(Problem("error", exc.message, name))
        return None


def _template_line(exc: BaseException, name: str) -> str:
    """FILE:LINE of the innermost template frame in ``exc``'s traceback (Jinja maps frames to template lines)."""
    for frame in reversed(traceback.extract_tb(exc.__traceback__)):
        if not frame.filename.endswith(".py") and not frame.filename.startswith("<"):
            return f"{frame.filename}:{frame.lineno}"
    return name


# cssutils, under premailer, keeps its log, log level and error mode in globals: every use here holds this.
_CSSUTILS = threading.Lock()


def inline_css(html: str) -> str:
    """Inline the <style> rules into style attributes; media queries stay in a <style>."""
    from premailer import Premailer  # here: premailer and lxml cost a command that renders nothing ~0.1 s

    with _CSSUTILS:
        inlined: str = Premailer(
            html,
            allow_network=False,
            allow_loading_external_files=False,
            disable_link_rewrites=True,
            disable_validation=True,  # cssutils validation is slow and rejects mso-* properties
            strip_important=False,  # media queries need !important to beat the inlined styles
            cssutils_logging_level=logging.CRITICAL,
        ).transform()
    return inlined


class _CssErrors(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


_CSS_POSITION = re.compile(r"\[(\d+):(\d+): [^\]]*\]\s*$")


def css_problems(html: str, layout: StoredLayout) -> list[tuple[str, str]]:
    """The CSS syntax errors cssutils finds in the ``<style>`` blocks of a rendered layout, each with
    ``NAME.html:LINE`` (the block found in the template's source; else the layout's name alone).

    cssutils skips what it cannot parse, so premailer would inline the rest without a word: a save
    refuses them instead."""
    import cssutils
    from lxml import html as lxml_html

    try:
        document = lxml_html.document_fromstring(html)
    except Exception:  # nothing to parse: the inlining reports it
        return []
    name = f"{layout.name}.html"
    found: list[tuple[str, str]] = []
    for style in document.iter("style"):
        css = style.text or ""
        if not css.strip():
            continue
        collector = _CssErrors()
        with _CSSUTILS:
            logger = cssutils.log._log  # the logging.Logger behind cssutils' ErrorHandler
            handlers, level, propagate = list(logger.handlers), logger.level, logger.propagate
            for handler in handlers:
                logger.removeHandler(handler)
            logger.addHandler(collector)
            logger.setLevel(logging.ERROR)
            logger.propagate = False
            try:
                cssutils.CSSParser(validate=False, raiseExceptions=False).parseString(css)
            finally:
                logger.removeHandler(collector)
                for handler in handlers:
                    logger.addHandler(handler)
                logger.setLevel(level)
                logger.propagate = propagate
        start = layout.html.find(css)
        for message in collector.messages:
            position = _CSS_POSITION.search(message)
            text = _CSS_POSITION.sub("", message).strip()
            if position and start >= 0:
                line = layout.html.count("\n", 0, start) + int(position.group(1))
                found.append((f"CSS error: {text}", f"{name}:{line}"))
            elif start >= 0:
                found.append((f"CSS error: {text}", f"{name}:{layout.html.count(chr(10), 0, start) + 1}"))
            else:
                found.append((f"CSS error in a <style> block: {text}", name))
            break  # the first error of a block: the rest mostly follow from it
    return found


def _check_fields(issue: IssueSource, context: RenderContext) -> list[Problem]:
    problems = []
    if not issue.subject.strip():
        problems.append(Problem("error", "the subject is empty", issue.source))
    for field, value in (("subject", issue.subject), ("preheader", issue.preheader)):
        reason = check_header_text(field, value)
        if reason:
            problems.append(Problem("error", reason, issue.source))
        elif tag := MERGE_TAG.search(value):
            problems.append(
                Problem(
                    "error",
                    f"merge tag {tag.group(0)} in the {field}: merge tags work in the body only, "
                    f"the {field} is the same for every reader",
                    issue.source,
                )
            )
    if not valid_template_name(issue.template):
        problems.append(Problem("error", f"template {issue.template!r} is not a template name", issue.source))
    if not issue.body_markdown.strip():
        problems.append(Problem("warning", "the issue body is empty", issue.source))
    parts = urlsplit(context.base_url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        problems.append(Problem("error", f"the list's base URL {context.base_url!r} is not an absolute http(s) URL"))
    return problems


def _check_body(tokens: list[Any], issue: IssueSource) -> list[Problem]:
    """Relative link and image URLs, unknown merge tags (errors); images without alt text,
    a name tag without fallback, template code that is printed as written (warnings)."""
    problems = []
    for token in tokens:
        if token.type != "inline" or not token.children:
            continue
        line = issue.body_line + (token.map[0] if token.map else 0)
        for child in _inline_tokens(token.children):
            where = f"{issue.source}:{line}"
            if child.type in ("softbreak", "hardbreak"):
                line += 1
            elif child.type == "merge_tag":
                problems += _check_merge_tag(child.content, child.meta["name"], child.meta["fallback"], where)
            elif child.type == "text" and (code := _TEMPLATE_CODE.search(child.content)):
                problems.append(
                    Problem(
                        "warning",
                        f"{code.group(0)!r} is printed as written: the body is not a template; {_MERGE_TAG_HELP}",
                        where,
                    )
                )
            elif child.type == "link_open":
                href = str(child.attrGet("href") or "")
                if MERGE_TAG.search(unquote(href)):
                    problems.append(
                        Problem(
                            "error",
                            f"merge tag in the link address {unquote(href)!r}: merge tags work in the text only",
                            where,
                        )
                    )
                elif not _is_absolute(href):
                    problems.append(
                        Problem(
                            "error",
                            f"relative link URL {href!r}: links in an email need an absolute URL such as https://example.org/page",
                            where,
                        )
                    )
            elif child.type == "image":
                src = str(child.attrGet("src") or "")
                if not _is_absolute(src, schemes=_IMAGE_SCHEMES):
                    problems.append(
                        Problem(
                            "error",
                            f"image URL {src!r} must be an absolute http(s) URL such as https://example.org/a.png",
                            where,
                        )
                    )
                if not child.content.strip():
                    problems.append(
                        Problem(
                            "warning", f"image {src!r} has no alt text; readers who block images see nothing", where
                        )
                    )
    return problems


_TEMPLATE_CODE = re.compile(r"\{\{.*?\}\}|\{%.*?%\}")


def _inline_tokens(children: list[Any]) -> list[Any]:
    """Inline tokens in order, with an image's alt text (its children) right after the image."""
    out = []
    for child in children:
        out.append(child)
        if child.type == "image" and child.children:
            out += _inline_tokens(child.children)
    return out


def _check_merge_tag(tag: str, name: str, fallback: str | None, where: str) -> list[Problem]:
    field = MERGE_TAGS.get(name.upper())
    if field is None:
        return [
            Problem(
                "error",
                f"unknown merge tag {tag}: {_MERGE_TAG_HELP}; write \\*| for a *| that is not a merge tag",
                where,
            )
        ]
    if field == "name" and fallback is None:
        return [
            Problem(
                "warning",
                f"{tag} has no fallback, so readers without a name get nothing there; write e.g. *|{name}:there|*",
                where,
            )
        ]
    return []


def _is_absolute(url: str, *, schemes: tuple[str, ...] | None = None) -> bool:
    parts = urlsplit(url)
    if not parts.scheme or (schemes is not None and parts.scheme.lower() not in schemes):
        return False
    return bool(parts.netloc) if parts.scheme.lower() in ("http", "https") else True
