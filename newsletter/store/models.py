"""The data model (see shared DESIGN.md's words): tables for SQLite and PostgreSQL alike.

Statuses are short strings with CHECK constraints rather than native enums, so a later
migration can add a status on both databases with the same small change. In Python they are the
StrEnums of ``store.states``: a state column reads back as its enum's member, and each CHECK
constraint's value list is derived from the enum.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    SmallInteger,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
    false,
    text,
    true,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from newsletter.store.states import (
    AutomationKind,
    AutomationMailStatus,
    BounceKind,
    ConfirmationMailStatus,
    ConfirmationRunStatus,
    DeliveryStatus,
    EngagementKind,
    EngagementOrigin,
    ImportStatus,
    IssueStatus,
    Role,
    SendAudience,
    SendStatus,
    SubjectTestState,
    SubscriptionStatus,
    SuppressionReason,
    Tracking,
)

# BigInteger ids on PostgreSQL; SQLite needs plain INTEGER for its rowid alias.
Id = BigInteger().with_variant(Integer(), "sqlite")
Json = JSON().with_variant(JSONB(), "postgresql")
NULL = text("NULL")  # a server default of NULL (for a column named "text", whose class body hides the function)


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on both databases (SQLite keeps no zone of its own)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given; use an aware UTC datetime")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


E = TypeVar("E", bound=StrEnum)


class State(TypeDecorator[E]):
    """A short string column holding one of ``enum``'s values; it reads back as the enum's member."""

    impl = String
    cache_ok = True

    def __init__(self, enum: type[E], length: int = 16) -> None:
        super().__init__(length)
        self.enum = enum

    def process_bind_param(self, value: E | str | None, dialect: Any) -> str | None:
        return None if value is None else str(value)

    def process_result_value(self, value: str | None, dialect: Any) -> E | None:
        return None if value is None else self.enum(value)


def _check_in(column: str, values: type[StrEnum], name: str) -> CheckConstraint:
    allowed = ", ".join(f"'{v}'" for v in values)
    return CheckConstraint(f"{column} IN ({allowed})", name=name)


class Base(DeclarativeBase):
    metadata = MetaData(
        naming_convention={
            "ix": "ix_%(column_0_label)s",
            "uq": "uq_%(table_name)s_%(column_0_name)s",
            "ck": "ck_%(table_name)s_%(constraint_name)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
            "pk": "pk_%(table_name)s",
        }
    )
    if TYPE_CHECKING:
        # Every model here maps one Table; SQLAlchemy types __table__ as any FromClause.
        __table__: ClassVar[Table]


class MailingList(Base):
    __tablename__ = "mailing_lists"
    # Server defaults are read when first used, not RETURNed. (No ClassVar: DeclarativeBase declares the name.)
    __mapper_args__ = {"eager_defaults": False}  # noqa: RUF012
    __table_args__ = (_check_in("tracking", Tracking, "tracking"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    slug: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    from_email: Mapped[str] = mapped_column(String(320))
    from_name: Mapped[str] = mapped_column(String(200), default="")
    reply_to: Mapped[str | None] = mapped_column(String(320))
    description: Mapped[str] = mapped_column(Text, default="")
    # Weekly slot: an issue marked ready goes out at the list's next slot (all three set, or none).
    slot_weekday: Mapped[int | None] = mapped_column(Integer)  # 0 = Monday ... 6 = Sunday
    slot_time: Mapped[str | None] = mapped_column(String(5))  # "HH:MM", local to slot_timezone
    slot_timezone: Mapped[str | None] = mapped_column(String(64))  # IANA name, e.g. "Europe/Paris"
    # Server defaults only, so rows written by code that predates a column still insert (the migration tests).
    # A private list is not on the public home page and cannot be joined through the public form.
    private: Mapped[bool] = mapped_column(Boolean, server_default=false())
    # What its sends count of their readers: off (the default), anonymous or individual (newsletter.engagement).
    # Deferred (loaded when read), so lists still load and subscribe people on a database before 0014.
    tracking: Mapped[Tracking] = mapped_column(State(Tracking), server_default=Tracking.OFF.value, deferred=True)
    # The language of its emails and the fallback of its pages: a code of newsletter.locales.languages.SHIPPED
    # (migration 0018). Deferred, with a server default, like tracking: read it while the session is open.
    language: Mapped[str] = mapped_column(String(16), server_default="en", deferred=True)
    # The email layout of its issues: a stored template's name (email_templates.name); NULL: the shipped one.
    # An issue naming a template of its own overrides it. Deferred, as tracking, for databases before 0021.
    template: Mapped[str | None] = mapped_column(String(64), server_default=NULL, deferred=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class EmailTemplate(Base):
    """An email layout an admin stored: a Jinja2 HTML and text pair, rendered in a sandbox
    (newsletter.content.email_templates). Lists and issues name it; a send freezes what it rendered."""

    __tablename__ = "email_templates"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)  # what lists and issues name; it never changes
    html: Mapped[str] = mapped_column(Text)
    text: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_by: Mapped[str] = mapped_column(String(100), default="")  # "admin:NAME", "api:NAME" or "cli"


class Subscriber(Base):
    __tablename__ = "subscribers"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    # Normalised by subscribers.addresses.normalise_email: one row per mailbox.
    email: Mapped[str] = mapped_column(String(320), unique=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    attributes: Mapped[dict[str, Any]] = mapped_column(Json, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class Subscription(Base):
    """A subscriber on a list, with its consent record."""

    __tablename__ = "subscriptions"
    # Server defaults are read when first used, not RETURNed. (No ClassVar: DeclarativeBase declares the name.)
    __mapper_args__ = {"eager_defaults": False}  # noqa: RUF012
    __table_args__ = (
        UniqueConstraint("list_id", "subscriber_id", name="uq_subscriptions_list_subscriber"),
        _check_in("status", SubscriptionStatus, "status"),
        Index("ix_subscriptions_list_status", "list_id", "status"),
        Index("ix_subscriptions_subscriber", "subscriber_id"),
        # The confirmations of a list within a time window: the steps of its sequence due now (migration 0020).
        Index("ix_subscriptions_list_status_confirmed", "list_id", "status", "confirmed_at"),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    list_id: Mapped[int] = mapped_column(ForeignKey("mailing_lists.id", ondelete="CASCADE"))
    subscriber_id: Mapped[int] = mapped_column(ForeignKey("subscribers.id", ondelete="CASCADE"))
    status: Mapped[SubscriptionStatus] = mapped_column(State(SubscriptionStatus))
    # Consent record: how and when the subscriber asked, confirmed, and left.
    source: Mapped[str] = mapped_column(String(32))  # "form", "import", "admin", "api"
    ip: Mapped[str | None] = mapped_column(String(64))
    user_agent: Mapped[str | None] = mapped_column(String(512))
    requested_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    confirmed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    end_reason: Mapped[str | None] = mapped_column(String(200))
    # When a confirmation email last went out to this subscription (the form's, or a request to confirm
    # sent to an imported or added address): nobody is asked twice within a week unless an editor insists.
    # A server default, and deferred (loaded only when read): loading and adding subscriptions works on a
    # database of the revision before it too, as in the migration tests.
    confirmation_requested_at: Mapped[datetime | None] = mapped_column(
        UTCDateTime, server_default=text("NULL"), deferred=True
    )
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class Suppression(Base):
    """An address that must never be mailed, on any list."""

    __tablename__ = "suppressions"
    __table_args__ = (_check_in("reason", SuppressionReason, "reason"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    reason: Mapped[SuppressionReason] = mapped_column(State(SuppressionReason, 32))
    note: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Issue(Base):
    """One edition of a newsletter, written for one list."""

    __tablename__ = "issues"
    __table_args__ = (_check_in("status", IssueStatus, "status"), Index("ix_issues_list", "list_id"))

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    list_id: Mapped[int] = mapped_column(ForeignKey("mailing_lists.id", ondelete="RESTRICT"))
    subject: Mapped[str] = mapped_column(String(998))
    preheader: Mapped[str] = mapped_column(String(500), default="")
    body_markdown: Mapped[str] = mapped_column(Text)
    template: Mapped[str] = mapped_column(String(100), default="issue")
    status: Mapped[IssueStatus] = mapped_column(State(IssueStatus), default=IssueStatus.DRAFT)
    # Counts changes of the content (not of the status): a save names the revision it was based on, and one
    # based on an older revision is refused instead of overwriting (two tabs, two editors).
    revision: Mapped[int] = mapped_column(Integer, default=1, server_default=text("1"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class Send(Base):
    """One delivery run of an issue to a list; the rendered issue is frozen on it."""

    __tablename__ = "sends"
    # Server defaults are read when first used, not RETURNed. (No ClassVar: DeclarativeBase declares the name.)
    __mapper_args__ = {"eager_defaults": False}  # noqa: RUF012
    __table_args__ = (
        _check_in("status", SendStatus, "status"),
        _check_in("audience", SendAudience, "audience"),
        _check_in("tracking", Tracking, "tracking"),
        Index("ix_sends_status_scheduled", "status", "scheduled_at"),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    issue_id: Mapped[int] = mapped_column(ForeignKey("issues.id", ondelete="RESTRICT"))
    list_id: Mapped[int] = mapped_column(ForeignKey("mailing_lists.id", ondelete="RESTRICT"))
    status: Mapped[SendStatus] = mapped_column(State(SendStatus))
    # "all": every confirmed, unsuppressed subscriber; "new": only those who got no copy of the issue before.
    audience: Mapped[SendAudience] = mapped_column(State(SendAudience, 8), server_default=SendAudience.ALL.value)
    subject: Mapped[str] = mapped_column(String(998))
    html: Mapped[str] = mapped_column(Text)  # rendered and CSS-inlined once, personal parts left open
    text: Mapped[str] = mapped_column(Text)
    total: Mapped[int] = mapped_column(Integer, default=0)
    status_reason: Mapped[str | None] = mapped_column(Text)  # why it paused, was cancelled or started late
    scheduled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # The list's tracking when the send started, frozen with the rendered issue.
    tracking: Mapped[Tracking] = mapped_column(State(Tracking), server_default=Tracking.OFF.value)
    # Keys each reader's events to "someone" within this send, unique but not named (see
    # newsletter.engagement.events); dropped, with the events keyed by it, when the report is rolled up.
    reader_key: Mapped[str | None] = mapped_column(String(64))
    report_rolled_up_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The segment of the list it mailed (migration 0015): its id while the segment exists, and its name and
    # filter frozen as they were when the send started, so a later edit of the segment rewrites no history.
    # Deferred, with server defaults, so sends still load and insert on a database before 0015.
    segment_id: Mapped[int | None] = mapped_column(
        ForeignKey("segments.id", ondelete="SET NULL"), server_default=NULL, deferred=True
    )
    segment_name: Mapped[str | None] = mapped_column(String(100), server_default=NULL, deferred=True)
    segment_filter: Mapped[str | None] = mapped_column(Text, server_default=NULL, deferred=True)


class SubjectTest(Base):
    """A send's subject test (migration 0019): a share of its recipients gets the issue's subject (A) or
    ``subject_b`` (B), half each, and the winner, by their unique human clicks (opens breaking a tie),
    goes to the rest (``newsletter.delivery.subject_tests``).

    Each recipient of the test share has their variant on their delivery row (``deliveries.variant``: 1
    for A, 2 for B); the rest's rows have none and are held back until the test is decided.
    """

    __tablename__ = "subject_tests"
    __table_args__ = (
        _check_in("state", SubjectTestState, "state"),
        CheckConstraint("share BETWEEN 1 AND 100", name="share"),
        CheckConstraint("winner IN (1, 2)", name="winner"),
        Index("ix_subject_tests_state_decide_at", "state", "decide_at"),
    )

    send_id: Mapped[int] = mapped_column(ForeignKey("sends.id", ondelete="CASCADE"), primary_key=True)
    subject_b: Mapped[str] = mapped_column(String(998))
    share: Mapped[int] = mapped_column(Integer)  # percent of the recipients in the test, half per subject
    decide_after: Mapped[int] = mapped_column(Integer)  # seconds after the send starts
    # Reproducible random choice: the rank of each subscriber id under a keyed mix (subject_variants).
    seed: Mapped[int] = mapped_column(BigInteger)
    state: Mapped[SubjectTestState] = mapped_column(State(SubjectTestState), default=SubjectTestState.PLANNED)
    decide_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # set when the send starts
    # The snapshot's counts: each subject's share, and the rest who get the winner.
    recipients_a: Mapped[int] = mapped_column(Integer, default=0)
    recipients_b: Mapped[int] = mapped_column(Integer, default=0)
    remainder: Mapped[int] = mapped_column(Integer, default=0)
    winner: Mapped[int | None] = mapped_column(SmallInteger)  # 1: A, 2: B
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    decided_by: Mapped[str | None] = mapped_column(String(100))  # "scheduler", or the editor who decided early
    reason: Mapped[str | None] = mapped_column(Text)  # why the winner won, or why the rest was cancelled
    figures: Mapped[dict[str, Any] | None] = mapped_column(Json)  # each variant's figures when it was decided
    # Each variant's figures when the send's report window closed and its events were rolled up.
    final_figures: Mapped[dict[str, Any] | None] = mapped_column(Json)


class SendList(Base):
    """A list a send mails besides its own (``sends.list_id``, the primary list: sender, List-Id, archive).

    A send to one list has no rows here; a send to several has one per extra list (migration 0015).
    """

    __tablename__ = "send_lists"
    __table_args__ = (Index("ix_send_lists_list", "list_id"),)

    send_id: Mapped[int] = mapped_column(ForeignKey("sends.id", ondelete="CASCADE"), primary_key=True)
    list_id: Mapped[int] = mapped_column(ForeignKey("mailing_lists.id", ondelete="RESTRICT"), primary_key=True)


class Segment(Base):
    """A saved segment of a list: a filter in the language of ``subscribers.segments`` (migration 0015)."""

    __tablename__ = "segments"
    __table_args__ = (UniqueConstraint("list_id", "name", name="uq_segments_list_name"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    list_id: Mapped[int] = mapped_column(ForeignKey("mailing_lists.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(100))
    filter: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class SendLink(Base):
    """A link of a tracked send's issue, numbered in the order it appears; clicks redirect to ``url``."""

    __tablename__ = "send_links"

    send_id: Mapped[int] = mapped_column(ForeignKey("sends.id", ondelete="CASCADE"), primary_key=True)
    position: Mapped[int] = mapped_column(Integer, primary_key=True)
    url: Mapped[str] = mapped_column(Text)


