"""Why a batch stopped early: a kind the code can tell apart, and the sentence people read.

The batch loops (a send's, a request to confirm's) stop a batch for a few reasons, and what
they do next depends on which: a broker that cannot be reached gives the claim back and
tries again in a few seconds, an SMTP server that cannot be reached defers the batch to its
next try, a send paused or cancelled meanwhile leaves the rest to whoever resumes it. The
kind says which; the text is what the worker's log line shows, worded as it always was.
A broker outage's reason comes from ``send_control.ControlUnavailable.stop_reason``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from newsletter.store.states import SendStatus


class StopKind(enum.Enum):
    PAUSED = "paused"  # the send was paused meanwhile (by an editor, or by another worker's error count)
    CANCELLED = "cancelled"  # the send was cancelled meanwhile
    NOT_SENDING = "not sending"  # the send finished or was deleted meanwhile
    ERROR_THRESHOLD = "error threshold"  # this batch's errors paused the send
    BROKER_DOWN = "broker down"  # Redis (journal, rate limit, counts) could not be reached
    SMTP_UNREACHABLE = "smtp unreachable"  # no session with the SMTP server (connect, TLS, login)
    CONNECTION_LOST = "connection lost"  # the SMTP connection broke in the middle of a message


@dataclass(frozen=True)
class StopReason:
    """``StopReason(StopKind.PAUSED, "send is paused")``: ``str()`` gives the sentence."""

    kind: StopKind
    text: str

    def __str__(self) -> str:
        return self.text

    @classmethod
    def send_is(cls, status: str | None) -> StopReason:
        """The send is no longer sending: paused, cancelled, finished (or gone: ``None``)."""
        kinds: dict[str, StopKind] = {SendStatus.PAUSED: StopKind.PAUSED, SendStatus.CANCELLED: StopKind.CANCELLED}
        return cls(kinds.get(str(status), StopKind.NOT_SENDING), f"send is {status}")

    @classmethod
    def error_threshold(cls) -> StopReason:
        return cls(StopKind.ERROR_THRESHOLD, "send paused itself: too many errors")

    @classmethod
    def smtp_unreachable(cls, error: Exception) -> StopReason:
        return cls(StopKind.SMTP_UNREACHABLE, f"SMTP server unreachable: {error}")

    @classmethod
    def connection_lost(cls, error: Exception) -> StopReason:
        return cls(StopKind.CONNECTION_LOST, f"SMTP connection lost: {error}")
