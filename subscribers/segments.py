"""Segments: saved filters over a list's subscribers, and the small language they are written in.

A filter is parsed (:func:`parse`: a tokenizer and a recursive-descent parser, pure functions
over the text) into a tree of plain values, then compiled (:func:`compile_filter`) to one
SQLAlchemy condition on ``Subscriber`` joined to the list's ``Subscription``: never to SQL text,
so a value in a filter is always a bound parameter. Any mistake raises :class:`SegmentError`,
which names the bad part (its text) and where it starts (``position``, counted from 0).

The language (keywords in any case)::

    filter     := or
    or         := and ("or" and)*
    and        := unary ("and" unary)*
    unary      := "not" unary | "(" or ")" | condition
    condition  := FIELD "=" STRING | FIELD "!=" STRING
                | FIELD "in" "(" STRING ("," STRING)* ")"
                | FIELD "contains" STRING
                | "subscribed" ("before" | "after") DATE
                | ("engaged" | "opened" | "clicked") "in" "last" NUMBER ("send" | "sends")
    FIELD      := "email" | "domain" | "name" | "source" | "attribute." KEY

* Text compares without regard to case (on SQLite only for the letters A to Z: a name with
  "Ü" matches "Ü", not "ü"); ``domain`` is the part of the address after the ``@``;
  ``source`` is how the subscription came (form, import, admin, api); ``attribute.KEY`` is the
  subscriber's attribute KEY as text (a missing attribute reads as the empty string).
* ``contains`` is a substring match, case-insensitive.
* ``subscribed before D``: confirmed (or, never confirmed, asked) before the day D began (UTC);
  ``subscribed after D``: from the day after D on.
* ``engaged in last N sends``: a person (machine opens and clicks left out) opened or clicked any
  of the list's last N individually tracked sends; ``opened`` and ``clicked`` ask for one kind.
  Only on a list whose tracking is ``individual``: other lists keep no subscriber on an event.
* ``not`` binds tightest, then ``and``, then ``or``; parentheses group.

Example: ``domain = "gmail.com" and attribute.plan in ("pro", "team") and not name contains "test"
and subscribed after 2026-01-01 and source = "import" and engaged in last 3 sends``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import String, and_, cast, exists, func, literal, not_, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from newsletter.errors import Conflict, InvalidInput, NotFound
from newsletter.store.models import (
    EngagementEvent,
    MailingList,
    Segment,
    Send,
    Subscriber,
    Subscription,
    Suppression,
)
from newsletter.store.states import EngagementKind, EngagementOrigin, SubscriptionStatus, Tracking
from subscribers.lists import get_list

FILTER_MAX = 2000  # characters
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 _.-]{0,99}$")
FIELDS = ("email", "domain", "name", "source")
SOURCES = ("form", "import", "admin", "api")
ENGAGEMENT = ("engaged", "opened", "clicked")
MAX_SENDS = 1000
#: How deep ( and not may nest: deeper is no filter a person writes, and the parser recurses.
MAX_DEPTH = 32


class SegmentError(InvalidInput):
    """A filter that does not parse or compile: ``reason``, the bad ``text`` and its ``position`` (from 0)."""

    def __init__(self, reason: str, *, text: str, position: int, where: str = "filter") -> None:
        self.reason = reason
        self.text = text
        self.position = position
        shown = repr(text) if text else "the end"
        super().__init__(f"{reason}: {shown} at character {position + 1}", where=where)

    def as_json(self) -> dict[str, object]:
        return {"error": self.message, "reason": self.reason, "text": self.text, "position": self.position}


# --- tokens ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Token:
    kind: str  # "word", "string", "date", "number", "op", "end"
    value: str  # a word in lower case, a string's content, the operator itself
    position: int
    text: str  # as written


_SPACE = re.compile(r"\s+")
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}(?![\w-])")
_NUMBER = re.compile(r"[0-9]+(?![\w.-])")
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9_-]+)?")
_OPS = ("!=", "=", "(", ")", ",")


def tokenize(source: str) -> list[Token]:
    """The filter's tokens, ending with an "end" token. Raises SegmentError."""
    if len(source) > FILTER_MAX:
        raise SegmentError(
            f"a filter is at most {FILTER_MAX} characters", text=source[FILTER_MAX:][:20], position=FILTER_MAX
        )
    unsafe = re.search("[\x00\ud800-\udfff]", source)
    if unsafe:  # PostgreSQL cannot take a NUL, nor UTF-8 a lone surrogate
        raise SegmentError(
            "a NUL character or lone surrogate", text=repr(unsafe.group())[1:-1], position=unsafe.start()
        )
    tokens: list[Token] = []
    at = 0
    while at < len(source):
        space = _SPACE.match(source, at)
        if space:
            at = space.end()
            continue
        char = source[at]
        if char == '"':
            tokens.append(_string(source, at))
        elif match := _DATE.match(source, at):
            try:
                date.fromisoformat(match.group())
            except ValueError:
                raise SegmentError("not a date (use YYYY-MM-DD)", text=match.group(), position=at) from None
            tokens.append(Token("date", match.group(), at, match.group()))
        elif match := _NUMBER.match(source, at):
            tokens.append(Token("number", match.group(), at, match.group()))
        elif match := _WORD.match(source, at):
            tokens.append(Token("word", match.group().lower(), at, match.group()))
        else:
            op = next((o for o in _OPS if source.startswith(o, at)), None)
            if op is None:
                bad = re.match(r"\S+", source[at:])
                raise SegmentError("unexpected character", text=bad.group() if bad else char, position=at)
            tokens.append(Token("op", op, at, op))
        at = tokens[-1].position + len(tokens[-1].text)
    tokens.append(Token("end", "", len(source), ""))
    return tokens


