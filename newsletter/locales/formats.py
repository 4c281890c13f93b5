"""Dates, lifetimes and lists of names, said the way each language says them (Babel's CLDR data)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime

from babel.dates import format_date
from babel.lists import format_list

from newsletter.locales.translatable import Translatable, translatable_plural

#: The CLDR locale each language's dates are written in: English as "7 January 2026", like the pages always did.
_DATE_LOCALES = {"en": "en_GB"}


def long_date(value: date | datetime | None, language: str) -> str:
    """``7 January 2026``, ``7. Januar 2026``, ``7 janvier 2026``, ``7 de enero de 2026``; "" for None."""
    if value is None:
        return ""
    day = value.date() if isinstance(value, datetime) else value
    return format_date(day, format="long", locale=_DATE_LOCALES.get(language, language))


def either_of(names: Sequence[str], language: str) -> str:
    """``Weekly or The Monthly``, ``Weekly oder The Monthly``: any one of several names."""
    return format_list(list(names), style="or", locale=language) if names else ""


def lifetime(days: float) -> Translatable:
    """How long a link works, for people: "7 days", "1 day", or "12 hours" under a day."""
    if days >= 1 and days == int(days):
        return translatable_plural("%(count)d day", "%(count)d days", int(days))
    hours = max(1, round(days * 24))
    return translatable_plural("%(count)d hour", "%(count)d hours", hours)
