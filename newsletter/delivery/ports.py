"""The narrow interfaces a batch of a send is delivered through, and the values they exchange.

The batch loop (:mod:`newsletter.delivery.batch_loop`) sees only these:

* a :class:`RecipientStore`: hands out the recipients of one batch (the *claim*) and
  records what became of them; :mod:`newsletter.delivery.recipient_store` keeps them in SQL;
* a :class:`Transport`: sends one message to one recipient and raises
  :class:`~newsletter.errors.TemporaryDeliveryError` or
  :class:`~newsletter.errors.PermanentDeliveryError` (its subclass
  :class:`~newsletter.errors.UnknownRecipient` for a mailbox that does not exist);
  :class:`newsletter.mail.transport.SmtpTransport` is the one in use;
* a :class:`MessageSource`: each send's :class:`Edition`, its message made once, which makes
  every recipient's copy; :mod:`newsletter.delivery.editions` builds them from the frozen issue.

This module imports nothing of the service: whoever composes a worker picks the implementations.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple, Protocol


@dataclass(frozen=True)
class Claimed:
    """One delivery of a batch, held by this worker."""

    delivery_id: int
    subscriber_id: int
    email: str
    name: str
    attempts: int
    # A send to several lists: the list whose unsubscribe and preferences links this copy carries
    # (None for a send to one list: the send's own).
    list_id: int | None = None
    # A send with a subject test: the subject this copy carries (1: the issue's, 2: the other one; for the rest
    # of the recipients, the winner's). None for a send without a test.
    variant: int | None = None


@dataclass(frozen=True)
class Taken:
    """What claiming a batch gave: the rows to send to, and how many were skipped (left or suppressed)."""

    recipients: list[Claimed]
    skipped: int


@dataclass(frozen=True)
class Checked:
    """A look at the send while its batch goes out: its status, and the held rows whose subscriber left
    meanwhile (now skipped)."""

    status: str | None
    departed: set[int]


@dataclass(frozen=True, slots=True)
class Outcome:
    """What became of one delivery attempt. ``status`` is "sent", "failed", or "pending" (tried again
    at ``next_attempt_at``)."""

    delivery_id: int
    status: str
    code: int | None
    reply: str
    message_id: str
    sent_at: datetime | None = None
    next_attempt_at: datetime | None = None


class RecipientStore(Protocol):
    """One batch of one send (a range of its deliveries), as the worker that claims it sees it."""

    @property
    def send_id(self) -> int: ...

    def take(self, claim_seconds: float) -> Taken | None:
        """Claim the batch's due rows, skipping who left or was suppressed; None when the send is not sending."""
        ...

    def check(self) -> Checked:
        """The send's status now; while sending, skip held rows whose subscriber left meanwhile."""
        ...

    def renew(self, claim_seconds: float) -> None:
        """Keep the held rows for another ``claim_seconds``."""
        ...

    def release(self) -> None:
        """Give the held rows back, due at once."""
        ...

    def defer(self, seconds: float) -> None:
        """Give the held rows back, due only in ``seconds``."""
        ...

    def record(self, outcomes: Sequence[Outcome], hard_bounces: Sequence[tuple[str, str]]) -> None:
        """Write the outcomes (each one attempt) and suppress each (address, reply) of ``hard_bounces``."""
        ...

    def pause_for_errors(self, reason: str) -> bool:
        """Pause the send if it is sending, saying why; returns whether this call paused it."""
        ...

    def next_due(self) -> float | None:
        """Seconds until a pending row of the batch can be taken again; None when none is pending."""
        ...

    def finish_if_done(self) -> bool:
        """Mark the send finished if it is sending and nothing is pending; returns whether it did."""
        ...


class Reply(Protocol):
    """The server's reply to an accepted message."""

    @property
    def code(self) -> int: ...

    @property
    def text(self) -> str: ...


class Transport(Protocol):
    """Sends one message; raises TemporaryDeliveryError or PermanentDeliveryError."""

    def send(self, envelope_from: str, recipient: str, data: bytes) -> Reply: ...


class Copy(NamedTuple):
    """One recipient's copy of an edition, ready for the transport."""

    message_id: str
    envelope_from: str
    to: str  # the recipient's address as it goes on the wire
    data: bytes


class Edition(Protocol):
    """A send's message, made once, that makes each recipient's copy."""

    @property
    def key(self) -> str:
        """Names the send for good (its journal and error counts in ``send_control``)."""
        ...

    def message_id(self, delivery_id: int) -> str:
        """The Message-ID a delivery's copy carries (a journal entry with another one is no proof)."""
        ...

    def copy(self, row: Claimed) -> Copy: ...


class MessageSource(Protocol):
    def edition(self, send_id: int) -> Edition:
        """The send's edition (made once per process, then reused)."""
        ...
