"""Email templates admins store: the layout of a list's issues, or of one issue.

A stored template is a pair of Jinja2 sources, HTML and plain text, that see the variables the
shipped layout sees (README, "Email templates") and are rendered in the sandbox of
:mod:`newsletter.content.template_sandbox`. Which layout an issue gets (:func:`layout_for`):

1. the issue's own ``template``, when it names one (anything but ``issue``, the default);
2. else its list's ``template``, when the list has one;
3. else the shipped layout, the file set ``issue`` (``templates/email/issue.html`` and
   ``issue.txt``, extending ``layout.html`` and ``layout.txt``).

A name that is not a stored template is a file set, as before (``NEWSLETTER_TEMPLATE_DIR``).

A template is stored only once it works (:func:`check_template`): rendered with a sample issue
and inlined by premailer without an error (a Jinja error or a CSS syntax error names its line:
``html:LINE`` or ``text:LINE``), showing the issue's body, the unsubscribe link and the postal
address in both parts. Nothing is stored when it is refused. The shipped layout is read-only
and cannot be deleted; it can be copied (:func:`shipped_sources`) to start a new one. A
template a list uses, or an issue not yet sent (or scheduled), cannot be deleted.

The personal parts (name, email, the unsubscribe, preferences and view-online links) stay
placeholders filled per recipient, so a send still renders once; and a send freezes what it
rendered, so changing a template later changes no send already started.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from html import escape as html_escape
from pathlib import Path
from typing import Literal

from sqlalchemy import exists, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from newsletter.content.issue_files import DEFAULT_TEMPLATE, IssueSource
from newsletter.content.rendering import (
    Problem,
    RenderContext,
    RenderedIssue,
    StoredLayout,
    check_layout,
    placeholder,
    template_environment,
)
from newsletter.errors import Conflict, InvalidInput, NotFound
from newsletter.store.models import EmailTemplate, Issue, MailingList, Send, utcnow
from newsletter.store.states import IssueStatus, SendStatus
from subscribers.lists import get_list

__all__ = [
    "NAME_RE",
    "RESERVED",
    "SHIPPED",
    "SOURCE_MAX",
    "Checked",
    "Sample",
    "TemplateView",
    "Users",
    "all_templates",
    "check_template",
    "chosen_template",
    "create_template",
    "delete_template",
    "get_template",
    "hold",
    "layout_choices",
    "layout_for",
    "set_list_template",
    "shipped_sources",
    "template_names",
    "update_template",
    "users_of",
]

#: The shipped layout's name: the default of every issue and list.
SHIPPED = DEFAULT_TEMPLATE
NAME_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}\Z")
#: Words of the admin UI's addresses under /admin/templates/: no template may take them.
RESERVED = frozenset({"new", "check", "preview"})
#: The longest source of each part, in characters (an issue's Markdown is at most 200,000 too).
SOURCE_MAX = 200_000

Part = Literal["html", "text"]

#: The sample issue a template is checked and previewed with; its first paragraph is looked for.
SAMPLE_BODY = """Hello *|NAME:there|*,

This is the sample body.

# A headline