def _string(source: str, start: int) -> Token:
    """A double-quoted string from ``start``; a backslash escapes the next character."""
    out: list[str] = []
    at = start + 1
    while at < len(source):
        char = source[at]
        if char == "\\" and at + 1 < len(source):
            out.append(source[at + 1])
            at += 2
        elif char == '"':
            return Token("string", "".join(out), start, source[start : at + 1])
        else:
            out.append(char)
            at += 1
    raise SegmentError('a string is not closed (a " is missing)', text=source[start:][:30], position=start)


# --- the tree -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Compare:
    """``field`` ("email", "domain", "name", "source" or "attribute") compared with ``values``."""

    field: str
    key: str | None  # the attribute's name
    op: str  # "=", "!=", "in", "contains"
    values: tuple[str, ...]
    position: int


@dataclass(frozen=True)
class Subscribed:
    when: str  # "before" or "after"
    day: date
    position: int


@dataclass(frozen=True)
class Engaged:
    kind: str  # "engaged", "opened", "clicked"
    sends: int
    position: int
    text: str


@dataclass(frozen=True)
class Not:
    part: Node


@dataclass(frozen=True)
class All:
    parts: tuple[Node, ...]


@dataclass(frozen=True)
class AnyOf:
    parts: tuple[Node, ...]


Node = Compare | Subscribed | Engaged | Not | All | AnyOf


def parse(source: str) -> Node:
    """The filter's tree. Raises SegmentError naming the first bad part."""
    parser = _Parser(tokenize(source))
    if parser.peek.kind == "end":
        raise SegmentError('the filter is empty; write a condition such as domain = "example.com"', text="", position=0)
    node = parser.or_()
    if parser.peek.kind != "end":
        raise parser.error("expected and, or, or the end of the filter")
    return node


