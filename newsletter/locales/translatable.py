"""Text written in English that can still be said in another language when it is shown.

Code deep in the domain (a form's error, say) does not know who will read what it writes:
the CLI and the API show it in English, a subscriber's page in the reader's language. So
it raises or returns a :class:`Translatable`: a ``str`` holding the English text, which
every caller can use as before, that also remembers its message id and values, so the
edge that knows the language says it there (:func:`say`).

``translatable("please check your name: %(reason)s", reason=...)`` marks a message for
the catalogues (``make translations`` extracts the calls by name, as ``gettext`` calls);
its values may themselves be translatable, and are said in the same language.
"""

from __future__ import annotations

from collections.abc import Callable
from gettext import NullTranslations
from typing import Any


class Translatable(str):
    """English text (the string itself) that :meth:`in_language` says in another language."""

    _say: Callable[[NullTranslations], str]

    def __new__(cls, english: str, say: Callable[[NullTranslations], str]) -> Translatable:
        text = super().__new__(cls, english)
        text._say = say
        return text

    def in_language(self, translations: NullTranslations) -> str:
        """The text in the language of ``translations`` (English without a translation)."""
        return self._say(translations)

    def __reduce__(self) -> tuple[type[str], tuple[str]]:
        # Pickled (a task argument, an exception crossing processes), it travels as its English text.
        return (str, (str(self),))


def translatable(msgid: str, **values: Any) -> Translatable:
    """``msgid % values``, translatable; ``values`` may be translatable too."""

    def said(translations: NullTranslations) -> str:
        return translations.gettext(msgid) % _said(values, translations)

    return Translatable(msgid % _said(values, None), said)


def translatable_plural(singular: str, plural: str, count: int, **values: Any) -> Translatable:
    """The singular or plural (by ``count``, as each language counts), formatted with ``count`` and ``values``."""
    values = {"count": count, **values}

    def said(translations: NullTranslations) -> str:
        return translations.ngettext(singular, plural, count) % _said(values, translations)

    return Translatable((singular if count == 1 else plural) % _said(values, None), said)


def say(text: Any, translations: NullTranslations) -> Any:
    """``text`` in the language of ``translations`` if it is translatable; anything else as it is."""
    return text.in_language(translations) if isinstance(text, Translatable) else text


def _said(values: dict[str, Any], translations: NullTranslations | None) -> dict[str, Any]:
    if translations is None:
        return {k: str(v) if isinstance(v, Translatable) else v for k, v in values.items()}
    return {k: say(v, translations) for k, v in values.items()}
