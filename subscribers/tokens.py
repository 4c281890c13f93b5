"""Signed tokens for the links in every email: unsubscribe, preferences, confirmation.

A token names a subscriber, a list and a purpose, and carries an HMAC-SHA256 signature
made with the secret key. It is checked in constant time; old keys still verify during a
key rotation (pass them in ``old_keys``). Tokens contain only numbers, so they fit in URL
paths and mail addresses as they are::

    v1.<subscriber_id>.<list_id>.<issued_at, unix seconds>.<signature, base64url>

How long a token lives is the caller's choice (``max_age``): confirmation links
NEWSLETTER_CONFIRM_DAYS, preferences links NEWSLETTER_PREFERENCES_DAYS; unsubscribe links
never expire (RFC 8058 one-click must keep working from any old email).

A private list's archived issues open with a key of their own (``archive_key``): the HMAC
of the list's and the issue's ids, the same for every reader, so it tracks no one.

A tracked send's links and image carry ``<delivery_id>.<signature>`` (``tracking_token``):
the HMAC of the send's and the delivery's ids, so a reader can neither forge another's
clicks nor move theirs to another send.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Sequence
from dataclasses import dataclass

from newsletter.errors import InvalidInput
from newsletter.locales.translatable import translatable

PURPOSES = ("unsubscribe", "preferences", "confirm")
ARCHIVE_PURPOSE = "archive"  # signs "<list_id>.<issue_id>", never a token: tokens start "v1."
TRACKING_PURPOSE = "tracking"  # signs "<send_id>.<delivery_id>"


@dataclass(frozen=True)
class TokenClaims:
    subscriber_id: int
    list_id: int
    purpose: str
    issued_at: int


class TokenExpired(InvalidInput):
    """A well-signed token past its ``max_age``; ``claims`` says whom it names (to offer a fresh link)."""

    def __init__(self, message: str, claims: TokenClaims) -> None:
        super().__init__(message)
        self.claims = claims


class TokenSigner:
    """Makes and checks tokens with one current key and any number of old ones."""

    def __init__(self, key: str, old_keys: Sequence[str] = ()) -> None:
        self._current = key.encode()
        self._all = [self._current, *(k.encode() for k in old_keys)]

    def make(self, subscriber_id: int, list_id: int, purpose: str, *, issued_at: int | None = None) -> str:
        if purpose not in PURPOSES:
            raise ValueError(f"unknown token purpose {purpose!r}")
        issued = int(time.time()) if issued_at is None else issued_at
        body = f"v1.{subscriber_id}.{list_id}.{issued}"
        return f"{body}.{_signature(self._current, purpose, body)}"

    def verify(self, token: str, purpose: str, *, max_age: float | None = None) -> TokenClaims:
        """Check ``token`` for ``purpose``; raises InvalidInput if it is malformed, forged or for another purpose,
        and TokenExpired (an InvalidInput) if it is well signed but older than ``max_age`` seconds."""
        parts = token.split(".")
        if not token.isascii() or len(parts) != 5 or parts[0] != "v1" or not all(p.isdigit() for p in parts[1:4]):
            raise InvalidInput(translatable("this link is malformed; copy the whole link from the email"))
        body, signature = token.rsplit(".", 1)
        if not any(hmac.compare_digest(_signature(key, purpose, body), signature) for key in self._all):
            raise InvalidInput(translatable("this link is not valid; copy the whole link from the email"))
        claims = TokenClaims(int(parts[1]), int(parts[2]), purpose, int(parts[3]))
        if max_age is not None and time.time() - claims.issued_at > max_age:
            raise TokenExpired(translatable("this link has expired; ask for a new one"), claims)
        return claims

    def derived_key(self, purpose: str) -> bytes:
        """A key for ``purpose`` (e.g. "message-id"), derived from the current secret key."""
        return hashlib.sha256(b"newsletter " + purpose.encode() + b"\0" + self._current).digest()

    def archive_key(self, list_id: int, issue_id: int) -> str:
        """The key a private list's view-in-browser links carry: one per issue and list, the
        same for every reader (so it tracks no one), made with the current secret key."""
        return _signature(self._current, ARCHIVE_PURPOSE, f"{list_id}.{issue_id}")

    def check_archive_key(self, list_id: int, issue_id: int, key: str) -> bool:
        """Whether ``key`` opens the issue's archived copy (old secret keys still do during a rotation)."""
        if not key.isascii():
            return False
        body = f"{list_id}.{issue_id}"
        return any(hmac.compare_digest(_signature(k, ARCHIVE_PURPOSE, body), key) for k in self._all)

    def tracking_token(self, send_id: int, delivery_id: int) -> str:
        """What a tracked send's links carry for one delivery: ``<delivery_id>.<signature>``."""
        return f"{delivery_id}.{_signature(self._current, TRACKING_PURPOSE, f'{send_id}.{delivery_id}', 12)}"

    def tracked_delivery(self, send_id: int, token: str) -> int | None:
        """The delivery a tracking token names, if it is one of ``send_id``'s (old keys still do); else None."""
        delivery, dot, signature = token.partition(".")
        if not dot or not token.isascii() or not delivery.isdigit() or len(delivery) > 18:
            return None
        body = f"{send_id}.{int(delivery)}"
        if any(hmac.compare_digest(_signature(k, TRACKING_PURPOSE, body, 12), signature) for k in self._all):
            return int(delivery)
        return None


def _signature(key: bytes, purpose: str, body: str, size: int = 18) -> str:
    digest = hmac.new(key, f"{purpose}:{body}".encode(), hashlib.sha256).digest()[:size]
    return base64.urlsafe_b64encode(digest).decode()
