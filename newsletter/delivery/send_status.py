"""A send's status read, as plain SQL any connection can run: no SQLAlchemy at import time.

The status of a send (its row, its list's slug, its deliveries counted by status) and what
``send_health`` asks the database about its remaining work are written here once, as SQL text
with named parameters (``:send_id``). The ORM code (``sending.send_counts``,
``send_health.send_state``) runs them through ``sqlalchemy.text``; `newsletter sends status`
runs them on a bare DB-API connection (``newsletter.store.dbapi``), so that it answers without
loading SQLAlchemy. Each runs them through a :data:`Query`: SQL and parameters in, rows out.

Times: parameters are aware datetimes, which each Query passes through ``dbapi.sql_params`` (SQLite keeps naive UTC text in
SQLAlchemy's format, PostgreSQL aware timestamps); results come back as text or datetimes and
are read by :func:`moment`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

from newsletter.delivery.subject_test_status import RELEASED, SubjectTestStatus, read_test
from newsletter.errors import NotFound
from newsletter.store.dbapi import sql_params
from newsletter.store.states import DeliveryStatus

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

#: Runs one statement with named parameters (``:name``; aware datetimes, see ``dbapi.sql_params``)
#: and returns its rows.
Query = Callable[[str, Mapping[str, object]], Sequence[Sequence[Any]]]

#: The send's row, as the status shows it, with its list's slug.
SEND = """
SELECT s.id, s.issue_id, s.status, s.status_reason, s.audience, s.subject,
       s.created_at, s.started_at, s.finished_at, s.scheduled_at, l.slug
FROM sends s LEFT JOIN mailing_lists l ON l.id = s.list_id
WHERE s.id = :send_id
"""

#: The send's deliveries counted by status.
COUNTS = "SELECT status, count(*) FROM deliveries WHERE send_id = :send_id GROUP BY status"

#: The list's slug.
LIST_SLUG = "SELECT slug FROM mailing_lists WHERE id = :list_id"

# What send_health asks about a sending send's pending rows (:now is the time of the read).
_PENDING = f"send_id = :send_id AND status = '{DeliveryStatus.PENDING}'"
_FREE = (
    "NOT EXISTS (SELECT 1 FROM batch_claims c WHERE c.send_id = :send_id"
    " AND c.first_id <= deliveries.id AND c.last_id >= deliveries.id AND c.claim_expires >= :now)"
)
#: The latest expiry of a worker's claim on a batch of the send.
HELD_UNTIL = "SELECT max(claim_expires) FROM batch_claims WHERE send_id = :send_id"
#: One pending row due now that no worker holds and that was never tried (and no subject test holds back).
FRESH = f"SELECT id FROM deliveries WHERE {_PENDING} AND {_FREE} AND next_attempt_at IS NULL AND {RELEASED} LIMIT 1"
#: The earliest retry time already due among the pending rows no worker holds.
DUE_RETRY = f"SELECT min(next_attempt_at) FROM deliveries WHERE {_PENDING} AND {_FREE} AND next_attempt_at <= :now"
#: The SMTP server's latest replies to the send's failed or retried deliveries, newest first.
REPLIES = f"""
SELECT smtp_reply FROM deliveries
WHERE send_id = :send_id AND status IN ('{DeliveryStatus.FAILED}', '{DeliveryStatus.PENDING}') AND smtp_reply IS NOT NULL
ORDER BY updated_at DESC, id DESC
LIMIT 50
"""


class SendFields(Protocol):
    """What the status shows of a send: the ORM's Send has these, and so does :class:`SendRow`."""

    @property
    def id(self) -> int: ...
    @property
    def issue_id(self) -> int: ...
    @property
    def status(self) -> str: ...
    @property
    def status_reason(self) -> str | None: ...
    @property
    def audience(self) -> str: ...
    @property
    def subject(self) -> str: ...
    @property
    def created_at(self) -> datetime: ...
    @property
    def started_at(self) -> datetime | None: ...
    @property
    def finished_at(self) -> datetime | None: ...
    @property
    def scheduled_at(self) -> datetime | None: ...


@dataclass(frozen=True)
class SendRow:
    """A send's row as :data:`SEND` reads it (times aware, in UTC)."""

    id: int
    issue_id: int
    status: str
    status_reason: str | None
    audience: str
    subject: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    scheduled_at: datetime | None


@dataclass(frozen=True)
class StatusRead:
    """A send, its list's slug and its deliveries counted by status."""

    send: SendRow
    list_slug: str
    counts: dict[str, int]
    test: SubjectTestStatus | None = None  # its subject test, if it has one


def read_status(query: Query, send_id: int) -> StatusRead | None:
    """The send's status read, or None when there is no such send."""
    rows = query(SEND, {"send_id": send_id})
    if not rows:
        return None
    (sid, issue_id, status, reason, audience, subject, created, started, finished, scheduled, slug) = rows[0]
    created_at = moment(created)
    assert created_at is not None  # NOT NULL
    send = SendRow(
        sid,
        issue_id,
        status,
        reason,
        audience,
        subject,
        created_at,
        moment(started),
        moment(finished),
        moment(scheduled),
    )
    return StatusRead(send, slug or "?", delivery_counts(query, send_id), read_test(query, send_id, subject))


def session_query(session: Session) -> Query:
    """A session as a :data:`~newsletter.delivery.send_status.Query`: the shared SQL through ``sqlalchemy.text``."""
    from sqlalchemy import text

    dialect = session.get_bind().dialect.name

    def query(sql: str, params: Mapping[str, object]) -> Sequence[Sequence[Any]]:
        return session.execute(text(sql), sql_params(params, dialect)).all()

    return query


def no_send(send_id: int) -> NotFound:
    """The error for an unknown send id, wherever it is read."""
    return NotFound(f"no send {send_id} (see `newsletter sends ls`)")


def delivery_counts(query: Query, send_id: int) -> dict[str, int]:
    return {str(status): int(count) for status, count in query(COUNTS, {"send_id": send_id})}


def list_slug(query: Query, list_id: int) -> str:
    rows = query(LIST_SLUG, {"list_id": list_id})
    return str(rows[0][0]) if rows and rows[0][0] is not None else "?"


def status_json(
    send: SendFields, list_slug: str, counts: Mapping[str, int], test: SubjectTestStatus | None = None
) -> dict[str, object]:
    """The status as `sends status --json` and the API show it (without ``problem``); ``subject_test`` is
    the send's test (:mod:`newsletter.delivery.subject_test_status`), or None."""
    return {
        "id": send.id,
        "issue_id": send.issue_id,
        "list": list_slug,
        "status": send.status,
        "status_reason": send.status_reason,
        "audience": send.audience,
        "subject": send.subject,
        "total": sum(counts.values()),
        **{status: counts.get(status, 0) for status in DeliveryStatus},
        "created_at": iso(send.created_at),
        "started_at": iso(send.started_at),
        "finished_at": iso(send.finished_at),
        "subject_test": test.as_json() if test is not None else None,
    }


def send_key(send: SendFields) -> str:
    """Names a send for good, across databases: its id and its creation time."""
    return f"{send.id}.{int(send.created_at.timestamp()):x}"


def iso(value: datetime | None) -> str | None:
    return value.isoformat(timespec="seconds") if value else None


def moment(value: object) -> datetime | None:
    """A time read back: SQLite's text (naive UTC) or a driver's datetime, as an aware UTC datetime."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if not isinstance(value, datetime):
        raise TypeError(f"not a time: {value!r}")
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
