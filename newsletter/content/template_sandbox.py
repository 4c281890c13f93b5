"""The sandbox stored email templates are rendered in: no Python reachable, and a bounded cost.

Admins who may edit templates (``templates`` permission) do not own the code, so a stored
template (:mod:`newsletter.content.email_templates`) is compiled by an
:class:`~jinja2.sandbox.ImmutableSandboxedEnvironment`: attributes starting with ``_`` and
Python internals are unsafe (``{{ ''.__class__.__mro__ }}`` is an error, never a value),
lists and dicts cannot be changed, and a template has no loader, so it stands alone: it
cannot include, extend or import a file of the server.

The sandbox keeps templates from reaching Python, not from spending the machine; this module
also bounds what one render may cost, each limit an error naming the template's line:

- a string or list made by ``~``, ``+``, ``*``, ``%``, ``join``, ``replace`` or a string method
  may hold at most :data:`MAX_TEXT` characters (items), and that is checked *before* it is made;
- a number given to a filter or a string method (a width, a count), an exponent, a format width
  and a ``range()`` are at most :data:`MAX_NUMBER` (``lipsum`` and the ``format`` filter are gone:
  ``~`` and ``str.format`` do the same);
- a render runs at most :data:`MAX_STEPS` template lines and function calls (counted by a trace
  function on the rendering thread only, so nested loops over ``range(10000)`` stop with an error
  instead of holding a web worker for minutes).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from functools import lru_cache, wraps
from types import FrameType
from typing import Any, Literal

from jinja2 import BaseLoader, Environment, StrictUndefined, Template, TemplateNotFound
from jinja2.compiler import CodeGenerator, Frame
from jinja2.exceptions import SecurityError
from jinja2.nodes import Concat
from jinja2.runtime import Context, markup_join, str_join
from jinja2.sandbox import ImmutableSandboxedEnvironment

from newsletter.locales.templates import teach

__all__ = ["MAX_NUMBER", "MAX_STEPS", "MAX_TEXT", "LayoutSandbox", "TooCostly", "compiled", "step_budget"]

#: The most characters (or list items) one operation of a template may make.
MAX_TEXT = 2_000_000
#: The largest width, count, exponent or range a template may ask for.
MAX_NUMBER = 10_000
#: Template lines plus function calls one render may run.
MAX_STEPS = 2_000_000
#: The largest integer a template may make, in bits (about 1,200 digits).
MAX_INT_BITS = 4096

Kind = Literal["html", "txt"]


class TooCostly(SecurityError):
    """A template asked for more than a render may cost (see the module's limits)."""


class _NoLoader(BaseLoader):
    def get_source(self, environment: Environment, template: str) -> tuple[str, str | None, Callable[[], bool]]:
        raise TemplateNotFound(
            template,
            f"a stored template stands alone: it cannot include, extend or import {template!r}; "
            "paste what it needs into the template itself",
        )


def _too_long(size: int, what: str) -> TooCostly:
    return TooCostly(f"{what} would be {size:,} characters long; a template may make at most {MAX_TEXT:,}")


def _check_number(value: Any, what: str) -> None:
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_NUMBER:
        raise TooCostly(f"{what} {value:,} is too large; a template may ask for at most {MAX_NUMBER:,}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_int_bits(bits: int, what: str) -> None:
    """Refuse an integer result of more than MAX_INT_BITS bits before it is computed: one ``**`` of big
    numbers (or products doubling in a loop) would hold the web process for minutes, past any step count."""
    if bits > MAX_INT_BITS:
        raise TooCostly(
            f"{what} would be a number of about {bits * 30103 // 100000:,} digits; a template may make at most {MAX_INT_BITS * 30103 // 100000:,}"
        )


def _bounded_join(pieces: Iterable[str]) -> str:
    """The template's whole output (Environment.concat), refused as soon as it passes MAX_TEXT characters."""
    kept: list[str] = []
    size = 0
    for piece in pieces:
        size += len(piece)
        if size > MAX_TEXT:
            raise TooCostly(f"the template's output passes {MAX_TEXT:,} characters; a template may make at most that")
        kept.append(piece)
    return "".join(kept)


def _length(value: Any) -> int:
    return len(value) if isinstance(value, (str, list, tuple)) else len(str(value))


def _check_format_string(fmt: str) -> None:
    """Widths and precisions written in a format string (``{:>99999}``, ``%99999d``) are numbers too."""
    for number in re.findall(r"\d+", fmt):
        if len(number) > 5 or int(number) > MAX_NUMBER:
            fields = re.findall(r"\{[^{}]*\}|%(?:\([^)]*\))?[-#0 +]*\d*(?:\.\d*)?[a-zA-Z%]", fmt)
            if any(number in field for field in fields):
                _check_number(int(number), "a width or precision of")


def _replace_size(text: str, old: str, new: str, count: int = -1) -> int:
    found = len(text) + 1 if old == "" else text.count(old)
    if count >= 0:
        found = min(found, count)
    return len(text) + found * max(0, len(new) - len(old))


def bounded_range(*args: int) -> range:
    """``range()`` of at most MAX_NUMBER numbers."""
    numbers = range(*args)
    if len(numbers) > MAX_NUMBER:
        raise TooCostly(f"range() of {len(numbers):,} numbers; a template may ask for at most {MAX_NUMBER:,}")
    return numbers


def _bounded_filter(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
    """The filter, refusing a number argument over MAX_NUMBER (``center(10**9)``, ``indent``, ``slice``...)."""
    skip = 2 if getattr(function, "jinja_pass_arg", None) is not None else 1

    @wraps(function)  # keeps jinja_pass_arg: Jinja passes the context, eval context or environment as before
    def bounded(*args: Any, **kwargs: Any) -> Any:
        for value in (*args[skip:], *kwargs.values()):
            _check_number(value, f"the {name} filter's argument")
        if name == "join":
            items = list(args[skip - 1])
            glue = args[skip] if len(args) > skip else kwargs.get("d", "")
            size = sum(_length(item) for item in items) + _length(glue) * max(0, len(items) - 1)
            if size > MAX_TEXT:
                raise _too_long(size, "the joined text")
            return function(*args[: skip - 1], items, *args[skip:], **kwargs)
        if name == "replace" and len(args) > skip + 1:
            size = _replace_size(str(args[skip - 1]), str(args[skip]), str(args[skip + 1]))
            if size > MAX_TEXT:
                raise _too_long(size, "the replaced text")
        return function(*args, **kwargs)

    return bounded


#: The i18n extension's functions (``_()``, ``{% trans %}``): they format their message with ``%``.
_GETTEXT = frozenset({"gettext", "ngettext", "pgettext", "npgettext", "_gettext_alias"})


class _BoundedCodeGenerator(CodeGenerator):
    """Compiles ``a ~ b`` to the environment's bounded concatenation instead of a plain join."""

    def visit_Concat(self, node: Concat, frame: Frame) -> None:
        if frame.eval_ctx.volatile:
            markup = "context.eval_ctx.autoescape"
        else:
            markup = "True" if frame.eval_ctx.autoescape else "False"
        self.write("environment.bounded_concat((")
        for argument in node.nodes:
            self.visit(argument, frame)
            self.write(", ")
        self.write(f"), {markup})")


class LayoutSandbox(ImmutableSandboxedEnvironment):
    """The environment of stored templates: HTML ones autoescaped, text ones not; strict undefined
    variables and the whitespace rules of the shipped templates (trim and lstrip blocks)."""

    intercepted_binops = frozenset({"*", "**", "%", "+"})
    code_generator_class = _BoundedCodeGenerator

    def __init__(self, *, html: bool) -> None:
        super().__init__(
            loader=_NoLoader(),
            autoescape=html,
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=True,
        )
        self.concat = _bounded_join  # type: ignore[method-assign]
        self.globals.pop("lipsum", None)
        self.globals["range"] = bounded_range
        self.filters.pop("format", None)
        self.filters = {name: _bounded_filter(name, function) for name, function in self.filters.items()}

    def bounded_concat(self, values: Iterable[Any], markup: bool) -> str:
        values = tuple(values)
        size = sum(_length(value) for value in values)
        if size > MAX_TEXT:
            raise _too_long(size, "the joined text")
        return markup_join(values) if markup else str_join(values)

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        sequences = (str, list, tuple)
        if operator == "*":
            if _is_int(left) and _is_int(right):
                _check_int_bits(abs(left).bit_length() + abs(right).bit_length(), "the product")
            sequence, times = (left, right) if isinstance(left, sequences) else (right, left)
            if isinstance(sequence, sequences) and isinstance(times, int) and len(sequence) * times > MAX_TEXT:
                raise _too_long(len(sequence) * times, "the repeated text")
        elif operator == "+":
            if isinstance(left, sequences) and isinstance(right, sequences) and len(left) + len(right) > MAX_TEXT:
                raise _too_long(len(left) + len(right), "the joined text")
        elif operator == "**":
            if isinstance(right, (int, float)) and abs(right) > 1000 and left not in (0, 1, -1):
                raise TooCostly(f"the exponent {right} is too large; a template may use at most 1000")
            if _is_int(left) and _is_int(right) and right > 0 and abs(left) > 1:
                _check_int_bits(abs(left).bit_length() * right, "the power")  # (9999 ** 1000) ** 1000 ...
        elif operator == "%" and isinstance(left, str):
            _check_format_string(left)
            for value in right if isinstance(right, tuple) else (right,):
                _check_number(value, "the formatted number")
            size = len(left) + sum(_length(value) for value in (right if isinstance(right, tuple) else (right,)))
            if size > MAX_TEXT:
                raise _too_long(size, "the formatted text")
        return super().call_binop(context, operator, left, right)

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        if getattr(__obj, "__name__", "") in _GETTEXT:
            for message in args:  # _("%(n)99999999s", n=1) formats as % does
                if isinstance(message, str):
                    _check_format_string(message)
            for value in kwargs.values():
                _check_number(value, "the formatted number")
        target = getattr(__obj, "__self__", None)
        if isinstance(target, str):
            method = getattr(__obj, "__name__", "")
            for value in (*args, *kwargs.values()):
                _check_number(value, f"the argument of {method}()")
            if method == "join" and args:
                items = list(args[0])
                size = sum(_length(item) for item in items) + len(target) * max(0, len(items) - 1)
                if size > MAX_TEXT:
                    raise _too_long(size, "the joined text")
                args = (items, *args[1:])
            elif method == "replace" and len(args) >= 2:
                size = _replace_size(target, str(args[0]), str(args[1]), args[2] if len(args) > 2 else -1)
                if size > MAX_TEXT:
                    raise _too_long(size, "the replaced text")
        return super().call(__context, __obj, *args, **kwargs)

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        wrapped = super().wrap_str_format(value)
        if wrapped is None:
            return None
        _check_format_string(str(value.__self__))
        inner = wrapped

        def checked(*args: Any, **kwargs: Any) -> str:
            for argument in (*args, *kwargs.values()):
                _check_number(argument, "the formatted number")
            return inner(*args, **kwargs)

        return checked


@lru_cache(maxsize=16)
def _environment(kind: Kind, language: str) -> LayoutSandbox:
    """The sandbox of one part, taught ``language`` as the shipped layout is (``{% trans %}``, ``_()``,
    ``language``: newsletter.locales.templates), so a copy of it says its words in the list's language."""
    env = LayoutSandbox(html=kind == "html")
    teach(env, language)
    return env


@lru_cache(maxsize=64)
def compiled(kind: Kind, language: str, filename: str, source: str) -> Template:
    """A stored template's source compiled in the sandbox of ``language`` (cached by source).
    ``filename`` (``NAME.html``) is what errors and tracebacks name. Raises TemplateSyntaxError."""
    env = _environment(kind, language)
    return env.template_class.from_code(env, env.compile(source, filename, filename), env.make_globals(None))


@contextmanager
def step_budget(limit: int = MAX_STEPS) -> Iterator[None]:
    """Count the template lines and function calls run on this thread within the block; past
    ``limit`` the next one raises TooCostly. The thread's previous trace function (a debugger's,
    coverage's) is put back after."""
    steps = 0

    def over() -> TooCostly:
        return TooCostly(
            f"rendering the template took more than {limit:,} steps (a loop too large, or loops inside loops?)"
        )

    def in_template(frame: FrameType, event: str, arg: object) -> Any:
        nonlocal steps
        if event == "line":
            steps += 1
            if steps > limit:
                raise over()
        return in_template

    def on_call(frame: FrameType, event: str, arg: object) -> Any:
        nonlocal steps
        steps += 1
        if steps > limit:
            raise over()
        return in_template if "__jinja_template__" in frame.f_globals else None

    previous = sys.gettrace()
    sys.settrace(on_call)
    try:
        yield
    finally:
        sys.settrace(previous)
