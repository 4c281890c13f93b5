"""Which shipped language a reader asks for, from the ``Accept-Language`` header (RFC 9110, 12.5.4).

A page follows the reader's browser when it names a language we ship, in the order of its
quality values (``fr;q=0.9, de;q=0.8`` is French; ``de-AT`` is German); otherwise it is shown
in the fallback, the language of the list it is about. ``*`` ("any") picks the fallback, and
``q=0`` means "not this one".
"""

from __future__ import annotations

from newsletter.locales.languages import SHIPPED

#: Enough for any real browser; a longer header is read up to here.
_MAX_HEADER = 2000
_MAX_RANGES = 40


def negotiate(accept_language: str | None, fallback: str) -> str:
    """The shipped language the reader prefers most, or ``fallback`` when they name none of ours."""
    wanted: list[tuple[float, int, str]] = []
    for position, item in enumerate((accept_language or "")[:_MAX_HEADER].split(",")[:_MAX_RANGES]):
        tag, *params = (part.strip() for part in item.split(";"))
        quality = _quality(params)
        if tag and quality is not None and quality > 0:
            wanted.append((-quality, position, tag.lower()))
    for _, _, tag in sorted(wanted):
        if tag == "*":
            return fallback
        primary = tag.split("-", 1)[0]
        if primary in SHIPPED:
            return primary
    return fallback


def _quality(params: list[str]) -> float | None:
    """The ``q`` parameter (default 1), or None when it is malformed (the range is ignored)."""
    for param in params:
        name, _, value = param.partition("=")
        if name.strip().lower() == "q":
            try:
                quality = float(value.strip())
            except ValueError:
                return None
            return quality if 0 <= quality <= 1 else None
    return 1.0