class _Parser:
    def __init__(self, tokens: list[Token]) -> None:
        self.tokens = tokens
        self.at = 0
        self.depth = 0

    @property
    def peek(self) -> Token:
        return self.tokens[self.at]

    def take(self) -> Token:
        token = self.tokens[self.at]
        if token.kind != "end":
            self.at += 1
        return token

    def error(self, reason: str, token: Token | None = None) -> SegmentError:
        token = token or self.peek
        return SegmentError(reason, text=token.text, position=token.position)

    def is_word(self, *words: str) -> bool:
        return self.peek.kind == "word" and self.peek.value in words

    def expect_word(self, word: str, reason: str) -> Token:
        if not self.is_word(word):
            raise self.error(reason)
        return self.take()

    def expect_op(self, op: str, reason: str) -> Token:
        if self.peek.kind != "op" or self.peek.value != op:
            raise self.error(reason)
        return self.take()

    def or_(self) -> Node:
        parts = [self.and_()]
        while self.is_word("or"):
            self.take()
            parts.append(self.and_())
        return parts[0] if len(parts) == 1 else AnyOf(tuple(parts))

    def and_(self) -> Node:
        parts = [self.unary()]
        while self.is_word("and"):
            self.take()
            parts.append(self.unary())
        return parts[0] if len(parts) == 1 else All(tuple(parts))

    def unary(self) -> Node:
        nests = self.is_word("not") or (self.peek.kind == "op" and self.peek.value == "(")
        if not nests:
            return self.condition()
        if self.depth >= MAX_DEPTH:
            raise self.error(f"nested too deep: at most {MAX_DEPTH} levels of ( and not")
        self.depth += 1
        try:
            if self.is_word("not"):
                self.take()
                return Not(self.unary())
            self.take()
            node = self.or_()
            self.expect_op(")", "expected ) to close the (")
            return node
        finally:
            self.depth -= 1

    def condition(self) -> Node:
        token = self.peek
        if token.kind == "end":
            raise self.error("the filter ends where a condition should follow")
        if token.kind != "word":
            raise self.error(
                "expected a condition (a field such as domain, name, attribute.KEY, or subscribed, engaged)"
            )
        if token.value == "subscribed":
            self.take()
            if not self.is_word("before", "after"):
                raise self.error("expected before or after")
            when = self.take().value
            day = self.take()
            if day.kind != "date":
                raise self.error("expected a date (YYYY-MM-DD)", day)
            parsed = date.fromisoformat(day.value)
            if when == "after" and parsed >= date.max:
                raise self.error(f"no day comes after {date.max.isoformat()}", day)
            return Subscribed(when, parsed, token.position)
        if token.value in ENGAGEMENT:
            return self.engagement()
        field, key = self.field()
        if self.peek.kind == "op" and self.peek.value in ("=", "!="):
            op = self.take().value
            return Compare(field, key, op, (self.string(),), token.position)
        if self.is_word("contains"):
            self.take()
            return Compare(field, key, "contains", (self.string(),), token.position)
        if self.is_word("in"):
            self.take()
            self.expect_op("(", 'expected ( to open the list of values, as in ("a", "b")')
            values = [self.string()]
            while self.peek.kind == "op" and self.peek.value == ",":
                self.take()
                values.append(self.string())
            self.expect_op(")", "expected , or ) after a value")
            return Compare(field, key, "in", tuple(values), token.position)
        raise self.error("expected =, !=, in or contains")

    def field(self) -> tuple[str, str | None]:
        token = self.take()
        if token.value.startswith("attribute."):
            return "attribute", token.text.split(".", 1)[1]
        if token.value in FIELDS:
            return token.value, None
        if token.value == "attribute":
            raise self.error("name the attribute, as in attribute.plan", token)
        raise self.error("unknown field (use email, domain, name, source, attribute.KEY, subscribed or engaged)", token)

    def string(self) -> str:
        token = self.take()
        if token.kind != "string":
            raise self.error('expected a value in double quotes, as in "pro"', token)
        return token.value

    def engagement(self) -> Engaged:
        start = self.take()
        within = self.expect_word("in", f"expected in, as in {start.value} in last 3 sends")
        last = self.expect_word("last", f"expected last, as in {start.value} in last 3 sends")
        number = self.take()
        if number.kind != "number" or not 1 <= int(number.value) <= MAX_SENDS:
            raise self.error(f"expected a number of sends from 1 to {MAX_SENDS}", number)
        if not self.is_word("send", "sends"):
            raise self.error("expected sends")
        end = self.take()
        text = " ".join(t.text for t in (start, within, last, number, end))
        return Engaged(start.value, int(number.value), start.position, text)


# --- checks and the compiled condition -----------------------------------------------------


