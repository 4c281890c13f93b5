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
    """Where an issue stands: being written, waiting for its list's weekly slot, or sent."""

    DRAFT = "draft"
    READY = "ready"  # goes out at its list's next weekly slot
    SENT = "sent"


class SendStatus(StrEnum):
    """Where a send stands."""

    SCHEDULED = "scheduled"
    SENDING = "sending"
    PAUSED = "paused"
    FINISHED = "finished"
    CANCELLED = "cancelled"


class SendAudience(StrEnum):
    """Who a send mails (stored on the send)."""

    ALL = "all"  # every confirmed, unsuppressed subscriber
    NEW = "new"  # only those who got no copy of the issue before


class SubjectTestState(StrEnum):
    """Where a send's subject test stands (``subject_tests.state``)."""

    PLANNED = "planned"  # the send is scheduled: the test starts with it
    TESTING = "testing"  # the test share gets the two subjects; the rest waits for the decision
    DECIDED = "decided"  # the winning subject goes (went) to the rest
    CANCELLED = "cancelled"  # the rest gets nothing: cancelled by an editor, or the send was cancelled


class DeliveryStatus(StrEnum):
    """Where one recipient's row in a send's log stands."""

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
    """Where a background CSV import job stands."""

    QUEUED = "queued"
    RUNNING = "running"
    FINISHED = "finished"
    FAILED = "failed"


class ConfirmationRunStatus(StrEnum):
    """Where a confirmation run (a request to confirm, mailed to a list's unconfirmed subscriptions) stands."""

    SENDING = "sending"
    FINISHED = "finished"


class ConfirmationMailStatus(StrEnum):
    """Where one recipient's row in a confirmation run's log stands."""

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


class Tracking(StrEnum):
    """What a list's sends count of their readers (newsletter.engagement says how)."""

    OFF = "off"  # no pixel, links as written: nothing is counted
    ANONYMOUS = "anonymous"  # counts per send and per link, no event tied to a subscriber once counted
    INDIVIDUAL = "individual"  # per-subscriber events, kept for the retention period


class EngagementKind(StrEnum):
    OPEN = "open"
    CLICK = "click"


class EngagementOrigin(StrEnum):
    """Who made an open or a click, as far as can be told."""

    HUMAN = "human"
    MACHINE = "machine"  # a privacy proxy prefetching images, a link scanner, a HEAD request


class AutomationKind(StrEnum):
    """What a list's automated email is (``subscribers.automations``)."""

    WELCOME = "welcome"  # when a subscription is confirmed
    STEP = "step"  # a step of the list's sequence, a number of days after confirming
    GOODBYE = "goodbye"  # when someone leaves the list by themselves


class AutomationMailStatus(StrEnum):
    """Where one automated email to one subscriber stands (its row in ``automation_mails``)."""

    PENDING = "pending"
    SENT = "sent"
    FAILED = "failed"
    SKIPPED = "skipped"  # left the list or was suppressed before it went out, or the automation was removed
