"""A Jinja2 environment taught one language: ``{% trans %}``, ``_()`` and ``ngettext()``, dates.

Templates mark their text with Jinja2's i18n extension, in its new style (``_()`` and
``{% trans %}`` format their ``%(name)s`` values themselves, escaping them in HTML) with
whitespace trimmed, as ``babel.cfg`` extracts them. One environment per language: each has
that language's translations installed, and sees ``language`` (its code, for ``<html lang>``),
the ``day`` filter (a date as the language writes it) and the ``translated`` filter (a
:class:`~newsletter.locales.translatable.Translatable` said in the language).
"""

from __future__ import annotations

from typing import Any

from jinja2 import Environment

from newsletter.locales.formats import long_date
from newsletter.locales.languages import translations
from newsletter.locales.translatable import say

#: What ``babel.cfg`` must tell the extractor too, or the message ids would differ.
I18N_EXTENSION = "jinja2.ext.i18n"


def teach(env: Environment, language: str) -> Environment:
    """Install ``language``'s translations and filters in ``env`` (a new one: each language has its own).

    Raises ValueError for a language that is not shipped.
    """
    catalogue = translations(language)
    env.add_extension(I18N_EXTENSION)
    env.policies["ext.i18n.trimmed"] = True
    env.install_gettext_translations(catalogue, newstyle=True)  # type: ignore[attr-defined]
    env.globals["language"] = language

    def translated(value: Any) -> Any:
        return say(value, catalogue)

    def day(value: Any) -> str:
        return long_date(value, language)

    env.filters["translated"] = translated
    env.filters["day"] = day
    return env