def check(node: Node, *, tracking: str) -> None:
    """Refuse what parses but cannot mean anything on this list. Raises SegmentError."""
    for leaf in _leaves(node):
        if isinstance(leaf, Engaged) and tracking != Tracking.INDIVIDUAL:
            raise SegmentError(
                f"{leaf.kind} needs the list's tracking to be individual (it is {tracking}): "
                "other lists keep no subscriber on an open or click",
                text=leaf.text,
                position=leaf.position,
            )
        if isinstance(leaf, Compare) and leaf.field == "source":
            unknown = [v for v in leaf.values if v.lower() not in SOURCES]
            if unknown:
                raise SegmentError(
                    f"unknown source {unknown[0]!r} (use one of {', '.join(SOURCES)})",
                    text="source",
                    position=leaf.position,
                )


def _leaves(node: Node) -> list[Node]:
    if isinstance(node, Not):
        return _leaves(node.part)
    if isinstance(node, All | AnyOf):
        return [leaf for part in node.parts for leaf in _leaves(part)]
    return [node]


def compile_filter(node: Node, list_id: int) -> Any:
    """``node`` as one SQLAlchemy condition on Subscriber joined to the list's Subscription.

    Every condition is true or false, never NULL (a missing attribute reads as ""), so ``not``
    is the exact complement.
    """
    if isinstance(node, Not):
        return not_(compile_filter(node.part, list_id))
    if isinstance(node, All):
        return and_(*(compile_filter(p, list_id) for p in node.parts))
    if isinstance(node, AnyOf):
        return or_(*(compile_filter(p, list_id) for p in node.parts))
    if isinstance(node, Subscribed):
        since = func.coalesce(Subscription.confirmed_at, Subscription.requested_at)
        if node.when == "before":
            return since < _midnight(node.day)
        return since >= _midnight(node.day + timedelta(days=1))
    if isinstance(node, Engaged):
        return _engaged(node, list_id)
    return _compare(node)


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time(0), tzinfo=UTC)


def _compare(node: Compare) -> Any:
    """Text compared without regard to case, both sides lowered by the database (SQLite lowers ASCII
    letters only, PostgreSQL every letter), so a value written as stored always matches."""
    values = node.values
    if node.field == "domain":
        address = func.lower(Subscriber.email)
        if node.op == "contains":
            return address.like(_lowered("%@%" + _escape(values[0]) + "%"), escape="\\")
        matched = or_(*(address.like(_lowered("%@" + _escape(v.lstrip("@"))), escape="\\") for v in values))
        return not_(matched) if node.op == "!=" else matched
    column: Any
    if node.field == "source":
        column = Subscription.source
    elif node.field == "attribute":
        assert node.key is not None
        column = func.coalesce(cast(Subscriber.attributes[node.key].as_string(), String), "")
    else:
        column = Subscriber.email if node.field == "email" else Subscriber.name
    column = func.lower(column)
    if node.op == "contains":
        return column.like(_lowered("%" + _escape(values[0]) + "%"), escape="\\")
    if node.op == "=":
        return column == _lowered(values[0])
    if node.op == "!=":
        return column != _lowered(values[0])
    return column.in_([_lowered(v) for v in values])


def _lowered(value: str) -> Any:
    return func.lower(literal(value, String))


def _escape(value: str) -> str:
    """A LIKE pattern's wildcards and escape character as plain characters."""
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _engaged(node: Engaged, list_id: int) -> Any:
    recent = (
        select(Send.id)
        .where(Send.list_id == list_id, Send.tracking == Tracking.INDIVIDUAL, Send.started_at.is_not(None))
        .order_by(Send.id.desc())
        .limit(node.sends)
    )
    conditions = [
        EngagementEvent.subscriber_id == Subscriber.id,
        EngagementEvent.origin == EngagementOrigin.HUMAN,
        EngagementEvent.send_id.in_(recent),
    ]
    if node.kind != "engaged":
        conditions.append(
            EngagementEvent.kind == (EngagementKind.OPEN if node.kind == "opened" else EngagementKind.CLICK)
        )
    return exists().where(*conditions)


def condition_for(mailing_list: MailingList, source: str) -> Any:
    """The filter ``source`` parsed, checked for the list, and compiled. Raises SegmentError."""
    node = parse(source)
    check(node, tracking=mailing_list.tracking)
    return compile_filter(node, mailing_list.id)


# --- saved segments -------------------------------------------------------------------------