A paragraph of the issue, with **bold**, *italic* and [a link](https://example.org/). Editors write
the body in Markdown; the layout puts it where it prints `body_html` (and `body_text` in the text part).

## A smaller heading

- a list item
- another one, with `code`

> A quote, set apart.

---

That is all for this week.
"""
_BODY_MARK = "This is the sample body."
_SAMPLE_ADDRESS = "1 Sample Street, Sample Town"


@dataclass(frozen=True)
class Sample:
    """What a template is checked and previewed with: a sample issue of a sample list, mailed with
    the service's base URL and postal address (a sample address when none is set)."""

    base_url: str
    postal_address: str
    list_name: str = "The Sample List"
    list_slug: str = "sample"

    def context(self) -> RenderContext:
        return RenderContext(
            list_name=self.list_name,
            list_slug=self.list_slug,
            from_name=self.list_name,
            postal_address=self.postal_address or _SAMPLE_ADDRESS,
            base_url=self.base_url,
        )

    def issue(self, template: str) -> IssueSource:
        return IssueSource(
            subject="A sample issue",
            preheader="The line mail clients show after the subject.",
            template=template,
            body_markdown=SAMPLE_BODY,
            source="the sample issue",
        )


@dataclass(frozen=True)
class Checked:
    """A template rendered with the sample issue: its problems (``where`` is ``html:LINE``,
    ``text:LINE``, ``html`` or ``text``), and the rendering when none is an error."""

    problems: tuple[Problem, ...]
    rendered: RenderedIssue | None

    @property
    def ok(self) -> bool:
        return self.rendered is not None and not any(p.level == "error" for p in self.problems)


@dataclass(frozen=True)
class Users:
    """Who would lose a template: the lists that use it, the issues not sent yet that name it."""

    lists: tuple[str, ...]
    issues: tuple[tuple[int, str], ...]  # (id, subject)

    def __bool__(self) -> bool:
        return bool(self.lists or self.issues)

    def describe(self) -> str:
        parts = []
        if self.lists:
            parts.append(("the list " if len(self.lists) == 1 else "the lists ") + ", ".join(self.lists))
        if self.issues:
            shown = ", ".join(f"{i} ({subject!r})" for i, subject in self.issues[:5])
            more = f" and {len(self.issues) - 5} more" if len(self.issues) > 5 else ""
            parts.append(("the issue " if len(self.issues) == 1 else "the issues ") + shown + more)
        return " and ".join(parts)


@dataclass(frozen=True)
class TemplateView:
    name: str
    shipped: bool
    html: str
    text: str
    created_at: datetime | None
    updated_at: datetime | None
    updated_by: str
    users: Users

    def as_json(self, *, sources: bool = True) -> dict[str, object]:
        out: dict[str, object] = {
            "name": self.name,
            "shipped": self.shipped,
            "created_at": self.created_at.isoformat() if self.created_at else None,
            "updated_at": self.updated_at.isoformat() if self.updated_at else None,
            "updated_by": self.updated_by,
            "lists": list(self.users.lists),
            "issues": [i for i, _ in self.users.issues],
        }
        if sources:
            out |= {"html": self.html, "text": self.text}
        return out


# --- which layout an issue gets -------------------------------------------------------------


def chosen_template(template: str, mailing_list: MailingList) -> str:
    """The template name an issue of ``mailing_list`` naming ``template`` is rendered with."""
    if template != SHIPPED:
        return template
    return mailing_list.template or SHIPPED


def layout_for(session: Session, template: str, mailing_list: MailingList) -> StoredLayout | None:
    """The stored layout an issue naming ``template`` gets on ``mailing_list``; None: a file set
    (the shipped one, or one of NEWSLETTER_TEMPLATE_DIR), named by :func:`chosen_template`."""
    name = chosen_template(template, mailing_list)
    if name == SHIPPED:
        return None
    row = session.scalar(select(EmailTemplate).where(EmailTemplate.name == name))
    return StoredLayout(row.name, row.html, row.text) if row is not None else None


# --- reading -------------------------------------------------------------------------------


def layout_choices(session: Session, template: str, mailing_list: MailingList) -> list[tuple[str, str]]:
    """What an issue of ``mailing_list`` naming ``template`` may choose, as (value, label): its list's
    layout (``issue``), each stored template, and the file set it names now when that is neither."""
    names = template_names(session)
    choices = [(SHIPPED, f"The list's: {mailing_list.template or SHIPPED + ' (shipped)'}")]
    choices += [(name, name) for name in names]
    if template != SHIPPED and template not in names:
        choices.append((template, f"{template} (a template file)"))
    return choices


def template_names(session: Session) -> list[str]:
    """Every stored template's name, sorted (the shipped one is not among them)."""
    return list(session.scalars(select(EmailTemplate.name).order_by(EmailTemplate.name)))


def all_templates(session: Session, template_dirs: Sequence[Path]) -> list[TemplateView]:
    """The shipped layout first, then every stored template by name, each with its users."""
    rows = session.scalars(select(EmailTemplate).order_by(EmailTemplate.name)).all()
    return [_shipped_view(template_dirs)] + [_view(row, users_of(session, row.name)) for row in rows]


def get_template(session: Session, name: str, template_dirs: Sequence[Path]) -> TemplateView:
    """A template and its users; ``issue`` is the shipped layout as one template. Raises NotFound."""
    if name == SHIPPED:
        return _shipped_view(template_dirs)
    return _view(_row(session, name), users_of(session, name))


def users_of(session: Session, name: str) -> Users:
    """The lists using ``name``, and the issues naming it that are not sent yet or have a send scheduled."""
    lists = session.scalars(
        select(MailingList.slug).where(MailingList.template == name).order_by(MailingList.slug)
    ).all()
    scheduled = exists().where(Send.issue_id == Issue.id, Send.status == SendStatus.SCHEDULED)
    issues = session.execute(
        select(Issue.id, Issue.subject)
        .where(Issue.template == name, (Issue.status != IssueStatus.SENT) | scheduled)
        .order_by(Issue.id)
    ).all()
    return Users(tuple(lists), tuple((i, subject) for i, subject in issues))


def shipped_sources(template_dirs: Sequence[Path]) -> tuple[str, str]:
    """The shipped layout as one HTML and one text template: ``layout.html`` with the content
    block of ``issue.html`` put in (and the same for ``.txt``), as found in ``template_dirs``
    (a NEWSLETTER_TEMPLATE_DIR file wins). Copied into a stored template it renders the same.
    Raises Conflict when the files are not laid out that way (a replaced ``issue.html``)."""
    env = template_environment(tuple(str(d) for d in template_dirs))
    assert env.loader is not None
    parts = []
    for kind, variable in (("html", "body_html"), ("txt", "body_text")):
        layout = env.loader.get_source(env, f"layout.{kind}")[0]
        issue = env.loader.get_source(env, f"issue.{kind}")[0]
        content = _BLOCK_CONTENT.search(issue)
        empty = _EMPTY_CONTENT.search(layout)
        if content is None or empty is None or variable not in content.group(1):
            raise Conflict(
                f"issue.{kind} and layout.{kind} are not the shipped pair (a content block in each), "
                "so they cannot be shown as one template; copy them by hand"
            )
        parts.append(
            f"{layout[: empty.start()]}{{% block content %}}{content.group(1)}{{% endblock %}}{layout[empty.end() :]}"
        )
    return parts[0], parts[1]


_BLOCK_CONTENT = re.compile(r"\{%-?\s*block\s+content\s*-?%\}(.*?)\{%-?\s*endblock(?:\s+content)?\s*-?%\}", re.S)
_EMPTY_CONTENT = re.compile(r"\{%-?\s*block\s+content\s*-?%\}\s*\{%-?\s*endblock(?:\s+content)?\s*-?%\}")


def _shipped_view(template_dirs: Sequence[Path]) -> TemplateView:
    html, text = shipped_sources(template_dirs)
    return TemplateView(SHIPPED, True, html, text, None, None, "", Users((), ()))


def _view(row: EmailTemplate, users: Users) -> TemplateView:
    return TemplateView(row.name, False, row.html, row.text, row.created_at, row.updated_at, row.updated_by, users)


def _row(session: Session, name: str, *, lock: bool = False) -> EmailTemplate:
    query = select(EmailTemplate).where(EmailTemplate.name == name)
    row = session.scalar(query.with_for_update() if lock else query)
    if row is None:
        raise NotFound(f"no template {name!r} (see `newsletter templates ls`)")
    return row


# --- checking ------------------------------------------------------------------------------


def check_template(name: str, html: str, text: str, sample: Sample) -> Checked:
    """Render the sample issue with the sources as a save would, and say what is wrong.

    Never raises for a problem of the sources: a syntax or runtime error of Jinja2 or of the
    sandbox, a CSS syntax error, a page premailer cannot inline, and a part that does not show
    the body, the unsubscribe link or the postal address are each a Problem.
    """
    problems = [*_check_source("html", html), *_check_source("text", text)]
    if problems:
        return Checked(tuple(problems), None)
    shown = name if NAME_RE.match(name) else "new"
    rendered, found = check_layout(StoredLayout(shown, html, text), sample.issue(shown), sample.context())
    problems = [_located(p, shown) for p in found]
    if rendered is not None:
        problems += _missing_parts(rendered, sample.context().postal_address)
    if any(p.level == "error" for p in problems):
        return Checked(tuple(problems), None)
    return Checked(tuple(problems), rendered)


def _check_source(part: Part, source: str) -> list[Problem]:
    label = "HTML" if part == "html" else "text"
    if not source.strip():
        return [Problem("error", f"the {label} template is empty", part)]
    if len(source) > SOURCE_MAX:
        return [Problem("error", f"the {label} template is {len(source):,} characters; at most {SOURCE_MAX:,}", part)]
    for index, char in enumerate(source):
        if char == "\x00" or "\ud800" <= char <= "\udfff":
            line = source.count("\n", 0, index) + 1
            return [Problem("error", f"the {label} template holds a NUL or an unpaired surrogate", f"{part}:{line}")]
    return []


def _located(problem: Problem, name: str) -> Problem:
    """A rendering problem of ``NAME.html:LINE`` as ``html:LINE`` (and ``NAME.txt`` as ``text``)."""
    where = problem.where or ""
    for suffix, part in ((".html", "html"), (".txt", "text")):
        prefix = f"{name}{suffix}"
        if where == prefix or where.startswith(prefix + ":"):
            return Problem(problem.level, problem.message, part + where[len(prefix) :])
    return problem


def _missing_parts(rendered: RenderedIssue, postal_address: str) -> list[Problem]:
    problems = []
    unsubscribe = placeholder("unsubscribe_url")
    address = postal_address.splitlines()[0].strip()
    for part, output, escaped_address in (
        ("html", rendered.html, html_escape(address, quote=True)),
        ("text", rendered.text, address),
    ):
        label, body = ("HTML", "{{ body_html }}") if part == "html" else ("text", "{{ body_text }}")
        if _BODY_MARK not in output:
            problems.append(
                Problem(
                    "error", f"the {label} template does not show the issue: print {body} where its body goes", part
                )
            )
        if unsubscribe not in output:
            link = (
                '<a href="{{ personal.unsubscribe_url }}">Unsubscribe</a>'
                if part == "html"
                else "{{ personal.unsubscribe_url }}"
            )
            problems.append(
                Problem(
                    "error",
                    f"the {label} template has no unsubscribe link, which every email needs; add {link}",
                    part,
                )
            )
        if escaped_address not in output and address not in output:
            problems.append(
                Problem(
                    "error",
                    f"the {label} template does not print the postal address, which every email needs (CAN-SPAM); "
                    "add {{ postal_address }}",
                    part,
                )
            )
    return problems


def _refuse(checked: Checked) -> None:
    """Raise InvalidInput for the first error (``where``: ``html:LINE`` ...), naming how many more there are."""
    errors = [p for p in checked.problems if p.level == "error"]
    if not errors:
        return
    first = errors[0]
    more = f" ({len(errors) - 1} more error{'s' if len(errors) > 2 else ''} after it)" if len(errors) > 1 else ""
    raise InvalidInput(first.message + more, where=first.where)


def _check_name(session: Session, name: str, template_dirs: Sequence[Path]) -> str:
    name = name.strip()
    if not NAME_RE.match(name):
        raise InvalidInput(
            f"template name {name!r} must be 1-64 lower-case letters, digits, '-' or '_', starting with a letter or digit",
            where="name",
        )
    if name == SHIPPED:
        raise InvalidInput(f"{SHIPPED!r} is the shipped layout's name; choose another", where="name")
    if name in RESERVED:
        raise InvalidInput(f"{name!r} is a word the admin UI's addresses use; choose another name", where="name")
    for folder in template_dirs:
        for suffix in (".html", ".txt"):
            if (Path(folder) / f"{name}{suffix}").is_file():
                raise InvalidInput(
                    f"{name!r} is the name of the template file {Path(folder) / (name + suffix)}; choose another",
                    where="name",
                )
    if session.scalar(select(EmailTemplate.id).where(EmailTemplate.name == name)) is not None:
        raise Conflict(f"a template named {name!r} exists already; change it with `newsletter templates update {name}`")
    return name


# --- changing ------------------------------------------------------------------------------


def create_template(
    session: Session,
    name: str,
    html: str,
    text: str,
    *,
    sample: Sample,
    template_dirs: Sequence[Path],
    by: str,
) -> EmailTemplate:
    """Store a new template once it works (see :func:`check_template`).

    Raises InvalidInput (``where``: ``name``, ``html:LINE``, ``text:LINE``, ``html``, ``text``),
    Conflict (the name is taken). Nothing is stored when it raises.
    """
    name = _check_name(session, name, template_dirs)
    _refuse(check_template(name, html, text, sample))
    now = utcnow()
    row = EmailTemplate(name=name, html=html, text=text, created_at=now, updated_at=now, updated_by=by)
    try:
        with session.begin_nested():
            session.add(row)
            session.flush()
    except IntegrityError:  # stored by someone else at this very moment
        raise Conflict(f"a template named {name!r} exists already") from None
    return row


def update_template(
    session: Session,
    name: str,
    *,
    html: str | None = None,
    text: str | None = None,
    sample: Sample,
    by: str,
) -> EmailTemplate:
    """Change a template's HTML and/or text (None keeps a part), once the pair works.

    Sends already started keep what they rendered; issues not sent yet get the new layout.
    Raises NotFound, Conflict (the shipped layout), InvalidInput; nothing changes when it raises.
    """
    if name == SHIPPED:
        raise Conflict(
            "the shipped layout cannot be changed; copy it into a new template "
            "(`newsletter templates show issue --part html > layout.html`, the same with --part text, "
            "then `newsletter templates create NAME --html layout.html --text layout.txt`)"
        )
    row = _row(session, name, lock=True)
    new_html = row.html if html is None else html
    new_text = row.text if text is None else text
    _refuse(check_template(name, new_html, new_text, sample))
    row.html, row.text, row.updated_at, row.updated_by = new_html, new_text, utcnow(), by
    session.flush()
    return row


def delete_template(session: Session, name: str) -> None:
    """Delete a stored template no list uses and no unsent issue names.

    Raises NotFound, Conflict (the shipped layout; a template in use, naming its users).
    """
    if name == SHIPPED:
        raise Conflict("the shipped layout is the default of every list and issue; it cannot be deleted")
    row = _row(session, name, lock=True)
    users = users_of(session, name)
    if users:
        raise Conflict(
            f"template {name!r} is in use by {users.describe()}; choose another layout for them first, then delete it"
        )
    session.delete(row)
    session.flush()


def hold(session: Session, name: str) -> None:
    """Lock the stored template ``name`` (if it is one) FOR SHARE until the transaction ends, so that a
    delete started meanwhile waits and then sees the issue or list naming it (PostgreSQL; SQLite's
    write transactions never overlap). For the write paths that name a template."""
    if name != SHIPPED:
        session.execute(select(EmailTemplate.id).where(EmailTemplate.name == name).with_for_update(read=True))


def set_list_template(session: Session, list_slug: str, name: str | None) -> MailingList:
    """Choose the layout of a list's issues: a stored template's name, or None (or ``issue``) for the
    shipped one. An issue naming its own template keeps it. Raises NotFound (list), InvalidInput."""
    mailing_list = get_list(session, list_slug)
    chosen = None if not name or name.strip() == SHIPPED else name.strip()
    # FOR SHARE (PostgreSQL): a delete of the template waits for this choice, then sees the list using it.
    exists_now = select(EmailTemplate.id).where(EmailTemplate.name == chosen).with_for_update(read=True)
    if chosen is not None and session.scalar(exists_now) is None:
        known = ", ".join(template_names(session)[:10]) or "none yet"
        raise InvalidInput(
            f"no stored template {chosen!r} (stored: {known}; {SHIPPED!r} is the shipped layout)", where="--template"
        )
    mailing_list.template = chosen
    session.flush()
    return mailing_list
