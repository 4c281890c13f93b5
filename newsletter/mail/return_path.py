"""VERP return paths: every delivery gets its own envelope sender, so a bounce names its delivery.

``bounces@example.com`` becomes ``bounces+d1234-5f0c2a9e81d4b7aa@example.com`` for delivery
1234. The suffix is an HMAC of the delivery id (lower-case hex, since some servers fold
the case of local parts), so nobody can forge a bounce for someone else's delivery.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Sequence

_TAG = re.compile(r"^d(\d{1,19})-([0-9a-f]{16})$")


def _mac(key: str, delivery_id: int) -> str:
    return hmac.new(key.encode(), f"bounce:{delivery_id}".encode(), hashlib.sha256).hexdigest()[:16]


def make_return_path(base: str, delivery_id: int, key: str) -> str:
    """``base`` is the NEWSLETTER_RETURN_PATH address, e.g. ``bounces@example.com``."""
    local, domain = base.rsplit("@", 1)
    return f"{local}+d{delivery_id}-{_mac(key, delivery_id)}@{domain}"


def delivery_of(address: str, base: str, keys: Sequence[str]) -> int | None:
    """The delivery id a VERP address stands for, or None if it is not one of ours or is forged."""
    address = address.strip().strip("<>").lower()
    local, _, domain = address.rpartition("@")
    base_local, base_domain = base.lower().rsplit("@", 1)
    if domain != base_domain or not local.startswith(base_local + "+"):
        return None
    match = _TAG.match(local[len(base_local) + 1 :])
    if match is None:
        return None
    delivery_id = int(match.group(1))
    if any(hmac.compare_digest(_mac(key, delivery_id), match.group(2)) for key in keys):
        return delivery_id
    return None
