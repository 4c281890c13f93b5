"""A tracked send's readers, told apart without being named.

Each open or click is stored under ``reader``: the first 22 characters of the base64
HMAC-SHA256 of the delivery's id under the send's own random ``reader_key``. Two events of one
reader share it, so they count once, but it names no one without that key. When the send's
report is rolled up (:mod:`newsletter.engagement.rollup`) the key is deleted, and anonymous
events with it: what stays is hourly counts. ``individual`` tracking also keeps the
subscriber's id on each event, for the retention period (``NEWSLETTER_TRACKING_RETENTION_DAYS``);
erasing the subscriber unlinks them (``subscribers.directory.delete_subscriber``).

Events are written by :mod:`newsletter.engagement.recorder`; nothing classifies bursts of
clicks when they are written: :mod:`newsletter.engagement.tally` does, from the events
themselves, so two scanner requests racing in parallel are still seen as one burst.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

__all__ = ["new_reader_key", "reader_of"]


def new_reader_key() -> str:
    """A send's reader key: random, stored on the send until its report is rolled up."""
    return secrets.token_hex(32)


def reader_of(reader_key: str, delivery_id: int) -> str:
    digest = hmac.new(bytes.fromhex(reader_key), str(delivery_id).encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode()[:22]