class EngagementEvent(Base):
    """One open or click of a tracked send.

    ``reader`` is a keyed hash of the delivery (the send's ``reader_key``), so events of one
    reader count once without naming them; ``subscriber_id`` is set only when the list's
    tracking is individual. Rolled up into EngagementCount when the send's report window
    closes; individual events are kept until the retention period ends, or the subscriber is erased.
    """

    __tablename__ = "engagement_events"
    __table_args__ = (
        _check_in("kind", EngagementKind, "kind"),
        _check_in("origin", EngagementOrigin, "origin"),
        Index("ix_engagement_events_send_reader", "send_id", "reader", "at"),
        Index("ix_engagement_events_subscriber", "subscriber_id"),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    send_id: Mapped[int] = mapped_column(Id)
    kind: Mapped[EngagementKind] = mapped_column(State(EngagementKind, 8))
    position: Mapped[int | None] = mapped_column(Integer)  # the link clicked (send_links.position)
    origin: Mapped[EngagementOrigin] = mapped_column(State(EngagementOrigin, 8))
    reader: Mapped[str | None] = mapped_column(String(32))  # None once rolled up, for individual events kept
    subscriber_id: Mapped[int | None] = mapped_column(Id)
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    # A send with a subject test: the variant the reader's copy had (1: A, 2: B), NULL for everyone
    # else (migration 0019). Deferred, as deliveries.list_id.
    variant: Mapped[int | None] = mapped_column(SmallInteger, server_default=NULL, deferred=True)


class EngagementCount(Base):
    """A send's opens or clicks rolled up per hour (and link, and origin): all that stays of anonymous events."""

    __tablename__ = "engagement_counts"
    __table_args__ = (
        _check_in("kind", EngagementKind, "kind"),
        _check_in("origin", EngagementOrigin, "origin"),
    )

    send_id: Mapped[int] = mapped_column(ForeignKey("sends.id", ondelete="CASCADE"), primary_key=True)
    kind: Mapped[EngagementKind] = mapped_column(State(EngagementKind, 8), primary_key=True)
    position: Mapped[int] = mapped_column(Integer, primary_key=True)  # 0: the send as a whole (opens, any click)
    origin: Mapped[EngagementOrigin] = mapped_column(State(EngagementOrigin, 8), primary_key=True)
    hour: Mapped[datetime] = mapped_column(UTCDateTime, primary_key=True)
    unique_count: Mapped[int] = mapped_column(Integer, default=0)  # readers whose first such event fell in the hour
    total: Mapped[int] = mapped_column(Integer, default=0)


class Delivery(Base):
    """One recipient's row in a send's log."""

    __tablename__ = "deliveries"
    __table_args__ = (
        UniqueConstraint("send_id", "subscriber_id", name="uq_deliveries_send_subscriber"),
        _check_in("status", DeliveryStatus, "status"),
        # A batch's statements name the send, the status and an id range: all three in one index.
        Index("ix_deliveries_send_status_id", "send_id", "status", "id"),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    # No foreign keys on these two: checking them cost a million-recipient snapshot more than writing
    # its rows (migration 0012 says what stands in for them).
    send_id: Mapped[int] = mapped_column(Id)
    subscriber_id: Mapped[int] = mapped_column(Id)
    email: Mapped[str] = mapped_column(String(320))  # the address it went to, kept for the log
    status: Mapped[DeliveryStatus] = mapped_column(State(DeliveryStatus), default=DeliveryStatus.PENDING)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    smtp_code: Mapped[int | None] = mapped_column(Integer)
    smtp_reply: Mapped[str | None] = mapped_column(Text)
    message_id: Mapped[str | None] = mapped_column(String(998))
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    bounced_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    # A send to several lists (migration 0015): the lowest id among the send's lists the subscriber was
    # confirmed on when it started, whose unsubscribe and preferences links their copy carries. NULL for a
    # send to one list (its rows stay as narrow as before). Deferred: loads work on a database before 0015.
    list_id: Mapped[int | None] = mapped_column(Id, server_default=text("NULL"), deferred=True)
    # A send with a subject test (migration 0019): the subject this row's copy has, 1 (A, the issue's) or 2
    # (B), for the test share; NULL for the rest, who get the winner, and for every send without a test (its
    # rows stay as narrow as before).
    variant: Mapped[int | None] = mapped_column(SmallInteger, server_default=text("NULL"), deferred=True)


class BatchClaim(Base):
    """A worker's hold on a batch of a send: the pending deliveries with ids in [first_id, last_id] that it took.

    One row per batch, not a mark on each delivery row: on PostgreSQL writing the mark cost each delivery a
    second row version with an entry in every index (migration 0013). A claim that is not renewed expires,
    so rows held by a worker that died go back to the pool.
    """

    __tablename__ = "batch_claims"
    __table_args__ = (Index("ix_batch_claims_send_range", "send_id", "first_id", "last_id"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    send_id: Mapped[int] = mapped_column(Id)  # no foreign key, as on deliveries: sends are never deleted
    first_id: Mapped[int] = mapped_column(Id)
    last_id: Mapped[int] = mapped_column(Id)
    claimed_by: Mapped[str] = mapped_column(String(100))  # host:pid:random (recipient_store.worker_name)
    claim_expires: Mapped[datetime] = mapped_column(UTCDateTime)


class ConfirmationRun(Base):
    """One request to confirm, mailed to a list's unconfirmed subscriptions (`newsletter lists request-confirmation`)."""

    __tablename__ = "confirmation_runs"
    __table_args__ = (
        _check_in("status", ConfirmationRunStatus, "status"),
        Index("ix_confirmation_runs_list", "list_id", "id"),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    list_id: Mapped[int] = mapped_column(ForeignKey("mailing_lists.id", ondelete="CASCADE"))
    status: Mapped[ConfirmationRunStatus] = mapped_column(
        State(ConfirmationRunStatus), default=ConfirmationRunStatus.SENDING
    )
    again: Mapped[bool] = mapped_column(Boolean, default=False)  # asked those asked in the last week too
    total: Mapped[int] = mapped_column(Integer, default=0)  # rows queued
    # Who was left out when the run started, and why.
    asked_recently: Mapped[int] = mapped_column(Integer, default=0)
    suppressed: Mapped[int] = mapped_column(Integer, default=0)
    already_queued: Mapped[int] = mapped_column(Integer, default=0)
    created_by: Mapped[str] = mapped_column(String(100), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class ConfirmationMail(Base):
    """One recipient's row in a confirmation run's log (the run's counterpart of a Delivery)."""

    __tablename__ = "confirmation_mails"
    __table_args__ = (
        UniqueConstraint("run_id", "subscription_id", name="uq_confirmation_mails_run_subscription"),
        _check_in("status", ConfirmationMailStatus, "status"),
        Index("ix_confirmation_mails_run_status", "run_id", "status"),
        Index("ix_confirmation_mails_subscription", "subscription_id", "status"),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("confirmation_runs.id", ondelete="CASCADE"))
    # Erasing a subscriber (or the subscription) takes its rows with it.
    subscription_id: Mapped[int] = mapped_column(ForeignKey("subscriptions.id", ondelete="CASCADE"))
    email: Mapped[str] = mapped_column(String(320))  # the address it went to, kept for the log
    status: Mapped[ConfirmationMailStatus] = mapped_column(
        State(ConfirmationMailStatus), default=ConfirmationMailStatus.PENDING
    )
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    smtp_code: Mapped[int | None] = mapped_column(Integer)
    smtp_reply: Mapped[str | None] = mapped_column(Text)
    message_id: Mapped[str | None] = mapped_column(String(998))
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    claimed_by: Mapped[str | None] = mapped_column(String(100))
    claim_expires: Mapped[datetime | None] = mapped_column(UTCDateTime)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class BounceEvent(Base):
    """A bounce, delay warning, complaint or mailed unsubscribe received for an address (and a delivery when known)."""

    __tablename__ = "bounce_events"
    __table_args__ = (
        _check_in("kind", BounceKind, "kind"),
        Index("ix_bounce_events_email_kind", "email", "kind", "created_at"),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    email: Mapped[str] = mapped_column(String(320))
    delivery_id: Mapped[int | None] = mapped_column(ForeignKey("deliveries.id", ondelete="SET NULL"))
    kind: Mapped[BounceKind] = mapped_column(State(BounceKind))
    source: Mapped[str] = mapped_column(String(32))  # "smtp", "ses", "webhook"
    detail: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # False: the report carried no proof that we mailed the address; kept for review, it changed nothing.
    proven: Mapped[bool] = mapped_column(Boolean, server_default=true())


class AdminUser(Base):
    """A person who logs in to the admin UI; the password is kept as a slow salted hash."""

    __tablename__ = "admin_users"
    __table_args__ = (_check_in("role", Role, "role"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    username: Mapped[str] = mapped_column(String(100), unique=True)
    password_hash: Mapped[str] = mapped_column(String(300))
    role: Mapped[Role] = mapped_column(State(Role))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_login_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class AdminSession(Base):
    """A logged-in admin UI session; the cookie holds the id, the table holds only its hash."""

    __tablename__ = "admin_sessions"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("admin_users.id", ondelete="CASCADE"))
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)


class ApiToken(Base):
    """A bearer token for the JSON API; only its SHA-256 is stored."""

    __tablename__ = "api_tokens"
    __table_args__ = (_check_in("role", Role, "role"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    role: Mapped[Role] = mapped_column(State(Role))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class ImportJob(Base):
    """A CSV import running in the background: its progress and the report of rejected rows."""

    __tablename__ = "import_jobs"
    __table_args__ = (_check_in("status", ImportStatus, "status"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    list_id: Mapped[int] = mapped_column(ForeignKey("mailing_lists.id", ondelete="CASCADE"))
    filename: Mapped[str] = mapped_column(String(300))
    path: Mapped[str] = mapped_column(String(1000))  # the uploaded file, under $NEWSLETTER_VAR_DIR/imports
    confirmed: Mapped[bool] = mapped_column(default=False)
    status: Mapped[ImportStatus] = mapped_column(State(ImportStatus), default=ImportStatus.QUEUED)
    size_bytes: Mapped[int] = mapped_column(BigInteger().with_variant(Integer(), "sqlite"), default=0)
    rows_read: Mapped[int] = mapped_column(Integer, default=0)
    imported: Mapped[int] = mapped_column(Integer, default=0)
    updated: Mapped[int] = mapped_column(Integer, default=0)
    unchanged: Mapped[int] = mapped_column(Integer, default=0)
    kept_unsubscribed: Mapped[int] = mapped_column(Integer, default=0)
    rejected: Mapped[int] = mapped_column(Integer, default=0)
    report_csv: Mapped[str] = mapped_column(Text, default="")  # "line,reason" rows for each rejected row
    error: Mapped[str | None] = mapped_column(Text)
    created_by: Mapped[str] = mapped_column(String(100), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class MediaItem(Base):
    """An image of the media library (migration 0016): stored as ``<hash>.<ext>``, served at /media/<hash>.<ext>.

    ``filename`` is the name it was uploaded with, shown to people only: the file is kept under
    a name made from its content's SHA-256, never the client's.
    """

    __tablename__ = "media"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    hash: Mapped[str] = mapped_column(String(64), unique=True)  # SHA-256 of the stored bytes, hex
    ext: Mapped[str] = mapped_column(String(8))  # png, jpg, gif, webp
    filename: Mapped[str] = mapped_column(String(255))
    content_type: Mapped[str] = mapped_column(String(32))
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    size: Mapped[int] = mapped_column("bytes", Integer)  # of the stored file
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    uploader: Mapped[str] = mapped_column(String(120), default="")


class Automation(Base):
    """A list's automated email (migration 0020): its welcome, its goodbye, or a step of its sequence.

    A list has at most one welcome and one goodbye, switched on and off but never deleted, so that
    nobody is welcomed (or seen off) twice; steps are added and removed, a removed one keeping its
    log (``removed_at``). ``issue_id`` is the issue it sends, or NULL for the shipped text
    (``templates/email/welcome.*``, ``goodbye.*``), rendered and frozen on the row (``subject``,
    ``html``, ``text``). See ``subscribers.automations``.
    """

    __tablename__ = "automations"
    __table_args__ = (_check_in("kind", AutomationKind, "kind"), Index("ix_automations_list", "list_id", "kind"))

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    list_id: Mapped[int] = mapped_column(ForeignKey("mailing_lists.id", ondelete="CASCADE"))
    kind: Mapped[AutomationKind] = mapped_column(State(AutomationKind))
    issue_id: Mapped[int | None] = mapped_column(ForeignKey("issues.id", ondelete="RESTRICT"))
    offset_days: Mapped[int | None] = mapped_column(Integer)  # a step: days after the subscription was confirmed
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    # A welcome: also for subscribers an editor adds as confirmed (CLI, API, admin), not only for the opt-in link.
    also_added: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    removed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # A step: the latest time it was planned at; the next planning looks only at confirmations since
    # (less a margin), so each costs what is new, not the whole list (subscribers.automation_mails).
    planned_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # What it sends, rendered once when it was set up (or refreshed) and frozen, as a send freezes its
    # issue: later edits of the issue (an autosaving editor) reach no one until it is refreshed.
    subject: Mapped[str | None] = mapped_column(String(998))
    html: Mapped[str | None] = mapped_column(Text)
    text: Mapped[str | None] = mapped_column(Text)
    rendered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class AutomationMail(Base):
    """One automated email to one subscriber: the unit of work and its log row, like a Delivery.

    Unique per (automation, subscriber): each automated email reaches a person at most once, whatever
    the ticks, tasks and workers do. Claimed by a worker for a while (``claimed_by``, ``claim_expires``)
    as a confirmation run's rows are; outcomes are written as a send's are.
    """

    __tablename__ = "automation_mails"
    __table_args__ = (
        UniqueConstraint("automation_id", "subscriber_id", name="uq_automation_mails_automation_subscriber"),
        _check_in("status", AutomationMailStatus, "status"),
        Index("ix_automation_mails_status", "status", "automation_id", "id"),
        Index("ix_automation_mails_subscriber_list", "subscriber_id", "list_id", "status"),
        Index("ix_automation_mails_list", "list_id", "id"),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    automation_id: Mapped[int] = mapped_column(ForeignKey("automations.id", ondelete="CASCADE"))
    list_id: Mapped[int] = mapped_column(ForeignKey("mailing_lists.id", ondelete="CASCADE"))
    # Erasing a subscriber takes their rows with them.
    subscriber_id: Mapped[int] = mapped_column(ForeignKey("subscribers.id", ondelete="CASCADE"))
    issue_id: Mapped[int | None] = mapped_column(Id)  # what it sends (NULL: the shipped text); history, no key
    email: Mapped[str] = mapped_column(String(320))  # the address it went to, kept for the log
    status: Mapped[AutomationMailStatus] = mapped_column(
        State(AutomationMailStatus), default=AutomationMailStatus.PENDING
    )
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    smtp_code: Mapped[int | None] = mapped_column(Integer)
    smtp_reply: Mapped[str | None] = mapped_column(Text)
    message_id: Mapped[str | None] = mapped_column(String(998))
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    claimed_by: Mapped[str | None] = mapped_column(String(100))
    claim_expires: Mapped[datetime | None] = mapped_column(UTCDateTime)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
