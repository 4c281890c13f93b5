"""The named states: every status, kind, reason and role kept in a column with a fixed set of values.

Each is a ``StrEnum``: a member *is* the string stored in the database (``DeliveryStatus.SENT == "sent"``),
so rows, CHECK constraints, JSON, HTML and CLI output read exactly as the plain strings did, and no data
migration was needed. ``store.models`` derives each CHECK constraint's value list from its enum here, so
the two cannot drift; the migrations keep their own lists, as history. A new value is added here and in a
new migration that widens the CHECK constraint.

This module imports nothing from the project: any room may use it.
"""

from __future__ import annotations

from enum import StrEnum


class SubscriptionStatus(StrEnum):
    """A subscriber's standing on one list."""

    UNCONFIRMED = "unconfirmed"  # asked to join, has not clicked the confirmation link yet
    CONFIRMED = "confirmed"
    UNSUBSCRIBED = "unsubscribed"


class SuppressionReason(StrEnum):
    """Why an address must never be mailed again, on any list."""

    HARD_BOUNCE = "hard_bounce"
    SOFT_BOUNCE = "soft_bounce"  # soft bounces repeated past the threshold
    COMPLAINT = "complaint"
    UNSUBSCRIBED_ALL = "unsubscribed_all"
    ADMIN = "admin"


class IssueStatus(StrEnum):
    DRAFT = "draft"
    READY = "ready"  # goes out at its list's next weekly slot
    SENT = "sent"


class SendStatus(StrEnum):
    SCHEDULED = "scheduled"
    SENDING = "sending"
    PAUSED = "paused"
    FINISHED = "finished"
    CANCELLED = "cancelled"


class SendAudience(StrEnum):
    ALL = "all"  # every confirmed, unsuppressed subscriber
    NEW = "new"  # only those who got no copy of the issue before


class DeliveryStatus(StrEnum):
    """One recipient's row in a send's log."""

    PENDING = "pending"
    SENT = "sent"
    FAILED = "failed"
    SKIPPED = "skipped"
    BOUNCED = "bounced"
    CANCELLED = "cancelled"


class Role(StrEnum):
    """What an admin user or an API token may do (``access.accounts.PERMISSIONS``)."""

    ADMIN = "admin"
    EDITOR = "editor"


class ImportStatus(StrEnum):
    """A background CSV import job."""

    QUEUED = "queued"
    RUNNING = "running"
    FINISHED = "finished"
    FAILED = "failed"


class ConfirmationRunStatus(StrEnum):
    """A request to confirm, mailed to a list's unconfirmed subscriptions."""

    SENDING = "sending"
    FINISHED = "finished"


class ConfirmationMailStatus(StrEnum):
    """One recipient's row in a confirmation run's log."""

    PENDING = "pending"
    # Handed to the SMTP server right now; a row left so by a dead worker is never retried (it may have gone out).
    SENDING = "sending"
    SENT = "sent"
    FAILED = "failed"
    SKIPPED = "skipped"


class BounceKind(StrEnum):
    """What a bounce event reports about an address."""

    HARD = "hard"
    SOFT = "soft"
    DELAYED = "delayed"  # a delay warning: the server is still trying
    COMPLAINT = "complaint"
    UNSUBSCRIBE = "unsubscribe"  # a mailed unsubscribe (List-Unsubscribe mailto)
