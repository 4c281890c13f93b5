"""Email addresses: validation and the one normal form used as the subscriber key."""

from __future__ import annotations

import unicodedata

from email_validator import EmailNotValidError, validate_email

from newsletter.errors import InvalidInput
from newsletter.locales.translatable import translatable


def normalise_email(raw: str) -> str:
    """Validate ``raw`` (syntax only, no DNS) and return its normal form.

    The domain is IDNA-normalised by email-validator; the whole address is then lower-cased,
    so ``Ann@Example.com`` and ``ann@example.com`` are one subscriber (every major mailbox
    provider treats local parts case-insensitively).

    Raises InvalidInput naming what is wrong with the address.
    """
    value = raw.strip()
    if not value:
        raise InvalidInput("empty email address")
    try:
        result = validate_email(value, check_deliverability=False)
    except EmailNotValidError as exc:
        raise InvalidInput(f"invalid email address {value!r}: {exc}") from None
    return result.normalized.lower()


def check_display_name(name: str) -> str:
    """Return the trimmed name; raises InvalidInput if it holds control characters (header injection).

    Refused: C0 and C1 controls (CR, LF, tab, ...), DEL, and the Unicode line and paragraph separators.
    """
    if any(unicodedata.category(c) in ("Cc", "Zl", "Zp") for c in name):
        raise InvalidInput(translatable("name contains a control character (line break or similar)"))
    name = name.strip()
    if len(name) > 200:
        raise InvalidInput(translatable("name is longer than 200 characters"))
    return name
