"""The languages shipped: a list's emails are written in one, a page is shown in one.

English is the source language (templates and code are written in it, so it has no
catalogue); every other language has a compiled catalogue next to this module,
``<code>/LC_MESSAGES/messages.mo``, made from its ``messages.po`` by ``make translations``.
"""

from __future__ import annotations

from functools import cache
from gettext import NullTranslations
from pathlib import Path

from newsletter.errors import InvalidInput

#: The language the templates and the code are written in.
SOURCE = "en"
#: Every language shipped, by its code, with its name in itself (as a reader looks for it).
SHIPPED: dict[str, str] = {"en": "English", "de": "Deutsch", "fr": "Français", "es": "Español"}
#: The gettext domain of the catalogues.
DOMAIN = "messages"
#: The folder holding ``<code>/LC_MESSAGES/messages.po`` and ``.mo``: this package's.
CATALOGUES = Path(__file__).resolve().parent


def choices() -> str:
    """``en (English), de (Deutsch), ...``: the shipped languages, for help texts and errors."""
    return ", ".join(f"{code} ({name})" for code, name in SHIPPED.items())


def parse_language(value: str, *, where: str = "--language") -> str:
    """A shipped language's code from what a person typed (``de``, ``DE``, ``de-DE`` is refused).

    Raises InvalidInput naming the shipped languages and ``where`` (the field or option).
    """
    code = value.strip().lower()
    if code in SHIPPED:
        return code
    raise InvalidInput(f"language must be one of {choices()}, not {value!r}", where=where)


def catalogue_file(language: str, suffix: str = ".mo") -> Path:
    """The compiled (``.mo``) or source (``.po``) catalogue of a shipped language other than English."""
    return CATALOGUES / language / "LC_MESSAGES" / f"{DOMAIN}{suffix}"


@cache
def translations(language: str) -> NullTranslations:
    """The translations into a shipped language (English: none, the text as written), read once.

    Raises ValueError for a language that is not shipped, FileNotFoundError when its compiled
    catalogue is missing (run ``make translations``): never English in its place without a word.
    """
    if language not in SHIPPED:
        raise ValueError(f"{language!r} is not a shipped language ({choices()})")
    # Babel only here: the CLI checks a list's language without loading it.
    from babel.support import NullTranslations as Untranslated
    from babel.support import Translations

    if language == SOURCE:
        return Untranslated()
    with catalogue_file(language).open("rb") as compiled:
        return Translations(compiled, domain=DOMAIN)