@dataclass(frozen=True)
class SegmentView:
    list_slug: str
    name: str
    filter: str
    count: int | None  # who it would mail now (confirmed, not suppressed); None when not counted
    created_at: datetime
    updated_at: datetime

    def as_json(self) -> dict[str, object]:
        return {
            "list": self.list_slug,
            "name": self.name,
            "filter": self.filter,
            "count": self.count,
            "created_at": self.created_at.isoformat(timespec="seconds"),
            "updated_at": self.updated_at.isoformat(timespec="seconds"),
        }


def check_name(name: str) -> str:
    name = name.strip()
    if not NAME_RE.match(name):
        raise InvalidInput(
            f"{name!r} is not a segment name: 1 to 100 ASCII letters, digits, spaces, '.', '_' or '-', "
            "starting with a letter or digit",
            where="name",
        )
    return name


def count_matching(session: Session, mailing_list: MailingList, source: str) -> int:
    """How many confirmed, unsuppressed subscribers of the list the filter matches. Raises SegmentError."""
    condition = condition_for(mailing_list, source)
    suppressed = exists().where(Suppression.email == Subscriber.email)
    return (
        session.scalar(
            select(func.count())
            .select_from(Subscription)
            .join(Subscriber, Subscriber.id == Subscription.subscriber_id)
            .where(
                Subscription.list_id == mailing_list.id,
                Subscription.status == SubscriptionStatus.CONFIRMED,
                not_(suppressed),
                condition,
            )
        )
        or 0
    )


def create_segment(session: Session, list_slug: str, name: str, source: str, *, replace: bool = False) -> Segment:
    """Save a segment of the list (or, with ``replace``, change an existing one's filter).

    Raises NotFound (list), InvalidInput (name), SegmentError (filter), Conflict (name taken).
    """
    mailing_list = get_list(session, list_slug)
    name = check_name(name)
    condition_for(mailing_list, source)  # refused before anything is stored
    segment = _find(session, mailing_list.id, name)
    if segment is not None:
        if not replace:
            raise Conflict(
                f"{list_slug} already has a segment named {name!r}; replace its filter (--replace, or replace in the API) or delete it first"
            )
        segment.filter = source
        return segment
    segment = Segment(list_id=mailing_list.id, name=name, filter=source)
    session.add(segment)
    try:
        with session.begin_nested():
            session.flush()
    except IntegrityError:
        raise Conflict(f"{list_slug} already has a segment named {name!r}") from None
    return segment


def get_segment(session: Session, list_slug: str, name: str) -> tuple[MailingList, Segment]:
    """Raises NotFound (the list, or no such segment)."""
    mailing_list = get_list(session, list_slug)
    segment = _find(session, mailing_list.id, name.strip())
    if segment is None:
        raise NotFound(f"{list_slug} has no segment named {name!r} (see `newsletter segments ls {list_slug}`)")
    return mailing_list, segment


def show_segment(session: Session, list_slug: str, name: str) -> SegmentView:
    """The segment with its live count. Raises NotFound, SegmentError (a saved filter the list no longer allows)."""
    mailing_list, segment = get_segment(session, list_slug, name)
    count = count_matching(session, mailing_list, segment.filter)
    return SegmentView(mailing_list.slug, segment.name, segment.filter, count, segment.created_at, segment.updated_at)


def all_segments(session: Session, list_slug: str | None = None) -> list[SegmentView]:
    """Every saved segment (of one list), by list and name, uncounted. Raises NotFound (list)."""
    query = select(Segment, MailingList.slug).join(MailingList, MailingList.id == Segment.list_id)
    if list_slug is not None:
        query = query.where(Segment.list_id == get_list(session, list_slug).id)
    rows = session.execute(query.order_by(MailingList.slug, Segment.name)).all()
    return [SegmentView(slug, s.name, s.filter, None, s.created_at, s.updated_at) for s, slug in rows]


def delete_segment(session: Session, list_slug: str, name: str) -> None:
    """Raises NotFound. Sends that used it keep its name and filter."""
    _, segment = get_segment(session, list_slug, name)
    session.delete(segment)


def _find(session: Session, list_id: int, name: str) -> Segment | None:
    return session.scalar(select(Segment).where(Segment.list_id == list_id, Segment.name == name))
